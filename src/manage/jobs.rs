//! Jobs (seed 004's "Update Software" and "Update Config"): per tenant and category, applied
//! when each device of the category next fetches its files. The latest firmware job and the
//! latest job of each config type win; they are layers merged over the devices' configs.

use std::collections::BTreeMap;

use super::{categories, ManageError, Result, Scope};
use crate::model::{Category, Device, FirmwareTarget, Job, JobKind, RawConfig, UnixTime};
use crate::store::Store;

/// The config job type that gives every provisioned device of the category a new admin
/// password; it takes no parameters and adds no layer.
pub const ROTATION: &str = "admin_password_rotation";

/// Config job types and the raw-config keys each may set (`params`: any; [`ROTATION`]: none).
pub const CONFIG_TYPES: &[(&str, &[&str])] = &[
    ("locale", &["locale"]),
    ("timezone", &["timezone"]),
    ("ntp", &["ntp_enabled", "ntp_ip"]),
    ("params", &[]),
    (ROTATION, &[]),
];

/// What a client asks for.
#[derive(Debug, Clone)]
pub enum NewJob {
    /// Update Software; `None` takes the category's firmware policy as it is now.
    Firmware(Option<BTreeMap<String, FirmwareTarget>>),
    /// Update Config of one type.
    Config {
        /// One of [`CONFIG_TYPES`].
        kind: String,
        /// Its parameters.
        params: RawConfig,
    },
}

fn check_config_job(kind: &str, params: &RawConfig) -> Result<()> {
    let Some((_, keys)) = CONFIG_TYPES.iter().find(|(name, _)| *name == kind) else {
        let names: Vec<&str> = CONFIG_TYPES.iter().map(|(n, _)| *n).collect();
        return Err(ManageError::field(
            "type",
            format!("one of {}", names.join(", ")),
        ));
    };
    if kind == ROTATION {
        if let Some(other) = params.keys().next() {
            return Err(ManageError::field(
                format!("params.{other}"),
                format!("a {ROTATION} job takes no parameters"),
            ));
        }
        return Ok(());
    }
    if params.is_empty() {
        return Err(ManageError::field("params", "at least one parameter"));
    }
    if !keys.is_empty() {
        if let Some(other) = params.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(ManageError::field(
                format!("params.{other}"),
                format!("a {kind} job sets only {}", keys.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Creates a job for the category `category` (id or name) of the caller.
pub fn create(
    store: &Store,
    scope: &Scope,
    category: &str,
    new: NewJob,
    now: UnixTime,
) -> Result<Job> {
    let category = categories::find(store, scope, category)
        .map_err(|_| ManageError::field("category", format!("no category {category:?}")))?;
    let kind = match new {
        NewJob::Firmware(versions) => {
            let versions = versions.unwrap_or_else(|| category.firmware.clone());
            if versions.is_empty() {
                return Err(ManageError::field(
                    "versions",
                    "no version given and the category has no firmware policy",
                ));
            }
            categories::check_firmware("versions", &versions)?;
            JobKind::Firmware { versions }
        }
        NewJob::Config { kind, params } => {
            check_config_job(&kind, &params)?;
            JobKind::Config { kind, params }
        }
    };
    let job = store.create_job(&Job {
        id: crate::model::new_id(),
        tenant: category.tenant.clone(),
        category: category.id.clone(),
        created: now,
        seq: 0,
        kind,
    })?;
    tracing::info!(job = %job.id, tenant = %job.tenant, category = %category.name, "job created");
    if matches!(&job.kind, JobKind::Config { kind, .. } if kind == ROTATION) {
        // Now rather than at each phone's next fetch: the password that the secrets API shows
        // from this moment on is the one the phone's next files carry.
        let rotated = rotate_passwords(store, &category)?;
        tracing::info!(job = %job.id, category = %category.name, devices = rotated, "admin passwords rotated");
    }
    Ok(job)
}

/// Gives each provisioned device of `category` a new random admin password; returns how many.
fn rotate_passwords(store: &Store, category: &Category) -> Result<usize> {
    let mut rotated = 0;
    for id in devices_of(store, category)? {
        let done = super::retry_on_conflict("device", || {
            let Some(mut device) = store.device(&id)? else {
                // Deleted meanwhile: nothing to rotate.
                return Ok(Some(false));
            };
            let still_there = device.tenant == category.tenant
                && device.category.as_deref() == Some(category.id.as_str());
            if device.provisioned.is_none() || !still_there {
                return Ok(Some(false));
            }
            device.admin_password = Some(
                crate::ident::random_password(crate::ident::ADMIN_PASSWORD_LEN)
                    .map_err(|e| ManageError::Internal(e.to_string()))?,
            );
            Ok::<_, ManageError>(super::conflict_or(store.update_device(&device))?.map(|_| true))
        })?;
        rotated += usize::from(done);
    }
    Ok(rotated)
}

/// The jobs of the acting tenant (or its subtree), oldest first.
pub fn list(store: &Store, scope: &Scope, recurse: bool) -> Result<Vec<Job>> {
    let mut found: Vec<Job> = store
        .jobs()?
        .into_iter()
        .filter(|j| scope.lists(&j.tenant, recurse))
        .collect();
    found.sort_by_key(|j| j.seq);
    Ok(found)
}

/// Deletes the job `id` of the caller's subtree.
pub fn delete(store: &Store, scope: &Scope, id: &str) -> Result<Job> {
    let reachable = store
        .jobs()?
        .into_iter()
        .any(|j| j.id == id && scope.reaches(&j.tenant));
    if !reachable {
        return Err(ManageError::NotFound(format!("no job {id:?}")));
    }
    let gone = store.delete_job(id)?;
    tracing::info!(job = %id, tenant = %gone.tenant, "job deleted");
    Ok(gone)
}

/// The raw-config layers that the jobs of `device`'s category add over its configs, each with
/// the job it comes from: the latest firmware job that names the device's model, then the
/// latest job of each config type. Nothing for a device without a category of its own tenant.
pub fn layers(store: &Store, device: &Device) -> crate::store::Result<Vec<(Job, RawConfig)>> {
    let Some(category) = device.category.as_deref() else {
        return Ok(Vec::new());
    };
    let jobs = store.jobs_of(&device.tenant, category)?;
    let mut out = Vec::new();
    let firmware = device.model.as_deref().and_then(|model| {
        jobs.iter().rev().find_map(|job| match &job.kind {
            JobKind::Firmware { versions } => versions
                .iter()
                .find(|(m, _)| m.eq_ignore_ascii_case(model))
                .map(|(_, target)| (job, target)),
            JobKind::Config { .. } => None,
        })
    });
    if let Some((job, target)) = firmware {
        let mut raw = RawConfig::new();
        raw.insert(
            "firmware".into(),
            serde_json::json!({ "version": target.version, "file": target.file }),
        );
        out.push((job.clone(), raw));
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut configs = Vec::new();
    for job in jobs.iter().rev() {
        if let JobKind::Config { kind, params } = &job.kind {
            if kind != ROTATION && !seen.contains(&kind.as_str()) {
                seen.push(kind);
                configs.push((job.clone(), params.clone()));
            }
        }
    }
    // Oldest first, so that a later job of another type wins where two types overlap.
    configs.sort_by_key(|(job, _)| job.seq);
    out.extend(configs);
    Ok(out)
}

/// The devices of `category` (of its tenant) that a job or a redemption should resync.
pub fn devices_of(store: &Store, category: &Category) -> Result<Vec<String>> {
    let root = store.default_tenant()?.unwrap_or_default();
    let scope = Scope::new(store, &category.tenant, None, &root)?;
    let spec = super::devices::ListSpec {
        recurse: false,
        equals: vec![("tenant_uuid".into(), vec![category.tenant.clone()])],
        sort: None,
    };
    let planned = super::devices::plan(store, &scope, &spec)?;
    let mut ids = Vec::new();
    for device in planned.devices {
        let device = device?;
        if device.tenant == category.tenant
            && device.category.as_deref() == Some(category.id.as_str())
            && device.configured
        {
            ids.push(device.id);
        }
    }
    Ok(ids)
}
