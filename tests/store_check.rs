//! `provisiond store check [--repair]` on a real store directory: a consistent store passes,
//! a damaged index is named and exits 1, `--repair` rebuilds it, and a running daemon's store
//! is refused with a clear message.

mod common;

use common::{command, run, start_daemon, write_config};
use provisiond::model::Device;
use provisiond::store::Store;

fn check(dir: &std::path::Path, repair: bool) -> (i32, String, String) {
    let mut cmd = command(dir);
    cmd.args(["store", "check", "--config"])
        .arg(dir.join("provisiond.toml"));
    if repair {
        cmd.arg("--repair");
    }
    run(&mut cmd)
}

#[test]
fn damage_is_found_named_and_repaired() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(dir, "");
    let data = dir.join("data");
    {
        let store = Store::open(&data).unwrap();
        store.ensure_defaults("master").unwrap();
        for n in 0..20u8 {
            let mut d = Device::new(format!("d{n}"), "master");
            d.mac = Some(format!("00:15:65:00:00:{n:02x}").parse().unwrap());
            d.ip = Some([10, 0, 0, n % 3].into());
            d.vendor = Some("Yealink".into());
            d.plugin = Some(if n % 2 == 0 { "yealink" } else { "snom" }.into());
            d.config = Some("autoprov".into());
            store.create_device(&d).unwrap();
        }
    }
    let (code, out, err) = check(dir, false);
    assert_eq!(code, 0, "{out}{err}");
    for tree in ["idx_dev", "counts", "idx_ip", "idx_mac", "cfg_children"] {
        assert!(out.contains(tree), "{out}");
    }

    // Damage as a lost write would: an index entry and a count disagree with the records.
    {
        let db = common::retry_locked(|| provisiond::store::kv::Db::open_raw(&data));
        let idx = db.open_tree("idx_dev").unwrap();
        let first = idx.iter().keys().next().unwrap().unwrap();
        idx.remove(first).unwrap();
        // Keys of no kind, below the first kind's and above the last's, and a wrong value.
        idx.insert(b"\x00junk", []).unwrap();
        idx.insert(b"\xffjunk", []).unwrap();
        db.open_tree("counts")
            .unwrap()
            .insert("all", 7u64.to_be_bytes())
            .unwrap();
        let macs = db.open_tree("idx_mac").unwrap();
        let mac = macs.iter().keys().next().unwrap().unwrap();
        macs.insert(mac, "d-none").unwrap();
        db.flush().unwrap();
    }
    let (code, out, err) = check(dir, false);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("idx_dev") && l.contains("DIFFERS")),
        "{out}"
    );
    for tree in ["counts", "idx_mac"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(tree) && l.contains("DIFFERS")),
            "{out}"
        );
    }
    assert!(err.contains("--repair"), "{err}");

    let (code, out, err) = check(dir, true);
    assert_eq!(code, 0, "{out}{err}");
    // Only what the damage changed is written: one entry back, two keys of no kind and a
    // wrong MAC entry and count.
    assert!(
        out.contains(
            "repaired: every index rebuilt from the records (5 entries written or removed)"
        ),
        "{out}"
    );
    let (code, out, err) = check(dir, false);
    assert_eq!(code, 0, "{out}{err}");
    let store = Store::open(&data).unwrap();
    assert_eq!(store.device_count(), 20);
    assert_eq!(
        store
            .field_device_ids(provisiond::store::Field::Vendor, "master", "Yealink")
            .count(),
        20
    );
}

#[test]
fn a_running_daemons_store_is_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(dir, "");
    let (_daemon, _addr) = start_daemon(dir);
    let (code, out, err) = check(dir, false);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("stop provisiond first"), "{err}");
}
