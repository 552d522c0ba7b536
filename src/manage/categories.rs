//! Categories: a tenant's groups of devices, with the config their devices inherit, a
//! firmware policy, and whether codes and automatic URLs may name them.

use std::collections::BTreeMap;

use super::{conflict_or, may_use, retry_on_conflict, ManageError, Result, Scope};
use crate::model::{Category, FirmwareTarget};
use crate::store::{Store, StoreError};

/// Characters in a category's name (automatic-provisioning URLs carry it).
pub const MAX_NAME_CHARS: usize = 128;

/// Models in one firmware policy or firmware job.
pub const MAX_FIRMWARE_MODELS: usize = 256;

/// What a client writes of a category.
#[derive(Debug, Clone, Default)]
pub struct CategorySpec {
    /// Name, unique in the tenant.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Config inherited by the category's devices.
    pub config: Option<String>,
    /// Firmware per model.
    pub firmware: BTreeMap<String, FirmwareTarget>,
    /// Whether codes and automatic URLs may name it.
    pub provisioning: bool,
}

fn not_found(id: &str) -> ManageError {
    ManageError::NotFound(format!("no category {id:?}"))
}

/// Checks a category name: what an admin types and a URL carries, encoded.
pub fn check_name(name: &str) -> Result<()> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ManageError::field(
            "name",
            format!("1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if name.chars().any(char::is_control) || name.trim() != name {
        return Err(ManageError::field(
            "name",
            "no control characters, no leading or trailing spaces",
        ));
    }
    Ok(())
}

/// Checks a written firmware map (policy or job).
pub fn check_firmware(field: &str, firmware: &BTreeMap<String, FirmwareTarget>) -> Result<()> {
    if firmware.len() > MAX_FIRMWARE_MODELS {
        return Err(ManageError::field(
            field,
            format!("at most {MAX_FIRMWARE_MODELS} models"),
        ));
    }
    for (model, target) in firmware {
        let bad = |what: &str| ManageError::field(format!("{field}.{model}"), what.to_owned());
        if model.is_empty() || model.len() > 64 || model.chars().any(char::is_control) {
            return Err(bad("a model is 1 to 64 printable characters"));
        }
        if target.version.is_empty() || target.version.len() > 64 {
            return Err(bad("version: 1 to 64 characters"));
        }
        if target.file.is_empty() || target.file.len() > 1024 {
            return Err(bad("file: 1 to 1024 characters"));
        }
    }
    Ok(())
}

fn check_spec(store: &Store, scope: &Scope, tenant: &str, spec: &CategorySpec) -> Result<()> {
    check_name(&spec.name)?;
    if let Some(d) = &spec.description {
        if d.chars().count() > 1024 {
            return Err(ManageError::field("description", "at most 1024 characters"));
        }
    }
    check_firmware("firmware", &spec.firmware)?;
    if let Some(id) = &spec.config {
        let usable = store
            .config(id)?
            .filter(|c| scope.reaches(&c.tenant) || scope.inherits(&c.tenant))
            .is_some_and(|c| may_use(scope.tree(), tenant, &c.tenant));
        if !usable {
            return Err(ManageError::field(
                "config",
                format!("no config {id:?} that devices of tenant {tenant:?} may use"),
            ));
        }
    }
    Ok(())
}

fn taken(e: StoreError, name: &str) -> ManageError {
    match e {
        StoreError::Taken { .. } => ManageError::field(
            "name",
            format!("the tenant already has a category named {name:?}"),
        ),
        e => e.into(),
    }
}

/// The category `id` of the caller's subtree.
pub fn get(store: &Store, scope: &Scope, id: &str) -> Result<Category> {
    match store.category(id)? {
        Some(c) if scope.reaches(&c.tenant) => Ok(c),
        _ => Err(not_found(id)),
    }
}

/// The category that a request names by id, or by name in the acting tenant.
pub fn find(store: &Store, scope: &Scope, id_or_name: &str) -> Result<Category> {
    if let Ok(found) = get(store, scope, id_or_name) {
        return Ok(found);
    }
    store
        .category_by_name(scope.tenant(), id_or_name)?
        .ok_or_else(|| not_found(id_or_name))
}

/// The categories of the acting tenant, or of its subtree with `recurse`, by tenant and name.
pub fn list(store: &Store, scope: &Scope, recurse: bool) -> Result<Vec<Category>> {
    let mut found: Vec<Category> = store
        .categories()?
        .into_iter()
        .filter(|c| scope.lists(&c.tenant, recurse))
        .collect();
    found.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
    Ok(found)
}

/// Creates a category in the acting tenant.
pub fn create(store: &Store, scope: &Scope, spec: CategorySpec) -> Result<Category> {
    check_spec(store, scope, scope.tenant(), &spec)?;
    let category = Category {
        id: crate::model::new_id(),
        tenant: scope.tenant().to_owned(),
        name: spec.name.clone(),
        description: spec.description,
        config: spec.config,
        firmware: spec.firmware,
        provisioning: spec.provisioning,
        revision: 0,
    };
    let created = store
        .create_category(&category)
        .map_err(|e| taken(e, &spec.name))?;
    tracing::info!(category = %created.id, tenant = %created.tenant, name = %created.name, "category created");
    Ok(created)
}

/// Replaces the writable fields of the category `id`.
pub fn update(store: &Store, scope: &Scope, id: &str, spec: CategorySpec) -> Result<Category> {
    retry_on_conflict("category", || {
        let mut category = get(store, scope, id)?;
        check_spec(store, scope, &category.tenant, &spec)?;
        category.name = spec.name.clone();
        category.description = spec.description.clone();
        category.config = spec.config.clone();
        category.firmware = spec.firmware.clone();
        category.provisioning = spec.provisioning;
        match store.update_category(&category) {
            Err(e @ StoreError::Taken { .. }) => Err(taken(e, &spec.name)),
            other => conflict_or(other),
        }
    })
}

/// Deletes the category `id` and its jobs; refused while live codes name it. Its devices keep
/// their config and lose the category's (the category id they keep names nothing).
pub fn delete(store: &Store, scope: &Scope, id: &str) -> Result<Category> {
    get(store, scope, id)?;
    let live = store.codes()?.iter().filter(|c| c.category == id).count();
    if live > 0 {
        return Err(ManageError::Store(StoreError::InUse {
            kind: "category",
            id: id.to_owned(),
            users: format!("{live} live provisioning code(s); revoke them first"),
        }));
    }
    let gone = store.delete_category(id)?;
    tracing::info!(category = %id, tenant = %gone.tenant, "category deleted");
    Ok(gone)
}
