//! Provisioning configs: private to their tenant's subtree, shared read-only with the tenants
//! below their own (the root's with every tenant), and the configs they inherit from.

use std::collections::BTreeSet;

use serde_json::json;

use super::{conflict_or, may_use, retry_on_conflict, ManageError, Result, Scope};
use crate::model::{Config, RawConfig};
use crate::plugins::merged_raw_config;
use crate::store::{Store, AUTOCREATE_ROLE, AUTOPROV_CONFIG, BASE_CONFIG};
use crate::sync::{Reason, SyncQueue};

fn not_found(id: &str) -> ManageError {
    ManageError::NotFound(format!("no config {id:?}"))
}

/// True when the caller may read a config of `owner`: one it manages, or one shared with it.
fn readable(scope: &Scope, owner: &str) -> bool {
    scope.reaches(owner) || scope.inherits(owner)
}

/// The configs a listing shows: the acting tenant's and those shared with it, with `recurse`
/// also those of its subtree.
pub fn list(store: &Store, scope: &Scope, recurse: bool) -> Result<Vec<Config>> {
    Ok(store
        .configs()?
        .into_iter()
        .filter(|c| scope.lists(&c.tenant, recurse) || scope.inherits(&c.tenant))
        .collect())
}

/// The config `id` when the caller may read it; any other is "not found".
pub fn get(store: &Store, scope: &Scope, id: &str) -> Result<Config> {
    match store.config(id)? {
        Some(c) if readable(scope, &c.tenant) => Ok(c),
        _ => Err(not_found(id)),
    }
}

/// The config `id` when the caller may change it: a shared one is 403, an unknown one 404.
fn writable(store: &Store, scope: &Scope, id: &str) -> Result<Config> {
    match store.config(id)? {
        Some(c) if scope.reaches(&c.tenant) => Ok(c),
        Some(c) if scope.inherits(&c.tenant) => Err(ManageError::Forbidden(format!(
            "config {id:?} is shared by tenant {:?}, which alone changes it",
            c.tenant
        ))),
        _ => Err(not_found(id)),
    }
}

/// A config may inherit from configs of its own tenant and of the tenants above it.
fn check_parents(store: &Store, scope: &Scope, config: &Config) -> Result<()> {
    for parent in &config.parent_ids {
        let found = store
            .config(parent)?
            .filter(|p| readable(scope, &p.tenant))
            .ok_or_else(|| ManageError::field("parent_ids", format!("no config {parent:?}")))?;
        if !may_use(scope.tree(), &config.tenant, &found.tenant) {
            return Err(ManageError::field(
                "parent_ids",
                format!(
                    "config {parent:?} belongs to tenant {:?}, which configs of tenant {:?} cannot inherit from",
                    found.tenant, config.tenant
                ),
            ));
        }
    }
    Ok(())
}

/// Stores a new config in the acting tenant.
pub fn create(store: &Store, scope: &Scope, mut config: Config) -> Result<Config> {
    config.tenant = scope.tenant().to_owned();
    check_parents(store, scope, &config)?;
    Ok(store.create_config(&config)?)
}

/// Replaces the config `id` by what `build` makes of the stored one (its tenant stays), again
/// on a concurrent write. `build` runs once the config is known to be the caller's to change,
/// with the caller's error type. Every device whose files the config feeds is then queued on
/// `sync` ([`Reason::ConfigChanged`]: the queue tells only those whose rendered files changed).
pub fn update<E: From<ManageError>>(
    store: &Store,
    scope: &Scope,
    id: &str,
    sync: &SyncQueue,
    build: impl Fn(&Config) -> Result<Config, E>,
) -> Result<Config, E> {
    let updated = retry_on_conflict::<_, E>("config", || {
        let stored = writable(store, scope, id)?;
        let mut config = build(&stored)?;
        config.id = stored.id.clone();
        config.tenant = stored.tenant.clone();
        config.revision = stored.revision;
        check_parents(store, scope, &config)?;
        Ok(conflict_or(store.update_config(&config))?)
    })?;
    if sync.settings().enabled {
        // The change is written: a failure here must not make the caller believe it is not.
        match dependent_devices(store, &updated.id) {
            Ok(devices) => {
                for device in &devices {
                    sync.queue(device, Reason::ConfigChanged);
                }
            }
            Err(e) => tracing::warn!(config = %updated.id, "devices to resync not found: {e}"),
        }
    }
    Ok(updated)
}

/// Ids of the devices whose merged raw config includes config `id`: those whose config is
/// `id` or inherits from it, and every device of the tenants whose default config is one of
/// these (every device for `base`, which every chain starts with).
pub fn dependent_devices(store: &Store, id: &str) -> Result<BTreeSet<String>> {
    let mut configs: BTreeSet<String> = BTreeSet::new();
    let mut pending = vec![id.to_owned()];
    while let Some(config) = pending.pop() {
        if configs.insert(config.clone()) {
            pending.extend(store.config_children(&config)?);
        }
    }
    let mut devices = BTreeSet::new();
    for config in &configs {
        devices.extend(store.config_device_ids(config)?);
    }
    let tree = store.tenant_tree()?;
    let mut tenants: BTreeSet<String> = BTreeSet::new();
    for tenant in store.tenants()? {
        let applies = configs.contains(BASE_CONFIG)
            || tenant
                .default_config
                .as_ref()
                .is_some_and(|c| configs.contains(c));
        if applies {
            tenants.extend(tree.subtree(&tenant.id));
        }
    }
    for tenant in &tenants {
        for device in store.tenant_device_ids(tenant) {
            devices.insert(device?);
        }
    }
    Ok(devices)
}

/// Deletes the config `id` of the caller's subtree (an undeletable one is refused by the
/// store).
pub fn delete(store: &Store, scope: &Scope, id: &str) -> Result<Config> {
    writable(store, scope, id)?;
    Ok(store.delete_config(id)?)
}

/// Appends `id`'s ancestors, then `id`, each once (most general first).
fn ancestry(store: &Store, id: &str, chain: &mut Vec<Config>, depth: usize) -> Result<()> {
    if depth > 64 || chain.iter().any(|c| c.id == id) {
        return Ok(());
    }
    let Some(config) = store.config(id)? else {
        return Ok(());
    };
    for parent in &config.parent_ids {
        ancestry(store, parent, chain, depth + 1)?;
    }
    if !chain.iter().any(|c| c.id == id) {
        chain.push(config);
    }
    Ok(())
}

/// The raw config of `id` merged as a device of the acting tenant would receive it: `base`,
/// the default configs from the root down to the acting tenant, then `id` and its parents.
pub fn raw(store: &Store, scope: &Scope, id: &str) -> Result<RawConfig> {
    get(store, scope, id)?;
    let mut chain = Vec::new();
    ancestry(store, BASE_CONFIG, &mut chain, 0)?;
    for default in store.default_configs(scope.tenant())? {
        ancestry(store, &default, &mut chain, 0)?;
    }
    ancestry(store, id, &mut chain, 0)?;
    Ok(merged_raw_config(chain.iter().map(|c| &c.raw_config)))
}

/// A new transient config for one device (wazo-provd's `autocreate`): a child of the config
/// with the role `autocreate` that the caller may read, an administrator's own preferred over
/// the built-in `autoprov`, with a random SIP user name.
pub fn autocreate(store: &Store, scope: &Scope) -> Result<Config> {
    let template = store
        .configs()?
        .into_iter()
        .filter(|c| c.role.as_deref() == Some(AUTOCREATE_ROLE) && readable(scope, &c.tenant))
        .min_by_key(|c| (c.id == AUTOPROV_CONFIG, c.id.clone()))
        .ok_or_else(|| ManageError::NotFound("no config has the role autocreate".to_owned()))?;
    let random = |n| {
        crate::ident::random_password(n)
            .map(|p| p.to_ascii_lowercase())
            .map_err(|e| ManageError::Internal(e.to_string()))
    };
    let (suffix, username) = (random(10)?, format!("ap{}", random(8)?));
    let config = Config {
        id: format!("{}-{suffix}", template.id)
            .chars()
            .take(64)
            .collect(),
        parent_ids: vec![template.id.clone()],
        raw_config: json!({ "sip_lines": { "1": { "username": username } } })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        tenant: scope.tenant().to_owned(),
        deletable: true,
        transient: true,
        role: None,
        extra: Default::default(),
        generation: 0,
        revision: 0,
    };
    Ok(store.create_config(&config)?)
}
