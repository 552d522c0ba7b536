//! Jobs: the tenant's jobs, a firmware job (versions per model, or the category's policy) or a
//! config job made from a type and its parameters, and deletion
//! after a confirmation page (operators and admins).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{blocking, see_other, Confirm, ConsoleError, ConsoleState, Form, SignedIn};
use crate::http::api::fields;
use crate::manage::{self, jobs::NewJob};
use crate::model::{self, JobKind, RawConfig, Role};

/// The form's type of a firmware job; the others are config job types.
const FIRMWARE: &str = "firmware";

/// What the create form had, shown again when it is refused.
#[derive(Default)]
struct Typed {
    category: String,
    kind: String,
    params: String,
}

async fn jobs_page(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    typed: Typed,
    error: Option<String>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(state);
    let scope = me.scope.clone();
    let (jobs, categories) = blocking(move || {
        Ok((
            manage::jobs::list(&st.api.store, &scope, true)?,
            manage::categories::list(&st.api.store, &scope, true)?,
        ))
    })
    .await?;
    let names = super::prov::category_names(&categories);
    let items: Vec<Value> = jobs
        .iter()
        .map(|j| {
            let (kind, detail) = match &j.kind {
                JobKind::Firmware { versions } => (
                    "firmware".to_owned(),
                    serde_json::to_string(versions).unwrap_or_default(),
                ),
                JobKind::Config { kind, params } => (
                    format!("config: {kind}"),
                    serde_json::to_string(params).unwrap_or_default(),
                ),
            };
            json!({ "id": j.id, "tenant": j.tenant, "kind": kind, "detail": detail,
                "category": names.get(j.category.as_str()).copied().unwrap_or(&j.category),
                "created": manage::rollouts::rfc3339(j.created) })
        })
        .collect();
    let category_names: Vec<&str> = categories.iter().map(|c| c.name.as_str()).collect();
    let types: Vec<&str> = std::iter::once(FIRMWARE)
        .chain(manage::jobs::CONFIG_TYPES.iter().map(|(n, _)| *n))
        .collect();
    state.render_refused(
        "jobs.html",
        me,
        json!({ "jobs": items, "categories": category_names, "types": types,
            "typed": { "category": typed.category, "type": typed.kind,
                "params": if typed.params.is_empty() { "{}".to_owned() } else { typed.params } } }),
        error.map(ConsoleError::bad_request),
    )
}

pub(super) async fn list(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    jobs_page(&state, &me, Typed::default(), None).await
}

/// Reads the parameters as the API reads a config job's `params`.
fn parse_params(text: &str) -> Result<RawConfig, String> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let value: Value = serde_json::from_str(text).map_err(|e| format!("params: not JSON ({e})"))?;
    let Value::Object(map) = value else {
        return Err("params: must be a JSON object".into());
    };
    fields::check_raw_config(&map).map_err(|e| e.message().replacen("raw_config", "params", 1))?;
    Ok(map)
}

pub(super) async fn create(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Operator)?;
    let typed = Typed {
        category: form.get("category").unwrap_or("").to_owned(),
        kind: form.get("type").unwrap_or("").to_owned(),
        params: form.get("params").unwrap_or("").to_owned(),
    };
    let params = match parse_params(&typed.params) {
        Ok(p) => p,
        Err(message) => return jobs_page(&state, &form.me, typed, Some(message)).await,
    };
    let new = if typed.kind == FIRMWARE {
        // The versions per model, as `POST /prov_mgr/jobs` reads them; none (`{}`) takes the
        // category's firmware policy.
        let versions = if params.is_empty() {
            None
        } else {
            match serde_json::from_value(Value::Object(params)) {
                Ok(v) => Some(v),
                Err(e) => {
                    let message = format!("params: the versions per model ({e})");
                    return jobs_page(&state, &form.me, typed, Some(message)).await;
                }
            }
        };
        NewJob::Firmware(versions)
    } else {
        NewJob::Config {
            kind: typed.kind.clone(),
            params,
        }
    };
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let category = typed.category.clone();
    let created = blocking(move || {
        let job = manage::jobs::create(&st.api.store, &scope, &category, new, model::now())?;
        // The category's devices render differently now, as after the API's job creation.
        if let Some(category) = st
            .api
            .store
            .category(&job.category)
            .map_err(ConsoleError::internal)?
        {
            match manage::jobs::devices_of(&st.api.store, &category) {
                Ok(ids) => {
                    for id in ids {
                        st.api.sync.queue(&id, crate::sync::Reason::Job);
                    }
                }
                Err(e) => tracing::warn!(job = %job.id, "devices to resync not found: {e}"),
            }
        }
        Ok(job)
    })
    .await;
    match created {
        Ok(_) => Ok(see_other("/console/jobs")),
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            jobs_page(&state, &form.me, typed, Some(e.message)).await
        }
        Err(e) => Err(e),
    }
}

pub(super) async fn delete(
    State(state): State<Arc<ConsoleState>>,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Operator)?;
    // Deletion is confirmed on a page of its own (no JavaScript needed).
    if !form.confirmed() {
        let ask = Confirm::delete(
            format!("Delete job {id}?"),
            "The job no longer applies: its category's devices get what the remaining jobs and their configs say when they next fetch their files.",
            format!("/console/jobs/{}/delete", super::devices::seg(&id)),
            "/console/jobs",
        );
        return state.confirm(&form.me, ask);
    }
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    blocking(move || Ok(manage::jobs::delete(&st.api.store, &scope, &id)?)).await?;
    Ok(see_other("/console/jobs"))
}
