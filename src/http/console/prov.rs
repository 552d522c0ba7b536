//! Categories, provisioning codes and rollouts (seed 004's steps: category → entries → the
//! list of codes with a CSV download).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::devices::seg;
use super::{blocking, see_other, ConsoleError, ConsoleState, Form, SignedIn};
use crate::manage::{self, categories::CategorySpec, codes::NewCode};
use crate::model::{self, Category, EntryState, Role};

fn category_json(c: &Category) -> serde_json::Value {
    json!({ "id": c.id, "name": c.name, "tenant": c.tenant, "description": c.description,
            "config": c.config, "provisioning": c.provisioning })
}

/// Category names by id, for the pages that show a code's, rollout's or job's category.
pub(super) fn category_names(categories: &[Category]) -> HashMap<&str, &str> {
    categories
        .iter()
        .map(|c| (c.id.as_str(), c.name.as_str()))
        .collect()
}

/// The categories that codes and rollouts may name, for the pages' forms.
fn provisioning_json(categories: &[Category]) -> Vec<serde_json::Value> {
    categories
        .iter()
        .filter(|c| c.provisioning)
        .map(category_json)
        .collect()
}

/// A form refused by a rule: the page again, with the message (400).
fn refused(
    state: &ConsoleState,
    page: Result<Response, ConsoleError>,
    e: ConsoleError,
) -> Result<Response, ConsoleError> {
    if e.status != StatusCode::BAD_REQUEST {
        return Err(e);
    }
    let _ = state;
    let mut page = page?;
    *page.status_mut() = StatusCode::BAD_REQUEST;
    Ok(page)
}

async fn categories_page(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    error: Option<String>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(state);
    let scope = me.scope.clone();
    let list = blocking(move || Ok(manage::categories::list(&st.api.store, &scope, true)?)).await?;
    let items: Vec<_> = list.iter().map(category_json).collect();
    state.render(
        "categories.html",
        Some(me),
        json!({ "categories": items, "error": error }),
    )
}

pub(super) async fn categories(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    categories_page(&state, &me, None).await
}

pub(super) async fn category_create(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Admin)?;
    let spec = CategorySpec {
        name: form.get("name").unwrap_or("").to_owned(),
        description: form.get("description").map(str::to_owned),
        config: form.get("config").map(str::to_owned),
        firmware: Default::default(),
        provisioning: form.get("provisioning") == Some("on"),
    };
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    match blocking(move || Ok(manage::categories::create(&st.api.store, &scope, spec)?)).await {
        Ok(_) => Ok(see_other("/console/categories")),
        Err(e) => {
            let message = e.message.clone();
            refused(
                &state,
                categories_page(&state, &form.me, Some(message)).await,
                e,
            )
        }
    }
}

async fn codes_page(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    new_code: Option<String>,
    error: Option<String>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(state);
    let scope = me.scope.clone();
    let (codes, categories) = blocking(move || {
        let codes = manage::codes::list(&st.api.store, &scope, true, model::now())?;
        let categories = manage::categories::list(&st.api.store, &scope, true)?;
        Ok((codes, categories))
    })
    .await?;
    let names = category_names(&categories);
    let items: Vec<_> = codes
        .iter()
        .map(|c| {
            json!({ "code": c.code, "tail": c.tail(), "label": c.label,
            "category": names.get(c.category.as_str()).copied().unwrap_or(&c.category),
            "rollout": c.rollout, "expires": manage::rollouts::rfc3339(c.expires) })
        })
        .collect();
    let provisioning = provisioning_json(&categories);
    state.render(
        "codes.html",
        Some(me),
        json!({ "codes": items, "categories": provisioning, "new_code": new_code, "error": error }),
    )
}

pub(super) async fn codes(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    codes_page(&state, &me, None, None).await
}

pub(super) async fn code_create(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Operator)?;
    let new = NewCode {
        category: form.get("category").unwrap_or("").to_owned(),
        config: form.get("config").map(str::to_owned),
        label: form.get("label").map(str::to_owned),
    };
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let created = blocking(move || {
        Ok(manage::codes::create(
            &st.api.store,
            &scope,
            new,
            model::now(),
        )?)
    })
    .await;
    match created {
        // Shown on this answer only: a reload does not show it again.
        Ok(code) => codes_page(&state, &form.me, Some(code.code), None).await,
        Err(e) => {
            let message = e.message.clone();
            refused(
                &state,
                codes_page(&state, &form.me, None, Some(message)).await,
                e,
            )
        }
    }
}

pub(super) async fn code_revoke(
    State(state): State<Arc<ConsoleState>>,
    Path(code): Path<String>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Operator)?;
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    blocking(move || {
        Ok(manage::codes::revoke(
            &st.api.store,
            &st.api.files.events,
            &scope,
            &code,
            model::now(),
        )?)
    })
    .await?;
    Ok(see_other("/console/codes"))
}

async fn rollouts_page(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    error: Option<String>,
    entries: String,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(state);
    let scope = me.scope.clone();
    let (rollouts, categories) = blocking(move || {
        Ok((
            manage::rollouts::list(&st.api.store, &scope, true)?,
            manage::categories::list(&st.api.store, &scope, true)?,
        ))
    })
    .await?;
    let names = category_names(&categories);
    let now = model::now();
    let items: Vec<_> = rollouts
        .iter()
        .map(|r| {
            let registered = r
                .entries
                .iter()
                .filter(|e| r.state_at(e, now) == EntryState::Registered)
                .count();
            json!({ "id": r.id, "category": names.get(r.category.as_str()).copied().unwrap_or(&r.category),
                "created": manage::rollouts::rfc3339(r.created), "entries": r.entries.len(),
                "registered": registered })
        })
        .collect();
    let provisioning = provisioning_json(&categories);
    state.render(
        "rollouts.html",
        Some(me),
        json!({ "rollouts": items, "categories": provisioning, "error": error, "entries": entries }),
    )
}

pub(super) async fn rollouts(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    rollouts_page(&state, &me, None, String::new()).await
}

pub(super) async fn rollout_create(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Operator)?;
    let category = form.get("category").unwrap_or("").to_owned();
    let text = form.get("entries").unwrap_or("").to_owned();
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let entries = text.clone();
    let created = blocking(move || {
        let entries = manage::rollouts::parse_csv(&entries)?;
        Ok(manage::rollouts::create(
            &st.api.store,
            &scope,
            &category,
            entries,
            model::now(),
        )?)
    })
    .await;
    match created {
        Ok(r) => Ok(see_other(&format!("/console/rollouts/{}", seg(&r.id)))),
        Err(e) => {
            let message = e.message.clone();
            refused(
                &state,
                rollouts_page(&state, &form.me, Some(message), text).await,
                e,
            )
        }
    }
}

pub(super) async fn rollout(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(&state);
    let scope = me.scope.clone();
    let (rollout, category) = blocking(move || {
        let r = manage::rollouts::get(&st.api.store, &scope, &id)?;
        let c = manage::categories::get(&st.api.store, &scope, &r.category)?;
        Ok((r, c))
    })
    .await?;
    let now = model::now();
    let entries: Vec<_> = rollout
        .entries
        .iter()
        .map(|e| {
            let state = match rollout.state_at(e, now) {
                EntryState::Pending => "pending",
                EntryState::Registered => "registered",
                EntryState::Expired => "expired",
                EntryState::Revoked => "revoked",
            };
            json!({ "code": e.code, "label": e.label, "state": state,
                "device_mac": e.device_mac.map(|m| m.to_string()) })
        })
        .collect();
    state.render(
        "rollout.html",
        Some(&me),
        json!({ "id": rollout.id, "category": category.name, "entries": entries,
            "created": manage::rollouts::rfc3339(rollout.created),
            "expires": manage::rollouts::rfc3339(rollout.expires) }),
    )
}

pub(super) async fn rollout_csv(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(&state);
    let scope = me.scope.clone();
    let name = format!(
        "rollout-{}.csv",
        id.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    );
    let csv = blocking(move || {
        let r = manage::rollouts::get(&st.api.store, &scope, &id)?;
        let c = manage::categories::get(&st.api.store, &scope, &r.category)?;
        Ok(manage::rollouts::to_csv(&r, &c.name, model::now())?)
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        csv,
    )
        .into_response())
}
