//! `/cfg_mgr`: provisioning configs, their merged raw form, autocreated configs.

use std::sync::Arc;

use axum::extract::{OriginalUri, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};

use super::auth::Caller;
use super::fields::{self, ReadOnly};
use super::query::ListQuery;
use super::{
    blocking, conflict_or, reply, retry_on_conflict, ApiError, ApiResult, ApiState, Body, PathParam,
};
use crate::model::{self, Config, RawConfig};
use crate::plugins::merged_raw_config;
use crate::store::{Store, BASE_CONFIG};
use crate::store::{AUTOCREATE_ROLE, AUTOPROV_CONFIG};

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

/// Configs a caller may read: its tenant's, and the default tenant's undeletable ones: the
/// built-in `base` and `autoprov`, and those written with `deletable: false` (as Wazo's
/// installer writes its root configs), which every tenant's configs and devices may use.
fn readable(config: &Config, caller: &Caller, default_tenant: &str, recurse: bool) -> bool {
    caller.sees(&config.tenant, recurse) || (config.tenant == default_tenant && !config.deletable)
}

fn visible_config(
    store: &Store,
    id: &str,
    caller: &Caller,
    default_tenant: &str,
) -> ApiResult<Config> {
    match store.config(id)? {
        Some(c) if readable(&c, caller, default_tenant, false) => Ok(c),
        _ => Err(ApiError::not_found(format!("no config {id:?}"))),
    }
}

fn writable(store: &Store, id: &str, caller: &Caller) -> ApiResult<Config> {
    match store.config(id)? {
        Some(c) if c.tenant == caller.tenant => Ok(c),
        Some(c) if c.tenant != caller.tenant && !c.deletable => Err(ApiError::forbidden(format!(
            "config {id:?} is shared by the default tenant, which alone changes it"
        ))),
        _ => Err(ApiError::not_found(format!("no config {id:?}"))),
    }
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
fn parse_config(body: &Map<String, Value>, id: String, tenant: String) -> ApiResult<Config> {
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

/// Parents must be readable by the caller (its own configs or the built-in ones).
fn check_parents(
    store: &Store,
    config: &Config,
    caller: &Caller,
    default_tenant: &str,
) -> ApiResult<()> {
    for parent in &config.parent_ids {
        visible_config(store, parent, caller, default_tenant)
            .map_err(|_| ApiError::field("parent_ids", format!("no config {parent:?}")))?;
    }
    Ok(())
}

pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult {
    caller.require("provd.cfg_mgr.configs.read")?;
    let query = ListQuery::parse(&pairs)?;
    let st = Arc::clone(&state);
    let configs = blocking(move || Ok(st.store.configs()?)).await?;
    let visible: Vec<Value> = configs
        .iter()
        .filter(|c| readable(c, &caller, &state.default_tenant, query.recurse))
        .map(config_json)
        .collect();
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
        blocking(move || visible_config(&state.store, &id, &caller, &state.default_tenant)).await?;
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
    let config = parse_config(&body.config, id, caller.tenant.clone())?;
    let id = blocking(move || {
        check_parents(&state.store, &config, &caller, &state.default_tenant)?;
        Ok(state.store.create_config(&config)?.id)
    })
    .await?;
    Ok(super::created(&format!("cfg_mgr/configs/{id}"), &id))
}

pub(super) async fn update(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
    Body(body): Body<ConfigEnvelope>,
) -> ApiResult {
    caller.require(&format!("provd.cfg_mgr.configs.{id}.update"))?;
    blocking(move || {
        retry_on_conflict("config", || {
            let stored = writable(&state.store, &id, &caller)?;
            let mut config = parse_config(&body.config, id.clone(), stored.tenant.clone())?;
            config.revision = stored.revision;
            check_parents(&state.store, &config, &caller, &state.default_tenant)?;
            conflict_or(state.store.update_config(&config).map(|_| ()))
        })
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
    blocking(move || {
        writable(&state.store, &id, &caller)?;
        state.store.delete_config(&id)?;
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn raw(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.cfg_mgr.configs.{id}.raw.read"))?;
    let merged = blocking(move || {
        visible_config(&state.store, &id, &caller, &state.default_tenant)?;
        // The same order as rendering: base, the tenant's default config, then the config.
        let mut chain = Vec::new();
        ancestry(&state.store, BASE_CONFIG, &mut chain, 0)?;
        if let Some(default) = state
            .store
            .tenant(&caller.tenant)?
            .and_then(|t| t.default_config)
        {
            ancestry(&state.store, &default, &mut chain, 0)?;
        }
        ancestry(&state.store, &id, &mut chain, 0)?;
        Ok(merged_raw_config(chain.iter().map(|c| &c.raw_config)))
    })
    .await?;
    Ok(reply(StatusCode::OK, json!({ "raw_config": merged })))
}

/// Appends `id`'s ancestors, then `id`, each once (most general first).
fn ancestry(store: &Store, id: &str, chain: &mut Vec<Config>, depth: usize) -> ApiResult<()> {
    if depth > 64 || chain.iter().any(|c| c.id == id) {
        return Ok(());
    }
    let Some(config) = store.config(id)? else {
        return Ok(());
    };
    for parent in &config.parent_ids {
        ancestry(store, parent, chain, depth + 1)?;
    }
    if !chain.iter().any(|c| c.id == id) {
        chain.push(config);
    }
    Ok(())
}

pub(super) async fn autocreate(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(_body): Body<Value>,
) -> ApiResult {
    caller.require("provd.cfg_mgr.autocreate.create")?;
    let id = blocking(move || {
        // An administrator's own template wins over the built-in `autoprov`.
        let template = state
            .store
            .configs()?
            .into_iter()
            .filter(|c| {
                c.role.as_deref() == Some(AUTOCREATE_ROLE)
                    && readable(c, &caller, &state.default_tenant, false)
            })
            .min_by_key(|c| (c.id == AUTOPROV_CONFIG, c.id.clone()))
            .ok_or_else(|| ApiError::not_found("no config has the role autocreate"))?;
        let suffix = crate::ident::random_password(10)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let username = format!(
            "ap{}",
            crate::ident::random_password(8)
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
                .to_ascii_lowercase()
        );
        let config = Config {
            id: format!("{}-{}", template.id, suffix.to_ascii_lowercase())
                .chars()
                .take(64)
                .collect(),
            parent_ids: vec![template.id.clone()],
            raw_config: json!({ "sip_lines": { "1": { "username": username } } })
                .as_object()
                .cloned()
                .unwrap_or_default(),
            tenant: caller.tenant.clone(),
            deletable: true,
            transient: true,
            role: None,
            extra: Default::default(),
            generation: 0,
            revision: 0,
        };
        Ok(state.store.create_config(&config)?.id)
    })
    .await?;
    // wazo-provd answers `/0.2/cfg_mgr/autocreate/<id>`, a path that names nothing; the
    // config's own path is given instead (its clients only read the body's `id`).
    Ok(super::created(&format!("cfg_mgr/configs/{id}"), &id))
}
