//! `/cfg_mgr`: provisioning configs, their merged raw form, autocreated configs.

use std::sync::Arc;

use axum::extract::{OriginalUri, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};

use super::auth::Caller;
use super::fields::{self, ReadOnly};
use super::query::ListQuery;
use super::{blocking, reply, ApiError, ApiResult, ApiState, Body, PathParam};
use crate::manage;
use crate::model::{self, Config, RawConfig};

pub(super) async fn links(OriginalUri(uri): OriginalUri, caller: Caller) -> ApiResult {
    caller.require("provd.cfg_mgr.read")?;
    Ok(super::links(
        uri.path(),
        &[("cfg.configs", "configs"), ("cfg.autocreate", "autocreate")],
    ))
}

/// The API form of a config.
pub(super) fn config_json(config: &Config) -> Value {
    let mut out = Map::new();
    out.insert("id".into(), json!(config.id));
    out.insert("parent_ids".into(), json!(config.parent_ids));
    out.insert(
        "raw_config".into(),
        Value::Object(config.raw_config.clone()),
    );
    out.insert("deletable".into(), json!(config.deletable));
    out.insert("transient".into(), json!(config.transient));
    if let Some(role) = &config.role {
        out.insert("role".into(), json!(role));
    }
    out.insert("tenant_uuid".into(), json!(config.tenant));
    for (k, v) in &config.extra {
        out.insert(k.clone(), v.clone());
    }
    Value::Object(out)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigEnvelope {
    config: Map<String, Value>,
}

/// Keys the API shows but sets itself; ignored when written with the type it shows.
const READ_ONLY: &[(&str, ReadOnly)] = &[("tenant_uuid", ReadOnly::Text)];

/// Keys of a written config that provisiond interprets (typed, bounded); every other key but
/// the read-only one is kept as sent, as wazo-provd does (`X_type`, `displayname`,
/// `registrar_main`, `label`, …).
const INTERPRETED: &[&str] = &[
    "id",
    "parent_ids",
    "raw_config",
    "deletable",
    "transient",
    "role",
];

/// Reads a written config object.
pub(crate) fn parse_config(
    body: &Map<String, Value>,
    id: String,
    tenant: String,
) -> ApiResult<Config> {
    let extra = fields::extras(body, "config", INTERPRETED, READ_ONLY)?;
    fields::check_read_only(body, READ_ONLY)?;
    fields::body_id(body)?;
    let parent_ids: Vec<String> = match body.get("parent_ids") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ApiError::field("parent_ids", e.to_string()))?,
        None => return Err(ApiError::field("parent_ids", "required")),
    };
    for parent in &parent_ids {
        model::validate_id(parent).map_err(|e| ApiError::field("parent_ids", e.to_string()))?;
    }
    let raw_config: RawConfig = match body.get("raw_config") {
        Some(Value::Object(map)) => {
            fields::check_raw_config(map)?;
            map.clone()
        }
        Some(_) => return Err(ApiError::field("raw_config", "must be an object")),
        None => return Err(ApiError::field("raw_config", "required")),
    };
    // Absent means deletable, as in wazo-provd (`document.get('deletable', True)`); a PUT
    // replaces the whole config, so one without the key makes it deletable again.
    let deletable = match body.get("deletable") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("deletable", "must be a boolean")),
    };
    let transient = match body.get("transient") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("transient", "must be a boolean")),
    };
    let role = match body.get("role") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            fields::check_text("role", s, fields::MAX_ROLE_CHARS)?;
            Some(s.clone())
        }
        Some(_) => return Err(ApiError::field("role", "must be a string")),
    };
    Ok(Config {
        id,
        parent_ids,
        raw_config,
        tenant,
        deletable,
        transient,
        role,
        extra,
        revision: 0,
        generation: 0,
    })
}

pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult {
    caller.require("provd.cfg_mgr.configs.read")?;
    let query = ListQuery::parse(&pairs)?;
    let recurse = query.recurse;
    let configs =
        blocking(move || Ok(manage::configs::list(&state.store, &caller.scope, recurse)?)).await?;
    let visible: Vec<Value> = configs.iter().map(config_json).collect();
    Ok(reply(
        StatusCode::OK,
        json!({ "configs": query.apply(visible)? }),
    ))
}

pub(super) async fn show(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.cfg_mgr.configs.{id}.read"))?;
    let config =
        blocking(move || Ok(manage::configs::get(&state.store, &caller.scope, &id)?)).await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "config": config_json(&config) }),
    ))
}

pub(super) async fn create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<ConfigEnvelope>,
) -> ApiResult {
    caller.require("provd.cfg_mgr.configs.create")?;
    let id = fields::body_id(&body.config)?.unwrap_or_else(model::new_id);
    let config = parse_config(&body.config, id, caller.tenant().to_owned())?;
    let created = blocking(move || {
        Ok(manage::configs::create(
            &state.store,
            &caller.scope,
            config,
        )?)
    })
    .await?;
    Ok(super::created(
        &format!("cfg_mgr/configs/{}", created.id),
        &created.id,
    ))
}

pub(super) async fn update(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
    Body(body): Body<ConfigEnvelope>,
) -> ApiResult {
    caller.require(&format!("provd.cfg_mgr.configs.{id}.update"))?;
    // The body is read once the config is known (an unknown id is 404 whatever the body).
    blocking(move || {
        let build = |stored: &Config| parse_config(&body.config, id.clone(), stored.tenant.clone());
        manage::configs::update(&state.store, &caller.scope, &id, &state.sync, build)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn remove(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.cfg_mgr.configs.{id}.delete"))?;
    blocking(move || Ok(manage::configs::delete(&state.store, &caller.scope, &id)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn raw(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.cfg_mgr.configs.{id}.raw.read"))?;
    let merged =
        blocking(move || Ok(manage::configs::raw(&state.store, &caller.scope, &id)?)).await?;
    Ok(reply(StatusCode::OK, json!({ "raw_config": merged })))
}

pub(super) async fn autocreate(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(_body): Body<Value>,
) -> ApiResult {
    caller.require("provd.cfg_mgr.autocreate.create")?;
    let created =
        blocking(move || Ok(manage::configs::autocreate(&state.store, &caller.scope)?)).await?;
    // wazo-provd answers `/0.2/cfg_mgr/autocreate/<id>`, a path that names nothing; the
    // config's own path is given instead (its clients only read the body's `id`).
    Ok(super::created(
        &format!("cfg_mgr/configs/{}", created.id),
        &created.id,
    ))
}
