//! Downloads for the plugin repository (docs/plugin-repository.md): its index and signature,
//! plugin archives and vendor packages, over HTTP or HTTPS.
//!
//! Only the proxy the admin configured (`/configure` `http_proxy`) is used, never the
//! environment's: the daemon's environment is systemd's, and a proxy picked up by accident
//! would be a silent path for every download. Each download is bounded in size and in time,
//! hashed as it arrives, and written to a temporary file in the directory the caller names
//! (on the destination's file system, so that the caller's final rename is atomic); the
//! temporary file is deleted if the download fails or is dropped.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use url::Url;

/// Why a download failed. Every message names the URL without its credentials.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The proxy URL is not one reqwest accepts.
    #[error("proxy {proxy}: {source}")]
    Proxy {
        /// The proxy, without credentials.
        proxy: String,
        /// Why.
        source: reqwest::Error,
    },
    /// Not an http or https URL.
    #[error("{0}: only http and https URLs are fetched")]
    Scheme(String),
    /// Connection, TLS, timeout or protocol failure.
    #[error("{url}: {reason}")]
    Request {
        /// The URL.
        url: String,
        /// Why, with its causes.
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{url}: the server answered {status}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// More bytes than allowed (announced or received).
    #[error("{url}: larger than the limit of {limit} bytes")]
    TooLarge {
        /// The URL.
        url: String,
        /// The limit.
        limit: u64,
    },
    /// Fewer bytes than announced or expected.
    #[error("{url}: truncated: {got} of {expected} bytes")]
    Truncated {
        /// The URL.
        url: String,
        /// Bytes received.
        got: u64,
        /// Bytes announced by the server or expected by the index.
        expected: u64,
    },
    /// The content is not what the index or the plugin declares.
    #[error("{url}: SHA-256 {got} instead of {expected}")]
    HashMismatch {
        /// The URL.
        url: String,
        /// Declared hash, hex.
        expected: String,
        /// Received hash, hex.
        got: String,
    },
    /// Writing the temporary file failed (a full disk, a read-only directory…).
    #[error("{url}: writing into {dir}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The directory of the temporary file.
        dir: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, FetchError>;

/// What a download must be, when the caller knows it (from a signed index or a plugin.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Exact size in bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
}

/// A completed download, in its temporary file.
#[derive(Debug)]
pub struct Fetched {
    /// The content; deleted when dropped unless the caller persists it.
    pub file: tempfile::NamedTempFile,
    /// Bytes received.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: [u8; 32],
}

/// Progress callback: bytes received so far, and the total when known.
pub type Progress<'a> = &'a (dyn Fn(u64, Option<u64>) + Send + Sync);

/// An HTTP client for the repository's downloads.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
}

/// The URL as logs and errors show it: without user and password.
pub fn shown(url: &Url) -> String {
    let mut url = url.clone();
    // Both fail only for URLs that cannot have credentials: nothing to hide then.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits into a SHA-256.
pub fn parse_sha256(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// The error text with its causes, which reqwest keeps apart (`error sending request` alone
/// does not tell an admin that the connection was refused).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl Fetcher {
    /// A client through `proxy` (none: direct), giving up on a download after `timeout`.
    pub fn new(proxy: Option<&Url>, timeout: Duration) -> Result<Fetcher> {
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("provisiond/", env!("CARGO_PKG_VERSION")));
        if let Some(proxy) = proxy {
            let proxy_err = |source| FetchError::Proxy {
                proxy: shown(proxy),
                source,
            };
            builder = builder.proxy(reqwest::Proxy::all(proxy.as_str()).map_err(proxy_err)?);
        }
        let client = builder.build().map_err(|e| FetchError::Request {
            url: String::new(),
            reason: chain(&e),
        })?;
        Ok(Fetcher { client })
    }

    async fn start(&self, url: &Url, limit: u64) -> Result<(reqwest::Response, Option<u64>)> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::Scheme(shown(url)));
        }
        let response =
            self.client
                .get(url.clone())
                .send()
                .await
                .map_err(|e| FetchError::Request {
                    url: shown(url),
                    reason: chain(&e),
                })?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: shown(url),
                status: status.as_u16(),
            });
        }
        let announced = response.content_length();
        if announced.is_some_and(|n| n > limit) {
            return Err(FetchError::TooLarge {
                url: shown(url),
                limit,
            });
        }
        Ok((response, announced))
    }

    /// Reads the chunks of `response` into `sink`, bounded by `limit`; returns the size and
    /// the hash.
    async fn drain(
        url: &Url,
        mut response: reqwest::Response,
        announced: Option<u64>,
        limit: u64,
        progress: Progress<'_>,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<(u64, [u8; 32])> {
        let mut hasher = Sha256::new();
        let mut got: u64 = 0;
        progress(0, announced);
        loop {
            let chunk = response.chunk().await.map_err(|e| match announced {
                // The connection ended before the announced length: say so plainly.
                Some(expected) if e.is_body() || e.is_decode() => FetchError::Truncated {
                    url: shown(url),
                    got,
                    expected,
                },
                _ => FetchError::Request {
                    url: shown(url),
                    reason: chain(&e),
                },
            })?;
            let Some(chunk) = chunk else { break };
            got += chunk.len() as u64;
            if got > limit {
                return Err(FetchError::TooLarge {
                    url: shown(url),
                    limit,
                });
            }
            hasher.update(&chunk);
            sink(&chunk)?;
            progress(got, announced);
        }
        if let Some(expected) = announced.filter(|n| got < *n) {
            return Err(FetchError::Truncated {
                url: shown(url),
                got,
                expected,
            });
        }
        Ok((got, hasher.finalize().into()))
    }

    /// The whole body of `url` in memory, at most `limit` bytes (an index, a signature).
    pub async fn bytes(&self, url: &Url, limit: u64) -> Result<Vec<u8>> {
        let (response, announced) = self.start(url, limit).await?;
        let mut out = Vec::new();
        Self::drain(url, response, announced, limit, &|_, _| {}, |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Downloads `url` into a temporary file in `dir`, at most `limit` bytes; with `expected`,
    /// a download of another size or hash is an error and its file is gone.
    pub async fn to_file(
        &self,
        url: &Url,
        dir: &Path,
        limit: u64,
        expected: Option<Expected>,
        progress: Progress<'_>,
    ) -> Result<Fetched> {
        let limit = expected.map_or(limit, |e| e.size.min(limit));
        let io_err = |source| FetchError::Io {
            url: shown(url),
            dir: dir.display().to_string(),
            source,
        };
        let mut file = tempfile::Builder::new()
            .prefix(".download-")
            .tempfile_in(dir)
            .map_err(io_err)?;
        let (response, announced) = self.start(url, limit).await?;
        let (size, sha256) = Self::drain(url, response, announced, limit, progress, |chunk| {
            file.write_all(chunk).map_err(io_err)
        })
        .await?;
        file.as_file_mut().sync_all().map_err(io_err)?;
        if let Some(expected) = expected {
            if size != expected.size {
                return Err(FetchError::Truncated {
                    url: shown(url),
                    got: size,
                    expected: expected.size,
                });
            }
            if sha256 != expected.sha256 {
                return Err(FetchError::HashMismatch {
                    url: shown(url),
                    expected: hex(&expected.sha256),
                    got: hex(&sha256),
                });
            }
        }
        Ok(Fetched { file, size, sha256 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_credentials() {
        let url: Url = "http://user:secret@proxy.example:3128/".parse().unwrap();
        assert_eq!(shown(&url), "http://proxy.example:3128/");
    }

    #[test]
    fn sha256_hex_round_trips() {
        let sum: [u8; 32] = Sha256::digest(b"abc").into();
        let text = hex(&sum);
        assert_eq!(
            text,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(parse_sha256(&text), Some(sum));
        assert_eq!(parse_sha256(&text.to_uppercase()), Some(sum));
        assert_eq!(parse_sha256(&text[..62]), None);
        assert_eq!(parse_sha256(&format!("{}zz", &text[..62])), None);
    }
}
