//! Boot storms through the `provisiond` binary with real clients on 127.0.0.1: a rollout's
//! burst passes autocreation on the default settings, a flood of made-up MACs is capped by the
//! token bucket (and its log lines bounded), one phone spends one token whichever way it
//! shows up, and the phones' listener queues a storm's connections.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Instant;

use common::{command, listening_on, write_config, Daemon, PATIENCE};
use nix::sys::signal::Signal;

const YEALINK_UA: &str = "Yealink SIP-T54W 96.86.0.70";
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 95, 0, 1);
/// Log lines per source and window (`ratelimit::Limits::default`).
const LOG_BURST: u64 = 10;

/// A daemon on a fresh configuration with `body` added and `general` keys in a drop-in
/// (the main file has its own `[general]`), ready; its HTTP address.
fn daemon(dir: &Path, general: &str, body: &str) -> (Daemon, SocketAddr) {
    let config = write_config(dir, body);
    std::fs::create_dir_all(dir.join("conf.d")).unwrap();
    std::fs::write(
        dir.join("conf.d/50-general.toml"),
        format!("[general]\n{general}"),
    )
    .unwrap();
    let mut daemon = Daemon::start({
        let mut cmd = command(dir);
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    let http = listening_on(&daemon.expect_line(&["HTTP provisioning on"]));
    daemon.expect_line(&["ready"]);
    (daemon, http)
}

/// Yealink-style MAC number `i` of a run: `80:5e:c0:<run>:<i>`.
fn mac(run: u8, i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x80, 0x5e, 0xc0, run, b[2], b[3]]
}

fn colon(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn bare(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect()
}

/// One request over `stream` with `Connection: close`; the status and the body.
fn exchange<S: Read + Write>(mut stream: S, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The phone's first fetch: its MAC file with its User-Agent; the status.
fn fetch(http: SocketAddr, mac: [u8; 6]) -> u16 {
    let stream = TcpStream::connect(http).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = format!(
        "GET /{}.cfg HTTP/1.1\r\nHost: localhost\r\nUser-Agent: {YEALINK_UA} {}\r\nConnection: close\r\n\r\n",
        bare(mac),
        colon(mac)
    );
    exchange(stream, &request).0
}

/// A request to the REST API over the admin socket (no token needed there).
fn admin(dir: &Path, method: &str, path: &str) -> (u16, String) {
    // curl: listings are streamed (chunked), which this file's bare exchange does not decode.
    let socket = dir.join("api.sock");
    let via = ["--unix-socket", socket.to_str().unwrap()];
    let reply = common::curl(&via, &format!("http://localhost{path}"), method, &[], None);
    let body = match reply.body {
        serde_json::Value::String(text) => text,
        serde_json::Value::Null => String::new(),
        json => json.to_string(),
    };
    (reply.status, body)
}

/// The value of the `/metrics` line that starts with `series`.
fn metric(dir: &Path, series: &str) -> u64 {
    let (status, text) = admin(dir, "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|n| n.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// The devices in the store, as the API lists them.
fn devices(dir: &Path) -> Vec<serde_json::Value> {
    let (status, body) = admin(dir, "GET", "/api/provd/0.2/dev_mgr/devices?recurse=true");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    list["devices"].as_array().unwrap().clone()
}

#[test]
fn a_rollout_of_a_thousand_new_phones_at_once_is_created_on_the_default_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_daemon, http) = daemon(dir, "", "");
    const PHONES: u32 = 1000;
    const LANES: u32 = 100;
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let lanes: Vec<_> = (0..LANES)
            .map(|lane| {
                s.spawn(move || {
                    (lane..PHONES)
                        .step_by(LANES as usize)
                        .map(|i| fetch(http, mac(1, i)))
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        lanes.into_iter().flat_map(|l| l.join().unwrap()).collect()
    });
    let refused = statuses.iter().filter(|&&s| s != 200).count();
    assert_eq!(refused, 0, "{refused} of {PHONES} phones refused");
    assert_eq!(
        metric(dir, "provisiond_autocreate_total{outcome=\"created\"}"),
        u64::from(PHONES)
    );
    assert_eq!(
        metric(dir, "provisiond_autocreate_total{outcome=\"refused_rate\"}"),
        0
    );
    assert_eq!(devices(dir).len(), PHONES as usize);
}

#[test]
fn a_flood_beyond_the_bucket_is_refused_counted_and_logged_within_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (burst, per_second) = (20u64, 1u64);
    let (mut daemon, http) = daemon(
        dir,
        &format!("autocreate_burst = {burst}\nautocreate_per_second = {per_second}\n"),
        "",
    );
    const FLOOD: u32 = 400;
    let started = Instant::now();
    let created = (0..FLOOD)
        .filter(|&i| fetch(http, mac(2, i)) == 200)
        .count() as u64;
    let elapsed = started.elapsed();
    // Every refused phone was answered 404 (its file does not exist for it yet).
    let refused = u64::from(FLOOD) - created;
    let cap = burst + (elapsed.as_secs_f64() * per_second as f64).ceil() as u64;
    assert!(
        (burst..=cap).contains(&created),
        "{created} created; the cap is {burst} + {per_second}/s over {elapsed:?}"
    );
    assert_eq!(devices(dir).len() as u64, created);
    assert_eq!(
        metric(dir, "provisiond_autocreate_total{outcome=\"refused_rate\"}"),
        refused
    );
    assert_eq!(
        metric(
            dir,
            "provisiond_rejected_total{transport=\"ident\",reason=\"autocreate\"}"
        ),
        refused
    );
    assert_eq!(
        metric(dir, "provisiond_autocreate_tokens_spent_total"),
        created
    );

    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait().success(), "{:?}", daemon.seen);
    let windows = elapsed.as_secs() / 60 + 1;
    let single = daemon
        .seen
        .iter()
        .filter(|l| l.contains("unknown phone not created: autocreation limit (no token left)"))
        .count() as u64;
    let summaries: Vec<&String> = daemon
        .seen
        .iter()
        .filter(|l| l.contains("unknown phones not created (autocreation limit) from 127.0.0.1"))
        .collect();
    let suppressed: u64 = summaries
        .iter()
        .map(|l| {
            l.split_once("suppressed=")
                .and_then(|(_, n)| n.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no suppressed= in {l}"))
        })
        .sum();
    let log = daemon.seen.join("\n");
    assert!(
        (1..=LOG_BURST * windows).contains(&single),
        "{single} lines:\n{log}"
    );
    assert!(
        (1..=windows).contains(&(summaries.len() as u64)),
        "{} summaries:\n{log}",
        summaries.len()
    );
    assert_eq!(single + suppressed, refused, "{log}");
}

#[test]
fn one_phone_spends_one_token_through_its_lease_then_its_fetches() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = common::free_udp_port();
    // A bucket of one token, so that a second spend would be refused (or, a second later,
    // show in the spent count).
    let (_daemon, http) = daemon(
        dir,
        "autocreate_burst = 1\nautocreate_per_second = 1\n",
        &format!(
            "[dhcp]\nmode = \"server\"\nport = {port}\n[[dhcp.pools]]\nsubnet = \"10.95.0.0/16\"\n\
             ranges = [{{ start = \"10.95.0.10\", end = \"10.95.0.250\" }}]\n"
        ),
    );
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let phone = mac(3, 1);
    let leased = common::relayed_dora(server, RELAY, phone, 0x5703_0001, Some(b"yealink"));
    // The lease created the phone (its ACK left after the device was written): the fetch
    // that follows finds it and spends nothing.
    let listed = devices(dir);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["mac"], colon(phone).as_str());
    assert_eq!(listed[0]["ip"], leased.to_string().as_str());
    assert_eq!(fetch(http, phone), 200);
    assert_eq!(metric(dir, "provisiond_autocreate_tokens_spent_total"), 1);
    assert_eq!(
        metric(dir, "provisiond_autocreate_total{outcome=\"created\"}"),
        1
    );

    // The administrator deletes it; the phone fetches again at once: it spent its token
    // minutes ago at most, so it is created again without spending another, bucket empty
    // or not.
    let id = listed[0]["id"].as_str().unwrap().to_owned();
    let (status, body) = admin(
        dir,
        "DELETE",
        &format!("/api/provd/0.2/dev_mgr/devices/{id}"),
    );
    assert_eq!(status, 204, "{body}");
    assert_eq!(fetch(http, phone), 200);
    assert_eq!(devices(dir).len(), 1);
    assert_eq!(metric(dir, "provisiond_autocreate_tokens_spent_total"), 1);
    assert_eq!(
        metric(dir, "provisiond_autocreate_total{outcome=\"created\"}"),
        2
    );
    assert_eq!(
        metric(dir, "provisiond_autocreate_total{outcome=\"refused_rate\"}"),
        0
    );
}

#[test]
fn the_phones_listener_queues_a_boot_storm_of_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let (_daemon, http) = daemon(tmp.path(), "", "");
    // For a listening socket, ss's Send-Q is its backlog: what the kernel queues before the
    // daemon accepts. A thousand phones connect at once; beyond the backlog their SYNs are
    // dropped and retried a second later.
    let out = std::process::Command::new("ss")
        .args(["-Hltn", &format!("sport = :{}", http.port())])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let backlog: u32 = text
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no listener line in {text:?}"));
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(backlog, somaxconn.min(4096), "{text}");
}
