//! Devices: who sees and changes which, the tenant a device joins, and what dies with it.

use super::{conflict_or, may_use, retry_on_conflict, ManageError, Result, Scope};
use crate::model::Device;
use crate::store::{Store, StoreError};

fn not_found(id: &str) -> ManageError {
    ManageError::NotFound(format!("no device {id:?}"))
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
pub fn create(
    store: &Store,
    events: &crate::events::Events,
    scope: &Scope,
    mut device: Device,
) -> Result<Device> {
    device.tenant = scope.tenant().to_owned();
    resolve_config(store, scope, &mut device)?;
    device.is_new = device.tenant == scope.root();
    let created = store.create_device(&device)?;
    tracing::info!(device = %created.id, tenant = %created.tenant, "device created through the API");
    events.publish(
        created.tenant.clone(),
        crate::events::What::Device(crate::events::DeviceCreated::of(&created, "created")),
    );
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

/// Returns the device `id` of the caller's subtree to autoprov in its own tenant (seed 002:
/// reset keeps the tenant), so that the phone shows the code form again: no config of its
/// own, no category, not configured. Its own admin password stays, and keeps winning over the
/// tenant's (`provisioned` stays: a phone provisioned by code never gets the tenant's).
pub fn reset(store: &Store, scope: &Scope, id: &str) -> Result<Device> {
    retry_on_conflict("device", || {
        let mut device = get(store, scope, id)?;
        device.config = Some(crate::store::AUTOPROV_CONFIG.to_owned());
        device.category = None;
        device.configured = false;
        device.is_new = device.tenant == scope.root();
        let saved = conflict_or(store.update_device(&device))?;
        if let Some(saved) = &saved {
            tracing::info!(device = %saved.id, tenant = %saved.tenant, "device reset to autoprov");
        }
        Ok(saved)
    })
}

/// What a device listing asks of the store, besides the acting tenant.
#[derive(Debug, Clone, Default)]
pub struct ListSpec {
    /// Include the acting tenant's subtree.
    pub recurse: bool,
    /// Equality tests an index may answer: (the API key, the values one of which matches).
    pub equals: Vec<(String, Vec<String>)>,
    /// The key the answer is sorted on, and whether descending.
    pub sort: Option<(String, bool)>,
}

/// Devices that a listing reads, and how.
pub struct Planned {
    /// The candidate devices: a superset of the matching ones among the listed tenants, by
    /// id, or in the order of the sort when `sorted`.
    pub devices: Box<dyn Iterator<Item = Result<Device>> + Send>,
    /// The devices come in the order of the requested sort.
    pub sorted: bool,
    /// What was chosen, for the debug log.
    pub plan: String,
}

/// Above this many devices of one value, an equality test is not worth more than an index
/// order for a sorted page.
const SELECTIVE: usize = 1000;

type Keyed<K> = Box<dyn Iterator<Item = Result<(K, String)>> + Send>;

/// Merges streams each sorted by (key, id) into one stream of ids sorted by (key, id).
fn merge<K: Ord + Send + 'static>(streams: Vec<Keyed<K>>) -> impl Iterator<Item = Result<String>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut streams = streams;
    let mut heap: BinaryHeap<Reverse<(K, String, usize)>> = BinaryHeap::new();
    let mut failed: Option<ManageError> = None;
    for (n, stream) in streams.iter_mut().enumerate() {
        match stream.next() {
            Some(Ok((key, id))) => heap.push(Reverse((key, id, n))),
            Some(Err(e)) => failed = Some(e),
            None => {}
        }
    }
    std::iter::from_fn(move || {
        if let Some(e) = failed.take() {
            return Some(Err(e));
        }
        let Reverse((_, id, n)) = heap.pop()?;
        match streams[n].next() {
            Some(Ok((key, next))) => heap.push(Reverse((key, next, n))),
            Some(Err(e)) => failed = Some(e),
            None => {}
        }
        Some(Ok(id))
    })
}

fn by_id(ids: impl Iterator<Item = crate::store::Result<String>> + Send + 'static) -> Keyed<()> {
    Box::new(ids.map(|id| id.map(|id| ((), id)).map_err(ManageError::from)))
}

/// Plans a device listing on the store's indexes: the tenants listed (the acting one, or its
/// subtree, narrowed by `tenant_uuid`), read through the most selective equality test an
/// index answers (`id`, `mac`, `ip`, `sn` over a subtree, then the per-tenant field indexes),
/// or in the order of an indexed sort key; a full read of the listed tenants' devices
/// otherwise. The caller still applies the whole selector to every device read.
pub fn plan(store: &Store, scope: &Scope, spec: &ListSpec) -> Result<Planned> {
    use crate::store::Field;
    let equals = |key: &str| spec.equals.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let only: Option<Vec<String>> = equals("tenant_uuid").cloned();
    // Whether a device of `tenant` is listed: asked without building the subtree, which the
    // lookups by id, MAC, IP or serial never need (a root of 1,000 tenants would pay for it).
    let listed = {
        let scope = scope.clone();
        let recurse = spec.recurse;
        move |tenant: &str| {
            let in_scope = if recurse {
                scope.reaches(tenant)
            } else {
                tenant == scope.tenant()
            };
            in_scope
                && only
                    .as_ref()
                    .is_none_or(|only| only.iter().any(|t| t == tenant))
        }
    };
    // The listed tenants, for the per-tenant indexes.
    let tenants = || -> Vec<String> {
        let mut all: Vec<String> = if spec.recurse {
            scope.tree().subtree(scope.tenant()).into_iter().collect()
        } else {
            vec![scope.tenant().to_owned()]
        };
        all.retain(|t| listed(t));
        all.sort();
        all
    };
    let load = {
        let store = store.clone();
        let listed = listed.clone();
        move |id: Result<String>| -> Option<Result<Device>> {
            match id.and_then(|id| Ok(store.device(&id)?)) {
                // A device that went away or moved since the index was read is not listed.
                Ok(Some(d)) if listed(&d.tenant) => Some(Ok(d)),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            }
        }
    };
    let planned = |ids: Box<dyn Iterator<Item = Result<String>> + Send>, sorted, plan: String| {
        let load = load.clone();
        Ok(Planned {
            devices: Box::new(ids.filter_map(load)),
            sorted,
            plan,
        })
    };
    // Global unique or small indexes first: at most a handful of devices.
    let few = |ids: Vec<String>, plan: &str| {
        let mut ids = ids;
        ids.sort();
        ids.dedup();
        planned(Box::new(ids.into_iter().map(Ok)), false, plan.to_owned())
    };
    // Devices the MAC and IP indexes hand over already read: not read a second time.
    let read = |mut found: Vec<Device>, plan: &str| {
        found.sort_by(|a, b| a.id.cmp(&b.id));
        found.dedup_by(|a, b| a.id == b.id);
        found.retain(|d| listed(&d.tenant));
        Ok(Planned {
            devices: Box::new(found.into_iter().map(Ok)),
            sorted: false,
            plan: plan.to_owned(),
        })
    };
    if let Some(wanted) = equals("id") {
        return few(wanted.clone(), "id");
    }
    if let Some(wanted) = equals("mac") {
        let mut found = Vec::new();
        for text in wanted {
            // Only the canonical form can equal the shown one.
            if let Ok(mac) = text.parse::<crate::model::Mac>() {
                if mac.to_string() == *text {
                    found.extend(store.device_by_mac(&mac)?);
                }
            }
        }
        return read(found, "mac index");
    }
    if let Some(wanted) = equals("ip") {
        let mut found = Vec::new();
        for text in wanted {
            if let Ok(ip) = text.parse::<std::net::IpAddr>() {
                if ip.to_string() == *text {
                    found.extend(store.devices_by_ip(&ip)?);
                }
            }
        }
        return read(found, "ip index");
    }
    if let (Some(wanted), true) = (equals("sn"), spec.recurse) {
        let mut ids = Vec::new();
        for sn in wanted {
            for id in store.serial_device_ids(sn) {
                ids.push(id?);
            }
        }
        return few(ids, "serial index");
    }
    let sort_field = spec
        .sort
        .as_ref()
        .and_then(|(key, desc)| Field::from_name(key).map(|f| (f, *desc)));
    // The per-tenant field indexes: the first equality test, unless it is broad and a sort
    // index serves the page better.
    let field_test = spec
        .equals
        .iter()
        .find_map(|(key, values)| Field::from_name(key).map(|f| (f, values)));
    let tenants = tenants();
    if let Some((field, values)) = field_test {
        // `$in` may repeat a value: each value's devices are read once.
        let values: std::collections::BTreeSet<&String> = values.iter().collect();
        let broad = sort_field.is_some() && {
            let mut broad = false;
            for tenant in &tenants {
                for value in &values {
                    broad |= store.field_has_more_than(field, tenant, value, SELECTIVE)?;
                }
            }
            broad
        };
        if !broad {
            let mut streams = Vec::new();
            for tenant in &tenants {
                for value in &values {
                    streams.push(by_id(store.field_device_ids(field, tenant, value)));
                }
            }
            return planned(
                Box::new(merge(streams)),
                false,
                format!("{} index", field.name()),
            );
        }
    }
    if let Some((field, descending)) = sort_field {
        let plan = format!("{} order", field.name());
        let read = |tenant: &String| store.field_ordered(field, tenant, descending);
        let ids: Box<dyn Iterator<Item = Result<String>> + Send> = if descending {
            let streams = tenants
                .iter()
                .map(|t| -> Keyed<std::cmp::Reverse<Vec<u8>>> {
                    Box::new(read(t).map(|item| {
                        item.map(|(value, id)| (std::cmp::Reverse(value), id))
                            .map_err(ManageError::from)
                    }))
                })
                .collect();
            Box::new(merge(streams))
        } else {
            let streams = tenants
                .iter()
                .map(|t| -> Keyed<Vec<u8>> {
                    Box::new(read(t).map(|i| i.map_err(ManageError::from)))
                })
                .collect();
            Box::new(merge(streams))
        };
        return planned(ids, true, plan);
    }
    let streams = tenants
        .iter()
        .map(|t| by_id(store.tenant_device_ids(t)))
        .collect();
    let sorted = matches!(&spec.sort, Some((key, false)) if key == "id");
    planned(Box::new(merge(streams)), sorted, "tenant scan".to_owned())
}

/// Device counts of a subtree, read from the store's counts (no device is read).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Devices in all.
    pub total: u64,
    /// Per state, in [`crate::store::DEVICE_STATES`] order.
    pub by_state: Vec<(&'static str, u64)>,
    /// Per plugin (`""` for none), by plugin name.
    pub by_plugin: std::collections::BTreeMap<String, u64>,
    /// Per tenant with devices, by tenant id.
    pub by_tenant: std::collections::BTreeMap<String, u64>,
}

/// Devices of the acting tenant's subtree by state, plugin and tenant: a few reads of the
/// store's counts per tenant, whatever the number of devices.
pub fn counts(store: &Store, scope: &Scope) -> Result<Counts> {
    let mut counts = Counts {
        by_state: crate::store::DEVICE_STATES
            .iter()
            .map(|s| (s.name(), 0))
            .collect(),
        ..Counts::default()
    };
    for tenant in scope.tree().subtree(scope.tenant()) {
        let n = store.tenant_device_count(&tenant)?;
        if n == 0 {
            continue;
        }
        counts.total += n;
        counts.by_tenant.insert(tenant.clone(), n);
        for (state, n) in store.tenant_state_counts(&tenant)? {
            if let Some(slot) = counts.by_state.iter_mut().find(|(s, _)| *s == state.name()) {
                slot.1 += n;
            }
        }
        for (plugin, n) in store.tenant_plugin_counts(&tenant)? {
            *counts.by_plugin.entry(plugin).or_default() += n;
        }
    }
    Ok(counts)
}

/// The identification history of the device `id` of the caller's subtree, oldest first.
pub fn history(
    store: &Store,
    scope: &Scope,
    id: &str,
) -> Result<Vec<crate::store::Identification>> {
    get(store, scope, id)?;
    Ok(store.device_history(id)?)
}
