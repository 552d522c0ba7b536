//! The admin CLI (`provisiond device|config|tenant|token …`) against a running daemon, over
//! its local admin socket.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{command, run, start_daemon as start, write_config, BIN};
use serde_json::Value;

fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    run(command(dir)
        .args(args)
        .arg("--config")
        .arg(dir.join("provisiond.toml")))
}

/// The CLI, which must succeed; its standard output.
fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = cli(dir, args);
    assert_eq!(code, 0, "{args:?}: {stderr}");
    stdout
}

/// The CLI, which must fail with exit 1 and `message` on stderr.
fn fails(dir: &Path, args: &[&str], message: &str) {
    let (code, stdout, stderr) = cli(dir, args);
    assert_eq!(code, 1, "{args:?}: stdout {stdout}, stderr {stderr}");
    assert!(stderr.contains(message), "{args:?}: {stderr}");
}

/// The CLI with `--json`, which must succeed with one JSON document.
fn json(dir: &Path, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    let out = ok(dir, &args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

/// `key value` lines of a `show` command, as a map.
fn shown(out: &str) -> std::collections::BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect()
}

/// The id in "<what> ID created".
fn created(out: &str, what: &str) -> String {
    let line = out.trim();
    line.strip_prefix(&format!("{what} "))
        .and_then(|l| l.strip_suffix(" created"))
        .unwrap_or_else(|| panic!("not a creation line: {out}"))
        .to_owned()
}

/// GET `path` on the TCP API with curl; (status, body).
fn curl(api: SocketAddr, token: Option<&str>, path: &str) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-w", "\n%{http_code}"]);
    if let Some(token) = token {
        cmd.args(["-H", &format!("X-Auth-Token: {token}")]);
    }
    let out = cmd
        .arg(format!("http://{api}/api/provd/0.2{path}"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (status.parse().expect("status"), body.to_owned())
}

#[test]
fn tenants_and_tokens_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_daemon, api) = start(dir);

    assert_eq!(
        created(
            &ok(dir, &["tenant", "add", "acme", "--name", "Acme Inc"]),
            "tenant"
        ),
        "acme"
    );
    let list = ok(dir, &["tenant", "list"]);
    let header = list.lines().next().unwrap();
    assert!(header.starts_with("ID "), "{list}");
    let acme = list.lines().find(|l| l.starts_with("acme ")).expect(&list);
    assert_eq!(
        acme.find("Acme Inc"),
        header.find("NAME"),
        "aligned:\n{list}"
    );
    assert!(list.lines().any(|l| l.starts_with("master ")), "{list}");
    let tenants = json(dir, &["tenant", "list"]);
    assert_eq!(tenants["tenants"].as_array().unwrap().len(), 2, "{tenants}");

    ok(dir, &["tenant", "set-key", "acme", "Key12345abc"]);
    let show = shown(&ok(dir, &["tenant", "show", "acme"]));
    assert_eq!(show["name"], "Acme Inc", "{show:?}");
    assert_eq!(show["has_provisioning_key"], "true", "{show:?}");
    fails(
        dir,
        &["tenant", "set-key", "acme", "short"],
        "a provisioning key has 8 to 256 characters among A-Z a-z 0-9 - $ ~ .",
    );
    ok(dir, &["tenant", "clear-key", "acme"]);
    let show = json(dir, &["tenant", "show", "acme"]);
    assert_eq!(show["tenant"]["has_provisioning_key"], false, "{show}");
    fails(dir, &["tenant", "add", "acme"], "(409 Conflict)");
    fails(dir, &["tenant", "show", "nobody"], "no tenant \"nobody\"");
    fails(dir, &["tenant", "delete", "master"], "cannot be deleted");

    // A token: its secret is printed once and works on the TCP API.
    let out = ok(
        dir,
        &[
            "token",
            "create",
            "--tenant",
            "acme",
            "--acl",
            "provd.dev_mgr.#",
            "--acl",
            "provd.cfg_mgr.#",
            "--expires",
            "3600",
            "--description",
            "PBX one",
        ],
    );
    assert!(out.contains("cannot be shown again"), "{out}");
    let fields = shown(&out);
    let secret = fields["secret"].clone();
    let id = fields["id"].clone();
    assert_eq!(fields["tenant"], "acme", "{out}");
    assert_eq!(fields["acl"], "provd.dev_mgr.#,provd.cfg_mgr.#", "{out}");
    assert!(secret.len() >= 20, "{out}");
    let (status, body) = curl(api, Some(&secret), "/dev_mgr/devices");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["devices"],
        serde_json::json!([])
    );
    assert_eq!(curl(api, None, "/dev_mgr/devices").0, 401);
    let (status, body) = curl(api, Some(&secret), "/tenants");
    assert_eq!(
        status, 403,
        "the token's ACL does not cover tenants: {body}"
    );

    let list = ok(dir, &["token", "list"]);
    let line = list.lines().find(|l| l.starts_with(&id)).expect(&list);
    assert!(
        line.contains("PBX one") && !list.contains(&secret),
        "{list}"
    );
    let tokens = json(dir, &["token", "list", "--tenant", "acme"]);
    assert_eq!(tokens["tokens"].as_array().unwrap().len(), 1, "{tokens}");
    assert!(!tokens.to_string().contains(&secret));
    let tokens = json(dir, &["token", "list", "--tenant", "master"]);
    assert_eq!(tokens["tokens"], serde_json::json!([]));

    // --json prints the API's answer, secret included.
    let made = json(dir, &["token", "create", "--tenant", "master"]);
    assert!(
        made["token"].as_str().is_some_and(|s| s.len() >= 20),
        "{made}"
    );
    assert_eq!(made["acl"], serde_json::json!(["provd.#"]), "{made}");
    assert_eq!(made["expires"], Value::Null, "{made}");

    ok(dir, &["token", "delete", &id]);
    let (status, body) = curl(api, Some(&secret), "/dev_mgr/devices");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("invalid token"), "{body}");
    fails(dir, &["token", "delete", &id], "no token");
    fails(
        dir,
        &["token", "create", "--tenant", "nobody"],
        "token.tenant: no tenant \"nobody\"",
    );

    ok(dir, &["tenant", "delete", "acme"]);
    fails(dir, &["tenant", "show", "acme"], "no tenant \"acme\"");
}

#[test]
fn devices_and_configs_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_daemon, _api) = start(dir);

    // Configs.
    let id = created(
        &ok(
            dir,
            &[
                "config",
                "add",
                "--id",
                "office",
                "--parent",
                "base",
                "--raw-json",
                r#"{"ntp_ip": "10.0.0.1", "sip_lines": {"1": {"username": "100"}}}"#,
            ],
        ),
        "config",
    );
    assert_eq!(id, "office");
    let file = dir.join("raw.json");
    std::fs::write(
        &file,
        r#"{"sip_lines": {"1": {"display_name": "Front desk"}}}"#,
    )
    .unwrap();
    ok(
        dir,
        &[
            "config",
            "add",
            "--id",
            "desk",
            "--parent",
            "office",
            "--raw-file",
            file.to_str().unwrap(),
        ],
    );
    let generated = created(&ok(dir, &["config", "add", "--parent", "base"]), "config");
    assert_eq!(generated.len(), 32, "a generated id: {generated}");

    let list = ok(dir, &["config", "list"]);
    let header = list.lines().next().unwrap();
    let desk = list.lines().find(|l| l.starts_with("desk ")).expect(&list);
    assert_eq!(desk.find("office"), header.find("PARENTS"), "{list}");
    let configs = json(dir, &["config", "list"]);
    assert_eq!(configs["configs"].as_array().unwrap().len(), 5, "{configs}");

    let show = ok(dir, &["config", "show", "desk"]);
    assert!(
        show.contains("  sip_lines.1.display_name = Front desk"),
        "{show}"
    );
    assert_eq!(shown(&show)["parent_ids"], "office", "{show}");
    let raw = ok(dir, &["config", "raw", "desk"]);
    for line in [
        "ntp_ip = 10.0.0.1",
        "sip_lines.1.username = 100",
        "sip_lines.1.display_name = Front desk",
    ] {
        assert!(raw.contains(line), "inherited {line:?}: {raw}");
    }
    let raw = json(dir, &["config", "raw", "desk"]);
    assert_eq!(raw["raw_config"]["sip_lines"]["1"]["username"], "100");
    let show = json(dir, &["config", "show", "office"]);
    assert_eq!(show["config"]["raw_config"]["ntp_ip"], "10.0.0.1");

    fails(
        dir,
        &["config", "add", "--id", "x", "--parent", "nope"],
        "parent_ids: no config \"nope\"",
    );
    fails(
        dir,
        &["config", "add", "--id", "x", "--raw-json", "[1]"],
        "must be a JSON object",
    );
    fails(
        dir,
        &["config", "add", "--id", "x", "--raw-json", "{"],
        "--raw-json: not JSON",
    );
    fails(dir, &["config", "delete", "office"], "(409 Conflict)");
    fails(dir, &["config", "delete", "base"], "(403 Forbidden)");

    // Devices.
    let device = created(
        &ok(
            dir,
            &[
                "device",
                "add",
                "--mac",
                "80:5E:C0:11:22:33",
                "--ip",
                "10.0.0.5",
                "--plugin",
                "yealink",
                "--config-id",
                "desk",
                "--description",
                "hall",
            ],
        ),
        "device",
    );
    let list = ok(dir, &["device", "list"]);
    let mut lines = list.lines();
    let header = lines.next().unwrap();
    let columns: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(
        columns,
        ["ID", "MAC", "IP", "VENDOR", "MODEL", "PLUGIN", "CONFIG", "TENANT"]
    );
    let row = lines.next().expect(&list);
    assert!(row.starts_with(&device), "{list}");
    for (value, column) in [
        ("80:5e:c0:11:22:33", "MAC"),
        ("10.0.0.5", "IP"),
        ("yealink", "PLUGIN"),
        ("desk", "CONFIG"),
        ("master", "TENANT"),
    ] {
        assert_eq!(row.find(value), header.find(column), "{column}:\n{list}");
    }
    let devices = json(dir, &["device", "list"]);
    assert_eq!(devices["devices"][0]["id"], device.as_str());

    let show = shown(&ok(dir, &["device", "show", &device]));
    assert_eq!(show["mac"], "80:5e:c0:11:22:33", "{show:?}");
    assert_eq!(show["description"], "hall", "{show:?}");
    assert_eq!(show["configured"], "true", "{show:?}");

    // Only the given fields change; an empty value clears one.
    let out = ok(
        dir,
        &[
            "device",
            "edit",
            &device,
            "--description",
            "front desk",
            "--ip",
            "",
        ],
    );
    assert_eq!(out.trim(), format!("device {device} updated"));
    let after = json(dir, &["device", "show", &device])["device"].clone();
    assert_eq!(after["description"], "front desk", "{after}");
    assert_eq!(after["ip"], Value::Null, "{after}");
    assert_eq!(after["mac"], "80:5e:c0:11:22:33", "{after}");
    assert_eq!(after["plugin"], "yealink", "{after}");
    assert_eq!(after["config"], "desk", "{after}");
    fails(dir, &["device", "edit", &device], "nothing to change");
    fails(
        dir,
        &["device", "edit", &device, "--config-id", "nope"],
        "config: no config \"nope\"",
    );
    fails(
        dir,
        &["device", "add", "--mac", "80:5e:c0:11:22:33"],
        "MAC 80:5e:c0:11:22:33 is already in use (409 Conflict)",
    );
    fails(dir, &["device", "add", "--mac", "zz"], "mac:");

    // Another tenant: it claims the default tenant's device by updating it with its config.
    ok(dir, &["tenant", "add", "acme"]);
    ok(
        dir,
        &[
            "config", "add", "--id", "acme-cfg", "--parent", "base", "--tenant", "acme",
        ],
    );
    ok(
        dir,
        &[
            "device",
            "edit",
            &device,
            "--config-id",
            "acme-cfg",
            "--tenant",
            "acme",
        ],
    );
    let mine = json(dir, &["device", "list", "--tenant", "acme"]);
    assert_eq!(mine["devices"][0]["tenant_uuid"], "acme", "{mine}");
    assert_eq!(
        json(dir, &["device", "list"])["devices"],
        serde_json::json!([])
    );
    let all = ok(dir, &["device", "list", "--all"]);
    assert!(all.contains(&device), "{all}");
    // The default tenant is above acme: it reaches acme's device by id.
    let shown = json(dir, &["device", "show", &device]);
    assert_eq!(shown["device"]["tenant_uuid"], "acme", "{shown}");
    fails(
        dir,
        &["device", "show", &device, "--tenant", "nobody"],
        "no tenant \"nobody\"",
    );

    // Deletion.
    let out = ok(dir, &["device", "delete", &device, "--tenant", "acme"]);
    assert_eq!(out.trim(), format!("device {device} deleted"));
    fails(
        dir,
        &["device", "show", &device, "--tenant", "acme"],
        &format!("no device \"{device}\" (404 Not Found)"),
    );
    fails(dir, &["device", "delete", &device], "no device");
    ok(dir, &["config", "delete", "desk"]);
    ok(dir, &["config", "delete", "office"]);
    fails(dir, &["config", "show", "office"], "no config \"office\"");
}

#[test]
fn an_unreachable_socket_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    write_config(dir, "");
    let socket = dir.join("api.sock");
    let (code, stdout, stderr) = cli(dir, &["device", "list"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to {}", socket.display()))
            && stderr.contains("is provisiond running"),
        "{stderr}"
    );

    // A socket file that nobody listens on (a daemon that died).
    let stale = dir.join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let (code, _, stderr) = run(command(dir)
        .args(["tenant", "list", "--socket"])
        .arg(&stale));
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to {}", stale.display()))
            && stderr.contains("not running"),
        "{stderr}"
    );

    // A configuration that does not load.
    let (code, _, stderr) = run(command(dir)
        .args(["token", "list", "--config"])
        .arg(dir.join("missing.toml")));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("[api] socket"), "{stderr}");
}

/// The throwaway user of the permission test: created when missing.
const STRANGER: &str = "provisiond-cli-test";

#[test]
fn an_unprivileged_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("note: not root: skipping the unprivileged-user test (it needs a second user)");
        return;
    }
    let user = match nix::unistd::User::from_name(STRANGER).unwrap() {
        Some(user) => user,
        None => {
            let out = Command::new("useradd")
                .args(["--system", "--no-create-home", STRANGER])
                .output()
                .expect("useradd");
            // A parallel run may have created it meanwhile.
            nix::unistd::User::from_name(STRANGER)
                .unwrap()
                .unwrap_or_else(|| panic!("useradd {STRANGER}: {out:?}"))
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (mut daemon, _api) = start(dir);
    use std::os::unix::fs::PermissionsExt;
    // The stranger may traverse the directory (but not list it) to reach the socket.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let socket = dir.join("api.sock");
    let as_stranger = || {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", user.uid))
            .arg(format!("--regid={}", user.gid))
            .arg("--clear-groups")
            .arg(BIN)
            .args(["device", "list", "--socket"])
            .arg(&socket)
            .current_dir(dir)
            .env("PROVISIOND_CONFIG", dir.join("absent.toml"))
            .stdin(Stdio::null());
        let out = cmd.output().expect("setpriv (util-linux)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // The socket is 0660: the kernel refuses the connection.
    let (code, stdout, stderr) = as_stranger();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("cannot connect to {}", socket.display()))
            && stderr.contains("permission denied"),
        "{stderr}"
    );

    // Even when the file lets it connect, the daemon refuses the peer by its credentials.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, stdout, stderr) = as_stranger();
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("refused this user") && stderr.contains("group provisiond"),
        "{stderr}"
    );
    let logged = daemon.expect_line(&["local admin socket: peer refused"]);
    assert!(logged.contains(&format!("uid={}", user.uid)), "{logged}");

    // Root still gets through.
    assert!(ok(dir, &["device", "list"]).starts_with("ID "));
}

#[test]
fn a_long_device_list_is_printed_whole_as_it_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // More devices than the table holds to size its columns, written before the daemon runs.
    let n = 1100;
    {
        let store = provisiond::store::Store::open(&dir.join("data")).unwrap();
        store.ensure_defaults("master").unwrap();
        for i in 0..n {
            let mut d = provisiond::model::Device::new(format!("dev{i:05}"), "master");
            d.mac = Some(
                format!("00:15:65:00:{:02x}:{:02x}", i / 256, i % 256)
                    .parse()
                    .unwrap(),
            );
            // Later rows are wider than the first ones: they print, unaligned.
            d.vendor = Some(
                if i < 1050 {
                    "Snom"
                } else {
                    "Yealink Network Technology"
                }
                .into(),
            );
            store.create_device(&d).unwrap();
        }
    }
    let (_daemon, _api) = start(dir);
    let out = ok(dir, &["device", "list"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), n + 1, "a header and one line per device");
    assert!(lines[0].starts_with("ID"), "{}", lines[0]);
    for (i, line) in lines[1..].iter().enumerate() {
        assert!(line.starts_with(&format!("dev{i:05} ")), "{line}");
    }
    assert!(
        lines[n].contains("Yealink Network Technology"),
        "{}",
        lines[n]
    );
    let all = json(dir, &["device", "list"]);
    let ids: Vec<&str> = all["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids.len(), n);
    assert_eq!(ids[n - 1], format!("dev{:05}", n - 1));
}
