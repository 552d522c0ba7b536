//! `/dev_mgr`: devices, synchronisation operations, reconfigure, DHCP info.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{OriginalUri, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::{json, Map, Value};

use super::auth::Caller;
use super::fields::{self, ReadOnly};
use super::query::ListQuery;
use super::{blocking, reply, ApiError, ApiResult, ApiState, Body, IdBody, PathParam};
use crate::manage;
use crate::model::{self, Added, Device, Mac};
use crate::sync::{LastSync, Queued, Reason, SyncStatus};

/// Operations, numbered from 1, kept until a client deletes them.
#[derive(Debug, Default)]
pub struct Operations {
    next: u64,
    states: BTreeMap<u64, Operation>,
}

/// One synchronisation.
#[derive(Debug)]
struct Operation {
    /// Tenant of the device: only its callers see the operation.
    tenant: String,
    /// Device synchronised.
    device: String,
    /// `progress`, `success` or `fail`.
    status: &'static str,
}

/// Operations kept at most; the oldest finished ones are dropped first (clients must DELETE
/// theirs), never one in progress.
const MAX_OPERATIONS: usize = 1024;

impl Operations {
    fn add(&mut self, tenant: &str, device: &str, status: &'static str) -> u64 {
        self.next += 1;
        self.states.insert(
            self.next,
            Operation {
                tenant: tenant.to_owned(),
                device: device.to_owned(),
                status,
            },
        );
        while self.states.len() > MAX_OPERATIONS {
            let oldest_done = self
                .states
                .iter()
                .find(|(_, op)| op.status != "progress")
                .map(|(n, _)| *n);
            match oldest_done {
                Some(n) => self.states.remove(&n),
                None => break,
            };
        }
        self.next
    }

    /// The operation in progress for this device, if any (a second request joins it).
    fn in_progress(&self, device: &str) -> Option<u64> {
        self.states
            .iter()
            .find(|(_, op)| op.device == device && op.status == "progress")
            .map(|(n, _)| *n)
    }

    fn in_progress_count(&self) -> usize {
        self.states
            .values()
            .filter(|op| op.status == "progress")
            .count()
    }
}

/// NOTIFYs in flight at most (one UDP socket each); more requests fail at once.
const MAX_NOTIFYING: usize = 256;

pub(super) async fn links(OriginalUri(uri): OriginalUri, caller: Caller) -> ApiResult {
    caller.require("provd.dev_mgr.read")?;
    Ok(super::links(
        uri.path(),
        &[
            ("dev.synchronize", "synchronize"),
            ("dev.reconfigure", "reconfigure"),
            ("dev.dhcpinfo", "dhcpinfo"),
            ("dev.devices", "devices"),
        ],
    ))
}

/// The API form of a device (wazo-provd's keys, the extra keys at the top level).
pub(crate) fn device_json(device: &Device, state: &ApiState) -> Value {
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            out.insert(key.to_owned(), v);
        }
    };
    put("id", Some(json!(device.id)));
    put("mac", device.mac.map(|m| json!(m.to_string())));
    put("ip", device.ip.map(|ip| json!(ip.to_string())));
    put("vendor", device.vendor.clone().map(Value::from));
    put("model", device.model.clone().map(Value::from));
    put("version", device.version.clone().map(Value::from));
    put("sn", device.sn.clone().map(Value::from));
    put("plugin", device.plugin.clone().map(Value::from));
    put("config", device.config.clone().map(Value::from));
    put("description", device.description.clone().map(Value::from));
    put(
        "remote_state_sip_username",
        device.remote_state_sip_username.clone().map(Value::from),
    );
    put(
        "added",
        (device.added == Added::Auto).then(|| json!("auto")),
    );
    let configured = device.config.is_some()
        && device
            .plugin
            .as_deref()
            .is_some_and(|p| state.files.plugins().get(p).is_some());
    put("configured", Some(json!(configured)));
    put("tenant_uuid", Some(json!(device.tenant)));
    put("category", device.category.clone().map(Value::from));
    if let Some(p) = &device.provisioned {
        let by = match p.by {
            model::ProvisionedBy::Code => "code",
            model::ProvisionedBy::Auto => "auto",
        };
        put("provisioned_by", Some(json!(by)));
        put(
            "provisioned_at",
            Some(json!(crate::manage::rollouts::rfc3339(p.at))),
        );
    }
    put("is_new", Some(json!(device.tenant == state.default_tenant)));
    for (key, value) in &device.extra {
        out.insert(key.clone(), value.clone());
    }
    Value::Object(out)
}

/// `last_sync` of a single-device GET: how its last resync ended.
fn last_sync_json(last: &LastSync) -> Value {
    json!({
        "state": last.state.as_str(),
        "at": last.at,
        "detail": last.detail,
        "reason": last.reason.as_str(),
    })
}

/// Keys the API shows but computes itself; ignored when written with the type it shows.
const READ_ONLY: &[(&str, ReadOnly)] = &[
    ("last_sync", ReadOnly::Object),
    ("configured", ReadOnly::Bool),
    ("is_new", ReadOnly::Bool),
    ("added", ReadOnly::Text),
    ("tenant_uuid", ReadOnly::Text),
    ("category", ReadOnly::Text),
    ("provisioned_by", ReadOnly::Text),
    ("provisioned_at", ReadOnly::Text),
];

fn opt_string(obj: &Map<String, Value>, key: &str) -> ApiResult<Option<String>> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            fields::check_text(key, s, fields::MAX_DEVICE_TEXT_CHARS)?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(ApiError::field(key, "must be a string")),
    }
}

/// Keys of a written device that provisiond interprets (typed, bounded); every other key but
/// the read-only ones is kept as sent, as wazo-provd does.
const INTERPRETED: &[&str] = &[
    "id",
    "mac",
    "ip",
    "vendor",
    "model",
    "version",
    "sn",
    "plugin",
    "config",
    "description",
    "remote_state_sip_username",
];

/// Applies a written device object onto `device` (full replacement of the writable keys).
fn apply_body(device: &mut Device, body: &Map<String, Value>) -> ApiResult<()> {
    let extra = fields::extras(body, "device", INTERPRETED, READ_ONLY)?;
    fields::check_read_only(body, READ_ONLY)?;
    fields::body_id(body)?;
    device.mac = opt_string(body, "mac")?
        .map(|m| {
            m.parse::<Mac>()
                .map_err(|e| ApiError::field("mac", e.to_string()))
        })
        .transpose()?;
    device.ip = opt_string(body, "ip")?
        .map(|ip| {
            ip.parse::<IpAddr>()
                .map_err(|_| ApiError::field("ip", format!("{ip:?} is not an IP address")))
        })
        .transpose()?;
    device.vendor = opt_string(body, "vendor")?;
    device.model = opt_string(body, "model")?;
    device.version = opt_string(body, "version")?;
    device.sn = opt_string(body, "sn")?;
    device.plugin = opt_string(body, "plugin")?;
    device.config = opt_string(body, "config")?;
    device.description = opt_string(body, "description")?;
    device.remote_state_sip_username = opt_string(body, "remote_state_sip_username")?;
    device.extra = extra;
    Ok(())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeviceEnvelope {
    device: Map<String, Value>,
}

pub(super) async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Query(pairs): Query<Vec<(String, String)>>,
) -> ApiResult {
    caller.require("provd.dev_mgr.devices.read")?;
    let query = ListQuery::parse(&pairs)?;
    let spec = manage::devices::ListSpec {
        recurse: query.recurse,
        equals: query.index_hints(),
        sort: query.sort.clone().map(|key| (key, query.descending)),
    };
    // The tenants listed come from the caller's scope before the client's selector applies,
    // so that a selector can never reach another tenant's devices.
    let st = Arc::clone(&state);
    let planned =
        blocking(move || Ok(manage::devices::plan(&st.store, &caller.scope, &spec)?)).await?;
    tracing::debug!(plan = %planned.plan, sorted = planned.sorted, "device listing");
    let docs = planned
        .devices
        .map(move |d| d.map(|d| device_json(&d, &state)).map_err(ApiError::from));
    Ok(super::stream_list("devices", docs, planned.sorted, query))
}

pub(super) async fn show(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.dev_mgr.devices.{id}.read"))?;
    let st = Arc::clone(&state);
    let (device, sync) = blocking(move || {
        let device = manage::devices::get(&st.store, &caller.scope, &id)?;
        // The device is still shown when its resync state no longer decodes.
        let sync = st.store.sync_state(&device.id).unwrap_or_else(|e| {
            tracing::warn!("{e}");
            None
        });
        Ok((device, sync))
    })
    .await?;
    let mut shown = device_json(&device, &state);
    if let Value::Object(map) = &mut shown {
        map.insert(
            "last_sync".to_owned(),
            sync.map_or(Value::Null, |s| last_sync_json(&s.last)),
        );
    }
    Ok(reply(StatusCode::OK, json!({ "device": shown })))
}

pub(super) async fn create(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<DeviceEnvelope>,
) -> ApiResult {
    caller.require("provd.dev_mgr.devices.create")?;
    let id = fields::body_id(&body.device)?.unwrap_or_else(model::new_device_id);
    let mut device = Device::new(id, caller.tenant());
    apply_body(&mut device, &body.device)?;
    let created = blocking(move || {
        Ok(manage::devices::create(
            &state.store,
            &state.files.events,
            &caller.scope,
            device,
        )?)
    })
    .await?;
    Ok(super::created(
        &format!("dev_mgr/devices/{}", created.id),
        &created.id,
    ))
}

pub(super) async fn update(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
    Body(body): Body<DeviceEnvelope>,
) -> ApiResult {
    caller.require(&format!("provd.dev_mgr.devices.{id}.update"))?;
    // The body is read once the device is known (wazo-provd answers an unknown id 404
    // whatever the body).
    blocking(move || {
        let edit = |device: &mut Device| apply_body(device, &body.device);
        manage::devices::update(&state.store, &caller.scope, &id, edit)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn remove(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.dev_mgr.devices.{id}.delete"))?;
    blocking(move || Ok(manage::devices::delete(&state.store, &caller.scope, &id)?)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn synchronize(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<IdBody>,
) -> ApiResult {
    caller.require("provd.dev_mgr.synchronize.create")?;
    let st = Arc::clone(&state);
    let id = body.id.clone();
    let device = blocking(move || Ok(manage::devices::get(&st.store, &caller.scope, &id)?)).await?;
    // Checked here too (the queue's worker checks again) so that a NOTIFY that cannot be sent
    // fails the operation at once.
    let plan = crate::sync::target(&device, &state.files.plugins(), state.sync.settings());
    let (plan, joined, n) = {
        let mut ops = state.ops.lock().unwrap_or_else(|e| e.into_inner());
        let plan = match plan {
            Ok(_) if ops.in_progress_count() >= MAX_NOTIFYING => Err("too many NOTIFYs in flight"),
            Ok(_) => Ok(()),
            Err(why) => Err(why),
        };
        // A device already being told joins that operation: one NOTIFY, one resync.
        let joined = plan.is_ok().then(|| ops.in_progress(&device.id)).flatten();
        let n = match joined {
            Some(n) => n,
            None => ops.add(
                &device.tenant,
                &device.id,
                if plan.is_ok() { "progress" } else { "fail" },
            ),
        };
        (plan, joined, n)
    };
    match (plan, joined) {
        (Err(why), _) => {
            tracing::warn!(device = %device.id, "synchronize not possible: {why}");
            let st = Arc::clone(&state);
            let recorded = tokio::task::spawn_blocking(move || {
                st.sync
                    .record(&device.id, Reason::Manual, SyncStatus::Skipped, why)
            })
            .await;
            if let Ok(Err(e)) = recorded {
                tracing::warn!("resync state not recorded: {e}");
            }
        }
        (Ok(()), Some(_)) => {}
        (Ok(()), None) => {
            let (queued, outcome) = state.sync.queue_watched(&device.id, Reason::Manual);
            if queued == Queued::Dropped {
                tracing::warn!(device = %device.id, "synchronize: the resync queue is full");
            }
            let st = Arc::clone(&state);
            tokio::spawn(async move {
                // Dropped by a full queue: no outcome ever comes.
                let status = match outcome.await {
                    Ok(last) if last.state == SyncStatus::Ok => "success",
                    _ => "fail",
                };
                // Unless the client deleted the operation meanwhile.
                if let Some(op) = st
                    .ops
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .states
                    .get_mut(&n)
                {
                    op.status = status;
                }
            });
        }
    }
    Ok((
        StatusCode::CREATED,
        [(
            header::LOCATION,
            super::location(&format!("dev_mgr/synchronize/{n}")),
        )],
    )
        .into_response())
}

/// Operation numbers are positive integers; anything else names no operation.
fn op_number(op: &str) -> ApiResult<u64> {
    op.parse()
        .map_err(|_| ApiError::not_found("no such operation"))
}

pub(super) async fn op_get(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(op): PathParam,
) -> ApiResult {
    caller.require("provd.operation.read")?;
    let op = op_number(&op)?;
    let ops = state.ops.lock().unwrap_or_else(|e| e.into_inner());
    let status = ops
        .states
        .get(&op)
        .filter(|op| caller.scope.reaches(&op.tenant))
        .ok_or_else(|| ApiError::not_found("no such operation"))?
        .status;
    Ok(reply(StatusCode::OK, json!({ "status": status })))
}

pub(super) async fn op_delete(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(op): PathParam,
) -> ApiResult {
    caller.require("provd.operation.delete")?;
    let op = op_number(&op)?;
    let mut ops = state.ops.lock().unwrap_or_else(|e| e.into_inner());
    if !ops
        .states
        .get(&op)
        .is_some_and(|op| caller.scope.reaches(&op.tenant))
    {
        return Err(ApiError::not_found("no such operation"));
    }
    ops.states.remove(&op);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn reconfigure(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<IdBody>,
) -> ApiResult {
    caller.require("provd.dev_mgr.reconfigure.create")?;
    // wazo-provd answers an unknown or foreign device here with 400 (its errback maps every
    // failure so), unlike the other device routes; its clients and tests expect that.
    blocking(move || Ok(manage::devices::get(&state.store, &caller.scope, &body.id)?))
        .await
        .map_err(|e| match e.status() {
            StatusCode::NOT_FOUND => e.with_status(StatusCode::BAD_REQUEST),
            _ => e,
        })?;
    // Files are rendered on request and cached by revision: there is nothing to regenerate.
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DhcpInfoEnvelope {
    dhcp_info: DhcpInfo,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DhcpInfo {
    op: String,
    ip: String,
    #[serde(default)]
    mac: Option<String>,
    /// Required for `commit`, as in wazo-provd (an empty list is fine).
    #[serde(default)]
    options: Option<Vec<String>>,
}

pub(super) async fn dhcpinfo(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<DhcpInfoEnvelope>,
) -> ApiResult {
    caller.require("provd.dev_mgr.dhcpinfo.create")?;
    // Lease facts create devices in the default tenant: only it may send them.
    caller.require_master()?;
    let info = body.dhcp_info;
    // wazo-provd requires the MAC for commit only: an ended lease without it clears the
    // address of the device that still has it.
    if info.op == "commit" && info.options.is_none() {
        return Err(ApiError::field(
            "dhcp_info.options",
            "required for commit (an empty list when the lease has none)",
        ));
    }
    let options = info.options.unwrap_or_default();
    let event = match (info.op.as_str(), info.mac.as_deref()) {
        ("release" | "expiry", None) => {
            let ip = info.ip.parse().map_err(|_| {
                ApiError::field(
                    "dhcp_info",
                    format!("ip: {:?} is not an IPv4 address", info.ip),
                )
            })?;
            crate::dhcpinfo::Event::Gone(ip)
        }
        _ => crate::dhcpinfo::Event::Lease(
            crate::dhcpinfo::to_request(&info.op, &info.ip, info.mac.as_deref(), &options)
                .map_err(|e| ApiError::field("dhcp_info", e.to_string()))?,
        ),
    };
    blocking(move || {
        let result = match &event {
            crate::dhcpinfo::Event::Lease(ctx) => state
                .files
                .identify_via(ctx, crate::store::Via::Dhcpinfo)
                .map(|_| ()),
            crate::dhcpinfo::Event::Gone(ip) => state.files.forget_ip(*ip).map(|_| ()),
        };
        result.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
