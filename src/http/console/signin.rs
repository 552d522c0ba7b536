//! Sign-in (console user and password, or an API token), sign-out and sign-out everywhere.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::session::{self, token_role, Who};
use super::{blocking, cookies, csrf, ConsoleError, ConsoleState, Form};
use crate::manage::{users, ManageError};

pub(super) async fn form(State(state): State<Arc<ConsoleState>>) -> Result<Response, ConsoleError> {
    signin_page(&state, StatusCode::OK, None)
}

/// The sign-in page with a fresh CSRF token, in its hidden field and in a cookie of its own:
/// a sign-in POST must carry both, equal. Another site can make a browser post the form but
/// can neither read nor set the cookie, so it cannot sign a victim into the attacker's
/// account (login CSRF).
fn signin_page(
    state: &ConsoleState,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, ConsoleError> {
    let token = csrf::random_token().map_err(ConsoleError::internal)?;
    let mut page = state.render(
        "signin.html",
        None,
        json!({ "error": error, "signin_csrf": token }),
    )?;
    *page.status_mut() = status;
    let cookie = cookies::set_signin(&token, state.secure)
        .parse()
        .map_err(ConsoleError::internal)?;
    page.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(page)
}

pub(super) async fn submit(
    State(state): State<Arc<ConsoleState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ConsoleError> {
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    // Before anything else, the password check and the failure budgets included.
    let paired = cookies::signin_token(&headers).is_some_and(|t| csrf::valid(&t, &fields));
    if !paired {
        return Err(ConsoleError::forbidden(
            "The sign-in form's security token is missing or stale; reload the page and try again.",
        ));
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.trim().is_empty())
    };
    let peer = peer.ip().to_canonical();
    let (user, password, token) = (field("user"), field("password"), field("token"));
    // A token sign-in is limited under a name of its own: token guesses share one budget.
    let limit_name = user.clone().unwrap_or_else(|| "(API token)".to_owned());
    let st = Arc::clone(&state);
    let outcome = blocking(move || {
        let now = Instant::now();
        st.limiter.check(&limit_name, peer, now)?;
        let found = match (user, password, token) {
            (Some(user), Some(password), _) => users::verify(&st.api.store, user.trim(), &password)
                .map(|u| {
                    let stamp = session::user_stamp(&u);
                    (Who::User(u.name), u.tenant, u.role, stamp)
                }),
            (None, None, Some(token)) => {
                let hash = crate::http::api::hash_token(token.trim());
                match st.api.store.token(&hash).map_err(ConsoleError::internal)? {
                    Some(t) if t.expires.is_none_or(|at| at > crate::model::now()) => {
                        match token_role(&t.acl, &t.tenant, &st.api.default_tenant) {
                            Some(role) => {
                                let stamp = session::token_stamp(&t);
                                Ok((Who::Token(hash), t.tenant, role, stamp))
                            }
                            None => Err(ManageError::Unauthorized(
                                "this token's ACL does not cover every page of the console's \
                                 viewer role (see \"Signing in\" in docs/console.md); use it \
                                 with the REST API, or sign in as a console user"
                                    .into(),
                            )),
                        }
                    }
                    _ => Err(ManageError::Unauthorized("invalid or expired token".into())),
                }
            }
            _ => {
                return Err(ConsoleError::new(
                    StatusCode::BAD_REQUEST,
                    "Give a user name and a password, or an API token.",
                ))
            }
        };
        match found {
            Ok(found) => Ok(Ok(found)),
            Err(ManageError::Unauthorized(why)) => {
                st.limiter.failed(&limit_name, peer, now);
                tracing::warn!(%peer, user = %limit_name, "console sign-in refused: {why}");
                Ok(Err(why))
            }
            Err(e) => Err(e.into()),
        }
    })
    .await;
    let (who, tenant, role, stamp) = match outcome {
        Ok(Ok(found)) => found,
        Ok(Err(why)) => return signin_page(&state, StatusCode::UNAUTHORIZED, Some(&why)),
        // Missing fields: the form again with what to fill in, not a bare error page.
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            return signin_page(&state, StatusCode::BAD_REQUEST, Some(&e.message));
        }
        Err(e) if e.status == StatusCode::TOO_MANY_REQUESTS => {
            return signin_page(
                &state,
                StatusCode::TOO_MANY_REQUESTS,
                Some("Too many failed sign-ins; wait a minute and try again."),
            );
        }
        Err(e) => return Err(e),
    };
    let id = csrf::random_token().map_err(ConsoleError::internal)?;
    let token = csrf::random_token().map_err(ConsoleError::internal)?;
    tracing::info!(%peer, tenant = %tenant, role = role.as_str(), "console sign-in");
    state
        .sessions
        .start(id.clone(), token, who, tenant, role, stamp, Instant::now())
        .map_err(|e| ConsoleError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let cookie = cookies::set(&id, state.secure, state.sessions.max_age().as_secs());
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/".to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response();
    // The form's token is spent: its cookie goes (appended: a second Set-Cookie).
    let spent = cookies::clear_signin(state.secure)
        .parse()
        .map_err(ConsoleError::internal)?;
    response.headers_mut().append(header::SET_COOKIE, spent);
    Ok(response)
}

fn to_signin(state: &ConsoleState) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/signin".to_owned()),
            (header::SET_COOKIE, cookies::clear(state.secure)),
        ],
    )
        .into_response()
}

pub(super) async fn signout(State(state): State<Arc<ConsoleState>>, form: Form) -> Response {
    state.sessions.end(&form.me.id);
    to_signin(&state)
}

pub(super) async fn signout_everywhere(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Response {
    let n = state.sessions.end_all(&form.me.session.who);
    tracing::info!(who = %form.me.session.display_name(), sessions = n, "console sign-out everywhere");
    to_signin(&state)
}
