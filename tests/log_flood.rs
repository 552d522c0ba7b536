//! Floods of bad requests from one source, through real sockets to the `provisiond` binary:
//! its log stays a few lines long (a burst, then one summary per window) while `/metrics`
//! counts every request.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{command, listening_on, write_config, Daemon, PATIENCE};
use nix::sys::signal::Signal;

/// Requests in each flood.
const FLOOD: u64 = 5000;
/// Lines logged per source and window, and the window (`ratelimit::Limits::default`).
const BURST: u64 = 10;
const WINDOW_SECS: u64 = 60;

/// The value of the `/metrics` line that starts with `series` (the admin socket, no token).
fn metric(dir: &Path, series: &str) -> Option<u64> {
    let mut stream = UnixStream::connect(dir.join("api.sock")).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let prefix = format!("{series} ");
    answer
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map(|n| n.trim().parse().unwrap())
}

/// Waits until `series` reaches `want` (it must, the requests were all delivered).
fn wait_metric(dir: &Path, series: &str, want: u64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = metric(dir, series);
        if got == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {got:?}, not {want}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A daemon on a fresh configuration with `body` added, once it is ready, and the address
/// that its log line containing `listener` names.
fn daemon(dir: &Path, body: &str, listener: &str) -> (Daemon, SocketAddr) {
    let config = write_config(dir, body);
    let mut daemon = Daemon::start({
        let mut cmd = command(dir);
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    daemon.expect_line(&["ready"]);
    let addr = daemon
        .seen
        .iter()
        .find(|l| l.contains(listener))
        .map(|l| listening_on(l))
        .unwrap_or_else(|| panic!("no {listener:?} line in {:?}", daemon.seen));
    (daemon, addr)
}

/// What the log says about a flood.
#[derive(Debug)]
struct Told {
    /// Lines about one request each.
    single: u64,
    /// Summary lines.
    summaries: u64,
    /// Requests the summaries say were suppressed.
    suppressed: u64,
}

fn told(lines: &[String], single: &str, summary: &str) -> Told {
    let mut out = Told {
        single: 0,
        summaries: 0,
        suppressed: 0,
    };
    for line in lines {
        if line.contains(summary) {
            out.summaries += 1;
            out.suppressed += line
                .split_once("suppressed=")
                .and_then(|(_, n)| n.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no suppressed= field in {line}"));
        } else if line.contains(single) {
            out.single += 1;
        }
    }
    out
}

/// Stops the daemon, then checks that its log told the whole flood in few lines: a burst
/// and one summary per window (the flood took `elapsed`, so it spanned at most
/// `elapsed / 60 + 1` windows), and that the summaries plus the single lines account for
/// every request.
fn assert_told(mut daemon: Daemon, elapsed: Duration, single: &str, summary: &str) {
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait().success(), "{:?}", daemon.seen);
    let windows = elapsed.as_secs() / WINDOW_SECS + 1;
    let t = told(&daemon.seen, single, summary);
    let log = daemon.seen.join("\n");
    assert!(
        (BURST..=BURST * windows).contains(&t.single),
        "{t:?} over {windows} windows:\n{log}"
    );
    assert!(
        (1..=windows).contains(&t.summaries),
        "{t:?} over {windows} windows:\n{log}"
    );
    assert_eq!(t.single + t.suppressed, FLOOD, "{t:?}:\n{log}");
    // Nothing else is logged per request either: the whole run is a few dozen lines.
    assert!(
        daemon.seen.len() as u64 <= (BURST + 1) * windows + 40,
        "{} lines:\n{log}",
        daemon.seen.len()
    );
}

#[test]
fn a_flood_of_malformed_tftp_datagrams_is_summarised_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (daemon, tftp) = daemon(dir, "", "TFTP provisioning on");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let started = Instant::now();
    let mut reply = [0u8; 516];
    for _ in 0..FLOOD {
        client.send_to(b"\x00\x01no-terminator", tftp).unwrap();
        // Each gets ERROR 4: waiting for it paces the flood so that none is lost.
        let (n, _) = client.recv_from(&mut reply).expect("an ERROR in time");
        assert_eq!(&reply[..4], b"\x00\x05\x00\x04", "{:?}", &reply[..n]);
    }
    wait_metric(
        dir,
        "provisiond_rejected_total{transport=\"tftp\",reason=\"malformed\"}",
        FLOOD,
    );
    assert_told(
        daemon,
        started.elapsed(),
        "malformed request: file name not NUL-terminated",
        "malformed TFTP requests from 127.0.0.1 in the last",
    );
}

#[test]
fn a_flood_of_malformed_lease_events_is_summarised_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (daemon, _) = daemon(dir, "", "REST API on");
    let sender = UnixDatagram::unbound().unwrap();
    let started = Instant::now();
    for _ in 0..FLOOD {
        // A full receive queue blocks the sender: nothing is lost.
        sender
            .send_to(b"bogus\n10.0.0.1\n", dir.join("dhcpinfo.sock"))
            .unwrap();
    }
    wait_metric(
        dir,
        "provisiond_dhcpinfo_events_total{outcome=\"malformed\"}",
        FLOOD,
    );
    wait_metric(
        dir,
        "provisiond_rejected_total{transport=\"dhcpinfo\",reason=\"malformed\"}",
        FLOOD,
    );
    assert_told(
        daemon,
        started.elapsed(),
        "dhcpinfo: malformed lease event dropped",
        "malformed lease events from the dhcpinfo socket in the last",
    );
}

/// Sends `FLOOD` GETs of `path` with `headers` over one keep-alive connection; each must be
/// answered `status`.
fn http_flood(addr: SocketAddr, path: &str, headers: &str, status: &str) {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    for _ in 0..FLOOD {
        writer.write_all(request.as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(&format!("HTTP/1.1 {status}")), "{line}");
        let mut length = 0;
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
    }
}

#[test]
fn a_flood_of_wrong_url_keys_is_summarised_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (daemon, http) = daemon(
        dir,
        "[auth]\nhttp_auth_strategy = \"url_key\"\n",
        "HTTP provisioning on",
    );
    let started = Instant::now();
    http_flood(
        http,
        "/device/provisioning/NotTheKey123/805ec0112233.cfg",
        "",
        "404",
    );
    wait_metric(
        dir,
        "provisiond_rejected_total{transport=\"http\",reason=\"url_key\"}",
        FLOOD,
    );
    assert_eq!(
        metric(
            dir,
            "provisiond_files_total{transport=\"http\",outcome=\"refused\"}"
        ),
        Some(FLOOD)
    );
    assert_told(
        daemon,
        started.elapsed(),
        "reason=\"url_key: ",
        "HTTP requests without a valid url_key from 127.0.0.1 in the last",
    );
}

#[test]
fn a_flood_of_unknown_api_tokens_is_summarised_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (daemon, api) = daemon(dir, "", "REST API on");
    let started = Instant::now();
    http_flood(
        api,
        "/api/provd/0.2/dev_mgr/devices",
        "X-Auth-Token: guessed-token\r\n",
        "401",
    );
    wait_metric(
        dir,
        "provisiond_rejected_total{transport=\"api\",reason=\"token\"}",
        FLOOD,
    );
    assert_told(
        daemon,
        started.elapsed(),
        "API request refused: invalid token",
        "API requests with an unknown or expired token from 127.0.0.1 in the last",
    );
}
