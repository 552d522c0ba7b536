//! `provisiond dhcp-notify` (ISC dhcpd / dxtorc, dnsmasq and Kea styles) against a running
//! daemon's dhcpinfo socket, and the socket's handling of bad input and floods.

mod common;

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{command, run, start_daemon, PATIENCE};
use serde_json::Value;

/// Hex of "yealink", as ISC dhcpd's `binary-to-ascii(16, 8, "", …)` writes it.
const YEALINK_HEX: &str = "7965616c696e6b";

fn config(dir: &Path) -> PathBuf {
    dir.join("provisiond.toml")
}

fn socket(dir: &Path) -> PathBuf {
    dir.join("dhcpinfo.sock")
}

/// `provisiond ARGS…` with extra environment variables; (exit code, stdout, stderr).
fn provisiond(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = command(dir);
    cmd.args(args).envs(env.iter().copied());
    run(&mut cmd)
}

/// `provisiond dhcp-notify --config <dir's config> ARGS…`, which must exit 0 silently.
fn notify_ok(dir: &Path, args: &[&str]) {
    let mut cmd = command(dir);
    cmd.arg("dhcp-notify")
        .arg("--config")
        .arg(config(dir))
        .args(args);
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    assert_eq!((stdout.as_str(), stderr.as_str()), ("", ""), "{args:?}");
}

/// The devices, through the admin CLI on the daemon's admin socket.
fn devices(dir: &Path) -> Vec<Value> {
    let mut cmd = command(dir);
    cmd.args(["device", "list", "--all", "--json", "--socket"])
        .arg(dir.join("api.sock"));
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, 0, "device list: {stderr}");
    let json: Value = serde_json::from_str(&stdout).expect("device list JSON");
    json["devices"].as_array().cloned().unwrap_or_default()
}

fn device(dir: &Path, mac: &str) -> Option<Value> {
    devices(dir)
        .into_iter()
        .find(|d| d["mac"].as_str() == Some(mac))
}

/// Polls `check` until it gives a value (bounded by PATIENCE).
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the device with `mac` has `ip` (`None`: no IP) and returns it.
fn wait_device(dir: &Path, mac: &str, ip: Option<&str>) -> Value {
    wait_for(&format!("{mac} with ip {ip:?}"), || {
        device(dir, mac).filter(|d| d.get("ip").and_then(Value::as_str) == ip)
    })
}

/// `provisiond_dhcpinfo_events_total` by outcome, from `/metrics` on the admin socket.
fn metrics(dir: &Path) -> BTreeMap<String, u64> {
    let mut stream = UnixStream::connect(dir.join("api.sock")).expect("admin socket");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer
        .lines()
        .filter_map(|l| l.strip_prefix("provisiond_dhcpinfo_events_total{outcome=\""))
        .filter_map(|l| l.split_once("\"} "))
        .map(|(outcome, n)| (outcome.to_owned(), n.trim().parse().unwrap()))
        .collect()
}

fn dropped(m: &BTreeMap<String, u64>) -> u64 {
    ["oversize", "malformed", "queue_full", "failed"]
        .iter()
        .map(|k| m[*k])
        .sum()
}

#[test]
fn dxtorc_arguments_commit_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (_daemon, _) = start_daemon(dir);

    // Exactly what Wazo's dhcpd.conf hands dxtorc, dotted hex.
    let dotted = "79.65.61.6c.69.6e.6b";
    notify_ok(
        dir,
        &[
            "commit",
            "10.0.0.5",
            "80:5e:c0:aa:bb:cc",
            &format!("060{dotted}"),
            "",
        ],
    );
    let d = wait_device(dir, "80:5e:c0:aa:bb:cc", Some("10.0.0.5"));
    assert_eq!(d["vendor"], "Yealink", "{d}");
    assert_eq!(d["plugin"], "yealink", "{d}");

    // dxtorc's `release IP`: the device keeps its record, loses the address.
    notify_ok(dir, &["release", "10.0.0.5"]);
    let d = wait_device(dir, "80:5e:c0:aa:bb:cc", None);
    assert_eq!(d["vendor"], "Yealink");

    // The "" separator variant (undotted hex) and ISC's unpadded MAC, with --socket.
    let sock = socket(dir);
    let mut cmd = command(dir);
    cmd.arg("dhcp-notify")
        .arg("--socket")
        .arg(&sock)
        .args(["commit", "10.0.0.6", "0:15:65:a:b:c"])
        .arg(format!("060{YEALINK_HEX}"));
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!((code, stderr.as_str()), (0, ""));
    let d = wait_device(dir, "00:15:65:0a:0b:0c", Some("10.0.0.6"));
    assert_eq!(d["vendor"], "Yealink");

    // Named flag instead of the hex option; then expiry with the MAC (our extension).
    notify_ok(
        dir,
        &[
            "--vendor-class",
            "Yealink SIP-T46S",
            "commit",
            "10.0.0.11",
            "80:5e:c0:00:00:11",
        ],
    );
    let d = wait_device(dir, "80:5e:c0:00:00:11", Some("10.0.0.11"));
    assert_eq!(d["vendor"], "Yealink");
    notify_ok(dir, &["expiry", "10.0.0.11", "80:5e:c0:00:00:11"]);
    wait_device(dir, "80:5e:c0:00:00:11", None);

    // Bad input: one line on stderr, exit 0, nothing sent.
    let before = metrics(dir)["received"];
    for bad in [
        &["commit", "10.0.0.5", "nope"][..],
        &["commit", "10.0.0.5", "80:5e:c0:aa:bb:cc", "06x"][..],
        &["renew", "10.0.0.5"][..],
        &[
            "--option",
            "300=x",
            "commit",
            "10.0.0.5",
            "80:5e:c0:aa:bb:cc",
        ][..],
        &[][..],
    ] {
        let mut cmd = command(dir);
        cmd.arg("dhcp-notify")
            .arg("--config")
            .arg(config(dir))
            .args(bad);
        let (code, _, stderr) = run(&mut cmd);
        assert_eq!(code, 0, "{bad:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{bad:?}: {stderr}");
        assert!(stderr.starts_with("provisiond dhcp-notify: "), "{stderr}");
    }
    assert_eq!(metrics(dir)["received"], before);
}

#[test]
fn dnsmasq_script() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (_daemon, _) = start_daemon(dir);
    let cfg = config(dir);
    let cfg = cfg.to_str().unwrap();

    // `dhcp-script=/usr/bin/provisiond`: dnsmasq runs the binary with its own arguments.
    let (code, stdout, stderr) = provisiond(
        dir,
        &["add", "80:5e:c0:00:00:01", "10.0.0.7", "phone-1"],
        &[
            ("PROVISIOND_CONFIG", cfg),
            ("DNSMASQ_VENDOR_CLASS", "yealink"),
            ("DNSMASQ_REQUESTED_OPTIONS", "1,3,6,66,160"),
            ("DNSMASQ_TIME_REMAINING", "3600"),
        ],
    );
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "", ""));
    let d = wait_device(dir, "80:5e:c0:00:00:01", Some("10.0.0.7"));
    assert_eq!(d["vendor"], "Yealink", "{d}");

    // del: a release that carries the MAC.
    let (code, _, stderr) = provisiond(
        dir,
        &["del", "80:5e:c0:00:00:01", "10.0.0.7", "phone-1"],
        &[("PROVISIOND_CONFIG", cfg)],
    );
    assert_eq!((code, stderr.as_str()), (0, ""));
    wait_device(dir, "80:5e:c0:00:00:01", None);

    // The same through the subcommand, `old` (dnsmasq restarting) with a user class.
    notify_ok(
        dir,
        &[
            "--user-class",
            "office",
            "old",
            "80:5e:c0:00:00:01",
            "10.0.0.17",
        ],
    );
    wait_device(dir, "80:5e:c0:00:00:01", Some("10.0.0.17"));

    // Actions without a lease: nothing on stdout (init's lease list) or stderr, exit 0.
    let before = metrics(dir)["received"];
    for args in [
        &["init"][..],
        &["tftp", "2048", "10.0.0.7", "/srv/tftp/y000000000028.cfg"][..],
        &[
            "add",
            "00:01:00:01:2a:bc:de:f0:12:34:56:78:9a:bc",
            "2001:db8::7",
        ][..],
    ] {
        let (code, stdout, stderr) = provisiond(dir, args, &[("PROVISIOND_CONFIG", cfg)]);
        assert_eq!(
            (code, stdout.as_str(), stderr.as_str()),
            (0, "", ""),
            "{args:?}"
        );
    }
    assert_eq!(metrics(dir)["received"], before);
}

#[test]
fn kea_run_script() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (_daemon, _) = start_daemon(dir);
    let cfg = config(dir);
    // Kea runs the script with the hook point as only argument and only its own variables.
    let kea = |hook: &str, vars: &[(&str, &str)]| {
        let mut cmd = Command::new(common::BIN);
        cmd.current_dir(dir)
            .env_clear()
            .env("PROVISIOND_CONFIG", &cfg)
            .envs(vars.iter().copied())
            .arg(hook);
        run(&mut cmd)
    };
    let (code, stdout, stderr) = kea(
        "leases4_committed",
        &[
            ("QUERY4_TYPE", "DHCPREQUEST"),
            ("QUERY4_HWADDR", "80:5e:c0:00:00:02"),
            ("LEASES4_SIZE", "1"),
            ("LEASES4_AT0_ADDRESS", "10.0.0.8"),
            ("LEASES4_AT0_HWADDR", "80:5e:c0:00:00:02"),
            ("LEASES4_AT0_HWADDR_TYPE", "1"),
            ("LEASES4_AT0_HOSTNAME", ""),
            ("DELETED_LEASES4_SIZE", "0"),
        ],
    );
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "", ""));
    wait_device(dir, "80:5e:c0:00:00:02", Some("10.0.0.8"));

    let lease = [
        ("LEASE4_ADDRESS", "10.0.0.8"),
        ("LEASE4_HWADDR", "80:5e:c0:00:00:02"),
        ("LEASE4_HWADDR_TYPE", "1"),
    ];
    let (code, _, stderr) = kea("lease4_release", &lease);
    assert_eq!((code, stderr.as_str()), (0, ""));
    wait_device(dir, "80:5e:c0:00:00:02", None);

    // Other hook points: ignored quietly.
    let before = metrics(dir)["received"];
    for hook in ["lease4_renew", "lease4_recover", "leases6_committed"] {
        let (code, stdout, stderr) = kea(hook, &lease);
        assert_eq!(
            (code, stdout.as_str(), stderr.as_str()),
            (0, "", ""),
            "{hook}"
        );
    }
    assert_eq!(metrics(dir)["received"], before);
}

#[test]
fn no_daemon_exits_zero_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let args = ["commit", "10.0.0.5", "80:5e:c0:aa:bb:cc"];

    // No socket file.
    let absent = dir.join("absent.sock");
    let started = Instant::now();
    let mut cmd = command(dir);
    cmd.arg("dhcp-notify")
        .arg("--socket")
        .arg(&absent)
        .args(args);
    let (code, stdout, stderr) = run(&mut cmd);
    let elapsed = started.elapsed();
    eprintln!("dhcp-notify without a daemon took {elapsed:?}");
    assert_eq!((code, stdout.as_str()), (0, ""));
    assert!(stderr.contains("no socket at"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // A sanity bound only (the process takes milliseconds): a hang would exceed it.
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");

    // A stale socket file nobody listens on.
    let stale = dir.join("stale.sock");
    drop(UnixDatagram::bind(&stale).unwrap());
    let mut cmd = command(dir);
    cmd.arg("dhcp-notify")
        .arg("--socket")
        .arg(&stale)
        .args(args);
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, 0);
    assert!(stderr.contains("nobody listens"), "{stderr}");

    // A listener that never reads and whose queue is full: the send times out.
    let stuck = dir.join("stuck.sock");
    let _receiver = UnixDatagram::bind(&stuck).unwrap();
    let filler = UnixDatagram::unbound().unwrap();
    filler.set_nonblocking(true).unwrap();
    while filler.send_to(&[0u8; 256], &stuck).is_ok() {}
    let mut cmd = command(dir);
    cmd.arg("dhcp-notify")
        .arg("--socket")
        .arg(&stuck)
        .args(args);
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, 0);
    assert!(stderr.contains("did not take the event"), "{stderr}");

    // A configuration whose dhcpinfo is off: nothing is sent, and it says so.
    let cfg = dir.join("off.toml");
    std::fs::write(&cfg, "[dhcpinfo]\nenabled = false\n").unwrap();
    let mut cmd = command(dir);
    cmd.arg("dhcp-notify").arg("--config").arg(&cfg).args(args);
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, 0);
    assert!(stderr.contains("enabled = false"), "{stderr}");
}

#[test]
fn bad_datagrams_are_counted_and_the_socket_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (_daemon, _) = start_daemon(dir);
    let sock = socket(dir);
    let sender = UnixDatagram::unbound().unwrap();
    sender.send_to(&[b'a'; 3000], &sock).unwrap();
    sender.send_to(b"\xff\xfe\x00garbage", &sock).unwrap();
    sender.send_to(b"renew\n10.0.0.5\n", &sock).unwrap();
    sender
        .send_to(b"commit\n10.0.0.5\n80:5e:c0:aa:bb:cc\n060zz\n", &sock)
        .unwrap();
    let m = wait_for("4 datagrams received", || {
        Some(metrics(dir)).filter(|m| m["received"] == 4)
    });
    assert_eq!(m["oversize"], 1, "{m:?}");
    assert_eq!(m["malformed"], 3, "{m:?}");
    assert_eq!(m["accepted"], 0, "{m:?}");

    // Still serving.
    notify_ok(
        dir,
        &[
            "commit",
            "10.0.0.5",
            "80:5e:c0:aa:bb:cc",
            &format!("060{YEALINK_HEX}"),
        ],
    );
    wait_device(dir, "80:5e:c0:aa:bb:cc", Some("10.0.0.5"));
    // The worker counts an event after applying it: the counter may trail the device.
    let m = wait_for("the good datagram counted", || {
        Some(metrics(dir)).filter(|m| m["accepted"] == 1)
    });
    assert_eq!((m["received"], m["accepted"]), (5, 1), "{m:?}");
}

#[test]
fn flood_is_accounted_for() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (_daemon, _) = start_daemon(dir);
    let sock = socket(dir);
    const ATTEMPTS: usize = 50_000;
    let sent = std::thread::spawn(move || {
        let sender = UnixDatagram::unbound().unwrap();
        sender.set_nonblocking(true).unwrap();
        let good = format!("commit\n10.0.0.50\n80:5e:c0:00:00:50\n060{YEALINK_HEX}\n");
        let (mut sent, mut refused) = (0u64, 0u64);
        for i in 0..ATTEMPTS {
            // One in ten is garbage, so that drops of both kinds happen.
            let dgram: &[u8] = if i % 10 == 9 {
                b"garbage\n"
            } else {
                good.as_bytes()
            };
            match sender.send_to(dgram, &sock) {
                Ok(_) => sent += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => refused += 1,
                Err(e) => panic!("send: {e}"),
            }
        }
        (sent, refused)
    })
    .join()
    .unwrap();
    let (sent, refused) = sent;
    eprintln!("flood: {sent} sent, {refused} refused by a full socket buffer");
    assert!(sent > 0);
    let m = wait_for("every sent datagram received and accounted for", || {
        Some(metrics(dir)).filter(|m| m["received"] == sent && m["accepted"] + dropped(m) == sent)
    });
    eprintln!("flood metrics: {m:?}");
    assert!(m["accepted"] >= 1, "{m:?}");
    assert_eq!(m["oversize"] + m["failed"], 0, "{m:?}");

    // The listener is not stalled.
    notify_ok(dir, &["commit", "10.0.0.51", "80:5e:c0:00:00:51"]);
    wait_device(dir, "80:5e:c0:00:00:51", Some("10.0.0.51"));
    let d = device(dir, "80:5e:c0:00:00:50").expect("flooded device");
    assert_eq!(d["ip"], "10.0.0.50");
}

#[test]
fn paced_stream_of_valid_and_invalid_events_is_accounted_for() {
    // 10,000 datagrams a second for 5 seconds, spread evenly (not a burst): a busy DHCP
    // server's hooks plus garbage. Pacing only: nothing here asserts on time.
    const RATE: u64 = 10_000;
    const SECONDS: u64 = 5;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (_daemon, _) = start_daemon(dir);
    let sock = socket(dir);

    let sent = std::thread::spawn(move || {
        let sender = UnixDatagram::unbound().unwrap();
        sender.set_nonblocking(true).unwrap();
        let oversize = vec![b'a'; 3000];
        // (valid, malformed, oversize) datagrams the socket took, and the ones it refused.
        let (mut valid, mut malformed, mut too_big, mut refused) = (0u64, 0u64, 0u64, 0u64);
        let started = Instant::now();
        for i in 0..RATE * SECONDS {
            // Datagram i leaves no earlier than i / RATE seconds after the start.
            let due = started + Duration::from_micros(i * 1_000_000 / RATE);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            // 16 phones, each with its own address; 7 in 10 valid (commits and releases),
            // 2 malformed (garbage, bad option hex), 1 oversize.
            let phone = i % 16;
            let (dgram, kind): (Vec<u8>, usize) = match i % 10 {
                0..=5 => (
                    format!(
                        "commit\n10.0.1.{phone}\n80:5e:c0:00:01:{phone:02x}\n060{YEALINK_HEX}\n"
                    )
                    .into_bytes(),
                    0,
                ),
                6 => (
                    format!("release\n10.0.1.{phone}\n80:5e:c0:00:01:{phone:02x}\n").into_bytes(),
                    0,
                ),
                7 => (b"garbage\n".to_vec(), 1),
                8 => (
                    format!("commit\n10.0.1.{phone}\n80:5e:c0:00:01:{phone:02x}\n060zz\n")
                        .into_bytes(),
                    1,
                ),
                _ => (oversize.clone(), 2),
            };
            match sender.send_to(&dgram, &sock) {
                Ok(_) => match kind {
                    0 => valid += 1,
                    1 => malformed += 1,
                    _ => too_big += 1,
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => refused += 1,
                Err(e) => panic!("send: {e}"),
            }
        }
        eprintln!(
            "paced: {} datagrams in {:?}",
            RATE * SECONDS,
            started.elapsed()
        );
        (valid, malformed, too_big, refused)
    })
    .join()
    .unwrap();
    let (valid, malformed, too_big, refused) = sent;
    let sent = valid + malformed + too_big;
    eprintln!(
        "paced: {sent} sent ({valid} valid, {malformed} malformed, {too_big} oversize), \
         {refused} refused by a full socket buffer"
    );
    assert!(valid > 0 && malformed > 0 && too_big > 0, "{sent}");

    let m = wait_for("every sent datagram received and accounted for", || {
        Some(metrics(dir)).filter(|m| m["received"] == sent && m["accepted"] + dropped(m) == sent)
    });
    eprintln!("paced metrics: {m:?}");
    // Each kind is counted as what it is: the invalid ones never reach the queue.
    assert_eq!(m["oversize"], too_big, "{m:?}");
    assert_eq!(m["malformed"], malformed, "{m:?}");
    assert_eq!(
        m["accepted"] + m["queue_full"] + m["failed"],
        valid,
        "{m:?}"
    );
    assert!(m["accepted"] >= 1, "{m:?}");

    // Right afterwards, a normal event is applied: the listener is not stalled.
    notify_ok(
        dir,
        &[
            "commit",
            "10.0.2.1",
            "80:5e:c0:00:02:01",
            &format!("060{YEALINK_HEX}"),
        ],
    );
    let d = wait_device(dir, "80:5e:c0:00:02:01", Some("10.0.2.1"));
    assert_eq!(d["vendor"], "Yealink", "{d}");
    // The worker counts an event after applying it: the count may trail the device a moment.
    wait_for("the normal event counted as accepted", || {
        Some(metrics(dir))
            .filter(|after| (after["received"], after["accepted"]) == (sent + 1, m["accepted"] + 1))
    });
}

#[test]
fn without_socket_or_configuration_dhcp_notify_finds_the_embedded_defaults_socket() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // No configuration file (PROVISIOND_CONFIG points at an absent file): `provisiond serve`
    // would run on the embedded development default and listen here.
    std::fs::create_dir(dir.join("provisiond-data")).unwrap();
    let receiver = UnixDatagram::bind(dir.join("provisiond-data/dhcpinfo.sock")).unwrap();
    receiver.set_read_timeout(Some(PATIENCE)).unwrap();

    let (code, stdout, stderr) = provisiond(
        dir,
        &[
            "dhcp-notify",
            "commit",
            "10.0.0.5",
            "80:5e:c0:aa:bb:cc",
            "06079.65.61.6c.69.6e.6b",
        ],
        &[],
    );
    assert_eq!((code, stdout.as_str(), stderr.as_str()), (0, "", ""));
    let mut buf = [0u8; 4096];
    let n = receiver
        .recv(&mut buf)
        .expect("the event reached the socket");
    let event = provisiond::dhcpinfo::parse_datagram(&buf[..n]).unwrap();
    let provisiond::dhcpinfo::Event::Lease(provisiond::ident::RequestContext::Dhcp {
        ip,
        mac,
        options,
        ..
    }) = event
    else {
        panic!("{event:?}");
    };
    assert_eq!(ip.to_string(), "10.0.0.5");
    assert_eq!(mac.to_string(), "80:5e:c0:aa:bb:cc");
    assert!(
        options
            .iter()
            .any(|(code, value)| *code == 60 && value == b"yealink"),
        "{options:?}"
    );

    // Elsewhere, the error names the socket and the directory it was looked for in.
    drop(receiver);
    std::fs::remove_file(dir.join("provisiond-data/dhcpinfo.sock")).unwrap();
    let (code, _, stderr) = provisiond(
        dir,
        &["dhcp-notify", "commit", "10.0.0.5", "80:5e:c0:aa:bb:cc"],
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        stderr.contains(&format!(
            "no socket at provisiond-data/dhcpinfo.sock (in {})",
            dir.canonicalize().unwrap().display()
        )),
        "{stderr}"
    );
}
