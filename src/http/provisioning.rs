//! The provisioning router: any GET/HEAD path → identification → the device's file.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use axum::Router;

use crate::files::{AutoUrl, FetchError, FileService, Requester, Served};
use crate::plugins::MAX_PATH_LEN;
use crate::ratelimit::Kind;
use crate::sync::SyncQueue;

/// Shared state of the provisioning router.
pub struct Provisioning {
    /// Files.
    pub files: Arc<FileService>,
    /// The resync queue, for what phones redeem from their own screens.
    pub sync: SyncQueue,
}

impl Provisioning {
    /// A state serving `files`, whose resync queue sends nothing.
    pub fn new(files: Arc<FileService>) -> Provisioning {
        Provisioning {
            files,
            sync: SyncQueue::disabled(),
        }
    }

    /// The same state with this resync queue (the daemon's).
    pub fn with_sync(mut self, sync: SyncQueue) -> Provisioning {
        self.sync = sync;
        self
    }
}

/// The router: every path goes to one handler.
pub fn router(state: Arc<Provisioning>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// Outcome of one request, for the access log.
pub(super) struct Outcome {
    pub(super) status: StatusCode,
    pub(super) device: Option<String>,
    pub(super) mac: Option<String>,
    pub(super) tenant: Option<String>,
    pub(super) plugin: Option<String>,
    pub(super) reason: Option<String>,
    /// A refusal caused by the client: its lines go through the rate limiter.
    pub(super) rejection: Option<Kind>,
    /// A warning to log with the access line (same limit).
    pub(super) warning: Option<String>,
    pub(super) response: Response,
}

pub(super) fn plain(status: StatusCode, reason: impl Into<String>) -> Outcome {
    let response = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from(format!(
            "{}\n",
            status.canonical_reason().unwrap_or("")
        )))
        .unwrap_or_default();
    Outcome {
        status,
        device: None,
        mac: None,
        tenant: None,
        plugin: None,
        reason: Some(reason.into()),
        rejection: None,
        warning: None,
        response,
    }
}

/// A refusal of the client's request, counted and logged within the per-client limit.
pub(super) fn refused(status: StatusCode, kind: Kind, reason: impl Into<String>) -> Outcome {
    Outcome {
        rejection: Some(kind),
        ..plain(status, reason)
    }
}

async fn handle(
    State(state): State<Arc<Provisioning>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    let outcome = answer(&state, peer, &method, &uri, &headers).await;
    let logged = outcome
        .rejection
        .is_none_or(|kind| state.files.rejected.admit(kind, peer.ip()));
    if !logged {
        return outcome.response;
    }
    if let Some(warning) = &outcome.warning {
        tracing::warn!(%peer, "refused: {warning}");
    }
    let bytes = if method == Method::HEAD {
        0
    } else {
        HttpBody::size_hint(outcome.response.body())
            .exact()
            .unwrap_or(0)
    };
    let path = masked(uri.path());
    let path = path.as_ref();
    let cut = (0..=path.len().min(200))
        .rev()
        .find(|&i| path.is_char_boundary(i))
        .unwrap_or(0);
    let shown_path = &path[..cut];
    tracing::info!(
        target: "provisiond::http::access",
        %peer,
        method = %method,
        path = shown_path,
        status = outcome.status.as_u16(),
        bytes,
        duration_us = started.elapsed().as_micros() as u64,
        device = outcome.device.as_deref().unwrap_or("-"),
        device_mac = outcome.mac.as_deref().unwrap_or("-"),
        tenant = outcome.tenant.as_deref().unwrap_or("-"),
        plugin = outcome.plugin.as_deref().unwrap_or("-"),
        reason = outcome.reason.as_deref().unwrap_or(""),
        "request"
    );
    outcome.response
}

async fn answer(
    state: &Arc<Provisioning>,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Outcome {
    if method != Method::GET && method != Method::HEAD {
        let mut outcome = refused(
            StatusCode::METHOD_NOT_ALLOWED,
            Kind::HttpMethod,
            "only GET and HEAD",
        );
        outcome
            .response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return outcome;
    }
    let raw = uri.path();
    if raw.len() > 3 * MAX_PATH_LEN + 64 {
        return refused(StatusCode::URI_TOO_LONG, Kind::HttpPath, "path too long");
    }
    let user_agent: Option<String> = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(512).collect());
    if raw.starts_with(FORM_PREFIX) {
        // The form's own paths, before any url_key: its signature authenticates it.
        let Some(decoded) = decode(raw) else {
            return refused(
                StatusCode::BAD_REQUEST,
                Kind::HttpPath,
                "forbidden character in path",
            );
        };
        let path = decoded.trim_start_matches('/').to_owned();
        return super::codeform::answer(state, peer, method, path, uri.query(), user_agent).await;
    }
    let who = Requester::Http {
        src: peer.ip(),
        user_agent,
    };
    let files = Arc::clone(&state.files);
    // The values of an automatic URL are decoded one by one: they may hold an encoded `/`.
    if let Some(rest) = raw.strip_prefix(AUTO_PREFIX) {
        let mut parts = rest.splitn(4, '/');
        let (Some(tenant), Some(token), Some(category), Some(file)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return refused(
                StatusCode::NOT_FOUND,
                Kind::HttpUrlKey,
                "automatic URL: too short",
            );
        };
        let (Some(tenant), Some(token), Some(category), Some(file)) = (
            decode(tenant),
            decode(token),
            decode(category),
            decode(file),
        ) else {
            return refused(
                StatusCode::BAD_REQUEST,
                Kind::HttpPath,
                "forbidden character in path",
            );
        };
        let auto = AutoUrl {
            tenant,
            token,
            category,
        };
        let fetched =
            tokio::task::spawn_blocking(move || files.answer_auto(&who, &auto, &file)).await;
        return outcome(fetched, peer, method, uri, headers);
    }
    let Some(decoded) = decode(raw) else {
        return refused(
            StatusCode::BAD_REQUEST,
            Kind::HttpPath,
            "forbidden character in path",
        );
    };
    let path = decoded.trim_start_matches('/').to_owned();
    // A known phone with nothing new to record is answered here; anything that writes (and
    // flushes) the store goes to a blocking thread.
    let fetched = match files.answer_readonly(&who, &path) {
        Some(answer) => Ok(answer),
        None => tokio::task::spawn_blocking(move || files.answer(&who, &path)).await,
    };
    outcome(fetched, peer, method, uri, headers)
}

/// The path as the access log shows it: an automatic URL's token is a secret, and so is a
/// code form's signature (it lets its holder redeem codes for that phone).
fn masked(path: &str) -> std::borrow::Cow<'_, str> {
    if let Some(rest) = path.strip_prefix(FORM_PREFIX) {
        let mut parts = rest.splitn(3, '/');
        return match (parts.next(), parts.next(), parts.next()) {
            (Some(mac), Some(_sig), None) => format!("{FORM_PREFIX}{mac}/…").into(),
            (Some(mac), Some(_sig), Some(rest)) => format!("{FORM_PREFIX}{mac}/…/{rest}").into(),
            _ => path.into(),
        };
    }
    let Some(rest) = path.strip_prefix(AUTO_PREFIX) else {
        return path.into();
    };
    let mut parts = rest.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(tenant), Some(_token), rest) => {
            format!("{AUTO_PREFIX}{tenant}/…/{}", rest.unwrap_or("")).into()
        }
        _ => path.into(),
    }
}

/// Where automatic-provisioning URLs start.
const AUTO_PREFIX: &str = "/auto/";

/// Where the code form's URLs start ([`crate::codeform::PATH_PREFIX`]).
const FORM_PREFIX: &str = "/code-form/";

/// A percent-decoded path or path segment; `None` when it is not UTF-8 or holds a NUL, a
/// backslash or a control character.
fn decode(raw: &str) -> Option<String> {
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .ok()?
        .into_owned();
    let clean = !decoded.contains(['\0', '\\']) && !decoded.chars().any(char::is_control);
    clean.then_some(decoded)
}

fn outcome(
    fetched: Result<Result<Served, FetchError>, tokio::task::JoinError>,
    peer: SocketAddr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
) -> Outcome {
    match fetched {
        Ok(Ok(served)) => respond(served, method, headers),
        Ok(Err(e)) if e.is_internal() => {
            tracing::error!(%peer, "cannot answer {}: {e}", uri.path());
            plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Ok(Err(e)) => {
            let mut outcome = plain(StatusCode::NOT_FOUND, e.to_string());
            outcome.rejection = e.rejection(true);
            if let Some(device) = e.warn_device() {
                outcome.warning = Some(e.to_string());
                outcome.device = Some(device.to_owned());
            }
            outcome
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("task: {e}")),
    }
}

/// Seconds precision, as in HTTP dates.
fn whole_seconds(t: SystemTime) -> SystemTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn not_modified(served: &Served, headers: &HeaderMap) -> bool {
    if let Some(tags) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        // RFC 9110 §13.1.2: weak comparison; If-Modified-Since is ignored when this is present.
        return tags
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == "*" || t == served.etag);
    }
    headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| whole_seconds(served.modified) <= since)
}

fn respond(served: Served, method: &Method, headers: &HeaderMap) -> Outcome {
    let fresh = not_modified(&served, headers);
    let status = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::ETAG, &served.etag)
        .header(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(whole_seconds(served.modified)),
        )
        .header(header::CACHE_CONTROL, "no-cache");
    let body = if fresh {
        Body::empty()
    } else {
        builder = builder
            .header(header::CONTENT_TYPE, &served.content_type)
            .header(header::CONTENT_LENGTH, served.body.len());
        if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(bytes::Bytes::from_owner(served.body.clone()))
        }
    };
    Outcome {
        status,
        device: Some(served.device),
        mac: Some(served.mac),
        tenant: Some(served.tenant),
        plugin: Some(served.plugin),
        reason: None,
        rejection: None,
        warning: None,
        response: builder.body(body).unwrap_or_default(),
    }
}
