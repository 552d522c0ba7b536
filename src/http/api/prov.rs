//! `/prov_mgr`: categories, provisioning codes and their redemption by a PBX, rollouts,
//! jobs and automatic provisioning; and the device actions that go with them (`reset`,
//! `secrets`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{OriginalUri, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::{blocking, reply, ApiError, ApiResult, ApiState, Body, PathParam};
use crate::manage::{self, codes, rollouts};
use crate::model::{self, Category, Code, FirmwareTarget, Job, RawConfig, Rollout};

/// `?recurse=` of the listings, read as the device and config lists read it (the same values,
/// a repeat refused naming it); their other parameters mean nothing here and are ignored.
fn wants_recurse(pairs: &[(String, String)]) -> ApiResult<bool> {
    let only: Vec<(String, String)> = pairs
        .iter()
        .filter(|(key, _)| key == "recurse")
        .cloned()
        .collect();
    Ok(super::query::ListQuery::parse(&only)?.recurse)
}

pub(super) async fn links(OriginalUri(uri): OriginalUri, caller: Caller) -> ApiResult {
    caller.require("provd.prov_mgr.read")?;
    Ok(super::links(
        uri.path(),
        &[
            ("prov.categories", "categories"),
            ("prov.codes", "codes"),
            ("prov.redeem", "redeem"),
            ("prov.rollouts", "rollouts"),
            ("prov.jobs", "jobs"),
            ("prov.auto", "auto"),
        ],
    ))
}

// ---- categories ----------------------------------------------------------------------------

fn category_json(c: &Category) -> Value {
    json!({
        "id": c.id,
        "tenant_uuid": c.tenant,
        "name": c.name,
        "description": c.description,
        "config": c.config,
        "firmware": c.firmware,
        "provisioning": c.provisioning,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CategoryBody {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    tenant_uuid: Option<String>,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    config: Option<String>,
    #[serde(default)]
    firmware: BTreeMap<String, FirmwareTarget>,
    #[serde(default)]
    provisioning: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CategoryEnvelope {
    category: CategoryBody,
}

impl CategoryBody {
    fn spec(self) -> manage::categories::CategorySpec {
        // `id` and `tenant_uuid` are shown and may be sent back; the path and the scope decide.
        let _ = (self.id, self.tenant_uuid);
        manage::categories::CategorySpec {
            name: self.name,
            description: self.description,
            config: self.config,
            firmware: self.firmware,
            provisioning: self.provisioning,
        }
    }
}

pub(super) async fn categories(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult {
    caller.require("provd.prov_mgr.categories.read")?;
    let recurse = wants_recurse(&pairs)?;
    let found = blocking(move || {
        Ok(manage::categories::list(
            &state.store,
            &caller.scope,
            recurse,
        )?)
    })
    .await?;
    let items: Vec<Value> = found.iter().map(category_json).collect();
    Ok(reply(StatusCode::OK, json!({ "categories": items })))
}

pub(super) async fn category_create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<CategoryEnvelope>,
) -> ApiResult {
    caller.require("provd.prov_mgr.categories.create")?;
    let spec = body.category.spec();
    let created = blocking(move || {
        Ok(manage::categories::create(
            &state.store,
            &caller.scope,
            spec,
        )?)
    })
    .await?;
    Ok(created_with(
        &format!("prov_mgr/categories/{}", created.id),
        json!({ "id": created.id, "category": category_json(&created) }),
    ))
}

pub(super) async fn category_show(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require("provd.prov_mgr.categories.read")?;
    let found =
        blocking(move || Ok(manage::categories::get(&state.store, &caller.scope, &id)?)).await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "category": category_json(&found) }),
    ))
}

pub(super) async fn category_update(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
    Body(body): Body<CategoryEnvelope>,
) -> ApiResult {
    caller.require("provd.prov_mgr.categories.update")?;
    let spec = body.category.spec();
    let st = Arc::clone(&state);
    let saved = blocking(move || {
        Ok(manage::categories::update(
            &st.store,
            &caller.scope,
            &id,
            spec,
        )?)
    })
    .await?;
    // A new config or name changes what the category's phones render.
    resync_category(&state, saved.clone()).await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn category_delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require("provd.prov_mgr.categories.delete")?;
    blocking(move || {
        Ok(manage::categories::delete(
            &state.store,
            &caller.scope,
            &id,
        )?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- codes ---------------------------------------------------------------------------------

fn code_json(c: &Code, show: bool) -> Value {
    json!({
        "code": if show { c.code.clone() } else { c.tail() },
        "tenant_uuid": c.tenant,
        "category": c.category,
        "config": c.config,
        "label": c.label,
        "rollout": c.rollout,
        "created": c.created,
        "expires": c.expires,
        "expires_at": rollouts::rfc3339(c.expires),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CodeBody {
    category: String,
    #[serde(default)]
    config: Option<String>,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CodeEnvelope {
    code: CodeBody,
}

pub(super) async fn codes(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult {
    caller.require("provd.prov_mgr.codes.read")?;
    let recurse = wants_recurse(&pairs)?;
    let found = blocking(move || {
        Ok(codes::list(
            &state.store,
            &caller.scope,
            recurse,
            model::now(),
        )?)
    })
    .await?;
    let items: Vec<Value> = found.iter().map(|c| code_json(c, true)).collect();
    Ok(reply(StatusCode::OK, json!({ "codes": items })))
}

pub(super) async fn code_create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<CodeEnvelope>,
) -> ApiResult {
    caller.require("provd.prov_mgr.codes.create")?;
    let new = codes::NewCode {
        category: body.code.category,
        config: body.code.config,
        label: body.code.label,
    };
    let created = blocking(move || {
        Ok(codes::create(
            &state.store,
            &caller.scope,
            new,
            model::now(),
        )?)
    })
    .await?;
    // The creator sees the code once, here; listing it again needs codes.read.
    Ok(created_with(
        &format!("prov_mgr/codes/{}", created.code),
        json!({ "code": code_json(&created, true) }),
    ))
}

pub(super) async fn code_show(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(code): PathParam,
) -> ApiResult {
    caller.require("provd.prov_mgr.codes.read")?;
    let found = blocking(move || {
        Ok(codes::get(
            &state.store,
            &caller.scope,
            &code,
            model::now(),
        )?)
    })
    .await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "code": code_json(&found, true) }),
    ))
}

pub(super) async fn code_revoke(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(code): PathParam,
) -> ApiResult {
    caller.require("provd.prov_mgr.codes.delete")?;
    blocking(move || {
        Ok(codes::revoke(
            &state.store,
            &state.files.events,
            &caller.scope,
            &code,
            model::now(),
        )?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedeemBody {
    code: String,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    device_id: Option<String>,
    #[serde(default)]
    mac: Option<String>,
}

/// `POST /prov_mgr/redeem {"code", "ip" | "device_id" | "mac"}`: a PBX's dialplan (seed 002)
/// or an installer's CLI.
pub(super) async fn redeem(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<RedeemBody>,
) -> ApiResult {
    caller.require("provd.prov_mgr.redeem")?;
    let target = match (body.ip, body.device_id, body.mac) {
        (Some(ip), None, None) => codes::RedeemTarget::Ip(
            ip.parse()
                .map_err(|_| ApiError::field("ip", format!("{ip:?} is not an IP address")))?,
        ),
        (None, Some(id), None) => codes::RedeemTarget::Device(id),
        (None, None, Some(mac)) => codes::RedeemTarget::Mac(
            mac.parse()
                .map_err(|e: model::MacParseError| ApiError::field("mac", e.to_string()))?,
        ),
        _ => {
            return Err(ApiError::field(
                "body",
                "name the phone by exactly one of ip, device_id, mac",
            ))
        }
    };
    // A PBX redeems for its users: failures count against the phone that dialled (its
    // address), not against the PBX, whose every user would share one budget.
    let source = match &target {
        codes::RedeemTarget::Ip(ip) => ip.to_canonical(),
        _ => caller.peer,
    };
    let req = codes::RedeemRequest {
        code: body.code,
        target,
        source,
    };
    let st = Arc::clone(&state);
    let done = blocking(move || {
        Ok(codes::redeem(
            &st.store,
            &st.files.guard,
            &st.files.events,
            Some(&caller.scope),
            &req,
            model::now(),
        )?)
    })
    .await?;
    super::resync(&state, &done.device.id, crate::sync::Reason::Redeemed);
    Ok(reply(
        StatusCode::OK,
        json!({
            "device": super::devices::device_json(&done.device, &state),
            "tenant_uuid": done.tenant,
            "category": done.category,
        }),
    ))
}

// ---- rollouts ------------------------------------------------------------------------------

fn rollout_json(r: &Rollout, show_codes: bool, now: model::UnixTime) -> Value {
    let entries: Vec<Value> = r
        .entries
        .iter()
        .map(|e| {
            json!({
                "code": if show_codes { e.code.clone() } else { model::code_tail(&e.code) },
                "label": e.label,
                "config": e.config,
                "state": r.state_at(e, now),
                "device": e.device,
                "device_mac": e.device_mac.map(|m| m.to_string()),
                "registered_at": e.registered_at.map(rollouts::rfc3339),
            })
        })
        .collect();
    json!({
        "id": r.id,
        "tenant_uuid": r.tenant,
        "category": r.category,
        "created": r.created,
        "expires": r.expires,
        "expires_at": rollouts::rfc3339(r.expires),
        "entries": entries,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EntryBody {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    config: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RolloutBody {
    category: String,
    #[serde(default)]
    entries: Option<Vec<EntryBody>>,
    /// The entries as CSV (`label,config`), instead of `entries`.
    #[serde(default)]
    csv: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RolloutEnvelope {
    rollout: RolloutBody,
}

pub(super) async fn rollouts_list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult {
    caller.require("provd.prov_mgr.rollouts.read")?;
    let show = caller.require("provd.prov_mgr.codes.read").is_ok();
    let recurse = wants_recurse(&pairs)?;
    let found = blocking(move || Ok(rollouts::list(&state.store, &caller.scope, recurse)?)).await?;
    let now = model::now();
    let items: Vec<Value> = found.iter().map(|r| rollout_json(r, show, now)).collect();
    Ok(reply(StatusCode::OK, json!({ "rollouts": items })))
}

pub(super) async fn rollout_create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<RolloutEnvelope>,
) -> ApiResult {
    caller.require("provd.prov_mgr.rollouts.create")?;
    let body = body.rollout;
    let entries = match (body.entries, body.csv) {
        (Some(entries), None) => entries
            .into_iter()
            .map(|e| rollouts::NewEntry {
                label: e.label,
                config: e.config,
            })
            .collect(),
        (None, Some(csv)) => rollouts::parse_csv(&csv)?,
        _ => return Err(ApiError::field("rollout", "give either entries or csv")),
    };
    let category = body.category;
    let created = blocking(move || {
        Ok(rollouts::create(
            &state.store,
            &caller.scope,
            &category,
            entries,
            model::now(),
        )?)
    })
    .await?;
    Ok(created_with(
        &format!("prov_mgr/rollouts/{}", created.id),
        json!({ "id": created.id, "rollout": rollout_json(&created, true, created.created) }),
    ))
}

/// `GET /prov_mgr/rollouts/{id}`, and `{id}.csv` for the CSV export.
pub(super) async fn rollout_show(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require("provd.prov_mgr.rollouts.read")?;
    let show = caller.require("provd.prov_mgr.codes.read").is_ok();
    let now = model::now();
    if let Some(id) = id.strip_suffix(".csv") {
        // The sheet exists to hand codes out: no codes.read, no CSV.
        caller.require("provd.prov_mgr.codes.read")?;
        let id = id.to_owned();
        let csv = blocking(move || {
            let rollout = rollouts::get(&state.store, &caller.scope, &id)?;
            let name = state
                .store
                .category(&rollout.category)?
                .map_or_else(|| rollout.category.clone(), |c| c.name);
            Ok((rollouts::to_csv(&rollout, &name, now)?, rollout.id))
        })
        .await?;
        let (body, id) = csv;
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/csv; charset=utf-8; header=present"),
        );
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"rollout-{id}.csv\""))
        {
            headers.insert(header::CONTENT_DISPOSITION, v);
        }
        return Ok(response);
    }
    let found = blocking(move || Ok(rollouts::get(&state.store, &caller.scope, &id)?)).await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "rollout": rollout_json(&found, show, now) }),
    ))
}

pub(super) async fn rollout_delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require("provd.prov_mgr.rollouts.delete")?;
    blocking(move || Ok(rollouts::delete(&state.store, &caller.scope, &id)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- jobs ----------------------------------------------------------------------------------

fn job_json(j: &Job) -> Value {
    let mut out = json!({
        "id": j.id,
        "tenant_uuid": j.tenant,
        "category": j.category,
        "created": j.created,
    });
    if let (Value::Object(out), Ok(Value::Object(kind))) = (&mut out, serde_json::to_value(&j.kind))
    {
        out.extend(kind);
    }
    out
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobBody {
    category: String,
    kind: String,
    #[serde(default)]
    versions: Option<BTreeMap<String, FirmwareTarget>>,
    #[serde(default, rename = "type")]
    config_type: Option<String>,
    #[serde(default)]
    params: Option<RawConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JobEnvelope {
    job: JobBody,
}

pub(super) async fn jobs_list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult {
    caller.require("provd.prov_mgr.jobs.read")?;
    let recurse = wants_recurse(&pairs)?;
    let found =
        blocking(move || Ok(manage::jobs::list(&state.store, &caller.scope, recurse)?)).await?;
    let items: Vec<Value> = found.iter().map(job_json).collect();
    Ok(reply(StatusCode::OK, json!({ "jobs": items })))
}

pub(super) async fn job_create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<JobEnvelope>,
) -> ApiResult {
    caller.require("provd.prov_mgr.jobs.create")?;
    let body = body.job;
    let firmware_files: Vec<String> = body
        .versions
        .iter()
        .flatten()
        .map(|(_, target)| target.file.clone())
        .collect();
    let new = match body.kind.as_str() {
        "firmware" => {
            if body.config_type.is_some() || body.params.is_some() {
                return Err(ApiError::field(
                    "job",
                    "a firmware job has versions, not type or params",
                ));
            }
            manage::jobs::NewJob::Firmware(body.versions)
        }
        "config" => {
            if body.versions.is_some() {
                return Err(ApiError::field("versions", "only for firmware jobs"));
            }
            let params = body.params.unwrap_or_default();
            super::fields::check_raw_config(&params)?;
            manage::jobs::NewJob::Config {
                kind: body
                    .config_type
                    .ok_or_else(|| ApiError::field("type", "required for a config job"))?,
                params,
            }
        }
        _ => return Err(ApiError::field("kind", "firmware or config")),
    };
    let category = body.category;
    let st = Arc::clone(&state);
    let (created, category) = blocking(move || {
        let job = manage::jobs::create(&st.store, &caller.scope, &category, new, model::now())?;
        let category = st.store.category(&job.category)?;
        Ok((job, category))
    })
    .await?;
    if let Some(packages) = &state.packages {
        let plugins = state.files.plugins();
        let files = firmware_files.iter().map(String::as_str);
        for file in manage::packages::unserved_firmware(packages, &plugins, files) {
            tracing::warn!(job = %created.id, %file, "firmware job names a file that no plugin serves (install its package?)");
        }
    }
    if let Some(category) = category {
        resync_category(&state, category).await;
    }
    Ok(created_with(
        &format!("prov_mgr/jobs/{}", created.id),
        json!({ "id": created.id, "job": job_json(&created) }),
    ))
}

pub(super) async fn job_delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require("provd.prov_mgr.jobs.delete")?;
    blocking(move || Ok(manage::jobs::delete(&state.store, &caller.scope, &id)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Queues a resync of the configured devices of `category` (after a job or a change of the
/// category): they render differently now.
async fn resync_category(state: &Arc<ApiState>, category: Category) {
    let st = Arc::clone(state);
    let ids = blocking(move || Ok(manage::jobs::devices_of(&st.store, &category)?)).await;
    match ids {
        Ok(ids) => {
            for id in ids {
                super::resync(state, &id, crate::sync::Reason::Job);
            }
        }
        Err(e) => tracing::warn!("devices of a changed category not resynced: {e:?}"),
    }
}

// ---- automatic provisioning ----------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AutoBody {
    /// The token to set; `null` turns automatic provisioning off.
    #[serde(default)]
    token: Option<String>,
    /// Draw a random token instead.
    #[serde(default)]
    generate: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AutoEnvelope {
    auto: AutoBody,
}

fn auto_json(state: &ApiState, tenant: &model::Tenant, categories: &[Category]) -> Value {
    let urls = manage::auto::urls(state.base_url.as_ref(), tenant, categories);
    json!({
        "tenant_uuid": tenant.id,
        "enabled": tenant.auto_token.is_some(),
        "token": tenant.auto_token,
        "urls": urls,
    })
}

pub(super) async fn auto_show(State(state): State<Arc<ApiState>>, caller: Caller) -> ApiResult {
    caller.require("provd.prov_mgr.auto.read")?;
    let st = Arc::clone(&state);
    let (tenant, categories) = blocking(move || {
        let tenant = manage::tenants::get(&st.store, &caller.scope, caller.tenant())?;
        let categories = manage::categories::list(&st.store, &caller.scope, false)?;
        Ok((tenant, categories))
    })
    .await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "auto": auto_json(&state, &tenant, &categories) }),
    ))
}

pub(super) async fn auto_update(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<AutoEnvelope>,
) -> ApiResult {
    caller.require("provd.prov_mgr.auto.update")?;
    let st = Arc::clone(&state);
    let (tenant, categories) = blocking(move || {
        let token = if body.auto.generate {
            Some(manage::auto::random_token()?)
        } else {
            body.auto.token
        };
        let tenant = manage::auto::set_token(&st.store, &caller.scope, token)?;
        let categories = manage::categories::list(&st.store, &caller.scope, false)?;
        Ok((tenant, categories))
    })
    .await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "auto": auto_json(&state, &tenant, &categories) }),
    ))
}

// ---- device actions ------------------------------------------------------------------------

/// `POST /dev_mgr/devices/{id}/reset`: back to autoprov in its tenant (seed 002: it stays
/// there), so that the phone shows the code form again; then resynced.
pub(super) async fn device_reset(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.dev_mgr.devices.{id}.reset"))?;
    let st = Arc::clone(&state);
    let device =
        blocking(move || Ok(manage::devices::reset(&st.store, &caller.scope, &id)?)).await?;
    super::resync(&state, &device.id, crate::sync::Reason::Reset);
    Ok(reply(
        StatusCode::OK,
        json!({ "device": super::devices::device_json(&device, &state) }),
    ))
}

/// `GET /dev_mgr/devices/{id}/secrets`: the device's own admin password.
pub(super) async fn device_secrets(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require("provd.dev_mgr.secrets.read")?;
    let device =
        blocking(move || Ok(manage::devices::get(&state.store, &caller.scope, &id)?)).await?;
    Ok(reply(
        StatusCode::OK,
        json!({ "secrets": { "admin_password": device.admin_password } }),
    ))
}

/// 201 with `Location` and `body`.
fn created_with(path: &str, body: Value) -> Response {
    (
        StatusCode::CREATED,
        [(header::LOCATION, super::location(path))],
        reply(StatusCode::CREATED, body),
    )
        .into_response()
}
