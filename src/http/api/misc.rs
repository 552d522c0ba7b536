//! The root, `/status`, `/configure`, `/pg_mgr`, `/tenants`, `/tokens`, `/metrics`, api.yml.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::auth::Caller;
use super::fields;
use super::{blocking, reply, ApiError, ApiResult, ApiState, Body, IdBody, PathParam};
use crate::files::PROVISIONING_KEY_RULE;
use crate::manage;
use crate::model::{self, Tenant, Token};
use crate::plugins::PluginSet;

/// Request counters by (route, method, status).
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

impl Metrics {
    /// Counts one answered request.
    pub fn count(&self, route: &str, method: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry((route.to_owned(), method.to_owned(), status))
            .or_default() += 1;
    }
}

pub(super) async fn root(OriginalUri(uri): OriginalUri, caller: Caller) -> ApiResult {
    caller.require("provd.read")?;
    Ok(super::links(
        uri.path(),
        &[
            ("dev", "dev_mgr"),
            ("cfg", "cfg_mgr"),
            ("pg", "pg_mgr"),
            ("status", "status"),
            ("srv.configure", "configure"),
        ],
    ))
}

pub(super) async fn status(State(state): State<Arc<ApiState>>, caller: Caller) -> ApiResult {
    caller.require("provd.status.read")?;
    let st = Arc::clone(&state);
    let store_ok = blocking(move || Ok(st.store.tenant(&st.default_tenant).is_ok())).await?;
    let plugins = state.files.plugins();
    Ok(reply(
        StatusCode::OK,
        json!({
            "rest_api": "ok",
            "store": {"status": if store_ok { "ok" } else { "fail" }},
            "plugins": {"status": if plugins.is_empty() { "fail" } else { "ok" }, "loaded": plugins.len(), "errors": plugins.errors.len()},
        }),
    ))
}

/// Known `/configure` parameters, in wazo-provd's order: (id, per tenant, description).
const PARAMS: &[(&str, bool, &str)] = &[
    (
        "plugin_server",
        false,
        "The plugins repository URL (http or https)",
    ),
    (
        "http_proxy",
        false,
        "The proxy for HTTP requests. Format is \"http://[user:password@]host:port\"",
    ),
    ("locale", false, "The locale of provisiond (e.g. fr_FR)"),
    ("NAT", false, "1 when phones are behind NAT, else 0"),
    (
        "provisioning_key",
        true,
        "The tenant's key in provisioning URLs (url_key strategy)",
    ),
];

async fn param_value(state: &Arc<ApiState>, caller: &Caller, name: &str) -> ApiResult<Value> {
    let st = Arc::clone(state);
    let (name, tenant) = (name.to_owned(), caller.tenant().to_owned());
    blocking(move || {
        Ok(match name.as_str() {
            "provisioning_key" => st
                .store
                .tenant(&tenant)?
                .and_then(|t| t.provisioning_key)
                .map(Value::from)
                .unwrap_or(Value::Null),
            "NAT" => json!(st.store.param("NAT")?.and_then(|v| v.as_i64()).unwrap_or(0)),
            other => st.store.param(other)?.unwrap_or(Value::Null),
        })
    })
    .await
}

pub(super) async fn configure_list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
) -> ApiResult {
    caller.require("provd.configure.read")?;
    let mut params = Vec::new();
    for (id, _, description) in PARAMS {
        let value = param_value(&state, &caller, id).await?;
        let href = format!("{}/{id}", uri.path().trim_end_matches('/'));
        params.push(json!({"id": id, "description": description, "value": value, "links": [{"rel": "srv.configure.param", "href": href}]}));
    }
    Ok(reply(StatusCode::OK, json!({ "params": params })))
}

fn known_param(name: &str) -> ApiResult<bool> {
    PARAMS
        .iter()
        .find(|(id, _, _)| *id == name)
        .map(|(_, per_tenant, _)| *per_tenant)
        .ok_or_else(|| ApiError::not_found(format!("no parameter {name:?}")))
}

pub(super) async fn param_get(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(name): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.configure.{}.{name}.read", caller.tenant()))?;
    known_param(&name)?;
    let value = param_value(&state, &caller, &name).await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "param": { "value": value } }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ParamEnvelope {
    param: ParamValue,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamValue {
    /// Required; `null` clears the parameter.
    value: Value,
}

pub(super) async fn param_put(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(name): PathParam,
    Body(body): Body<ParamEnvelope>,
) -> ApiResult {
    caller.require(&format!(
        "provd.configure.{}.{name}.update",
        caller.tenant()
    ))?;
    let per_tenant = known_param(&name)?;
    if !per_tenant {
        caller.require_master()?;
    }
    // wazo-provd treats every falsy value as "clear"; of those, null and "" make sense here.
    let value = Some(body.param.value).filter(|v| !v.is_null() && v.as_str() != Some(""));
    match name.as_str() {
        "provisioning_key" => {
            let key = match &value {
                None => None,
                // The key's own rule is checked by `set_provisioning_key`.
                Some(Value::String(k)) => Some(k.clone()),
                Some(_) => {
                    return Err(ApiError::field(
                        "param.value",
                        format!("a provisioning key has {PROVISIONING_KEY_RULE}"),
                    ))
                }
            };
            blocking(move || {
                Ok(manage::tenants::set_provisioning_key(
                    &state.store,
                    &caller.scope,
                    key,
                )?)
            })
            .await?;
        }
        "NAT" => {
            let flag = match &value {
                None => 0,
                Some(Value::String(s)) if s == "0" || s == "1" => s.parse::<i64>().unwrap_or(0),
                Some(Value::Number(n)) if n.as_i64() == Some(0) || n.as_i64() == Some(1) => {
                    n.as_i64().unwrap_or(0)
                }
                Some(_) => return Err(ApiError::field("param.value", "NAT is \"0\" or \"1\"")),
            };
            blocking(move || Ok(state.store.set_param("NAT", Some(&json!(flag)))?)).await?;
        }
        "plugin_server" | "http_proxy" => {
            let url = match &value {
                None => None,
                Some(Value::String(s)) => {
                    check_url(&name, s)?;
                    Some(json!(s))
                }
                Some(_) => return Err(ApiError::field("param.value", "a URL or null")),
            };
            blocking(move || Ok(state.store.set_param(&name, url.as_ref())?)).await?;
        }
        _ => {
            let locale = match &value {
                None => None,
                Some(Value::String(s)) if valid_locale(s) => Some(json!(s)),
                Some(_) => return Err(ApiError::field("param.value", "a locale looks like fr_FR")),
            };
            blocking(move || Ok(state.store.set_param("locale", locale.as_ref())?)).await?;
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Checks a URL parameter: `plugin_server` is an http or https URL with a host (the plugin
/// repository is fetched from it); `http_proxy` is `http://[user:password@]host[:port]`,
/// without a path, as wazo-provd requires.
fn check_url(name: &str, text: &str) -> ApiResult<()> {
    let refuse = |why: &str| Err(ApiError::field("param.value", format!("{name}: {why}")));
    if text.chars().count() > fields::MAX_URL_CHARS || text.chars().any(char::is_control) {
        return refuse(&format!(
            "at most {} characters, no control characters",
            fields::MAX_URL_CHARS
        ));
    }
    let Ok(url) = url::Url::parse(text) else {
        return refuse("not an absolute URL");
    };
    if !matches!(url.scheme(), "http" | "https") {
        return refuse("the scheme must be http or https");
    }
    if url.host_str().is_none_or(str::is_empty) {
        return refuse("the URL has no host");
    }
    if name == "http_proxy"
        && (url.path() != "/" || url.query().is_some() || url.fragment().is_some())
    {
        return refuse("a proxy URL has no path, query or fragment");
    }
    Ok(())
}

fn valid_locale(s: &str) -> bool {
    let (lang, region) = s.split_once('_').unwrap_or((s, "AA"));
    (2..=3).contains(&lang.len())
        && lang.bytes().all(|c| c.is_ascii_lowercase())
        && region.len() == 2
        && region.bytes().all(|c| c.is_ascii_uppercase())
}

pub(super) async fn pg_links(OriginalUri(uri): OriginalUri, caller: Caller) -> ApiResult {
    caller.require("provd.pg_mgr.read")?;
    Ok(super::links(
        uri.path(),
        &[
            ("pg.plugins", "plugins"),
            ("pg.reload", "reload"),
            ("srv.install", "install"),
        ],
    ))
}

pub(super) async fn plugins(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
) -> ApiResult {
    caller.require("provd.pg_mgr.plugins.read")?;
    let base = uri.path().trim_end_matches('/').to_owned();
    let set = state.files.plugins();
    let plugins: serde_json::Map<String, Value> = set
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                json!({"links": [{"rel": "pg.plugin", "href": format!("{base}/{}", p.name)}]}),
            )
        })
        .collect();
    Ok(reply(StatusCode::OK, json!({ "plugins": plugins })))
}

pub(super) async fn plugin_links(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.pg_mgr.plugins.{id}.read"))?;
    state
        .files
        .plugins()
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no plugin {id:?}")))?;
    Ok(super::links(
        uri.path(),
        &[("pg.info", "info"), ("srv.install", "install")],
    ))
}

pub(super) async fn plugin_info(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.pg_mgr.plugins.{id}.info.read"))?;
    let set = state.files.plugins();
    let p = set
        .get(&id)
        .ok_or_else(|| ApiError::not_found(format!("no plugin {id:?}")))?;
    let capabilities: serde_json::Map<String, Value> = p
        .models
        .iter()
        .map(|m| (format!("{}, {m}, *", p.vendor), json!({})))
        .collect();
    Ok(reply(
        StatusCode::OK,
        json!({"plugin_info": {
            "description": p.description,
            "version": p.version,
            "vendor": p.vendor,
            "models": p.models,
            "capabilities": capabilities,
            "origin": p.origin,
            "sync_event": p.sync_event,
            "identify": p.identify_sources(),
        }}),
    ))
}

pub(super) async fn reload(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<IdBody>,
) -> ApiResult {
    caller.require("provd.pg_mgr.reload.create")?;
    caller.require_master()?;
    let roots = state.plugin_roots.clone();
    let set = blocking(move || Ok(PluginSet::with_embedded(&roots))).await?;
    if let Some(e) = set
        .errors
        .iter()
        .find(|e| e.dir.file_name().is_some_and(|n| n == body.id.as_str()))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("plugin {} does not load: {e}", body.id),
        ));
    }
    if set.get(&body.id).is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("plugin {:?} is not installed", body.id),
        ));
    }
    tracing::info!(plugin = %body.id, "plugins reloaded through the API");
    state.files.set_plugins(Arc::new(set));
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A Prometheus label value: backslash, double quote and newline escaped (a plugin name is
/// whatever an API client wrote).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn tenant_json(t: &Tenant) -> Value {
    json!({"uuid": t.id, "id": t.id, "name": t.name, "parent": t.parent, "default_config": t.default_config, "has_provisioning_key": t.provisioning_key.is_some()})
}

pub(super) async fn tenants(State(state): State<Arc<ApiState>>, caller: Caller) -> ApiResult {
    caller.require("provd.tenants.read")?;
    let list = blocking(move || Ok(manage::tenants::list(&state.store, &caller.scope)?)).await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "tenants": list.iter().map(tenant_json).collect::<Vec<_>>() }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TenantEnvelope {
    tenant: TenantIn,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantIn {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    parent: Option<String>,
    #[serde(default)]
    default_config: Option<String>,
    /// Shown by GET; accepted back unchanged so that a client can PUT what it read.
    #[serde(default)]
    uuid: Option<String>,
    /// Shown by GET; ignored when written.
    #[serde(default, rename = "has_provisioning_key")]
    _has_provisioning_key: Option<bool>,
}

fn check_tenant_fields(t: &TenantIn) -> ApiResult<()> {
    if let Some(name) = &t.name {
        manage::tenants::check_name(name)?;
    }
    if let Some(parent) = &t.parent {
        model::validate_id(parent).map_err(|e| ApiError::field("tenant.parent", e.to_string()))?;
    }
    Ok(())
}

pub(super) async fn tenant_create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<TenantEnvelope>,
) -> ApiResult {
    caller.require("provd.tenants.create")?;
    let t = body.tenant;
    check_tenant_fields(&t)?;
    let id = t.id.or(t.uuid).unwrap_or_else(model::new_id);
    model::validate_id(&id).map_err(|e| ApiError::field("tenant.id", e.to_string()))?;
    let new = manage::tenants::NewTenant {
        id,
        name: t.name,
        parent: t.parent,
        default_config: t.default_config.filter(|c| !c.is_empty()),
    };
    let created =
        blocking(move || Ok(manage::tenants::create(&state.store, &caller.scope, new)?)).await?;
    Ok(super::created(
        &format!("tenants/{}", created.id),
        &created.id,
    ))
}

pub(super) async fn tenant_show(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require("provd.tenants.read")?;
    let t = blocking(move || Ok(manage::tenants::get(&state.store, &caller.scope, &id)?)).await?;
    Ok(reply(StatusCode::OK, json!({ "tenant": tenant_json(&t) })))
}

pub(super) async fn tenant_update(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
    Body(body): Body<TenantEnvelope>,
) -> ApiResult {
    caller.require("provd.tenants.update")?;
    let t = body.tenant;
    check_tenant_fields(&t)?;
    for (field, given) in [("tenant.id", &t.id), ("tenant.uuid", &t.uuid)] {
        if given.as_ref().is_some_and(|given| *given != id) {
            return Err(ApiError::field(field, "differs from the id in the path"));
        }
    }
    // Absent keeps the current value; "" clears it.
    let change = manage::tenants::TenantChange {
        name: t.name,
        default_config: t.default_config.map(|c| Some(c).filter(|c| !c.is_empty())),
        parent: t.parent,
    };
    blocking(move || {
        Ok(manage::tenants::update(
            &state.store,
            &caller.scope,
            &id,
            &change,
        )?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn tenant_delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require("provd.tenants.delete")?;
    blocking(move || Ok(manage::tenants::delete(&state.store, &caller.scope, &id)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn token_json(t: &Token) -> Value {
    // The id is a prefix of the hash: enough to delete, useless to authenticate.
    json!({"id": manage::tokens::id(t), "tenant": t.tenant, "acl": t.acl, "created": t.created, "expires": t.expires, "description": t.description})
}

pub(super) async fn tokens(State(state): State<Arc<ApiState>>, caller: Caller) -> ApiResult {
    caller.require("provd.tokens.read")?;
    let list = blocking(move || Ok(manage::tokens::list(&state.store, &caller.scope)?)).await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "tokens": list.iter().map(token_json).collect::<Vec<_>>() }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TokenEnvelope {
    token: TokenIn,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenIn {
    tenant: String,
    #[serde(default)]
    acl: Option<Vec<String>>,
    /// Lifetime in seconds.
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    description: Option<String>,
}

pub(super) async fn token_create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<TokenEnvelope>,
) -> ApiResult {
    caller.require("provd.tokens.create")?;
    let t = body.token;
    let new = manage::tokens::NewToken {
        tenant: t.tenant,
        acl: t.acl,
        expires_in: t.expires_in,
        description: t.description,
    };
    let (stored, secret) =
        blocking(move || Ok(manage::tokens::create(&state.store, &caller.scope, new)?)).await?;
    let mut body = token_json(&stored);
    body["token"] = json!(secret);
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            super::location(&format!("tokens/{}", manage::tokens::id(&stored))),
        )],
        reply(StatusCode::CREATED, body),
    )
        .into_response())
}

pub(super) async fn token_delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require("provd.tokens.delete")?;
    blocking(move || Ok(manage::tokens::delete(&state.store, &caller.scope, &id)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("api.yml");

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

pub(super) async fn metrics(State(state): State<Arc<ApiState>>, caller: Caller) -> ApiResult {
    caller.require("provd.metrics.read")?;
    let mut out = String::from("# HELP provisiond_api_requests_total API requests by route, method and status.\n# TYPE provisiond_api_requests_total counter\n");
    for ((route, method, status), n) in state
        .metrics
        .requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        out.push_str(&format!("provisiond_api_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {n}\n"));
    }
    let c = &state.files.counters;
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    out.push_str("# HELP provisiond_files_total Provisioning file requests by transport and outcome.\n# TYPE provisiond_files_total counter\n");
    for (transport, outcome, n) in [
        ("http", "ok", load(&c.http_ok)),
        ("http", "refused", load(&c.http_refused)),
        ("tftp", "ok", load(&c.tftp_ok)),
        ("tftp", "refused", load(&c.tftp_refused)),
    ] {
        out.push_str(&format!(
            "provisiond_files_total{{transport=\"{transport}\",outcome=\"{outcome}\"}} {n}\n"
        ));
    }
    let d = &state.files.dhcpinfo;
    out.push_str("# HELP provisiond_dhcpinfo_events_total Lease events from the dhcpinfo socket by outcome.\n# TYPE provisiond_dhcpinfo_events_total counter\n");
    for (outcome, n) in [
        ("received", load(&d.received)),
        ("accepted", load(&d.accepted)),
        ("oversize", load(&d.oversize)),
        ("malformed", load(&d.malformed)),
        ("queue_full", load(&d.queue_full)),
        ("failed", load(&d.failed)),
    ] {
        out.push_str(&format!(
            "provisiond_dhcpinfo_events_total{{outcome=\"{outcome}\"}} {n}\n"
        ));
    }
    if let Some(d) = state.files.dhcp.get() {
        out.push_str("# HELP provisiond_dhcp_packets_total DHCP server: datagrams by outcome.\n# TYPE provisiond_dhcp_packets_total counter\n");
        for (outcome, n) in [
            ("received", load(&d.received)),
            ("malformed", load(&d.malformed)),
            ("queue_full", load(&d.queue_full)),
            ("silent", load(&d.silent)),
            ("offer", load(&d.offers)),
            ("ack", load(&d.acks)),
            ("nak", load(&d.naks)),
            ("send_error", load(&d.send_errors)),
            ("store_error", load(&d.store_errors)),
        ] {
            out.push_str(&format!(
                "provisiond_dhcp_packets_total{{outcome=\"{outcome}\"}} {n}\n"
            ));
        }
        out.push_str("# HELP provisiond_dhcp_lease_events_total DHCP server: lease events applied to their device before the batch's replies, by outcome.\n# TYPE provisiond_dhcp_lease_events_total counter\n");
        for (outcome, n) in [
            ("identified", load(&d.ident_events)),
            ("failed", load(&d.ident_failed)),
        ] {
            out.push_str(&format!(
                "provisiond_dhcp_lease_events_total{{outcome=\"{outcome}\"}} {n}\n"
            ));
        }
    }
    let a = state.files.autocreate_counters();
    out.push_str("# HELP provisiond_autocreate_total Unknown phones met by identification, by outcome: created, or refused because the token bucket was empty (refused_rate) or the store full (refused_max_devices).\n# TYPE provisiond_autocreate_total counter\n");
    for (outcome, n) in [
        ("created", load(&a.created)),
        ("refused_rate", load(&a.refused_rate)),
        ("refused_max_devices", load(&a.refused_max_devices)),
    ] {
        out.push_str(&format!(
            "provisiond_autocreate_total{{outcome=\"{outcome}\"}} {n}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP provisiond_autocreate_tokens_spent_total Autocreation tokens taken from the bucket (one per new MAC; a MAC seen again within the window spends none).\n# TYPE provisiond_autocreate_tokens_spent_total counter\nprovisiond_autocreate_tokens_spent_total {}\n",
        load(&a.tokens_spent)
    ));
    out.push_str(&format!(
        "# HELP provisiond_autocreate_tokens Tokens left in the autocreation bucket.\n# TYPE provisiond_autocreate_tokens gauge\nprovisiond_autocreate_tokens {}\n",
        state.files.autocreate_tokens().floor()
    ));
    out.push_str(&format!(
        "# HELP provisiond_store_flushes_total Store flushes to disk (fsyncs).\n# TYPE provisiond_store_flushes_total counter\nprovisiond_store_flushes_total {}\n",
        state.store.flush_count()
    ));
    out.push_str(&format!(
        "# HELP provisiond_store_flush_requests_total Writers that waited for a flush; group commit makes concurrent ones share one.\n# TYPE provisiond_store_flush_requests_total counter\nprovisiond_store_flush_requests_total {}\n",
        state.store.flush_requests()
    ));
    let q = state.sync.counters();
    out.push_str("# HELP provisiond_sync_total Resync queue: requests queued, coalesced with a device already waiting, dropped (queue full); NOTIFYs accepted (sent_ok) or not (sent_failed); config changes that left the files unchanged; devices with nothing to send to (skipped).\n# TYPE provisiond_sync_total counter\n");
    for (outcome, n) in [
        ("queued", load(&q.queued)),
        ("coalesced", load(&q.coalesced)),
        ("dropped", load(&q.dropped)),
        ("sent_ok", load(&q.sent_ok)),
        ("sent_failed", load(&q.sent_failed)),
        ("unchanged", load(&q.unchanged)),
        ("skipped", load(&q.skipped)),
    ] {
        out.push_str(&format!(
            "provisiond_sync_total{{outcome=\"{outcome}\"}} {n}\n"
        ));
    }
    out.push_str(&format!(
        "# HELP provisiond_sync_waiting Devices waiting for a NOTIFY.\n# TYPE provisiond_sync_waiting gauge\nprovisiond_sync_waiting {}\n# HELP provisiond_sync_in_flight NOTIFYs waiting for their answer.\n# TYPE provisiond_sync_in_flight gauge\nprovisiond_sync_in_flight {}\n",
        state.sync.waiting(),
        state.sync.in_flight()
    ));
    state.files.rejected.write_metrics(&mut out);
    state.files.guard.write_metrics(&mut out);
    out.push_str(&format!(
        "# HELP provisiond_hijacks_refused_total Codes and automatic URLs refused because the phone belongs to another tenant.\n# TYPE provisiond_hijacks_refused_total counter\nprovisiond_hijacks_refused_total {}\n",
        crate::manage::codes::HIJACKS_REFUSED.load(std::sync::atomic::Ordering::Relaxed)
    ));
    let st = Arc::clone(&state);
    // Kept with the data (one count per tenant and plugin): no device is read.
    let by = blocking(move || Ok(st.store.plugin_counts()?)).await?;
    out.push_str("# HELP provisiond_devices Devices by tenant and plugin.\n# TYPE provisiond_devices gauge\n");
    for (tenant, plugin, n) in by {
        out.push_str(&format!(
            "provisiond_devices{{tenant=\"{}\",plugin=\"{}\"}} {n}\n",
            label(&tenant),
            label(&plugin)
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// The operation number of a path (1 and up).
fn oip_number(text: &str) -> ApiResult<u64> {
    text.parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::field("op", "an operation number"))
}

/// `GET /pg_mgr/operations/{op}`: `{"status": …}` in wazo-provd's grammar, and `error` once
/// it failed. Plugin operations are the server's, so only the master tenant follows them.
pub(super) async fn oip_get(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(op): PathParam,
) -> ApiResult {
    caller.require("provd.operation.read")?;
    caller.require_master()?;
    let oip = state
        .oips
        .get(oip_number(&op)?)
        .ok_or_else(|| ApiError::not_found("no such operation"))?;
    let mut body = json!({ "status": oip.status() });
    if let Some(error) = &oip.error {
        body["error"] = json!(error);
    }
    Ok(reply(StatusCode::OK, body))
}

/// `DELETE /pg_mgr/operations/{op}`: forgets it (the work itself goes on).
pub(super) async fn oip_delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(op): PathParam,
) -> ApiResult {
    caller.require("provd.operation.delete")?;
    caller.require_master()?;
    if !state.oips.delete(oip_number(&op)?) {
        return Err(ApiError::not_found("no such operation"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
