//! The HTTP provisioning server on real sockets (127.0.0.1), driven with curl and raw TCP.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::InProcess;
use provisiond::config::HttpAuthStrategy;
use provisiond::files::{valid_provisioning_key, FileService};
use provisiond::http::provisioning::{router, Provisioning};
use provisiond::http::HttpLimits;
use provisiond::model::{Mac, Tenant};
use provisiond::plugins::{Origin, PluginSet, Renderer, ServerInfo};
use provisiond::store::Store;

/// Connection lifetime in these tests.
const MAX_CONN_SECS: u64 = 60;
const YEALINK_UA: &str = "Yealink SIP-T54W 96.86.0.70 80:5e:c0:11:22:33";

struct Server {
    addr: SocketAddr,
    store: Store,
    _http: InProcess,
    dir: tempfile::TempDir,
}

fn plugin_roots(extra: Option<&Path>) -> Vec<(PathBuf, Origin)> {
    let mut roots = vec![(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins"),
        Origin::Builtin,
    )];
    if let Some(extra) = extra {
        roots.push((extra.to_path_buf(), Origin::Admin));
    }
    roots
}

fn start(
    strategy: HttpAuthStrategy,
    extra_plugins: impl FnOnce(&Path) -> Option<PathBuf>,
    tls: Option<(PathBuf, PathBuf)>,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let extra = extra_plugins(dir.path());
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults("master").unwrap();
    let plugins = PluginSet::load(&plugin_roots(extra.as_deref()));
    assert!(plugins.errors.is_empty(), "{:?}", plugins.errors);
    let renderer = Renderer::new(
        store.clone(),
        ServerInfo {
            base_url: Some("http://10.0.0.2:8667".parse().unwrap()),
            url_key_strategy: strategy == HttpAuthStrategy::UrlKey,
        },
    );
    let files = Arc::new(FileService::new(
        store.clone(),
        "master",
        strategy,
        Arc::new(plugins),
        renderer,
    ));
    let app = router(Arc::new(Provisioning::new(files)));
    let limits = HttpLimits {
        max_request_bytes: 4096,
        request_timeout: Duration::from_secs(1),
        max_connections: 256,
        max_connection_time: Duration::from_secs(MAX_CONN_SECS),
        shutdown_grace: Duration::from_secs(5),
        refusal: provisiond::http::plain_refusal,
    };
    let acceptor = tls.map(|(cert, key)| provisiond::http::load_tls(&cert, &key).unwrap());
    let http = InProcess::start(app, limits, acceptor);
    Server {
        addr: http.addr,
        store,
        _http: http,
        dir,
    }
}

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// One request with curl; `extra` are more curl arguments.
fn curl(url: &str, extra: &[&str]) -> Reply {
    let tmp = tempfile::tempdir().unwrap();
    let (head, body) = (tmp.path().join("h"), tmp.path().join("b"));
    let out = Command::new("curl")
        .args(["-sS", "--path-as-is", "--max-time", "20", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl (apt-get install curl)");
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl {url}: {}", String::from_utf8_lossy(&out.stderr)));
    let headers = fs::read_to_string(&head)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: fs::read(&body).unwrap_or_default(),
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn get(&self, path: &str, ua: &str) -> Reply {
        curl(&self.url(path), &["-A", ua])
    }
}

fn text(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn phones_fetch_their_common_and_mac_files() {
    let server = start(HttpAuthStrategy::Disabled, |_| None, None);
    let cases = [
        (
            YEALINK_UA,
            "y000000000096.cfg",
            "805ec0112233.cfg",
            "80:5e:c0:11:22:33",
            "yealink",
        ),
        (
            "FileTransport PolycomVVX-VVX_450-UA/5.9.1.0615 (SN:0004f2aabbcc) Type/Application",
            "000000000000.cfg",
            "0004f2aabbcc.cfg",
            "00:04:f2:aa:bb:cc",
            "polycom",
        ),
        (
            "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 1.1.5-IS 000413922D24 SXM:0 UXM:0)",
            "snomD785.htm",
            "snomD785-000413922D24.htm",
            "00:04:13:92:2d:24",
            "snom",
        ),
    ];
    for (ua, common, own, mac, plugin) in cases {
        for path in [common, own] {
            let r = server.get(&format!("/{path}"), ua);
            assert_eq!(r.status, 200, "{plugin} {path}: {}", text(&r));
            assert!(!r.body.is_empty());
            assert_eq!(
                r.headers.get("content-length").map(String::as_str),
                Some(r.body.len().to_string().as_str())
            );
            assert!(
                r.headers.contains_key("etag") && r.headers.contains_key("last-modified"),
                "{:?}",
                r.headers
            );
            assert!(r.headers.contains_key("content-type"));
        }
        let device = server
            .store
            .device_by_mac(&mac.parse::<Mac>().unwrap())
            .unwrap()
            .expect("autocreated");
        assert_eq!(device.plugin.as_deref(), Some(plugin));
        assert_eq!(device.config.as_deref(), Some("autoprov"));
    }
    assert_eq!(server.store.device_count(), 3);
    // HEAD: the same headers, no body.
    let mut raw = TcpStream::connect(server.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(raw, "HEAD /805ec0112233.cfg HTTP/1.1\r\nHost: x\r\nUser-Agent: {YEALINK_UA}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    raw.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(body.is_empty(), "HEAD has no body: {body:?}");
    let length = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length: ")
            .map(str::to_owned)
    });
    assert!(length.is_some_and(|l| l != "0"), "{head}");
}

#[test]
fn etags_and_dates_give_304_until_the_config_changes() {
    let server = start(HttpAuthStrategy::Disabled, |_| None, None);
    let first = server.get("/805ec0112233.cfg", YEALINK_UA);
    assert_eq!(first.status, 200);
    let etag = first.headers["etag"].clone();
    let modified = first.headers["last-modified"].clone();
    let again = curl(
        &server.url("/805ec0112233.cfg"),
        &["-A", YEALINK_UA, "-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    let since = curl(
        &server.url("/805ec0112233.cfg"),
        &[
            "-A",
            YEALINK_UA,
            "-H",
            &format!("If-Modified-Since: {modified}"),
        ],
    );
    assert_eq!(since.status, 304);
    let other = curl(
        &server.url("/805ec0112233.cfg"),
        &["-A", YEALINK_UA, "-H", "If-None-Match: \"nope\""],
    );
    assert_eq!(other.status, 200);

    let mut base = server.store.config("base").unwrap().unwrap();
    base.raw_config.insert("ntp_ip".into(), "10.0.0.123".into());
    server.store.update_config(&base).unwrap();
    let changed = curl(
        &server.url("/805ec0112233.cfg"),
        &["-A", YEALINK_UA, "-H", &format!("If-None-Match: {etag}")],
    );
    assert_eq!(changed.status, 200, "a config change invalidates the ETag");
    assert_ne!(changed.headers["etag"], etag);
    assert!(text(&changed).contains("10.0.0.123"));
}

#[test]
fn fifty_concurrent_first_requests_create_one_device() {
    let server = start(HttpAuthStrategy::Disabled, |_| None, None);
    let url = server.url("/805ec0112233.cfg");
    let children: Vec<_> = (0..50)
        .map(|_| {
            Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "30",
                    "-A",
                    YEALINK_UA,
                    &url,
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("curl")
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    assert_eq!(server.store.device_count(), 1, "autocreate happened once");
}

#[test]
fn url_key_matrix() {
    let server = start(HttpAuthStrategy::UrlKey, |_| None, None);
    let mut master = server.store.tenant("master").unwrap().unwrap();
    master.provisioning_key = Some("Master.key-1$~".into());
    server.store.update_tenant(&master).unwrap();
    server
        .store
        .create_tenant(&Tenant {
            id: "other".into(),
            name: "Other".into(),
            parent: Some("master".into()),
            provisioning_key: Some("OtherKey456".into()),
            default_config: None,
            auto_token: None,
            revision: 0,
        })
        .unwrap();
    let cases: &[(&str, u16)] = &[
        ("/device/provisioning/Master.key-1$~/805ec0112233.cfg", 200),
        ("/device/provisioning/WrongKey789/805ec0112233.cfg", 404),
        ("/device/provisioning/OtherKey456/805ec0112233.cfg", 404),
        ("/805ec0112233.cfg", 404),
        ("/device/provisioning/805ec0112233.cfg", 404),
        ("/device/provisioning//805ec0112233.cfg", 404),
        ("/device/provisioning/Short1/805ec0112233.cfg", 404),
        ("/device/provisioning/Master-Key123/805ec0112233.cfg", 404),
        (
            "/device/provisioning/Master.key-1$~%21/805ec0112233.cfg",
            404,
        ),
        ("/device/provisioning/Master.key-1$~/", 404),
    ];
    for (path, status) in cases {
        let r = server.get(path, YEALINK_UA);
        assert_eq!(r.status, *status, "{path}: {}", text(&r));
    }
    // The keyed file carries the keyed URL, so that the phone keeps using it.
    let r = server.get(
        "/device/provisioning/Master.key-1$~/805ec0112233.cfg",
        YEALINK_UA,
    );
    assert!(
        text(&r).contains("http://10.0.0.2:8667/device/provisioning/Master.key-1$~/"),
        "{}",
        text(&r)
    );
    // A phone of tenant "other" is refused with master's key.
    let mut device = server
        .store
        .device_by_mac(&"80:5e:c0:11:22:33".parse().unwrap())
        .unwrap()
        .unwrap();
    device.tenant = "other".into();
    server.store.update_device(&device).unwrap();
    assert_eq!(
        server
            .get(
                "/device/provisioning/Master.key-1$~/805ec0112233.cfg",
                YEALINK_UA
            )
            .status,
        404
    );
    assert_eq!(
        server
            .get(
                "/device/provisioning/OtherKey456/805ec0112233.cfg",
                YEALINK_UA
            )
            .status,
        200
    );

    for (key, ok) in [
        ("a1b2c3d4", true),
        (&"k".repeat(256) as &str, true),
        ("a1b2c3d", false),
        (&"k".repeat(257), false),
        ("a1-b2$c3~d4.", true),
        ("a1b2c3d4%", false),
        ("a1b2c3d4/", false),
        ("a1b2c3d4 ", false),
        ("a1b2c3d4é", false),
    ] {
        assert_eq!(valid_provisioning_key(key), ok, "{key}");
    }
}

/// A plugin that serves every file of its static dir, next to a secret it must never serve.
fn static_plugin(root: &Path) -> Option<PathBuf> {
    let plugins = root.join("admin-plugins");
    let p = plugins.join("acme");
    fs::create_dir_all(p.join("static/fw")).unwrap();
    fs::create_dir_all(p.join("templates")).unwrap();
    fs::write(
        p.join("plugin.toml"),
        "name = \"acme\"\nversion = \"1\"\nvendor = \"Acme\"\n[[identify]]\nsource = \"user_agent\"\npattern = '^Acme (?P<mac>[0-9a-f]{12})$'\nscore = 100\n\
         [[files]]\npath = \"{mac}.cfg\"\ntemplate = \"mac.cfg.tera\"\n[[files]]\npath = \"*\"\nstatic = true\n[[files]]\npath = \"fw/*\"\nstatic = true\n",
    )
    .unwrap();
    fs::write(
        p.join("templates/mac.cfg.tera"),
        "mac = {{ device.mac_bare }}\n",
    )
    .unwrap();
    fs::write(p.join("static/fw/phone.rom"), b"FIRMWARE").unwrap();
    fs::write(p.join("static/lang.txt"), b"LANG").unwrap();
    fs::write(p.join("secret.txt"), b"TOPSECRET").unwrap();
    fs::write(root.join("outside.txt"), b"TOPSECRET").unwrap();
    std::os::unix::fs::symlink(p.join("secret.txt"), p.join("static/link.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", p.join("static/etc")).unwrap();
    Some(plugins)
}

#[test]
fn hostile_paths_never_leave_the_static_dir() {
    let server = start(HttpAuthStrategy::Disabled, static_plugin, None);
    let ua = "Acme 0011223344aa";
    assert_eq!(text(&server.get("/fw/phone.rom", ua)), "FIRMWARE");
    assert_eq!(text(&server.get("/lang.txt", ua)), "LANG");
    assert_eq!(
        text(&server.get("/0011223344aa.cfg", ua)),
        "mac = 0011223344aa\n"
    );
    let corpus = [
        "/../secret.txt",
        "/..%2fsecret.txt",
        "/%2e%2e/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/fw/../../secret.txt",
        "/fw/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/%5c..%5csecret.txt",
        "/fw\\..\\..\\secret.txt",
        "/link.txt",
        "/etc/passwd",
        "/etc%2fpasswd",
        "//etc/passwd",
        "/%2fetc%2fpasswd",
        "/%2Fetc%2Fpasswd",
        "/lang.txt%00.rom",
        "/%00",
        "/fw/phone.rom%00",
        "/....//secret.txt",
        "/..../secret.txt",
        "/.%2e/secret.txt",
        "/%252e%252e/secret.txt",
        "/%c0%ae%c0%ae/secret.txt",
        "/%e0%80%ae%e0%80%ae/secret.txt",
        "/.secret",
        "/fw/./phone.rom",
        "/./lang.txt",
        "/fw//phone.rom",
        "/fw/",
        "/",
        "/..",
        "/.",
        "/%2e",
        "/../../../../../../etc/passwd",
        "/static/../../outside.txt",
        "/..%2f..%2f..%2foutside.txt",
        "/%2e%2e%2f%2e%2e%2foutside.txt",
        "/fw/..%2f..%2fplugin.toml",
        "/../plugin.toml",
        "/lang.txt/",
        "/lang.txt/..",
    ];
    assert!(corpus.len() >= 30);
    let long = format!("/{}", "a".repeat(300));
    let longer = format!("/{}", "a/".repeat(2000));
    for path in corpus
        .iter()
        .copied()
        .chain([long.as_str(), longer.as_str()])
    {
        let r = server.get(path, ua);
        assert!(
            matches!(r.status, 400 | 404 | 414 | 431),
            "{path}: status {}",
            r.status
        );
        let body = text(&r);
        assert!(
            !body.contains("TOPSECRET") && !body.contains("root:"),
            "{path}: leaked {body}"
        );
    }
    assert!(server.store.device_count() <= 1);
    let _ = &server.dir;
}

#[test]
fn methods_limits_and_slow_clients() {
    let server = start(HttpAuthStrategy::Disabled, |_| None, None);
    let post = curl(
        &server.url("/805ec0112233.cfg"),
        &["-A", YEALINK_UA, "-X", "POST", "-d", "x=1"],
    );
    assert_eq!(post.status, 405);
    assert_eq!(
        post.headers.get("allow").map(String::as_str),
        Some("GET, HEAD")
    );

    let huge = format!("X-Big: {}", "b".repeat(8000));
    let r = curl(
        &server.url("/805ec0112233.cfg"),
        &["-A", YEALINK_UA, "-H", &huge],
    );
    assert_eq!(r.status, 431, "oversized request heads are refused");
    assert!(
        text(&r).contains("over the limit of 4096 bytes"),
        "the refusal says why: {}",
        text(&r)
    );

    // A client that never finishes its request head is disconnected (slowloris).
    let mut slow = TcpStream::connect(server.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    slow.write_all(b"GET /805ec0112233.cfg HTTP/1.1\r\nHost: x\r\nUser-Agent: slo")
        .unwrap();
    let mut buf = Vec::new();
    let read = slow.read_to_end(&mut buf);
    assert!(
        read.is_ok(),
        "the server closed the connection instead of waiting forever: {read:?}"
    );
    let answered = String::from_utf8_lossy(&buf);
    assert!(
        buf.is_empty() || answered.starts_with("HTTP/1.1 408"),
        "{answered}"
    );

    // The server is still serving.
    assert_eq!(server.get("/805ec0112233.cfg", YEALINK_UA).status, 200);
}

#[test]
fn https_serves_the_same_files() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let server = start(HttpAuthStrategy::Disabled, |_| None, Some((cert, key)));
    let url = format!("https://localhost:{}/805ec0112233.cfg", server.addr.port());
    let r = curl(
        &url,
        &[
            "-k",
            "-A",
            YEALINK_UA,
            "--resolve",
            &format!("localhost:{}:127.0.0.1", server.addr.port()),
        ],
    );
    assert_eq!(r.status, 200);
    assert!(text(&r).contains("805ec0112233") || !r.body.is_empty());
    // Plain HTTP on the TLS port gets nothing useful.
    let plain = curl(
        &format!("http://{}/805ec0112233.cfg", server.addr),
        &["-A", YEALINK_UA],
    );
    assert_ne!(plain.status, 200);
}

#[test]
fn a_key_of_another_tenant_neither_changes_nor_creates_devices() {
    let server = start(HttpAuthStrategy::UrlKey, |_| None, None);
    let mut master = server.store.tenant("master").unwrap().unwrap();
    master.provisioning_key = Some("Master.key-1$~".into());
    server.store.update_tenant(&master).unwrap();
    server
        .store
        .create_tenant(&Tenant {
            id: "other".into(),
            name: "Other".into(),
            parent: Some("master".into()),
            provisioning_key: Some("OtherKey456".into()),
            default_config: None,
            auto_token: None,
            revision: 0,
        })
        .unwrap();
    // A phone of tenant "other".
    assert_eq!(
        server
            .get(
                "/device/provisioning/Master.key-1$~/805ec0112233.cfg",
                YEALINK_UA
            )
            .status,
        200
    );
    let mut device = server
        .store
        .device_by_mac(&"80:5e:c0:11:22:33".parse().unwrap())
        .unwrap()
        .unwrap();
    device.tenant = "other".into();
    let device = server.store.update_device(&device).unwrap();
    // Master's key with a User-Agent naming it: refused, and nothing about it changes.
    let forged = "Yealink SIP-T54W 66.6.6.6 80:5e:c0:11:22:33";
    assert_eq!(
        server
            .get(
                "/device/provisioning/Master.key-1$~/805ec0112233.cfg",
                forged
            )
            .status,
        404
    );
    let after = server.store.device(&device.id).unwrap().unwrap();
    assert_eq!(
        (after.version.as_deref(), after.revision),
        (device.version.as_deref(), device.revision)
    );
    // Unknown phones asking with a non-default tenant's key are not created.
    for i in 0..5 {
        let ua = format!("Yealink SIP-T54W 96.86.0.70 80:5e:c0:00:10:0{i}");
        assert_eq!(
            server
                .get(
                    &format!("/device/provisioning/OtherKey456/805ec000100{i}.cfg"),
                    &ua
                )
                .status,
            404
        );
    }
    assert_eq!(server.store.device_count(), 1);
}

#[test]
fn a_mac_in_a_route_identifies_a_phone_whose_user_agent_has_none() {
    let server = start(HttpAuthStrategy::Disabled, |_| None, None);
    // Only Grandstream serves cfg{mac}.xml: the route names both the MAC and the plugin.
    let r = server.get("/cfg44dbd2aabbcc.xml", "curl/7.88");
    assert_eq!(r.status, 200, "{}", text(&r));
    let d = server
        .store
        .device_by_mac(&"44:db:d2:aa:bb:cc".parse().unwrap())
        .unwrap()
        .expect("created from the route's MAC");
    assert_eq!(d.plugin.as_deref(), Some("grandstream"));
    // {mac}.cfg is claimed by several vendors: the MAC is recorded, no plugin is guessed.
    assert_eq!(server.get("/44dbd2001122.cfg", "curl/7.88").status, 404);
    let d = server
        .store
        .device_by_mac(&"44:db:d2:00:11:22".parse().unwrap())
        .unwrap()
        .expect("created");
    assert_eq!(d.plugin, None);
    // Its User-Agent later chooses the plugin.
    assert_eq!(
        server
            .get(
                "/44dbd2001122.cfg",
                "Yealink SIP-T54W 96.86.0.70 44:db:d2:00:11:22"
            )
            .status,
        200
    );
}

#[test]
fn a_static_file_is_read_once_and_shared_until_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = static_plugin(dir.path()).unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults("master").unwrap();
    let set = PluginSet::load(&[(plugins.clone(), Origin::Admin)]);
    let renderer = Renderer::new(store.clone(), ServerInfo::default());
    let files = FileService::new(
        store,
        "master",
        HttpAuthStrategy::Disabled,
        Arc::new(set),
        renderer,
    );
    let who = provisiond::files::Requester::Http {
        src: "10.0.0.5".parse().unwrap(),
        user_agent: Some("Acme 0011223344aa".into()),
    };
    let first = files.answer(&who, "fw/phone.rom").unwrap();
    let second = files.answer(&who, "fw/phone.rom").unwrap();
    assert!(
        Arc::ptr_eq(&first.body, &second.body),
        "concurrent phones share one copy"
    );
    assert_eq!(files.statics.len(), 1);
    fs::write(plugins.join("acme/static/fw/phone.rom"), b"FIRMWARE v2").unwrap();
    let third = files.answer(&who, "fw/phone.rom").unwrap();
    assert_eq!(&*third.body, b"FIRMWARE v2");
    assert_ne!(third.etag, first.etag);
}

#[test]
fn a_client_that_never_reads_its_answer_loses_the_connection() {
    let big = 64 * 1024 * 1024;
    let server = {
        let dir_plugins = |root: &Path| {
            let p = static_plugin(root);
            fs::write(
                root.join("admin-plugins/acme/static/big.bin"),
                vec![7u8; big],
            )
            .unwrap();
            p
        };
        let dir = tempfile::tempdir().unwrap();
        let extra = dir_plugins(dir.path());
        let store = Store::open(&dir.path().join("data")).unwrap();
        store.ensure_defaults("master").unwrap();
        let plugins = PluginSet::load(&plugin_roots(extra.as_deref()));
        let renderer = Renderer::new(store.clone(), ServerInfo::default());
        let files = Arc::new(FileService::new(
            store.clone(),
            "master",
            HttpAuthStrategy::Disabled,
            Arc::new(plugins),
            renderer,
        ));
        let app = router(Arc::new(Provisioning::new(files)));
        let limits = HttpLimits {
            max_request_bytes: 4096,
            request_timeout: Duration::from_secs(1),
            max_connections: 8,
            max_connection_time: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(1),
            refusal: provisiond::http::plain_refusal,
        };
        let http = InProcess::start(app, limits, None);
        Server {
            addr: http.addr,
            store,
            _http: http,
            dir,
        }
    };
    let mut slow = TcpStream::connect(server.addr).unwrap();
    write!(
        slow,
        "GET /big.bin HTTP/1.1\r\nHost: x\r\nUser-Agent: Acme 0011223344aa\r\n\r\n"
    )
    .unwrap();
    // Read nothing for longer than the connection may live, then drain what is left.
    std::thread::sleep(Duration::from_secs(4));
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut received = Vec::new();
    let _ = slow.read_to_end(&mut received);
    assert!(
        received.len() < big,
        "the whole answer was sent to a client that did not read ({} bytes)",
        received.len()
    );
    // The slot came back: the server still answers.
    assert_eq!(server.get("/lang.txt", "Acme 0011223344aa").status, 200);
}

#[test]
fn a_device_without_a_config_or_with_a_deleted_one_gets_404_not_500() {
    let server = start(HttpAuthStrategy::Disabled, |_| None, None);
    // As a PBX creates it through the API: MAC and plugin, no config yet.
    let mut device = provisiond::model::Device::new("noconfig".to_owned(), "master");
    device.mac = Some("80:5e:c0:11:22:33".parse().unwrap());
    device.plugin = Some("yealink".into());
    device.config = None;
    server.store.create_device(&device).unwrap();
    let r = server.get("/805ec0112233.cfg", YEALINK_UA);
    assert_eq!(r.status, 404, "{}", text(&r));

    // Its config deleted under it (the API allows it while devices use it).
    let mut device = server.store.device("noconfig").unwrap().unwrap();
    device.config = Some("deleted-meanwhile".into());
    server.store.update_device(&device).unwrap();
    let r = server.get("/805ec0112233.cfg", YEALINK_UA);
    assert_eq!(r.status, 404, "{}", text(&r));
}
