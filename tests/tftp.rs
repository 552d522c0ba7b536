//! The TFTP server over real UDP sockets on 127.0.0.1: the Debian `tftp` (tftp-hpa) and
//! `atftp` clients, and a hand-written client for what they cannot show (OACK contents, loss,
//! strangers, limits, malformed packets).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provisiond::tftp::{FileError, FileSource, TftpOptions, TftpServer};
use tokio::sync::watch;

/// Bound on any wait; never reached when things work, it only turns a hang into a failure.
const PATIENCE: Duration = Duration::from_secs(30);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// File names of the binary test files and their sizes.
const SIZES: [(&str, usize); 5] = [
    ("empty", 0),
    ("511", 511),
    ("512", 512),
    ("513", 513),
    ("1mib", 1 << 20),
];
/// Text with every line-end case netascii has to encode.
const TEXT: &[u8] = b"line one\nline two\r\nbare\rcarriage\n\n\r\rend\r";
/// `TEXT` as netascii puts it on the wire.
const TEXT_NETASCII: &[u8] = b"line one\r\nline two\r\0\r\nbare\r\0carriage\r\n\r\n\r\0\r\0end\r\0";
/// More than 65535 blocks of 8 bytes: the block number rolls over.
const ROLLOVER_LEN: usize = 8 * 65536 + 3;

/// Deterministic bytes that differ from block to block.
fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn content(name: &str) -> Vec<u8> {
    match name {
        "text" => TEXT.to_vec(),
        "rollover" => pattern(ROLLOVER_LEN, 99),
        _ => {
            let (i, (_, len)) = SIZES
                .iter()
                .enumerate()
                .find(|(_, (n, _))| *n == name)
                .expect("known test file");
            pattern(*len, i as u32 + 7)
        }
    }
}

/// In-memory files, plus names that fail in each way a source can.
struct Files {
    files: HashMap<String, Arc<[u8]>>,
    asked: Mutex<Vec<String>>,
}

impl Files {
    fn new() -> Arc<Files> {
        let mut files = HashMap::new();
        for name in SIZES.iter().map(|(n, _)| *n).chain(["text", "rollover"]) {
            files.insert(name.to_owned(), Arc::from(content(name)));
        }
        Arc::new(Files {
            files,
            asked: Mutex::new(Vec::new()),
        })
    }
}

impl FileSource for Files {
    fn read(&self, _peer: SocketAddr, filename: &str) -> Result<Arc<[u8]>, FileError> {
        self.asked.lock().unwrap().push(filename.to_owned());
        match filename {
            "denied" => Err(FileError::AccessViolation),
            "broken" => Err(FileError::Other("template error".into())),
            _ => self.files.get(filename).cloned().ok_or(FileError::NotFound),
        }
    }
}

fn options() -> TftpOptions {
    TftpOptions {
        max_transfers: 16,
        timeout_secs: 1,
        retries: 3,
        max_per_client: 16,
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("provisiond=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A server on 127.0.0.1 with its own runtime thread.
struct Server {
    addr: SocketAddr,
    files: Arc<Files>,
    shutdown: watch::Sender<bool>,
    done: Receiver<std::io::Result<()>>,
}

impl Server {
    fn start(options: TftpOptions) -> Server {
        init_logging();
        let files = Files::new();
        let source: Arc<dyn FileSource> = files.clone();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (addr_tx, addr_rx) = channel();
        let (done_tx, done) = channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let server = TftpServer::bind(SocketAddr::new(LOCALHOST, 0), options)
                    .await
                    .expect("bind");
                addr_tx
                    .send(server.local_addr().expect("local addr"))
                    .unwrap();
                let _ = done_tx.send(server.run(source, shutdown_rx).await);
            });
        });
        let addr = addr_rx.recv_timeout(PATIENCE).expect("server started");
        Server {
            addr,
            files,
            shutdown,
            done,
        }
    }

    /// Asks for shutdown and returns what `run` returned.
    fn stop(&self) -> std::io::Result<()> {
        self.shutdown.send(true).expect("server still listening");
        self.done.recv_timeout(PATIENCE).expect("run returned")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

/// A packet as the test client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pkt {
    Data(u16, Vec<u8>),
    Ack(u16),
    Error(u16, String),
    Oack(Vec<(String, String)>),
    Other(Vec<u8>),
}

fn parse(packet: &[u8]) -> Pkt {
    let fields = |body: &[u8]| -> Vec<String> {
        let mut parts: Vec<String> = body
            .split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        assert_eq!(parts.pop().as_deref(), Some(""), "NUL-terminated: {body:?}");
        parts
    };
    match packet {
        [0, 3, a, b, payload @ ..] => Pkt::Data(u16::from_be_bytes([*a, *b]), payload.to_vec()),
        [0, 4, a, b] => Pkt::Ack(u16::from_be_bytes([*a, *b])),
        [0, 5, a, b, text @ ..] => {
            let mut text = fields(text);
            assert_eq!(text.len(), 1, "one message in an ERROR");
            Pkt::Error(u16::from_be_bytes([*a, *b]), text.remove(0))
        }
        [0, 6, body @ ..] => {
            let fields = fields(body);
            assert_eq!(fields.len() % 2, 0, "OACK in pairs: {fields:?}");
            Pkt::Oack(
                fields
                    .chunks(2)
                    .map(|p| (p[0].clone(), p[1].clone()))
                    .collect(),
            )
        }
        _ => Pkt::Other(packet.to_vec()),
    }
}

fn request(opcode: u8, file: &str, mode: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut packet = vec![0, opcode];
    for s in [file, mode]
        .into_iter()
        .chain(opts.iter().flat_map(|(n, v)| [*n, *v]))
    {
        packet.extend_from_slice(s.as_bytes());
        packet.push(0);
    }
    packet
}

fn ack(block: u16) -> Vec<u8> {
    let mut packet = vec![0, 4];
    packet.extend_from_slice(&block.to_be_bytes());
    packet
}

/// How the test client misbehaves.
#[derive(Debug, Default, Clone, Copy)]
struct Policy {
    /// Never send every n-th ACK.
    skip_every: Option<usize>,
    /// Send every ACK twice.
    ack_twice: bool,
}

/// A completed fetch.
#[derive(Debug)]
struct Fetched {
    data: Vec<u8>,
    oack: Option<Vec<(String, String)>>,
    /// Wire block numbers, in order.
    blocks: Vec<u16>,
    /// DATA packets received again (the server retransmitted).
    duplicates: usize,
}

struct Client {
    socket: UdpSocket,
    server: SocketAddr,
}

impl Client {
    fn new(server: SocketAddr) -> Client {
        Client::from_ip(server, LOCALHOST)
    }

    fn from_ip(server: SocketAddr, ip: IpAddr) -> Client {
        let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("client socket");
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        Client { socket, server }
    }

    fn send(&self, to: SocketAddr, packet: &[u8]) {
        self.socket.send_to(packet, to).expect("send");
    }

    fn recv(&self) -> (Pkt, SocketAddr) {
        let mut buf = vec![0; 70_000];
        let (len, from) = self
            .socket
            .recv_from(&mut buf)
            .expect("an answer from the server");
        (parse(&buf[..len]), from)
    }

    fn rrq(&self, file: &str, mode: &str, opts: &[(&str, &str)]) {
        self.send(self.server, &request(1, file, mode, opts));
    }

    fn fetch(&self, file: &str, mode: &str, opts: &[(&str, &str)]) -> Result<Fetched, Pkt> {
        self.fetch_with(file, mode, opts, Policy::default())
    }

    /// Fetches a file; only the server retransmits (this client re-ACKs when it sees a
    /// duplicate or a gap, as RFC 7440 asks, and never on its own timeout).
    fn fetch_with(
        &self,
        file: &str,
        mode: &str,
        opts: &[(&str, &str)],
        policy: Policy,
    ) -> Result<Fetched, Pkt> {
        self.rrq(file, mode, opts);
        let (first, tid) = self.recv();
        assert_ne!(tid, self.server, "transfers answer from their own port");
        self.continue_fetch(first, tid, policy)
    }

    /// Goes on with a transfer whose first packet from `tid` was `first`.
    fn continue_fetch(&self, first: Pkt, tid: SocketAddr, policy: Policy) -> Result<Fetched, Pkt> {
        let mut acks = 0usize;
        let mut send_ack = |block: u16| {
            acks += 1;
            if policy.skip_every.is_some_and(|n| acks % n == 0) {
                return;
            }
            self.send(tid, &ack(block));
            if policy.ack_twice {
                self.send(tid, &ack(block));
            }
        };
        let mut fetched = Fetched {
            data: Vec::new(),
            oack: None,
            blocks: Vec::new(),
            duplicates: 0,
        };
        let (mut blksize, mut window) = (512usize, 1usize);
        let mut expected: u64 = 1;
        let mut in_window = 0;
        let mut packet = first;
        loop {
            match packet {
                Pkt::Oack(options) if expected == 1 => {
                    for (name, value) in &options {
                        match name.to_ascii_lowercase().as_str() {
                            "blksize" => blksize = value.parse().unwrap(),
                            "windowsize" => window = value.parse().unwrap(),
                            _ => {}
                        }
                    }
                    fetched.oack = Some(options);
                    send_ack(0);
                }
                Pkt::Data(block, payload) if block == expected as u16 => {
                    assert!(payload.len() <= blksize, "block {block} too long");
                    let last = payload.len() < blksize;
                    fetched.data.extend_from_slice(&payload);
                    fetched.blocks.push(block);
                    in_window += 1;
                    if last || in_window == window {
                        send_ack(block);
                        in_window = 0;
                    }
                    if last {
                        return Ok(fetched);
                    }
                    expected += 1;
                }
                Pkt::Data(..) => {
                    fetched.duplicates += 1;
                    send_ack((expected - 1) as u16);
                    in_window = 0;
                }
                other => return Err(other),
            }
            let (next, from) = self.recv();
            assert_eq!(from, tid, "only the transfer's port talks to us");
            packet = next;
        }
    }
}

fn error_code(result: Result<Fetched, Pkt>) -> (u16, String) {
    match result {
        Err(Pkt::Error(code, message)) => (code, message),
        other => panic!("expected an ERROR, got {other:?}"),
    }
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Real clients.

/// Runs a client program to completion, bounded by `PATIENCE`; returns its stdout and stderr.
fn run_program(mut command: Command, package: &str, stdin: Option<&str>) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let out = std::fs::File::create(&log).unwrap();
    command
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!("cannot run `{program}` ({e}): install the Debian package {package}")
    });
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{program}` did not finish:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status.success(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

/// Fails on what the clients print about a failed transfer: tftp-hpa's `-c get` and atftp's
/// interactive mode exit 0 even then, and leave a local file behind.
fn assert_no_error(output: &str, what: &str) {
    let lower = output.to_ascii_lowercase();
    for sign in ["error", "timed out", "abort"] {
        assert!(!lower.contains(sign), "{what}:\n{output}");
    }
}

/// `tftp` from tftp-hpa: `mode` is `octet` or `netascii`.
fn tftp_hpa(server: &Server, remote: &str, mode: &str, local: &Path) {
    let mut command = Command::new("tftp");
    command
        .args(["-v", "-m", mode])
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .arg("-c")
        .arg("get")
        .arg(remote)
        .arg(local);
    let (ok, output) = run_program(command, "tftp-hpa", None);
    assert!(ok, "tftp get {remote} failed:\n{output}");
    assert_no_error(&output, &format!("tftp get {remote}"));
}

/// `atftp` in batch mode with `--option` arguments.
fn atftp(server: &Server, remote: &str, options: &[&str], local: &Path) {
    let mut command = Command::new("atftp");
    command.args(["-g", "-r", remote, "-l"]).arg(local);
    for option in options {
        command.args(["--option", option]);
    }
    command
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string());
    let (ok, output) = run_program(command, "atftp", None);
    assert!(ok, "atftp {options:?} get {remote} failed:\n{output}");
    assert_no_error(&output, &format!("atftp {options:?} get {remote}"));
}

fn assert_same(local: &Path, name: &str, context: &str) {
    let got = std::fs::read(local).unwrap_or_else(|e| panic!("{context}: no {name}: {e}"));
    let want = content(name);
    assert!(
        got == want,
        "{context}: {name} differs ({} bytes instead of {})",
        got.len(),
        want.len()
    );
}

#[test]
fn tftp_hpa_fetches_every_file() {
    let server = Server::start(options());
    let dir = tempfile::tempdir().unwrap();
    for (name, _) in SIZES {
        let local = dir.path().join(name);
        tftp_hpa(&server, name, "octet", &local);
        assert_same(&local, name, "tftp-hpa octet");
    }
    // The client undoes netascii, so the original comes back only if the server encoded it.
    let local = dir.path().join("text");
    tftp_hpa(&server, "text", "netascii", &local);
    assert_same(&local, "text", "tftp-hpa netascii");
}

#[test]
fn atftp_fetches_with_and_without_options() {
    let server = Server::start(options());
    let dir = tempfile::tempdir().unwrap();
    let variants: [&[&str]; 4] = [
        &[],
        &["blksize 1428", "tsize enable"],
        &["blksize 8", "tsize enable"],
        &["windowsize 8", "blksize 1024", "tsize enable"],
    ];
    for (i, options) in variants.iter().enumerate() {
        for (name, size) in SIZES {
            if options.contains(&"blksize 8") && size > 4096 {
                continue; // 131072 round trips of 8 bytes prove nothing more.
            }
            let local = dir.path().join(format!("{name}-{i}"));
            atftp(&server, name, options, &local);
            assert_same(&local, name, &format!("atftp {options:?}"));
        }
    }
    let local = dir.path().join("big");
    atftp(&server, "1mib", &["blksize 65464", "tsize enable"], &local);
    assert_same(&local, "1mib", "atftp blksize 65464");
}

#[test]
fn atftp_netascii() {
    let server = Server::start(options());
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("text");
    let mut command = Command::new("atftp");
    command
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string());
    let script = format!("mode netascii\nget text {}\nquit\n", local.display());
    let (ok, output) = run_program(command, "atftp", Some(&script));
    assert!(ok, "atftp netascii failed:\n{output}");
    assert_no_error(&output, "atftp netascii");
    assert_same(&local, "text", "atftp netascii");
}

#[test]
fn real_clients_see_file_not_found() {
    let server = Server::start(options());
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("tftp");
    command
        .args(["-m", "octet"])
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string())
        .args(["-c", "get", "missing"])
        .arg(dir.path().join("hpa"));
    let (_, output) = run_program(command, "tftp-hpa", None);
    assert!(output.contains("Error code 1"), "{output}");

    let mut command = Command::new("atftp");
    command
        .args(["-g", "-r", "missing", "-l"])
        .arg(dir.path().join("atftp"))
        .arg(server.addr.ip().to_string())
        .arg(server.addr.port().to_string());
    let (ok, output) = run_program(command, "atftp", None);
    assert!(!ok && output.contains("file not found"), "{output}");
}

// ---------------------------------------------------------------------------------------
// Hand-written client.

#[test]
fn oack_lists_only_requested_options_with_the_real_tsize() {
    let server = Server::start(options());
    let client = Client::new(server.addr);

    let fetched = client
        .fetch(
            "1mib",
            "octet",
            &[
                ("blksize", "1024"),
                ("tsize", "0"),
                ("timeout", "3"),
                ("windowsize", "2"),
                ("x-unknown", "1"),
            ],
        )
        .unwrap();
    assert_eq!(
        fetched.oack,
        Some(pairs(&[
            ("blksize", "1024"),
            ("tsize", "1048576"),
            ("timeout", "3"),
            ("windowsize", "2"),
        ]))
    );
    assert!(fetched.data == content("1mib"));
    assert_eq!(fetched.blocks.len(), 1025);

    let fetched = client.fetch("513", "OCTET", &[("tsize", "0")]).unwrap();
    assert_eq!(fetched.oack, Some(pairs(&[("tsize", "513")])));
    assert_eq!(fetched.data, content("513"));

    // Nothing acceptable asked: plain RFC 1350, DATA straight away.
    let fetched = client.fetch("513", "octet", &[]).unwrap();
    assert_eq!(fetched.oack, None);
    assert_eq!(fetched.blocks, [1, 2]);
    let fetched = client
        .fetch(
            "513",
            "octet",
            &[
                ("blksize", "7"),
                ("timeout", "0"),
                ("windowsize", "0"),
                ("x", "y"),
            ],
        )
        .unwrap();
    assert_eq!(fetched.oack, None);
    assert_eq!(fetched.data, content("513"));

    // Above the RFC 2348 maximum: lowered, not refused.
    let fetched = client
        .fetch("1mib", "octet", &[("BlkSize", "70000")])
        .unwrap();
    assert_eq!(fetched.oack, Some(pairs(&[("BlkSize", "65464")])));
    assert!(fetched.data == content("1mib"));
}

#[test]
fn block_sizes_8_and_65464() {
    let server = Server::start(options());
    let client = Client::new(server.addr);
    let fetched = client.fetch("513", "octet", &[("blksize", "8")]).unwrap();
    assert_eq!(fetched.oack, Some(pairs(&[("blksize", "8")])));
    assert_eq!(fetched.data, content("513"));
    assert_eq!(fetched.blocks.len(), 65);
    // A multiple of the block size ends with an empty block.
    let fetched = client.fetch("512", "octet", &[("blksize", "8")]).unwrap();
    assert_eq!(fetched.data, content("512"));
    assert_eq!(fetched.blocks.len(), 65);

    let fetched = client
        .fetch("1mib", "octet", &[("blksize", "65464")])
        .unwrap();
    assert_eq!(fetched.oack, Some(pairs(&[("blksize", "65464")])));
    assert!(fetched.data == content("1mib"));
    assert_eq!(fetched.blocks.len(), 17);
}

#[test]
fn windowsize_4() {
    let server = Server::start(options());
    let client = Client::new(server.addr);
    for name in ["512", "513", "1mib"] {
        let fetched = client.fetch(name, "octet", &[("windowsize", "4")]).unwrap();
        assert_eq!(fetched.oack, Some(pairs(&[("windowsize", "4")])));
        assert!(fetched.data == content(name), "{name}");
        assert_eq!(fetched.duplicates, 0);
    }
}

#[test]
fn netascii_is_encoded_on_the_wire() {
    let server = Server::start(options());
    let client = Client::new(server.addr);
    let fetched = client
        .fetch("text", "netascii", &[("tsize", "0"), ("blksize", "8")])
        .unwrap();
    assert_eq!(fetched.data, TEXT_NETASCII);
    let tsize = TEXT_NETASCII.len().to_string();
    assert_eq!(
        fetched.oack,
        Some(pairs(&[("tsize", &tsize), ("blksize", "8")]))
    );
}

#[test]
fn block_numbers_roll_over_to_zero() {
    let server = Server::start(options());
    let client = Client::new(server.addr);
    let fetched = client
        .fetch(
            "rollover",
            "octet",
            &[("blksize", "8"), ("windowsize", "64")],
        )
        .unwrap();
    assert!(fetched.data == content("rollover"));
    assert_eq!(fetched.blocks.len(), 65537);
    assert_eq!(fetched.blocks[65534..], [65535, 0, 1]);
}

#[test]
fn lost_acks_are_recovered_by_retransmission() {
    let server = Server::start(options());
    let client = Client::new(server.addr);
    let lossy = Policy {
        skip_every: Some(5),
        ..Policy::default()
    };
    let fetched = client
        .fetch_with("513", "octet", &[("blksize", "64")], lossy)
        .unwrap();
    assert_eq!(fetched.data, content("513"));
    assert!(fetched.duplicates > 0, "the server retransmitted");

    let fetched = client
        .fetch_with(
            "1mib",
            "octet",
            // A window of 4 × 32 KiB still fits the default socket receive buffer, so the only
            // losses are the skipped ACKs.
            &[("blksize", "32768"), ("windowsize", "4")],
            lossy,
        )
        .unwrap();
    assert!(fetched.data == content("1mib"));
    assert!(
        fetched.duplicates > 0,
        "the server retransmitted the window"
    );
}

#[test]
fn duplicate_acks_cause_no_duplicate_data() {
    // A long timeout, so that only a duplicate ACK (never a slow machine) could cause a resend.
    let server = Server::start(TftpOptions {
        timeout_secs: 10,
        ..options()
    });
    let client = Client::new(server.addr);
    let twice = Policy {
        ack_twice: true,
        ..Policy::default()
    };
    for opts in [&[][..], &[("windowsize", "4")][..]] {
        let fetched = client.fetch_with("1mib", "octet", opts, twice).unwrap();
        assert!(fetched.data == content("1mib"));
        assert_eq!(fetched.duplicates, 0, "Sorcerer's Apprentice with {opts:?}");
    }
}

#[test]
fn write_requests_are_refused() {
    let server = Server::start(options());
    let client = Client::new(server.addr);
    client.send(server.addr, &request(2, "upload", "octet", &[]));
    match client.recv().0 {
        Pkt::Error(2, message) => assert!(!message.is_empty()),
        other => panic!("expected ERROR 2, got {other:?}"),
    }
}

#[test]
fn file_errors_map_to_tftp_codes() {
    let server = Server::start(options());
    let client = Client::new(server.addr);
    assert_eq!(error_code(client.fetch("missing", "octet", &[])).0, 1);
    assert_eq!(error_code(client.fetch("denied", "octet", &[])).0, 2);
    assert_eq!(
        error_code(client.fetch("broken", "octet", &[("tsize", "0")])),
        (0, "template error".into())
    );
    // Refused before the source is asked.
    client.rrq("a\\b", "octet", &[]);
    assert!(matches!(client.recv().0, Pkt::Error(2, _)));
    // One leading slash is stripped.
    let fetched = client.fetch("/511", "octet", &[]).unwrap();
    assert_eq!(fetched.data, content("511"));
    let asked = server.files.asked.lock().unwrap().clone();
    assert_eq!(asked, ["missing", "denied", "broken", "511"]);
}

#[test]
fn malformed_packets_do_not_stop_the_server() {
    let server = Server::start(options());
    let client = Client::new(server.addr);
    // Dropped silently.
    for packet in [&b""[..], b"\x00", b"\x00\x05\x00\x00whatever\x00"] {
        client.send(server.addr, packet);
    }
    // Answered with ERROR 4.
    let mut long = vec![0, 1];
    long.extend(std::iter::repeat_n(b'a', 3000));
    let answered: [&[u8]; 8] = [
        b"\x00\x09junk",
        b"\xff\xff",
        b"\x00\x01no-terminator",
        b"\x00\x01file\x00octet",
        b"\x00\x01file\x00mail\x00",
        b"\x00\x01\xc3\x28\x00octet\x00",
        b"\x00\x04\x00\x01",
        &long,
    ];
    for packet in answered {
        client.send(server.addr, packet);
        match client.recv() {
            (Pkt::Error(4, _), from) => assert_eq!(from, server.addr),
            (other, _) => panic!("{packet:?}: expected ERROR 4, got {other:?}"),
        }
    }
    let fetched = client.fetch("513", "octet", &[("tsize", "0")]).unwrap();
    assert_eq!(fetched.data, content("513"));
}

#[test]
fn a_stranger_gets_error_5_and_the_transfer_goes_on() {
    let server = Server::start(options());
    let client = Client::new(server.addr);
    let stranger = Client::new(server.addr);
    client.rrq("1mib", "octet", &[]);
    let (first, tid) = client.recv();
    assert_eq!(first, Pkt::Data(1, content("1mib")[..512].to_vec()));

    stranger.send(tid, &ack(1));
    assert!(matches!(stranger.recv(), (Pkt::Error(5, _), from) if from == tid));
    // A stranger's ERROR is neither answered nor allowed to end the transfer.
    stranger.send(tid, b"\x00\x05\x00\x00go away\x00");
    stranger.send(tid, &ack(1));
    assert!(matches!(stranger.recv(), (Pkt::Error(5, _), from) if from == tid));

    let fetched = client
        .continue_fetch(first, tid, Policy::default())
        .unwrap();
    assert!(fetched.data == content("1mib"));
}

/// Takes a transfer slot: RRQ, first DATA, no ACK yet.
fn hold(client: &Client) -> (Pkt, SocketAddr) {
    client.rrq("513", "octet", &[]);
    let (first, tid) = client.recv();
    assert!(matches!(first, Pkt::Data(1, _)), "{first:?}");
    (first, tid)
}

fn busy(client: &Client) -> bool {
    client.rrq("513", "octet", &[]);
    match client.recv() {
        (Pkt::Error(0, message), from) => {
            assert_eq!(message, "server busy");
            assert_eq!(from, client.server);
            true
        }
        (Pkt::Data(1, payload), tid) => {
            let fetched = client
                .continue_fetch(Pkt::Data(1, payload), tid, Policy::default())
                .unwrap();
            assert_eq!(fetched.data, content("513"));
            false
        }
        (other, _) => panic!("expected busy or DATA, got {other:?}"),
    }
}

#[test]
fn busy_over_max_transfers() {
    let server = Server::start(TftpOptions {
        max_transfers: 1,
        ..options()
    });
    let first = Client::new(server.addr);
    let second = Client::new(server.addr);
    let (packet, tid) = hold(&first);
    assert!(
        busy(&second),
        "second transfer refused while the first runs"
    );
    let fetched = first
        .continue_fetch(packet, tid, Policy::default())
        .unwrap();
    assert_eq!(fetched.data, content("513"));
    // The slot is freed once the server has processed the final ACK; that may take a moment.
    let freed = (0..500).any(|_| {
        let done = !busy(&second);
        if !done {
            std::thread::sleep(Duration::from_millis(10));
        }
        done
    });
    assert!(freed, "the slot of the finished transfer is freed");
}

#[test]
fn busy_over_max_per_client() {
    let server = Server::start(TftpOptions {
        max_per_client: 1,
        ..options()
    });
    let first = Client::new(server.addr);
    let same_ip = Client::new(server.addr);
    let other_ip = Client::from_ip(server.addr, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let (packet, tid) = hold(&first);
    assert!(busy(&same_ip), "second transfer from one IP refused");
    assert!(!busy(&other_ip), "another IP is served");
    let fetched = first
        .continue_fetch(packet, tid, Policy::default())
        .unwrap();
    assert_eq!(fetched.data, content("513"));
}

#[test]
fn shutdown_ends_run_and_abandons_transfers() {
    let server = Server::start(options());
    let client = Client::new(server.addr);
    let _held = hold(&client);
    server.stop().expect("run returns Ok");
    // The listening port is closed with the server.
    let probe = UdpSocket::bind(SocketAddr::new(LOCALHOST, 0)).unwrap();
    probe.connect(server.addr).unwrap();
    probe.set_read_timeout(Some(PATIENCE)).unwrap();
    probe.send(&request(1, "513", "octet", &[])).unwrap();
    let err = probe.recv(&mut [0; 600]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}
