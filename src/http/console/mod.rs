//! The web console: server-rendered pages under `/console/` on the API listener, for people.
//! Every page works without JavaScript. Handlers parse, authorize by the session's role, call
//! the same `manage` functions as the REST API, and render a template; rules live in
//! `src/manage/`. Cookies, CSRF, sessions and error pages have modules of their own.

mod access;
mod auto;
mod configs;
mod cookies;
mod csrf;
mod devices;
mod dhcp;
mod errors;
mod jobs;
mod live;
mod plugins;
mod prov;
mod session;
mod signin;
mod tenants;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;

pub use errors::ConsoleError;

use super::api::ApiState;
use crate::manage::users::{SignInLimiter, SignInLimits};
use crate::manage::Scope;
use crate::model::Role;
use session::{Session, Sessions, Who};

/// Everything the console's handlers share.
pub struct ConsoleState {
    /// The REST API's state: store, file service, resync queue, default tenant.
    pub api: Arc<ApiState>,
    sessions: Sessions,
    limiter: SignInLimiter,
    templates: tera::Tera,
    secure: bool,
    /// `[dhcp]` when the responder is on (its pools, shown read-only).
    dhcp: Option<crate::config::Dhcp>,
    /// How often an open event stream re-checks its session (`live_check_secs`).
    live_check: Duration,
}

/// The templates, compiled into the binary.
const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("templates/base.html")),
    ("signin.html", include_str!("templates/signin.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("devices.html", include_str!("templates/devices.html")),
    ("device.html", include_str!("templates/device.html")),
    ("confirm.html", include_str!("templates/confirm.html")),
    ("categories.html", include_str!("templates/categories.html")),
    ("codes.html", include_str!("templates/codes.html")),
    ("rollouts.html", include_str!("templates/rollouts.html")),
    ("rollout.html", include_str!("templates/rollout.html")),
    ("configs.html", include_str!("templates/configs.html")),
    ("config.html", include_str!("templates/config.html")),
    ("auto.html", include_str!("templates/auto.html")),
    ("jobs.html", include_str!("templates/jobs.html")),
    ("plugins.html", include_str!("templates/plugins.html")),
    ("plugin.html", include_str!("templates/plugin.html")),
    ("operation.html", include_str!("templates/operation.html")),
    ("dhcp.html", include_str!("templates/dhcp.html")),
    ("tenants.html", include_str!("templates/tenants.html")),
    ("users.html", include_str!("templates/users.html")),
    ("tokens.html", include_str!("templates/tokens.html")),
];

const CSS: &str = include_str!("assets/console.css");
const JS: &str = include_str!("assets/console.js");

/// The templates could not be compiled (a bug of this build: tests compile them).
#[derive(Debug, thiserror::Error)]
#[error("console templates: {0}")]
pub struct TemplateError(String);

impl ConsoleState {
    /// The console's state over the API's, with `[console]` settings.
    pub fn new(
        api: Arc<ApiState>,
        settings: &crate::config::Console,
    ) -> Result<ConsoleState, TemplateError> {
        ConsoleState::with_limits(api, settings, SignInLimits::default())
    }

    /// The same with these sign-in budgets.
    pub fn with_limits(
        api: Arc<ApiState>,
        settings: &crate::config::Console,
        limits: SignInLimits,
    ) -> Result<ConsoleState, TemplateError> {
        let mut templates = tera::Tera::default();
        templates
            .add_raw_templates(TEMPLATES.iter().copied())
            .map_err(|e| TemplateError(format!("{e:?}")))?;
        // Tera's own `urlencode_strict` needs its "builtins" feature, which this build leaves
        // out: the same encoding (every byte but ASCII letters and digits) from here.
        templates.register_filter(
            "urlencode_strict",
            |value: &tera::Value, _: &std::collections::HashMap<String, tera::Value>| {
                let text = value
                    .as_str()
                    .ok_or_else(|| tera::Error::msg("urlencode_strict: not a string"))?;
                Ok(tera::Value::String(devices::seg(text)))
            },
        );
        // Names ending in .html are escaped by default: nothing a user typed becomes markup.
        templates.autoescape_on(vec![".html"]);
        Ok(ConsoleState {
            api,
            sessions: Sessions::new(
                Duration::from_secs(settings.idle_timeout_secs),
                Duration::from_secs(settings.max_session_secs),
            ),
            limiter: SignInLimiter::new(limits),
            templates,
            secure: settings.secure_cookies,
            dhcp: None,
            live_check: Duration::from_secs(settings.live_check_secs.max(1)),
        })
    }

    /// The same state showing the DHCP responder's `[dhcp]` settings, when it is on.
    pub fn with_dhcp(mut self, dhcp: &crate::config::Dhcp) -> ConsoleState {
        self.dhcp = (dhcp.mode != crate::config::DhcpMode::Off).then(|| dhcp.clone());
        self
    }

    /// Renders `template` with `context` (the session's name, role and CSRF token added).
    fn render(
        &self,
        template: &str,
        me: Option<&SignedIn>,
        mut context: Value,
    ) -> Result<Response, ConsoleError> {
        if let (Some(me), Some(obj)) = (me, context.as_object_mut()) {
            obj.insert(
                "me".into(),
                serde_json::json!({
                    "name": me.session.display_name(),
                    "tenant": me.session.tenant,
                    "role": me.session.role.as_str(),
                    "operator": me.session.role >= Role::Operator,
                    "admin": me.session.role >= Role::Admin,
                    "master": me.scope.is_root(),
                }),
            );
            obj.insert("csrf".into(), Value::String(me.session.csrf.clone()));
        }
        let ctx = tera::Context::from_value(context).map_err(ConsoleError::internal)?;
        let page = self
            .templates
            .render(template, &ctx)
            .map_err(|e| ConsoleError::internal(format!("{e:?}")))?;
        let mut response = Html(page).into_response();
        // Pages show tenant data: not kept by shared caches, not framed by other sites.
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, "no-store".parse().expect("static"));
        headers.insert("x-frame-options", "DENY".parse().expect("static"));
        headers.insert(
            "content-security-policy",
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'"
                .parse()
                .expect("static"),
        );
        Ok(response)
    }
}

/// What a confirmation page asks before a destructive action (templates/confirm.html).
#[derive(serde::Serialize)]
struct Confirm {
    title: String,
    text: String,
    /// Where the confirmed form posts (with `confirm=yes`).
    action: String,
    /// Whether a "Remove anyway" box is offered.
    force: bool,
    button: &'static str,
    cancel: String,
}

impl Confirm {
    /// A deletion's question: "Yes, delete it", no "Remove anyway" box.
    fn delete(title: String, text: &str, action: String, cancel: impl Into<String>) -> Confirm {
        Confirm {
            title,
            text: text.into(),
            action,
            force: false,
            button: "Yes, delete it",
            cancel: cancel.into(),
        }
    }
}

impl ConsoleState {
    /// The page asking to confirm a destructive action (no JavaScript needed).
    fn confirm(&self, me: &SignedIn, ask: Confirm) -> Result<Response, ConsoleError> {
        let context = serde_json::to_value(ask).map_err(ConsoleError::internal)?;
        self.render("confirm.html", Some(me), context)
    }

    /// A form's page that may show why the form was refused: the message as the template's
    /// `error`, the refusal's status as the page's (200 without one).
    fn render_refused(
        &self,
        template: &str,
        me: &SignedIn,
        context: Value,
        refused: Option<ConsoleError>,
    ) -> Result<Response, ConsoleError> {
        self.render_refused_as(template, me, context, "error", refused)
    }

    /// The same with the message as the template's `key`.
    fn render_refused_as(
        &self,
        template: &str,
        me: &SignedIn,
        mut context: Value,
        key: &str,
        refused: Option<ConsoleError>,
    ) -> Result<Response, ConsoleError> {
        let status = refused.as_ref().map_or(StatusCode::OK, |e| e.status);
        if let Some(obj) = context.as_object_mut() {
            obj.insert(key.into(), refused.map(|e| e.message).into());
        }
        let mut page = self.render(template, Some(me), context)?;
        *page.status_mut() = status;
        Ok(page)
    }
}

/// The console's routes, and `/` redirecting to it.
pub fn router(state: Arc<ConsoleState>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(devices::overview))
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/signin", get(signin::form).post(signin::submit))
        .route("/console/events", get(live::events))
        .route("/console/signout", post(signin::signout))
        .route(
            "/console/signout-everywhere",
            post(signin::signout_everywhere),
        )
        .route("/console/devices", get(devices::list))
        .route("/console/devices/{id}", get(devices::show))
        .route("/console/devices/{id}/{action}", post(devices::action))
        .route(
            "/console/categories",
            get(prov::categories).post(prov::category_create),
        )
        .route("/console/codes", get(prov::codes).post(prov::code_create))
        .route("/console/codes/{code}/revoke", post(prov::code_revoke))
        .route(
            "/console/rollouts",
            get(prov::rollouts).post(prov::rollout_create),
        )
        .route("/console/rollouts/{id}", get(prov::rollout))
        .route("/console/rollouts/{id}/csv", get(prov::rollout_csv))
        .route("/console/configs", get(configs::list).post(configs::create))
        .route("/console/configs/{id}/delete", post(configs::delete))
        .route("/console/configs/{id}/parents", post(configs::parents))
        .route(
            "/console/configs/{id}",
            get(configs::show).post(configs::save),
        )
        .route("/console/auto", get(auto::show).post(auto::update))
        .route("/console/jobs", get(jobs::list).post(jobs::create))
        .route("/console/jobs/{id}/delete", post(jobs::delete))
        .route("/console/plugins", get(plugins::list).post(plugins::update))
        .route("/console/plugins/{name}", get(plugins::show))
        .route("/console/plugins/{name}/{action}", post(plugins::action))
        .route(
            "/console/plugins/{name}/packages/{id}/{action}",
            post(plugins::package_action),
        )
        .route("/console/operations/{op}", get(plugins::operation))
        .route("/console/dhcp", get(dhcp::show))
        .route("/console/tenants", get(tenants::list).post(tenants::create))
        .route("/console/tenants/{id}/{action}", post(tenants::action))
        .route(
            "/console/users",
            get(access::users).post(access::user_create),
        )
        .route("/console/users/{name}/delete", post(access::user_delete))
        .route(
            "/console/tokens",
            get(access::tokens).post(access::token_create),
        )
        .route("/console/tokens/{id}/delete", post(access::token_delete))
        .route("/console/{*rest}", get(not_found).post(not_found))
        .with_state(state)
}

async fn not_found() -> ConsoleError {
    ConsoleError::not_found()
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS).into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        JS,
    )
        .into_response()
}

/// A request of a signed-in session: who, as which scope and role. Without a live session
/// the request is sent to the sign-in page (303, so that a POST becomes a GET there).
pub struct SignedIn {
    /// The session's id (its cookie).
    pub id: String,
    /// The session.
    pub session: Session,
    /// Where it stands in the tenant tree.
    pub scope: Scope,
}

impl SignedIn {
    /// Fails with 403 unless the session's role is `role` or above.
    pub fn require(&self, role: Role) -> Result<(), ConsoleError> {
        if self.session.role >= role {
            Ok(())
        } else {
            Err(ConsoleError::forbidden(format!(
                "This needs the {} role; you are {}.",
                role.as_str(),
                self.session.role.as_str()
            )))
        }
    }
}

/// The answer to a request without a live session.
pub struct SignInFirst;

impl IntoResponse for SignInFirst {
    fn into_response(self) -> Response {
        Redirect::to("/console/signin").into_response()
    }
}

impl FromRequestParts<Arc<ConsoleState>> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ConsoleState>,
    ) -> Result<Self, Self::Rejection> {
        let id = cookies::session_id(&parts.headers).ok_or_else(|| SignInFirst.into_response())?;
        let session = state
            .sessions
            .touch(&id, Instant::now())
            .ok_or_else(|| SignInFirst.into_response())?;
        let scope = SignedIn::check(state, &id, &session)
            .await
            .map_err(IntoResponse::into_response)?;
        let Some(scope) = scope else {
            return Err(SignInFirst.into_response());
        };
        Ok(SignedIn { id, session, scope })
    }
}

impl SignedIn {
    /// What each request (and an open event stream, at each keep-alive) checks: the session's
    /// scope as the store says now, or `None`, the session then ended.
    async fn check(
        state: &Arc<ConsoleState>,
        id: &str,
        session: &Session,
    ) -> Result<Option<Scope>, ConsoleError> {
        // The user or token may have gone since sign-in, or changed (another role or tenant,
        // deleted and created again): then the session ends.
        let st = Arc::clone(state);
        let (check, tenant) = (session.clone(), session.tenant.clone());
        let scope = tokio::task::spawn_blocking(move || -> Result<Option<Scope>, ConsoleError> {
            if !still_valid(&st, &check)? {
                return Ok(None);
            }
            match Scope::new(&st.api.store, &tenant, None, &st.api.default_tenant) {
                Ok(scope) => Ok(Some(scope)),
                Err(crate::manage::ManageError::Unauthorized(_)) => Ok(None),
                Err(e) => Err(e.into()),
            }
        })
        .await
        .map_err(ConsoleError::internal)??;
        if scope.is_none() {
            state.sessions.end(id);
        }
        Ok(scope)
    }
}

/// Whether `session` still stands for the stored user or token it was started from (store
/// reads: run it off the async runtime).
fn still_valid(state: &ConsoleState, session: &Session) -> Result<bool, ConsoleError> {
    let store = &state.api.store;
    Ok(match &session.who {
        Who::User(name) => session::user_matches(
            session,
            store.user(name).map_err(ConsoleError::internal)?.as_ref(),
        ),
        Who::Token(hash) => session::token_matches(
            session,
            store.token(hash).map_err(ConsoleError::internal)?.as_ref(),
            &state.api.default_tenant,
        ),
    })
}

/// Largest form body read.
const MAX_FORM_BYTES: usize = 1024 * 1024;

/// A urlencoded form whose CSRF token is the session's (403 otherwise), with the session.
pub struct Form {
    /// The session.
    pub me: SignedIn,
    /// The fields, in order, the CSRF token left out.
    pub fields: Vec<(String, String)>,
}

impl Form {
    /// The first value of field `name`, trimmed; `None` when absent or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// Whether a destructive action is confirmed: only its confirmation page sends
    /// `confirm=yes`.
    pub fn confirmed(&self) -> bool {
        self.get("confirm") == Some("yes")
    }
}

impl FromRequest<Arc<ConsoleState>> for Form {
    type Rejection = Response;

    async fn from_request(
        request: Request,
        state: &Arc<ConsoleState>,
    ) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let me = SignedIn::from_request_parts(&mut parts, state).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| {
                ConsoleError::new(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.")
                    .into_response()
            })?;
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(&bytes)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if !csrf::valid(&me.session.csrf, &fields) {
            return Err(ConsoleError::forbidden(
                "The form's security token is missing or stale; reload the page and try again.",
            )
            .into_response());
        }
        let fields = fields
            .into_iter()
            .filter(|(k, _)| k != csrf::FIELD)
            .collect();
        Ok(Form { me, fields })
    }
}

/// Runs store work (and argon2) off the async runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ConsoleError> + Send + 'static,
) -> Result<T, ConsoleError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ConsoleError::internal)?
}

/// 303 to `to` after a successful POST.
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}
