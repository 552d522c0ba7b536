//! The web console over HTTP (curl against the real daemon): users made with the CLI, sign-in,
//! cookie flags, CSRF refusals, roles, tenant isolation, rate-limited sign-in, idle expiry,
//! sign-out, a rollout's CSV, and the live event stream (its bounds, its checks, the overview's
//! per-tenant boot events).

mod common;

use std::time::{Duration, Instant};

use common::console::*;
use common::*;

#[test]
fn sign_in_roles_csrf_tenants_and_sign_out() {
    let c = Console::start("");
    let dir = c.dir();
    c.cli(&["tenant", "create", "acme"]);
    c.user("admin", "master", "admin");
    c.user("eve", "acme", "viewer");
    let jar = dir.join("admin.jar");
    let base = &c.base;

    // `/` leads to the console, which asks for a sign-in.
    let (status, head, _) = req(&jar, "GET", &format!("{base}/"), &[]);
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /console/"), "{head}");
    let (status, head, _) = req(&jar, "GET", &format!("{base}/console/"), &[]);
    assert_eq!(status, 303);
    assert!(head.contains("location: /console/signin"), "{head}");

    // The sign-in form carries a CSRF token paired with a cookie: a POST without the token,
    // without the cookie or with another form's token is refused before the password counts.
    let signin = format!("{base}/console/signin");
    let creds = [("user", "admin"), ("password", "admin-password")];
    let (status, _, page) = req(&jar, "POST", &signin, &creds);
    assert_eq!(status, 403, "{page}");
    let (status, head, page) = req(&jar, "GET", &signin, &[]);
    assert_eq!(status, 200);
    let form_cookie = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: provisiond_signin=")
        })
        .expect(&head);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console/signin"] {
        assert!(form_cookie.contains(flag), "{form_cookie}");
    }
    let token = csrf_of(&page);
    let stranger = dir.join("stranger.jar");
    let with_token = [creds[0], creds[1], ("csrf", token.as_str())];
    let (status, _, _) = req(&stranger, "POST", &signin, &with_token);
    assert_eq!(status, 403, "a token without its cookie");
    let (_, _, other_page) = req(&stranger, "GET", &signin, &[]);
    let other = [creds[0], creds[1], ("csrf", &csrf_of(&other_page))];
    let (status, _, _) = req(&jar, "POST", &signin, &other);
    assert_eq!(status, 403, "another form's token");
    let (status, head) = c.sign_in_with(&jar, "admin", "wrong-password");
    assert_eq!(status, 401, "{head}");
    // An empty password: the form again (a field to fill in) with what is missing.
    let (_, _, form) = req(&jar, "GET", &signin, &[]);
    let empty = [
        ("user", "admin"),
        ("password", ""),
        ("csrf", &csrf_of(&form)),
    ];
    let (status, _, page) = req(&jar, "POST", &signin, &empty);
    assert_eq!(status, 400, "{page}");
    assert!(
        page.contains("name=\"password\"") && page.contains("Give a user name and a password"),
        "{page}"
    );
    let (status, head) = c.sign_in_with(&jar, "admin", "admin-password");
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: provisiond_session=")
        })
        .expect(&head);
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");

    // A category and a rollout of 3 entries, through the forms.
    let (status, _, page) = req(&jar, "GET", &format!("{base}/console/categories"), &[]);
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);
    let (status, _, _) = req(
        &jar,
        "POST",
        &format!("{base}/console/categories"),
        &[("csrf", &csrf), ("name", "desk"), ("provisioning", "on")],
    );
    assert_eq!(status, 303);
    // Without its token the same form is refused.
    let (status, _, page) = req(
        &jar,
        "POST",
        &format!("{base}/console/categories"),
        &[("name", "other"), ("provisioning", "on")],
    );
    assert_eq!(status, 403, "{page}");
    let (status, head, page) = req(
        &jar,
        "POST",
        &format!("{base}/console/rollouts"),
        &[
            ("csrf", &csrf),
            ("category", "desk"),
            ("entries", "Alice\nBob\nCarol\n"),
        ],
    );
    assert_eq!(status, 303, "{page}");
    let location = head
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect(&head)
        .trim()
        .to_owned();
    // The rollout's page renders (its links use the console's own urlencode_strict filter).
    let (status, _, page) = req(&jar, "GET", &format!("{base}{location}"), &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Carol"), "{page}");
    let (status, _, page) = req(&jar, "GET", &format!("{base}/console/rollouts"), &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains(location.as_str()), "{page}");
    let (status, _, csv) = req(&jar, "GET", &format!("{base}{location}/csv"), &[]);
    assert_eq!(status, 200);
    let rows = csv_rows(&csv);
    assert!(csv.starts_with("code,label,category,state"), "{csv}");
    // Data rows (csv_rows leaves the header out).
    assert_eq!(rows.len(), 3, "{csv}");
    let labels: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(labels, ["Alice", "Bob", "Carol"]);
    assert!(rows.iter().all(|r| r[3] == "pending" && r[0].len() == 12));

    // A viewer of tenant acme: no action buttons, 403 on the action URL, and master's
    // rollout is not theirs (404).
    let vjar = dir.join("viewer.jar");
    assert_eq!(c.sign_in_with(&vjar, "eve", "eve-password").0, 303);
    let (status, _, page) = req(&vjar, "GET", &format!("{base}/console/rollouts"), &[]);
    assert_eq!(status, 200);
    assert!(!page.contains("create-rollout"), "{page}");
    let vcsrf = csrf_of(&page);
    let (status, _, _) = req(
        &vjar,
        "POST",
        &format!("{base}/console/rollouts"),
        &[
            ("csrf", &vcsrf),
            ("category", "desk"),
            ("entries", "Mallory"),
        ],
    );
    assert_eq!(status, 403);
    let (status, _, _) = req(&vjar, "GET", &format!("{base}{location}"), &[]);
    assert_eq!(status, 404);
    let (status, _, _) = req(&vjar, "GET", &format!("{base}{location}/csv"), &[]);
    assert_eq!(status, 404);

    // Sign-out ends the session: the old cookie leads to the sign-in page.
    let (status, _, _) = req(
        &jar,
        "POST",
        &format!("{base}/console/signout"),
        &[("csrf", &csrf)],
    );
    assert_eq!(status, 303);
    let old = dir.join("old.jar");
    std::fs::copy(dir.join("viewer.jar"), &old).unwrap();
    let (status, _, _) = req(
        &vjar,
        "POST",
        &format!("{base}/console/signout"),
        &[("csrf", &vcsrf)],
    );
    assert_eq!(status, 303);
    let (status, head, _) = req(&old, "GET", &format!("{base}/console/rollouts"), &[]);
    assert_eq!(status, 303);
    assert!(head.contains("location: /console/signin"), "{head}");
}

#[test]
fn sign_in_is_rate_limited_and_sessions_expire_when_idle() {
    let c = Console::start("[console]\nidle_timeout_secs = 3\n");
    c.user("op", "master", "operator");
    let jar = c.dir().join("op.jar");

    // Idle expiry: a session left alone longer than the timeout sends to the sign-in page.
    assert_eq!(c.sign_in_with(&jar, "op", "op-password").0, 303);
    let deadline = Instant::now() + PATIENCE;
    loop {
        std::thread::sleep(Duration::from_secs(4));
        let (status, head, _) = req(&jar, "GET", &format!("{}/console/", c.base), &[]);
        if status == 303 && head.contains("location: /console/signin") {
            break;
        }
        assert!(Instant::now() < deadline, "the session never expired");
    }

    // Five failures spend the user's budget: the right password is then refused too.
    for _ in 0..5 {
        assert_eq!(c.sign_in_with(&jar, "op", "not-the-password").0, 401);
    }
    assert_eq!(c.sign_in_with(&jar, "op", "op-password").0, 429);
}

/// Signs in a fresh admin and a viewer of tenant master; their cookie jars.
fn admin_and_viewer(c: &Console) -> (std::path::PathBuf, std::path::PathBuf) {
    c.user("admin", "master", "admin");
    c.user("vera", "master", "viewer");
    (c.sign_in("admin"), c.sign_in("vera"))
}

#[test]
fn configs_list_edit_validate_and_roles() {
    let c = Console::start("");
    let (jar, vjar) = admin_and_viewer(&c);
    let base = &c.base;

    // The list shows the built-in configs with their parents.
    let (status, _, page) = req(&jar, "GET", &format!("{base}/console/configs"), &[]);
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("href=\"/console/configs\""),
        "nav link: {page}"
    );
    assert!(page.contains("/console/configs/autoprov"), "{page}");
    assert!(page.contains("/console/configs/base"), "{page}");

    let url = format!("{base}/console/configs/autoprov");
    let (status, _, page) = req(&jar, "GET", &url, &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<textarea id=\"raw_config\""), "{page}");
    assert!(page.contains("save-config"), "{page}");
    let csrf = csrf_of(&page);

    // A valid object is saved and shown again.
    let valid = r#"{"X_console_test": "kept", "sip_lines": {"1": {"username": "alice"}}}"#;
    let (status, _, page) = req(
        &jar,
        "POST",
        &url,
        &[("csrf", &csrf), ("raw_config", valid)],
    );
    assert_eq!(status, 303, "{page}");
    let (_, _, page) = req(&jar, "GET", &url, &[]);
    assert!(page.contains("X_console_test"), "{page}");
    assert!(page.contains("alice"), "{page}");

    // Too deep a value: 400, the form again with the text as typed and the key named.
    let deep = format!(
        r#"{{"ok": 1, "too_deep": {}{}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let (status, _, page) = req(
        &jar,
        "POST",
        &url,
        &[("csrf", &csrf), ("raw_config", &deep)],
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("raw_config-error"), "{page}");
    assert!(page.contains("raw_config.too_deep"), "{page}");
    assert!(page.contains("[[[[[[[[[["), "the text as typed: {page}");
    // Not JSON, or not an object: 400 too; the stored config is unchanged.
    for bad in ["{not json", "[1, 2]"] {
        let (status, _, page) = req(&jar, "POST", &url, &[("csrf", &csrf), ("raw_config", bad)]);
        assert_eq!(status, 400, "{bad}: {page}");
        assert!(page.contains("raw_config-error"), "{page}");
    }
    let (_, _, page) = req(&jar, "GET", &url, &[]);
    assert!(
        page.contains("X_console_test") && !page.contains("too_deep"),
        "{page}"
    );
    // Without the CSRF token: 403.
    let (status, _, _) = req(&jar, "POST", &url, &[("raw_config", "{}")]);
    assert_eq!(status, 403);
    // An unknown config: 404.
    let (status, _, _) = req(&jar, "GET", &format!("{base}/console/configs/nope"), &[]);
    assert_eq!(status, 404);

    // A viewer reads the config but has no save button, and a POST is 403.
    let (status, _, page) = req(&vjar, "GET", &url, &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("X_console_test"), "{page}");
    assert!(!page.contains("save-config"), "{page}");
    let vcsrf = csrf_of(&page);
    let (status, _, _) = req(
        &vjar,
        "POST",
        &url,
        &[("csrf", &vcsrf), ("raw_config", "{}")],
    );
    assert_eq!(status, 403);
    let (_, _, page) = req(&jar, "GET", &url, &[]);
    assert!(page.contains("X_console_test"), "{page}");
}

#[test]
fn automatic_provisioning_token_urls_and_roles() {
    let c = Console::start("");
    let (jar, vjar) = admin_and_viewer(&c);
    let base = &c.base;
    let url = format!("{base}/console/auto");

    let (status, _, page) = req(&jar, "GET", &url, &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("href=\"/console/auto\""), "nav link: {page}");
    assert!(page.contains("Disabled"), "{page}");
    assert!(page.contains("auto-generate"), "{page}");
    let csrf = csrf_of(&page);
    let (status, _, _) = req(
        &jar,
        "POST",
        &format!("{base}/console/categories"),
        &[
            ("csrf", &csrf),
            ("name", "front desk"),
            ("provisioning", "on"),
        ],
    );
    assert_eq!(status, 303);

    // Without the CSRF token: 403, nothing changes.
    let (status, _, _) = req(&jar, "POST", &url, &[("action", "generate")]);
    assert_eq!(status, 403);
    let (status, _, page) = req(
        &jar,
        "POST",
        &url,
        &[("csrf", &csrf), ("action", "generate")],
    );
    assert_eq!(status, 303, "{page}");
    let (_, _, page) = req(&jar, "GET", &url, &[]);
    // Tera escapes `/` and `"` in text; the test reads the text as a browser shows it.
    let page = page.replace("&#x2F;", "/").replace("&quot;", "\"");
    let at = page.find("id=\"auto-token\">").expect(&page) + 16;
    let token = page[at..].split('<').next().unwrap().to_owned();
    assert!(token.len() >= 8, "{page}");
    // The category's URL (percent-encoded name) and its DHCP settings, as the API gives them.
    let path = format!("/auto/master/{token}/front%20desk/");
    assert!(page.contains(&format!("<code>{path}</code>")), "{page}");
    assert!(
        page.contains(&format!("option tftp-server-name \"{path}\";")),
        "{page}"
    );
    assert!(
        page.contains("option option-160 code 160 = text;"),
        "{page}"
    );
    assert!(page.contains("auto-disable"), "{page}");

    // A viewer sees the URLs but no buttons, and a POST is 403.
    let (status, _, vpage) = req(&vjar, "GET", &url, &[]);
    assert_eq!(status, 200);
    assert!(vpage.contains("front%20desk"), "{vpage}");
    assert!(!vpage.contains("auto-generate") && !vpage.contains("auto-disable"));
    let vcsrf = csrf_of(&vpage);
    let (status, _, _) = req(
        &vjar,
        "POST",
        &url,
        &[("csrf", &vcsrf), ("action", "disable")],
    );
    assert_eq!(status, 403);
    let (_, _, page) = req(&jar, "GET", &url, &[]);
    assert!(page.contains(&token), "{page}");

    // An unknown action is 400; disabling removes the token and the URLs.
    let (status, _, _) = req(&jar, "POST", &url, &[("csrf", &csrf), ("action", "x")]);
    assert_eq!(status, 400);
    let (status, _, _) = req(
        &jar,
        "POST",
        &url,
        &[("csrf", &csrf), ("action", "disable")],
    );
    assert_eq!(status, 303);
    let (_, _, page) = req(&jar, "GET", &url, &[]);
    assert!(
        page.contains("Disabled") && !page.contains(&token),
        "{page}"
    );
    assert!(!page.contains("front%20desk"), "{page}");
}

#[test]
fn jobs_list_create_confirmed_delete_and_roles() {
    let c = Console::start("");
    let (jar, vjar) = admin_and_viewer(&c);
    let base = &c.base;
    let url = format!("{base}/console/jobs");

    let (status, _, page) = req(&jar, "GET", &url, &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("href=\"/console/jobs\""), "nav link: {page}");
    assert!(page.contains("create-job"), "{page}");
    let csrf = csrf_of(&page);
    let (status, _, _) = req(
        &jar,
        "POST",
        &format!("{base}/console/categories"),
        &[("csrf", &csrf), ("name", "desk"), ("provisioning", "on")],
    );
    assert_eq!(status, 303);

    // Refusals re-render the form (400) with the error and what was typed.
    for (kind, params, named) in [
        ("nope", r#"{"locale": "fr_FR"}"#, "type: one of"),
        ("locale", r#"{"oops": 1}"#, "params.oops"),
        ("locale", "{not json", "params: not JSON"),
    ] {
        let (status, _, page) = req(
            &jar,
            "POST",
            &url,
            &[
                ("csrf", &csrf),
                ("category", "desk"),
                ("type", kind),
                ("params", params),
            ],
        );
        assert_eq!(status, 400, "{kind} {params}: {page}");
        assert!(page.contains("params-error"), "{page}");
        assert!(page.contains(named), "{page}");
    }
    // Without the CSRF token: 403.
    let form = [
        ("category", "desk"),
        ("type", "locale"),
        ("params", r#"{"locale": "fr_FR"}"#),
    ];
    let (status, _, _) = req(&jar, "POST", &url, &form);
    assert_eq!(status, 403);
    let mut with_csrf = vec![("csrf", csrf.as_str())];
    with_csrf.extend(form);
    let (status, _, page) = req(&jar, "POST", &url, &with_csrf);
    assert_eq!(status, 303, "{page}");
    let (_, _, page) = req(&jar, "GET", &url, &[]);
    assert!(
        page.contains("config: locale") && page.contains("fr_FR"),
        "{page}"
    );
    let at = page.find("action=\"/console/jobs/").expect(&page) + 22;
    let delete = format!(
        "{base}/console/jobs/{}",
        page[at..].split('"').next().unwrap()
    );
    assert!(delete.ends_with("/delete"), "{delete}");

    // A viewer sees the job but no form or delete button; both POSTs are 403.
    let (status, _, vpage) = req(&vjar, "GET", &url, &[]);
    assert_eq!(status, 200);
    assert!(vpage.contains("fr_FR"), "{vpage}");
    assert!(!vpage.contains("create-job") && !vpage.contains("delete-job"));
    let vcsrf = csrf_of(&vpage);
    let mut viewer_form = vec![("csrf", vcsrf.as_str())];
    viewer_form.extend(form);
    assert_eq!(req(&vjar, "POST", &url, &viewer_form).0, 403);
    let (status, _, _) = req(
        &vjar,
        "POST",
        &delete,
        &[("csrf", &vcsrf), ("confirm", "yes")],
    );
    assert_eq!(status, 403);

    // Delete asks first; confirmed, the job is gone.
    let (status, _, page) = req(&jar, "POST", &delete, &[("csrf", &csrf)]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Yes, delete it"), "{page}");
    let (_, _, page) = req(&jar, "GET", &url, &[]);
    assert!(
        page.contains("fr_FR"),
        "not deleted before confirmation: {page}"
    );
    let (status, _, _) = req(
        &jar,
        "POST",
        &delete,
        &[("csrf", &csrf), ("confirm", "yes")],
    );
    assert_eq!(status, 303);
    let (_, _, page) = req(&jar, "GET", &url, &[]);
    assert!(!page.contains("fr_FR"), "{page}");
    let (status, _, _) = req(
        &jar,
        "POST",
        &delete,
        &[("csrf", &csrf), ("confirm", "yes")],
    );
    assert_eq!(status, 404);
}

/// An open `/console/events` stream over a raw TCP connection: its lines as they arrive.
struct Events {
    lines: std::sync::mpsc::Receiver<String>,
    conn: std::net::TcpStream,
}

/// Opens `/console/events` with `cookie`: the status, and the stream when it is 200.
fn open_events(base: &str, cookie: Option<&str>) -> (u16, Option<Events>) {
    let (status, _, stream) = open_events_head(base, cookie);
    (status, stream)
}

/// The same with the answer's header lines.
fn open_events_head(base: &str, cookie: Option<&str>) -> (u16, String, Option<Events>) {
    use std::io::{BufRead, BufReader, Write};
    let addr = base.strip_prefix("http://").unwrap();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: provisiond_session={c}\r\n"))
        .unwrap_or_default();
    write!(
        conn,
        "GET /console/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{cookie}\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    if status != 200 {
        return (status, head, None);
    }
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Chunk-size lines of the chunked encoding come along; only `event:` and `data:`
        // lines are looked at. The thread ends when the server closes the stream.
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (status, head, Some(Events { lines, conn }))
}

impl Events {
    /// Lines up to the first one containing `wanted` (30 s bound); panics on the end.
    fn until(&self, wanted: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(wanted);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(e) => panic!("no {wanted:?} in the stream ({e}): {seen:?}"),
            }
        }
    }

    /// Waits (30 s bound) until the server ends the stream.
    fn until_closed(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                Err(e) => panic!("the stream is still open: {e}"),
            }
        }
    }
}

/// A new session signed in with the API `token` through the form (jar `token-<n>.jar`): its
/// cookie.
fn token_session(c: &Console, token: &str, n: usize) -> String {
    let jar = c.dir().join(format!("token-{n}.jar"));
    let signin = format!("{}/console/signin", c.base);
    let (status, _, page) = req(&jar, "GET", &signin, &[]);
    assert_eq!(status, 200, "{page}");
    let csrf = csrf_of(&page);
    let (status, head, _) = req(&jar, "POST", &signin, &[("csrf", &csrf), ("token", token)]);
    assert_eq!(status, 303, "{head}");
    jar_cookie(&jar, "provisiond_session")
}

/// A device created in `tenant` over the admin socket (a `device` event of that tenant).
fn create_device(c: &Console, tenant: &str, mac: &str) -> String {
    let device = serde_json::json!({ "device": { "mac": mac } });
    let r = c.api("POST", "/dev_mgr/devices", Some(tenant), Some(device));
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

#[test]
fn live_events_are_filtered_by_tenant_bounded_and_end_with_the_session() {
    // Closed streams are noticed at the next keep-alive: every second here.
    let c = Console::start("[console]\nlive_check_secs = 1\n");
    for tenant in ["acme", "beta"] {
        c.cli(&["tenant", "create", tenant]);
    }
    let users = [
        ("root", "master", "admin"),
        ("ann", "acme", "viewer"),
        ("ben", "beta", "viewer"),
    ];
    let mut cookies = Vec::new();
    for (name, tenant, role) in users {
        let jar = c.signed_in(name, tenant, role);
        cookies.push((jar.clone(), jar_cookie(&jar, "provisiond_session")));
    }

    // Without a session: the sign-in page, no stream.
    let (status, _) = open_events(&c.base, None);
    assert_eq!(status, 303);

    let streams: Vec<Events> = cookies
        .iter()
        .map(|(_, cookie)| {
            let (status, stream) = open_events(&c.base, Some(cookie));
            assert_eq!(status, 200);
            let stream = stream.unwrap();
            // Listening from here on.
            stream.until("event: ready");
            stream
        })
        .collect();
    let (root, ann, ben) = (&streams[0], &streams[1], &streams[2]);

    // beta's device first, then acme's: when acme's reaches ann, beta's would have come
    // before it (one ordered channel), so its absence is proven.
    let beta_dev = create_device(&c, "beta", "00:11:22:00:00:0b");
    let acme_dev = create_device(&c, "acme", "00:11:22:00:00:0a");
    let seen = ann.until(&acme_dev);
    assert!(
        !seen
            .iter()
            .any(|l| l.contains(&beta_dev) || l.contains("beta")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|l| l == "event: device"),
        "named events: {seen:?}"
    );
    // ben sees his tenant's and, after another acme event, still none of acme's.
    ben.until(&beta_dev);
    let later = create_device(&c, "acme", "00:11:22:00:00:1a");
    let marker = create_device(&c, "beta", "00:11:22:00:00:1b");
    let seen = ben.until(&marker);
    assert!(
        !seen
            .iter()
            .any(|l| l.contains(&acme_dev) || l.contains(&later) || l.contains("acme")),
        "{seen:?}"
    );
    // The root's session sees its whole subtree.
    root.until(&beta_dev);
    root.until(&acme_dev);

    // Bounded per session: 4 streams (provisiond::events::MAX_PER_HOLDER); the 5th is refused
    // while another session still gets one.
    let mut more = Vec::new();
    for _ in 1..provisiond::events::MAX_PER_HOLDER {
        let (status, stream) = open_events(&c.base, Some(&cookies[0].1));
        assert_eq!(status, 200);
        more.push(stream.unwrap());
    }
    let (status, head, _) = open_events_head(&c.base, Some(&cookies[0].1));
    assert_eq!(status, 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 30"),
        "{head}"
    );
    let (status, stream) = open_events(&c.base, Some(&cookies[1].1));
    assert_eq!(status, 200, "another session");
    more.push(stream.unwrap());

    // Bounded daemon-wide: 64 streams at once (provisiond::events::MAX_SUBSCRIBERS), from
    // sessions of an API token; the next is refused, whatever its session.
    let token = c.api(
        "POST",
        "/tokens",
        Some("master"),
        Some(serde_json::json!({ "token": { "tenant": "master" } })),
    );
    assert_eq!(token.status, 201, "{:?}", token.body);
    let token = token.body["token"].as_str().unwrap().to_owned();
    let mut open = streams.len() + more.len();
    let mut session = 0;
    while open < provisiond::events::MAX_SUBSCRIBERS {
        session += 1;
        let cookie = token_session(&c, &token, session);
        for _ in
            0..provisiond::events::MAX_PER_HOLDER.min(provisiond::events::MAX_SUBSCRIBERS - open)
        {
            let (status, stream) = open_events(&c.base, Some(&cookie));
            assert_eq!(status, 200, "stream {open}");
            more.push(stream.unwrap());
            open += 1;
        }
    }
    let fresh = token_session(&c, &token, session + 1);
    let (status, head, _) = open_events_head(&c.base, Some(&fresh));
    assert_eq!(status, 503, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 30"),
        "{head}"
    );
    // Closed by their clients, their places come back (once the server notices, at the
    // latest at the next keep-alive).
    for s in more.drain(..) {
        let _ = s.conn.shutdown(std::net::Shutdown::Both);
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, stream) = open_events(&c.base, Some(&cookies[0].1));
        if status == 200 {
            drop(stream);
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "the places never came back");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Signing out ends the session's stream.
    let (jar, _) = &cookies[1];
    let (_, _, page) = req(jar, "GET", &format!("{}/console/", c.base), &[]);
    let (status, _, _) = req(
        jar,
        "POST",
        &format!("{}/console/signout", c.base),
        &[("csrf", &csrf_of(&page))],
    );
    assert_eq!(status, 303);
    ann.until_closed();
}

#[test]
fn a_deleted_users_open_stream_ends_at_the_next_check() {
    // The check runs at each keep-alive: every second here (15 s by default).
    let c = Console::start("[console]\nlive_check_secs = 1\n");
    c.cli(&["tenant", "create", "acme"]);
    let jar = c.signed_in("ann", "acme", "viewer");
    let cookie = jar_cookie(&jar, "provisiond_session");
    let (status, stream) = open_events(&c.base, Some(&cookie));
    assert_eq!(status, 200);
    let stream = stream.unwrap();
    stream.until("event: ready");
    let r = c.api("DELETE", "/users/ann", None, None);
    assert!(r.status < 300, "{:?}", r.body);
    // Nothing is published meanwhile: only the keep-alive's check can end it.
    stream.until_closed();
    // The session went with it.
    let (status, head, _) = req(&jar, "GET", &format!("{}/console/", c.base), &[]);
    assert_eq!(status, 303, "{head}");
    assert!(head.contains("location: /console/signin"), "{head}");
}

/// One fetch of its MAC file by the Yealink phone of `mac`, over HTTP (a boot event).
fn phone_fetch(c: &Console, mac: &str) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(c.http()).unwrap();
    conn.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        conn,
        "GET /{}.cfg HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Yealink SIP-T54W 96.86.0.70 {mac}\r\nConnection: close\r\n\r\n",
        mac.replace(':', "")
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn each_tenants_overview_keeps_its_own_recent_boots() {
    let c = Console::start("");
    for (tenant, mac) in [("acme", "80:5e:c0:00:00:0a"), ("beta", "80:5e:c0:00:00:0b")] {
        c.cli(&["tenant", "create", tenant]);
        let config = serde_json::json!({ "config": {
            "id": format!("{tenant}-line"), "parent_ids": ["base"], "raw_config": {}
        }});
        let r = c.api("POST", "/cfg_mgr/configs", Some(tenant), Some(config));
        assert_eq!(r.status, 201, "{:?}", r.body);
        let device = serde_json::json!({ "device": {
            "mac": mac, "plugin": "yealink", "config": format!("{tenant}-line")
        }});
        let r = c.api("POST", "/dev_mgr/devices", Some(tenant), Some(device));
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    phone_fetch(&c, "80:5e:c0:00:00:0a");
    // beta's phone fetches 300 times, more than the old shared ring of 200 held.
    for _ in 0..300 {
        phone_fetch(&c, "80:5e:c0:00:00:0b");
    }
    let ann = c.signed_in("ann", "acme", "viewer");
    let (status, page) = c.get(&ann, "/console/");
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        page.matches("<td>805ec000000a.cfg</td>").count(),
        1,
        "{page}"
    );
    assert!(!page.contains("805ec000000b.cfg"), "{page}");
    let ben = c.signed_in("ben", "beta", "viewer");
    let (_, page) = c.get(&ben, "/console/");
    assert_eq!(
        page.matches("<td>805ec000000b.cfg</td>").count(),
        20,
        "{page}"
    );
    assert!(!page.contains("805ec000000a.cfg"), "{page}");
    // The root's subtree merges both: the newest 20, all beta's.
    let root = c.signed_in("root", "master", "viewer");
    let (_, page) = c.get(&root, "/console/");
    assert_eq!(
        page.matches("<td>805ec000000b.cfg</td>").count(),
        20,
        "{page}"
    );
}
