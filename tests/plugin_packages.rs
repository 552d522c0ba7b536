//! Vendor packages of plugins end to end: the real daemon with an admin copy of yealink whose
//! `[[packages]]` point at a small HTTP server of this test on 127.0.0.1; installs, upgrades
//! and removals through the API (following the operation's Location) and the CLI; a phone
//! then fetches the firmware by HTTP (curl) and TFTP (tftp-hpa). Every refused download or
//! archive leaves the installed version served.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

const MEDIA: &str = "application/vnd.proformatique.provd+json";
const UA: &str = "Yealink SIP-T54W 96.86.0.70 80:5e:c0:11:22:33";

/// What the test server answers for a path: the body, and the length it announces.
type Files = Arc<Mutex<HashMap<String, (Vec<u8>, usize)>>>;

/// A one-thread HTTP/1.0-style server: one request per connection, then close.
fn serve_files() -> (SocketAddr, Files) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let files: Files = Arc::default();
    let shared = Arc::clone(&files);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let path = line.split(' ').nth(1).unwrap_or("").to_owned();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            let found = shared.lock().unwrap().get(&path).cloned();
            let _ = match found {
                Some((body, announced)) => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .and_then(|_| stream.write_all(&body)),
                None => stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            };
        }
    });
    (addr, files)
}

fn publish(files: &Files, path: &str, body: &[u8]) {
    files
        .lock()
        .unwrap()
        .insert(path.to_owned(), (body.to_vec(), body.len()));
}

struct Setup {
    dir: tempfile::TempDir,
    daemon: common::Daemon,
    http: SocketAddr,
    tftp: SocketAddr,
    plugin: PathBuf,
    manifest: String,
}

impl Setup {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    fn api(&self, method: &str, path: &str, body: Option<Value>) -> common::ApiReply {
        let socket = self.socket();
        let via = ["--unix-socket", socket.to_str().unwrap()];
        common::curl(
            &via,
            &format!("http://local/0.2{path}"),
            method,
            &[format!("Accept: {MEDIA}")],
            body.map(|b| (MEDIA.to_owned(), b.to_string())),
        )
    }

    /// Declares `packages` (TOML) in the plugin copy and reloads it.
    fn declare(&self, packages: &str) {
        std::fs::write(
            self.plugin.join("plugin.toml"),
            format!("{}\n{packages}", self.manifest),
        )
        .unwrap();
        let r = self.api("POST", "/pg_mgr/reload", Some(json!({"id": "yealink"})));
        assert_eq!(r.status, 204, "{:?}", r.body);
    }

    /// Starts `verb` (install, upgrade) of `id` and follows the operation to its end; its
    /// final status body.
    fn operate(&self, verb: &str, body: Value) -> Value {
        let r = self.api(
            "POST",
            &format!("/pg_mgr/plugins/yealink/install/{verb}"),
            Some(body),
        );
        assert_eq!(r.status, 201, "{:?}", r.body);
        let location = r.headers["location"].clone();
        let path = location.strip_prefix("/0.2").unwrap().to_owned();
        assert!(path.starts_with("/pg_mgr/operations/"), "{location}");
        loop {
            let r = self.api("GET", &path, None);
            assert_eq!(r.status, 200, "{:?}", r.body);
            let status = r.body["status"].as_str().unwrap().to_owned();
            if status.contains("success") || status.contains("fail") {
                assert_eq!(self.api("DELETE", &path, None).status, 204);
                return r.body;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The phone's HTTP fetch of `file`: status and body.
    fn phone_http(&self, file: &str) -> (u16, Vec<u8>) {
        let out = self.dir.path().join("phone-http");
        let output = Command::new("curl")
            .args(["-sS", "-A", UA, "-o"])
            .arg(&out)
            .args(["-w", "%{http_code}"])
            .arg(format!("http://{}/{file}", self.http))
            .output()
            .expect("curl");
        let status = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap();
        (status, std::fs::read(&out).unwrap_or_default())
    }

    /// The phone's TFTP fetch of `file` (tftp-hpa), once the phone is known by its address.
    fn phone_tftp(&self, file: &str) -> Vec<u8> {
        common::tftp_get(
            SocketAddr::from(([127, 0, 0, 1], self.tftp.port())),
            file,
            &self.dir.path().join("phone-tftp"),
        )
    }

    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = common::command(self.dir.path());
        cmd.args(["plugin", "packages"])
            .args(args)
            .arg("--socket")
            .arg(self.socket());
        common::run(&mut cmd)
    }
}

fn start() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("data/plugins");
    // Lang files are served from their own directory.
    let plugin = common::plugin_copy(
        &admin,
        "yealink",
        "[[files]]\npath = \"lang/*.txt\"\nstatic = true\n",
    );
    let manifest = std::fs::read_to_string(plugin.join("plugin.toml")).unwrap();
    let config = common::write_config(dir.path(), "");
    let mut daemon = common::Daemon::start({
        let mut cmd = common::command(dir.path());
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    let http = common::listening_on(&daemon.expect_line(&["HTTP provisioning on"]));
    let tftp = common::listening_on(&daemon.expect_line(&["TFTP provisioning on"]));
    daemon.expect_line(&["ready"]);
    Setup {
        dir,
        daemon,
        http,
        tftp,
        plugin,
        manifest,
    }
}

/// A `[[packages]]` table.
fn package(
    id: &str,
    version: &str,
    url: &str,
    body: &[u8],
    format: &str,
    files: &str,
    extra: &str,
) -> String {
    format!(
        "[[packages]]\nid = \"{id}\"\nversion = \"{version}\"\ndescription = \"{id} {version}\"\n\
         url = \"{url}\"\nsha256 = \"{}\"\nsize = {}\nformat = \"{format}\"\nfiles = {files}\n{extra}",
        common::sha256_hex(body),
        body.len()
    )
}

fn zip_of(members: &[(&str, &[u8])], symlink: Option<(&str, &str)>) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, body) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(body).unwrap();
    }
    if let Some((name, target)) = symlink {
        zip.add_symlink(name, target, options).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

/// A gzip-compressed tar; names are written raw into the header (the tar crate's own
/// setters refuse `..`, which is the point of some tests).
fn tar_gz_of(members: &[(&str, &[u8])], symlink: Option<(&str, &str)>) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, body) in members {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append(&header, *body).unwrap();
    }
    if let Some((name, target)) = symlink {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        tar.append_link(&mut header, name, target).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn fails_with(status: &Value, fragment: &str) {
    assert!(
        status["status"].as_str().unwrap().contains("fail"),
        "{status}"
    );
    let error = status["error"].as_str().unwrap();
    assert!(error.contains(fragment), "{fragment:?} not in {error:?}");
}

#[test]
fn packages_install_upgrade_refuse_and_uninstall() {
    let (server, files) = serve_files();
    let base = format!("http://{server}");
    let setup = start();
    let v1: &[u8] = b"T54W firmware version 1";
    publish(&files, "/fw-1.rom", v1);
    let licence = "http://vendor.example/licence.html";
    let lang_body: &[u8] = b"bonjour";
    let lang = tar_gz_of(&[("./lang/fr.txt", lang_body), ("lang/README", b"x")], None);
    publish(&files, "/lang.tar.gz", &lang);
    let fw1 = package(
        "fw",
        "1",
        &format!("{base}/fw-1.rom"),
        v1,
        "raw",
        "[{ to = \"fw.rom\" }]",
        "",
    );
    let lang_decl = package(
        "lang",
        "1",
        &format!("{base}/lang.tar.gz"),
        &lang,
        "tar",
        "[{ from = \"lang/*.txt\", to = \"lang/\" }]",
        &format!("licence_url = \"{licence}\"\nlicence_acceptance_required = true\n"),
    );
    setup.declare(&format!("{fw1}\n{lang_decl}"));

    // Declared, nothing installed; the plugin links to its package service.
    let r = setup.api("GET", "/pg_mgr/plugins/yealink/install/installable", None);
    assert_eq!(r.body["pkgs"]["fw"]["version"], "1", "{:?}", r.body);
    assert_eq!(r.body["pkgs"]["lang"]["licence_acceptance_required"], true);
    let r = setup.api("GET", "/pg_mgr/plugins/yealink/install/installed", None);
    assert_eq!(r.body, json!({"pkgs": {}}));
    let r = setup.api("GET", "/pg_mgr/plugins/yealink", None);
    assert!(r.body.to_string().contains("srv.install"), "{:?}", r.body);
    assert_eq!(setup.phone_http("fw.rom").0, 404);

    // Install through the API; the phone gets the file by HTTP and TFTP.
    let done = setup.operate("install", json!({"id": "fw"}));
    assert!(
        done["status"].as_str().unwrap().contains("success"),
        "{done}"
    );
    assert_eq!(setup.phone_http("fw.rom"), (200, v1.to_vec()));
    assert_eq!(setup.phone_tftp("fw.rom"), v1);
    let r = setup.api("GET", "/pg_mgr/plugins/yealink/install/installed", None);
    assert_eq!(r.body["pkgs"]["fw"]["files"], json!(["fw.rom"]));
    assert_eq!(r.body["pkgs"]["fw"]["sha256"], common::sha256_hex(v1));

    // A licence that needs acceptance: refused at once without it, naming the licence.
    let r = setup.api(
        "POST",
        "/pg_mgr/plugins/yealink/install/install",
        Some(json!({"id": "lang"})),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains(licence),
        "{:?}",
        r.body
    );
    let (code, _, err) = setup.cli(&["yealink", "--install", "lang"]);
    assert_eq!(code, 1);
    assert!(err.contains(licence), "{err}");
    // Through the CLI, accepted: a tar.gz with `./` members.
    let (code, out, err) = setup.cli(&["yealink", "--install", "lang", "--accept-licence"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("package lang 1 of plugin yealink installed"),
        "{out}"
    );
    assert_eq!(setup.phone_http("lang/fr.txt"), (200, lang_body.to_vec()));
    let (code, out, _) = setup.cli(&["yealink"]);
    assert_eq!(code, 0);
    assert!(out.contains("lang") && out.contains("must accept"), "{out}");

    // Each refused upgrade leaves version 1 served.
    let v2: &[u8] = b"T54W firmware version 2, longer";
    let still_v1 = |what: &str| {
        assert_eq!(
            setup.phone_http("fw.rom"),
            (200, v1.to_vec()),
            "after {what}"
        );
    };
    let try_upgrade =
        |what: &str, path: &str, served: Option<(Vec<u8>, usize)>, decl: String, fragment: &str| {
            if let Some(served) = served {
                files.lock().unwrap().insert(path.to_owned(), served);
            }
            setup.declare(&format!("{decl}\n{lang_decl}"));
            let status = setup.operate("upgrade", json!({"id": "fw"}));
            fails_with(&status, fragment);
            still_v1(what);
        };
    let raw2 = |path: &str, body: &[u8]| {
        package(
            "fw",
            "2",
            &format!("{base}{path}"),
            body,
            "raw",
            "[{ to = \"fw.rom\" }]",
            "",
        )
    };
    // Hash mismatch: the server's file is not the declared one.
    try_upgrade(
        "a hash mismatch",
        "/fw-2.rom",
        Some((b"T54W firmware version 2, LONGER".to_vec(), v2.len())),
        raw2("/fw-2.rom", v2),
        "SHA-256",
    );
    // Truncated: the server announces the declared size and closes early.
    try_upgrade(
        "a truncated download",
        "/fw-2t.rom",
        Some((v2[..10].to_vec(), v2.len())),
        raw2("/fw-2t.rom", v2),
        "",
    );
    // Oversized: more bytes than declared.
    let mut big = v2.to_vec();
    big.extend_from_slice(&[0u8; 4096]);
    try_upgrade(
        "an oversized download",
        "/fw-2b.rom",
        Some((big.clone(), big.len())),
        raw2("/fw-2b.rom", v2),
        "larger than",
    );
    // Zip-slip.
    let slip = zip_of(&[("fw.rom", v2), ("../evil.rom", b"evil")], None);
    publish(&files, "/slip.zip", &slip);
    let zip_decl = |path: &str, body: &[u8]| {
        package(
            "fw",
            "2",
            &format!("{base}{path}"),
            body,
            "zip",
            "[{ from = \"*.rom\", to = \"/\" }]",
            "",
        )
    };
    try_upgrade(
        "a zip-slip archive",
        "",
        None,
        zip_decl("/slip.zip", &slip),
        "`..`",
    );
    // Tar-slip.
    let tar_slip = tar_gz_of(&[("fw.rom", v2), ("a/../../evil.rom", b"evil")], None);
    publish(&files, "/slip.tar.gz", &tar_slip);
    let tar_decl = |path: &str, body: &[u8]| {
        package(
            "fw",
            "2",
            &format!("{base}{path}"),
            body,
            "tar",
            "[{ from = \"*.rom\", to = \"/\" }]",
            "",
        )
    };
    try_upgrade(
        "a tar-slip archive",
        "",
        None,
        tar_decl("/slip.tar.gz", &tar_slip),
        "`..`",
    );
    // Symbolic links, in tar and in zip.
    let tar_link = tar_gz_of(&[("fw.rom", v2)], Some(("other.rom", "/etc/passwd")));
    publish(&files, "/link.tar.gz", &tar_link);
    try_upgrade(
        "a tar symlink",
        "",
        None,
        tar_decl("/link.tar.gz", &tar_link),
        "links are not unpacked",
    );
    let zip_link = zip_of(&[("fw.rom", v2)], Some(("other.rom", "/etc/passwd")));
    publish(&files, "/link.zip", &zip_link);
    try_upgrade(
        "a zip symlink",
        "",
        None,
        zip_decl("/link.zip", &zip_link),
        "links are not unpacked",
    );
    // Nothing of the refused archives reached a served directory.
    let packages = setup.dir.path().join("data/packages");
    let evil = Command::new("find")
        .arg(&packages)
        .args(["-name", "evil.rom"])
        .output()
        .unwrap();
    assert!(
        evil.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&evil.stdout)
    );
    assert!(!Path::new(&packages).join("yealink/evil.rom").exists());

    // A good upgrade (a deflated zip), through the CLI: version 2 is served.
    let good = zip_of(&[("fw.rom", v2), ("notes.txt", b"release notes")], None);
    publish(&files, "/fw-2.zip", &good);
    setup.declare(&format!("{}\n{lang_decl}", zip_decl("/fw-2.zip", &good)));
    let (code, out, err) = setup.cli(&["yealink", "--upgrade", "fw"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("package fw 2 of plugin yealink installed"),
        "{out}"
    );
    assert_eq!(setup.phone_http("fw.rom"), (200, v2.to_vec()));
    assert_eq!(setup.phone_tftp("fw.rom"), v2);
    assert_eq!(
        setup.phone_http("notes.txt").0,
        404,
        "only mapped members land"
    );

    // Uninstall through the API and the CLI: the files are gone.
    let r = setup.api(
        "POST",
        "/pg_mgr/plugins/yealink/install/uninstall",
        Some(json!({"id": "fw"})),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(setup.phone_http("fw.rom").0, 404);
    let (code, out, err) = setup.cli(&["yealink", "--remove", "lang"]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(setup.phone_http("lang/fr.txt").0, 404);
    let r = setup.api("GET", "/pg_mgr/plugins/yealink/install/installed", None);
    assert_eq!(r.body, json!({"pkgs": {}}));
    let r = setup.api(
        "POST",
        "/pg_mgr/plugins/yealink/install/uninstall",
        Some(json!({"id": "fw"})),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.body["error"].as_str().unwrap().contains("not installed"),
        "{:?}",
        r.body
    );
    let left = std::fs::read_dir(packages.join("yealink"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(left, 0, "uninstalled packages leave no directory");
    drop(setup.daemon);
}
