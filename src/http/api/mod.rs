//! The REST API: wazo-provd's paths, media type and JSON envelopes, so that its clients work
//! unchanged, under `/api/provd/0.2/…` and the alias `/0.2/…`.
//!
//! Differences from wazo-provd, on purpose: errors are JSON (`{"error", "details"}`) with the
//! offending field, every one of them, router errors (404, 405) and the server's own refusals
//! included; the keys that provisiond interprets are typed and bounded (the others are kept as
//! sent, within bounds); ACL failures and tenant refusals are 403 (401 stays for a missing or
//! invalid token); configs belong to tenants. docs/wazo-compat.md has the full table.

pub(crate) mod auth;
pub(crate) mod configs;
pub(crate) mod devices;
pub mod fields;
mod install;
mod misc;
mod packages;
mod prov;
pub mod query;
mod users;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

pub use auth::{hash_token, LocalAdmin};

use crate::files::FileService;
use crate::manage::ManageError;
use crate::plugins::Origin;
use crate::store::{Store, StoreError};

/// Media type of every request and response body.
pub const MEDIA_TYPE: &str = "application/vnd.proformatique.provd+json";

/// Everything the API handlers share.
pub struct ApiState {
    /// The store.
    pub store: Store,
    /// Identification, plugins and rendering.
    pub files: Arc<FileService>,
    /// Tenant of new devices; its tokens may act on every tenant that they name.
    pub default_tenant: String,
    /// Plugin directories, for `/pg_mgr/reload`.
    pub plugin_roots: Vec<(PathBuf, Origin)>,
    /// Synchronisation operations in progress.
    pub ops: Mutex<devices::Operations>,
    /// Plugin and package operations in progress (`/pg_mgr/operations/{op}`).
    pub oips: crate::manage::oip::Oips,
    /// The plugin repository (`/pg_mgr/install/…`).
    pub repo: Arc<crate::manage::plugins::Repository>,
    /// Request counters for `/metrics`.
    pub metrics: misc::Metrics,
    /// The resync queue (SIP NOTIFY), with its `[sync]` settings.
    pub sync: crate::sync::SyncQueue,
    /// `[general] base_url`: how phones reach the provisioning server, for the URLs the API
    /// shows (automatic provisioning).
    pub base_url: Option<url::Url>,
    /// Vendor packages of plugins (`/pg_mgr/plugins/{id}/install/…`), when the server has a
    /// data directory for them.
    pub packages: Option<Arc<crate::manage::packages::Packages>>,
}

impl ApiState {
    /// A state with no operation in progress and a resync queue that sends nothing.
    pub fn new(
        store: Store,
        files: Arc<FileService>,
        default_tenant: String,
        plugin_roots: Vec<(PathBuf, Origin)>,
    ) -> ApiState {
        let repo = Arc::new(crate::manage::plugins::Repository::new(
            store.path().parent().unwrap_or(std::path::Path::new(".")),
            crate::config::Plugins::default(),
        ));
        ApiState {
            store,
            files,
            default_tenant,
            plugin_roots,
            ops: Mutex::new(devices::Operations::default()),
            oips: crate::manage::oip::Oips::default(),
            repo,
            metrics: misc::Metrics::default(),
            sync: crate::sync::SyncQueue::disabled(),
            base_url: None,
            packages: None,
        }
    }

    /// The same state with the plugin repository's `[plugins]` settings.
    pub fn with_plugin_settings(mut self, settings: crate::config::Plugins) -> ApiState {
        let data_dir = self
            .store
            .path()
            .parent()
            .unwrap_or(std::path::Path::new("."));
        self.repo = Arc::new(crate::manage::plugins::Repository::new(data_dir, settings));
        self
    }

    /// The same state with vendor packages in `store`, also served by its file service.
    pub fn with_packages(mut self, store: Arc<crate::plugins::packages::PackageStore>) -> ApiState {
        // Set once per file service; a second state over the same service shares the first.
        let _ = self.files.packages.set(Arc::clone(&store));
        self.packages = Some(Arc::new(crate::manage::packages::Packages::new(store)));
        self
    }

    /// The same state with this provisioning base URL.
    pub fn with_base_url(mut self, base_url: Option<url::Url>) -> ApiState {
        self.base_url = base_url;
        self
    }

    /// The same state with a resync queue of its own with these `[sync]` settings (rendering
    /// for the files' digest as on a server without `base_url` nor `url_key`).
    pub fn with_sync(self, sync: crate::config::Sync) -> ApiState {
        let queue = crate::sync::SyncQueue::new(
            self.store.clone(),
            Arc::clone(&self.files),
            crate::plugins::ServerInfo::default(),
            sync,
        );
        self.with_sync_queue(queue)
    }

    /// The same state with this resync queue (the daemon's, shared with the provisioning
    /// server).
    pub fn with_sync_queue(mut self, queue: crate::sync::SyncQueue) -> ApiState {
        self.sync = queue;
        self
    }
}

/// Every route of the API (relative to the base), as documented in api.yml.
pub const ROUTES: &[(&str, &[&str])] = &[
    ("/", &["get"]),
    ("/status", &["get"]),
    ("/configure", &["get"]),
    ("/configure/{param}", &["get", "put"]),
    ("/dev_mgr", &["get"]),
    ("/dev_mgr/devices", &["get", "post"]),
    ("/dev_mgr/devices/{id}", &["get", "put", "delete"]),
    ("/dev_mgr/synchronize", &["post"]),
    ("/dev_mgr/synchronize/{op}", &["get", "delete"]),
    ("/dev_mgr/reconfigure", &["post"]),
    ("/dev_mgr/dhcpinfo", &["post"]),
    ("/cfg_mgr", &["get"]),
    ("/cfg_mgr/configs", &["get", "post"]),
    ("/cfg_mgr/configs/{id}", &["get", "put", "delete"]),
    ("/cfg_mgr/configs/{id}/raw", &["get"]),
    ("/cfg_mgr/autocreate", &["post"]),
    ("/pg_mgr", &["get"]),
    ("/pg_mgr/plugins", &["get"]),
    ("/pg_mgr/plugins/{id}", &["get"]),
    ("/pg_mgr/plugins/{id}/info", &["get"]),
    ("/pg_mgr/reload", &["post"]),
    ("/pg_mgr/operations/{op}", &["get", "delete"]),
    ("/pg_mgr/install", &["get"]),
    ("/pg_mgr/install/update", &["post"]),
    ("/pg_mgr/install/installable", &["get"]),
    ("/pg_mgr/install/installed", &["get"]),
    ("/pg_mgr/install/install", &["post"]),
    ("/pg_mgr/install/upgrade", &["post"]),
    ("/pg_mgr/install/uninstall", &["post"]),
    ("/pg_mgr/plugins/{id}/install", &["get"]),
    ("/pg_mgr/plugins/{id}/install/installable", &["get"]),
    ("/pg_mgr/plugins/{id}/install/installed", &["get"]),
    ("/pg_mgr/plugins/{id}/install/install", &["post"]),
    ("/pg_mgr/plugins/{id}/install/upgrade", &["post"]),
    ("/pg_mgr/plugins/{id}/install/uninstall", &["post"]),
    ("/dev_mgr/devices/{id}/reset", &["post"]),
    ("/dev_mgr/devices/{id}/secrets", &["get"]),
    ("/prov_mgr", &["get"]),
    ("/prov_mgr/categories", &["get", "post"]),
    ("/prov_mgr/categories/{id}", &["get", "put", "delete"]),
    ("/prov_mgr/codes", &["get", "post"]),
    ("/prov_mgr/codes/{code}", &["get", "delete"]),
    ("/prov_mgr/redeem", &["post"]),
    ("/prov_mgr/rollouts", &["get", "post"]),
    ("/prov_mgr/rollouts/{id}", &["get", "delete"]),
    ("/prov_mgr/jobs", &["get", "post"]),
    ("/prov_mgr/jobs/{id}", &["delete"]),
    ("/prov_mgr/auto", &["get", "put"]),
    ("/tenants", &["get", "post"]),
    ("/tenants/{id}", &["get", "put", "delete"]),
    ("/tokens", &["get", "post"]),
    ("/tokens/{id}", &["delete"]),
    ("/users", &["get", "post"]),
    ("/users/{id}", &["delete"]),
    ("/api/api.yml", &["get"]),
];

/// The API router: both bases, plus `/metrics`.
pub fn router(state: Arc<ApiState>, max_body: usize) -> Router {
    let api = Router::new()
        .route("/", get(misc::root))
        .route("/status", get(misc::status))
        .route("/configure", get(misc::configure_list))
        .route(
            "/configure/{param}",
            get(misc::param_get).put(misc::param_put),
        )
        .route("/dev_mgr", get(devices::links))
        .route("/dev_mgr/devices", get(devices::list).post(devices::create))
        .route(
            "/dev_mgr/devices/{id}",
            get(devices::show)
                .put(devices::update)
                .delete(devices::remove),
        )
        .route("/dev_mgr/synchronize", post(devices::synchronize))
        .route(
            "/dev_mgr/synchronize/{op}",
            get(devices::op_get).delete(devices::op_delete),
        )
        .route("/dev_mgr/reconfigure", post(devices::reconfigure))
        .route("/dev_mgr/dhcpinfo", post(devices::dhcpinfo))
        .route("/cfg_mgr", get(configs::links))
        .route("/cfg_mgr/configs", get(configs::list).post(configs::create))
        .route(
            "/cfg_mgr/configs/{id}",
            get(configs::show)
                .put(configs::update)
                .delete(configs::remove),
        )
        .route("/cfg_mgr/configs/{id}/raw", get(configs::raw))
        .route("/cfg_mgr/autocreate", post(configs::autocreate))
        .route("/pg_mgr", get(misc::pg_links))
        .route("/pg_mgr/plugins", get(misc::plugins))
        .route("/pg_mgr/plugins/{id}", get(misc::plugin_links))
        .route("/pg_mgr/plugins/{id}/info", get(misc::plugin_info))
        .route("/pg_mgr/reload", post(misc::reload))
        .route(
            "/pg_mgr/operations/{op}",
            get(misc::oip_get).delete(misc::oip_delete),
        )
        .route("/pg_mgr/install", get(install::links))
        .route("/pg_mgr/install/update", post(install::update))
        .route("/pg_mgr/install/installable", get(install::installable))
        .route("/pg_mgr/install/installed", get(install::installed))
        .route("/pg_mgr/install/install", post(install::install))
        .route("/pg_mgr/install/upgrade", post(install::upgrade))
        .route("/pg_mgr/install/uninstall", post(install::uninstall))
        .route("/pg_mgr/plugins/{id}/install", get(packages::links))
        .route(
            "/pg_mgr/plugins/{id}/install/installable",
            get(packages::installable),
        )
        .route(
            "/pg_mgr/plugins/{id}/install/installed",
            get(packages::installed),
        )
        .route(
            "/pg_mgr/plugins/{id}/install/install",
            post(packages::install),
        )
        .route(
            "/pg_mgr/plugins/{id}/install/upgrade",
            post(packages::upgrade),
        )
        .route(
            "/pg_mgr/plugins/{id}/install/uninstall",
            post(packages::uninstall),
        )
        .route("/dev_mgr/devices/{id}/reset", post(prov::device_reset))
        .route("/dev_mgr/devices/{id}/secrets", get(prov::device_secrets))
        .route("/prov_mgr", get(prov::links))
        .route(
            "/prov_mgr/categories",
            get(prov::categories).post(prov::category_create),
        )
        .route(
            "/prov_mgr/categories/{id}",
            get(prov::category_show)
                .put(prov::category_update)
                .delete(prov::category_delete),
        )
        .route("/prov_mgr/codes", get(prov::codes).post(prov::code_create))
        .route(
            "/prov_mgr/codes/{code}",
            get(prov::code_show).delete(prov::code_revoke),
        )
        .route("/prov_mgr/redeem", post(prov::redeem))
        .route(
            "/prov_mgr/rollouts",
            get(prov::rollouts_list).post(prov::rollout_create),
        )
        .route(
            "/prov_mgr/rollouts/{id}",
            get(prov::rollout_show).delete(prov::rollout_delete),
        )
        .route(
            "/prov_mgr/jobs",
            get(prov::jobs_list).post(prov::job_create),
        )
        .route("/prov_mgr/jobs/{id}", delete(prov::job_delete))
        .route(
            "/prov_mgr/auto",
            get(prov::auto_show).put(prov::auto_update),
        )
        .route("/tenants", get(misc::tenants).post(misc::tenant_create))
        .route(
            "/tenants/{id}",
            get(misc::tenant_show)
                .put(misc::tenant_update)
                .delete(misc::tenant_delete),
        )
        .route("/tokens", get(misc::tokens).post(misc::token_create))
        .route("/tokens/{id}", delete(misc::token_delete))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{id}", delete(users::delete))
        .route("/api/api.yml", get(misc::openapi));
    let routes: Router = Router::new()
        .nest("/api/provd/0.2", api.clone())
        .nest("/0.2", api)
        .route("/metrics", get(misc::metrics))
        .with_state(Arc::clone(&state));
    let exact = routes
        .clone()
        .fallback(|| async { ApiError::not_found("no such resource") });
    // wazo-provd's clients build some URLs with a trailing slash (`/0.2/dev_mgr/`): such a
    // path is answered as the same path without it.
    routes
        .fallback(move |request: Request| without_trailing_slash(exact.clone(), request))
        .layer(middleware::from_fn_with_state(Arc::clone(&state), count))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::Extension(BodyLimit(max_body)))
        .layer(middleware::from_fn(json_errors))
}

/// The body limit of the router, for the message of a 413.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// Longest body of a non-JSON error answer that is quoted in its JSON replacement.
const QUOTED_ERROR_BYTES: usize = 1024;

/// Turns any error answer that is not already a JSON error (the router's 405, a rejection of
/// an axum extractor) into one, so that every error of the API has the same shape.
async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == MEDIA_TYPE.as_bytes());
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, QUOTED_ERROR_BYTES)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .unwrap_or_default();
    // axum adds the Allow header around this layer, after it has run.
    let message = if status == StatusCode::METHOD_NOT_ALLOWED {
        format!(
            "method {method} is not allowed on this path (the Allow header lists those that are)"
        )
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let json = ApiError::new(status, message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let (json_parts, json_body) = json.into_parts();
    parts.headers.extend(json_parts.headers);
    Response::from_parts(parts, json_body)
}

/// The API's wording of the refusals that the HTTP server makes by itself (see
/// [`crate::http::Refusal`]): a JSON error like every other.
pub fn refusal(status: StatusCode, message: String) -> Response {
    ApiError::new(status, message).into_response()
}

async fn without_trailing_slash(router: Router, mut request: Request) -> Response {
    let path = request.uri().path();
    if path.len() <= 1 || !path.ends_with('/') {
        return ApiError::not_found("no such resource").into_response();
    }
    let trimmed = path.trim_end_matches('/');
    let rewritten = match request.uri().query() {
        Some(q) => format!("{trimmed}?{q}"),
        None => trimmed.to_owned(),
    };
    match rewritten.parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return ApiError::not_found("no such resource").into_response(),
    }
    match tower::ServiceExt::oneshot(router, request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// Counts requests by route and status for `/metrics`.
async fn count(
    axum::extract::State(state): axum::extract::State<Arc<ApiState>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let response = next.run(request).await;
    state
        .metrics
        .count(&route, method.as_str(), response.status().as_u16());
    response
}

/// An error answer: status and `{"error": message, "details": …}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Value,
}

impl ApiError {
    /// What the error says (for the console, which shows it on a page).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An error with no details.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            details: Value::Null,
        }
    }

    /// 400 naming the offending field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        let (field, message) = (field.into(), message.into());
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: format!("{field}: {message}"),
            details: json!({ "field": field, "message": message }),
        }
    }

    /// 404, also used for objects of other tenants (no existence leak).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 403.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// The status of the answer.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The same error with another status.
    pub fn with_status(mut self, status: StatusCode) -> ApiError {
        self.status = status;
        self
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let status = match &e {
            StoreError::NotFound { .. } => StatusCode::NOT_FOUND,
            StoreError::AlreadyExists { .. }
            | StoreError::Taken { .. }
            | StoreError::Conflict { .. }
            | StoreError::InUse { .. } => StatusCode::CONFLICT,
            StoreError::InvalidReference(_) | StoreError::Invalid(_) | StoreError::InvalidId(_) => {
                StatusCode::BAD_REQUEST
            }
            StoreError::NotDeletable { .. } | StoreError::TenantLocked { .. } => {
                StatusCode::FORBIDDEN
            }
            StoreError::Open { .. }
            | StoreError::Kv(_)
            | StoreError::Flush(_)
            | StoreError::Corrupt { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::Random(_) => {
                tracing::error!("store error in the API: {e}");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        // A taken MAC or key must not say who holds it: that could be another tenant.
        let message = match &e {
            StoreError::Taken { what, .. } => format!("{what} is already in use"),
            StoreError::Open { .. }
            | StoreError::Kv(_)
            | StoreError::Flush(_)
            | StoreError::Corrupt { .. }
            | StoreError::SchemaTooNew { .. }
            | StoreError::Random(_) => "internal store error".to_owned(),
            _ => e.to_string(),
        };
        ApiError::new(status, message)
    }
}

impl From<ManageError> for ApiError {
    fn from(e: ManageError) -> ApiError {
        match e {
            ManageError::NotFound(m) => ApiError::not_found(m),
            ManageError::Forbidden(m) => ApiError::forbidden(m),
            ManageError::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
            ManageError::Field { field, message } => ApiError::field(field, message),
            e @ ManageError::Busy(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            e @ ManageError::RateLimited => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string())
            }
            ManageError::Ambiguous { message, ids } => ApiError {
                status: StatusCode::CONFLICT,
                message,
                details: json!({ "candidates": ids }),
            },
            ManageError::Internal(m) => {
                tracing::error!("API request failed: {m}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
            }
            ManageError::Store(e) => e.into(),
        }
    }
}

impl From<query::QueryError> for ApiError {
    fn from(e: query::QueryError) -> ApiError {
        ApiError::field(e.param, e.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "details": self.details });
        let mut response = (self.status, body.to_string()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
        response
    }
}

/// Result of a handler.
pub type ApiResult<T = Response> = Result<T, ApiError>;

/// A JSON answer in the provd media type.
pub fn reply(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}

/// The `Location` of a created object or operation: `/0.2/<path>`, whichever base the request
/// came through. wazo-provd, behind Wazo's nginx, only ever sees and answers `/0.2/…`, and
/// wazo-provd-client rebuilds an operation's URL by dropping the first two segments of the
/// path (`/0.2/dev_mgr`) and putting the rest after its own base; a `/api/provd/0.2/…` path
/// would be rebuilt wrong. `/0.2` is also served on the same listener, so the path works as
/// is for a client that talks to provisiond directly.
pub fn location(path: &str) -> String {
    format!("/0.2/{path}")
}

/// Queues a SIP NOTIFY of the device, whose files changed (never blocks; the queue logs and
/// counts what it drops).
pub(super) fn resync(state: &ApiState, device: &str, reason: crate::sync::Reason) {
    state.sync.queue(device, reason);
}

/// 201 with `Location: /0.2/<path>` and `{"id": id}`.
pub fn created(path: &str, id: &str) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location(path))],
        reply(StatusCode::CREATED, json!({ "id": id })),
    )
        .into_response()
}

/// 201 for a started plugin or package operation, with its `Location`
/// (`/0.2/pg_mgr/operations/<n>`: wazo-provd-client appends what follows `/0.2/pg_mgr` to its
/// `pg_mgr` base).
pub fn oip_started(handle: &crate::manage::oip::OipHandle) -> Response {
    (
        StatusCode::CREATED,
        [(
            header::LOCATION,
            location(&format!("pg_mgr/operations/{}", handle.id())),
        )],
        reply(StatusCode::CREATED, json!({})),
    )
        .into_response()
}

/// A JSON request body in the provd media type (or plain `application/json`), decoded with
/// the path of any offending field.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let media = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if media != MEDIA_TYPE && media != "application/json" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("the body must be {MEDIA_TYPE} (or application/json)"),
            ));
        }
        let limit = request.extensions().get::<BodyLimit>().map(|l| l.0);
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| match (e.status(), limit) {
                (StatusCode::PAYLOAD_TOO_LARGE, Some(limit)) => {
                    ApiError::field("body", format!("larger than the limit of {limit} bytes"))
                        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
                }
                (status, _) => {
                    ApiError::new(status, format!("cannot read the body: {}", e.body_text()))
                }
            })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            ApiError::field(
                if path == "." { "body".to_owned() } else { path },
                e.inner().to_string(),
            )
        })?;
        // One JSON value and nothing after it but whitespace: trailing data is a client bug
        // (two bodies glued together, a truncated edit) that must not pass as the first value.
        de.end()
            .map_err(|e| ApiError::field("body", format!("data after the JSON value ({e})")))?;
        Ok(Body(value))
    }
}

/// One path parameter (an id, a name, an operation number), decoded from the percent
/// encoding; a parameter that is not UTF-8 once decoded is a 400 naming it.
pub struct PathParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(PathParam(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => match e.kind() {
                axum::extract::path::ErrorKind::InvalidUtf8InPathParam { key } => Err(
                    ApiError::field(key.clone(), "not UTF-8 once percent-decoded"),
                ),
                _ => Err(ApiError::new(e.status(), e.body_text())),
            },
            Err(e) => Err(ApiError::new(e.status(), e.body_text())),
        }
    }
}

/// `{"id": …}` bodies of the operation routes.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdBody {
    /// The object id.
    pub id: String,
}

/// `{"links": [...]}` for an intermediate node, hrefs relative to the request path.
pub fn links(base: &str, rels: &[(&str, &str)]) -> Response {
    let base = base.trim_end_matches('/');
    let items: Vec<Value> = rels
        .iter()
        .map(|(rel, path)| json!({ "rel": rel, "href": format!("{base}/{path}") }))
        .collect();
    reply(StatusCode::OK, json!({ "links": items }))
}

/// Bytes of a streamed answer gathered before they are handed to the connection.
const STREAM_CHUNK: usize = 64 * 1024;
/// Chunks waiting for a slow client at most; the reader waits beyond (bounded memory).
const STREAM_QUEUE: usize = 4;

/// A body fed chunk by chunk from a blocking task; an error aborts the answer (the client
/// sees a broken transfer, never a truncated document passed off as complete).
struct ChannelBody(tokio::sync::mpsc::Receiver<Result<axum::body::Bytes, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|item| item.map(|chunk| chunk.map(http_body::Frame::data)))
    }
}

/// A 200 `{"<envelope>": [...]}` written as `docs` are read, through `query` (selector, sort,
/// paging, fields): memory stays bounded by a few chunks whatever the number of documents,
/// unless `query` sorts documents that do not come `presorted`.
pub fn stream_list(
    envelope: &'static str,
    docs: impl Iterator<Item = Result<Value, ApiError>> + Send + 'static,
    presorted: bool,
    query: query::ListQuery,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
    tokio::task::spawn_blocking(move || {
        let mut buf = format!("{{\"{envelope}\":[").into_bytes();
        let mut first = true;
        let send = |buf: &mut Vec<u8>| {
            let chunk = axum::body::Bytes::from(std::mem::take(buf));
            tx.blocking_send(Ok(chunk)).is_ok()
        };
        let mut gone = false;
        let result = query.run(docs, presorted, |doc| {
            if !first {
                buf.push(b',');
            }
            first = false;
            // A Value always serializes.
            let _ = serde_json::to_writer(&mut buf, &doc);
            if buf.len() >= STREAM_CHUNK && !send(&mut buf) {
                gone = true;
                return false;
            }
            true
        });
        match result {
            _ if gone => {}
            Ok(()) => {
                buf.extend_from_slice(b"]}");
                send(&mut buf);
            }
            Err(e) => {
                tracing::error!(
                    "a {envelope} listing failed while it was sent: {}",
                    e.message
                );
                let _ = tx.blocking_send(Err(std::io::Error::other(e.message)));
            }
        }
    });
    let mut response = axum::body::Body::new(ChannelBody(rx)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    response
}

/// Runs store work off the async runtime (writes wait for their fsync).
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("task failed: {e}"),
        )
    })?
}
