//! The store: the only module that talks to the database (fjall, through [`kv`]).
//!
//! Values are JSON. Changes that touch several trees run in one transaction, and every
//! mutating method flushes the database before it returns, so a write that a caller
//! acknowledged survives a crash or power loss. Writers that flush at the same time share one
//! flush (group commit, [`Store::flush`]).

mod check;
mod configs;
mod devices;
mod history;
mod import;
mod index;
pub mod kv;
mod others;
mod prov;
mod schema;
mod sync_state;
mod users;

use std::path::{Path, PathBuf};

use kv::{
    ConflictableTransactionError, ConflictableTransactionResult, KvError, TransactionError,
    TransactionalTree, Tree,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use check::TreeCheck;
pub use history::{FactChange, Identification, Via, HISTORY_LEN};
pub use index::{DeviceState, Field, Ordered, DEVICE_STATES, FIELDS};
pub use kv::OpenError;
pub use others::{AUTOCREATE_ROLE, AUTOPROV_CONFIG, BASE_CONFIG, CODE_FORM_SECRET_LEN};
pub use schema::SCHEMA_VERSION;
pub use sync_state::{LastSync, Reason, SyncState, SyncStatus};

/// The database's directory under the data directory.
pub const STORE_DIR: &str = "db";

/// Default size of the database's block cache, in MiB (`[general] store_cache_mib`).
pub const DEFAULT_CACHE_MIB: u32 = 16;

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
        /// Why.
        source: kv::OpenError,
    },
    /// An I/O or internal error of the database.
    #[error("store I/O error: {0}")]
    Kv(#[from] KvError),
    /// A flush (fsync) failed: the writes it covered may not be durable.
    #[error("store flush failed: {0}")]
    Flush(std::sync::Arc<KvError>),
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
    /// The operating system's random source failed while a secret was being created.
    #[error("the OS random source failed: {0}")]
    Random(String),
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

type TxResult<T> = ConflictableTransactionResult<T, StoreError>;

/// Handle on the open database; cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Store {
    db: kv::Db,
    path: PathBuf,
    meta: Tree,
    devices: Tree,
    idx_mac: Tree,
    idx_ip: Tree,
    idx_cfg_devices: Tree,
    idx_dev: Tree,
    counts: Tree,
    configs: Tree,
    cfg_children: Tree,
    tenants: Tree,
    idx_tenant_key: Tree,
    tokens: Tree,
    users: Tree,
    codes: Tree,
    categories: Tree,
    idx_category_name: Tree,
    rollouts: Tree,
    jobs: Tree,
    leases: Tree,
    idx_lease_mac: Tree,
    plugins_state: Tree,
    sync_state: Tree,
    dev_history: Tree,
    tenant_tree: std::sync::Arc<TreeCache>,
    commit: std::sync::Arc<GroupCommit>,
    /// Where the lease MAC index stands against the leases (see `others::read_lease_index_mark`);
    /// lease writes hold it shared, the index's check and the settled mark exclusively.
    lease_index: std::sync::Arc<std::sync::RwLock<others::LeaseIndexState>>,
    /// What a pass over every lease saw while the index waited for its check, for the check.
    lease_pass: std::sync::Arc<std::sync::Mutex<Option<Vec<others::LeaseSeen>>>>,
}

/// The last tenant tree read, dropped by every tenant write. `version` counts the writes, so
/// that a tree read while a write happened is never kept.
#[derive(Default)]
struct TreeCache {
    version: std::sync::atomic::AtomicU64,
    writing: std::sync::Mutex<()>,
    tree: std::sync::Mutex<Option<(u64, std::sync::Arc<crate::model::TenantTree>)>>,
}

thread_local! {
    /// The store (its [`GroupCommit`]'s address) whose flushes this thread defers, and whether
    /// one was skipped since; see [`Store::defer_flushes`].
    static DEFERRING: std::cell::Cell<(usize, bool)> = const { std::cell::Cell::new((0, false)) };
}

/// While alive, the store's flushes on this thread are skipped; see [`Store::defer_flushes`].
#[must_use = "flushes are deferred only while the guard lives"]
pub struct DeferredFlushes {
    previous: (usize, bool),
}

impl DeferredFlushes {
    /// True when a write on this thread skipped its flush since the guard was made: the
    /// holder must flush before acting on it.
    pub fn skipped(&self) -> bool {
        DEFERRING.with(|d| d.get().1)
    }
}

impl Drop for DeferredFlushes {
    fn drop(&mut self) {
        DEFERRING.with(|d| d.set(self.previous));
    }
}

/// Group commit: writers that want their writes durable at the same time share one flush.
///
/// A caller's writes are in the journal, not yet synced, when it calls [`GroupCommit::sync`];
/// a flush that *started* after that makes them durable, and one that was already running
/// may not. So the caller needs flush number `started + 1`. One waiter at a time runs a flush
/// (the leader), the others sleep until a flush with their number or a later one has
/// finished: while a flush runs, every writer that arrives waits for the next one, which one
/// of them runs for all. N writers at once cost about two flushes, not N.
#[derive(Default)]
struct GroupCommit {
    state: std::sync::Mutex<CommitState>,
    finished: std::sync::Condvar,
    /// Flushes run.
    flushes: std::sync::atomic::AtomicU64,
    /// Calls that waited for a flush.
    requests: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct CommitState {
    /// Flushes started; flush number `started` may be running.
    started: u64,
    /// Whether a flush is running.
    running: bool,
    /// The number of the last flush that finished (they finish in order: one runs at a time).
    finished: u64,
    /// The number of the last flush that succeeded.
    succeeded: u64,
    /// The error of the last flush that failed.
    error: Option<std::sync::Arc<KvError>>,
}

impl GroupCommit {
    /// Returns once a flush that started after this call has succeeded, running it or
    /// waiting for the thread that does; the error of the flush this call needed otherwise.
    fn sync(&self, flush: impl Fn() -> kv::KvResult<()>) -> Result<(), std::sync::Arc<KvError>> {
        use std::sync::atomic::Ordering::Relaxed;
        let lock = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = lock();
        let needed = state.started + 1;
        // Counted under the lock, once `needed` is known: a request that `requests` shows has
        // chosen its flush (the group-commit test relies on it to make its grouping exact).
        self.requests.fetch_add(1, Relaxed);
        loop {
            if state.finished >= needed {
                // A later flush that succeeded covers a failed one: it started after it.
                return match &state.error {
                    Some(e) if state.succeeded < needed => Err(e.clone()),
                    _ => Ok(()),
                };
            }
            if state.running {
                state = self.finished.wait(state).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            state.running = true;
            state.started += 1;
            let number = state.started;
            drop(state);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&flush));
            self.flushes.fetch_add(1, Relaxed);
            state = lock();
            state.running = false;
            state.finished = number;
            let panic = match result {
                Ok(Ok(())) => {
                    state.succeeded = number;
                    None
                }
                Ok(Err(e)) => {
                    state.error = Some(std::sync::Arc::new(e));
                    None
                }
                // The waiters get an error rather than waiting forever for this flush.
                Err(payload) => {
                    let e = KvError::Io(std::io::Error::other("flush panicked"));
                    state.error = Some(std::sync::Arc::new(e));
                    Some(payload)
                }
            };
            self.finished.notify_all();
            if let Some(payload) = panic {
                drop(state);
                std::panic::resume_unwind(payload);
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database at `<data_dir>/db` and migrates its schema; a
    /// store that provisiond wrote there with sled (before 2026-12) is imported first.
    pub fn open(data_dir: &Path) -> Result<Store> {
        Store::open_with_cache(data_dir, DEFAULT_CACHE_MIB)
    }

    /// [`Store::open`] with a page cache of `cache_mib` MiB.
    pub fn open_with_cache(data_dir: &Path, cache_mib: u32) -> Result<Store> {
        let store = Store::open_deferring_lease_check(data_dir, cache_mib)?;
        store.check_lease_index()?;
        Ok(store)
    }

    /// [`Store::open_with_cache`] for the daemon: a lease MAC index that needs its check (see
    /// `others::read_lease_index_mark`) is not checked here but by
    /// [`Store::check_lease_index`], which the caller runs while it serves (a pass over every
    /// lease, a second at a million). Until it has run, a lookup by MAC may miss a lease whose
    /// index write an older provisiond's stop cut off; it never returns another client's lease
    /// (reads check the lease's MAC).
    pub fn open_deferring_lease_check(data_dir: &Path, cache_mib: u32) -> Result<Store> {
        let path = data_dir.join(STORE_DIR);
        import::import_sled_if_any(data_dir, &path, cache_mib)?;
        let db = kv::Db::open(&path, u64::from(cache_mib) * 1024 * 1024).map_err(|source| {
            StoreError::Open {
                path: path.clone(),
                source,
            }
        })?;
        let tree = |name: &str| open_tree(&db, name);
        let store = Store {
            meta: tree("meta")?,
            devices: tree("devices")?,
            idx_mac: tree("idx_mac")?,
            idx_ip: tree("idx_ip")?,
            idx_cfg_devices: tree("idx_cfg_devices")?,
            idx_dev: tree("idx_dev")?,
            counts: tree("counts")?,
            configs: tree("configs")?,
            cfg_children: tree("cfg_children")?,
            tenants: tree("tenants")?,
            idx_tenant_key: tree("idx_tenant_key")?,
            tokens: tree("tokens")?,
            users: tree("users")?,
            codes: tree("codes")?,
            categories: tree("categories")?,
            idx_category_name: tree("idx_category_name")?,
            rollouts: tree("rollouts")?,
            jobs: tree("jobs")?,
            leases: tree("leases")?,
            idx_lease_mac: tree("idx_lease_mac")?,
            plugins_state: tree("plugins_state")?,
            sync_state: tree("sync_state")?,
            dev_history: tree("dev_history")?,
            tenant_tree: Default::default(),
            commit: Default::default(),
            lease_index: Default::default(),
            lease_pass: Default::default(),
            db,
            path,
        };
        store.migrate()?;
        others::read_lease_index_mark(&store)?;
        crate::memory::release_freed();
        Ok(store)
    }

    /// [`Store::open`] for tests that reopen a store in the same process ([`retry_locked`]).
    #[cfg(test)]
    pub(crate) fn open_retrying(data_dir: &Path) -> Result<Store> {
        retry_locked(|| Store::open(data_dir))
    }

    /// Directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes every write this thread did before the call durable; called after every
    /// mutation and at shutdown. Concurrent callers share flushes: each waits for one that
    /// started after its call (group commit). Inside [`Store::defer_flushes`] on this thread,
    /// returns at once and leaves the flush to the guard's holder.
    pub fn flush(&self) -> Result<()> {
        let mine = std::sync::Arc::as_ptr(&self.commit) as usize;
        let deferred = DEFERRING.with(|d| {
            let (owner, _) = d.get();
            let deferred = owner == mine;
            if deferred {
                d.set((owner, true));
            }
            deferred
        });
        if deferred {
            return Ok(());
        }
        self.commit
            .sync(|| self.db.flush())
            .map_err(StoreError::Flush)
    }

    /// Until the guard is dropped, this thread's writes to this store skip their flush (the
    /// other threads' do not). For a caller that acts on none of those writes before its
    /// own [`Store::flush`]: the DHCP responder identifies a batch's lease events, flushes
    /// once, and only then sends the batch's answers.
    pub fn defer_flushes(&self) -> DeferredFlushes {
        let mine = std::sync::Arc::as_ptr(&self.commit) as usize;
        let previous = DEFERRING.with(|d| d.replace((mine, false)));
        DeferredFlushes { previous }
    }

    /// Flushes of the database done so far (fsyncs), shared by every handle of this store.
    pub fn flush_count(&self) -> u64 {
        self.commit
            .flushes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Calls of [`Store::flush`] that waited for a flush so far (deferred ones excluded):
    /// with [`Store::flush_count`], how well group commit batches.
    pub fn flush_requests(&self) -> u64 {
        self.commit
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
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

fn decode<'a, T: serde::Deserialize<'a>>(
    tree: &'static str,
    key: &[u8],
    bytes: &'a [u8],
) -> Result<T> {
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
        Err(TransactionError::Storage(e)) => Err(StoreError::Kv(e)),
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
        tree.insert(link, [])?;
        let n = multi_count(tree, name, key)?;
        tree.insert(key, (n + 1).to_be_bytes())?;
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
                tree.insert(key, (n - 1).to_be_bytes())?;
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
}

/// The entries of a non-unique index for (key, id) pairs: a link per distinct pair and, under
/// each key, the number of its links.
fn link_entries(mut pairs: Vec<(Vec<u8>, String)>) -> Vec<(Vec<u8>, Vec<u8>)> {
    pairs.sort_unstable();
    pairs.dedup();
    let mut entries = Vec::with_capacity(pairs.len() + pairs.len() / 8);
    for run in pairs.chunk_by(|a, b| a.0 == b.0) {
        let key = &run[0].0;
        entries.push((key.clone(), (run.len() as u64).to_be_bytes().to_vec()));
        entries.extend(run.iter().map(|(_, id)| (link_key(key, id), Vec::new())));
    }
    entries
}

/// Makes the entries of `tree` from `from` (included) to `to` (excluded; `None`: the end)
/// exactly `expected`, and returns the writes it took. One ordered read of the range, then an
/// insert for each entry missing or different and a removal for each one not expected: a
/// rebuild of an index that is nearly right writes nearly nothing, and a full one writes in
/// key order. Clearing the trees and refilling them in the records' order took eleven minutes
/// at a million devices with sled, whatever was wrong. Of equal keys in `expected`, the last
/// one wins, as when they are inserted in turn. Not for a tree that others write meanwhile
/// (repairs and migrations run alone).
fn converge(
    tree: &Tree,
    from: &[u8],
    to: Option<&[u8]>,
    mut expected: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<u64> {
    // Stable, so that of equal keys the last given stays last; `dedup_by` keeps the first of
    // a run, which takes the later one's value first.
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    expected.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            std::mem::swap(later, kept);
        }
        same
    });
    let mut wanted = expected.into_iter().peekable();
    let mut writes = 0;
    let range = match to {
        Some(to) => tree.range::<&[u8], _>(from..to),
        None => tree.range::<&[u8], _>(from..),
    };
    for item in range {
        let (key, value) = item?;
        while let Some((k, v)) = wanted.next_if(|(k, _)| k.as_slice() < key.as_ref()) {
            tree.insert(k, v)?;
            writes += 1;
        }
        match wanted.next_if(|(k, _)| k.as_slice() == key.as_ref()) {
            Some((_, v)) if v.as_slice() == value.as_ref() => {}
            Some((k, v)) => {
                tree.insert(k, v)?;
                writes += 1;
            }
            None => {
                tree.remove(&key)?;
                writes += 1;
            }
        }
    }
    for (k, v) in wanted {
        tree.insert(k, v)?;
        writes += 1;
    }
    Ok(writes)
}

/// For tests that reopen a store in the same process while a handle may still be going away
/// on another thread (a server task that has not finished yet): retries `open` while the
/// store is locked, for a bounded time.
#[cfg(test)]
pub(crate) fn retry_locked<T>(mut open: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(StoreError::Open {
                source: OpenError::Locked(_),
                ..
            }) if std::time::Instant::now() < deadline => std::thread::yield_now(),
            other => return other,
        }
    }
}

/// Trees that are only read by ranges and prefixes (see [`kv::Db::open_scanned_tree`]).
const SCANNED_TREES: &[&str] = &["idx_dev"];

/// Opens the tree `name` as the store keeps it.
fn open_tree(db: &kv::Db, name: &str) -> kv::KvResult<Tree> {
    if SCANNED_TREES.contains(&name) {
        db.open_scanned_tree(name)
    } else {
        db.open_tree(name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

    use proptest::prelude::*;

    /// Small keys and values, so that random trees and expectations share many keys. Keys
    /// are never empty: no store key is.
    fn entries() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        let byte = prop::sample::select(vec![0u8, 1, b'a', b'b', b'c']);
        let key = prop::collection::vec(byte.clone(), 1..3);
        let value = prop::collection::vec(byte, 0..3);
        prop::collection::vec((key, value), 0..40)
    }

    /// A range bound: empty (when `min_len` is 0) or one of three letters from `first`.
    fn bound(first: u8, min_len: usize) -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop::sample::select(vec![first, first + 1, first + 2]),
            min_len..2,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// What a tree holds after `converge` is the expected entries inside the range (of
        /// equal keys the last) and what it held outside; each write changed something.
        #[test]
        fn converge_leaves_exactly_the_expected_entries_in_its_range(
            held in entries(),
            expected in entries(),
            from in bound(b'a', 0),
            to in prop::option::of(bound(b'b', 1)),
        ) {
            prop_assume!(to.as_ref().is_none_or(|t| from <= *t));
            let dir = tempfile::tempdir().unwrap();
            let db = kv::Db::open(dir.path(), 1 << 20).unwrap();
            let tree = db.open_tree("t").unwrap();
            for (k, v) in &held {
                tree.insert(k, v).unwrap();
            }
            let before: BTreeMap<Vec<u8>, Vec<u8>> = tree
                .iter()
                .map(|i| i.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                .collect();
            let inside = |k: &[u8]| k >= &from[..] && to.as_ref().is_none_or(|t| k < &t[..]);
            let in_range: Vec<_> = expected.iter().filter(|(k, _)| inside(k)).cloned().collect();
            let mut want: BTreeMap<Vec<u8>, Vec<u8>> = before
                .iter()
                .filter(|(k, _)| !inside(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            // Later insertions of a key replace earlier ones: the last one wins.
            let wanted_in_range: BTreeMap<Vec<u8>, Vec<u8>> = in_range.iter().cloned().collect();
            want.extend(wanted_in_range.clone());
            let needed = before
                .iter()
                .filter(|(k, v)| inside(k) && wanted_in_range.get(*k) != Some(*v))
                .count()
                + wanted_in_range.keys().filter(|k| !before.contains_key(*k)).count();
            let writes = converge(&tree, &from, to.as_deref(), in_range).unwrap();
            let after: BTreeMap<Vec<u8>, Vec<u8>> = tree
                .iter()
                .map(|i| i.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                .collect();
            prop_assert_eq!(after, want);
            prop_assert_eq!(writes, needed as u64);
        }
    }

    #[test]
    fn link_entries_count_each_distinct_pair_once() {
        let pairs = vec![
            (b"k2".to_vec(), "b".to_owned()),
            (b"k1".to_vec(), "a".to_owned()),
            (b"k2".to_vec(), "a".to_owned()),
            (b"k2".to_vec(), "b".to_owned()),
        ];
        let entries: BTreeMap<Vec<u8>, Vec<u8>> = link_entries(pairs).into_iter().collect();
        let expected: BTreeMap<Vec<u8>, Vec<u8>> = [
            (b"k1".to_vec(), 1u64.to_be_bytes().to_vec()),
            (link_key(b"k1", "a"), vec![]),
            (b"k2".to_vec(), 2u64.to_be_bytes().to_vec()),
            (link_key(b"k2", "a"), vec![]),
            (link_key(b"k2", "b"), vec![]),
        ]
        .into_iter()
        .collect();
        assert_eq!(entries, expected);
    }

    #[test]
    fn writers_at_once_share_a_flush_that_started_after_their_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        const WRITERS: u64 = 16;
        let before = store.flush_count();
        // Opening the store asked for flushes of its own: the writers' requests come on top.
        let requests_before = store.flush_requests();
        // `written` counts writes done; a flush records in `durable` how many had been done
        // when it started, once it has finished: a writer is durable when `durable` reached
        // its own number.
        let written = AtomicU64::new(0);
        let durable = AtomicU64::new(0);
        let first = AtomicBool::new(true);
        let flush = || {
            let upto = written.load(SeqCst);
            // The first flush lasts until every writer waits behind it, so that what is
            // shared does not depend on the scheduler.
            if first.swap(false, SeqCst) {
                while store.flush_requests() < requests_before + WRITERS {
                    std::thread::yield_now();
                }
            }
            store.db.flush()?;
            durable.fetch_max(upto, SeqCst);
            Ok(())
        };
        std::thread::scope(|s| {
            for i in 0..WRITERS {
                let (store, written, durable, flush) = (&store, &written, &durable, &flush);
                s.spawn(move || {
                    store
                        .plugins_state
                        .insert(format!("writer-{i}"), [1])
                        .unwrap();
                    let mine = written.fetch_add(1, SeqCst) + 1;
                    store.commit.sync(flush).unwrap();
                    assert!(
                        durable.load(SeqCst) >= mine,
                        "writer {i} returned before a flush covering its write"
                    );
                });
            }
        });
        // The first writer's flush, then one for the 15 that arrived while it ran.
        assert_eq!(store.flush_count() - before, 2);
        assert_eq!(durable.load(SeqCst), WRITERS);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        for i in 0..WRITERS {
            assert!(store
                .plugins_state
                .get(format!("writer-{i}"))
                .unwrap()
                .is_some());
        }
    }

    #[test]
    fn every_store_write_asks_for_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (flushes, requests) = (store.flush_count(), store.flush_requests());
        std::thread::scope(|s| {
            for t in 0..8 {
                let store = &store;
                s.spawn(move || {
                    for i in 0..25 {
                        let value = serde_json::json!(i);
                        store.set_param(&format!("p{t}-{i}"), Some(&value)).unwrap();
                    }
                });
            }
        });
        let (flushes, requests) = (
            store.flush_count() - flushes,
            store.flush_requests() - requests,
        );
        assert_eq!(requests, 200, "every write asked for its flush");
        eprintln!("{requests} writes from 8 threads, {flushes} flushes");
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.param("p7-24").unwrap(), Some(serde_json::json!(24)));
    }

    #[test]
    fn a_failed_flush_fails_the_writers_that_needed_it_and_not_later_ones() {
        let commit = GroupCommit::default();
        let failing = || Err(KvError::Io(std::io::Error::other("disk gone")));
        let error = commit.sync(failing).unwrap_err();
        assert!(matches!(&*error, KvError::Io(e) if e.to_string() == "disk gone"));
        assert!(commit.sync(|| Ok(())).is_ok(), "the next flush succeeds");
        assert_eq!(commit.flushes.load(SeqCst), 2);
    }

    #[test]
    fn deferred_flushes_are_skipped_on_this_thread_for_this_store_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("a")).unwrap();
        let other = Store::open(&dir.path().join("b")).unwrap();
        let value = serde_json::json!("x");
        let before = store.flush_count();
        {
            let deferred = store.defer_flushes();
            assert!(!deferred.skipped());
            store.set_param("locale", Some(&value)).unwrap();
            assert!(deferred.skipped());
            assert_eq!(store.flush_count(), before, "the holder flushes");
            // Another thread's writes are not deferred.
            std::thread::scope(|s| {
                s.spawn(|| store.set_param("NAT", Some(&value)).unwrap());
            });
            assert_eq!(store.flush_count(), before + 1);
            // Nor are another store's.
            let other_before = other.flush_count();
            other.set_param("locale", Some(&value)).unwrap();
            assert_eq!(other.flush_count(), other_before + 1);
        }
        store.set_param("locale", None).unwrap();
        assert_eq!(
            store.flush_count(),
            before + 2,
            "flushes again after the guard"
        );
    }
}
