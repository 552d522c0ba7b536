//! Schema version in `meta` and the migrations between versions.
//!
//! Version 1 had the record trees only; version 2 added the derived index trees
//! (`cfg_children`, `idx_tenant_key`); version 3 stores the non-unique indexes (`idx_ip`,
//! `cfg_children`) as one key per link plus a count; version 4 adds the config → devices index
//! (`idx_cfg_devices`); version 5 the devices' per-tenant field indexes and counts (`idx_dev`,
//! `counts`); version 6 the devices' per-tenant state counts. Every step rebuilds every index
//! from the records. The tenant tree needs no step: [`Store::ensure_defaults`] gives every
//! tenant without a parent the default tenant as its parent, at every start.

use super::{Result, Store, StoreError};

/// Schema version written by this build.
pub const SCHEMA_VERSION: u32 = 6;

const VERSION_KEY: &[u8] = b"schema_version";

/// One step from version `n` to `n + 1`, at index `n - 1`.
type Migration = fn(&Store) -> Result<()>;

const MIGRATIONS: [Migration; (SCHEMA_VERSION - 1) as usize] =
    [rebuild_for_migration; (SCHEMA_VERSION - 1) as usize];

fn rebuild_for_migration(store: &Store) -> Result<()> {
    rebuild_all_indexes(store).map(drop)
}

/// Rebuilds every derived tree from the records; returns the index entries it wrote or removed.
pub(super) fn rebuild_all_indexes(store: &Store) -> Result<u64> {
    Ok(super::devices::rebuild_indexes(store)?
        + super::configs::rebuild_indexes(store)?
        + super::others::rebuild_indexes(store)?)
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
        self.meta.insert(VERSION_KEY, version.to_be_bytes())?;
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::{Config, Device, Lease, LeaseState, Mac, RawConfig, Tenant};

    fn mac(text: &str) -> Mac {
        text.parse().unwrap()
    }

    fn open_store(dir: &Path) -> Result<Store> {
        Store::open_retrying(dir)
    }

    /// The raw sled database where a provisiond before 2026-12 kept its store (`Store::open`
    /// imports it): stores of the older schema versions are written this way.
    fn raw_db(dir: &Path) -> sled::Db {
        sled::Config::new().path(dir.join("db")).open().unwrap()
    }

    fn set_raw_version(db: &sled::Db, version: u32) {
        db.open_tree("meta")
            .unwrap()
            .insert(VERSION_KEY, &version.to_be_bytes())
            .unwrap();
    }

    /// The version a store holds, read from its database after `Store::open` imported it.
    fn raw_version(dir: &Path) -> Option<Vec<u8>> {
        let db = crate::store::kv::Db::open(&dir.join(crate::store::STORE_DIR), 1 << 20).unwrap();
        db.open_tree("meta")
            .unwrap()
            .get(VERSION_KEY)
            .unwrap()
            .map(|v| v.to_vec())
    }

    fn put<T: serde::Serialize>(db: &sled::Db, tree: &str, key: &[u8], value: &T) {
        db.open_tree(tree)
            .unwrap()
            .insert(key, serde_json::to_vec(value).unwrap())
            .unwrap();
    }

    fn device(id: &str, mac_addr: &str, ip: &str) -> Device {
        let mut device = Device::new(id, "master");
        device.mac = Some(mac(mac_addr));
        device.ip = Some(ip.parse().unwrap());
        device.revision = 4;
        device
    }

    fn config(id: &str, parents: &[&str]) -> Config {
        Config {
            id: id.to_owned(),
            parent_ids: parents.iter().map(|p| p.to_string()).collect(),
            raw_config: RawConfig::new(),
            tenant: "master".to_owned(),
            deletable: true,
            transient: false,
            role: None,
            extra: Default::default(),
            generation: 0,
            revision: 2,
        }
    }

    fn tenant(id: &str, key: Option<&str>) -> Tenant {
        Tenant {
            id: id.to_owned(),
            name: id.to_owned(),
            // Stores of version 1 had no tenant tree.
            parent: None,
            provisioning_key: key.map(str::to_owned),
            default_config: None,
            auto_token: None,
            revision: 1,
        }
    }

    fn lease(ip: &str, mac_addr: &str) -> Lease {
        Lease {
            ip: ip.parse().unwrap(),
            mac: mac(mac_addr),
            client_id: None,
            hostname: None,
            starts: 100,
            ends: 200,
            state: LeaseState::Bound,
        }
    }

    struct V1 {
        devices: [Device; 3],
        configs: [Config; 3],
        tenants: [Tenant; 2],
        lease: Lease,
    }

    /// Writes a version 1 store: record trees only, no index tree.
    fn write_v1(dir: &Path) -> V1 {
        let v1 = V1 {
            devices: [
                device("d1", "00:15:65:00:00:01", "10.0.0.1"),
                device("d2", "00:15:65:00:00:02", "10.0.0.1"),
                device("d3", "00:15:65:00:00:03", "10.0.0.3"),
            ],
            configs: [
                config("base", &[]),
                config("site", &["base"]),
                config("room", &["base", "site"]),
            ],
            tenants: [tenant("master", None), tenant("t1", Some("key1"))],
            lease: lease("192.168.1.50", "00:15:65:00:00:01"),
        };
        let db = raw_db(dir);
        set_raw_version(&db, 1);
        for d in &v1.devices {
            put(&db, "devices", d.id.as_bytes(), d);
        }
        for c in &v1.configs {
            put(&db, "configs", c.id.as_bytes(), c);
        }
        for t in &v1.tenants {
            put(&db, "tenants", t.id.as_bytes(), t);
        }
        put(&db, "leases", &v1.lease.ip.octets(), &v1.lease);
        db.flush().unwrap();
        v1
    }

    fn check_v1_indexes(store: &Store, v1: &V1) {
        let [d1, d2, d3] = &v1.devices;
        for d in &v1.devices {
            assert_eq!(
                store.device_by_mac(&d.mac.unwrap()).unwrap().as_ref(),
                Some(d)
            );
        }
        assert_eq!(
            store.devices_by_ip(&"10.0.0.1".parse().unwrap()).unwrap(),
            vec![d1.clone(), d2.clone()]
        );
        assert_eq!(
            store.devices_by_ip(&"10.0.0.3".parse().unwrap()).unwrap(),
            vec![d3.clone()]
        );
        assert_eq!(store.config_children("base").unwrap(), ["room", "site"]);
        assert_eq!(store.config_children("site").unwrap(), ["room"]);
        assert!(store.config_children("room").unwrap().is_empty());
        assert_eq!(
            store.tenant_by_key("key1").unwrap().as_ref(),
            Some(&v1.tenants[1])
        );
        assert_eq!(
            store.lease_by_mac(&v1.lease.mac).unwrap().as_ref(),
            Some(&v1.lease)
        );
        // The records themselves are untouched, revisions included.
        assert_eq!(store.device("d1").unwrap().as_ref(), Some(d1));
        assert_eq!(store.config("room").unwrap().as_ref(), Some(&v1.configs[2]));
    }

    #[test]
    fn migrates_version_1_by_rebuilding_the_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = write_v1(dir.path());

        let store = open_store(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        check_v1_indexes(&store, &v1);

        // The migrated indexes are maintained like any other: d2 leaves the shared IP.
        let mut d2 = v1.devices[1].clone();
        d2.ip = None;
        store.update_device(&d2).unwrap();
        assert_eq!(
            store.devices_by_ip(&"10.0.0.1".parse().unwrap()).unwrap(),
            vec![v1.devices[0].clone()]
        );
        drop(store);

        // The new version is persisted.
        assert_eq!(
            raw_version(dir.path()),
            Some(SCHEMA_VERSION.to_be_bytes().to_vec())
        );
    }

    #[test]
    fn an_interrupted_migration_replaces_stale_index_entries() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = write_v1(dir.path());
        {
            // Half-written (or hand-edited) index entries left by an earlier attempt.
            let db = raw_db(dir.path());
            let idx_mac = db.open_tree("idx_mac").unwrap();
            idx_mac
                .insert(mac("00:15:65:00:00:01").octets(), b"d3".as_ref())
                .unwrap();
            idx_mac
                .insert(mac("00:15:65:00:00:99").octets(), b"gone".as_ref())
                .unwrap();
            put(&db, "idx_ip", b"10.0.0.9", &vec!["d1".to_owned()]);
            put(&db, "cfg_children", b"site", &vec!["base".to_owned()]);
            db.open_tree("idx_tenant_key")
                .unwrap()
                .insert(b"old-key", b"t1".as_ref())
                .unwrap();
            db.flush().unwrap();
        }
        let store = open_store(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        check_v1_indexes(&store, &v1);
        assert_eq!(
            store.device_by_mac(&mac("00:15:65:00:00:99")).unwrap(),
            None
        );
        assert!(store
            .devices_by_ip(&"10.0.0.9".parse().unwrap())
            .unwrap()
            .is_empty());
        assert_eq!(store.tenant_by_key("old-key").unwrap(), None);
    }

    fn open_err(dir: &Path) -> StoreError {
        match open_store(dir) {
            Ok(_) => panic!("the store opened"),
            Err(e) => e,
        }
    }

    #[test]
    fn refuses_a_newer_schema_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_db(dir.path());
            set_raw_version(&db, 99);
            db.flush().unwrap();
        }
        let err = open_err(dir.path());
        assert!(
            matches!(
                err,
                StoreError::SchemaTooNew {
                    found: 99,
                    supported: SCHEMA_VERSION
                }
            ),
            "{err:?}"
        );
        assert_eq!(raw_version(dir.path()), Some(99u32.to_be_bytes().to_vec()));
    }

    #[test]
    fn refuses_version_0_and_a_malformed_version() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_db(dir.path());
            set_raw_version(&db, 0);
            db.flush().unwrap();
        }
        let err = open_err(dir.path());
        assert!(
            matches!(&err, StoreError::Corrupt { tree: "meta", key, .. } if key == "schema_version"),
            "{err:?}"
        );
        assert_eq!(raw_version(dir.path()), Some(0u32.to_be_bytes().to_vec()));

        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_db(dir.path());
            db.open_tree("meta")
                .unwrap()
                .insert(VERSION_KEY, b"\x00\x02".as_ref())
                .unwrap();
            db.flush().unwrap();
        }
        let err = open_err(dir.path());
        assert!(
            matches!(&err, StoreError::Corrupt { tree: "meta", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_current_store_is_left_as_is() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
            store
                .create_device(&device("d1", "00:15:65:00:00:01", "10.0.0.1"))
                .unwrap();
        }
        let store = open_store(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(
            store
                .device_by_mac(&mac("00:15:65:00:00:01"))
                .unwrap()
                .map(|d| d.id),
            Some("d1".to_owned())
        );
    }

    #[test]
    fn after_migration_a_mac_points_at_its_most_recent_lease() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_db(dir.path());
            set_raw_version(&db, 1);
            // The newer lease has the lower address, so key order alone would pick the old one.
            let mut newer = lease("10.0.0.5", "00:15:65:00:00:09");
            newer.starts = 500;
            let older = lease("10.0.0.9", "00:15:65:00:00:09");
            for l in [&newer, &older] {
                put(&db, "leases", &l.ip.octets(), l);
            }
            db.flush().unwrap();
        }
        let store = open_store(dir.path()).unwrap();
        let found = store.lease_by_mac(&mac("00:15:65:00:00:09")).unwrap();
        assert_eq!(found.map(|l| l.ip.to_string()), Some("10.0.0.5".to_owned()));
    }

    #[test]
    fn version_4_indexes_the_devices_of_each_config() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_db(dir.path());
            set_raw_version(&db, 3);
            put(&db, "configs", b"line", &config("line", &[]));
            for id in ["a", "b"] {
                let mut d = device(id, &format!("00:15:65:00:00:0{id}"), "10.0.0.7");
                d.config = Some("line".into());
                put(&db, "devices", id.as_bytes(), &d);
            }
            db.flush().unwrap();
        }
        let store = open_store(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        assert_eq!(store.config_device_count("line").unwrap(), 2);
        assert!(matches!(
            store.delete_unused_config("line"),
            Err(StoreError::InUse { .. })
        ));
    }

    #[test]
    fn migrates_version_2_list_indexes_to_links() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = raw_db(dir.path());
            set_raw_version(&db, 2);
            let (a, b) = (
                device("a", "00:15:65:00:00:0a", "10.0.0.7"),
                device("b", "00:15:65:00:00:0b", "10.0.0.7"),
            );
            put(&db, "devices", b"a", &a);
            put(&db, "devices", b"b", &b);
            // Version 2 kept one JSON list per key.
            put(
                &db,
                "idx_ip",
                b"10.0.0.7",
                &vec!["a".to_owned(), "b".to_owned()],
            );
            put(&db, "configs", b"base", &config("base", &[]));
            put(&db, "configs", b"child", &config("child", &["base"]));
            put(&db, "cfg_children", b"base", &vec!["child".to_owned()]);
            db.flush().unwrap();
        }
        let store = open_store(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
        let at_ip: Vec<String> = store
            .devices_by_ip(&"10.0.0.7".parse().unwrap())
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(at_ip, vec!["a", "b"]);
        assert_eq!(
            store
                .devices_at_ip(&"10.0.0.7".parse().unwrap(), 1)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(store.config_children("base").unwrap(), vec!["child"]);
        // The count came over: base is in use until its only child leaves it.
        assert!(matches!(
            store.delete_config("base"),
            Err(StoreError::InUse { .. })
        ));
        let mut child = store.config("child").unwrap().unwrap();
        child.parent_ids.clear();
        store.update_config(&child).unwrap();
        assert!(store.config_children("base").unwrap().is_empty());
        store.delete_config("base").unwrap();
    }
}
