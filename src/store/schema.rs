//! Schema version in `meta` and the migrations between versions.
//!
//! Version 1 had the record trees only; version 2 added the derived index trees
//! (`cfg_children`, `idx_tenant_key`) and rebuilds every index from the records.

use super::{Result, Store, StoreError};

/// Schema version written by this build.
pub const SCHEMA_VERSION: u32 = 2;

const VERSION_KEY: &[u8] = b"schema_version";

/// One step from version `n` to `n + 1`, at index `n - 1`.
type Migration = fn(&Store) -> Result<()>;

const MIGRATIONS: [Migration; (SCHEMA_VERSION - 1) as usize] = [rebuild_all_indexes];

fn rebuild_all_indexes(store: &Store) -> Result<()> {
    super::devices::rebuild_indexes(store)?;
    super::configs::rebuild_indexes(store)?;
    super::others::rebuild_indexes(store)
}

impl Store {
    /// The schema version recorded in `meta` (`None` for a store never opened).
    pub fn schema_version(&self) -> Result<Option<u32>> {
        let Some(bytes) = self.meta.get(VERSION_KEY)? else {
            return Ok(None);
        };
        let raw: [u8; 4] = bytes.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            tree: "meta",
            key: "schema_version".to_owned(),
            source: serde::de::Error::custom(format!("{} bytes instead of 4", bytes.len())),
        })?;
        Ok(Some(u32::from_be_bytes(raw)))
    }

    fn set_schema_version(&self, version: u32) -> Result<()> {
        self.meta.insert(VERSION_KEY, &version.to_be_bytes())?;
        self.flush()
    }

    pub(super) fn migrate(&self) -> Result<()> {
        let Some(mut version) = self.schema_version()? else {
            return self.set_schema_version(SCHEMA_VERSION);
        };
        if version == 0 {
            return Err(StoreError::Corrupt {
                tree: "meta",
                key: "schema_version".to_owned(),
                source: serde::de::Error::custom("version 0 was never written by provisiond"),
            });
        }
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        while version < SCHEMA_VERSION {
            let step = MIGRATIONS[(version - 1) as usize];
            tracing::info!(
                from = version,
                to = version + 1,
                "migrating the store schema"
            );
            step(self)?;
            version += 1;
            // Recorded after each step, so that an interrupted migration resumes where it
            // stopped; every step is idempotent.
            self.set_schema_version(version)?;
        }
        Ok(())
    }
}
