//! Tenants: the tree, who creates and removes which, default configs and provisioning keys.

use super::{conflict_or, may_use, retry_on_conflict, ManageError, Result, Scope};
use crate::model::Tenant;
use crate::store::{Store, StoreError};

fn not_found(id: &str) -> ManageError {
    ManageError::NotFound(format!("no tenant {id:?}"))
}

/// The acting tenant and every tenant below it, by id.
pub fn list(store: &Store, scope: &Scope) -> Result<Vec<Tenant>> {
    Ok(store
        .tenants()?
        .into_iter()
        .filter(|t| scope.reaches(&t.id))
        .collect())
}

/// The tenant `id` when it is the acting tenant or below it.
pub fn get(store: &Store, scope: &Scope, id: &str) -> Result<Tenant> {
    match store.tenant(id)? {
        Some(t) if scope.reaches(&t.id) => Ok(t),
        _ => Err(not_found(id)),
    }
}

/// A tenant's default config must be one that its devices may use: its own (none yet for a
/// new tenant) or one of a tenant above it, that the caller can read.
fn check_default_config(
    store: &Store,
    scope: &Scope,
    tenant: &str,
    parent: Option<&str>,
    config: &str,
) -> Result<()> {
    let field = "tenant.default_config";
    crate::model::validate_id(config).map_err(|e| ManageError::field(field, e.to_string()))?;
    let found = store
        .config(config)?
        .filter(|c| scope.reaches(&c.tenant) || scope.inherits(&c.tenant))
        .ok_or_else(|| ManageError::field(field, format!("no config {config:?}")))?;
    let usable =
        found.tenant == tenant || parent.is_some_and(|p| may_use(scope.tree(), p, &found.tenant));
    if !usable {
        return Err(ManageError::field(
            field,
            format!(
                "config {config:?} belongs to tenant {:?}, which tenant {tenant:?} cannot use",
                found.tenant
            ),
        ));
    }
    Ok(())
}

/// What a client writes of a new tenant.
#[derive(Debug, Clone, Default)]
pub struct NewTenant {
    /// Its id.
    pub id: String,
    /// Its name (the id when absent).
    pub name: Option<String>,
    /// The tenant above it: the acting tenant when absent.
    pub parent: Option<String>,
    /// Its default config.
    pub default_config: Option<String>,
}

/// Checks a tenant's name: the API's bound on free text, no control characters.
pub fn check_name(name: &str) -> Result<()> {
    let max = crate::http::api::fields::MAX_DESCRIPTION_CHARS;
    if name.chars().count() > max || name.chars().any(char::is_control) {
        return Err(ManageError::field(
            "tenant.name",
            format!("at most {max} characters, no control characters"),
        ));
    }
    Ok(())
}

/// Creates a tenant below the acting tenant or one of its descendants.
pub fn create(store: &Store, scope: &Scope, new: NewTenant) -> Result<Tenant> {
    crate::model::validate_id(&new.id)
        .map_err(|e| ManageError::field("tenant.id", e.to_string()))?;
    if let Some(name) = &new.name {
        check_name(name)?;
    }
    if let Some(parent) = &new.parent {
        crate::model::validate_id(parent)
            .map_err(|e| ManageError::field("tenant.parent", e.to_string()))?;
    }
    let parent = new.parent.unwrap_or_else(|| scope.tenant().to_owned());
    if !scope.reaches(&parent) {
        return Err(ManageError::field(
            "tenant.parent",
            format!("no tenant {parent:?}"),
        ));
    }
    if let Some(config) = &new.default_config {
        check_default_config(store, scope, &new.id, Some(&parent), config)?;
    }
    let mut tenant = Tenant::new(new.id, Some(&parent));
    if let Some(name) = new.name {
        tenant.name = name;
    }
    tenant.default_config = new.default_config;
    let created = store.create_tenant(&tenant)?;
    tracing::info!(tenant = %created.id, parent = %parent, "tenant created");
    Ok(created)
}

/// What a client changes of a tenant; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct TenantChange {
    /// New name.
    pub name: Option<String>,
    /// New default config; `Some(None)` removes it.
    pub default_config: Option<Option<String>>,
    /// The parent as the client wrote it: it must be the current one (tenants never move).
    pub parent: Option<String>,
}

/// Changes the tenant `id` of the caller's subtree.
pub fn update(store: &Store, scope: &Scope, id: &str, change: &TenantChange) -> Result<Tenant> {
    retry_on_conflict("tenant", || {
        let mut tenant = get(store, scope, id)?;
        if let Some(parent) = &change.parent {
            if tenant.parent.as_ref() != Some(parent) {
                return Err(ManageError::field(
                    "tenant.parent",
                    "a tenant cannot move: create a new one and move its devices",
                ));
            }
        }
        if let Some(name) = &change.name {
            tenant.name = name.clone();
        }
        match &change.default_config {
            Some(Some(config)) => {
                check_default_config(store, scope, id, tenant.parent.as_deref(), config)?;
                tenant.default_config = Some(config.clone());
            }
            Some(None) => tenant.default_config = None,
            None => {}
        }
        conflict_or(store.update_tenant(&tenant))
    })
}

/// Sets or (with `None`) removes the acting tenant's provisioning key: a key follows
/// wazo-provd's rule ([`crate::files::valid_provisioning_key`]); a key another tenant has is
/// refused without saying which tenant has it.
pub fn set_provisioning_key(store: &Store, scope: &Scope, key: Option<String>) -> Result<()> {
    if key
        .as_deref()
        .is_some_and(|k| !crate::files::valid_provisioning_key(k))
    {
        return Err(ManageError::field(
            "param.value",
            format!(
                "a provisioning key has {}",
                crate::files::PROVISIONING_KEY_RULE
            ),
        ));
    }
    retry_on_conflict("tenant", || {
        let mut tenant = get(store, scope, scope.tenant())?;
        tenant.provisioning_key = key.clone();
        match store.update_tenant(&tenant) {
            Err(StoreError::Taken { .. }) => Err(ManageError::field(
                "param.value",
                "another tenant already uses this provisioning key",
            )),
            other => conflict_or(other.map(|_| ())),
        }
    })
}

/// Deletes the tenant `id` below the caller: never the root, never the credential's own
/// tenant, never one that still has child tenants, devices, configs, categories or rollouts
/// (codes and jobs belong to its categories).
pub fn delete(store: &Store, scope: &Scope, id: &str) -> Result<Tenant> {
    get(store, scope, id)?;
    if id == scope.root() {
        return Err(StoreError::NotDeletable {
            kind: "tenant",
            id: id.to_owned(),
        }
        .into());
    }
    if id == scope.home() {
        return Err(ManageError::Forbidden(format!(
            "a token cannot delete its own tenant {id:?}"
        )));
    }
    // Its provisioning records would outlive it, and a tenant created again under the same
    // id would inherit them.
    let categories = store
        .categories()?
        .iter()
        .filter(|c| c.tenant == id)
        .count();
    let rollouts = store.rollouts()?.iter().filter(|r| r.tenant == id).count();
    if categories + rollouts > 0 {
        return Err(StoreError::InUse {
            kind: "tenant",
            id: id.to_owned(),
            users: format!(
                "{categories} category(ies) and {rollouts} rollout(s); delete them first"
            ),
        }
        .into());
    }
    let gone = store.delete_tenant(id)?;
    tracing::info!(tenant = %id, "tenant deleted");
    Ok(gone)
}
