//! Accepting connections with bounded resources: header size and read timeout (slowloris),
//! a cap on open connections, optional TLS, graceful shutdown.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Words an answer that the server gives by itself, before the app sees the request (a
/// request head over the limit), in the format of the app behind the listener.
pub type Refusal = fn(StatusCode, String) -> Response;

/// A refusal in plain text, for listeners whose clients are phones.
pub fn plain_refusal(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

/// hyper's own cap on a request head, as a multiple of `max_request_bytes`: heads up to the
/// configured limit are served, heads between it and this cap get the listener's worded
/// refusal, and hyper answers heads beyond it by itself with a bare 431 (its automatic
/// answers to parse errors cannot carry a body). The cap bounds what one connection buffers.
pub const HEAD_CEILING_FACTOR: usize = 4;

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request head (request line + headers), in bytes; a longer request target is
    /// answered 414, a longer head 431 (both worded by `refusal`).
    pub max_request_bytes: usize,
    /// Time to send a request head (and to finish a TLS handshake).
    pub request_timeout: Duration,
    /// Connections open at once; further ones wait in the kernel backlog.
    pub max_connections: usize,
    /// Longest life of one connection, so that a client that never reads its answer (or
    /// reads it byte by byte) gives its slot back.
    pub max_connection_time: Duration,
    /// Time given to requests in flight at shutdown.
    pub shutdown_grace: Duration,
    /// How the refusals that the server makes by itself are worded.
    pub refusal: Refusal,
}

/// Why the TLS certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    Pem {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the pair.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// Builds a TLS acceptor from PEM files (certificate chain, private key).
pub fn load_tls(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let pem = |path: &Path, message: String| TlsError::Pem {
        path: path.display().to_string(),
        message,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem(cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem(cert, "no certificate found".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until `shutdown` turns true; open connections then finish
/// their current request.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => connection(TokioIo::new(stream), peer, app, limits, shutdown).await,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.request_timeout, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls_stream)) => {
                            connection(TokioIo::new(tls_stream), peer, app, limits, shutdown).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    // Requests in flight finish (each connection was told to shut down gracefully), within
    // a bound.
    connections.close();
    if tokio::time::timeout(limits.shutdown_grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "connections still open after {:?}: closed",
            limits.shutdown_grace
        );
    }
}

async fn connection<I>(
    io: I,
    peer: SocketAddr,
    app: Router,
    limits: HttpLimits,
    shutdown: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let tag = move |request: &mut Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
    };
    serve_connection(io, tag, app, limits, shutdown, &peer.to_string()).await
}

/// Serves one connection; `tag` adds request extensions (peer address, local admin mark).
async fn serve_connection<I, T>(
    io: I,
    tag: T,
    app: Router,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
    peer: &str,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    T: Fn(&mut Request<Incoming>) + Clone + Send + Sync + 'static,
{
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        let refused = over_limit(&request, limits.max_request_bytes).map(|(status, message)| {
            let mut refusal = (limits.refusal)(status, message);
            // The body was not read: the connection cannot carry another request.
            refusal
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            refusal
        });
        tag(&mut request);
        let app = app.clone();
        async move {
            match refused {
                Some(refusal) => Ok(refusal),
                None => app.oneshot(request).await,
            }
        }
    });
    // hyper enforces its own cap above the configured limit, so that the configured limit is
    // checked here, where the answer can be worded by the app (see HEAD_CEILING_FACTOR).
    let ceiling = limits.max_request_bytes.saturating_mul(HEAD_CEILING_FACTOR);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .max_header_size(ceiling)
        .max_buf_size(ceiling.max(8192));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(limits.max_connection_time);
    tokio::pin!(deadline);
    tokio::select! {
        _ = &mut deadline => {
            tracing::info!(peer, "connection closed: open longer than {:?}", limits.max_connection_time);
        }
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(peer, "connection ended: {e}");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.shutdown_grace, conn).await;
        }
    }
}

/// The refusal for a request whose head is over `limit` bytes: 414 when the request target
/// alone is, 431 otherwise.
fn over_limit<B>(request: &Request<B>, limit: usize) -> Option<(StatusCode, String)> {
    let uri = request.uri();
    let target = uri.scheme_str().map_or(0, |s| s.len() + "://".len())
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > limit {
        return Some((
            StatusCode::URI_TOO_LONG,
            format!("the request target is {target} bytes, over the limit of {limit} bytes"),
        ));
    }
    // The head as sent, give or take optional whitespace that hyper does not keep:
    // "METHOD TARGET HTTP/1.1\r\n", "name: value\r\n" per header, "\r\n".
    let head = request.method().as_str().len()
        + " ".len()
        + target
        + " HTTP/1.1\r\n".len()
        + request
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + ": ".len() + value.len() + "\r\n".len())
            .sum::<usize>()
        + "\r\n".len();
    (head > limit).then(|| {
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request head is {head} bytes, over the limit of {limit} bytes"),
        )
    })
}

/// Who may use the local admin socket.
#[derive(Debug, Clone, Copy)]
pub struct LocalPolicy {
    /// Group whose members (by primary or supplementary group of the peer) are admitted.
    pub group: Option<u32>,
}

impl LocalPolicy {
    fn admits(&self, uid: u32, gid: u32) -> bool {
        if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
            return true;
        }
        let Some(group) = self.group else {
            return false;
        };
        if gid == group {
            return true;
        }
        // Supplementary groups of the peer's user.
        let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
            return false;
        };
        let Ok(name) = std::ffi::CString::new(user.name) else {
            return false;
        };
        nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(gid))
            .map(|groups| groups.iter().any(|g| g.as_raw() == group))
            .unwrap_or(false)
    }
}

/// Serves `app` to local clients on a UNIX socket, each request marked with `mark` when the
/// peer (SO_PEERCRED) is root, provisiond's own user or in the admitted group; other peers'
/// connections are closed at once.
pub async fn serve_unix<M>(
    listener: tokio::net::UnixListener,
    app: Router,
    mark: M,
    policy: LocalPolicy,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) where
    M: Clone + Send + Sync + 'static,
{
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!("local accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let cred = match stream.peer_cred() {
            Ok(cred) => cred,
            Err(e) => {
                tracing::warn!("cannot read the local peer's credentials: {e}");
                continue;
            }
        };
        if !policy.admits(cred.uid(), cred.gid()) {
            tracing::warn!(uid = cred.uid(), gid = cred.gid(), pid = ?cred.pid(), "local admin socket: peer refused (not root, provisiond or its group)");
            continue;
        }
        let (app, mark, shutdown) = (app.clone(), mark.clone(), shutdown.clone());
        let peer = format!("local uid {}", cred.uid());
        tokio::spawn(async move {
            let tag = move |request: &mut Request<Incoming>| {
                request.extensions_mut().insert(mark.clone());
            };
            serve_connection(TokioIo::new(stream), tag, app, limits, shutdown, &peer).await
        });
    }
}
