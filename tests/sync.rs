//! `POST /dev_mgr/synchronize` sends a SIP NOTIFY to the phone: a daemon, its admin socket, and
//! a UDP socket on 127.0.0.1 standing in for the phone's SIP stack.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{command, run, write_config, Daemon, PATIENCE};
use serde_json::Value;

/// A daemon whose NOTIFYs go to `sip_port`, waiting `timeout_secs` for answers.
fn daemon(dir: &Path, sip_port: u16, timeout_secs: u64) -> Daemon {
    let config = write_config(
        dir,
        &format!("[sync]\nsip_port = {sip_port}\ntimeout_secs = {timeout_secs}\n"),
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
