//! Helpers shared by the integration tests: the `provisiond` binary as a process, and HTTP apps served in process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub mod console;

pub const BIN: &str = env!("CARGO_BIN_EXE_provisiond");
/// Bound on waiting for the daemon; generous for a loaded CI machine, never reached normally.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn command(cwd: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(cwd)
        // No /etc file may leak into a test: the default path points into the temp dir.
        .env("PROVISIOND_CONFIG", cwd.join("absent.toml"))
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null());
    cmd
}

pub struct Daemon {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Daemon {
    pub fn start(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn provisiond");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Daemon {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a log line containing every fragment; returns it.
    pub fn expect_line(&mut self, fragments: &[&str]) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if fragments.iter().all(|f| line.contains(f)) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.child.kill();
                    panic!(
                        "no log line with {fragments:?}; seen:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Every line logged so far (waits for none): for a failing test's message.
    pub fn log_so_far(&mut self) -> String {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("kill");
    }

    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Collect the last lines too.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(line);
                }
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("provisiond did not exit; seen:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration in `dir` whose listeners take ephemeral ports on 127.0.0.1 (tests run in
/// parallel), the repository's plugins, sockets in `dir`, plus `body`; a `[http]` or `[tftp]`
/// table in `body` replaces the default one.
pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("provisiond.toml");
    let mut text = format!(
        "[general]\ndata_dir = \"{}\"\nplugins_dir = \"{}\"\n[api]\nlisten = \"127.0.0.1:0\"\nsocket = \"{}\"\n[dhcpinfo]\nsocket = \"{}\"\n",
        dir.join("data").display(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins").display(),
        dir.join("api.sock").display(),
        dir.join("dhcpinfo.sock").display()
    );
    for table in ["http", "tftp"] {
        if !body.contains(&format!("[{table}]")) {
            text.push_str(&format!("[{table}]\nlisten = \"127.0.0.1:0\"\n"));
        }
    }
    text.push_str(body);
    std::fs::write(&path, text).unwrap();
    path
}

/// A daemon on a fresh configuration in `dir`, ready; and its REST API's TCP address.
pub fn start_daemon(dir: &Path) -> (Daemon, std::net::SocketAddr) {
    let config = write_config(dir, "");
    let mut daemon = Daemon::start({
        let mut cmd = command(dir);
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    let api = listening_on(&daemon.expect_line(&["REST API on"]));
    daemon.expect_line(&["ready"]);
    (daemon, api)
}

pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run provisiond");
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The address in a "… provisioning on ADDR" log line.
pub fn listening_on(line: &str) -> std::net::SocketAddr {
    line.rsplit(' ')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line}"))
}

/// An HTTP app served by `provisiond::http::serve` inside the test process, on an ephemeral
/// port of 127.0.0.1, on a runtime of its own; dropping it shuts the server down.
pub struct InProcess {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    _runtime: tokio::runtime::Runtime,
}

impl InProcess {
    /// Serves `app` with these limits, over TLS when `tls` is given.
    pub fn start(
        app: axum::Router,
        limits: provisiond::http::HttpLimits,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> InProcess {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        let addr = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(provisiond::http::serve(
                listener, tls, app, limits, shutdown,
            ));
            addr
        });
        InProcess {
            addr,
            stop,
            _runtime: runtime,
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The REST API's state over `store` as the daemon builds it: the repository's plugins as the
/// built-in layer (so that `POST /pg_mgr/reload` works), default tenant `master`, no `url_key`.
pub fn api_state(store: &provisiond::store::Store) -> provisiond::http::api::ApiState {
    use provisiond::plugins::{Origin, PluginSet, Renderer, ServerInfo};
    let roots = vec![(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins"),
        Origin::Builtin,
    )];
    let plugins = PluginSet::load(&roots);
    assert!(plugins.errors.is_empty(), "{:?}", plugins.errors);
    let files = std::sync::Arc::new(provisiond::files::FileService::new(
        store.clone(),
        "master",
        provisiond::config::HttpAuthStrategy::Disabled,
        std::sync::Arc::new(plugins),
        Renderer::new(store.clone(), ServerInfo::default()),
    ));
    provisiond::http::api::ApiState::new(store.clone(), files, "master".into(), roots)
}

/// The limits of the daemon's API listeners (16 KiB heads, JSON refusals), with shorter times;
/// connections live `max_connection_secs`.
pub fn api_limits(max_connection_secs: u64) -> provisiond::http::HttpLimits {
    provisiond::http::HttpLimits {
        max_request_bytes: 16384,
        request_timeout: Duration::from_secs(5),
        max_connections: 64,
        max_connection_time: Duration::from_secs(max_connection_secs),
        shutdown_grace: Duration::from_secs(5),
        refusal: provisiond::http::api::refusal,
    }
}

/// An answer of the REST API: status, headers (names lower-cased), body as JSON (a string
/// when it is not JSON, null when empty).
pub struct ApiReply {
    pub status: u16,
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: serde_json::Value,
}

/// One request with curl to `url`; `via` goes first (e.g. `--unix-socket PATH`).
pub fn curl(
    via: &[&str],
    url: &str,
    method: &str,
    headers: &[String],
    body: Option<(String, String)>,
) -> ApiReply {
    let tmp = tempfile::tempdir().unwrap();
    let (head, out) = (tmp.path().join("h"), tmp.path().join("b"));
    let mut cmd = Command::new("curl");
    cmd.args(via)
        .args(["-sS", "-g", "--max-time", "30", "-X", method, "-o"])
        .arg(&out)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some((media, text)) = body {
        // From a file: a body may be longer than a command line allows.
        let file = tmp.path().join("request");
        std::fs::write(&file, text).unwrap();
        cmd.args(["-H", &format!("Content-Type: {media}"), "--data-binary"])
            .arg(format!("@{}", file.display()));
    }
    let output = cmd.arg(url).output().expect("curl");
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl: {}", String::from_utf8_lossy(&output.stderr)));
    let headers = std::fs::read_to_string(&head)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let text = std::fs::read_to_string(&out).unwrap_or_default();
    let body = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    ApiReply {
        status,
        headers,
        body,
    }
}

/// A token of `tenant` (created if needed) with `acl` (default `provd.#`); its secret.
pub fn api_token(
    store: &provisiond::store::Store,
    tenant: &str,
    acl: &[&str],
    expires: Option<u64>,
) -> String {
    use provisiond::model::{self, Tenant, Token};
    if store.tenant(tenant).unwrap().is_none() {
        store
            .create_tenant(&Tenant {
                id: tenant.into(),
                name: tenant.into(),
                parent: Some("master".into()),
                provisioning_key: None,
                default_config: None,
                auto_token: None,
                revision: 0,
            })
            .unwrap();
    }
    let secret = format!("secret-{}", model::new_id());
    let acl = if acl.is_empty() {
        vec!["provd.#".to_owned()]
    } else {
        acl.iter().map(|a| a.to_string()).collect()
    };
    store
        .create_token(&Token {
            hash: provisiond::http::api::hash_token(&secret),
            tenant: tenant.into(),
            acl,
            created: model::now(),
            expires,
            description: None,
        })
        .unwrap();
    secret
}

/// A UDP port of 127.0.0.1 that was free a moment ago, for settings that cannot take port 0
/// (`dhcp.port`) or a peer started by the test (SIPp).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What `open` opens (a store, a raw database), tried again while it fails only because the
/// store is still locked: a server task of the test that has not let its handle go yet. Only
/// that error is retried, for at most [`PATIENCE`]; any other fails the test.
pub fn retry_locked<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match open() {
            Ok(opened) => return opened,
            Err(e)
                if e.to_string().contains("is locked by another process")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("cannot open: {e}"),
        }
    }
}

/// One DORA of client `mac` through a relay (`giaddr`, so the server answers on port 67 of
/// `server`), with option 60 set to `vendor` when given; the address it leased. Each message
/// is sent again every 500 ms until its answer (same xid) comes, for at most [`PATIENCE`].
pub fn relayed_dora(
    server: std::net::SocketAddr,
    giaddr: std::net::Ipv4Addr,
    mac: [u8; 6],
    xid: u32,
    vendor: Option<&[u8]>,
) -> std::net::Ipv4Addr {
    use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
    use dhcproto::{Decodable, Decoder, Encodable, Encoder};
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let message = |kind: MessageType| {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_xid(xid)
            .set_giaddr(giaddr)
            .set_chaddr(&mac);
        m.set_hops(1);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        if let Some(vendor) = vendor {
            m.opts_mut()
                .insert(DhcpOption::ClassIdentifier(vendor.to_vec()));
        }
        m
    };
    let ask = |message: &Message| {
        let mut out = Vec::new();
        message.encode(&mut Encoder::new(&mut out)).unwrap();
        let mut buf = [0u8; 1500];
        let deadline = Instant::now() + PATIENCE;
        loop {
            assert!(Instant::now() < deadline, "no DHCP answer");
            socket.send_to(&out, server).unwrap();
            let Ok((n, _)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if let Ok(reply) = Message::decode(&mut Decoder::new(&buf[..n])) {
                if reply.xid() == xid {
                    return reply;
                }
            }
        }
    };
    let offer = ask(&message(MessageType::Discover));
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    let mut request = message(MessageType::Request);
    request
        .opts_mut()
        .insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
    if let Some(DhcpOption::ServerIdentifier(id)) = offer.opts().get(OptionCode::ServerIdentifier) {
        request.opts_mut().insert(DhcpOption::ServerIdentifier(*id));
    }
    let ack = ask(&request);
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    ack.yiaddr()
}

/// The rows of a rollout's CSV export, its header checked.
pub fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "code",
            "label",
            "category",
            "state",
            "device_mac",
            "registered_at"
        ]
    );
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

/// A copy of the repository's plugin `name` in `root/<name>` with `extra` (TOML, e.g.
/// `[[packages]]` tables) appended to its `plugin.toml`; the copy's directory.
pub fn plugin_copy(root: &Path, name: &str, extra: &str) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).unwrap();
            }
        }
    }
    let dir = root.join(name);
    copy(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("plugins")
            .join(name),
        &dir,
    );
    let manifest = dir.join("plugin.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push('\n');
    text.push_str(extra);
    std::fs::write(&manifest, text).unwrap();
    dir
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A TFTP download of `file` from `server` by tftp-hpa into `out` (octet mode); the bytes.
pub fn tftp_get(server: std::net::SocketAddr, file: &str, out: &Path) -> Vec<u8> {
    let _ = std::fs::remove_file(out);
    let output = Command::new("tftp")
        .args([
            &server.ip().to_string(),
            &server.port().to_string(),
            "-m",
            "octet",
            "-c",
            "get",
            file,
        ])
        .arg(out)
        .output()
        .expect("tftp (apt-get install tftp-hpa)");
    let printed = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        !printed.to_lowercase().contains("error"),
        "tftp get {file}: {printed}"
    );
    std::fs::read(out).unwrap_or_default()
}

/// The parameters of a Digest answer as provisiond writes them (no comma inside values).
pub fn digest_params(value: &str) -> std::collections::HashMap<String, String> {
    value
        .strip_prefix("Digest ")
        .unwrap_or_else(|| panic!("not a Digest answer: {value}"))
        .split(", ")
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}
