//! Crash consistency of what the daemon acknowledges. A real `provisiond serve` runs DHCP
//! (relayed DORA from many clients on loopback), REST writes over the admin socket (devices and
//! configs) and autocreating HTTP fetches at once; it is killed with SIGKILL at a random moment,
//! checked with `provisiond store check` (every index and count matches the records),
//! restarted on the same data directory, and then:
//! - every address it ACKed is still leased: another client asking for it (INIT-REBOOT) is
//!   NAKed;
//! - every device and config it answered 201 for, every device whose first fetch it answered
//!   200, and the device of every client it ACKed (created from the lease before the ACK),
//!   exists exactly once.
//!
//! Odd rounds run the DHCP load alone, even rounds all three.
//! `CRASH_ROUNDS` sets the number of kill/restart rounds (default 6, about 30 s in all);
//! `CRASH_SEED` replays the kill moments of a run (the seed is printed).

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{command, listening_on, run, write_config, Daemon};
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const RELAY: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
const YEALINK_UA: &str = "Yealink SIP-T54W 96.86.0.70";
const MEDIA: &str = "application/vnd.proformatique.provd+json";
/// DHCP clients in flight (each a thread doing DORA after DORA).
const DHCP_CLIENTS: u32 = 12;

/// A small xorshift generator: the kill moments are replayable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

/// What the daemon acknowledged before it was killed.
#[derive(Default)]
struct Acked {
    leases: Vec<([u8; 6], Ipv4Addr)>,
    devices: Vec<String>,
    configs: Vec<String>,
    fetched: Vec<String>,
}

/// One HTTP/1.1 exchange with `Connection: close`; the status and the (de-chunked) body.
fn http<S: Read + Write>(
    mut stream: S,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: {MEDIA}\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or(""));
    stream.write_all(head.as_bytes())?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let broken = || std::io::Error::new(std::io::ErrorKind::InvalidData, "broken HTTP answer");
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(broken)?;
    let head = String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(broken)?;
    let mut body = answer[end + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(broken)?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = data.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line]).ok()?.trim(), 16).ok()?;
        data = &data[line + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A request to the REST API over the admin socket (no token needed there).
fn admin(
    dir: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let stream = UnixStream::connect(dir.join("api.sock"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let text = body.map(Value::to_string);
    let (status, body) = http(stream, method, path, &[("Accept", MEDIA)], text.as_deref())?;
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn dhcp_message(kind: MessageType, xid: u32, mac: [u8; 6]) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootRequest)
        .set_xid(xid)
        .set_giaddr(RELAY)
        .set_chaddr(&mac);
    m.set_hops(1);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m
}

fn send(socket: &UdpSocket, to: SocketAddr, message: &Message) {
    let mut buf = Vec::new();
    message.encode(&mut Encoder::new(&mut buf)).unwrap();
    // A send refused while the daemon is down is the same as a lost datagram.
    let _ = socket.send_to(&buf, to);
}

/// The next reply with this xid, or None after `wait`.
fn receive(socket: &UdpSocket, xid: u32, wait: Duration) -> Option<Message> {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 1500];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        let Ok((n, _)) = socket.recv_from(&mut buf) else {
            continue;
        };
        if let Ok(m) = Message::decode(&mut Decoder::new(&buf[..n])) {
            if m.xid() == xid {
                return Some(m);
            }
        }
    }
}

/// DORA after DORA with new MACs until `stop`; every ACK is recorded as it arrives.
fn dhcp_client(
    index: u32,
    server: SocketAddr,
    stop: Arc<AtomicBool>,
    round: u32,
    acked: Arc<Mutex<Acked>>,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let wait = Duration::from_millis(300);
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mac = [
            0x02,
            round as u8,
            index as u8,
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
        ];
        let xid = (round << 28) | (index << 20) | (n & 0xfffff);
        send(
            &socket,
            server,
            &dhcp_message(MessageType::Discover, xid, mac),
        );
        let Some(offer) = receive(&socket, xid, wait) else {
            continue;
        };
        if offer.opts().msg_type() != Some(MessageType::Offer) {
            continue;
        }
        let mut request = dhcp_message(MessageType::Request, xid, mac);
        request
            .opts_mut()
            .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
        if let Some(DhcpOption::ServerIdentifier(id)) =
            offer.opts().get(OptionCode::ServerIdentifier)
        {
            request.opts_mut().insert(DhcpOption::ServerIdentifier(*id));
        }
        send(&socket, server, &request);
        if let Some(ack) = receive(&socket, xid, wait) {
            if ack.opts().msg_type() == Some(MessageType::Ack) {
                acked.lock().unwrap().leases.push((mac, ack.yiaddr()));
            }
        }
    }
}

/// Devices and configs created over the admin socket until `stop`; 201s recorded.
fn rest_writer(dir: &Path, stop: Arc<AtomicBool>, round: u32, acked: Arc<Mutex<Acked>>) {
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let mac = format!(
            "02:aa:{round:02x}:{:02x}:{:02x}:{:02x}",
            n >> 16 & 0xff,
            n >> 8 & 0xff,
            n & 0xff
        );
        let device = json!({"device": {"mac": mac, "description": "crash test"}});
        if let Ok((201, _)) = admin(dir, "POST", "/api/provd/0.2/dev_mgr/devices", Some(&device)) {
            acked.lock().unwrap().devices.push(mac);
        }
        if n % 4 == 0 {
            let id = format!("crash-{round}-{n}");
            let config = json!({"config": {"id": id, "parent_ids": ["base"], "raw_config": {"ntp_ip": "10.96.0.2"}}});
            if let Ok((201, _)) =
                admin(dir, "POST", "/api/provd/0.2/cfg_mgr/configs", Some(&config))
            {
                acked.lock().unwrap().configs.push(id);
            }
        }
    }
}

/// First fetches of new Yealink phones until `stop`; each 200 means the phone was created.
fn fetcher(
    http_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    round: u32,
    lane: u32,
    acked: Arc<Mutex<Acked>>,
) {
    let mut n: u32 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        if n > 0xfff {
            return;
        }
        let hex = format!("805ec0{round:02x}{lane:01x}{n:03x}");
        let Ok(stream) = TcpStream::connect(http_addr) else {
            continue;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        let ua = format!("{YEALINK_UA} {}", colon_mac(&hex));
        if let Ok((200, _)) = http(
            stream,
            "GET",
            &format!("/{hex}.cfg"),
            &[("User-Agent", &ua)],
            None,
        ) {
            acked.lock().unwrap().fetched.push(colon_mac(&hex));
        }
    }
}

fn colon_mac(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(":")
}

struct Running {
    daemon: Daemon,
    http: SocketAddr,
}

fn start(dir: &Path, config: &Path) -> Running {
    let mut daemon = Daemon::start({
        let mut cmd = command(dir);
        cmd.args(["serve", "--config"]).arg(config);
        cmd
    });
    let http = listening_on(&daemon.expect_line(&["HTTP provisioning on"]));
    daemon.expect_line(&["DHCP server ready"]);
    Running { daemon, http }
}

/// Every acknowledged lease must still hold: a stranger asking for the address is NAKed. The
/// requests go in windows (one socket, replies matched by xid); unanswered ones are resent.
fn check_leases(server: SocketAddr, leases: &[([u8; 6], Ipv4Addr)]) -> Vec<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut problems = Vec::new();
    for (w, window) in leases.chunks(128).enumerate() {
        let mut waiting: HashMap<u32, (usize, Ipv4Addr)> = HashMap::new();
        for (i, (_, ip)) in window.iter().enumerate() {
            waiting.insert(0x7000_0000 | ((w as u32) << 8) | i as u32, (i, *ip));
        }
        for _attempt in 0..10 {
            if waiting.is_empty() {
                break;
            }
            for (xid, (i, ip)) in &waiting {
                // Another client (the first octet differs) in INIT-REBOOT: no server id, no ciaddr.
                let mut mac = window[*i].0;
                mac[0] = 0x06;
                let mut request = dhcp_message(MessageType::Request, *xid, mac);
                request
                    .opts_mut()
                    .insert(DhcpOption::RequestedIpAddress(*ip));
                send(&socket, server, &request);
            }
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut buf = [0u8; 1500];
            while !waiting.is_empty() && Instant::now() < deadline {
                socket
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let Ok((n, _)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(reply) = Message::decode(&mut Decoder::new(&buf[..n])) else {
                    continue;
                };
                if let Some((_, ip)) = waiting.remove(&reply.xid()) {
                    match reply.opts().msg_type() {
                        Some(MessageType::Nak) => {}
                        other => problems.push(format!(
                            "{ip} was ACKed before the crash, and after it a second client got {other:?}"
                        )),
                    }
                }
            }
        }
        for (_, ip) in waiting.values() {
            problems.push(format!("no answer for {ip}"));
        }
    }
    problems
}

/// Every acknowledged device and config exists exactly once.
fn check_records(dir: &Path, acked: &Acked) -> Vec<String> {
    let mut problems = Vec::new();
    let (status, devices) = admin(
        dir,
        "GET",
        "/api/provd/0.2/dev_mgr/devices?recurse=true",
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{devices}");
    let mut by_mac: HashMap<String, usize> = HashMap::new();
    for d in devices["devices"].as_array().unwrap() {
        if let Some(mac) = d["mac"].as_str() {
            *by_mac.entry(mac.to_owned()).or_default() += 1;
        }
    }
    let leased: Vec<String> = acked
        .leases
        .iter()
        .map(|(mac, _)| {
            mac.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .collect();
    for (kind, macs) in [
        ("created", &acked.devices),
        ("fetched", &acked.fetched),
        ("leased", &leased),
    ] {
        for mac in macs {
            match by_mac.get(mac) {
                Some(1) => {}
                other => problems.push(format!("{kind} device {mac}: {other:?} after restart")),
            }
        }
    }
    let (status, configs) = admin(
        dir,
        "GET",
        "/api/provd/0.2/cfg_mgr/configs?recurse=true",
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{configs}");
    let ids: Vec<&str> = configs["configs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["id"].as_str())
        .collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "a config id listed twice");
    for id in &acked.configs {
        if !unique.contains(id.as_str()) {
            problems.push(format!("config {id} lost"));
        }
    }
    problems
}

#[test]
fn everything_acknowledged_survives_kill_9() {
    let rounds: u32 = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("CRASH_SEED={seed} CRASH_ROUNDS={rounds}");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // A port that was free a moment ago (dhcp.port may not be 0); it stays the same across
    // restarts so that the verification talks to the restarted daemon.
    let port = common::free_udp_port();
    let server: SocketAddr = ([127, 0, 0, 1], port).into();
    let config = write_config(
        dir,
        &format!(
            "[dhcp]\nmode = \"server\"\nport = {port}\n[[dhcp.pools]]\nsubnet = \"10.96.0.0/12\"\n\
             ranges = [{{ start = \"10.96.0.10\", end = \"10.111.255.250\" }}]\n"
        ),
    );
    // The autocreation limits are not what this test is about.
    std::fs::create_dir(dir.join("conf.d")).unwrap();
    std::fs::write(
        dir.join("conf.d/50-rate.toml"),
        "[general]\nautocreate_per_second = 100000\nautocreate_burst = 100000\nmax_devices = 10000000\n",
    )
    .unwrap();
    let mut totals = (0usize, 0usize, 0usize, 0usize);
    let mut problems = Vec::new();
    for round in 1..=rounds {
        let running = start(dir, &config);
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(Mutex::new(Acked::default()));
        let mut threads = Vec::new();
        for index in 0..DHCP_CLIENTS {
            let (stop, acked) = (stop.clone(), acked.clone());
            threads.push(std::thread::spawn(move || {
                dhcp_client(index, server, stop, round, acked)
            }));
        }
        // Odd rounds are DHCP only: there the other writers' flushes cannot hide a lease
        // write that was never flushed.
        let mixed = round % 2 == 0;
        for lane in 0..if mixed { 2 } else { 0 } {
            let (stop, acked) = (stop.clone(), acked.clone());
            let http_addr = running.http;
            threads.push(std::thread::spawn(move || {
                fetcher(http_addr, stop, round, lane, acked)
            }));
        }
        if mixed {
            let (stop, acked, dir) = (stop.clone(), acked.clone(), dir.to_owned());
            threads.push(std::thread::spawn(move || {
                rest_writer(&dir, stop, round, acked)
            }));
        }
        std::thread::sleep(Duration::from_millis(rng.between(300, 2000)));
        running.daemon.signal(Signal::SIGKILL);
        let mut running = running;
        let _ = running.daemon.child.wait();
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        drop(running);

        // Every index and count must match the records the kill left (they are written in
        // the same transactions): the operator's own check, on the stopped store.
        let (code, out, err) = run(command(dir)
            .args(["store", "check", "--config"])
            .arg(&config));
        let mut found = Vec::new();
        if code != 0 {
            found.push(format!("store check after the kill: {out}{err}"));
        }
        let acked = std::mem::take(&mut *acked.lock().unwrap());
        let mut restarted = start(dir, &config);
        found.extend(check_leases(server, &acked.leases));
        found.extend(check_records(dir, &acked));
        println!(
            "round {round}: {} leases, {} devices, {} configs, {} autocreated acknowledged; {} problems",
            acked.leases.len(),
            acked.devices.len(),
            acked.configs.len(),
            acked.fetched.len(),
            found.len()
        );
        totals.0 += acked.leases.len();
        totals.1 += acked.devices.len();
        totals.2 += acked.configs.len();
        totals.3 += acked.fetched.len();
        problems.extend(found.into_iter().map(|p| format!("round {round}: {p}")));
        restarted.daemon.signal(Signal::SIGTERM);
        assert!(
            restarted.daemon.wait().success(),
            "{:?}",
            restarted.daemon.seen
        );
    }
    println!(
        "{rounds} rounds: {} leases, {} devices, {} configs, {} autocreated acknowledged; {} lost or duplicated",
        totals.0,
        totals.1,
        totals.2,
        totals.3,
        problems.len()
    );
    assert!(
        totals.0 > 0 && totals.1 > 0 && totals.3 > 0,
        "the load did nothing"
    );
    assert!(
        problems.is_empty(),
        "{} problems (CRASH_SEED={seed}), first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
