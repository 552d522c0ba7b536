//! Overview (counts from the store's counts), the device list (search and filters planned on
//! the store's indexes, as `GET /dev_mgr/devices?q=…` is, in pages) and a device's page: its
//! identification history, config chain, previews of its files with secrets masked, and its
//! actions (resynchronise, reset to code entry, delete).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::{blocking, see_other, Confirm, ConsoleError, ConsoleState, Form, SignedIn};
use crate::http::api::devices::device_json as api_json;
use crate::http::api::query::ListQuery;
use crate::manage::{self, devices::ListSpec};
use crate::model::{Device, Role};
use crate::store::DeviceState;

/// Devices on one page of the list.
const PAGE: usize = 50;

fn device_json(d: &Device) -> Value {
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
        "state": DeviceState::of(d).name(),
        "new": d.is_new,
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
    let (counts, codes) = blocking(move || {
        let counts = manage::devices::counts(&st.api.store, &scope)?;
        let codes = manage::codes::list(&st.api.store, &scope, true, crate::model::now())?.len();
        Ok((counts, codes))
    })
    .await?;
    let by_plugin: Vec<Value> = counts
        .by_plugin
        .iter()
        .map(|(p, n)| json!({ "plugin": p, "n": n }))
        .collect();
    let by_tenant: Vec<Value> = counts
        .by_tenant
        .iter()
        .map(|(t, n)| json!({ "tenant": t, "n": n, "unassigned": *t == me.scope.root() }))
        .collect();
    state.render(
        "overview.html",
        Some(&me),
        json!({ "by_state": counts.by_state, "by_plugin": by_plugin, "by_tenant": by_tenant,
            "total": counts.total, "codes": codes,
            "boots": super::live::recent_boots(&state, &me),
            "boots_max": super::live::RECENT_SHOWN }),
    )
}

/// The list's filters: the form's field, the device key it tests (the API's name).
const FILTERS: [(&str, &str); 8] = [
    ("mac", "mac"),
    ("ip", "ip"),
    ("id", "id"),
    ("tenant", "tenant_uuid"),
    ("plugin", "plugin"),
    ("vendor", "vendor"),
    ("model", "model"),
    ("config", "config"),
];

/// The list's query parameters: a free search, the filters and the page.
#[derive(serde::Deserialize, Default)]
pub(super) struct ListParams {
    #[serde(default)]
    q: String,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    ip: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    plugin: String,
    #[serde(default)]
    vendor: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    config: String,
    #[serde(default)]
    page: Option<usize>,
}

impl ListParams {
    fn filter(&self, name: &str) -> &str {
        match name {
            "mac" => &self.mac,
            "ip" => &self.ip,
            "id" => &self.id,
            "tenant" => &self.tenant,
            "plugin" => &self.plugin,
            "vendor" => &self.vendor,
            "model" => &self.model,
            _ => &self.config,
        }
    }
}

/// The selector of a listing: each filter an equality test on its key (the store's indexes
/// answer them), the free search a MAC, an address or an id. A MAC or an address is written
/// as the API shows it; one that does not parse is an error for the form.
fn selector(params: &ListParams) -> Result<Map<String, Value>, String> {
    let mut selector = Map::new();
    let mut put = |key: &str, value: &str| -> Result<(), String> {
        let value = match key {
            "mac" => value
                .parse::<crate::model::Mac>()
                .map_err(|_| format!("{value:?} is not a MAC address"))?
                .to_string(),
            "ip" => value
                .parse::<std::net::IpAddr>()
                .map_err(|_| format!("{value:?} is not an IP address"))?
                .to_string(),
            _ => value.to_owned(),
        };
        if selector
            .insert(key.to_owned(), Value::String(value.clone()))
            .is_some_and(|old| old != Value::String(value))
        {
            return Err(format!("{key} is asked twice with different values"));
        }
        Ok(())
    };
    let q = params.q.trim();
    if !q.is_empty() {
        if q.parse::<crate::model::Mac>().is_ok() {
            put("mac", q)?;
        } else if q.parse::<std::net::IpAddr>().is_ok() {
            put("ip", q)?;
        } else {
            put("id", q)?;
        }
    }
    for (field, key) in FILTERS {
        let value = params.filter(field).trim();
        if !value.is_empty() {
            put(key, value)?;
        }
    }
    Ok(selector)
}

/// The query string of the list with these parameters on another page.
fn page_link(params: &ListParams, page: usize) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    if !params.q.trim().is_empty() {
        out.append_pair("q", params.q.trim());
    }
    for (field, _) in FILTERS {
        let value = params.filter(field).trim();
        if !value.is_empty() {
            out.append_pair(field, value);
        }
    }
    out.append_pair("page", &page.to_string());
    format!("/console/devices?{}", out.finish())
}

pub(super) async fn list(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
    Query(params): Query<ListParams>,
) -> Result<Response, ConsoleError> {
    let page = params.page.unwrap_or(1).clamp(1, 1_000_000);
    let filtered = !selector(&params).is_ok_and(|s| s.is_empty());
    let (devices, more, error) = match selector(&params) {
        Err(message) => (Vec::new(), false, Some(message)),
        Ok(selector) => {
            // The API's own listing: the same query, planned on the same indexes, read one
            // device at a time; one more than a page tells whether a next page exists.
            let query = ListQuery {
                selector: (!selector.is_empty()).then_some(selector),
                skip: (page - 1) * PAGE,
                limit: Some(PAGE + 1),
                recurse: true,
                ..ListQuery::default()
            };
            let st = Arc::clone(&state);
            let scope = me.scope.clone();
            let found = blocking(move || {
                let spec = ListSpec {
                    recurse: true,
                    equals: query.index_hints(),
                    sort: None,
                };
                let planned = manage::devices::plan(&st.api.store, &scope, &spec)?;
                // The selector applies to the API's JSON of each device, as the API's does.
                let docs = planned
                    .devices
                    .map(|d| d.map(|d| api_json(&d, &st.api)).map_err(ConsoleError::from));
                let mut found = Vec::new();
                query.run(docs, planned.sorted, |doc| {
                    found.push(doc);
                    true
                })?;
                Ok(found)
            })
            .await?;
            let more = found.len() > PAGE;
            let shown: Vec<Value> = found.into_iter().take(PAGE).map(shown_of).collect();
            (shown, more, None)
        }
    };
    let fields: Map<String, Value> = FILTERS
        .iter()
        .map(|(f, _)| ((*f).to_owned(), Value::from(params.filter(f).trim())))
        .collect();
    let st = Arc::clone(&state);
    let scope = me.scope.clone();
    let (tenants, plugins) = blocking(move || {
        let mut tenants: Vec<String> = scope.tree().subtree(scope.tenant()).into_iter().collect();
        tenants.sort();
        let mut plugins: Vec<String> = st
            .api
            .files
            .plugins()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        plugins.sort();
        Ok((tenants, plugins))
    })
    .await?;
    state.render_refused(
        "devices.html",
        &me,
        json!({
            "devices": devices, "q": params.q.trim(), "filters": fields, "page": page,
            "filtered": filtered, "tenants": tenants, "plugins": plugins,
            "prev": (page > 1).then(|| page_link(&params, page - 1)),
            "next": more.then(|| page_link(&params, page + 1)),
        }),
        error.map(ConsoleError::bad_request),
    )
}

/// A row of the list from the API's JSON of a device.
fn shown_of(doc: Value) -> Value {
    let text = |key: &str| doc.get(key).cloned().unwrap_or(Value::Null);
    json!({
        "id": text("id"), "mac": text("mac"), "ip": text("ip"), "vendor": text("vendor"),
        "model": text("model"), "plugin": text("plugin"), "config": text("config"),
        "tenant": text("tenant_uuid"),
    })
}

pub(super) async fn show(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(&state);
    let scope = me.scope.clone();
    let (device, history, chain, previews) = blocking(move || {
        let device = manage::devices::get(&st.api.store, &scope, &id)?;
        let history = manage::devices::history(&st.api.store, &scope, &device.id)?;
        let chain = manage::preview::config_chain(&st.api.files, &device);
        let previews = manage::preview::previews(&st.api.files, &device);
        Ok((device, history, chain, previews))
    })
    .await?;
    let history: Vec<Value> = history
        .iter()
        .rev()
        .map(|h| {
            json!({
                "at": manage::rollouts::rfc3339(h.at), "via": h.via.as_str(), "ip": h.ip,
                "created": h.created,
                "changes": h.changes.iter().map(|c| json!({
                    "field": c.field, "from": c.from, "to": c.to })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let (chain, chain_error) = match chain {
        Ok(configs) => (
            configs
                .iter()
                .map(|c| {
                    let job = c.id.strip_prefix("job:");
                    json!({ "id": c.id, "job": job, "tenant": c.tenant,
                        "readable": job.is_none() && (me.scope.reaches(&c.tenant) || me.scope.inherits(&c.tenant)) })
                })
                .collect::<Vec<_>>(),
            None,
        ),
        Err(e) => (Vec::new(), Some(e)),
    };
    let previews: Vec<Value> = previews
        .iter()
        .map(|p| {
            let (text, error) = match &p.text {
                Ok(t) => (Some(t.as_str()), None),
                Err(e) => (None, Some(e.as_str())),
            };
            json!({ "name": p.name, "template": p.template, "content_type": p.content_type,
                "text": text, "error": error, "truncated": p.truncated })
        })
        .collect();
    state.render(
        "device.html",
        Some(&me),
        json!({ "device": device_json(&device), "history": history, "chain": chain,
            "chain_error": chain_error, "previews": previews }),
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
    if needed == Role::Admin && !form.confirmed() {
        let (verb, text, button) = if action == "delete" {
            ("Delete", "The device and its history are removed; it is added again as new when it next asks for its files.", "Yes, delete it")
        } else {
            ("Reset", "The device goes back to code entry: it gets the autoprov configuration until a code is entered on it.", "Yes, reset it")
        };
        let ask = Confirm {
            button,
            ..Confirm::delete(
                format!("{verb} device {id}?"),
                text,
                format!("/console/devices/{}/{action}", seg(&id)),
                format!("/console/devices/{}", seg(&id)),
            )
        };
        return state.confirm(&form.me, ask);
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
