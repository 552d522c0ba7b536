//! Devices: who sees and changes which, the tenant a device joins, and what dies with it.

use super::{conflict_or, may_use, retry_on_conflict, ManageError, Result, Scope};
use crate::model::Device;
use crate::store::{Store, StoreError};

fn not_found(id: &str) -> ManageError {
    ManageError::NotFound(format!("no device {id:?}"))
}

/// The devices a listing shows: the acting tenant's, with `recurse` its subtree's.
pub fn list(store: &Store, scope: &Scope, recurse: bool) -> Result<Vec<Device>> {
    Ok(store
        .devices()?
        .into_iter()
        .filter(|d| scope.lists(&d.tenant, recurse))
        .collect())
}

/// The device `id` when it belongs to the caller's subtree; any other is "not found" (no
/// existence leak).
pub fn get(store: &Store, scope: &Scope, id: &str) -> Result<Device> {
    match store.device(id)? {
        Some(d) if scope.reaches(&d.tenant) => Ok(d),
        _ => Err(not_found(id)),
    }
}

/// Checks the device's config and moves a device of the root to the tenant of the config it
/// receives (seed 002: provisioning moves a device to its config's tenant). A device may use
/// its own tenant's configs and those of the tenants above it.
fn resolve_config(store: &Store, scope: &Scope, device: &mut Device) -> Result<()> {
    let Some(id) = &device.config else {
        return Ok(());
    };
    let config = store
        .config(id)?
        .filter(|c| scope.reaches(&c.tenant) || scope.inherits(&c.tenant))
        .ok_or_else(|| ManageError::field("config", format!("no config {id:?}")))?;
    if device.tenant == scope.root() && config.tenant != scope.root() {
        device.tenant = config.tenant;
    } else if !may_use(scope.tree(), &device.tenant, &config.tenant) {
        return Err(ManageError::field(
            "config",
            format!(
                "config {id:?} belongs to tenant {:?}, which devices of tenant {:?} cannot use",
                config.tenant, device.tenant
            ),
        ));
    }
    Ok(())
}

/// Stores a new device in the acting tenant (or in its config's tenant, see
/// [`resolve_config`]).
pub fn create(store: &Store, scope: &Scope, mut device: Device) -> Result<Device> {
    device.tenant = scope.tenant().to_owned();
    resolve_config(store, scope, &mut device)?;
    device.is_new = device.tenant == scope.root();
    let created = store.create_device(&device)?;
    tracing::info!(device = %created.id, tenant = %created.tenant, "device created through the API");
    Ok(created)
}

/// Applies `edit` to the stored device `id` and writes it, again on a concurrent write. A
/// device of the caller's subtree stays in its tenant; a device still in the root is claimed
/// by the acting tenant (wazo-provd's rule). A device that left the root never moves. `edit`
/// runs once the device is known to exist, with the caller's error type.
pub fn update<E: From<ManageError>>(
    store: &Store,
    scope: &Scope,
    id: &str,
    edit: impl Fn(&mut Device) -> Result<(), E>,
) -> Result<Device, E> {
    retry_on_conflict("device", || {
        let stored = store
            .device(id)
            .map_err(ManageError::from)?
            .filter(|d| scope.reaches(&d.tenant) || d.tenant == scope.root())
            .ok_or_else(|| not_found(id))?;
        let mut device = stored.clone();
        edit(&mut device)?;
        device.id = stored.id.clone();
        device.revision = stored.revision;
        device.tenant = if stored.tenant == scope.root() {
            scope.tenant().to_owned()
        } else {
            stored.tenant.clone()
        };
        resolve_config(store, scope, &mut device)?;
        device.is_new = device.tenant == scope.root();
        let saved = match store.update_device(&device) {
            Ok(saved) => {
                if saved.tenant != stored.tenant {
                    tracing::info!(device = %saved.id, from = %stored.tenant, to = %saved.tenant, "device moved to its tenant");
                }
                Ok(Some(saved))
            }
            Err(StoreError::TenantLocked { device, tenant }) => {
                tracing::warn!(%device, %tenant, "refused a tenant change of a device that left the default tenant");
                Err(ManageError::Forbidden(format!(
                    "device {device:?} cannot change tenant; delete it and provision it again"
                )))
            }
            other => conflict_or(other),
        };
        Ok(saved?)
    })
}

/// Deletes the device `id` of the caller's subtree; a transient config (wazo-provd's
/// autocreated ones) is deleted with the last device that used it.
pub fn delete(store: &Store, scope: &Scope, id: &str) -> Result<Device> {
    get(store, scope, id)?;
    let gone = store.delete_device(id)?;
    tracing::info!(device = %id, "device deleted through the API");
    if let Some(config) = gone.config.as_deref() {
        if store.config(config)?.is_some_and(|c| c.transient) {
            // Refused while another device or a child config uses it: it stays then.
            match store.delete_unused_config(config) {
                Ok(_) => tracing::info!(%config, "transient config deleted with its last device"),
                Err(e) => tracing::debug!(%config, "transient config kept: {e}"),
            }
        }
    }
    Ok(gone)
}
