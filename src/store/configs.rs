//! Provisioning configs and the parent → children index.

use super::kv::Transactional;
use super::kv::TransactionalTree;

use super::{
    abort, encode, finish, multi_add, multi_count, multi_remove, next_revision, tx_get, Result,
    Store, StoreError, TxResult,
};
use crate::model::{validate_id, Config};

const KIND: &str = "config";

/// The configs that [`Store::ensure_defaults`] creates and that stay undeletable.
fn is_builtin(id: &str) -> bool {
    id == super::BASE_CONFIG || id == super::AUTOPROV_CONFIG
}

/// Fails when a parent is missing, is the config itself, or has the config among its ancestors.
fn check_parents(configs: &TransactionalTree, config: &Config) -> TxResult<()> {
    // Each ancestor is read once, however many paths lead to it; the visited set also ends
    // the walk on a cycle that is already stored (written by hand or by an older bug).
    let mut visited = std::collections::HashSet::new();
    let mut pending: Vec<(String, &String)> =
        config.parent_ids.iter().map(|p| (p.clone(), p)).collect();
    while let Some((id, through)) = pending.pop() {
        if id == config.id {
            return Err(abort(StoreError::InvalidReference(format!(
                "config {:?} cannot inherit from itself (through {through:?})",
                config.id
            ))));
        }
        if !visited.insert(id.clone()) {
            continue;
        }
        let ancestor: Config = tx_get(configs, "configs", id.as_bytes())?.ok_or_else(|| {
            abort(StoreError::InvalidReference(format!(
                "parent config {id:?} of {:?} does not exist",
                config.id
            )))
        })?;
        pending.extend(ancestor.parent_ids.into_iter().map(|p| (p, through)));
    }
    Ok(())
}

impl Store {
    /// Stores a new config (revision 1); its parents must exist.
    pub fn create_config(&self, config: &Config) -> Result<Config> {
        validate_id(&config.id)?;
        let mut new = config.clone();
        new.revision = 1;
        new.generation = super::generation();
        let stored = finish((&self.configs, &self.cfg_children).transaction(
            |(configs, children)| {
                if configs.get(new.id.as_bytes())?.is_some() {
                    return Err(abort(StoreError::AlreadyExists {
                        kind: KIND,
                        id: new.id.clone(),
                    }));
                }
                check_parents(configs, &new)?;
                configs.insert(new.id.as_bytes(), encode(&new))?;
                for parent in &new.parent_ids {
                    multi_add(children, "cfg_children", parent.as_bytes(), &new.id)?;
                }
                Ok(new.clone())
            },
        ))?;
        self.flush()?;
        Ok(stored)
    }

    /// Replaces a config; `config.revision` must be the stored one. `deletable` is the
    /// written one, except that the built-in configs (`base`, `autoprov`) stay undeletable:
    /// rendering and autocreation need them.
    pub fn update_config(&self, config: &Config) -> Result<Config> {
        let stored = finish((&self.configs, &self.cfg_children).transaction(
            |(configs, children)| {
                let old: Config =
                    tx_get(configs, "configs", config.id.as_bytes())?.ok_or_else(|| {
                        abort(StoreError::NotFound {
                            kind: KIND,
                            id: config.id.clone(),
                        })
                    })?;
                let mut new = config.clone();
                new.revision = next_revision(KIND, &config.id, config.revision, old.revision)
                    .map_err(abort)?;
                new.generation = super::generation();
                if is_builtin(&new.id) {
                    new.deletable = false;
                }
                check_parents(configs, &new)?;
                configs.insert(new.id.as_bytes(), encode(&new))?;
                for parent in old
                    .parent_ids
                    .iter()
                    .filter(|p| !new.parent_ids.contains(p))
                {
                    multi_remove(children, "cfg_children", parent.as_bytes(), &new.id)?;
                }
                for parent in new
                    .parent_ids
                    .iter()
                    .filter(|p| !old.parent_ids.contains(p))
                {
                    multi_add(children, "cfg_children", parent.as_bytes(), &new.id)?;
                }
                Ok(new)
            },
        ))?;
        self.flush()?;
        Ok(stored)
    }

    /// Deletes a config that is deletable and has no children; returns what was deleted.
    pub fn delete_config(&self, id: &str) -> Result<Config> {
        self.remove_config(id, false)
    }

    /// [`Store::delete_config`], refused also while a device uses the config (checked in the
    /// same transaction: a device given the config meanwhile keeps it).
    pub fn delete_unused_config(&self, id: &str) -> Result<Config> {
        self.remove_config(id, true)
    }

    fn remove_config(&self, id: &str, unused: bool) -> Result<Config> {
        let trees = (&self.configs, &self.cfg_children, &self.idx_cfg_devices);
        let old = finish(trees.transaction(|(configs, children, devices)| {
            let old: Config = tx_get(configs, "configs", id.as_bytes())?.ok_or_else(|| {
                abort(StoreError::NotFound {
                    kind: KIND,
                    id: id.to_owned(),
                })
            })?;
            if !old.deletable {
                return Err(abort(StoreError::NotDeletable {
                    kind: KIND,
                    id: id.to_owned(),
                }));
            }
            let users = multi_count(children, "cfg_children", id.as_bytes())?;
            if users > 0 {
                return Err(abort(StoreError::InUse {
                    kind: KIND,
                    id: id.to_owned(),
                    users: format!("{users} child config(s)"),
                }));
            }
            let using = multi_count(devices, "idx_cfg_devices", id.as_bytes())?;
            if unused && using > 0 {
                return Err(abort(StoreError::InUse {
                    kind: KIND,
                    id: id.to_owned(),
                    users: format!("{using} device(s)"),
                }));
            }
            configs.remove(id.as_bytes())?;
            for parent in &old.parent_ids {
                multi_remove(children, "cfg_children", parent.as_bytes(), id)?;
            }
            Ok(old)
        }))?;
        self.flush()?;
        Ok(old)
    }

    /// The config with this id.
    pub fn config(&self, id: &str) -> Result<Option<Config>> {
        self.get(&self.configs, "configs", id.as_bytes())
    }

    /// Every config, by id.
    pub fn configs(&self) -> Result<Vec<Config>> {
        self.list(&self.configs, "configs")
    }

    /// Ids of the configs that list `id` among their parents, sorted.
    pub fn config_children(&self, id: &str) -> Result<Vec<String>> {
        self.multi_list(&self.cfg_children, id.as_bytes(), usize::MAX)
    }
}

/// Rebuilds the parent → children index from the config records.
pub(super) fn rebuild_indexes(store: &Store) -> Result<u64> {
    let pairs: Vec<(Vec<u8>, String)> = store
        .configs()?
        .into_iter()
        .flat_map(|c| {
            let id = c.id;
            c.parent_ids
                .into_iter()
                .map(move |p| (p.into_bytes(), id.clone()))
        })
        .collect();
    super::converge(&store.cfg_children, &[], None, super::link_entries(pairs))
}
