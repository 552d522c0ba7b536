//! Who may come in: console users of the session's subtree (list, create with a role and a
//! password, delete) and API tokens (the default tenant only, as the API's `/tokens`: list,
//! create showing the secret once, delete). Reading for every role, changes for admins, through
//! `manage::users` and `manage::tokens` as the REST handlers.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::session::Who;
use super::{blocking, see_other, Confirm, ConsoleError, ConsoleState, Form, SignedIn};
use crate::manage::{self, tokens::NewToken};
use crate::model::Role;

/// What a create form had (never the password), shown again when it is refused.
#[derive(Default)]
struct Typed {
    name: String,
    tenant: String,
    role: String,
    acl: String,
    expires_in: String,
    description: String,
}

/// The tenants of the subtree, for the forms' choices.
async fn tenant_ids(state: &Arc<ConsoleState>, me: &SignedIn) -> Result<Vec<String>, ConsoleError> {
    let st = Arc::clone(state);
    let scope = me.scope.clone();
    let tenants = blocking(move || Ok(manage::tenants::list(&st.api.store, &scope)?)).await?;
    Ok(tenants.into_iter().map(|t| t.id).collect())
}

async fn users_page(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    typed: Typed,
    refused: Option<ConsoleError>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(state);
    let scope = me.scope.clone();
    let users = blocking(move || Ok(manage::users::list(&st.api.store, &scope)?)).await?;
    let items: Vec<Value> = users
        .iter()
        .map(|u| {
            json!({ "name": u.name, "tenant": u.tenant, "role": u.role.as_str(),
                "created": manage::rollouts::rfc3339(u.created),
                "me": matches!(&me.session.who, Who::User(n) if *n == u.name) })
        })
        .collect();
    let tenants = tenant_ids(state, me).await?;
    let tenant = if typed.tenant.is_empty() {
        me.scope.tenant().to_owned()
    } else {
        typed.tenant
    };
    state.render_refused(
        "users.html",
        me,
        json!({ "users": items, "tenants": tenants,
            "typed": { "name": typed.name, "tenant": tenant,
                "role": if typed.role.is_empty() { "viewer".to_owned() } else { typed.role } } }),
        refused,
    )
}

pub(super) async fn users(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    users_page(&state, &me, Typed::default(), None).await
}

/// `POST /console/users` (admin): the same checks as `provisiond user create` and `POST /users`.
pub(super) async fn user_create(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Admin)?;
    let typed = Typed {
        name: form.get("name").unwrap_or("").to_owned(),
        tenant: form.get("tenant").unwrap_or("").to_owned(),
        role: form.get("role").unwrap_or("").to_owned(),
        ..Typed::default()
    };
    let role = match typed.role.parse::<Role>() {
        Ok(role) => role,
        Err(message) => {
            let refused = ConsoleError::bad_request(format!("role: {message}"));
            return users_page(&state, &form.me, typed, Some(refused)).await;
        }
    };
    // Passwords are taken as typed (not trimmed): spaces may be part of them.
    let password = form
        .fields
        .iter()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let (name, tenant) = (typed.name.clone(), typed.tenant.clone());
    let created = blocking(move || {
        Ok(manage::users::create(
            &st.api.store,
            &scope,
            &name,
            &tenant,
            role,
            &password,
        )?)
    })
    .await;
    match created {
        Ok(_) => Ok(see_other("/console/users")),
        Err(e) if e.status.is_client_error() => users_page(&state, &form.me, typed, Some(e)).await,
        Err(e) => Err(e),
    }
}

/// `POST /console/users/{name}/delete` (admin), after a confirmation page.
pub(super) async fn user_delete(
    State(state): State<Arc<ConsoleState>>,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Admin)?;
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let user = name.clone();
    // A user outside the subtree is a 404 here already, before any page says anything of it.
    blocking(move || Ok(manage::users::get(&st.api.store, &scope, &user)?)).await?;
    if !form.confirmed() {
        let ask = Confirm {
            button: "Yes, delete them",
            ..Confirm::delete(
                format!("Delete user {name}?"),
                "They can no longer sign in; their open sessions end now.",
                format!("/console/users/{}/delete", super::devices::seg(&name)),
                "/console/users",
            )
        };
        return state.confirm(&form.me, ask);
    }
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let gone = blocking(move || Ok(manage::users::delete(&st.api.store, &scope, &name)?)).await?;
    // Their open sessions end now (including an open live-update stream), not at their next
    // request; deleted by the API or the CLI, the next request's check ends them.
    let ended = state.sessions.end_all(&Who::User(gone.name.clone()));
    tracing::info!(user = %gone.name, sessions = ended, "console sessions of a deleted user ended");
    Ok(see_other("/console/users"))
}

async fn tokens_page(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    typed: Typed,
    created: Option<Value>,
    refused: Option<ConsoleError>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(state);
    let scope = me.scope.clone();
    let tokens = blocking(move || Ok(manage::tokens::list(&st.api.store, &scope)?)).await?;
    let items: Vec<Value> = tokens
        .iter()
        .map(|t| {
            json!({ "id": manage::tokens::id(t), "tenant": t.tenant, "acl": t.acl.join(" "),
                "created": manage::rollouts::rfc3339(t.created),
                "expires": t.expires.map(manage::rollouts::rfc3339),
                "description": t.description })
        })
        .collect();
    let tenants = tenant_ids(state, me).await?;
    let tenant = if typed.tenant.is_empty() {
        me.scope.tenant().to_owned()
    } else {
        typed.tenant
    };
    state.render_refused(
        "tokens.html",
        me,
        json!({ "tokens": items, "tenants": tenants, "created": created,
            "typed": { "tenant": tenant,
                "acl": if typed.acl.is_empty() { "provd.#".to_owned() } else { typed.acl },
                "expires_in": typed.expires_in, "description": typed.description } }),
        refused,
    )
}

pub(super) async fn tokens(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    tokens_page(&state, &me, Typed::default(), None, None).await
}

/// `POST /console/tokens` (admin of the default tenant): the new token's secret is on the
/// answer only (200, not a redirect: it is never stored).
pub(super) async fn token_create(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.scope.require_master()?;
    form.me.require(Role::Admin)?;
    let typed = Typed {
        tenant: form.get("tenant").unwrap_or("").to_owned(),
        acl: form.get("acl").unwrap_or("").to_owned(),
        expires_in: form.get("expires_in").unwrap_or("").to_owned(),
        description: form.get("description").unwrap_or("").to_owned(),
        ..Typed::default()
    };
    let expires_in = match typed.expires_in.as_str() {
        "" => None,
        text => match text.parse::<u64>() {
            Ok(secs) if secs > 0 => Some(secs),
            _ => {
                let refused = ConsoleError::bad_request(
                    "token.expires_in: a number of seconds, or empty for a token that never expires",
                );
                return tokens_page(&state, &form.me, typed, None, Some(refused)).await;
            }
        },
    };
    // ACL entries are separated by lines or spaces (an entry has no white space).
    let acl: Vec<String> = typed.acl.split_whitespace().map(str::to_owned).collect();
    let new = NewToken {
        tenant: typed.tenant.clone(),
        acl: Some(acl).filter(|a| !a.is_empty()),
        expires_in,
        description: Some(typed.description.clone()).filter(|d| !d.is_empty()),
    };
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let created = blocking(move || Ok(manage::tokens::create(&st.api.store, &scope, new)?)).await;
    match created {
        Ok((token, secret)) => {
            let shown = json!({ "id": manage::tokens::id(&token), "tenant": token.tenant,
                "secret": secret });
            tokens_page(&state, &form.me, Typed::default(), Some(shown), None).await
        }
        Err(e) if e.status.is_client_error() => {
            tokens_page(&state, &form.me, typed, None, Some(e)).await
        }
        Err(e) => Err(e),
    }
}

/// `POST /console/tokens/{id}/delete` (admin of the default tenant), after a confirmation page.
pub(super) async fn token_delete(
    State(state): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.scope.require_master()?;
    form.me.require(Role::Admin)?;
    if !form.confirmed() {
        let ask = Confirm::delete(
            format!("Delete token {id}…?"),
            "Every program that uses it is refused from now on; sessions signed in with it end.",
            format!("/console/tokens/{}/delete", super::devices::seg(&id)),
            "/console/tokens",
        );
        return state.confirm(&form.me, ask);
    }
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let gone = blocking(move || Ok(manage::tokens::delete(&st.api.store, &scope, &id)?)).await?;
    state.sessions.end_all(&Who::Token(gone.hash));
    Ok(see_other("/console/tokens"))
}
