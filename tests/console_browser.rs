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

/// A GET with only the given session cookie; (status, headers, body).
fn get_with_cookie(url: &str, cookie: &str) -> (u16, String, String) {
    let tmp = tempfile::tempdir().unwrap();
    let (head, body) = (tmp.path().join("h"), tmp.path().join("b"));
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-H"])
        .arg(format!("Cookie: {cookie}"))
        .arg("-D")
        .arg(&head)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .arg(url)
        .output()
        .expect("curl");
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (
        status,
        std::fs::read_to_string(head).unwrap_or_default(),
        std::fs::read_to_string(body).unwrap_or_default(),
    )
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

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut daemon = Daemon::start({
        let mut cmd = command(dir.path());
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    let api = listening_on(&daemon.expect_line(&["REST API on"]));
    daemon.expect_line(&["ready"]);
    let base = format!("http://{api}");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "admin-password\n").unwrap();
    let (code, _, stderr) = run(command(dir.path())
        .args([
            "user", "create", "admin", "--tenant", "master", "--role", "admin",
        ])
        .arg("--password-file")
        .arg(&pw)
        .arg("--config")
        .arg(&config));
    assert_eq!(code, 0, "{stderr}");

    let driver = Driver::start(&chromedriver);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // On failure, the daemon's log goes with the panic: it says why a page was an error.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(scenario(&driver, &chromium, &base))
    }));
    drop(driver);
    if let Err(panic) = outcome {
        eprintln!("provisiond's log:\n{}", daemon.log_so_far());
        std::panic::resume_unwind(panic);
    }
}

/// The browser's part of the test.
async fn scenario(driver: &Driver, chromium: &Path, base: &str) {
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

        // Sign in through the form.
        client
            .goto(&format!("{base}/console/signin"))
            .await
            .unwrap();
        fill(&client, "#user", "admin").await;
        fill(&client, "#password", "admin-password").await;
        click(&client, "#signin").await;
        wait_texts(&client, "#signout", "signed in", |t| t.len() == 1).await;

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

        // The CSV link, fetched with the browser's own session cookie.
        let href = client
            .find(Locator::Css("#csv"))
            .await
            .unwrap()
            .attr("href")
            .await
            .unwrap()
            .expect("the CSV link's href");
        let session = client
            .get_all_cookies()
            .await
            .unwrap()
            .into_iter()
            .find(|c| c.name() == "provisiond_session")
            .expect("the session cookie");
        let cookie = format!("provisiond_session={}", session.value());
        let url = if href.starts_with("http") {
            href
        } else {
            format!("{base}{href}")
        };
        let (status, head, body) = get_with_cookie(&url, &cookie);
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

        // Sign out: the browser is back at the sign-in form, and the old cookie leads there.
        click(&client, "#signout").await;
        wait_texts(&client, "#user", "the sign-in form", |t| t.len() == 1).await;
        let (status, head, _) = get_with_cookie(&format!("{base}/console/rollouts"), &cookie);
        assert_eq!(status, 303, "{head}");
        assert!(head.contains("location: /console/signin"), "{head}");

        client.close().await.unwrap();
    }
}
