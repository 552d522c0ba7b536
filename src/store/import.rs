//! Moving a store that provisiond wrote with sled (before 2026-12) into the fjall database,
//! once, at the first start of a newer provisiond. Both live at `<data_dir>/db`.
//!
//! The copy goes to `db.importing`. Once every tree's count matches and the copy is on disk,
//! the sled store is renamed `db.sled` (kept for a downgrade) and the copy takes its place.
//! A stop before that leaves the sled store as it was and the next start copies again; a stop
//! between the two renames is finished by the next start. Each start logs that `db.sled` can
//! be deleted while it is there. Schema migrations run afterwards on the copy, as on any store.

use std::path::Path;

use super::kv;
use super::{Result, StoreError};

/// Where the sled store goes once imported.
const SLED_KEPT: &str = "db.sled";
/// Where the copy is written.
const IMPORTING: &str = "db.importing";
/// Entries copied per transaction.
const BATCH: usize = 20_000;

/// Whether `dir` holds a sled store: sled's `conf` file, and not the fjall database's `data`.
fn is_sled(dir: &Path) -> bool {
    dir.join("conf").is_file() && !dir.join("data").exists()
}

/// Imports the sled store at `store_dir` (`<data_dir>/db`) if there is one.
pub(super) fn import_sled_if_any(data_dir: &Path, store_dir: &Path, cache_mib: u32) -> Result<()> {
    let kept = data_dir.join(SLED_KEPT);
    let importing = data_dir.join(IMPORTING);
    if !store_dir.exists() && kept.exists() && importing.exists() {
        // Stopped between the renames: the copy was whole and on disk before the first.
        rename(&importing, store_dir, data_dir)?;
    }
    if !is_sled(store_dir) {
        if kept.exists() {
            tracing::info!(
                path = %kept.display(),
                "the sled store imported by an earlier start is still there: delete it once \
                 you will not go back to a provisiond older than 2026-12"
            );
        }
        return Ok(());
    }
    let started = std::time::Instant::now();
    if importing.exists() {
        std::fs::remove_dir_all(&importing).map_err(|e| open_error(&importing, e.into()))?;
    }
    tracing::info!(path = %store_dir.display(), "importing the sled store");
    let copied = copy(store_dir, &importing, cache_mib)?;
    sync_dir(&importing)?;
    rename(store_dir, &kept, data_dir)?;
    rename(&importing, store_dir, data_dir)?;
    tracing::info!(
        entries = copied,
        seconds = started.elapsed().as_secs_f64(),
        kept = %kept.display(),
        "imported the sled store"
    );
    Ok(())
}

/// Renames `from` to `to`, durably.
fn rename(from: &Path, to: &Path, data_dir: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| open_error(to, e.into()))?;
    sync_dir(data_dir)
}

fn open_error(path: &Path, source: kv::OpenError) -> StoreError {
    StoreError::Open {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| open_error(dir, e.into()))
}

/// Copies every tree of the sled store at `from` into a new database at `to`, checks the
/// counts and makes the copy durable; returns the number of entries.
fn copy(from: &Path, to: &Path, cache_mib: u32) -> Result<u64> {
    let sled_error = |e: sled::Error| open_error(from, std::io::Error::other(e).into());
    // sled lets its lock go lazily after a process's last handle (spacejam/sled#1234): a
    // handle that this process has just dropped may hold it a few milliseconds longer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let old = loop {
        match sled::Config::new()
            .path(from)
            .cache_capacity(u64::from(cache_mib) * 1024 * 1024)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            opened => break opened.map_err(sled_error)?,
        }
    };
    let new = kv::Db::open(to, u64::from(cache_mib) * 1024 * 1024)
        .map_err(|source| open_error(to, source))?;
    let mut total = 0;
    for name in old.tree_names() {
        // sled's default tree: provisiond never wrote to it.
        if name.as_ref() == b"__sled__default" {
            continue;
        }
        let name = String::from_utf8_lossy(&name).into_owned();
        let source = old.open_tree(&name).map_err(sled_error)?;
        let target = super::open_tree(&new, &name)?;
        let mut batch = Vec::with_capacity(BATCH);
        let mut copied = 0u64;
        for item in source.iter() {
            let (key, value) = item.map_err(sled_error)?;
            batch.push((key, value));
            if batch.len() == BATCH {
                copied += write(&target, &mut batch)?;
            }
        }
        copied += write(&target, &mut batch)?;
        let held = target.count()? as u64;
        if held != copied {
            return Err(StoreError::Invalid(format!(
                "importing the sled store: tree {name} holds {held} entries after {copied} were copied"
            )));
        }
        total += copied;
    }
    // Written out to files and synced, so that the first open replays no journal.
    new.settle()?;
    Ok(total)
}

/// Writes `batch` into `tree` in one transaction and empties it.
fn write(tree: &kv::Tree, batch: &mut Vec<(sled::IVec, sled::IVec)>) -> Result<u64> {
    use kv::Transactional;
    let n = batch.len() as u64;
    tree.transaction(|tx| -> kv::ConflictableTransactionResult<(), StoreError> {
        for (key, value) in batch.iter() {
            tx.insert(key, value)?;
        }
        Ok(())
    })
    .map_err(|e| match e {
        kv::TransactionError::Abort(e) => e,
        kv::TransactionError::Storage(e) => StoreError::Kv(e),
    })?;
    batch.clear();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries of every tree of the database at `dir`, by tree.
    fn entries_of(db: &kv::Db, names: &[&str]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        names
            .iter()
            .map(|name| {
                let tree = db.open_tree(name).unwrap();
                tree.iter()
                    .map(|item| item.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                    .collect()
            })
            .collect()
    }

    /// Writes a sled store at `<data>/db` with more entries than a copy's batch; returns them.
    fn write_sled(data: &Path) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let db = sled::Config::new().path(data.join("db")).open().unwrap();
        let mut written = vec![Vec::new(), Vec::new()];
        for i in 0..(BATCH as u32 + 123) {
            let (key, value) = (format!("k{i:06}").into_bytes(), i.to_be_bytes().to_vec());
            db.open_tree("big")
                .unwrap()
                .insert(&key, value.clone())
                .unwrap();
            written[0].push((key, value));
        }
        db.open_tree("meta")
            .unwrap()
            .insert(b"schema_version", &6u32.to_be_bytes())
            .unwrap();
        written[1].push((b"schema_version".to_vec(), 6u32.to_be_bytes().to_vec()));
        db.flush().unwrap();
        written
    }

    #[test]
    fn a_sled_store_is_imported_once_and_kept_beside() {
        let data = tempfile::tempdir().unwrap();
        let written = write_sled(data.path());
        let store_dir = data.path().join("db");
        import_sled_if_any(data.path(), &store_dir, 8).unwrap();
        assert!(
            is_sled(&data.path().join(SLED_KEPT)),
            "the sled store is kept"
        );
        assert!(!is_sled(&store_dir));
        assert!(!data.path().join(IMPORTING).exists());
        let db = kv::Db::open_raw(data.path()).unwrap();
        assert_eq!(entries_of(&db, &["big", "meta"]), written);
        drop(db);
        // Once: the next start finds the database and leaves both alone.
        import_sled_if_any(data.path(), &store_dir, 8).unwrap();
        let db = kv::Db::open_raw(data.path()).unwrap();
        assert_eq!(entries_of(&db, &["big", "meta"]), written);
    }

    #[test]
    fn an_import_cut_short_is_done_again_or_finished() {
        // Stopped during the copy: what was copied is thrown away and copied again.
        let data = tempfile::tempdir().unwrap();
        let written = write_sled(data.path());
        let half = data.path().join(IMPORTING);
        let db = kv::Db::open(&half, 1 << 20).unwrap();
        db.open_tree("big").unwrap().insert(b"stale", b"x").unwrap();
        drop(db);
        let store_dir = data.path().join("db");
        import_sled_if_any(data.path(), &store_dir, 8).unwrap();
        let db = kv::Db::open_raw(data.path()).unwrap();
        assert_eq!(entries_of(&db, &["big", "meta"]), written);
        drop(db);

        // Stopped between the renames: the sled store is aside and the copy is whole.
        std::fs::rename(&store_dir, &half).unwrap();
        import_sled_if_any(data.path(), &store_dir, 8).unwrap();
        assert!(!half.exists());
        let db = kv::Db::open_raw(data.path()).unwrap();
        assert_eq!(entries_of(&db, &["big", "meta"]), written);
    }
}
