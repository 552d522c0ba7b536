//! Identification over a real store with plugins written by the test.

use std::fs;
use std::net::IpAddr;
use std::sync::{Arc, Barrier};

use provisiond::ident::{DhcpOp, Identifier, RequestContext};
use provisiond::model::{Added, Device, Mac};
use provisiond::plugins::{Origin, PluginSet};
use provisiond::store::Store;

struct Env {
    _dir: tempfile::TempDir,
    store: Store,
    plugins: PluginSet,
    ident: Identifier,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("plugins");
    let write = |name: &str, manifest: &str| {
        fs::create_dir_all(root.join(name)).unwrap();
        fs::write(root.join(name).join("plugin.toml"), manifest).unwrap();
    };
    write(
        "acme",
        r#"name = "acme"
version = "1"
vendor = "Acme"
[[identify]]
source = "user_agent"
pattern = '^Acme (?P<model>A\d+) (?P<version>[\d.]+) (?P<mac>[0-9a-f:]{17})$'
score = 100
[[identify]]
source = "user_agent"
pattern = '^Acme'
[[identify]]
source = "dhcp_vendor_class"
pattern = '^acme-(?P<model>A\d+)$'
[[identify]]
source = "filename"
pattern = '^(?P<mac>[0-9a-f]{12})\.cfg$'
score = 10
"#,
    );
    write(
        "generic",
        r#"name = "generic"
version = "1"
vendor = "Generic"
[[identify]]
source = "user_agent"
pattern = '^Acme'
score = 20
"#,
    );
    let plugins = PluginSet::load(&[(root, Origin::Builtin)]);
    assert!(plugins.errors.is_empty(), "{:?}", plugins.errors);
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults("master").unwrap();
    let ident = Identifier::new(store.clone(), "master");
    Env {
        _dir: dir,
        store,
        plugins,
        ident,
    }
}

fn http(src: &str, path: &str, ua: Option<&str>) -> RequestContext {
    RequestContext::Http {
        src: src.parse().unwrap(),
        path: path.into(),
        user_agent: ua.map(str::to_owned),
    }
}

const UA: &str = "Acme A20 2.1.0 00:11:22:33:44:55";

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

#[test]
fn an_unknown_phone_is_created_once_in_autoprov_then_found_again() {
    let env = env();
    let first = env
        .ident
        .identify(&http("10.0.0.50", "a.cfg", Some(UA)), &env.plugins)
        .unwrap()
        .unwrap();
    assert!(first.created);
    let d = &first.device;
    assert_eq!(d.mac, Some(mac("00:11:22:33:44:55")));
    assert_eq!(d.ip, Some("10.0.0.50".parse().unwrap()));
    assert_eq!(
        (
            d.vendor.as_deref(),
            d.model.as_deref(),
            d.version.as_deref()
        ),
        (Some("Acme"), Some("A20"), Some("2.1.0"))
    );
    assert_eq!(
        d.plugin.as_deref(),
        Some("acme"),
        "the highest-scoring rule chooses the plugin"
    );
    assert_eq!(first.plugin.as_ref().map(|p| p.name.as_str()), Some("acme"));
    assert_eq!(
        (d.config.as_deref(), d.tenant.as_str(), d.added, d.is_new),
        (Some("autoprov"), "master", Added::Auto, true)
    );
    let password = d.admin_password.clone().unwrap();
    assert!(
        password.len() >= 16 && password.chars().all(|c| c.is_ascii_alphanumeric()),
        "{password}"
    );

    let again = env
        .ident
        .identify(&http("10.0.0.50", "a.cfg", Some(UA)), &env.plugins)
        .unwrap()
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.device.id, d.id);
    assert_eq!(
        again.device.revision, d.revision,
        "nothing changed, nothing written"
    );
    assert_eq!(
        again.device.admin_password.as_deref(),
        Some(password.as_str()),
        "the password is stable"
    );
    assert_eq!(env.store.device_count(), 1);
}

#[test]
fn changed_facts_are_written_and_known_ones_kept() {
    let env = env();
    let first = env
        .ident
        .identify(&http("10.0.0.50", "a.cfg", Some(UA)), &env.plugins)
        .unwrap()
        .unwrap();
    let upgraded = env
        .ident
        .identify(
            &http(
                "10.0.0.51",
                "a.cfg",
                Some("Acme A20 2.2.0 00:11:22:33:44:55"),
            ),
            &env.plugins,
        )
        .unwrap()
        .unwrap();
    assert_eq!(upgraded.device.id, first.device.id);
    assert_eq!(upgraded.device.version.as_deref(), Some("2.2.0"));
    assert_eq!(upgraded.device.ip, Some("10.0.0.51".parse().unwrap()));
    assert_eq!(upgraded.device.revision, first.device.revision + 1);

    // An administrator's choice of plugin is not overridden by identification.
    let mut chosen = upgraded.device.clone();
    chosen.plugin = Some("generic".into());
    env.store.update_device(&chosen).unwrap();
    let after = env
        .ident
        .identify(&http("10.0.0.51", "a.cfg", Some(UA)), &env.plugins)
        .unwrap()
        .unwrap();
    assert_eq!(after.device.plugin.as_deref(), Some("generic"));
    assert_eq!(
        after.plugin.map(|p| p.name.clone()).as_deref(),
        Some("generic")
    );
}

#[test]
fn tftp_requests_find_the_device_by_file_name_or_source_ip() {
    let env = env();
    let by_name = env
        .ident
        .identify(
            &RequestContext::Tftp {
                src: "10.0.0.60".parse().unwrap(),
                filename: "/001122334455.cfg".into(),
            },
            &env.plugins,
        )
        .unwrap()
        .unwrap();
    assert!(
        by_name.created,
        "a MAC in the file name is enough to create the device"
    );
    assert_eq!(by_name.device.mac, Some(mac("00:11:22:33:44:55")));
    let by_ip = env
        .ident
        .identify(
            &RequestContext::Tftp {
                src: "10.0.0.60".parse().unwrap(),
                filename: "common.cfg".into(),
            },
            &env.plugins,
        )
        .unwrap()
        .unwrap();
    assert_eq!(by_ip.device.id, by_name.device.id);
    assert!(!by_ip.created);
}

#[test]
fn requests_without_a_mac_never_create_devices() {
    let env = env();
    for ctx in [
        http("10.0.0.70", "common.cfg", Some("Acme A20")),
        http("10.0.0.70", "x", None),
        RequestContext::Tftp {
            src: "10.0.0.70".parse().unwrap(),
            filename: "common.cfg".into(),
        },
    ] {
        assert!(
            env.ident.identify(&ctx, &env.plugins).unwrap().is_none(),
            "{ctx:?}"
        );
    }
    assert_eq!(env.store.device_count(), 0);
}

#[test]
fn an_ip_shared_with_a_different_mac_is_another_device() {
    let env = env();
    let a = env
        .ident
        .identify(&http("10.0.0.80", "a", Some(UA)), &env.plugins)
        .unwrap()
        .unwrap();
    let b = env
        .ident
        .identify(
            &http("10.0.0.80", "a", Some("Acme A20 2.1.0 00:11:22:33:44:66")),
            &env.plugins,
        )
        .unwrap()
        .unwrap();
    assert!(b.created);
    assert_ne!(a.device.id, b.device.id);
    let at_ip = env
        .store
        .devices_by_ip(&"10.0.0.80".parse::<IpAddr>().unwrap())
        .unwrap();
    assert_eq!(at_ip.len(), 2);
    // With two devices behind one address, an IP-only request is ambiguous: nobody is chosen.
    assert!(env
        .ident
        .identify(&http("10.0.0.80", "common.cfg", None), &env.plugins)
        .unwrap()
        .is_none());
}

#[test]
fn dhcp_events_create_update_and_release() {
    let env = env();
    let commit = RequestContext::Dhcp {
        op: DhcpOp::Commit,
        ip: "10.0.0.90".parse().unwrap(),
        mac: mac("00:11:22:33:44:77"),
        options: vec![(60, b"acme-A30".to_vec()), (12, b"phone".to_vec())],
    };
    let created = env.ident.identify(&commit, &env.plugins).unwrap().unwrap();
    assert!(created.created);
    assert_eq!(
        (
            created.device.vendor.as_deref(),
            created.device.model.as_deref()
        ),
        (Some("Acme"), Some("A30"))
    );
    assert_eq!(created.device.ip, Some("10.0.0.90".parse().unwrap()));

    let release = RequestContext::Dhcp {
        op: DhcpOp::Release,
        ip: "10.0.0.90".parse().unwrap(),
        mac: mac("00:11:22:33:44:77"),
        options: vec![],
    };
    let released = env.ident.identify(&release, &env.plugins).unwrap().unwrap();
    assert_eq!(released.device.ip, None);
    assert_eq!(released.device.id, created.device.id);

    let unknown = RequestContext::Dhcp {
        op: DhcpOp::Expiry,
        ip: "10.0.0.91".parse().unwrap(),
        mac: mac("00:11:22:33:44:78"),
        options: vec![],
    };
    assert!(
        env.ident
            .identify(&unknown, &env.plugins)
            .unwrap()
            .is_none(),
        "an expiry never creates a device"
    );
    assert_eq!(env.store.device_count(), 1);
}

#[test]
fn fifty_concurrent_first_requests_create_exactly_one_device() {
    let env = Arc::new(env());
    let barrier = Arc::new(Barrier::new(50));
    let handles: Vec<_> = (0..50)
        .map(|i| {
            let env = Arc::clone(&env);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let ctx = http(&format!("10.0.1.{}", i + 1), "a.cfg", Some(UA));
                env.ident.identify(&ctx, &env.plugins).unwrap().unwrap()
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        results.iter().filter(|r| r.created).count(),
        1,
        "exactly one request created the device"
    );
    let ids: std::collections::BTreeSet<&str> =
        results.iter().map(|r| r.device.id.as_str()).collect();
    assert_eq!(ids.len(), 1, "every request got the same device");
    assert_eq!(env.store.device_count(), 1);
    let stored: Device = env
        .store
        .device_by_mac(&mac("00:11:22:33:44:55"))
        .unwrap()
        .unwrap();
    assert!(stored.admin_password.is_some());
}

#[test]
fn among_rules_of_equal_score_the_first_wins() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tie");
    fs::create_dir_all(&p).unwrap();
    fs::write(
        p.join("plugin.toml"),
        "name = \"tie\"\nversion = \"1\"\nvendor = \"Tie\"\n\
         [[identify]]\nsource = \"user_agent\"\npattern = '^Tie (?P<model>T\\d+)'\n\
         [[identify]]\nsource = \"user_agent\"\npattern = '^Tie'\n",
    )
    .unwrap();
    let set = PluginSet::load(&[(dir.path().to_path_buf(), Origin::Builtin)]);
    let found = set
        .get("tie")
        .unwrap()
        .extract(provisiond::plugins::RuleSource::UserAgent, "Tie T7 1.0")
        .unwrap();
    assert_eq!(
        found.model.as_deref(),
        Some("T7"),
        "the later vendor-only rule must not drop the model"
    );
}

#[test]
fn read_only_identification_answers_known_phones_and_never_writes() {
    use provisiond::ident::IdentError;
    let env = env();
    let ctx = http("10.0.0.50", "a.cfg", Some(UA));
    assert!(
        matches!(
            env.ident.identify_readonly(&ctx, &env.plugins),
            Err(IdentError::WouldWrite)
        ),
        "a new phone needs a write"
    );
    assert_eq!(env.store.device_count(), 0);

    let created = env.ident.identify(&ctx, &env.plugins).unwrap().unwrap();
    let known = env
        .ident
        .identify_readonly(&ctx, &env.plugins)
        .unwrap()
        .unwrap();
    assert_eq!(
        (known.device.id.as_str(), known.device.revision),
        (created.device.id.as_str(), created.device.revision)
    );

    let upgraded = http(
        "10.0.0.50",
        "a.cfg",
        Some("Acme A20 2.2.0 00:11:22:33:44:55"),
    );
    assert!(matches!(
        env.ident.identify_readonly(&upgraded, &env.plugins),
        Err(IdentError::WouldWrite)
    ));
    let stored = env.store.device(&created.device.id).unwrap().unwrap();
    assert_eq!(
        stored.version.as_deref(),
        Some("2.1.0"),
        "nothing was written"
    );
    assert_eq!(stored.revision, created.device.revision);
}

#[test]
fn autocreation_is_bounded_in_rate_and_count() {
    use provisiond::ident::AutocreateLimits;
    let env = env();
    // A bucket of 5 refilled at 5/s.
    env.ident.set_limits(AutocreateLimits::new(5, 5, 1_000));
    let mut created = 0;
    for i in 0..40 {
        let ua = format!("Acme A20 2.1.0 00:11:22:33:55:{i:02x}");
        if env
            .ident
            .identify(&http("10.0.2.1", "a.cfg", Some(&ua)), &env.plugins)
            .unwrap()
            .is_some()
        {
            created += 1;
        }
    }
    // A burst of 5, plus what refills while the loop runs (a small fraction of a second).
    assert!((5..=10).contains(&created), "{created} created");
    assert_eq!(env.store.device_count(), created);
    // Known phones are still answered when the bucket is empty.
    let first = "Acme A20 2.1.0 00:11:22:33:55:00";
    assert!(env
        .ident
        .identify(&http("10.0.2.1", "a.cfg", Some(first)), &env.plugins)
        .unwrap()
        .is_some());

    let env = self::env();
    env.ident.set_limits(AutocreateLimits::new(1_000, 1_000, 3));
    for i in 0..10 {
        let ua = format!("Acme A20 2.1.0 00:11:22:33:66:{i:02x}");
        env.ident
            .identify(&http("10.0.3.1", "a.cfg", Some(&ua)), &env.plugins)
            .unwrap();
    }
    assert_eq!(env.store.device_count(), 3, "max_devices caps the store");
    let counters = env.ident.autocreate_counters();
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&counters.created), 3);
    assert_eq!(load(&counters.refused_max_devices), 7);
}
