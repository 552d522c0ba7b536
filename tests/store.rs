//! Integration tests of the store through its public API.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use provisiond::model::{Code, Config, Device, Lease, LeaseState, Mac, RawConfig, Tenant, Token};
use provisiond::store::{Store, StoreError, SCHEMA_VERSION};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn open() -> (TempDir, Store) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path()).expect("open a new store");
    (dir, store)
}

/// Opens the store again after an earlier handle on the same directory was dropped.
fn reopen(dir: &Path) -> Store {
    common::retry_locked(|| Store::open(dir))
}

/// The raw database of a store whose handles were dropped.
fn raw_db(dir: &Path) -> provisiond::store::kv::Db {
    common::retry_locked(|| provisiond::store::kv::Db::open_raw(dir))
}

fn mac(text: &str) -> Mac {
    text.parse().expect("valid MAC")
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("valid IP")
}

fn device(id: &str, mac_addr: Option<&str>, ip_addr: Option<&str>) -> Device {
    let mut device = Device::new(id, "master");
    device.mac = mac_addr.map(mac);
    device.ip = ip_addr.map(ip);
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
        revision: 0,
    }
}

fn tenant(id: &str, key: Option<&str>) -> Tenant {
    Tenant {
        id: id.to_owned(),
        name: format!("Tenant {id}"),
        parent: (id != "master").then(|| "master".to_owned()),
        provisioning_key: key.map(str::to_owned),
        default_config: None,
        auto_token: None,
        revision: 0,
    }
}

fn token(hash: &str) -> Token {
    Token {
        hash: hash.to_owned(),
        tenant: "master".to_owned(),
        acl: vec!["dev_mgr.read".to_owned()],
        created: 1_700_000_000,
        expires: Some(1_800_000_000),
        description: Some("test token".to_owned()),
    }
}

fn code(digits: &str) -> Code {
    Code {
        code: digits.to_owned(),
        tenant: "master".to_owned(),
        category: "desk".to_owned(),
        config: Some("autoprov".to_owned()),
        label: None,
        rollout: None,
        created: 1_700_000_000,
        expires: 1_800_000_000,
    }
}

fn lease(addr: &str, mac_addr: &str) -> Lease {
    Lease {
        ip: addr.parse().expect("valid IPv4"),
        mac: mac(mac_addr),
        client_id: None,
        hostname: Some("phone".to_owned()),
        starts: 1_700_000_000,
        ends: 1_700_003_600,
        state: LeaseState::Bound,
    }
}

fn v4(text: &str) -> Ipv4Addr {
    text.parse().expect("valid IPv4")
}

fn ids(devices: Vec<Device>) -> Vec<String> {
    devices.into_iter().map(|d| d.id).collect()
}

fn by_mac_id(store: &Store, mac_addr: &str) -> Option<String> {
    store
        .device_by_mac(&mac(mac_addr))
        .expect("device_by_mac")
        .map(|d| d.id)
}

fn by_ip_ids(store: &Store, ip_addr: &str) -> Vec<String> {
    ids(store.devices_by_ip(&ip(ip_addr)).expect("devices_by_ip"))
}

fn children(store: &Store, id: &str) -> Vec<String> {
    store.config_children(id).expect("config_children")
}

const M1: &str = "00:15:65:00:00:01";
const M2: &str = "00:15:65:00:00:02";
const M3: &str = "00:15:65:00:00:03";
const IP1: &str = "10.0.0.1";
const IP2: &str = "10.0.0.2";

// ---------------------------------------------------------------------------------------------
// Devices
// ---------------------------------------------------------------------------------------------

#[test]
fn device_crud() {
    let (_dir, store) = open();
    let mut input = device("d1", Some(M1), Some(IP1));
    input.revision = 7; // ignored on create
    let created = store.create_device(&input).unwrap();
    assert_eq!(created.revision, 1);
    assert_eq!(created.mac, Some(mac(M1)));
    assert_eq!(store.device("d1").unwrap(), Some(created.clone()));
    assert_eq!(store.devices().unwrap(), vec![created.clone()]);
    assert_eq!(store.device_count(), 1);

    let err = store
        .create_device(&device("d1", Some(M2), None))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { kind: "device", id } if id == "d1"),
        "{err:?}"
    );
    // The refused create did not touch the existing record nor claim its MAC.
    assert_eq!(store.device("d1").unwrap(), Some(created.clone()));
    assert_eq!(by_mac_id(&store, M2), None);

    let mut change = created.clone();
    change.description = Some("front desk".to_owned());
    change.vendor = Some("Yealink".to_owned());
    let updated = store.update_device(&change).unwrap();
    assert_eq!(updated.revision, 2);
    assert_eq!(updated.description.as_deref(), Some("front desk"));
    assert_eq!(store.device("d1").unwrap(), Some(updated.clone()));

    let err = store
        .update_device(&device("nope", None, None))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "device", id } if id == "nope"),
        "{err:?}"
    );
    assert_eq!(store.device("nope").unwrap(), None);

    let deleted = store.delete_device("d1").unwrap();
    assert_eq!(deleted, updated);
    assert_eq!(store.device("d1").unwrap(), None);
    assert!(store.devices().unwrap().is_empty());
    assert_eq!(store.device_count(), 0);
    let err = store.delete_device("d1").unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "device", id } if id == "d1"),
        "{err:?}"
    );
}

#[test]
fn device_indexes_follow_updates_and_deletes() {
    let (_dir, store) = open();
    let d1 = store
        .create_device(&device("d1", Some(M1), Some(IP1)))
        .unwrap();
    assert_eq!(by_mac_id(&store, M1).as_deref(), Some("d1"));
    assert_eq!(by_ip_ids(&store, IP1), ["d1"]);

    // Change both MAC and IP.
    let mut change = d1.clone();
    change.mac = Some(mac(M2));
    change.ip = Some(ip(IP2));
    let d1 = store.update_device(&change).unwrap();
    assert_eq!(by_mac_id(&store, M1), None);
    assert_eq!(by_mac_id(&store, M2).as_deref(), Some("d1"));
    assert!(by_ip_ids(&store, IP1).is_empty());
    assert_eq!(by_ip_ids(&store, IP2), ["d1"]);
    // The index returns the current record, not a stale copy.
    assert_eq!(store.device_by_mac(&mac(M2)).unwrap(), Some(d1.clone()));

    // The old MAC is free again for another device.
    store
        .create_device(&device("d2", Some(M1), None))
        .expect("a released MAC can be reused");
    assert_eq!(by_mac_id(&store, M1).as_deref(), Some("d2"));

    // An update that keeps MAC and IP keeps the index entries.
    let mut change = d1.clone();
    change.model = Some("T54W".to_owned());
    let d1 = store.update_device(&change).unwrap();
    assert_eq!(by_mac_id(&store, M2).as_deref(), Some("d1"));
    assert_eq!(by_ip_ids(&store, IP2), ["d1"]);

    // Clearing MAC and IP removes the entries.
    let mut change = d1.clone();
    change.mac = None;
    change.ip = None;
    let d1 = store.update_device(&change).unwrap();
    assert_eq!(by_mac_id(&store, M2), None);
    assert!(by_ip_ids(&store, IP2).is_empty());

    // Setting them again adds them back; delete removes them.
    let mut change = d1.clone();
    change.mac = Some(mac(M3));
    change.ip = Some(ip(IP1));
    store.update_device(&change).unwrap();
    assert_eq!(by_mac_id(&store, M3).as_deref(), Some("d1"));
    assert_eq!(by_ip_ids(&store, IP1), ["d1"]);
    store.delete_device("d1").unwrap();
    assert_eq!(by_mac_id(&store, M3), None);
    assert!(by_ip_ids(&store, IP1).is_empty());
    // The other device is untouched.
    assert_eq!(by_mac_id(&store, M1).as_deref(), Some("d2"));
}

#[test]
fn devices_sharing_an_ip_are_all_returned() {
    let (_dir, store) = open();
    // Created out of order: the index returns them by id.
    store
        .create_device(&device("d2", Some(M2), Some(IP1)))
        .unwrap();
    let d1 = store
        .create_device(&device("d1", Some(M1), Some(IP1)))
        .unwrap();
    store
        .create_device(&device("d3", Some(M3), Some(IP2)))
        .unwrap();
    assert_eq!(by_ip_ids(&store, IP1), ["d1", "d2"]);
    assert_eq!(by_ip_ids(&store, IP2), ["d3"]);
    // IPv6 addresses are indexed too.
    assert!(by_ip_ids(&store, "fe80::1").is_empty());

    // Moving one device away keeps the other.
    let mut change = d1;
    change.ip = Some(ip(IP2));
    store.update_device(&change).unwrap();
    assert_eq!(by_ip_ids(&store, IP1), ["d2"]);
    assert_eq!(by_ip_ids(&store, IP2), ["d1", "d3"]);

    store.delete_device("d3").unwrap();
    assert_eq!(by_ip_ids(&store, IP2), ["d1"]);
    store.delete_device("d2").unwrap();
    assert!(by_ip_ids(&store, IP1).is_empty());
}

#[test]
fn device_update_with_a_stale_revision_conflicts() {
    let (_dir, store) = open();
    let v1 = store
        .create_device(&device("d1", Some(M1), Some(IP1)))
        .unwrap();
    let mut first = v1.clone();
    first.description = Some("first".to_owned());
    let v2 = store.update_device(&first).unwrap();
    assert_eq!(v2.revision, 2);

    // A writer still holding revision 1 tries to change everything.
    let mut stale = v1.clone();
    stale.description = Some("stale".to_owned());
    stale.mac = Some(mac(M2));
    stale.ip = Some(ip(IP2));
    let err = store.update_device(&stale).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Conflict { kind: "device", id, expected: 1, found: 2 } if id == "d1"
        ),
        "{err:?}"
    );
    assert_eq!(store.device("d1").unwrap(), Some(v2.clone()));
    assert_eq!(by_mac_id(&store, M1).as_deref(), Some("d1"));
    assert_eq!(by_mac_id(&store, M2), None);
    assert_eq!(by_ip_ids(&store, IP1), ["d1"]);
    assert!(by_ip_ids(&store, IP2).is_empty());

    // A revision from the future is refused as well.
    let mut future = v2.clone();
    future.revision = 5;
    assert!(matches!(
        store.update_device(&future),
        Err(StoreError::Conflict {
            expected: 5,
            found: 2,
            ..
        })
    ));
    assert_eq!(store.device("d1").unwrap(), Some(v2));
}

#[test]
fn concurrent_updates_of_one_revision_let_exactly_one_win() {
    let (_dir, store) = open();
    let v1 = store.create_device(&device("d1", None, None)).unwrap();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let store = store.clone();
                let mut change = v1.clone();
                change.description = Some(format!("writer {n}"));
                scope.spawn(move || store.update_device(&change))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&Device> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for result in &results {
        if let Err(err) = result {
            assert!(
                matches!(
                    err,
                    StoreError::Conflict {
                        expected: 1,
                        found: 2,
                        ..
                    }
                ),
                "{err:?}"
            );
        }
    }
    assert_eq!(store.device("d1").unwrap().as_ref(), Some(winners[0]));
    assert_eq!(winners[0].revision, 2);
}

#[test]
fn concurrent_creates_with_one_mac_let_exactly_one_win() {
    let (_dir, store) = open();
    let results: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let store = store.clone();
                scope.spawn(move || store.create_device(&device(&format!("d{n}"), Some(M1), None)))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners: Vec<&Device> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().err())
        .all(|e| matches!(e, StoreError::Taken { kind: "device", .. })));
    assert_eq!(store.device_count(), 1);
    assert_eq!(by_mac_id(&store, M1), Some(winners[0].id.clone()));
}

#[test]
fn device_update_to_a_taken_mac_rolls_back_everything() {
    let (_dir, store) = open();
    let d1 = store
        .create_device(&device("d1", Some(M1), Some(IP1)))
        .unwrap();
    let d2 = store
        .create_device(&device("d2", Some(M2), Some(IP2)))
        .unwrap();

    // d2 wants d1's MAC (and a new IP and description): the record is written first inside
    // the transaction, the old MAC entry removed, then the MAC check aborts.
    let mut change = d2.clone();
    change.mac = Some(mac(M1));
    change.ip = Some(ip("10.0.0.99"));
    change.description = Some("should not stick".to_owned());
    let err = store.update_device(&change).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Taken { kind: "device", owner, what } if owner == "d1" && what.contains(M1)
        ),
        "{err:?}"
    );

    assert_eq!(store.device("d2").unwrap(), Some(d2.clone()));
    assert_eq!(store.device("d1").unwrap(), Some(d1.clone()));
    assert_eq!(by_mac_id(&store, M2).as_deref(), Some("d2"));
    assert_eq!(by_mac_id(&store, M1).as_deref(), Some("d1"));
    assert_eq!(by_ip_ids(&store, IP2), ["d2"]);
    assert_eq!(by_ip_ids(&store, IP1), ["d1"]);
    assert!(by_ip_ids(&store, "10.0.0.99").is_empty());

    // The unchanged revision still works afterwards.
    let mut ok = d2.clone();
    ok.mac = Some(mac(M3));
    assert_eq!(store.update_device(&ok).unwrap().revision, 2);
    assert_eq!(by_mac_id(&store, M3).as_deref(), Some("d2"));
    assert_eq!(by_mac_id(&store, M2), None);
}

#[test]
fn device_create_with_a_taken_mac_leaves_nothing() {
    let (_dir, store) = open();
    let d1 = store
        .create_device(&device("d1", Some(M1), Some(IP1)))
        .unwrap();
    let err = store
        .create_device(&device("d2", Some(M1), Some(IP1)))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Taken { kind: "device", owner, .. } if owner == "d1"),
        "{err:?}"
    );
    assert_eq!(store.device("d2").unwrap(), None);
    assert_eq!(store.device_count(), 1);
    assert_eq!(store.devices().unwrap(), vec![d1]);
    assert_eq!(by_mac_id(&store, M1).as_deref(), Some("d1"));
    assert_eq!(by_ip_ids(&store, IP1), ["d1"]);
    // The id is still free.
    store
        .create_device(&device("d2", Some(M2), Some(IP1)))
        .unwrap();
    assert_eq!(by_ip_ids(&store, IP1), ["d1", "d2"]);
}

// ---------------------------------------------------------------------------------------------
// Configs
// ---------------------------------------------------------------------------------------------

#[test]
fn config_crud() {
    let (_dir, store) = open();
    let mut input = config("root", &[]);
    input.revision = 3;
    input
        .raw_config
        .insert("ntp_ip".to_owned(), serde_json::json!("10.0.0.1"));
    let root = store.create_config(&input).unwrap();
    assert_eq!(root.revision, 1);
    assert_eq!(root.raw_config["ntp_ip"], "10.0.0.1");
    assert_eq!(store.config("root").unwrap(), Some(root.clone()));

    let child = store.create_config(&config("child", &["root"])).unwrap();
    assert_eq!(store.config("child").unwrap(), Some(child.clone()));
    assert_eq!(store.configs().unwrap(), vec![child.clone(), root.clone()]);

    let err = store.create_config(&config("root", &[])).unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { kind: "config", id } if id == "root"),
        "{err:?}"
    );
    assert_eq!(store.config("root").unwrap(), Some(root.clone()));

    let mut change = child.clone();
    change
        .raw_config
        .insert("locale".to_owned(), serde_json::json!("fr_FR"));
    let child = store.update_config(&change).unwrap();
    assert_eq!(child.revision, 2);
    assert_eq!(store.config("child").unwrap(), Some(child.clone()));

    let err = store.update_config(&config("nope", &[])).unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "config", id } if id == "nope"),
        "{err:?}"
    );
    assert_eq!(store.config("nope").unwrap(), None);

    let mut stale = child.clone();
    stale.revision = 1;
    stale.raw_config.clear();
    let err = store.update_config(&stale).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                kind: "config",
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.config("child").unwrap(), Some(child.clone()));

    assert_eq!(store.delete_config("child").unwrap(), child);
    assert_eq!(store.config("child").unwrap(), None);
    let err = store.delete_config("child").unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "config", id } if id == "child"),
        "{err:?}"
    );
    // Its parent is free to go now.
    assert_eq!(store.delete_config("root").unwrap(), root);
    assert!(store.configs().unwrap().is_empty());
}

#[test]
fn config_children_follow_updates_and_deletes() {
    let (_dir, store) = open();
    for id in ["a", "b", "c"] {
        store.create_config(&config(id, &[])).unwrap();
    }
    let x = store.create_config(&config("x", &["a", "b"])).unwrap();
    store.create_config(&config("w", &["b"])).unwrap();
    assert_eq!(children(&store, "a"), ["x"]);
    assert_eq!(children(&store, "b"), ["w", "x"]);
    assert!(children(&store, "c").is_empty());

    let mut change = x.clone();
    change.parent_ids = vec!["b".to_owned(), "c".to_owned()];
    let x = store.update_config(&change).unwrap();
    assert!(children(&store, "a").is_empty());
    assert_eq!(children(&store, "b"), ["w", "x"]);
    assert_eq!(children(&store, "c"), ["x"]);

    // "a" has no children any more: it can be deleted.
    store.delete_config("a").unwrap();

    let mut change = x.clone();
    change.parent_ids.clear();
    store.update_config(&change).unwrap();
    assert_eq!(children(&store, "b"), ["w"]);
    assert!(children(&store, "c").is_empty());

    store.delete_config("w").unwrap();
    assert!(children(&store, "b").is_empty());
    store.delete_config("b").unwrap();
    store.delete_config("c").unwrap();
    store.delete_config("x").unwrap();
    assert!(store.configs().unwrap().is_empty());
}

#[test]
fn config_with_a_missing_parent_leaves_nothing() {
    let (_dir, store) = open();
    store.create_config(&config("a", &[])).unwrap();
    let err = store
        .create_config(&config("x", &["a", "ghost"]))
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidReference(msg) if msg.contains("ghost")),
        "{err:?}"
    );
    assert_eq!(store.config("x").unwrap(), None);
    assert!(children(&store, "a").is_empty());
    assert!(children(&store, "ghost").is_empty());
    assert_eq!(store.configs().unwrap().len(), 1);

    // The same check on update.
    let x = store.create_config(&config("x", &["a"])).unwrap();
    let mut change = x.clone();
    change.parent_ids = vec!["ghost".to_owned()];
    assert!(matches!(
        store.update_config(&change),
        Err(StoreError::InvalidReference(_))
    ));
    assert_eq!(store.config("x").unwrap(), Some(x));
    assert_eq!(children(&store, "a"), ["x"]);
    assert!(children(&store, "ghost").is_empty());
}

#[test]
fn config_parent_cycles_are_refused() {
    let (_dir, store) = open();
    let a = store.create_config(&config("a", &[])).unwrap();
    store.create_config(&config("b", &["a"])).unwrap();
    let c = store.create_config(&config("c", &["b"])).unwrap();

    // a -> c -> b -> a
    let mut change = a.clone();
    change.parent_ids = vec!["c".to_owned()];
    let err = store.update_config(&change).unwrap_err();
    assert!(matches!(err, StoreError::InvalidReference(_)), "{err:?}");
    assert_eq!(store.config("a").unwrap(), Some(a.clone()));
    assert!(children(&store, "c").is_empty());
    assert_eq!(children(&store, "a"), ["b"]);

    // A config cannot be its own parent, on update or on create.
    let mut change = c.clone();
    change.parent_ids = vec!["b".to_owned(), "c".to_owned()];
    assert!(matches!(
        store.update_config(&change),
        Err(StoreError::InvalidReference(_))
    ));
    assert_eq!(store.config("c").unwrap(), Some(c));
    assert!(children(&store, "c").is_empty());
    assert!(matches!(
        store.create_config(&config("self", &["self"])),
        Err(StoreError::InvalidReference(_))
    ));
    assert_eq!(store.config("self").unwrap(), None);

    // A diamond is not a cycle.
    store.create_config(&config("d", &["a", "b"])).unwrap();
    assert_eq!(children(&store, "a"), ["b", "d"]);
}

#[test]
fn config_with_children_is_in_use() {
    let (_dir, store) = open();
    let parent = store.create_config(&config("parent", &[])).unwrap();
    let child = store.create_config(&config("child", &["parent"])).unwrap();
    let err = store.delete_config("parent").unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::InUse { kind: "config", id, users } if id == "parent" && users.contains("child")
        ),
        "{err:?}"
    );
    assert_eq!(store.config("parent").unwrap(), Some(parent));
    assert_eq!(store.config("child").unwrap(), Some(child));
    assert_eq!(children(&store, "parent"), ["child"]);
}

// ---------------------------------------------------------------------------------------------
// Built-in records
// ---------------------------------------------------------------------------------------------

#[test]
fn ensure_defaults_creates_the_builtins_once() {
    let (_dir, store) = open();
    store.ensure_defaults("master").unwrap();

    let master = store.tenant("master").unwrap().expect("tenant master");
    assert_eq!(master.revision, 1);
    assert_eq!(master.provisioning_key, None);
    let base = store.config("base").unwrap().expect("config base");
    assert!(base.parent_ids.is_empty());
    assert!(!base.deletable);
    assert_eq!(base.revision, 1);
    assert_eq!(base.tenant, "master");
    let autoprov = store.config("autoprov").unwrap().expect("config autoprov");
    assert_eq!(autoprov.parent_ids, ["base"]);
    assert!(!autoprov.deletable);
    assert_eq!(autoprov.revision, 1);
    assert_eq!(children(&store, "base"), ["autoprov"]);
    assert!(children(&store, "autoprov").is_empty());

    store.ensure_defaults("master").unwrap();
    assert_eq!(store.tenants().unwrap(), vec![master.clone()]);
    assert_eq!(
        store.configs().unwrap(),
        vec![autoprov.clone(), base.clone()]
    );
    assert_eq!(children(&store, "base"), ["autoprov"]);

    // Built-ins cannot be deleted, even without children...
    let err = store.delete_config("autoprov").unwrap_err();
    assert!(
        matches!(&err, StoreError::NotDeletable { kind: "config", id } if id == "autoprov"),
        "{err:?}"
    );
    let err = store.delete_config("base").unwrap_err();
    assert!(
        matches!(&err, StoreError::NotDeletable { kind: "config", .. }),
        "{err:?}"
    );
    assert_eq!(store.config("autoprov").unwrap(), Some(autoprov.clone()));
    assert_eq!(store.config("base").unwrap(), Some(base.clone()));

    // ...and an update cannot make them deletable.
    let mut change = autoprov.clone();
    change.deletable = true;
    change
        .raw_config
        .insert("x".to_owned(), serde_json::json!(1));
    let updated = store.update_config(&change).unwrap();
    assert!(!updated.deletable);
    assert!(!store.config("autoprov").unwrap().unwrap().deletable);
    assert!(matches!(
        store.delete_config("autoprov"),
        Err(StoreError::NotDeletable { .. })
    ));

    // A later ensure_defaults does not overwrite the customized built-in.
    store.ensure_defaults("master").unwrap();
    assert_eq!(store.config("autoprov").unwrap(), Some(updated));
}

// ---------------------------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------------------------

fn by_key_id(store: &Store, key: &str) -> Option<String> {
    store
        .tenant_by_key(key)
        .expect("tenant_by_key")
        .map(|t| t.id)
}

#[test]
fn tenant_crud_and_key_index() {
    let (_dir, store) = open();
    store.ensure_defaults("master").unwrap();
    let mut input = tenant("t1", Some("k1"));
    input.revision = 9;
    let t1 = store.create_tenant(&input).unwrap();
    assert_eq!(t1.revision, 1);
    assert_eq!(store.tenant("t1").unwrap(), Some(t1.clone()));
    assert_eq!(store.tenant_by_key("k1").unwrap(), Some(t1.clone()));
    assert_eq!(by_key_id(&store, "k2"), None);

    let err = store.create_tenant(&tenant("t1", None)).unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { kind: "tenant", id } if id == "t1"),
        "{err:?}"
    );
    assert_eq!(store.tenant("t1").unwrap(), Some(t1.clone()));

    // Change the key: the old one no longer finds the tenant.
    let mut change = t1.clone();
    change.provisioning_key = Some("k2".to_owned());
    change.name = "Renamed".to_owned();
    let t1 = store.update_tenant(&change).unwrap();
    assert_eq!(t1.revision, 2);
    assert_eq!(by_key_id(&store, "k1"), None);
    assert_eq!(store.tenant_by_key("k2").unwrap(), Some(t1.clone()));

    // The released key is free for someone else.
    let t2 = store.create_tenant(&tenant("t2", Some("k1"))).unwrap();
    assert_eq!(by_key_id(&store, "k1").as_deref(), Some("t2"));
    let tenants: Vec<Tenant> = store
        .tenants()
        .unwrap()
        .into_iter()
        .filter(|t| t.id != "master")
        .collect();
    assert_eq!(tenants, vec![t1.clone(), t2.clone()]);

    // Drop the key.
    let mut change = t1.clone();
    change.provisioning_key = None;
    let t1 = store.update_tenant(&change).unwrap();
    assert_eq!(by_key_id(&store, "k2"), None);
    assert_eq!(by_key_id(&store, "k1").as_deref(), Some("t2"));

    let err = store.update_tenant(&tenant("nope", None)).unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "tenant", id } if id == "nope"),
        "{err:?}"
    );

    let mut stale = t1.clone();
    stale.revision = 1;
    stale.provisioning_key = Some("k9".to_owned());
    let err = store.update_tenant(&stale).unwrap_err();
    assert!(
        matches!(
            &err,
            StoreError::Conflict {
                kind: "tenant",
                expected: 1,
                found: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(store.tenant("t1").unwrap(), Some(t1));
    assert_eq!(by_key_id(&store, "k9"), None);
}

#[test]
fn tenant_key_taken_rolls_back() {
    let (_dir, store) = open();
    store.ensure_defaults("master").unwrap();
    let t1 = store.create_tenant(&tenant("t1", Some("k1"))).unwrap();
    let t2 = store.create_tenant(&tenant("t2", Some("k2"))).unwrap();

    let err = store.create_tenant(&tenant("t3", Some("k1"))).unwrap_err();
    assert!(
        matches!(&err, StoreError::Taken { kind: "tenant", owner, .. } if owner == "t1"),
        "{err:?}"
    );
    assert_eq!(store.tenant("t3").unwrap(), None);
    assert_eq!(by_key_id(&store, "k1").as_deref(), Some("t1"));

    let mut change = t2.clone();
    change.provisioning_key = Some("k1".to_owned());
    change.name = "should not stick".to_owned();
    let err = store.update_tenant(&change).unwrap_err();
    assert!(
        matches!(&err, StoreError::Taken { kind: "tenant", owner, .. } if owner == "t1"),
        "{err:?}"
    );
    assert_eq!(store.tenant("t2").unwrap(), Some(t2));
    assert_eq!(store.tenant("t1").unwrap(), Some(t1));
    assert_eq!(by_key_id(&store, "k2").as_deref(), Some("t2"));
    assert_eq!(by_key_id(&store, "k1").as_deref(), Some("t1"));
}

// ---------------------------------------------------------------------------------------------
// Tokens, codes, leases, plugin state
// ---------------------------------------------------------------------------------------------

#[test]
fn token_crud() {
    let (_dir, store) = open();
    let t = token("abc123");
    store.create_token(&t).unwrap();
    assert_eq!(store.token("abc123").unwrap(), Some(t.clone()));
    assert_eq!(store.token("other").unwrap(), None);

    let mut dup = token("abc123");
    dup.tenant = "other".to_owned();
    let err = store.create_token(&dup).unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { kind: "token", id } if id == "abc123"),
        "{err:?}"
    );
    assert_eq!(store.token("abc123").unwrap(), Some(t.clone()));

    let t2 = token("def456");
    store.create_token(&t2).unwrap();
    assert_eq!(store.tokens().unwrap(), vec![t.clone(), t2.clone()]);

    assert_eq!(store.delete_token("abc123").unwrap(), t);
    assert_eq!(store.token("abc123").unwrap(), None);
    let err = store.delete_token("abc123").unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "token", id } if id == "abc123"),
        "{err:?}"
    );
    assert_eq!(store.tokens().unwrap(), vec![t2]);
}

#[test]
fn code_crud() {
    let (_dir, store) = open();
    let c = code("123456789012");
    store.create_code(&c).unwrap();
    assert_eq!(store.code("123456789012").unwrap(), Some(c.clone()));

    let err = store.create_code(&code("123456789012")).unwrap_err();
    assert!(
        matches!(&err, StoreError::AlreadyExists { kind: "code", id } if id == "123456789012"),
        "{err:?}"
    );

    let mut used = c.clone();
    used.label = Some("Alice".to_owned());
    store.update_code(&used).unwrap();
    assert_eq!(store.code("123456789012").unwrap(), Some(used.clone()));
    assert_eq!(store.codes().unwrap(), vec![used.clone()]);

    let err = store.update_code(&code("000000000000")).unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "code", id } if id == "000000000000"),
        "{err:?}"
    );
    assert_eq!(store.code("000000000000").unwrap(), None);

    assert_eq!(store.delete_code("123456789012").unwrap(), used);
    assert_eq!(store.code("123456789012").unwrap(), None);
    assert!(matches!(
        store.delete_code("123456789012"),
        Err(StoreError::NotFound { kind: "code", .. })
    ));
    assert!(store.codes().unwrap().is_empty());
}

#[test]
fn a_lease_index_an_older_crash_left_behind_is_never_believed_and_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let l1 = lease("192.168.1.10", M1);
    let l2 = lease("192.168.1.11", M2);
    {
        let store = Store::open(dir.path()).unwrap();
        store.put_lease(&l1).unwrap();
        store.put_lease(&l2).unwrap();
    }
    // What a crash of a provisiond before 2026-12 between a lease write and its index write
    // could leave (the two were not one transaction then): M1's entry points at M2's lease,
    // M2's is missing, and the index's settled mark is gone.
    {
        let db = raw_db(dir.path());
        db.open_tree("meta")
            .unwrap()
            .remove(b"lease_index_settled")
            .unwrap();
        let index = db.open_tree("idx_lease_mac").unwrap();
        index
            .insert(mac(M1).octets(), v4("192.168.1.11").octets())
            .unwrap();
        index.remove(mac(M2).octets()).unwrap();
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    assert_eq!(store.lease_by_mac(&mac(M1)).unwrap(), Some(l1));
    assert_eq!(store.lease_by_mac(&mac(M2)).unwrap(), Some(l2));
}

#[test]
fn lease_crud_and_mac_index() {
    let (_dir, store) = open();
    let l1 = lease("192.168.1.10", M1);
    store.put_lease(&l1).unwrap();
    assert_eq!(store.lease(v4("192.168.1.10")).unwrap(), Some(l1.clone()));
    assert_eq!(store.lease_by_mac(&mac(M1)).unwrap(), Some(l1.clone()));
    assert_eq!(store.lease(v4("192.168.1.11")).unwrap(), None);
    assert_eq!(store.lease_by_mac(&mac(M2)).unwrap(), None);

    // Renewal replaces the record in place.
    let mut renewed = l1.clone();
    renewed.ends += 3600;
    store.put_lease(&renewed).unwrap();
    assert_eq!(store.lease_by_mac(&mac(M1)).unwrap(), Some(renewed.clone()));
    assert_eq!(store.leases().unwrap(), vec![renewed.clone()]);

    // The address goes to another client: the old client no longer finds it.
    let l2 = lease("192.168.1.10", M2);
    store.put_lease(&l2).unwrap();
    assert_eq!(store.lease_by_mac(&mac(M1)).unwrap(), None);
    assert_eq!(store.lease_by_mac(&mac(M2)).unwrap(), Some(l2.clone()));

    // The client moves to another address: the index follows, and deleting the old lease
    // does not unlink the new one.
    let l3 = lease("192.168.1.20", M2);
    store.put_lease(&l3).unwrap();
    assert_eq!(store.lease_by_mac(&mac(M2)).unwrap(), Some(l3.clone()));
    assert_eq!(store.delete_lease(v4("192.168.1.10")).unwrap(), l2);
    assert_eq!(store.lease(v4("192.168.1.10")).unwrap(), None);
    assert_eq!(store.lease_by_mac(&mac(M2)).unwrap(), Some(l3.clone()));

    assert_eq!(store.delete_lease(v4("192.168.1.20")).unwrap(), l3);
    assert_eq!(store.lease_by_mac(&mac(M2)).unwrap(), None);
    assert!(store.leases().unwrap().is_empty());
    let err = store.delete_lease(v4("192.168.1.20")).unwrap_err();
    assert!(
        matches!(&err, StoreError::NotFound { kind: "lease", id } if id == "192.168.1.20"),
        "{err:?}"
    );
}

#[test]
fn plugin_state_round_trip() {
    let (_dir, store) = open();
    assert_eq!(store.plugin_state("xivo-yealink").unwrap(), None);
    let state = serde_json::json!({"version": "1.2", "options": {"a": 1}});
    store.set_plugin_state("xivo-yealink", &state).unwrap();
    assert_eq!(store.plugin_state("xivo-yealink").unwrap(), Some(state));
    let newer = serde_json::json!({"version": "1.3"});
    store.set_plugin_state("xivo-yealink", &newer).unwrap();
    assert_eq!(store.plugin_state("xivo-yealink").unwrap(), Some(newer));
}

// ---------------------------------------------------------------------------------------------
// Ids, persistence
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_ids_are_refused() {
    let (_dir, store) = open();
    for bad in ["a/b", "", "..", ".", "a b", &"x".repeat(65)] {
        let is_invalid =
            |r: Result<(), StoreError>| matches!(&r, Err(StoreError::InvalidId(e)) if e.0 == bad);
        assert!(
            is_invalid(
                store
                    .create_device(&device(bad, Some(M1), Some(IP1)))
                    .map(drop)
            ),
            "device {bad:?}"
        );
        assert!(
            is_invalid(store.create_config(&config(bad, &[])).map(drop)),
            "config {bad:?}"
        );
        assert!(
            is_invalid(store.create_tenant(&tenant(bad, Some("k"))).map(drop)),
            "tenant {bad:?}"
        );
        assert!(
            is_invalid(store.ensure_defaults(bad)),
            "default tenant {bad:?}"
        );
        assert!(
            is_invalid(store.set_plugin_state(bad, &serde_json::json!({}))),
            "plugin {bad:?}"
        );
    }
    assert!(store.devices().unwrap().is_empty());
    assert_eq!(by_mac_id(&store, M1), None);
    assert!(by_ip_ids(&store, IP1).is_empty());
    assert!(store.configs().unwrap().is_empty());
    assert!(store.tenants().unwrap().is_empty());
    assert_eq!(by_key_id(&store, "k"), None);
    // The good ids next to them are accepted.
    store
        .create_device(&device("a-b_c.d", Some(M1), None))
        .unwrap();
    store.create_config(&config("a.b", &[])).unwrap();
}

#[test]
fn a_new_store_records_the_schema_version() {
    let (_dir, store) = open();
    assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
    assert!(store.path().ends_with("db"));
}

/// Writes one record of each kind (plus indexes) and returns them.
struct Fixture {
    d1: Device,
    d2: Device,
    cfg: Config,
    t1: Tenant,
    tok: Token,
    code: Code,
    lease: Lease,
}

fn fill(store: &Store) -> Fixture {
    store.ensure_defaults("master").unwrap();
    let d1 = store
        .create_device(&device("d1", Some(M1), Some(IP1)))
        .unwrap();
    let d2 = store
        .create_device(&device("d2", Some(M2), Some(IP1)))
        .unwrap();
    let mut cfg = config("site", &["base"]);
    cfg.raw_config
        .insert("ntp_ip".to_owned(), serde_json::json!("10.0.0.1"));
    let cfg = store.create_config(&cfg).unwrap();
    let t1 = store.create_tenant(&tenant("t1", Some("key1"))).unwrap();
    let tok = token("feedface");
    store.create_token(&tok).unwrap();
    let code = code("111122223333");
    store.create_code(&code).unwrap();
    let lease = lease("192.168.1.50", M3);
    store.put_lease(&lease).unwrap();
    store
        .set_plugin_state("p1", &serde_json::json!({"v": 1}))
        .unwrap();
    Fixture {
        d1,
        d2,
        cfg,
        t1,
        tok,
        code,
        lease,
    }
}

fn check(store: &Store, f: &Fixture) {
    assert_eq!(store.schema_version().unwrap(), Some(SCHEMA_VERSION));
    assert_eq!(store.device("d1").unwrap().as_ref(), Some(&f.d1));
    assert_eq!(store.device("d2").unwrap().as_ref(), Some(&f.d2));
    assert_eq!(store.device_count(), 2);
    assert_eq!(by_mac_id(store, M1).as_deref(), Some("d1"));
    assert_eq!(by_mac_id(store, M2).as_deref(), Some("d2"));
    assert_eq!(by_ip_ids(store, IP1), ["d1", "d2"]);
    // The generation is random per write: compare everything else.
    let site = store.config("site").unwrap().expect("site");
    assert_ne!(site.generation, 0, "the store stamps every write");
    assert_eq!(
        Config {
            generation: 0,
            ..site
        },
        Config {
            generation: 0,
            ..f.cfg.clone()
        }
    );
    assert_eq!(children(store, "base"), ["autoprov", "site"]);
    assert!(store.config("autoprov").unwrap().is_some());
    assert!(store.tenant("master").unwrap().is_some());
    assert_eq!(store.tenant("t1").unwrap().as_ref(), Some(&f.t1));
    assert_eq!(store.tenant_by_key("key1").unwrap().as_ref(), Some(&f.t1));
    assert_eq!(store.token("feedface").unwrap().as_ref(), Some(&f.tok));
    assert_eq!(store.code("111122223333").unwrap().as_ref(), Some(&f.code));
    assert_eq!(store.lease(f.lease.ip).unwrap().as_ref(), Some(&f.lease));
    assert_eq!(
        store.lease_by_mac(&mac(M3)).unwrap().as_ref(),
        Some(&f.lease)
    );
    assert_eq!(
        store.plugin_state("p1").unwrap(),
        Some(serde_json::json!({"v": 1}))
    );
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = {
        let store = Store::open(dir.path()).unwrap();
        let fixture = fill(&store);
        // A clone shares the database; dropping both releases it.
        let clone = store.clone();
        drop(store);
        check(&clone, &fixture);
        fixture
    };
    let store = reopen(dir.path());
    check(&store, &fixture);
    // ensure_defaults on a reopened store changes nothing.
    store.ensure_defaults("master").unwrap();
    assert_eq!(store.config("base").unwrap().unwrap().revision, 1);
    assert_eq!(children(&store, "base"), ["autoprov", "site"]);
    drop(store);
    // And a third time, after a write made on the second opening.
    let store = reopen(dir.path());
    let mut change = store.device("d1").unwrap().unwrap();
    change.mac = Some(mac("00:15:65:00:00:99"));
    store.update_device(&change).unwrap();
    drop(store);
    let store = reopen(dir.path());
    assert_eq!(store.device("d1").unwrap().unwrap().revision, 2);
    assert_eq!(
        by_mac_id(&store, "00:15:65:00:00:99").as_deref(),
        Some("d1")
    );
    assert_eq!(by_mac_id(&store, M1), None);
}

const CRASH_CHILD_ENV: &str = "PROVISIOND_TEST_STORE_CRASH_CHILD";

/// Every acknowledged write is flushed: a process killed right after its writes (no `Drop`,
/// no shutdown flush) loses none of them.
#[test]
fn acknowledged_writes_survive_a_kill() {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_ENV) {
        // Child: write, then die at once without running any destructor.
        let store = Store::open(Path::new(&dir)).unwrap();
        fill(&store);
        nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL).unwrap();
        unreachable!("SIGKILL returned");
    }
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "acknowledged_writes_survive_a_kill",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(CRASH_CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(nix::sys::signal::Signal::SIGKILL as i32),
        "child did not die by SIGKILL: {status:?}"
    );
    let store = Store::open(dir.path()).unwrap();
    // Build the expected records the way the child did (revisions are assigned by the store).
    let expected = Fixture {
        d1: Device {
            revision: 1,
            ..device("d1", Some(M1), Some(IP1))
        },
        d2: Device {
            revision: 1,
            ..device("d2", Some(M2), Some(IP1))
        },
        cfg: {
            let mut cfg = config("site", &["base"]);
            cfg.raw_config
                .insert("ntp_ip".to_owned(), serde_json::json!("10.0.0.1"));
            cfg.revision = 1;
            cfg
        },
        t1: Tenant {
            revision: 1,
            ..tenant("t1", Some("key1"))
        },
        tok: token("feedface"),
        code: code("111122223333"),
        lease: lease("192.168.1.50", M3),
    };
    check(&store, &expected);
}

// ---------------------------------------------------------------------------------------------
// Regressions: bugs found in review, fixed, and kept fixed by these tests.
// ---------------------------------------------------------------------------------------------

/// The parent check walks every path through the ancestry without remembering visited
/// configs, so a valid (acyclic) hierarchy with shared ancestors costs 2^depth steps and is
/// refused as "too deep or cyclic" once that exceeds the 10 000-step bound
/// (src/store/configs.rs, `check_parents`).
#[test]
fn config_parent_check_accepts_shared_ancestors() {
    let (_dir, store) = open();
    store.create_config(&config("l0a", &[])).unwrap();
    store.create_config(&config("l0b", &[])).unwrap();
    for layer in 1..=14 {
        let parents = [format!("l{}a", layer - 1), format!("l{}b", layer - 1)];
        let parents: Vec<&str> = parents.iter().map(String::as_str).collect();
        for side in ["a", "b"] {
            let id = format!("l{layer}{side}");
            if let Err(err) = store.create_config(&config(&id, &parents)) {
                panic!("config {id} (layer {layer}, acyclic) refused: {err}");
            }
        }
    }
    assert_eq!(store.configs().unwrap().len(), 30);
}

/// `StoreError::Corrupt` promises that the record is left untouched, and `delete_device`
/// keeps that promise (the decode error aborts its transaction), but `delete_token` and
/// `delete_code` remove the record first and decode it afterwards: they report a failure
/// after having deleted it (src/store/others.rs, `remove_one`).
#[test]
fn deleting_a_corrupt_record_fails_without_deleting_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = provisiond::store::kv::Db::open_raw(dir.path()).unwrap();
        db.open_tree("tokens")
            .unwrap()
            .insert("bad", b"{not json".as_ref())
            .unwrap();
        db.open_tree("codes")
            .unwrap()
            .insert("000000000001", b"{not json".as_ref())
            .unwrap();
        db.flush().unwrap();
    }
    let store = reopen(dir.path());
    let err = store.delete_token("bad").unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { tree: "tokens", .. }),
        "{err:?}"
    );
    assert!(
        matches!(store.token("bad"), Err(StoreError::Corrupt { .. })),
        "the corrupt token was deleted although delete_token failed"
    );
    let err = store.delete_code("000000000001").unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { tree: "codes", .. }),
        "{err:?}"
    );
    assert!(
        matches!(store.code("000000000001"), Err(StoreError::Corrupt { .. })),
        "the corrupt code was deleted although delete_code failed"
    );
}

#[test]
fn tenants_form_a_tree_under_the_default_tenant() {
    let (_dir, store) = open();
    store.ensure_defaults("master").unwrap();
    let orphan = Tenant {
        parent: None,
        ..tenant("orphan", None)
    };
    assert!(
        matches!(store.create_tenant(&orphan), Err(StoreError::Invalid(_))),
        "only the default tenant has no parent"
    );
    let lost = Tenant {
        parent: Some("nobody".into()),
        ..tenant("lost", None)
    };
    assert!(matches!(
        store.create_tenant(&lost),
        Err(StoreError::InvalidReference(_))
    ));
    store.create_tenant(&tenant("reseller", None)).unwrap();
    let customer = store
        .create_tenant(&Tenant {
            parent: Some("reseller".into()),
            ..tenant("customer", None)
        })
        .unwrap();
    let tree = store.tenant_tree().unwrap();
    assert_eq!(tree.ancestors("customer"), ["reseller", "master"]);
    assert!(tree.within("customer", "master"));
    assert!(!tree.within("reseller", "customer"));

    // A tenant never moves.
    let moved = Tenant {
        parent: Some("master".into()),
        ..customer.clone()
    };
    assert!(matches!(
        store.update_tenant(&moved),
        Err(StoreError::Invalid(_))
    ));
    // A tenant with a child stays; once the child is gone it can go, and the cached tree
    // follows every write.
    assert!(matches!(
        store.delete_tenant("reseller"),
        Err(StoreError::InUse { users, .. }) if users.contains("1 child tenant")
    ));
    store.delete_tenant("customer").unwrap();
    assert!(!store.tenant_tree().unwrap().contains("customer"));
    store.delete_tenant("reseller").unwrap();
    assert_eq!(
        store.tenant_tree().unwrap().children("master"),
        [] as [String; 0]
    );

    // The depth is bounded.
    let mut parent = "master".to_owned();
    let mut refused = None;
    for level in 1..=provisiond::model::MAX_TENANT_DEPTH + 1 {
        let id = format!("level{level}");
        match store.create_tenant(&Tenant {
            parent: Some(parent.clone()),
            ..tenant(&id, None)
        }) {
            Ok(_) => parent = id,
            Err(e) => {
                refused = Some((level, e));
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some((level, StoreError::Invalid(_))) if level == provisiond::model::MAX_TENANT_DEPTH + 1),
        "{refused:?}"
    );
}

#[test]
fn tenants_of_an_older_store_become_children_of_the_default_tenant() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let store = Store::open(tmp.path()).unwrap();
        store.ensure_defaults("master").unwrap();
        store.create_tenant(&tenant("acme", None)).unwrap();
    }
    // A record as a store made before the tenant tree holds it: no `parent` key.
    {
        let db = raw_db(tmp.path());
        let tenants = db.open_tree("tenants").unwrap();
        let mut raw: serde_json::Value =
            serde_json::from_slice(&tenants.get("acme").unwrap().unwrap()).unwrap();
        raw.as_object_mut().unwrap().remove("parent");
        tenants
            .insert("acme", serde_json::to_vec(&raw).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let store = reopen(tmp.path());
    assert_eq!(store.tenant("acme").unwrap().unwrap().parent, None);
    store.ensure_defaults("master").unwrap();
    let acme = store.tenant("acme").unwrap().unwrap();
    assert_eq!(acme.parent.as_deref(), Some("master"));
    assert_eq!(store.tenant("master").unwrap().unwrap().parent, None);
    assert!(store.tenant_tree().unwrap().within("acme", "master"));
}

#[test]
fn a_config_in_use_by_a_device_is_not_deleted_as_unused() {
    let (_dir, store) = open();
    store.ensure_defaults("master").unwrap();
    store.create_config(&config("line", &["base"])).unwrap();
    let mut a = Device::new("a", "master");
    a.config = Some("line".into());
    store.create_device(&a).unwrap();
    let mut b = Device::new("b", "master");
    b.config = Some("line".into());
    let b = store.create_device(&b).unwrap();
    assert_eq!(store.config_device_count("line").unwrap(), 2);
    assert!(matches!(
        store.delete_unused_config("line"),
        Err(StoreError::InUse { users, .. }) if users == "2 device(s)"
    ));
    store.delete_device("a").unwrap();
    let mut b = b;
    b.config = Some("base".into());
    store.update_device(&b).unwrap();
    assert_eq!(store.config_device_count("line").unwrap(), 0);
    assert_eq!(store.config_device_count("base").unwrap(), 1);
    store.delete_unused_config("line").unwrap();
}
