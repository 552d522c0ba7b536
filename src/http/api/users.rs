//! `/users`: console users of the caller's subtree (the web console's people; passwords are
//! only ever stored as argon2id hashes and never shown).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::auth::Caller;
use super::{blocking, reply, ApiResult, ApiState, Body, PathParam};
use crate::manage;
use crate::model::{ConsoleUser, Role};

fn user_json(u: &ConsoleUser) -> Value {
    json!({ "name": u.name, "tenant": u.tenant, "role": u.role.as_str(), "created": u.created })
}

pub(super) async fn list(State(state): State<Arc<ApiState>>, caller: Caller) -> ApiResult {
    caller.require("provd.users.read")?;
    let users = blocking(move || Ok(manage::users::list(&state.store, &caller.scope)?)).await?;
    let items: Vec<Value> = users.iter().map(user_json).collect();
    Ok(reply(StatusCode::OK, json!({ "users": items })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UserEnvelope {
    user: UserIn,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct UserIn {
    name: String,
    tenant: String,
    role: Role,
    password: String,
}

pub(super) async fn create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<UserEnvelope>,
) -> ApiResult<Response> {
    caller.require("provd.users.create")?;
    let u = body.user;
    let created = blocking(move || {
        Ok(manage::users::create(
            &state.store,
            &caller.scope,
            &u.name,
            &u.tenant,
            u.role,
            &u.password,
        )?)
    })
    .await?;
    // Names are letters, digits and `.`, `_`, `-`, `@` only (`check_name`): a path segment as is.
    let location = super::location(&format!("users/{}", created.name));
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        reply(StatusCode::CREATED, json!({ "user": user_json(&created) })),
    )
        .into_response())
}

pub(super) async fn delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(name): PathParam,
) -> ApiResult {
    caller.require("provd.users.delete")?;
    blocking(move || Ok(manage::users::delete(&state.store, &caller.scope, &name)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
