//! The plugin repository end to end: archives and a signed index built by `provisiond repo`
//! from the repository's own plugins, served by a small HTTP server on loopback, used by a
//! daemon (the real binary) through the API, the CLI and wazo-provd's operation resources.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{command, listening_on, run, write_config, ApiReply, Daemon};
use serde_json::{json, Value};

const MEDIA: &str = "application/vnd.proformatique.provd+json";

/// How the test server answers one file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As it is on disk.
    Whole,
    /// Announces the whole length, sends half and closes.
    Truncated,
}

/// A static file server on 127.0.0.1 over `root`, with per-file modes.
struct FileServer {
    addr: SocketAddr,
    modes: Arc<Mutex<BTreeMap<String, Mode>>>,
    /// The request lines received, in order.
    lines: Arc<Mutex<Vec<String>>>,
}

impl FileServer {
    fn start(root: PathBuf) -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let modes: Arc<Mutex<BTreeMap<String, Mode>>> = Arc::default();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let (shared, seen) = (Arc::clone(&modes), Arc::clone(&lines));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                let (modes, seen) = (Arc::clone(&shared), Arc::clone(&seen));
                std::thread::spawn(move || serve(stream, &root, &modes, &seen));
            }
        });
        FileServer { addr, modes, lines }
    }

    fn set(&self, file: &str, mode: Mode) {
        self.modes.lock().unwrap().insert(file.to_owned(), mode);
    }

    fn url(&self) -> String {
        format!("http://{}/repo/", self.addr)
    }
}

/// Serves one request; an absolute-form target (`GET http://host/repo/…`, as sent to a proxy)
/// is answered as its path, so that the server also plays an HTTP proxy.
fn serve(
    mut stream: TcpStream,
    root: &Path,
    modes: &Mutex<BTreeMap<String, Mode>>,
    lines: &Mutex<Vec<String>>,
) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    lines
        .lock()
        .unwrap()
        .push(head.lines().next().unwrap_or("").to_owned());
    let target = head.split(' ').nth(1).unwrap_or("/");
    let path = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]).to_owned(),
        None => target.to_owned(),
    };
    let file = path.strip_prefix("/repo/").unwrap_or("").to_owned();
    let mode = modes
        .lock()
        .unwrap()
        .get(&file)
        .copied()
        .unwrap_or(Mode::Whole);
    let body = match std::fs::read(root.join(&file)) {
        Ok(body) if !file.is_empty() && !file.contains("..") => body,
        _ => {
            let _ = stream.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            return;
        }
    };
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = match mode {
        Mode::Whole => &body[..],
        Mode::Truncated => &body[..body.len() / 2],
    };
    let _ = stream.write_all(sent);
}

/// The daemon under test and its directories.
struct Setup {
    dir: tempfile::TempDir,
    repo: PathBuf,
    server: FileServer,
    daemon: Daemon,
    http: SocketAddr,
}

impl Setup {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn sock(&self) -> String {
        self.dir.path().join("api.sock").display().to_string()
    }

    /// One API request over the admin socket (no token needed there).
    fn api(&self, method: &str, path: &str, body: Option<Value>) -> ApiReply {
        common::curl(
            &["--unix-socket", &self.sock()],
            &format!("http://localhost/api/provd/0.2{path}"),
            method,
            &[format!("Accept: {MEDIA}")],
            body.map(|b| (MEDIA.to_owned(), b.to_string())),
        )
    }

    /// Starts an operation with `POST path` and follows its Location (as wazo-provd-client
    /// does: its path after `/0.2` under the client's base) until it ends; the final body.
    fn operation(&self, path: &str, body: Value) -> Value {
        let started = self.api("POST", path, Some(body));
        assert_eq!(started.status, 201, "{path}: {:?}", started.body);
        let location = started.headers["location"].clone();
        let op = location.strip_prefix("/0.2").expect("a /0.2 Location");
        assert!(op.starts_with("/pg_mgr/operations/"), "{location}");
        loop {
            let reply = self.api("GET", op, None);
            assert_eq!(reply.status, 200);
            let status = reply.body["status"].as_str().unwrap().to_owned();
            if status.contains("success") || status.contains("fail") {
                assert_eq!(self.api("DELETE", op, None).status, 204);
                return reply.body;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        run(command(self.dir.path())
            .args(args)
            .args(["--socket", &self.sock()]))
    }

    fn repo_cmd(&self, args: &[&str]) -> String {
        let (code, out, err) = run(command(self.dir.path()).arg("repo").args(args));
        assert_eq!(code, 0, "repo {args:?}: {err}");
        out
    }

    /// The index of the repository directory, signed with `key`.
    fn index(&self, key: &str) {
        self.repo_cmd(&[
            "index",
            self.repo.to_str().unwrap(),
            "--sign",
            self.dir.path().join(key).to_str().unwrap(),
        ]);
    }

    fn installed(&self) -> Value {
        let reply = self.api("GET", "/pg_mgr/install/installed", None);
        assert_eq!(reply.status, 200);
        reply.body["pkgs"].clone()
    }

    /// What the installs must leave untouched: the plugin list and the plugins directory.
    fn state(&self) -> (Value, Vec<String>) {
        let mut files: Vec<String> = walk(&self.data().join("plugins"));
        files.sort();
        (self.installed(), files)
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path().display().to_string());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

/// A copy of the repository's plugin `name` in `dest`, at `version`, with `marker` on top of
/// its common template when given.
fn plugin_copy(name: &str, dest: &Path, version: &str) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins")
        .join(name);
    let target = dest.join(name);
    copy_dir(&source, &target);
    let manifest = target.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replacen(
        &format!("version = \"{}\"", manifest_version(&text)),
        &format!("version = \"{version}\""),
        1,
    );
    std::fs::write(&manifest, text).unwrap();
    target
}

fn manifest_version(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// GET `path` from the provisioning server; (status, body).
fn fetch(http: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(http).unwrap();
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: x\r\nUser-Agent: Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

/// How many plugins the repository's `plugins/` holds (each is packed).
fn built_in_count() -> usize {
    std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().join("plugin.toml").exists())
        .count()
}

fn built_in_version(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("plugins")
        .join(name)
        .join("plugin.toml");
    manifest_version(&std::fs::read_to_string(path).unwrap())
}

fn setup() -> Setup {
    setup_with("")
}

/// [`setup`] with `extra` lines in `[plugins]` (`{server}`: the repository's URL).
fn setup_with(extra: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repository");
    let sources = dir.path().join("sources");
    std::fs::create_dir_all(&repo).unwrap();
    let (code, _, err) = run(command(dir.path()).args(["repo", "keygen", "signer"]));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(command(dir.path()).args(["repo", "keygen", "stranger"]));
    assert_eq!(code, 0, "{err}");
    let keys = dir.path().join("trusted-keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(dir.path().join("signer.pub"), keys.join("signer.pub")).unwrap();
    // The built-in plugins as they are, and yealink one version ahead of the built-in one.
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins"))
        .unwrap()
        .flatten()
    {
        let (code, _, err) = run(command(dir.path())
            .args(["repo", "pack"])
            .arg(e.path())
            .arg("--out")
            .arg(&repo));
        assert_eq!(code, 0, "{err}");
    }
    let ahead = format!("{}.1", built_in_version("yealink"));
    let yealink = plugin_copy("yealink", &sources.join("v1"), &ahead);
    let (code, out, err) = run(command(dir.path())
        .args(["repo", "pack"])
        .arg(&yealink)
        .arg("--out")
        .arg(&repo));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("yealink-{ahead}.tar.gz")), "{out}");
    // A leftover of an install killed before it finished: gone once the daemon started.
    let leftover = dir.path().join("data/plugins/.tmp-killed");
    std::fs::create_dir_all(leftover.join("yealink")).unwrap();
    let server = FileServer::start(repo.clone());
    let config = write_config(
        dir.path(),
        &format!(
            "[plugins]\ntrusted_keys_dir = \"{}\"\nmax_archive_bytes = 1048576\n{}\n",
            keys.display(),
            extra.replace("{server}", &server.url())
        ),
    );
    let mut daemon = Daemon::start({
        let mut cmd = command(dir.path());
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    let http = listening_on(&daemon.expect_line(&["HTTP provisioning on"]));
    daemon.expect_line(&["ready"]);
    assert!(
        !leftover.exists(),
        "leftovers of a killed install are removed"
    );
    let setup = Setup {
        dir,
        repo,
        server,
        daemon,
        http,
    };
    let reply = setup.api(
        "PUT",
        "/configure/plugin_server",
        Some(json!({"param": {"value": setup.server.url()}})),
    );
    assert_eq!(reply.status, 204, "{:?}", reply.body);
    setup
}

#[test]
fn the_index_must_be_signed_by_a_trusted_key() {
    let s = setup();
    // Unsigned.
    s.repo_cmd(&["index", s.repo.to_str().unwrap()]);
    let done = s.operation("/pg_mgr/install/update", json!({}));
    assert_eq!(done["status"], "update|fail");
    assert!(
        done["error"].as_str().unwrap().contains("not signed"),
        "{done}"
    );
    // Signed by a key that is not trusted.
    s.index("stranger.key");
    let done = s.operation("/pg_mgr/install/update", json!({}));
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("not among the trusted keys"),
        "{done}"
    );
    // Altered after signing.
    s.index("signer.key");
    let index = s.repo.join("index.json");
    let text = std::fs::read_to_string(&index).unwrap();
    std::fs::write(&index, text.replacen("\"size\": ", "\"size\": 1", 1)).unwrap();
    let done = s.operation("/pg_mgr/install/update", json!({}));
    assert!(
        done["error"].as_str().unwrap().contains("does not verify"),
        "{done}"
    );
    // Nothing was taken from any of them.
    let reply = s.api("GET", "/pg_mgr/install/installable", None);
    assert_eq!(reply.body, json!({"pkgs": {}}));
    let reply = s.api(
        "POST",
        "/pg_mgr/install/install",
        Some(json!({"id": "yealink"})),
    );
    assert_eq!(reply.status, 400);
    assert!(reply.body["error"]
        .as_str()
        .unwrap()
        .contains("update it first"));
    // Signed as it is: `repo verify` agrees, the daemon takes it (through the CLI too).
    s.index("signer.key");
    let out = s.repo_cmd(&[
        "verify",
        s.repo.to_str().unwrap(),
        "--key",
        s.dir.path().join("signer.pub").to_str().unwrap(),
    ]);
    assert!(
        out.contains(&format!("{} archive(s) verified", built_in_count())),
        "{out}"
    );
    let (code, out, err) = s.cli(&["plugin", "update"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("{} plugin(s) available", built_in_count())),
        "{out}"
    );
    let (code, out, _) = s.cli(&["plugin", "search", "yealink"]);
    assert_eq!(code, 0);
    assert!(out.contains("yealink"), "{out}");
    assert!(!out.contains("fanvil"), "{out}");
}

#[test]
fn install_upgrade_and_remove_live() {
    let s = setup();
    s.index("signer.key");
    let done = s.operation("/pg_mgr/install/update", json!({}));
    assert_eq!(done["status"], "update|success", "{done}");
    let ahead = format!("{}.1", built_in_version("yealink"));
    let offered = s.api("GET", "/pg_mgr/install/installable", None).body;
    assert_eq!(offered["pkgs"]["yealink"]["version"], ahead.as_str());
    assert_eq!(offered["pkgs"]["yealink"]["installed_version"], Value::Null);

    // Install through the API: the operation ends in success, the plugin is used at once.
    let done = s.operation("/pg_mgr/install/install", json!({"id": "yealink"}));
    assert!(
        done["status"]
            .as_str()
            .unwrap()
            .starts_with("download|success;"),
        "{done}"
    );
    let installed = s.installed();
    assert_eq!(installed["yealink"]["version"], ahead.as_str());
    assert_eq!(installed["yealink"]["origin"], "installed");
    assert_eq!(installed["yealink"]["repository_version"], ahead.as_str());
    let reply = s.api(
        "POST",
        "/pg_mgr/install/install",
        Some(json!({"id": "yealink"})),
    );
    assert_eq!(reply.status, 400, "installed twice: {:?}", reply.body);

    // Version 2, whose common file says so; a phone fetches during the upgrade and never
    // gets an error.
    let next = format!("{}.2", built_in_version("yealink"));
    let v2 = plugin_copy("yealink", &s.dir.path().join("sources/v2"), &next);
    let common = v2.join("templates/common.cfg.tera");
    let text = std::fs::read_to_string(&common).unwrap();
    let (first, rest) = text.split_once('\n').unwrap();
    std::fs::write(&common, format!("{first}\n## repository v2\n{rest}")).unwrap();
    s.repo_cmd(&[
        "pack",
        v2.to_str().unwrap(),
        "--out",
        s.repo.to_str().unwrap(),
    ]);
    s.index("signer.key");
    let (status, body) = fetch(s.http, "y000000000028.cfg");
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("repository v2"));
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let stop = Arc::clone(&stop);
        let http = s.http;
        std::thread::spawn(move || {
            let mut fetches = 0;
            loop {
                // Read before the fetch: once set, this fetch starts after the upgrade ended.
                let stopping = stop.load(Ordering::SeqCst);
                let (status, body) = fetch(http, "y000000000028.cfg");
                assert_eq!(status, 200, "fetch {fetches} during the upgrade: {body}");
                fetches += 1;
                if stopping && fetches >= 5 {
                    break body.contains("repository v2");
                }
            }
        })
    };
    let (code, out, err) = s.cli(&["plugin", "update"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("updated"));
    let (code, out, err) = s.cli(&["plugin", "upgrade", "yealink"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("in use {next} (installed)")), "{out}");
    stop.store(true, Ordering::SeqCst);
    assert!(
        loader.join().unwrap(),
        "the fetch after the upgrade sees version 2"
    );
    // Both versions on disk, the switch names the new one.
    let dir = s.data().join("plugins/yealink");
    assert!(dir.join(&ahead).is_dir() && dir.join(&next).is_dir());
    assert_eq!(
        std::fs::read_link(dir.join("current")).unwrap(),
        PathBuf::from(&next)
    );

    // A device uses yealink: removal refused with the count, then forced.
    let reply = s.api(
        "POST",
        "/dev_mgr/devices",
        Some(json!({"device": {"id": "phone1", "mac": "00:15:65:00:00:01", "plugin": "yealink"}})),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let (code, _, err) = s.cli(&["plugin", "remove", "yealink"]);
    assert_eq!(code, 1);
    assert!(err.contains("device(s) use plugin yealink"), "{err}");
    assert_eq!(s.installed()["yealink"]["origin"], "installed");
    let (code, out, err) = s.cli(&["plugin", "remove", "yealink", "--force"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("yealink removed"));
    let installed = s.installed();
    assert_ne!(installed["yealink"]["origin"], "installed");
    assert_eq!(installed["yealink"]["repository_version"], Value::Null);
    assert!(!dir.exists());
    let (status, body) = fetch(s.http, "y000000000028.cfg");
    assert_eq!(status, 200);
    assert!(!body.contains("repository v2"));
}

/// Rewrites the index entry of `name` with `change`, and signs the index again (as a
/// repository whose archive was replaced on purpose would).
fn resign(s: &Setup, change: impl FnOnce(&mut Value)) {
    let index = s.repo.join("index.json");
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    change(&mut doc);
    std::fs::write(&index, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    // Sign the edited file as is: `repo index` would rebuild it from the archives.
    let (code, _, err) = run(command(s.dir.path())
        .args(["repo", "sign"])
        .arg(&index)
        .arg("--key")
        .arg(s.dir.path().join("signer.key")));
    assert_eq!(code, 0, "{err}");
}

fn fanvil_entry(doc: &mut Value) -> &mut Value {
    doc["plugins"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["name"] == "fanvil")
        .unwrap()
}

/// A tar.gz holding `entries` (path, content) with the paths written raw.
fn raw_tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, body) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        tar.append(&header, *body).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

#[test]
fn bad_downloads_leave_the_plugins_as_they_were() {
    let s = setup();
    s.index("signer.key");
    let done = s.operation("/pg_mgr/install/update", json!({}));
    assert_eq!(done["status"], "update|success", "{done}");
    let before = s.state();
    let archive = s
        .repo
        .join(format!("fanvil-{}.tar.gz", built_in_version("fanvil")));
    let original = std::fs::read(&archive).unwrap();
    let install = |why: &str| {
        let done = s.operation("/pg_mgr/install/install", json!({"id": "fanvil"}));
        assert!(
            done["status"]
                .as_str()
                .unwrap()
                .starts_with("download|fail"),
            "{why}: {done}"
        );
        let error = done["error"].as_str().unwrap().to_owned();
        assert_eq!(s.state(), before, "{why}: the plugins changed");
        error
    };

    // Tampered: same size, one byte changed.
    let mut tampered = original.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0xff;
    std::fs::write(&archive, &tampered).unwrap();
    assert!(install("tampered").contains("SHA-256"));
    // Another archive than the index's (its size differs).
    let mut longer = original.clone();
    longer.extend_from_slice(b"more");
    std::fs::write(&archive, &longer).unwrap();
    let error = install("other archive");
    assert!(
        error.contains("larger than") || error.contains("bytes"),
        "{error}"
    );
    // Truncated by the server.
    std::fs::write(&archive, &original).unwrap();
    s.server.set(
        archive.file_name().unwrap().to_str().unwrap(),
        Mode::Truncated,
    );
    let error = install("truncated");
    assert!(error.contains("truncated"), "{error}");
    s.server
        .set(archive.file_name().unwrap().to_str().unwrap(), Mode::Whole);

    // A path-traversal archive, listed with its true hash in a signed index.
    let evil = raw_tar_gz(&[
        ("fanvil/plugin.toml", b"name = \"fanvil\"\n"),
        ("fanvil/../../../escaped", b"x"),
    ]);
    let name = "fanvil-9.tar.gz";
    std::fs::write(s.repo.join(name), &evil).unwrap();
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(&evil)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    resign(&s, |doc| {
        let e = fanvil_entry(doc);
        e["archive"] = json!(name);
        e["size"] = json!(evil.len());
        e["sha256"] = json!(sha);
        e["version"] = json!("9");
    });
    let done = s.operation("/pg_mgr/install/update", json!({}));
    assert_eq!(done["status"], "update|success", "{done}");
    assert!(install("traversal").contains(".. are refused"));
    assert!(!s.data().join("escaped").exists());
    assert!(!s.dir.path().join("escaped").exists());

    // Larger than [plugins] max_archive_bytes: refused before any download.
    resign(&s, |doc| fanvil_entry(doc)["size"] = json!(2 << 20));
    let done = s.operation("/pg_mgr/install/update", json!({}));
    assert_eq!(done["status"], "update|success", "{done}");
    let reply = s.api(
        "POST",
        "/pg_mgr/install/install",
        Some(json!({"id": "fanvil"})),
    );
    assert_eq!(reply.status, 400);
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .contains("max_archive_bytes"),
        "{:?}",
        reply.body
    );
    assert_eq!(s.state(), before);
    let leftovers: Vec<_> = walk(&s.data().join("plugins"))
        .into_iter()
        .filter(|p| p.contains(".tmp-") || p.contains(".download-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn allow_unsigned_takes_an_unsigned_index_with_a_warning() {
    let mut s = setup_with("allow_unsigned = [\"{server}\"]");
    s.repo_cmd(&["index", s.repo.to_str().unwrap()]);
    assert!(!s.repo.join("index.json.minisig").exists());
    let done = s.operation("/pg_mgr/install/update", json!({}));
    assert_eq!(done["status"], "update|success", "{done}");
    s.daemon
        .expect_line(&["WARN", "accepted anyway (allow_unsigned)", "not signed"]);
    let done = s.operation("/pg_mgr/install/install", json!({"id": "yealink"}));
    assert!(
        done["status"]
            .as_str()
            .unwrap()
            .starts_with("download|success"),
        "{done}"
    );
    // Every use of the unsigned index says so again.
    s.daemon
        .expect_line(&["WARN", "not signed by a trusted key (allow_unsigned)"]);
}

/// The TFTP fetch of `file` by tftp-hpa from the daemon's TFTP listener.
fn tftp_get(s: &Setup, file: &str) -> Vec<u8> {
    let addr = s
        .daemon
        .seen
        .iter()
        .find(|l| l.contains("TFTP provisioning on"))
        .map(|l| listening_on(l))
        .expect("a TFTP listener");
    common::tftp_get(addr, file, &s.dir.path().join("phone-tftp"))
}

/// Issue 16's "done when": on a fresh daemon, `plugin update` and `plugin install yealink` from
/// a repository built by `provisiond repo`, then a firmware package of that plugin from a
/// local HTTP server; the phone then gets the firmware by HTTP and by TFTP.
#[test]
fn a_fresh_install_gets_a_plugin_and_its_firmware_from_the_repository() {
    let s = setup();
    const FIRMWARE: &str = "T46S-66.86.0.160.rom";
    let firmware: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::create_dir_all(s.repo.join("vendor")).unwrap();
    std::fs::write(s.repo.join("vendor/t46s.rom"), &firmware).unwrap();
    // yealink two versions ahead of the built-in one, declaring the firmware as a package.
    let version = format!("{}.2", built_in_version("yealink"));
    let yealink = plugin_copy("yealink", &s.dir.path().join("sources/v2"), &version);
    let manifest = yealink.join("plugin.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(&format!(
        "\n[[packages]]\nid = \"t46s-fw\"\nversion = \"66.86.0.160\"\n\
         description = \"T46S firmware\"\nurl = \"{}/vendor/t46s.rom\"\nsha256 = \"{}\"\n\
         size = {}\nformat = \"raw\"\nfiles = [{{ to = \"{FIRMWARE}\" }}]\n",
        s.server.url().trim_end_matches('/'),
        common::sha256_hex(&firmware),
        firmware.len()
    ));
    std::fs::write(&manifest, text).unwrap();
    s.repo_cmd(&[
        "pack",
        yealink.to_str().unwrap(),
        "--out",
        s.repo.to_str().unwrap(),
    ]);
    s.index("signer.key");

    // Before: the built-in plugin, no firmware.
    assert_eq!(fetch(s.http, FIRMWARE).0, 404);
    for args in [
        &["plugin", "update"][..],
        &["plugin", "install", "yealink"],
        &["plugin", "packages", "yealink", "--install", "t46s-fw"],
    ] {
        let (code, out, err) = s.cli(args);
        assert_eq!(code, 0, "{args:?}: {out}{err}");
    }
    let installed = s.installed();
    assert_eq!(
        installed["yealink"]["version"],
        version.as_str(),
        "{installed}"
    );

    // The phone's HTTP fetch of its config makes it known by its address (TFTP needs it),
    // then the firmware comes by both transports, byte for byte.
    let (status, config) = fetch(s.http, "001565aabbcc.cfg");
    assert_eq!(status, 200, "{config}");
    let mut stream = TcpStream::connect(s.http).unwrap();
    write!(
        stream,
        "GET /{FIRMWARE} HTTP/1.1\r\nHost: x\r\nUser-Agent: Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &answer[..split]
    );
    assert!(
        answer[split + 4..] == firmware[..],
        "HTTP: the firmware as published"
    );
    assert!(
        tftp_get(&s, FIRMWARE) == firmware,
        "TFTP: the firmware as published"
    );
}

/// The index and the archives come through `/configure` `http_proxy` when it is set: the
/// repository's URL names a closed port of this machine (`localhost:9`, resolved from
/// /etc/hosts, so no query leaves it), only the proxy (the test's server) answers.
#[test]
fn downloads_go_through_the_configured_proxy() {
    let s = setup();
    s.index("signer.key");
    for (param, value) in [
        ("plugin_server", "http://localhost:9/repo/".to_owned()),
        ("http_proxy", format!("http://{}", s.server.addr)),
    ] {
        let reply = s.api(
            "PUT",
            &format!("/configure/{param}"),
            Some(json!({"param": {"value": value}})),
        );
        assert_eq!(reply.status, 204, "{param}: {:?}", reply.body);
    }
    s.server.lines.lock().unwrap().clear();
    let done = s.operation("/pg_mgr/install/update", json!({}));
    assert!(
        done["status"].as_str().unwrap().contains("success"),
        "{done}"
    );
    let done = s.operation("/pg_mgr/install/install", json!({"id": "fanvil"}));
    assert!(
        done["status"].as_str().unwrap().contains("success"),
        "{done}"
    );
    let lines = s.server.lines.lock().unwrap().clone();
    for file in ["index.json ", "index.json.minisig ", "fanvil-"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("GET http://localhost:9/repo/{file}"))),
            "{file} through the proxy: {lines:?}"
        );
    }
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("GET http://localhost:9/")),
        "nothing fetched around the proxy: {lines:?}"
    );

    // Without the proxy, nothing answers at that URL: the update fails, naming it.
    let reply = s.api(
        "PUT",
        "/configure/http_proxy",
        Some(json!({"param": {"value": null}})),
    );
    assert_eq!(reply.status, 204);
    let failed = s.operation("/pg_mgr/install/update", json!({}));
    assert!(
        failed["status"].as_str().unwrap().contains("fail"),
        "{failed}"
    );
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or("")
            .contains("localhost:9"),
        "{failed}"
    );
}
