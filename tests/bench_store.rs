//! `provisiond bench store` keeps working: a small run completes, prints every figure of its
//! table, checks its own answers (every lookup found its device, the listing and /metrics
//! counted every device) and leaves no store behind. No timing is asserted.

mod common;

use std::process::Command;

#[test]
fn a_small_store_bench_completes_prints_its_table_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(common::BIN)
        .args([
            "bench",
            "store",
            "--devices",
            "200",
            "--tenants",
            "12",
            "--writers",
            "4",
            "--lookups",
            "50",
            "--leases",
        ])
        // The default store goes to the temporary directory, which must be empty afterwards.
        .env("TMPDIR", tmp.path())
        .output()
        .expect("run provisiond bench store");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    for key in [
        "| creation, whole fill |",
        "| creation, last 10 % (rate at N) |",
        "| creation per tenth of the fill |",
        "| leases (256 per flush) | 180 in",
        "| store on disk |",
        "| store read by id, in process (no HTTP) | p50",
        "| store read by MAC, in process (no HTTP) | p50",
        "| GET device by id | p50",
        "| q mac (as root, recurse) | p50",
        "| q ip (as root, recurse) | p50",
        "| q sn (as its tenant) | p50",
        "| q sn (as root, recurse) | p50",
        "| q mac (as its tenant) | p50",
        "| q vendor+model, limit 10 (as its tenant) | p50",
        "| page of 100 sorted by mac, skip 1000 (root, recurse) |",
        "| same, sort_ord=DESC |",
        "| full listing, recurse=true (root) | 200 devices,",
        "| full listing again (cache warm) | 200 devices,",
        "| /metrics (provisiond_devices, per tenant and plugin) |",
        "devices counted 200",
    ] {
        assert!(stdout.contains(key), "no {key:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains("50 requests, 0 wrong"),
        "every lookup finds its device:\n{stdout}"
    );
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the temporary store is removed: {left:?}");
}

#[test]
fn a_kept_store_is_measured_again_without_a_second_fill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kept");
    let run = |devices: &str| {
        Command::new(common::BIN)
            .args(["bench", "store", "--devices", devices, "--tenants", "3"])
            .args(["--writers", "2", "--lookups", "10", "--dir"])
            .arg(&dir)
            .output()
            .expect("run provisiond bench store")
    };
    let first = run("30");
    assert!(first.status.success(), "{first:?}");
    assert!(dir.join("db").is_dir(), "--dir is kept");
    let again = run("30");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{again:?}");
    assert!(stdout.contains("fill skipped"), "{stdout}");
    assert!(!stdout.contains("creation, whole fill"), "{stdout}");
    assert!(stdout.contains("devices counted 30"), "{stdout}");
    // Another N than the kept store's is refused rather than measured on the wrong store.
    let other = run("31");
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("holds 30 devices"),
        "{other:?}"
    );
}
