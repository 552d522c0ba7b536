//! The web console with curl against the real daemon: requests with a cookie jar or a session
//! cookie, a page's CSRF token, console users made with the CLI and signed in through the form.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{command, curl, listening_on, run, write_config, ApiReply, Daemon, PATIENCE};

/// The REST API's media type.
pub const MEDIA: &str = "application/vnd.proformatique.provd+json";

/// One curl request; `cookies` are curl's arguments for them; (status, headers text, body).
fn send(
    cookies: &[OsString],
    method: &str,
    url: &str,
    form: &[(&str, &str)],
) -> (u16, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (head, body) = (tmp.path().join("h"), tmp.path().join("b"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-g", "--max-time", "30", "-X", method])
        .args(cookies)
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"]);
    for (k, v) in form {
        cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
    }
    let out = cmd.arg(url).output().expect("curl");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (
        status,
        std::fs::read_to_string(head).unwrap_or_default(),
        std::fs::read_to_string(body).unwrap_or_default(),
    )
}

/// One curl request with a cookie jar (read and written); (status, headers text, body).
pub fn req(jar: &Path, method: &str, url: &str, form: &[(&str, &str)]) -> (u16, String, String) {
    let cookies = ["-b".into(), jar.into(), "-c".into(), jar.into()];
    send(&cookies, method, url, form)
}

/// One curl request with only the given `Cookie` header value; (status, headers text, body).
pub fn req_with_cookie(
    cookie: &str,
    method: &str,
    url: &str,
    form: &[(&str, &str)],
) -> (u16, String, String) {
    let cookies = ["-H".into(), format!("Cookie: {cookie}").into()];
    send(&cookies, method, url, form)
}

/// The CSRF token of a page's forms.
pub fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect(page) + 19;
    page[at..].split('"').next().unwrap().to_owned()
}

/// The `location` header of a response's headers.
pub fn location_of(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect(head)
        .trim()
        .to_owned()
}

/// The value of cookie `name` in a curl cookie jar.
pub fn jar_cookie(jar: &Path, name: &str) -> String {
    let text = std::fs::read_to_string(jar).unwrap();
    text.lines()
        .map(|l| l.strip_prefix("#HttpOnly_").unwrap_or(l))
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f.len() == 7 && f[5] == name)
        .map(|f| f[6].to_owned())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// The daemon serving the console, in a temp dir of its own.
pub struct Console {
    /// `None` once stopped (a store check wants the store closed).
    pub daemon: Option<Daemon>,
    /// `http://<REST API listener>`, where the console is.
    pub base: String,
    /// The HTTP provisioning listener, when the config has one.
    http: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
}

impl Console {
    /// The daemon with the test config plus `extra`, ready.
    pub fn start(extra: &str) -> Console {
        Console::start_in(tempfile::tempdir().unwrap(), extra)
    }

    /// As `start`, in `dir` (which may already hold files the config names).
    pub fn start_in(dir: tempfile::TempDir, extra: &str) -> Console {
        let config = write_config(dir.path(), extra);
        let mut daemon = Daemon::start({
            let mut cmd = command(dir.path());
            cmd.args(["serve", "--config"]).arg(&config);
            cmd
        });
        daemon.expect_line(&["ready"]);
        let find = |what: &str| {
            daemon
                .seen
                .iter()
                .find(|l| l.contains(what))
                .map(|l| listening_on(l))
        };
        let api =
            find("REST API on").unwrap_or_else(|| panic!("no REST API line in {:?}", daemon.seen));
        let http = find("HTTP provisioning on");
        Console {
            daemon: Some(daemon),
            base: format!("http://{api}"),
            http,
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The HTTP provisioning listener.
    pub fn http(&self) -> SocketAddr {
        self.http.expect("no HTTP provisioning listener")
    }

    /// Stops the daemon.
    pub fn stop(&mut self) {
        drop(self.daemon.take());
    }

    /// The daemon's log so far, for a failing test's message.
    pub fn log_so_far(&mut self) -> String {
        self.daemon
            .as_mut()
            .map(Daemon::log_so_far)
            .unwrap_or_default()
    }

    /// A CLI command against the daemon's config that must succeed.
    pub fn cli(&self, args: &[&str]) {
        let (code, _, stderr) = run(command(self.dir())
            .args(args)
            .arg("--config")
            .arg(self.dir().join("provisiond.toml")));
        assert_eq!(code, 0, "{args:?}: {stderr}");
    }

    /// A console user of `tenant` with `role`, password `<name>-password`.
    pub fn user(&self, name: &str, tenant: &str, role: &str) {
        let pw = self.dir().join("pw");
        std::fs::write(&pw, format!("{name}-password\n")).unwrap();
        let (code, _, stderr) = run(command(self.dir())
            .args(["user", "create", name, "--tenant", tenant, "--role", role])
            .arg("--password-file")
            .arg(&pw)
            .arg("--config")
            .arg(self.dir().join("provisiond.toml")));
        assert_eq!(code, 0, "{stderr}");
    }

    /// Signs in through the form as a browser does: the form first (its CSRF cookie goes into
    /// the jar, its token into the POST); the POST's (status, headers).
    pub fn sign_in_with(&self, jar: &Path, user: &str, password: &str) -> (u16, String) {
        let signin = format!("{}/console/signin", self.base);
        let (status, _, page) = req(jar, "GET", &signin, &[]);
        assert_eq!(status, 200, "{page}");
        let token = csrf_of(&page);
        let (status, head, _) = req(
            jar,
            "POST",
            &signin,
            &[("csrf", &token), ("user", user), ("password", password)],
        );
        (status, head)
    }

    /// Signs `name` in (password `<name>-password`); the cookie jar `<name>.jar`.
    pub fn sign_in(&self, name: &str) -> PathBuf {
        let jar = self.dir().join(format!("{name}.jar"));
        let (status, head) = self.sign_in_with(&jar, name, &format!("{name}-password"));
        assert_eq!(status, 303, "{head}");
        jar
    }

    /// A console user (as `user`), signed in: their cookie jar.
    pub fn signed_in(&self, name: &str, tenant: &str, role: &str) -> PathBuf {
        self.user(name, tenant, role);
        self.sign_in(name)
    }

    /// A GET of `path` with the jar; (status, body).
    pub fn get(&self, jar: &Path, path: &str) -> (u16, String) {
        let (status, _, page) = req(jar, "GET", &format!("{}{path}", self.base), &[]);
        (status, page)
    }

    /// A form POST of `path` with the jar, the fields as given.
    pub fn post(&self, jar: &Path, path: &str, form: &[(&str, &str)]) -> (u16, String, String) {
        req(jar, "POST", &format!("{}{path}", self.base), form)
    }

    /// A form POST with the session's CSRF token (read from `/console/`).
    pub fn post_csrf(
        &self,
        jar: &Path,
        path: &str,
        form: &[(&str, &str)],
    ) -> (u16, String, String) {
        let (status, page) = self.get(jar, "/console/");
        assert_eq!(status, 200, "{page}");
        let csrf = csrf_of(&page);
        let mut fields = vec![("csrf", csrf.as_str())];
        fields.extend_from_slice(form);
        self.post(jar, path, &fields)
    }

    /// The REST API over the admin socket, acting for `tenant` when given.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        tenant: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> ApiReply {
        let sock = self.dir().join("api.sock");
        let mut headers = vec![format!("Accept: {MEDIA}")];
        if let Some(t) = tenant {
            headers.push(format!("Wazo-Tenant: {t}"));
        }
        curl(
            &["--unix-socket", sock.to_str().unwrap()],
            &format!("http://localhost/api/provd/0.2{path}"),
            method,
            &headers,
            body.map(|b| (MEDIA.to_owned(), b.to_string())),
        )
    }

    /// Follows an operation page from `location` until it no longer refreshes itself; the
    /// last page.
    pub fn follow(&mut self, jar: &Path, location: &str) -> String {
        assert!(location.starts_with("/console/operations/"), "{location}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let (status, page) = self.get(jar, location);
            assert_eq!(status, 200, "{page}");
            if !page.contains("http-equiv=\"refresh\"") {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "the operation never ended: {page}\n{}",
                self.log_so_far()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
