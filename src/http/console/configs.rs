//! Configs: the list with their parents, and one config's raw config edited as JSON.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::devices::seg;
use super::{blocking, see_other, ConsoleError, ConsoleState, Form, SignedIn};
use crate::http::api::fields;
use crate::manage;
use crate::model::{Config, RawConfig, Role};

pub(super) async fn list(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(&state);
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
    state.render("configs.html", Some(&me), json!({ "configs": items }))
}

fn config_page(
    state: &ConsoleState,
    me: &SignedIn,
    config: &Config,
    text: String,
    error: Option<String>,
) -> Result<Response, ConsoleError> {
    let mut page = state.render(
        "config.html",
        Some(me),
        json!({ "id": config.id, "parents": config.parent_ids, "tenant": config.tenant,
            "role": config.role, "raw_config": text, "error": error }),
    )?;
    if error.is_some() {
        *page.status_mut() = StatusCode::BAD_REQUEST;
    }
    Ok(page)
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
    config_page(&state, &me, &config, text, None)
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
        Err((stored, message)) => config_page(&state, &form.me, &stored, text, Some(message)),
    }
}
