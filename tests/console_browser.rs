//! The web console in a real browser: headless Chromium driven over WebDriver (chromedriver on
//! loopback) against the real daemon. Signs in through the form, creates a category and a
//! rollout through theirs, reads the rollout's codes from the DOM, downloads its CSV with the
//! browser's session cookie, and signs out. Skipped when chromium or chromedriver is missing,
//! unless PROVISIOND_BROWSER_REQUIRED is set (CI sets it, so CI never skips silently).

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::console::*;
use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Bound on waiting for the browser or a page; generous for a loaded CI machine.
const BROWSER_PATIENCE: Duration = Duration::from_secs(30);

/// The first executable named `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// chromedriver and the browser it starts; killed when dropped, even when the test fails.
struct Driver {
    child: Child,
    port: u16,
    /// Chromium's profile: its path in a process's command line marks that process as ours.
    profile: tempfile::TempDir,
}

impl Driver {
    /// Starts chromedriver on a free loopback port and waits until `/status` says it is ready.
    fn start(chromedriver: &Path) -> Driver {
        let mut profile = tempfile::tempdir().unwrap();
        // Another process may take the port between our probe and chromedriver's bind:
        // a few attempts with fresh ports.
        for _ in 0..3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .arg("--silent")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // A process group of its own, so that Drop can end it with its children.
                .process_group(0)
                .spawn()
                .expect("spawn chromedriver");
            let mut driver = Driver {
                child,
                port,
                profile,
            };
            let deadline = Instant::now() + BROWSER_PATIENCE;
            loop {
                if driver.ready() {
                    return driver;
                }
                if driver.child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // Dropping the failed attempt kills it; the profile goes on to the next one.
            profile = std::mem::replace(&mut driver.profile, tempfile::tempdir().unwrap());
        }
        panic!("chromedriver never answered /status");
    }

    fn ready(&self) -> bool {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{}/status", self.port))
            .output()
            .expect("curl");
        let body: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(_) => return false,
        };
        body["value"]["ready"] == true
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Chromium's helpers may have left chromedriver's group: every process whose command
        // line names our profile directory is ours.
        let marker = self.profile.path().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            if String::from_utf8_lossy(&cmdline).contains(&marker) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// chromium and chromedriver, or why not when either is missing.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let chromium = on_path("chromium")
        .or_else(|| on_path("chromium-browser"))
        .ok_or("chromium is not installed (Debian: apt-get install chromium)")?;
    let driver = on_path("chromedriver")
        .ok_or("chromedriver is not installed (Debian: apt-get install chromium-driver)")?;
    Ok((chromium, driver))
}

/// Polls until the elements matching `css` satisfy `ok`; their texts then.
async fn wait_texts(
    client: &Client,
    css: &str,
    what: &str,
    ok: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + BROWSER_PATIENCE;
    let mut texts = Vec::new();
    loop {
        if let Ok(found) = client.find_all(Locator::Css(css)).await {
            texts.clear();
            for e in found {
                texts.push(e.text().await.unwrap_or_default());
            }
            if ok(&texts) {
                return texts;
            }
        }
        if Instant::now() > deadline {
            let source = client.source().await.unwrap_or_default();
            panic!("{what}: {css} gave {texts:?}; page:\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(client: &Client, css: &str, text: &str) {
    let element = client
        .wait()
        .at_most(BROWSER_PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    element.send_keys(text).await.unwrap();
}

async fn click(client: &Client, css: &str) {
    let element = client
        .wait()
        .at_most(BROWSER_PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"));
    element.click().await.unwrap();
}

#[test]
fn sign_in_create_a_rollout_read_its_codes_and_csv_then_sign_out() {
    let (chromium, chromedriver) = match tools() {
        Ok(t) => t,
        Err(why) if std::env::var_os("PROVISIOND_BROWSER_REQUIRED").is_some() => {
            panic!("PROVISIOND_BROWSER_REQUIRED is set but {why}")
        }
        Err(why) => {
            println!("skipped: {why}; set PROVISIOND_BROWSER_REQUIRED=1 to make this a failure");
            return;
        }
    };

    // NOTIFYs after the redemption go to a port where nothing listens.
    let mut c = Console::start(&format!("[sync]\nsip_port = {}\n", free_udp_port()));
    c.user("admin", "master", "admin");
    c.user("vic", "master", "viewer");
    let base = c.base.clone();
    let phones = Phones(&c);
    phones.set_base_url();

    let driver = Driver::start(&chromedriver);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // On failure, the daemon's log goes with the panic: it says why a page was an error.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(scenario(&driver, &chromium, &base, &phones))
    }));
    drop(driver);
    if let Err(panic) = outcome {
        eprintln!("provisiond's log:\n{}", c.log_so_far());
        std::panic::resume_unwind(panic);
    }
}

/// The phones' side of the test: the daemon's HTTP provisioning address and its admin socket.
struct Phones<'a>(&'a Console);

impl Phones<'_> {
    /// The REST API over the admin socket.
    fn api(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> ApiReply {
        self.0.api(method, path, None, body)
    }

    /// The URL phones reach the daemon at, in the `base` config as a PBX sets it: the code
    /// form's key in the autoprov file needs it.
    fn set_base_url(&self) {
        let r = self.api("GET", "/cfg_mgr/configs/base", None);
        assert_eq!(r.status, 200, "{:?}", r.body);
        let mut base = r.body["config"].clone();
        base["raw_config"]["ip"] = serde_json::json!(self.0.http().ip().to_string());
        base["raw_config"]["http_port"] = serde_json::json!(self.0.http().port());
        let r = self.api(
            "PUT",
            "/cfg_mgr/configs/base",
            Some(serde_json::json!({ "config": base })),
        );
        assert_eq!(r.status, 204, "{:?}", r.body);
    }

    /// A GET as the Yealink phone of `mac`: status and body.
    fn phone_get(&self, url: &str, mac: &str) -> (u16, String) {
        let ua = format!("User-Agent: Yealink SIP-T54W 96.86.0.70 {mac}");
        let r = curl(&[], url, "GET", &[ua], None);
        let text = match r.body {
            serde_json::Value::String(text) => text,
            serde_json::Value::Null => String::new(),
            other => other.to_string(),
        };
        (r.status, text)
    }

    /// The phone of `mac` fetches its own file (a boot event); the file.
    fn boot(&self, mac: &str) -> String {
        let url = format!("http://{}/{}.cfg", self.0.http(), mac.replace(':', ""));
        let (status, file) = self.phone_get(&url, mac);
        assert_eq!(status, 200, "{file}");
        file
    }

    /// The phone of `mac` redeems `code` as a Yealink does (tests/code_form.rs): its
    /// autoprov file puts the form's URL on line key 1; the form is an input screen whose URL
    /// gets the digits as a query parameter.
    fn redeem(&self, mac: &str, code: &str) {
        let file = self.boot(mac);
        let form = file
            .lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == "linekey.1.value")
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no code form key in\n{file}"));
        let (status, screen) = self.phone_get(&form, mac);
        assert_eq!(status, 200, "{screen}");
        let doc = roxmltree::Document::parse(&screen).unwrap();
        let text = |name: &str| {
            doc.descendants()
                .find(|n| n.has_tag_name(name))
                .and_then(|n| n.text())
                .unwrap_or_else(|| panic!("no {name} in {screen}"))
                .to_owned()
        };
        let url = text("URL");
        let sep = if url.contains('?') { '&' } else { '?' };
        let submit = format!("{url}{sep}{}={code}", text("Parameter"));
        let (status, result) = self.phone_get(&submit, mac);
        assert_eq!(status, 200, "{result}");
        assert!(result.contains("Phone provisioned"), "{result}");
    }
}

/// Where screenshots go when PROVISIOND_SCREENSHOTS is set.
fn screenshot_dir() -> Option<PathBuf> {
    std::env::var_os("PROVISIOND_SCREENSHOTS")
        .filter(|v| !v.is_empty() && v != "0")
        .map(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console"))
}

/// Saves the page as docs/console/`name`.png when screenshots are asked for.
async fn screenshot(client: &Client, name: &str) {
    let Some(dir) = screenshot_dir() else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    // Fonts and the deferred script settle before the picture.
    client
        .wait()
        .at_most(BROWSER_PATIENCE)
        .for_element(Locator::Css("body"))
        .await
        .unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// A screenshot's name for a console path: `/console/` is the overview, `/console/a/b` a-b.
fn page_name(href: &str) -> String {
    let path = href
        .split_once("/console/")
        .map(|(_, p)| p)
        .unwrap_or("")
        .trim_end_matches('/');
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        "overview".to_owned()
    } else {
        path.replace('/', "-")
    }
}

/// Runs `script` in the page; its result.
async fn js(client: &Client, script: &str) -> serde_json::Value {
    client
        .execute(script, vec![])
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Marks the page's window: a reload or a navigation loses the mark.
async fn mark(client: &Client) {
    js(client, "window.provisiondMark = 'still here'; return null;").await;
}

async fn still_marked(client: &Client) -> bool {
    js(client, "return window.provisiondMark || null;").await == "still here"
}

/// Waits until the page's live updates are connected (console.js sets `data-live`).
async fn wait_live(client: &Client) {
    wait_texts(
        client,
        "body[data-live=on]",
        "live updates connected",
        |t| t.len() == 1,
    )
    .await;
}

/// Builds and submits a form in the page, as a forged or hand-made POST would be.
async fn post_form(client: &Client, action: &str, fields: &[(&str, &str)]) {
    let fields: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    client
        .execute(
            "const f = document.createElement('form');
             f.method = 'post'; f.action = arguments[0];
             for (const [k, v] of Object.entries(arguments[1])) {
               const i = document.createElement('input');
               i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i);
             }
             document.body.appendChild(f); f.submit(); return null;",
            vec![serde_json::json!(action), serde_json::Value::Object(fields)],
        )
        .await
        .unwrap();
}

/// The session cookie the browser holds, as a `Cookie` header value.
async fn session_cookie(client: &Client) -> String {
    let session = client
        .get_all_cookies()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.name() == "provisiond_session")
        .expect("the session cookie");
    format!("provisiond_session={}", session.value())
}

/// The CSRF token of the page's forms.
async fn page_csrf(client: &Client) -> String {
    client
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .expect("a CSRF token")
}

async fn sign_in(client: &Client, base: &str, user: &str, password: &str) {
    client
        .goto(&format!("{base}/console/signin"))
        .await
        .unwrap();
    fill(client, "#user", user).await;
    fill(client, "#password", password).await;
    click(client, "#signin").await;
    wait_texts(client, "#signout", "signed in", |t| t.len() == 1).await;
}

/// The browser's part of the test.
async fn scenario(driver: &Driver, chromium: &Path, base: &str, phones: &Phones<'_>) {
    {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // CI runs as root, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    // Containers often have a small /dev/shm.
                    "--disable-dev-shm-usage",
                    // One size for every screenshot.
                    "--window-size=1280,900",
                    "--hide-scrollbars",
                    format!("--user-data-dir={}", driver.profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url())
            .await
            .expect("a WebDriver session");
        client.set_window_size(1280, 900).await.unwrap();

        // Sign in through the form.
        sign_in(&client, base, "admin", "admin-password").await;

        // A category through its form.
        client
            .goto(&format!("{base}/console/categories"))
            .await
            .unwrap();
        fill(&client, "#name", "desk").await;
        click(&client, "#create-category").await;
        wait_texts(
            &client,
            "#categories tbody td:first-child",
            "category",
            |t| t.iter().any(|n| n == "desk"),
        )
        .await;

        // A rollout of 3 entries; its page lists the codes, all pending.
        client
            .goto(&format!("{base}/console/rollouts"))
            .await
            .unwrap();
        fill(&client, "textarea#entries", "Alice\nBob\nCarol").await;
        click(&client, "#create-rollout").await;
        let codes = wait_texts(&client, "table#entries td.code-cell", "codes", |t| {
            t.len() == 3
        })
        .await;
        assert!(codes.iter().all(|c| c.len() == 12), "{codes:?}");
        let states = wait_texts(&client, "table#entries td.state", "states", |t| {
            t.len() == 3
        })
        .await;
        assert!(
            states.iter().all(|s| s.eq_ignore_ascii_case("pending")),
            "{states:?}"
        );
        let labels = wait_texts(&client, "table#entries td:nth-child(2)", "labels", |t| {
            t.len() == 3
        })
        .await;
        assert_eq!(labels, ["Alice", "Bob", "Carol"]);
        let rollout_url = client.current_url().await.unwrap().to_string();

        // The CSV link, fetched with the browser's own session cookie.
        let href = client
            .find(Locator::Css("#csv"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .expect("the CSV link's href");
        let cookie = session_cookie(&client).await;
        let url = if href.starts_with("http") {
            href
        } else {
            format!("{base}{href}")
        };
        let (status, head, body) = req_with_cookie(&cookie, "GET", &url, &[]);
        assert_eq!(status, 200, "{head}{body}");
        let mut reader = csv::Reader::from_reader(body.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(&header[..4], ["code", "label", "category", "state"]);
        let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 3, "{body}");
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row[0], codes[i], "{body}");
            assert_eq!(row[1], labels[i], "{body}");
            assert_eq!(&row[2], "desk", "{body}");
            assert_eq!(&row[3], "pending", "{body}");
        }

        // Bob's phone redeems his code through its own form, over HTTP as a phone does; the
        // open page turns his row Registered by itself: the window's mark proves no reload.
        wait_live(&client).await;
        mark(&client).await;
        let mac = "80:5e:c0:aa:bb:01";
        phones.redeem(mac, &codes[1]);
        let states = wait_texts(&client, "table#entries td.state", "Bob registered", |t| {
            t.len() == 3 && t[1].eq_ignore_ascii_case("registered")
        })
        .await;
        assert!(states[0].eq_ignore_ascii_case("pending"), "{states:?}");
        assert!(states[2].eq_ignore_ascii_case("pending"), "{states:?}");
        assert!(still_marked(&client).await, "the page was reloaded");
        let devices = wait_texts(&client, "table#entries td.device-cell", "Bob's MAC", |t| {
            t.get(1).is_some_and(|m| m == mac)
        })
        .await;
        assert_eq!(devices[0], "", "{devices:?}");

        // The overview lists the phone's fetches, and the next one appears by itself.
        client.goto(&format!("{base}/console/")).await.unwrap();
        let before = wait_texts(&client, "table#boots tbody tr", "boot events", |t| {
            !t.is_empty() && t[0].contains("805ec0aabb01.cfg")
        })
        .await;
        wait_live(&client).await;
        mark(&client).await;
        phones.boot(mac);
        wait_texts(&client, "table#boots tbody tr", "a live boot event", |t| {
            t.len() == before.len() + 1 && t[0].contains("805ec0aabb01.cfg")
        })
        .await;
        assert!(still_marked(&client).await, "the page was reloaded");
        // Times are shown in the browser's zone; the UTC value stays in the element.
        let time = js(
            &client,
            "const t = document.querySelector('table#boots tbody tr time');
             return [t.getAttribute('datetime'), t.textContent,
                     new Date(t.getAttribute('datetime')).toLocaleString()];",
        )
        .await;
        let utc = time[0].as_str().unwrap_or_default();
        assert!(utc.ends_with('Z'), "{time}");
        assert_eq!(time[1], time[2], "{time}");
        assert_ne!(time[1].as_str(), Some(utc), "{time}");

        // A config with an invalid value: refused, the error placed at the field.
        client
            .goto(&format!("{base}/console/configs/base"))
            .await
            .unwrap();
        let area = client
            .wait()
            .at_most(BROWSER_PATIENCE)
            .for_element(Locator::Css("textarea#raw_config"))
            .await
            .unwrap();
        area.clear().await.unwrap();
        area.send_keys("{\"ip\": ").await.unwrap();
        click(&client, "#save-config").await;
        let error = wait_texts(&client, "#raw_config-error", "the field's error", |t| {
            t.len() == 1 && !t[0].is_empty()
        })
        .await;
        let placed = js(
            &client,
            "const a = document.getElementById('raw_config');
             const e = document.getElementById('raw_config-error');
             return a.getAttribute('aria-invalid') === 'true'
               && a.getAttribute('aria-describedby') === e.id
               && a.closest('form') === e.closest('form');",
        )
        .await;
        assert_eq!(placed, true, "{error:?}");
        // The page after the POST: the textarea as it came back.
        let kept = client
            .find(Locator::Css("textarea#raw_config"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .unwrap_or_default();
        assert_eq!(kept, "{\"ip\": ", "the form shows what was typed");

        // A POST without the CSRF token is refused (403), from the browser and from curl.
        client
            .goto(&format!("{base}/console/categories"))
            .await
            .unwrap();
        post_form(&client, "/console/categories", &[("name", "forged")]).await;
        let title = wait_texts(&client, "main.error h1", "the 403 page", |t| t.len() == 1).await;
        assert!(title[0].starts_with("403"), "{title:?}");
        let forged = req_with_cookie(
            &cookie,
            "POST",
            &format!("{base}/console/categories"),
            &[("name", "forged")],
        )
        .0;
        assert_eq!(forged, 403);

        // Every page of the main menu, as an admin sees it (pages added later included).
        if screenshot_dir().is_some() {
            client.goto(&format!("{base}/console/")).await.unwrap();
            let mut hrefs = Vec::new();
            for a in client.find_all(Locator::Css("header nav a")).await.unwrap() {
                if let Some(href) = a.attr("href").await.unwrap() {
                    hrefs.push(href);
                }
            }
            assert!(hrefs.len() > 3, "{hrefs:?}");
            for href in hrefs {
                let url = if href.starts_with("http") {
                    href.clone()
                } else {
                    format!("{base}{href}")
                };
                client.goto(&url).await.unwrap();
                wait_texts(&client, "#signout", "a console page", |t| t.len() == 1).await;
                screenshot(&client, &page_name(&href)).await;
            }
            // The rollout again, for its picture with one registered row.
            client.goto(&rollout_url).await.unwrap();
            wait_texts(&client, "table#entries td.state", "the rollout", |t| {
                t.len() == 3
            })
            .await;
            screenshot(&client, "rollout").await;
        }

        // Sign out: the browser is back at the sign-in form, and the old cookie leads there.
        client.goto(&format!("{base}/console/")).await.unwrap();
        click(&client, "#signout").await;
        wait_texts(&client, "#user", "the sign-in form", |t| t.len() == 1).await;
        let (status, head, _) =
            req_with_cookie(&cookie, "GET", &format!("{base}/console/rollouts"), &[]);
        assert_eq!(status, 303, "{head}");
        assert!(head.contains("location: /console/signin"), "{head}");
        screenshot(&client, "signin").await;

        // A viewer sees no action buttons, and an action called by URL is refused (403),
        // even with the page's own CSRF token.
        sign_in(&client, base, "vic", "vic-password").await;
        for (page, action) in [
            ("/console/categories", "#create-category"),
            ("/console/rollouts", "#create-rollout"),
            ("/console/configs/base", "#save-config"),
        ] {
            client.goto(&format!("{base}{page}")).await.unwrap();
            wait_texts(&client, "#signout", page, |t| t.len() == 1).await;
            let found = client.find_all(Locator::Css(action)).await.unwrap();
            assert!(found.is_empty(), "{page} shows {action} to a viewer");
        }
        client
            .goto(&format!("{base}/console/categories"))
            .await
            .unwrap();
        let token = page_csrf(&client).await;
        let viewer = session_cookie(&client).await;
        post_form(
            &client,
            "/console/categories",
            &[("csrf", &token), ("name", "viewer-made")],
        )
        .await;
        let title = wait_texts(&client, "main.error h1", "the 403 page", |t| t.len() == 1).await;
        assert!(title[0].starts_with("403"), "{title:?}");
        let status = req_with_cookie(
            &viewer,
            "POST",
            &format!("{base}/console/rollouts"),
            &[
                ("csrf", &token),
                ("category", "desk"),
                ("entries", "Mallory"),
            ],
        )
        .0;
        assert_eq!(status, 403);
        client
            .goto(&format!("{base}/console/categories"))
            .await
            .unwrap();
        let names = wait_texts(
            &client,
            "#categories tbody td:first-child",
            "categories",
            |t| !t.is_empty(),
        )
        .await;
        assert_eq!(names, ["desk"], "nothing forged was created");

        client.close().await.unwrap();
    }
}
