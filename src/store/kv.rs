//! The key-value layer under the store: fjall's partitions and its single-writer transactions
//! behind the few operations the store uses, named as the store has always named them.
//!
//! fjall is a log-structured merge tree. A write appends to a journal and to an in-memory table,
//! which background threads turn into sorted, immutable files. So memory holds the block cache,
//! the memtables and each file's block index, whatever the number of keys. The store moved here
//! from sled 0.34, whose page table kept about 30 bytes per key in memory: 760 MB at a million
//! devices and leases (docs/architecture.md, Store).

use std::cell::RefCell;
use std::convert::Infallible;
use std::fs::File;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{PersistMode, TxKeyspace, TxPartitionHandle};

/// A key or a value as the store reads it.
pub type IVec = fjall::Slice;

/// An I/O or internal error of the key-value layer.
pub type KvError = fjall::Error;

/// Result of the key-value layer.
pub type KvResult<T> = Result<T, KvError>;

/// The longest key fjall takes.
const MAX_KEY: usize = u16::MAX as usize;

/// Refuses what fjall would panic on: an empty key or one over 64 KiB. The store's keys come
/// from validated ids and fixed prefixes, so this only turns a bug into an error.
fn checked(key: &[u8]) -> KvResult<&[u8]> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(KvError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "a store key must be 1 to {MAX_KEY} bytes long, not {}",
                key.len()
            ),
        )));
    }
    Ok(key)
}

/// Why a database did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another process (or another handle in this one) holds the directory.
    #[error("{} is locked by another process", .0.display())]
    Locked(PathBuf),
    /// The directory or its lock file could not be created or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// fjall refused the directory.
    #[error("{0}")]
    Kv(#[from] KvError),
}

/// The open database: fjall's keyspace and the lock that keeps other processes out.
#[derive(Clone)]
pub struct Db {
    open: Arc<Open>,
}

/// What every handle shares. fjall does not lock its directory, so this holds a lock for as long
/// as a handle lives. The keyspace is declared first, so it is dropped first: its drop waits for
/// fjall's background threads, and only then does the lock go.
struct Open {
    ks: TxKeyspace,
    _lock: nix::fcntl::Flock<File>,
}

/// Takes the exclusive lock of `dir` (a `LOCK` file in it) without waiting.
fn lock_dir(dir: &Path) -> Result<nix::fcntl::Flock<File>, OpenError> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
        |(_, errno)| match errno {
            nix::errno::Errno::EWOULDBLOCK => OpenError::Locked(dir.to_path_buf()),
            other => OpenError::Io(other.into()),
        },
    )
}

impl Db {
    /// Opens (creating if needed) the database in `dir` with a block cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Db, OpenError> {
        let lock = lock_dir(dir)?;
        let ks = fjall::Config::new(dir.join("data"))
            .cache_size(cache_bytes)
            // Memtables and journals are bounded so that memory and the replay after a crash
            // stay small; a full journal makes fjall flush its memtables to files.
            .max_write_buffer_size(32 * 1024 * 1024)
            .max_journaling_size(64 * 1024 * 1024)
            // Its files' descriptors, kept open: far more than a million devices make, and
            // few enough to leave the daemon's sockets room under a default limit of 1,024.
            .max_open_files(256)
            // Two cores: one thread each for flushing memtables and for compaction.
            .flush_workers(1)
            .compaction_workers(1)
            .open_transactional()?;
        Ok(Db {
            open: Arc::new(Open { ks, _lock: lock }),
        })
    }

    /// Opens the database of the store in `data_dir` as it is, without the store's schema
    /// checks, for tools and tests that inspect or damage it; the store must be closed.
    pub fn open_raw(data_dir: &Path) -> Result<Db, OpenError> {
        Db::open(&data_dir.join(super::STORE_DIR), 8 * 1024 * 1024)
    }

    /// Opens (creating if needed) the tree `name`.
    pub fn open_tree(&self, name: &str) -> KvResult<Tree> {
        self.open_tree_with(name, Self::options())
    }

    /// Opens (creating if needed) the tree `name`, read only by ranges and prefixes: without
    /// the bloom filters that spare a point read of a missing key its disk reads, kept in
    /// memory at 10 bits a key (14 MB for the index entries of a million devices).
    pub fn open_scanned_tree(&self, name: &str) -> KvResult<Tree> {
        self.open_tree_with(name, Self::options().bloom_filter_bits(None))
    }

    fn options() -> fjall::PartitionCreateOptions {
        fjall::PartitionCreateOptions::default().max_memtable_size(8 * 1024 * 1024)
    }

    fn open_tree_with(&self, name: &str, options: fjall::PartitionCreateOptions) -> KvResult<Tree> {
        // fjall asserts this (a panic): a name from elsewhere (an imported store) is an error.
        let fits = |c: char| c.is_ascii_alphanumeric() || "_-.#$".contains(c);
        if name.is_empty() || name.len() > 255 || !name.chars().all(fits) {
            return Err(KvError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{name:?} cannot name a tree: 1 to 255 of A-Z a-z 0-9 _ - . # $"),
            )));
        }
        Ok(Tree {
            part: self.open.ks.open_partition(name, options)?,
            open: Arc::clone(&self.open),
        })
    }

    /// Writes every tree's in-memory table to its files and waits, so that the next open has
    /// no journal to replay into memory; for a clean stop.
    pub fn settle(&self) -> KvResult<()> {
        for name in self.open.ks.list_partitions() {
            let part = self.open.ks.open_partition(&name, Self::options())?;
            part.inner().rotate_memtable_and_wait()?;
        }
        self.flush()
    }

    /// Makes every write committed before the call durable (an fsync of the journal).
    pub fn flush(&self) -> KvResult<()> {
        self.open.ks.persist(PersistMode::SyncData)
    }
}

/// What a transaction's trees need of fjall's write transaction, without its lifetime.
pub trait TxOps {
    /// See [`TransactionalTree::get`].
    fn get(&self, part: &TxPartitionHandle, key: &[u8]) -> KvResult<Option<IVec>>;
    /// See [`TransactionalTree::insert`].
    fn insert(&mut self, part: &TxPartitionHandle, key: &[u8], value: &[u8]);
    /// See [`TransactionalTree::remove`].
    fn take(&mut self, part: &TxPartitionHandle, key: &[u8]) -> KvResult<Option<IVec>>;
}

impl TxOps for fjall::WriteTransaction<'_> {
    fn get(&self, part: &TxPartitionHandle, key: &[u8]) -> KvResult<Option<IVec>> {
        fjall::WriteTransaction::get(self, part, key)
    }
    fn insert(&mut self, part: &TxPartitionHandle, key: &[u8], value: &[u8]) {
        fjall::WriteTransaction::insert(self, part, key, value)
    }
    fn take(&mut self, part: &TxPartitionHandle, key: &[u8]) -> KvResult<Option<IVec>> {
        fjall::WriteTransaction::take(self, part, key)
    }
}

/// Runs `f` in one write transaction and commits what it wrote unless it fails.
fn run<T, E>(
    ks: &TxKeyspace,
    f: impl for<'t> FnOnce(&'t RefCell<dyn TxOps + 't>) -> ConflictableTransactionResult<T, E>,
) -> Result<T, TransactionError<E>> {
    let tx = RefCell::new(ks.write_tx());
    match f(&tx) {
        Ok(value) => {
            tx.into_inner()
                .commit()
                .map_err(TransactionError::Storage)?;
            Ok(value)
        }
        // Dropping the transaction discards its writes.
        Err(ConflictableTransactionError::Abort(e)) => Err(TransactionError::Abort(e)),
        Err(ConflictableTransactionError::Storage(e)) => Err(TransactionError::Storage(e)),
    }
}

/// One tree (a fjall partition). Reads outside a transaction see every committed write;
/// writes outside one are transactions of their own, so a transaction's closure must not
/// make one: it would wait for the transaction it runs in.
#[derive(Clone)]
pub struct Tree {
    // Before `open`, so that the last handle drops the keyspace after its partitions.
    part: TxPartitionHandle,
    open: Arc<Open>,
}

/// Key-value pairs in key order, read a page at a time.
///
/// fjall's own iterators hold a snapshot that cannot move between threads, and the API streams
/// listings from one. This one holds only the bounds still to read and one page, and reads
/// each page with a new fjall iterator: like sled's, it sees writes made while it runs.
pub struct Iter {
    part: fjall::PartitionHandle,
    /// Where the next page starts.
    next: Bound<Vec<u8>>,
    /// Where the range ends; moved down by `next_back`.
    end: Bound<Vec<u8>>,
    page: std::collections::VecDeque<(IVec, IVec)>,
    /// Pairs the next page reads.
    page_len: usize,
    /// No key is left between `next` and `end`.
    drained: bool,
    /// A read failed: it was returned, and the iterator ends.
    failed: bool,
}

/// Pairs read by the first page, doubled by each next one up to [`LAST_PAGE`]: a merge of a
/// thousand tenants' ranges that needs a few keys of each reads a few keys of each, and a long
/// scan soon reads in large pages.
const FIRST_PAGE: usize = 8;
/// The largest page.
const LAST_PAGE: usize = 64;

impl Iter {
    fn new(part: &TxPartitionHandle, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>) -> Iter {
        Iter {
            part: part.inner().clone(),
            next: start,
            end,
            page: Default::default(),
            page_len: FIRST_PAGE,
            drained: false,
            failed: false,
        }
    }

    fn fill(&mut self) -> KvResult<()> {
        let range = (self.next.clone(), self.end.clone());
        for item in self.part.range::<Vec<u8>, _>(range).take(self.page_len) {
            self.page.push_back(item?);
        }
        match self.page.back() {
            Some((key, _)) if self.page.len() == self.page_len => {
                self.next = Bound::Excluded(key.to_vec())
            }
            _ => self.drained = true,
        }
        self.page_len = (self.page_len * 2).min(LAST_PAGE);
        Ok(())
    }

    /// The keys alone.
    pub fn keys(self) -> impl DoubleEndedIterator<Item = KvResult<IVec>> + Send {
        self.map(|item| item.map(|(key, _)| key))
    }
}

impl Iterator for Iter {
    type Item = KvResult<(IVec, IVec)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.page.is_empty() && !self.drained {
            if let Err(e) = self.fill() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        self.page.pop_front().map(Ok)
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if !self.drained {
            // The keys not read into a page yet come after the page's.
            let range = (self.next.clone(), self.end.clone());
            match self.part.range::<Vec<u8>, _>(range).next_back() {
                Some(Ok((key, value))) => {
                    self.end = Bound::Excluded(key.to_vec());
                    return Some(Ok((key, value)));
                }
                Some(Err(e)) => {
                    self.failed = true;
                    return Some(Err(e));
                }
                None => self.drained = true,
            }
        }
        self.page.pop_back().map(Ok)
    }
}

/// The first key after every key that starts with `prefix`; unbounded when there is none.
fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

fn owned(bound: Bound<&impl AsRef<[u8]>>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A compare-and-swap that found another value than the caller expected.
#[derive(Debug)]
pub struct CompareAndSwapError {
    /// The value the tree holds.
    pub current: Option<IVec>,
}

impl Tree {
    /// The value under `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> KvResult<Option<IVec>> {
        self.part.get(key)
    }

    /// Whether `key` holds a value.
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> KvResult<bool> {
        self.part.contains_key(key)
    }

    /// Sets `key` to `value`.
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> KvResult<()> {
        self.part.insert(checked(key.as_ref())?, value.as_ref())
    }

    /// Removes `key`; returns what it held.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> KvResult<Option<IVec>> {
        self.part.take(checked(key.as_ref())?)
    }

    /// Every pair, in key order.
    pub fn iter(&self) -> Iter {
        Iter::new(&self.part, Bound::Unbounded, Bound::Unbounded)
    }

    /// The pairs whose key is in `range`, in key order.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        Iter::new(
            &self.part,
            owned(range.start_bound()),
            owned(range.end_bound()),
        )
    }

    /// The pairs whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        let prefix = prefix.as_ref();
        Iter::new(
            &self.part,
            Bound::Included(prefix.to_vec()),
            prefix_end(prefix),
        )
    }

    /// The number of keys (a pass over them).
    pub fn count(&self) -> KvResult<usize> {
        let mut n = 0;
        for item in self.iter() {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Whether the tree holds no key.
    pub fn is_empty(&self) -> KvResult<bool> {
        self.part.inner().is_empty()
    }

    /// Sets `key` to `new` (or removes it with `None`) if it holds `old` (`None`: nothing).
    pub fn compare_and_swap(
        &self,
        key: impl AsRef<[u8]>,
        old: Option<impl AsRef<[u8]>>,
        new: Option<impl AsRef<[u8]>>,
    ) -> KvResult<Result<(), CompareAndSwapError>> {
        let key = checked(key.as_ref())?;
        let result = run(
            &self.open.ks,
            |tx| -> ConflictableTransactionResult<_, Infallible> {
                let mut tx = tx.borrow_mut();
                let current = tx.get(&self.part, key)?;
                if current.as_deref() != old.as_ref().map(|o| o.as_ref()) {
                    return Ok(Err(CompareAndSwapError { current }));
                }
                match &new {
                    Some(value) => tx.insert(&self.part, key, value.as_ref()),
                    None => {
                        tx.take(&self.part, key)?;
                    }
                }
                Ok(Ok(()))
            },
        );
        match result {
            Ok(outcome) => Ok(outcome),
            Err(TransactionError::Storage(e)) => Err(e),
            Err(TransactionError::Abort(never)) => match never {},
        }
    }
}

/// A tree inside a transaction.
pub struct TransactionalTree<'t> {
    tx: &'t RefCell<dyn TxOps + 't>,
    part: TxPartitionHandle,
}

impl TransactionalTree<'_> {
    /// The value under `key`, this transaction's writes included.
    pub fn get(&self, key: impl AsRef<[u8]>) -> KvResult<Option<IVec>> {
        self.tx.borrow().get(&self.part, key.as_ref())
    }

    /// Sets `key` to `value`.
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> KvResult<()> {
        let key = checked(key.as_ref())?;
        self.tx.borrow_mut().insert(&self.part, key, value.as_ref());
        Ok(())
    }

    /// Sets `key` to `value`; returns what it held.
    pub fn replace(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
    ) -> KvResult<Option<IVec>> {
        let old = self.get(key.as_ref())?;
        self.insert(key, value)?;
        Ok(old)
    }

    /// Removes `key`; returns what it held.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> KvResult<Option<IVec>> {
        let key = checked(key.as_ref())?;
        self.tx.borrow_mut().take(&self.part, key)
    }
}

/// Why a transaction's closure stopped.
pub enum ConflictableTransactionError<E> {
    /// The closure gave up; nothing it wrote is kept.
    Abort(E),
    /// The database failed.
    Storage(KvError),
}

impl<E> From<KvError> for ConflictableTransactionError<E> {
    fn from(e: KvError) -> Self {
        ConflictableTransactionError::Storage(e)
    }
}

/// What a transaction's closure returns.
pub type ConflictableTransactionResult<T, E> = Result<T, ConflictableTransactionError<E>>;

/// Why a transaction did not commit.
pub enum TransactionError<E> {
    /// The closure aborted with this error.
    Abort(E),
    /// The database failed.
    Storage(KvError),
}

/// Trees that a transaction can span: one [`Tree`] or a tuple of them. The closure runs once,
/// alone: fjall lets one write transaction run at a time, and readers see its writes all
/// at once when it commits.
pub trait Transactional {
    /// What the closure gets: a [`TransactionalTree`] per tree.
    type View<'t>;

    /// Runs `f` over the trees in one transaction.
    fn transaction<T, E>(
        &self,
        f: impl for<'t> FnOnce(&Self::View<'t>) -> ConflictableTransactionResult<T, E>,
    ) -> Result<T, TransactionError<E>>;
}

impl Transactional for Tree {
    type View<'t> = TransactionalTree<'t>;

    fn transaction<T, E>(
        &self,
        f: impl for<'t> FnOnce(&Self::View<'t>) -> ConflictableTransactionResult<T, E>,
    ) -> Result<T, TransactionError<E>> {
        run(&self.open.ks, |tx| {
            f(&TransactionalTree {
                tx,
                part: self.part.clone(),
            })
        })
    }
}

macro_rules! transactional_tuple {
    ($($tree:ident),+) => {
        impl Transactional for ($(transactional_tuple!(@tree $tree),)+) {
            type View<'t> = ($(transactional_tuple!(@view $tree),)+);

            fn transaction<T, E>(
                &self,
                f: impl for<'t> FnOnce(&Self::View<'t>) -> ConflictableTransactionResult<T, E>,
            ) -> Result<T, TransactionError<E>> {
                let ($($tree,)+) = *self;
                let ks = &transactional_tuple!(@first $($tree),+).open.ks;
                run(ks, |tx| {
                    f(&($(TransactionalTree { tx, part: $tree.part.clone() },)+))
                })
            }
        }
    };
    (@view $tree:ident) => { TransactionalTree<'t> };
    (@tree $tree:ident) => { &Tree };
    (@first $first:ident $(, $rest:ident)*) => { $first };
}

transactional_tuple!(a, b);
transactional_tuple!(a, b, c);
transactional_tuple!(a, b, c, d);
transactional_tuple!(a, b, c, d, e);
transactional_tuple!(a, b, c, d, e, f);
transactional_tuple!(a, b, c, d, e, f, g);
transactional_tuple!(a, b, c, d, e, f, g, h);

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(iter: impl Iterator<Item = KvResult<IVec>>) -> Vec<Vec<u8>> {
        iter.map(|k| k.unwrap().to_vec()).collect()
    }

    /// A tree of `n` keys `k0000`… and, around them, keys that prefixes must leave out.
    fn tree(n: usize) -> (tempfile::TempDir, Db, Tree, Vec<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), 1 << 20).unwrap();
        let tree = db.open_tree("t").unwrap();
        let all: Vec<Vec<u8>> = (0..n).map(|i| format!("k{i:04}").into_bytes()).collect();
        for key in &all {
            tree.insert(key, b"v").unwrap();
        }
        for key in [&b"a"[..], b"j\xff", b"l", b"k\xff\xff", b"\xff\xff"] {
            tree.insert(key, b"x").unwrap();
        }
        (dir, db, tree, all)
    }

    #[test]
    fn pages_read_every_key_in_order_once() {
        // More keys than a few pages of every size, so that the pages grow to their largest.
        let (_dir, _db, tree, all) = tree(2_000);
        assert_eq!(keys(tree.scan_prefix(b"k0").keys()), all[..1000]);
        assert_eq!(keys(tree.scan_prefix(b"k1").keys()), all[1000..]);
        assert_eq!(
            keys(tree.range(&b"k0100"[..]..&b"k0103"[..]).keys()),
            all[100..103]
        );
        assert_eq!(
            keys(tree.scan_prefix(b"k\xff").keys()),
            vec![b"k\xff\xff".to_vec()]
        );
        assert_eq!(
            keys(tree.scan_prefix(b"\xff").keys()),
            vec![b"\xff\xff".to_vec()]
        );
        assert_eq!(tree.count().unwrap(), 2_005);
    }

    #[test]
    fn reading_from_both_ends_meets_in_the_middle() {
        let (_dir, _db, tree, all) = tree(100);
        let mut iter = tree.scan_prefix(b"k0").keys();
        let mut front = Vec::new();
        let mut back = Vec::new();
        // Eight from the front fills the first page; the back then reads past it.
        for step in 0.. {
            let next = if step % 3 == 0 {
                iter.next_back()
            } else {
                iter.next()
            };
            match next {
                Some(k) if step % 3 == 0 => back.push(k.unwrap().to_vec()),
                Some(k) => front.push(k.unwrap().to_vec()),
                None => break,
            }
        }
        back.reverse();
        front.extend(back);
        assert_eq!(front, all);
        // The last key of a range, as the descending sort asks for it.
        let last = tree.range(&b"k0010"[..]..&b"k0020"[..]).keys().next_back();
        assert_eq!(last.unwrap().unwrap().to_vec(), b"k0019".to_vec());
    }

    #[test]
    fn an_iterator_sees_keys_written_after_its_current_page() {
        let (_dir, _db, tree, _) = tree(100);
        let mut iter = tree.scan_prefix(b"k0").keys();
        assert_eq!(iter.next().unwrap().unwrap().to_vec(), b"k0000".to_vec());
        tree.insert(b"k0099a", b"new").unwrap();
        tree.remove(b"k0050").unwrap();
        let rest = keys(iter);
        assert!(rest.contains(&b"k0099a".to_vec()));
        assert!(!rest.contains(&b"k0050".to_vec()));
    }

    #[test]
    fn keys_and_names_fjall_would_panic_on_are_errors() {
        let (_dir, db, tree, _) = tree(1);
        assert!(tree.insert(b"", b"v").is_err());
        assert!(tree.insert(vec![b'k'; MAX_KEY + 1], b"v").is_err());
        assert!(tree.insert(vec![b'k'; MAX_KEY], b"v").is_ok());
        assert!(tree.remove(b"").is_err());
        assert!(db.open_tree("").is_err());
        assert!(db.open_tree("no/slash").is_err());
        let failed = tree.transaction(|t| {
            t.insert(b"", b"v")?;
            Ok::<_, ConflictableTransactionError<()>>(())
        });
        assert!(matches!(failed, Err(TransactionError::Storage(_))));
    }

    #[test]
    fn an_aborted_transaction_writes_nothing_and_a_second_handle_is_refused() {
        let (dir, db, tree, _) = tree(1);
        let other = db.open_tree("other").unwrap();
        let aborted = (&tree, &other).transaction(|(t, o)| {
            t.insert(b"gone", b"1")?;
            o.insert(b"gone", b"1")?;
            assert_eq!(
                t.get(b"gone")?.as_deref(),
                Some(&b"1"[..]),
                "reads see the writes"
            );
            Err::<(), _>(ConflictableTransactionError::Abort("no"))
        });
        assert!(matches!(aborted, Err(TransactionError::Abort("no"))));
        assert_eq!(tree.get(b"gone").unwrap(), None);
        assert_eq!(other.get(b"gone").unwrap(), None);
        assert!(matches!(
            Db::open(dir.path(), 1 << 20),
            Err(OpenError::Locked(_))
        ));
        drop((db, tree, other));
        Db::open(dir.path(), 1 << 20).expect("the lock goes with the last handle");
    }
}
