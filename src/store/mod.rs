//! The sled store: the only module that talks to sled.
//!
//! Values are JSON. Changes that touch several trees run in one sled transaction, and every
//! mutating method flushes the database before it returns, so a write that a caller
//! acknowledged survives a crash or power loss.

mod configs;
mod devices;
mod others;
mod schema;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError,
    TransactionalTree,
};
use sled::Tree;

pub use others::{AUTOCREATE_ROLE, AUTOPROV_CONFIG, BASE_CONFIG};
pub use schema::SCHEMA_VERSION;

/// Default size of sled's page cache, in MiB (`[general] store_cache_mib`).
pub const DEFAULT_CACHE_MIB: u32 = 64;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (missing permissions, locked by another process…).
    #[error(
        "cannot open the store at {path}: {source} (is another provisiond using this data_dir?)"
    )]
    Open {
        /// Database directory.
        path: PathBuf,
        /// sled's error.
        source: sled::Error,
    },
    /// An I/O or internal error from sled.
    #[error("store I/O error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value does not decode; the record is left untouched.
    #[error("corrupt record in tree {tree} at key {key:?}: {source}")]
    Corrupt {
        /// Tree name.
        tree: &'static str,
        /// Key, lossily decoded.
        key: String,
        /// Decoder error.
        source: serde_json::Error,
    },
    /// The store was written by a newer provisiond.
    #[error("the store has schema version {found}, this provisiond knows up to {supported}: upgrade provisiond or restore a backup")]
    SchemaTooNew {
        /// Version found in `meta`.
        found: u32,
        /// Highest version this build knows.
        supported: u32,
    },
    /// No record with that id.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// Record kind.
        kind: &'static str,
        /// Id asked for.
        id: String,
    },
    /// A record with that id already exists.
    #[error("{kind} {id:?} already exists")]
    AlreadyExists {
        /// Record kind.
        kind: &'static str,
        /// Conflicting id.
        id: String,
    },
    /// The record changed since the caller read it.
    #[error(
        "{kind} {id:?} was modified concurrently (expected revision {expected}, found {found})"
    )]
    Conflict {
        /// Record kind.
        kind: &'static str,
        /// Record id.
        id: String,
        /// Revision the caller read.
        expected: u64,
        /// Revision in the store.
        found: u64,
    },
    /// Another record already holds a unique value.
    #[error("{what} is already used by {kind} {owner:?}")]
    Taken {
        /// The value (`MAC 00:15:65:…`, `provisioning key`…).
        what: String,
        /// Kind of the owner.
        kind: &'static str,
        /// Id of the owner.
        owner: String,
    },
    /// A record that may not be written so (a tenant without a parent, a moved tenant…).
    #[error("{0}")]
    Invalid(String),
    /// A reference to a record that does not exist, or that would form a cycle.
    #[error("invalid reference: {0}")]
    InvalidReference(String),
    /// The record is still referenced by others.
    #[error("{kind} {id:?} is still used by {users}")]
    InUse {
        /// Record kind.
        kind: &'static str,
        /// Record id.
        id: String,
        /// Who uses it.
        users: String,
    },
    /// A device left the default tenant once; it can no longer change tenant (seed 002:
    /// delete it and let it be provisioned again instead).
    #[error("device {device:?} belongs to tenant {tenant:?} and cannot move to another tenant")]
    TenantLocked {
        /// Device id.
        device: String,
        /// Its tenant.
        tenant: String,
    },
    /// The record is built in.
    #[error("{kind} {id:?} cannot be deleted")]
    NotDeletable {
        /// Record kind.
        kind: &'static str,
        /// Record id.
        id: String,
    },
    /// An id that cannot be a store key.
    #[error(transparent)]
    InvalidId(#[from] crate::model::InvalidId),
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

type TxResult<T> = ConflictableTransactionResult<T, StoreError>;

/// Handle on the open database; cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    path: PathBuf,
    meta: Tree,
    devices: Tree,
    idx_mac: Tree,
    idx_ip: Tree,
    idx_cfg_devices: Tree,
    configs: Tree,
    cfg_children: Tree,
    tenants: Tree,
    idx_tenant_key: Tree,
    tokens: Tree,
    codes: Tree,
    leases: Tree,
    idx_lease_mac: Tree,
    plugins_state: Tree,
    tenant_tree: std::sync::Arc<TreeCache>,
    /// True while `meta` holds the lease index's settled mark (see `others::settle_lease_index`).
    lease_index_settled: std::sync::Arc<std::sync::RwLock<bool>>,
}

/// The last tenant tree read, dropped by every tenant write. `version` counts the writes, so
/// that a tree read while a write happened is never kept.
#[derive(Default)]
struct TreeCache {
    version: std::sync::atomic::AtomicU64,
    writing: std::sync::Mutex<()>,
    tree: std::sync::Mutex<Option<(u64, std::sync::Arc<crate::model::TenantTree>)>>,
}

impl Store {
    /// Opens (creating if needed) the database at `<data_dir>/db` and migrates its schema.
    pub fn open(data_dir: &Path) -> Result<Store> {
        Store::open_with_cache(data_dir, DEFAULT_CACHE_MIB)
    }

    /// [`Store::open`] with a page cache of `cache_mib` MiB.
    pub fn open_with_cache(data_dir: &Path, cache_mib: u32) -> Result<Store> {
        let path = data_dir.join("db");
        let db = sled::Config::new()
            .path(&path)
            // sled's default (1 GiB) let the daemon's memory grow with every record ever read.
            .cache_capacity(u64::from(cache_mib) * 1024 * 1024)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let tree = |name: &str| db.open_tree(name);
        let store = Store {
            meta: tree("meta")?,
            devices: tree("devices")?,
            idx_mac: tree("idx_mac")?,
            idx_ip: tree("idx_ip")?,
            idx_cfg_devices: tree("idx_cfg_devices")?,
            configs: tree("configs")?,
            cfg_children: tree("cfg_children")?,
            tenants: tree("tenants")?,
            idx_tenant_key: tree("idx_tenant_key")?,
            tokens: tree("tokens")?,
            codes: tree("codes")?,
            leases: tree("leases")?,
            idx_lease_mac: tree("idx_lease_mac")?,
            plugins_state: tree("plugins_state")?,
            tenant_tree: Default::default(),
            lease_index_settled: Default::default(),
            db,
            path,
        };
        store.migrate()?;
        others::settle_lease_index(&store)?;
        Ok(store)
    }

    /// Directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes everything to disk; called after every mutation and at shutdown.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(
        &self,
        tree: &Tree,
        name: &'static str,
        key: &[u8],
    ) -> Result<Option<T>> {
        tree.get(key)?
            .map(|bytes| decode(name, key, &bytes))
            .transpose()
    }

    fn list<T: DeserializeOwned>(&self, tree: &Tree, name: &'static str) -> Result<Vec<T>> {
        tree.iter()
            .map(|item| {
                let (key, value) = item?;
                decode(name, &key, &value)
            })
            .collect()
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain structs with string keys: serialization cannot fail.
    serde_json::to_vec(value).expect("store records serialize to JSON")
}

fn decode<T: DeserializeOwned>(tree: &'static str, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn tx_get<T: DeserializeOwned>(
    tree: &TransactionalTree,
    name: &'static str,
    key: &[u8],
) -> TxResult<Option<T>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(bytes) => decode(name, key, &bytes).map(Some).map_err(abort),
    }
}

fn abort(e: StoreError) -> ConflictableTransactionError<StoreError> {
    ConflictableTransactionError::Abort(e)
}

fn finish<T>(result: std::result::Result<T, TransactionError<StoreError>>) -> Result<T> {
    match result {
        Ok(value) => Ok(value),
        Err(TransactionError::Abort(e)) => Err(e),
        Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
    }
}

// Non-unique indexes (`idx_ip`, `cfg_children`) keep one entry per link, `key NUL id` → empty,
// plus a count under `key` itself. Adding or removing a link touches two keys whatever the
// number of links (thousands of phones behind one NAT address, thousands of configs under
// `base`), and a transaction can test "is there any link" without a scan. Keys and ids never
// contain NUL (ids are checked by `validate_id`, IP addresses are text).

fn link_key(key: &[u8], id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1 + id.len());
    out.extend_from_slice(key);
    out.push(0);
    out.extend_from_slice(id.as_bytes());
    out
}

fn decode_count(name: &'static str, key: &[u8], bytes: &[u8]) -> Result<u64> {
    let raw: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        tree: name,
        key: String::from_utf8_lossy(key).into_owned(),
        source: serde::de::Error::custom("a link count is 8 bytes"),
    })?;
    Ok(u64::from_be_bytes(raw))
}

/// Number of links under `key`, inside a transaction.
fn multi_count(tree: &TransactionalTree, name: &'static str, key: &[u8]) -> TxResult<u64> {
    match tree.get(key)? {
        Some(bytes) => decode_count(name, key, &bytes).map_err(abort),
        None => Ok(0),
    }
}

/// Links `id` under `key` (a non-unique index entry); idempotent.
fn multi_add(tree: &TransactionalTree, name: &'static str, key: &[u8], id: &str) -> TxResult<()> {
    let link = link_key(key, id);
    if tree.get(&link)?.is_none() {
        tree.insert(link, &[])?;
        let n = multi_count(tree, name, key)?;
        tree.insert(key, &(n + 1).to_be_bytes())?;
    }
    Ok(())
}

/// Unlinks `id` from `key`; idempotent.
fn multi_remove(
    tree: &TransactionalTree,
    name: &'static str,
    key: &[u8],
    id: &str,
) -> TxResult<()> {
    if tree.remove(link_key(key, id))?.is_some() {
        match multi_count(tree, name, key)? {
            0 | 1 => {
                tree.remove(key)?;
            }
            n => {
                tree.insert(key, &(n - 1).to_be_bytes())?;
            }
        }
    }
    Ok(())
}

impl Store {
    /// Ids linked under `key` in a non-unique index, sorted, at most `limit`.
    fn multi_list(&self, tree: &Tree, key: &[u8], limit: usize) -> Result<Vec<String>> {
        let mut prefix = key.to_vec();
        prefix.push(0);
        tree.scan_prefix(&prefix)
            .keys()
            .take(limit)
            .map(|k| Ok(String::from_utf8_lossy(&k?[prefix.len()..]).into_owned()))
            .collect()
    }

    /// Rebuilds a non-unique index from (key, id) pairs.
    fn multi_rebuild(
        &self,
        tree: &Tree,
        pairs: impl IntoIterator<Item = (Vec<u8>, String)>,
    ) -> Result<()> {
        tree.clear()?;
        let mut counts: std::collections::BTreeMap<Vec<u8>, u64> = Default::default();
        for (key, id) in pairs {
            if tree.insert(link_key(&key, &id), &[])?.is_none() {
                *counts.entry(key).or_default() += 1;
            }
        }
        for (key, n) in counts {
            tree.insert(key, &n.to_be_bytes())?;
        }
        Ok(())
    }
}

/// A fresh random generation stamp for a written record.
fn generation() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().0
}

/// Checks the caller's revision against the stored one and returns the next revision.
fn next_revision(kind: &'static str, id: &str, expected: u64, found: u64) -> Result<u64> {
    if expected == found {
        Ok(found + 1)
    } else {
        Err(StoreError::Conflict {
            kind,
            id: id.to_owned(),
            expected,
            found,
        })
    }
}
