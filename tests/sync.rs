//! Resyncs by SIP NOTIFY: `POST /dev_mgr/synchronize`, config changes, the queue's bounds and
//! the Digest answer to a challenging phone. A daemon, its admin socket, and UDP sockets on
//! 127.0.0.0/8 standing in for the phones' SIP stacks.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{command, run, write_config, Daemon, PATIENCE};
use serde_json::{json, Value};

/// A daemon whose NOTIFYs go to `sip_port`, waiting `timeout_secs` for answers.
fn daemon(dir: &Path, sip_port: u16, timeout_secs: u64) -> Daemon {
    daemon_with(dir, sip_port, timeout_secs, "")
}

/// [`daemon`] with more `[sync]` keys.
fn daemon_with(dir: &Path, sip_port: u16, timeout_secs: u64, sync: &str) -> Daemon {
    let config = write_config(
        dir,
        &format!("[sync]\nsip_port = {sip_port}\ntimeout_secs = {timeout_secs}\n{sync}"),
    );
    let mut daemon = Daemon::start({
        let mut cmd = command(dir);
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    daemon.expect_line(&["ready"]);
    daemon
}

/// `provisiond device add` on the admin socket; the new device's id.
fn add_device(dir: &Path, mac: &str, extra: &[&str]) -> String {
    let mut cmd = command(dir);
    cmd.args(["device", "add", "--mac", mac, "--socket"])
        .arg(dir.join("api.sock"))
        .args(extra);
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, 0, "device add: {stderr}");
    // "device <id> created"
    stdout
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no id in {stdout}"))
        .to_owned()
}

/// One HTTP request on the admin socket: the whole answer.
fn request(dir: &Path, method: &str, path: &str, body: &str) -> String {
    let mut stream = UnixStream::connect(dir.join("api.sock")).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/vnd.proformatique.provd+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// (status, body) of a request on the admin socket.
fn admin(dir: &Path, method: &str, path: &str) -> (u16, String) {
    let answer = request(dir, method, path, "");
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Starts a synchronisation of `id`; the operation's path.
fn synchronize(dir: &Path, id: &str) -> String {
    let answer = request(
        dir,
        "POST",
        "/0.2/dev_mgr/synchronize",
        &format!("{{\"id\": \"{id}\"}}"),
    );
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    answer
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("location: ")
                .map(|_| l[10..].trim().to_owned())
        })
        .expect("a Location header")
}

/// Waits until the operation leaves `progress`; its final status.
fn outcome(dir: &Path, op: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (code, body) = admin(dir, "GET", op);
        assert_eq!(code, 200, "{body}");
        let status: Value = serde_json::from_str(&body).unwrap();
        let status = status["status"].as_str().unwrap().to_owned();
        if status != "progress" {
            return status;
        }
        assert!(Instant::now() < deadline, "{op} still in progress");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The phone: reads one NOTIFY, answers `status` with its Via, From, To, Call-ID and CSeq.
fn answer_one(phone: &UdpSocket, status: &str) -> String {
    let mut buf = [0u8; 4096];
    let (n, from) = phone.recv_from(&mut buf).expect("a NOTIFY in time");
    let request = String::from_utf8(buf[..n].to_vec()).unwrap();
    let mut response = format!("SIP/2.0 {status}\r\n");
    for line in request.split("\r\n") {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
            response.push_str(line);
            response.push_str("\r\n");
        }
    }
    response.push_str("Content-Length: 0\r\n\r\n");
    phone.send_to(response.as_bytes(), from).unwrap();
    request
}

#[test]
fn a_phone_that_accepts_the_notify_makes_the_operation_succeed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone.set_read_timeout(Some(PATIENCE)).unwrap();
    let _daemon = daemon(dir, phone.local_addr().unwrap().port(), 5);
    let id = add_device(
        dir,
        "80:5e:c0:51:00:01",
        &["--ip", "127.0.0.1", "--plugin", "yealink"],
    );
    let op = synchronize(dir, &id);
    let notify = answer_one(&phone, "200 OK");
    let port = phone.local_addr().unwrap().port();
    assert!(
        notify.starts_with(&format!("NOTIFY sip:127.0.0.1:{port} SIP/2.0\r\n")),
        "{notify}"
    );
    // The Yealink plugin's event.
    assert!(
        notify.contains("\r\nEvent: check-sync;reboot=false\r\n"),
        "{notify}"
    );
    assert_eq!(outcome(dir, &op), "success");
}

#[test]
fn a_refusal_a_silent_phone_or_no_address_make_it_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone.set_read_timeout(Some(PATIENCE)).unwrap();
    let _daemon = daemon(dir, phone.local_addr().unwrap().port(), 2);
    let id = add_device(
        dir,
        "80:5e:c0:51:00:02",
        &["--ip", "127.0.0.1", "--plugin", "yealink"],
    );

    // Refused: a final error status.
    let op = synchronize(dir, &id);
    answer_one(&phone, "481 Subscription does not exist");
    assert_eq!(outcome(dir, &op), "fail");

    // Silent: the NOTIFY is retransmitted (timer E), then the operation fails at the timeout.
    // A second request meanwhile joins the first: one NOTIFY, one operation.
    let op = synchronize(dir, &id);
    assert_eq!(synchronize(dir, &id), op);
    let mut buf = [0u8; 4096];
    let mut seen = 0;
    while let Ok((n, _)) = phone.recv_from(&mut buf) {
        assert!(buf[..n].starts_with(b"NOTIFY "));
        seen += 1;
        if seen == 2 {
            break;
        }
    }
    assert_eq!(seen, 2, "no retransmission");
    assert_eq!(outcome(dir, &op), "fail");

    // No address: nothing to send, fails at once.
    let bare = add_device(dir, "80:5e:c0:51:00:03", &["--plugin", "yealink"]);
    let op = synchronize(dir, &bare);
    let (_, body) = admin(dir, "GET", &op);
    assert!(body.contains("\"fail\""), "{body}");
}

/// SIPp's answer to one NOTIFY (a 200 OK with the request's headers), as a UAS scenario.
const SIPP_UAS: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="provisiond NOTIFY">
  <recv request="NOTIFY" crlf="true"/>
  <send>
    <![CDATA[

SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]sipp[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

    ]]>
  </send>
</scenario>
"#;

#[test]
fn sipp_as_the_phone_accepts_the_notify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A port free a moment ago, for SIPp.
    let port = common::free_udp_port();
    let scenario = dir.join("uas.xml");
    std::fs::write(&scenario, SIPP_UAS).unwrap();
    let mut sipp = std::process::Command::new("sipp")
        .args(["-sf"])
        .arg(&scenario)
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-nostdin",
        ])
        .args(["-timeout", "30s", "-trace_msg", "-message_file"])
        .arg(dir.join("sipp.msg"))
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sipp (apt-get install sip-tester)");
    let _daemon = daemon(dir, port, 5);
    let id = add_device(
        dir,
        "80:5e:c0:51:00:04",
        &["--ip", "127.0.0.1", "--plugin", "snom"],
    );
    let op = synchronize(dir, &id);
    assert_eq!(outcome(dir, &op), "success");
    let status = sipp.wait().unwrap();
    let messages = std::fs::read_to_string(dir.join("sipp.msg")).unwrap_or_default();
    assert!(status.success(), "sipp failed: {messages}");
    // What SIPp parsed: the snom plugin's event.
    assert!(
        messages.contains("Event: check-sync;reboot=false"),
        "{messages}"
    );
}

/// (status, JSON body or `null`) of a request with a JSON body on the admin socket.
fn call(dir: &Path, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let text = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let answer = request(dir, method, path, &text);
    let status = answer[9..12].parse().unwrap();
    let body = answer
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, body)
}

/// Creates config `id` with `parents` and `raw`.
fn create_config(dir: &Path, id: &str, parents: &[&str], raw: Value) {
    let (status, body) = call(
        dir,
        "POST",
        "/0.2/cfg_mgr/configs",
        &json!({"config": {"id": id, "parent_ids": parents, "raw_config": raw}}),
    );
    assert_eq!(status, 201, "config {id}: {body}");
}

/// Replaces config `id` (as a PUT does: parents and raw config whole).
fn put_config(dir: &Path, id: &str, parents: &[&str], raw: Value) {
    let (status, body) = call(
        dir,
        "PUT",
        &format!("/0.2/cfg_mgr/configs/{id}"),
        &json!({"config": {"parent_ids": parents, "raw_config": raw}}),
    );
    assert_eq!(status, 204, "PUT config {id}: {body}");
}

/// Creates a Yealink device `id` at `ip` with `config`.
fn create_device(dir: &Path, id: &str, mac: &str, ip: &str, config: &str) {
    let (status, body) = call(
        dir,
        "POST",
        "/0.2/dev_mgr/devices",
        &json!({"device": {"id": id, "mac": mac, "ip": ip, "plugin": "yealink", "config": config}}),
    );
    assert_eq!(status, 201, "device {id}: {body}");
}

/// `last_sync` of device `id` as the single-device GET shows it.
fn last_sync(dir: &Path, id: &str) -> Value {
    let (status, body) = call(
        dir,
        "GET",
        &format!("/0.2/dev_mgr/devices/{id}"),
        &Value::Null,
    );
    assert_eq!(status, 200, "{body}");
    let device = &body["device"];
    assert!(
        device.as_object().unwrap().contains_key("last_sync"),
        "{device}"
    );
    device["last_sync"].clone()
}

/// Waits until `last_sync` of `id` satisfies `done`; returns it.
fn wait_last_sync(dir: &Path, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let last = last_sync(dir, id);
        if done(&last) {
            return last;
        }
        assert!(Instant::now() < deadline, "last_sync of {id} stays {last}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of `provisiond_sync_total{outcome="…"}` in /metrics.
fn sync_metric(dir: &Path, outcome: &str) -> u64 {
    let answer = request(dir, "GET", "/metrics", "");
    let wanted = format!("provisiond_sync_total{{outcome=\"{outcome}\"}} ");
    answer
        .lines()
        .find_map(|l| l.strip_prefix(&wanted))
        .unwrap_or_else(|| panic!("no {wanted} in {answer}"))
        .trim()
        .parse()
        .unwrap()
}

/// A SIP request received by a phone socket.
struct Received {
    text: String,
    from: SocketAddr,
}

impl Received {
    /// The first header `name` (case-insensitive), trimmed.
    fn header(&self, name: &str) -> Option<&str> {
        self.text.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn call_id(&self) -> String {
        self.header("Call-ID").expect("Call-ID").to_owned()
    }

    fn cseq(&self) -> u32 {
        let cseq = self.header("CSeq").expect("CSeq");
        assert!(cseq.ends_with(" NOTIFY"), "{cseq}");
        cseq.split(' ').next().unwrap().parse().unwrap()
    }

    /// The Via branch.
    fn branch(&self) -> String {
        let via = self.header("Via").expect("Via");
        via.split(';')
            .find_map(|p| p.strip_prefix("branch="))
            .expect("a branch")
            .to_owned()
    }

    /// Answers with `status`, the request's Via, From, To, Call-ID and CSeq, and `extra`
    /// header lines.
    fn answer(&self, phone: &UdpSocket, status: &str, extra: &[String]) {
        let mut response = format!("SIP/2.0 {status}\r\n");
        for line in self.text.split("\r\n") {
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
                response.push_str(line);
                response.push_str("\r\n");
            }
        }
        for line in extra {
            response.push_str(line);
            response.push_str("\r\n");
        }
        response.push_str("Content-Length: 0\r\n\r\n");
        phone.send_to(response.as_bytes(), self.from).unwrap();
    }
}

/// The next NOTIFY on `phone` that is not a retransmission of one in `seen` (Call-ID, CSeq).
fn next_notify(phone: &UdpSocket, seen: &mut HashSet<(String, u32)>) -> Received {
    let mut buf = [0u8; 8192];
    loop {
        let (n, from) = phone.recv_from(&mut buf).expect("a NOTIFY in time");
        let text = String::from_utf8(buf[..n].to_vec()).unwrap();
        assert!(text.starts_with("NOTIFY "), "{text}");
        let received = Received { text, from };
        if seen.insert((received.call_id(), received.cseq())) {
            return received;
        }
    }
}

/// Every datagram already waiting on `phone`, without waiting for more.
fn pending(phone: &UdpSocket) -> Vec<Received> {
    phone.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok((n, from)) = phone.recv_from(&mut buf) {
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        out.push(Received { text, from });
    }
    phone.set_nonblocking(false).unwrap();
    out
}

/// Hex hash of `text` with RFC 7616's `algorithm` (MD5 or SHA-256).
fn h(algorithm: &str, text: &str) -> String {
    use sha2::Digest;
    let bytes: Vec<u8> = match algorithm {
        "MD5" => md5::Md5::digest(text.as_bytes()).to_vec(),
        "SHA-256" => sha2::Sha256::digest(text.as_bytes()).to_vec(),
        other => panic!("algorithm {other}"),
    };
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The response a phone expects for NOTIFY to `uri`, computed from the answer's own nonce
/// count and client nonce (RFC 2617 §3.2.2.1).
fn expected_response(p: &HashMap<String, String>, user: &str, password: &str) -> String {
    let alg = p["algorithm"].as_str();
    let ha1 = h(alg, &format!("{user}:{}:{password}", p["realm"]));
    let ha2 = h(alg, &format!("NOTIFY:{}", p["uri"]));
    match p.get("qop") {
        Some(qop) => h(
            alg,
            &format!(
                "{ha1}:{}:{}:{}:{qop}:{ha2}",
                p["nonce"], p["nc"], p["cnonce"]
            ),
        ),
        None => h(alg, &format!("{ha1}:{}:{ha2}", p["nonce"])),
    }
}

/// Raw config of a Yealink line: what templates need (web admin password, registrar), and
/// SIP line 1.
fn line_config(display_name: &str, password: &str) -> Value {
    json!({
        "admin_password": "adminpw-1234",
        "sip_registrar_ip": "127.0.0.1",
        "sip_lines": {"1": {
            "username": "1001",
            "auth_username": "auth1001",
            "password": password,
            "display_name": display_name,
        }},
    })
}

#[test]
fn a_challenging_phone_gets_a_digest_answer_with_line_one_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone.set_read_timeout(Some(PATIENCE)).unwrap();
    let port = phone.local_addr().unwrap().port();
    let _daemon = daemon(dir, port, 10);
    create_config(dir, "alice", &[], line_config("Alice", "s3cret"));
    create_device(dir, "desk", "80:5e:c0:51:00:10", "127.0.0.1", "alice");
    assert_eq!(last_sync(dir, "desk"), Value::Null, "never synced");
    let uri = format!("sip:127.0.0.1:{port}");
    let mut seen = HashSet::new();

    // (status, challenge headers, answer header, algorithm and nonce expected)
    let rounds: [(&str, Vec<String>, &str, &str, &str); 3] = [
        (
            "401 Unauthorized",
            vec![r#"WWW-Authenticate: Digest realm="phone", nonce="n-md5", qop="auth", opaque="op-1", algorithm=MD5"#.into()],
            "Authorization",
            "MD5",
            "n-md5",
        ),
        (
            "401 Unauthorized",
            vec![
                r#"WWW-Authenticate: Digest realm="phone", nonce="n-weak", qop="auth", algorithm=MD5"#.into(),
                r#"WWW-Authenticate: Digest realm="phone", nonce="n-strong", qop="auth,auth-int", opaque="op-2", algorithm=SHA-256"#.into(),
            ],
            "Authorization",
            "SHA-256",
            "n-strong",
        ),
        (
            "407 Proxy Authentication Required",
            vec![r#"Proxy-Authenticate: Digest realm="proxy", nonce="n-proxy""#.into()],
            "Proxy-Authorization",
            "MD5",
            "n-proxy",
        ),
    ];
    for (status, challenges, header, algorithm, nonce) in rounds {
        let op = synchronize(dir, "desk");
        let first = next_notify(&phone, &mut seen);
        assert_eq!(first.cseq(), 1);
        assert!(first.header("Authorization").is_none());
        first.answer(&phone, status, &challenges);
        let second = next_notify(&phone, &mut seen);
        assert_eq!(second.cseq(), 2, "{}", second.text);
        assert_eq!(second.call_id(), first.call_id());
        assert_eq!(second.header("From"), first.header("From"), "same From tag");
        assert_ne!(second.branch(), first.branch(), "a new transaction");
        let answer = second
            .header(header)
            .unwrap_or_else(|| panic!("no {header} in {}", second.text));
        let p = common::digest_params(answer);
        assert_eq!(p["username"], "auth1001", "auth_username wins");
        assert_eq!(p["algorithm"], algorithm, "{answer}");
        assert_eq!(p["nonce"], nonce, "{answer}");
        assert_eq!(p["uri"], uri);
        match status {
            "407 Proxy Authentication Required" => {
                assert_eq!(p["realm"], "proxy");
                assert!(
                    !p.contains_key("qop") && !p.contains_key("cnonce"),
                    "{answer}"
                );
                assert!(!p.contains_key("opaque"));
            }
            _ => {
                assert_eq!((p["qop"].as_str(), p["nc"].as_str()), ("auth", "00000001"));
                assert!(!p["cnonce"].is_empty());
                assert!(p["opaque"].starts_with("op-"), "opaque echoed: {answer}");
            }
        }
        assert_eq!(
            p["response"],
            expected_response(&p, "auth1001", "s3cret"),
            "{answer}"
        );
        second.answer(&phone, "200 OK", &[]);
        assert_eq!(outcome(dir, &op), "success");
        let last = last_sync(dir, "desk");
        assert_eq!(last["state"], "ok", "{last}");
        assert_eq!(last["reason"], "manual", "{last}");
        assert!(last["at"].as_u64().is_some_and(|at| at > 1_600_000_000));
    }
}

#[test]
fn a_refused_password_fails_the_sync_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone.set_read_timeout(Some(PATIENCE)).unwrap();
    let _daemon = daemon(dir, phone.local_addr().unwrap().port(), 10);
    // The phone's real password is "right"; the config says "wrong".
    create_config(dir, "bob", &[], line_config("Bob", "wrong"));
    create_device(dir, "desk", "80:5e:c0:51:00:11", "127.0.0.1", "bob");
    let op = synchronize(dir, "desk");
    let mut seen = HashSet::new();
    let first = next_notify(&phone, &mut seen);
    let challenge =
        r#"WWW-Authenticate: Digest realm="phone", nonce="n-1", qop="auth", algorithm=SHA-256"#;
    first.answer(&phone, "401 Unauthorized", &[challenge.into()]);
    let second = next_notify(&phone, &mut seen);
    let p = common::digest_params(second.header("Authorization").expect("an answer"));
    // What the phone checks: the answer is not the one of its password...
    assert_ne!(p["response"], expected_response(&p, "auth1001", "right"));
    // ...it is the one of the config's.
    assert_eq!(p["response"], expected_response(&p, "auth1001", "wrong"));
    let again =
        r#"WWW-Authenticate: Digest realm="phone", nonce="n-2", qop="auth", algorithm=SHA-256"#;
    second.answer(&phone, "401 Unauthorized", &[again.into()]);
    assert_eq!(outcome(dir, &op), "fail");
    let last = last_sync(dir, "desk");
    assert_eq!(last["state"], "failed", "{last}");
    assert!(
        last["detail"]
            .as_str()
            .is_some_and(|d| d.contains("credentials refused")),
        "{last}"
    );
    assert_eq!(sync_metric(dir, "sent_failed"), 1);
}

#[test]
fn a_config_change_notifies_the_devices_whose_files_it_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone.set_read_timeout(Some(PATIENCE)).unwrap();
    let _daemon = daemon(dir, phone.local_addr().unwrap().port(), 10);
    // The device's config inherits the display name from its parent, which is what changes.
    let office = |name: &str, note: &str| {
        json!({
            "admin_password": "adminpw-1234",
            "sip_registrar_ip": "127.0.0.1",
            "X_unrendered": note,
            "sip_lines": {"1": {"display_name": name}},
        })
    };
    create_config(dir, "office", &[], office("Office", "a"));
    create_config(
        dir,
        "carol",
        &["office"],
        json!({"sip_lines": {"1": {"username": "1003", "password": "pw"}}}),
    );
    create_config(dir, "other", &[], line_config("Other", "pw"));
    create_device(dir, "desk", "80:5e:c0:51:00:12", "127.0.0.1", "carol");
    create_device(dir, "elsewhere", "80:5e:c0:51:00:13", "127.0.0.1", "other");
    let mut seen = HashSet::new();

    // A new display name: the device using a child of the config is told.
    put_config(dir, "office", &[], office("Reception", "a"));
    assert_eq!(sync_metric(dir, "queued"), 1, "only the device using it");
    let notify = next_notify(&phone, &mut seen);
    notify.answer(&phone, "200 OK", &[]);
    let last = wait_last_sync(dir, "desk", |l| l["state"] == "ok");
    assert_eq!(last["reason"], "config_changed", "{last}");

    // A change that no template renders: nothing is sent.
    put_config(dir, "office", &[], office("Reception", "b"));
    let last = wait_last_sync(dir, "desk", |l| l["state"] == "unchanged");
    assert_eq!(last["reason"], "config_changed", "{last}");
    // The outcome is recorded after any NOTIFY would have been sent: none was, beside
    // retransmissions of the first.
    for datagram in pending(&phone) {
        assert!(
            datagram.text.contains(&notify.call_id()),
            "a NOTIFY for an unrendered change: {}",
            datagram.text
        );
    }
    assert_eq!(sync_metric(dir, "unchanged"), 1);

    // The display name again: the digest follows it.
    put_config(dir, "office", &[], office("Lobby", "b"));
    next_notify(&phone, &mut seen).answer(&phone, "200 OK", &[]);
    wait_last_sync(dir, "desk", |l| l["state"] == "ok");
    assert_eq!(sync_metric(dir, "sent_ok"), 2);
    assert_eq!(sync_metric(dir, "queued"), 3);
    assert_eq!(last_sync(dir, "elsewhere"), Value::Null);

    // An administrator's request is sent although the files are the ones the phone has.
    let op = synchronize(dir, "desk");
    next_notify(&phone, &mut seen).answer(&phone, "200 OK", &[]);
    assert_eq!(outcome(dir, &op), "success");
    assert_eq!(last_sync(dir, "desk")["reason"], "manual");
}

#[test]
fn a_full_queue_drops_counts_and_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let phone_a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = phone_a.local_addr().unwrap().port();
    let phone_b = UdpSocket::bind(("127.0.0.2", port)).unwrap();
    for phone in [&phone_a, &phone_b] {
        phone.set_read_timeout(Some(PATIENCE)).unwrap();
    }
    let mut daemon = daemon_with(dir, port, 30, "concurrency = 1\nqueue_max = 1\n");
    for (id, mac, ip) in [
        ("a", "80:5e:c0:51:00:30", "127.0.0.1"),
        ("b", "80:5e:c0:51:00:31", "127.0.0.2"),
        ("c", "80:5e:c0:51:00:32", "127.0.0.3"),
    ] {
        create_config(dir, id, &[], line_config(id, "pw"));
        create_device(dir, id, mac, ip, id);
    }
    let mut seen = HashSet::new();
    put_config(dir, "a", &[], line_config("A1", "pw"));
    // A is in flight, B fills the queue, C finds it full.
    let a = next_notify(&phone_a, &mut seen);
    put_config(dir, "b", &[], line_config("B1", "pw"));
    put_config(dir, "c", &[], line_config("C1", "pw"));
    daemon.expect_line(&["resync queue full"]);
    assert_eq!(sync_metric(dir, "queued"), 2);
    assert_eq!(sync_metric(dir, "dropped"), 1);
    a.answer(&phone_a, "200 OK", &[]);
    next_notify(&phone_b, &mut seen).answer(&phone_b, "200 OK", &[]);
    wait_last_sync(dir, "b", |l| l["state"] == "ok");
    assert_eq!(last_sync(dir, "c"), Value::Null, "C was never told");
}

#[test]
fn a_device_queued_many_times_while_waiting_gets_one_notify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Three phones on three loopback addresses, one SIP port.
    let phone_a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = phone_a.local_addr().unwrap().port();
    let phone_b = UdpSocket::bind(("127.0.0.2", port)).unwrap();
    let phone_c = UdpSocket::bind(("127.0.0.3", port)).unwrap();
    for phone in [&phone_a, &phone_b, &phone_c] {
        phone.set_read_timeout(Some(PATIENCE)).unwrap();
    }
    // One NOTIFY at a time: while A's waits for its answer, B waits in the queue.
    let _daemon = daemon_with(dir, port, 30, "concurrency = 1\n");
    for (id, mac, ip) in [
        ("a", "80:5e:c0:51:00:20", "127.0.0.1"),
        ("b", "80:5e:c0:51:00:21", "127.0.0.2"),
        ("c", "80:5e:c0:51:00:22", "127.0.0.3"),
    ] {
        create_config(dir, id, &[], line_config(id, "pw"));
        create_device(dir, id, mac, ip, id);
    }
    put_config(dir, "a", &[], line_config("A1", "pw"));
    let mut seen = HashSet::new();
    let a = next_notify(&phone_a, &mut seen);
    for n in 1..=10 {
        put_config(dir, "b", &[], line_config(&format!("B{n}"), "pw"));
    }
    put_config(dir, "c", &[], line_config("C1", "pw"));
    assert_eq!(sync_metric(dir, "queued"), 3);
    assert_eq!(sync_metric(dir, "coalesced"), 9);
    a.answer(&phone_a, "200 OK", &[]);
    let b = next_notify(&phone_b, &mut seen);
    b.answer(&phone_b, "200 OK", &[]);
    // C was queued after B: once C is told, a second NOTIFY for B would already be there.
    next_notify(&phone_c, &mut seen).answer(&phone_c, "200 OK", &[]);
    for datagram in pending(&phone_b) {
        assert!(
            datagram.text.contains(&b.call_id()),
            "a second NOTIFY for B: {}",
            datagram.text
        );
    }
    wait_last_sync(dir, "c", |l| l["state"] == "ok");
    assert_eq!(sync_metric(dir, "sent_ok"), 3);
}

#[test]
fn phones_never_see_more_notifys_in_flight_than_the_concurrency() {
    const DEVICES: usize = 6;
    const CONCURRENCY: usize = 2;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone.set_read_timeout(Some(PATIENCE)).unwrap();
    let _daemon = daemon_with(
        dir,
        phone.local_addr().unwrap().port(),
        30,
        &format!("concurrency = {CONCURRENCY}\nrate = 10000\n"),
    );
    create_config(dir, "shared", &[], line_config("Team", "pw"));
    for n in 0..DEVICES {
        create_device(
            dir,
            &format!("d{n}"),
            &format!("80:5e:c0:51:01:{n:02x}"),
            "127.0.0.1",
            "shared",
        );
    }
    put_config(dir, "shared", &[], line_config("Team 2", "pw"));
    // The phones hold each NOTIFY until its retransmission shows that provisiond waits for it,
    // then accept it: a worker beyond the bound would have sent its NOTIFY meanwhile.
    let mut outstanding: Vec<String> = Vec::new();
    let mut answered: HashSet<String> = HashSet::new();
    let mut most = 0;
    let mut buf = [0u8; 8192];
    while answered.len() < DEVICES {
        let (n, from) = phone.recv_from(&mut buf).expect("a NOTIFY in time");
        let received = Received {
            text: String::from_utf8(buf[..n].to_vec()).unwrap(),
            from,
        };
        let call_id = received.call_id();
        if answered.contains(&call_id) {
            received.answer(&phone, "200 OK", &[]);
        } else if outstanding.contains(&call_id) {
            outstanding.retain(|c| c != &call_id);
            answered.insert(call_id);
            received.answer(&phone, "200 OK", &[]);
        } else {
            outstanding.push(call_id);
            most = most.max(outstanding.len());
            assert!(
                outstanding.len() <= CONCURRENCY,
                "{} NOTIFYs in flight",
                outstanding.len()
            );
        }
    }
    eprintln!("at most {most} NOTIFYs in flight");
    let deadline = Instant::now() + PATIENCE;
    while sync_metric(dir, "sent_ok") < DEVICES as u64 {
        assert!(Instant::now() < deadline, "NOTIFYs not all recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
}
