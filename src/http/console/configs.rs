//! Configs: the list with their parents and a create form, one config's raw config edited
//! as JSON, its parents changed, and its deletion after a confirmation page (refused while
//! another config inherits from it, or for a built-in config, as the API refuses it).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::devices::seg;
use super::{blocking, see_other, Confirm, ConsoleError, ConsoleState, Form, SignedIn};
use crate::http::api::fields;
use crate::manage;
use crate::model::{self, Config, RawConfig, Role};
use crate::store::StoreError;

pub(super) async fn list(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    list_page(&state, &me, Typed::default(), None).await
}

/// What the create form had, shown again when it is refused.
#[derive(Default)]
struct Typed {
    id: String,
    parents: String,
    raw_config: String,
}

/// The field an error message names first (`parent_ids: …`), for the form's markers.
fn field_of(message: &str) -> &str {
    message.split([':', '.']).next().unwrap_or_default()
}

async fn list_page(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    typed: Typed,
    error: Option<String>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(state);
    let scope = me.scope.clone();
    let configs = blocking(move || Ok(manage::configs::list(&st.api.store, &scope, true)?)).await?;
    let items: Vec<Value> = configs
        .iter()
        .map(|c| {
            json!({ "id": c.id, "parents": c.parent_ids, "tenant": c.tenant, "role": c.role,
                "label": c.extra.get("label").and_then(Value::as_str),
                "deletable": c.deletable })
        })
        .collect();
    let field = error
        .as_deref()
        .map(field_of)
        .unwrap_or_default()
        .to_owned();
    state.render_refused(
        "configs.html",
        me,
        json!({ "configs": items, "error_field": field,
            "typed": { "id": typed.id, "parents": typed.parents,
                "raw_config": if typed.raw_config.is_empty() { "{}".to_owned() } else { typed.raw_config } } }),
        error.map(ConsoleError::bad_request),
    )
}

/// Parent ids typed as a list separated by commas, spaces or new lines.
fn parse_parents(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(super) async fn create(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Admin)?;
    let typed = Typed {
        id: form.get("id").unwrap_or("").to_owned(),
        parents: form.get("parent_ids").unwrap_or("").to_owned(),
        raw_config: form.get("raw_config").unwrap_or("").to_owned(),
    };
    let raw = match parse_raw(if typed.raw_config.is_empty() {
        "{}"
    } else {
        &typed.raw_config
    }) {
        Ok(raw) => raw,
        Err(message) => return list_page(&state, &form.me, typed, Some(message)).await,
    };
    // The object the API's POST /cfg_mgr/configs would get, read by the API's own reader.
    let mut body = serde_json::Map::new();
    if !typed.id.is_empty() {
        body.insert("id".into(), Value::String(typed.id.clone()));
    }
    body.insert("parent_ids".into(), json!(parse_parents(&typed.parents)));
    body.insert("raw_config".into(), Value::Object(raw));
    let id = if typed.id.is_empty() {
        model::new_id()
    } else {
        typed.id.clone()
    };
    let config =
        match crate::http::api::configs::parse_config(&body, id, form.me.scope.tenant().to_owned())
        {
            Ok(config) => config,
            Err(e) => {
                let message = e.message().to_owned();
                return list_page(&state, &form.me, typed, Some(message)).await;
            }
        };
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let created =
        blocking(move || Ok(manage::configs::create(&st.api.store, &scope, config)?)).await;
    match created {
        Ok(c) => Ok(see_other(&format!("/console/configs/{}", seg(&c.id)))),
        Err(e) if e.status.is_client_error() && e.status != StatusCode::FORBIDDEN => {
            let message = match e.status {
                // "The store refused the change." says nothing of why: the id is taken.
                StatusCode::CONFLICT => format!("id: a config {:?} already exists", typed.id),
                _ => e.message,
            };
            list_page(&state, &form.me, typed, Some(message)).await
        }
        Err(e) => Err(e),
    }
}

pub(super) async fn delete(
    State(state): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Admin)?;
    // Deletion is confirmed on a page of its own (no JavaScript needed).
    if !form.confirmed() {
        let ask = Confirm::delete(
            format!("Delete config {id}?"),
            "The config is removed. It is refused while another config inherits from it; devices that use it get no files until they are given another config.",
            format!("/console/configs/{}/delete", seg(&id)),
            format!("/console/configs/{}", seg(&id)),
        );
        return state.confirm(&form.me, ask);
    }
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let target = id.clone();
    let deleted = blocking(move || {
        match manage::configs::delete(&st.api.store, &scope, &target) {
            Ok(_) => Ok(Ok(())),
            // Refusals the person can act on are shown on the config's page.
            Err(manage::ManageError::Store(
                e @ (StoreError::InUse { .. } | StoreError::NotDeletable { .. }),
            )) => Ok(Err(e.to_string())),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    match deleted {
        Ok(()) => Ok(see_other("/console/configs")),
        Err(message) => {
            let st = Arc::clone(&state);
            let scope = form.me.scope.clone();
            let config =
                blocking(move || Ok(manage::configs::get(&st.api.store, &scope, &id)?)).await?;
            let text =
                serde_json::to_string_pretty(&config.raw_config).map_err(ConsoleError::internal)?;
            let refused = ConsoleError::new(StatusCode::CONFLICT, message);
            config_page(
                &state,
                &form.me,
                &config,
                text,
                None,
                Some(("refusal", refused)),
            )
        }
    }
}

pub(super) async fn parents(
    State(state): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Admin)?;
    let typed = form.get("parent_ids").unwrap_or("").to_owned();
    let wanted = parse_parents(&typed);
    for parent in &wanted {
        if let Err(e) = model::validate_id(parent) {
            return parents_refused(&state, &form.me, &id, &typed, format!("parent_ids: {e}"))
                .await;
        }
    }
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let target = id.clone();
    let saved = blocking(move || {
        let build = |c: &Config| -> Result<Config, ConsoleError> {
            Ok(Config {
                parent_ids: wanted.clone(),
                ..c.clone()
            })
        };
        match manage::configs::update(&st.api.store, &scope, &target, &st.api.sync, build) {
            Ok(c) => Ok(Ok(c)),
            Err(e) if e.status == StatusCode::BAD_REQUEST => Ok(Err(e.message)),
            Err(e) => Err(e),
        }
    })
    .await?;
    match saved {
        Ok(c) => Ok(see_other(&format!("/console/configs/{}", seg(&c.id)))),
        Err(message) => parents_refused(&state, &form.me, &id, &typed, message).await,
    }
}

async fn parents_refused(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    id: &str,
    typed: &str,
    message: String,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(state);
    let scope = me.scope.clone();
    let target = id.to_owned();
    let config =
        blocking(move || Ok(manage::configs::get(&st.api.store, &scope, &target)?)).await?;
    let text = serde_json::to_string_pretty(&config.raw_config).map_err(ConsoleError::internal)?;
    let refused = ConsoleError::bad_request(message);
    config_page(
        state,
        me,
        &config,
        text,
        Some(typed),
        Some(("parents_error", refused)),
    )
}

/// A config's page: the textarea holds `text`, the parents field `parents_text` (the config's
/// parents without one), and a refusal goes under the template's key named with it.
fn config_page(
    state: &ConsoleState,
    me: &SignedIn,
    config: &Config,
    text: String,
    parents_text: Option<&str>,
    refused: Option<(&str, ConsoleError)>,
) -> Result<Response, ConsoleError> {
    let parents_text = parents_text.map_or_else(|| config.parent_ids.join(", "), str::to_owned);
    let (key, refused) = refused.map_or(("error", None), |(key, e)| (key, Some(e)));
    state.render_refused_as(
        "config.html",
        me,
        json!({ "id": config.id, "parents": config.parent_ids, "tenant": config.tenant,
            "role": config.role, "raw_config": text, "error": null,
            "parents_text": parents_text }),
        key,
        refused,
    )
}

pub(super) async fn show(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(&state);
    let scope = me.scope.clone();
    let config = blocking(move || Ok(manage::configs::get(&st.api.store, &scope, &id)?)).await?;
    let text = serde_json::to_string_pretty(&config.raw_config).map_err(ConsoleError::internal)?;
    config_page(&state, &me, &config, text, None, None)
}

/// Reads the textarea as the API reads a written `raw_config`: a JSON object within the
/// API's depth and size limits; the message names the offending key.
fn parse_raw(text: &str) -> Result<RawConfig, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("raw_config: not JSON ({e})"))?;
    let Value::Object(map) = value else {
        return Err("raw_config: must be a JSON object".into());
    };
    fields::check_raw_config(&map).map_err(|e| e.message().to_owned())?;
    Ok(map)
}

pub(super) async fn save(
    State(state): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Admin)?;
    let text = form
        .fields
        .iter()
        .find(|(k, _)| k == "raw_config")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let parsed = parse_raw(&text);
    let saved = blocking(move || {
        let stored = manage::configs::get(&st.api.store, &scope, &id)?;
        let raw = match parsed {
            Ok(raw) => raw,
            Err(message) => return Ok(Err((stored, message))),
        };
        let build = |c: &Config| -> Result<Config, ConsoleError> {
            Ok(Config {
                raw_config: raw.clone(),
                ..c.clone()
            })
        };
        match manage::configs::update(&st.api.store, &scope, &id, &st.api.sync, build) {
            Ok(c) => Ok(Ok(c)),
            Err(e) if e.status == StatusCode::BAD_REQUEST => Ok(Err((stored, e.message))),
            Err(e) => Err(e),
        }
    })
    .await?;
    match saved {
        Ok(c) => Ok(see_other(&format!("/console/configs/{}", seg(&c.id)))),
        Err((stored, message)) => {
            let refused = ConsoleError::bad_request(message);
            config_page(
                &state,
                &form.me,
                &stored,
                text,
                None,
                Some(("error", refused)),
            )
        }
    }
}
