//! Overview, the device list (search by MAC, IP or id, paged) and a device's page with its
//! actions (resynchronise, reset to code entry, delete).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::json;

use super::{blocking, see_other, ConsoleError, ConsoleState, Form, SignedIn};
use crate::manage::{self, devices::ListSpec};
use crate::model::{Device, Role};

/// Devices on one page of the list.
const PAGE: usize = 50;

fn state_of(d: &Device) -> &'static str {
    if d.is_new {
        "new"
    } else if d.configured {
        "configured"
    } else {
        "not configured"
    }
}

fn device_json(d: &Device) -> serde_json::Value {
    json!({
        "id": d.id,
        "mac": d.mac.map(|m| m.to_string()),
        "ip": d.ip.map(|i| i.to_string()),
        "vendor": d.vendor,
        "model": d.model,
        "version": d.version,
        "sn": d.sn,
        "plugin": d.plugin,
        "config": d.config,
        "tenant": d.tenant,
        "state": state_of(d),
        "description": d.description,
        "category": d.category,
        "last_seen": d.last_seen.map(manage::rollouts::rfc3339),
    })
}

pub(super) async fn overview(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(&state);
    let scope = me.scope.clone();
    let (by_state, by_vendor, total, codes) = blocking(move || {
        let spec = ListSpec {
            recurse: true,
            ..ListSpec::default()
        };
        let planned = manage::devices::plan(&st.api.store, &scope, &spec)?;
        let mut by_state: BTreeMap<&str, u64> = BTreeMap::new();
        let mut by_vendor: BTreeMap<String, u64> = BTreeMap::new();
        let mut total = 0u64;
        for d in planned.devices {
            let d = d?;
            total += 1;
            *by_state.entry(state_of(&d)).or_default() += 1;
            *by_vendor
                .entry(d.vendor.clone().unwrap_or_else(|| "unknown".into()))
                .or_default() += 1;
        }
        let codes = manage::codes::list(&st.api.store, &scope, true, crate::model::now())?.len();
        Ok((by_state, by_vendor, total, codes))
    })
    .await?;
    state.render(
        "overview.html",
        Some(&me),
        json!({ "by_state": by_state, "by_vendor": by_vendor, "total": total, "codes": codes,
                "boots": super::live::recent_boots(&state, &me),
                "boots_max": super::live::RECENT_SHOWN }),
    )
}

#[derive(serde::Deserialize)]
pub(super) struct ListParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: Option<usize>,
}

pub(super) async fn list(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
    Query(params): Query<ListParams>,
) -> Result<Response, ConsoleError> {
    let q = params.q.trim().to_owned();
    let page = params.page.unwrap_or(1).max(1);
    let st = Arc::clone(&state);
    let scope = me.scope.clone();
    let search = q.clone();
    let (devices, more) = blocking(move || {
        // A MAC or an address is looked up in its index; anything else is a device id.
        let equals = if search.is_empty() {
            vec![]
        } else if let Ok(mac) = search.parse::<crate::model::Mac>() {
            vec![("mac".to_owned(), vec![mac.to_string()])]
        } else if let Ok(ip) = search.parse::<std::net::IpAddr>() {
            vec![("ip".to_owned(), vec![ip.to_string()])]
        } else {
            vec![("id".to_owned(), vec![search.clone()])]
        };
        let spec = ListSpec {
            recurse: true,
            equals,
            sort: Some(("id".to_owned(), false)),
        };
        let planned = manage::devices::plan(&st.api.store, &scope, &spec)?;
        let mut found = Vec::new();
        let mut more = false;
        for d in planned.devices.skip((page - 1) * PAGE) {
            if found.len() == PAGE {
                more = true;
                break;
            }
            found.push(device_json(&d?));
        }
        Ok((found, more))
    })
    .await?;
    state.render(
        "devices.html",
        Some(&me),
        json!({
            "devices": devices, "q": q, "page": page,
            "prev": (page > 1).then(|| page - 1),
            "next": more.then_some(page + 1),
        }),
    )
}

pub(super) async fn show(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(&state);
    let scope = me.scope.clone();
    let device = blocking(move || Ok(manage::devices::get(&st.api.store, &scope, &id)?)).await?;
    state.render(
        "device.html",
        Some(&me),
        json!({ "device": device_json(&device) }),
    )
}

pub(super) async fn action(
    State(state): State<Arc<ConsoleState>>,
    Path((id, action)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    let needed = match action.as_str() {
        "resync" => Role::Operator,
        "reset" | "delete" => Role::Admin,
        _ => return Err(ConsoleError::not_found()),
    };
    form.me.require(needed)?;
    // Destructive actions are confirmed on a page of their own (no JavaScript needed).
    if needed == Role::Admin && form.get("confirm") != Some("yes") {
        return state.render(
            "confirm.html",
            Some(&form.me),
            json!({ "action": action, "id": id }),
        );
    }
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let target = id.clone();
    let what = action.clone();
    blocking(move || {
        let store = &st.api.store;
        match what.as_str() {
            "resync" => {
                let device = manage::devices::get(store, &scope, &target)?;
                st.api.sync.queue(&device.id, crate::sync::Reason::Manual);
            }
            "reset" => {
                manage::devices::reset(store, &scope, &target)?;
                st.api.sync.queue(&target, crate::sync::Reason::Reset);
            }
            _ => {
                manage::devices::delete(store, &scope, &target)?;
            }
        }
        Ok(())
    })
    .await?;
    let to = if action == "delete" {
        "/console/devices".to_owned()
    } else {
        format!("/console/devices/{}", seg(&id))
    };
    Ok(see_other(&to))
}

/// A path segment, percent-encoded.
pub(super) fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
