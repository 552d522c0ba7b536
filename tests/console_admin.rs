//! The console's administration pages over HTTP (curl against the real daemon): tenants and
//! their provisioning keys, console users, API tokens, plugins (installed from a local signed
//! repository, followed to completion through the operation page, removed with and without
//! force) and DHCP pools and leases. Each page renders, each action shows its result, a viewer
//! gets no buttons and 403 by URL, and a tenant's admin never reaches another tenant's things.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use common::console::*;
use common::*;
use serde_json::json;

/// Every form and button of an admin, none of which a viewer may see.
const ACTION_MARKS: &[&str] = &[
    "create-tenant",
    "delete-tenant",
    "set-key",
    "create-user",
    "delete-user",
    "create-token",
    "delete-token",
    "update-index",
    "install-plugin",
    "remove-plugin",
];

#[test]
fn tenants_keys_users_and_tokens() {
    let c = Console::start("");
    for tenant in ["acme", "globex"] {
        c.cli(&["tenant", "create", tenant]);
    }
    c.user("root", "master", "admin");
    c.user("vic", "master", "viewer");
    c.user("alice", "acme", "admin");
    let admin = c.sign_in("root");

    // Every page renders for the master tenant's admin.
    for (path, mark) in [
        ("/console/tenants", "id=\"tenants\""),
        ("/console/users", "id=\"users\""),
        ("/console/tokens", "No API token."),
        ("/console/plugins", "id=\"installed\""),
        ("/console/dhcp", "id=\"dhcp-off\""),
    ] {
        let (status, page) = c.get(&admin, path);
        assert_eq!(status, 200, "{path}: {page}");
        assert!(page.contains(mark), "{path}: {page}");
    }
    let (_, page) = c.get(&admin, "/console/");
    for link in [
        "/console/tenants",
        "/console/users",
        "/console/tokens",
        "/console/plugins",
        "/console/dhcp",
    ] {
        assert!(page.contains(&format!("href=\"{link}\"")), "{link}: {page}");
    }

    // Tenants: a child of acme, shown in the tree; a refused id shown with the form as typed.
    let (status, head, page) = c.post_csrf(
        &admin,
        "/console/tenants",
        &[
            ("parent", "acme"),
            ("id", "acme-east"),
            ("name", "Acme East"),
        ],
    );
    assert_eq!(status, 303, "{page}");
    assert_eq!(location_of(&head), "/console/tenants");
    let (_, page) = c.get(&admin, "/console/tenants");
    assert!(page.contains("id=\"tenant-acme-east\""), "{page}");
    assert!(page.contains("Acme East"), "{page}");
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/tenants",
        &[("id", "bad id"), ("name", "Bad")],
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("tenant.id"), "{page}");
    assert!(
        page.contains("value=\"bad id\""),
        "the form keeps what was typed: {page}"
    );

    // Provisioning keys: set, refused when malformed, generated, removed.
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/tenants/acme/key",
        &[("key", "acme-key-0001"), ("do", "set")],
    );
    assert_eq!(status, 303, "{page}");
    let (_, page) = c.get(&admin, "/console/tenants");
    assert!(page.contains("value=\"acme-key-0001\""), "{page}");
    let reply = c.api("GET", "/configure/provisioning_key", Some("acme"), None);
    assert_eq!(
        reply.body["param"]["value"], "acme-key-0001",
        "the API sees it"
    );
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/tenants/acme/key",
        &[("key", "short"), ("do", "set")],
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("8 to 256 characters"), "{page}");
    let (status, _, _) = c.post_csrf(&admin, "/console/tenants/globex/key", &[("do", "generate")]);
    assert_eq!(status, 303);
    let globex_key = c
        .api("GET", "/configure/provisioning_key", Some("globex"), None)
        .body["param"]["value"]
        .as_str()
        .expect("a generated key")
        .to_owned();
    assert!(globex_key.len() >= 8);
    let (status, _, _) = c.post_csrf(
        &admin,
        "/console/tenants/acme-east/key",
        &[("key", "east-key-0001"), ("do", "set")],
    );
    assert_eq!(status, 303);
    let (status, _, _) = c.post_csrf(&admin, "/console/tenants/acme-east/key", &[("do", "clear")]);
    assert_eq!(status, 303);
    let reply = c.api(
        "GET",
        "/configure/provisioning_key",
        Some("acme-east"),
        None,
    );
    assert_eq!(reply.body["param"]["value"], serde_json::Value::Null);

    // A tenant with a device is not deleted: the confirmation page, then the store's reason.
    let reply = c.api(
        "POST",
        "/dev_mgr/devices",
        Some("globex"),
        Some(json!({"device": {"mac": "00:15:65:0a:0b:0c"}})),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let (status, _, page) = c.post_csrf(&admin, "/console/tenants/globex/delete", &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Delete tenant globex?"), "{page}");
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/tenants/globex/delete",
        &[("confirm", "yes")],
    );
    assert_eq!(status, 409, "{page}");
    assert!(page.contains("1 device(s)"), "{page}");
    assert!(
        page.contains("id=\"tenant-globex\""),
        "the list is shown again: {page}"
    );
    // An empty one is.
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/tenants/acme-east/delete",
        &[("confirm", "yes")],
    );
    assert_eq!(status, 303, "{page}");
    let (_, page) = c.get(&admin, "/console/tenants");
    assert!(!page.contains("tenant-acme-east"), "{page}");

    // Console users: created with a role and a password (who then signs in), refused with
    // the rule, deleted after a confirmation.
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/users",
        &[
            ("name", "carol"),
            ("tenant", "acme"),
            ("role", "operator"),
            ("password", "carol-password"),
        ],
    );
    assert_eq!(status, 303, "{page}");
    let (_, page) = c.get(&admin, "/console/users");
    assert!(page.contains("id=\"user-carol\""), "{page}");
    c.sign_in("carol");
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/users",
        &[
            ("name", "dave"),
            ("tenant", "acme"),
            ("role", "viewer"),
            ("password", "short"),
        ],
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("password: 8 to 1024 characters"), "{page}");
    assert!(page.contains("value=\"dave\""), "{page}");
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/users",
        &[
            ("name", "carol"),
            ("tenant", "acme"),
            ("role", "viewer"),
            ("password", "carol-password"),
        ],
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("already exists"), "{page}");
    let (status, _, page) = c.post_csrf(&admin, "/console/users/carol/delete", &[]);
    assert_eq!(status, 200);
    assert!(page.contains("Delete user carol?"), "{page}");
    let (status, _, _) = c.post_csrf(&admin, "/console/users/carol/delete", &[("confirm", "yes")]);
    assert_eq!(status, 303);
    let reply = c.api("GET", "/users", None, None);
    assert!(
        !reply.body.to_string().contains("carol"),
        "{:?}",
        reply.body
    );

    // API tokens: the secret is shown once and works on the API; deleted after a confirmation.
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/tokens",
        &[
            ("tenant", "acme"),
            ("acl", "provd.dev_mgr.#\nprovd.read"),
            ("description", "ci robot"),
        ],
    );
    assert_eq!(status, 200, "{page}");
    let secret = page
        .split("id=\"token-secret\">")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .expect(&page)
        .to_owned();
    assert!(secret.len() >= 32, "{secret}");
    let token_api = |secret: &str| {
        curl(
            &[],
            &format!("{}/0.2/dev_mgr/devices", c.base),
            "GET",
            &[
                format!("Accept: {MEDIA}"),
                format!("X-Auth-Token: {secret}"),
            ],
            None,
        )
        .status
    };
    assert_eq!(token_api(&secret), 200);
    let (_, page) = c.get(&admin, "/console/tokens");
    assert!(!page.contains(&secret), "the secret is never shown again");
    assert!(page.contains("ci robot"), "{page}");
    let listed = c.api("GET", "/tokens", None, None);
    let id = listed.body["tokens"][0]["id"].as_str().unwrap().to_owned();
    assert!(page.contains(&format!("id=\"token-{id}\"")), "{page}");
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/tokens",
        &[("tenant", "acme"), ("expires_in", "soon")],
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("expires_in"), "{page}");
    let (status, _, page) = c.post_csrf(&admin, &format!("/console/tokens/{id}/delete"), &[]);
    assert_eq!(status, 200);
    assert!(page.contains("Delete token"), "{page}");
    let (status, _, _) = c.post_csrf(
        &admin,
        &format!("/console/tokens/{id}/delete"),
        &[("confirm", "yes")],
    );
    assert_eq!(status, 303);
    assert_eq!(token_api(&secret), 401);

    // A viewer of the default tenant reads the pages but sees no action, and gets 403 by URL.
    let viewer = c.sign_in("vic");
    for path in [
        "/console/tenants",
        "/console/users",
        "/console/tokens",
        "/console/plugins",
    ] {
        let (status, page) = c.get(&viewer, path);
        assert_eq!(status, 200, "{path}: {page}");
        for mark in ACTION_MARKS {
            assert!(
                !page.contains(mark),
                "{path} shows {mark} to a viewer: {page}"
            );
        }
        assert!(
            !page.contains("acme-key-0001"),
            "keys are for admins: {page}"
        );
    }
    for (path, form) in [
        ("/console/tenants", vec![("id", "x1")]),
        ("/console/tenants/acme/delete", vec![("confirm", "yes")]),
        ("/console/tenants/acme/key", vec![("do", "clear")]),
        (
            "/console/users",
            vec![
                ("name", "x1"),
                ("tenant", "acme"),
                ("role", "admin"),
                ("password", "long-enough-1"),
            ],
        ),
        ("/console/users/alice/delete", vec![("confirm", "yes")]),
        ("/console/tokens", vec![("tenant", "master")]),
        ("/console/tokens/abc/delete", vec![("confirm", "yes")]),
        ("/console/plugins", vec![]),
        ("/console/plugins/yealink/install", vec![]),
        ("/console/plugins/yealink/remove", vec![("confirm", "yes")]),
        ("/console/plugins/yealink/packages/fw/install", vec![]),
    ] {
        let (status, _, page) = c.post_csrf(&viewer, path, &form);
        assert_eq!(status, 403, "{path}: {page}");
    }
    let reply = c.api("GET", "/configure/provisioning_key", Some("acme"), None);
    assert_eq!(
        reply.body["param"]["value"], "acme-key-0001",
        "nothing changed"
    );

    // Tenant acme's admin: its subtree only. Globex, master and their users are 404 by URL;
    // the server's tokens, plugins and DHCP are the default tenant's (403).
    let alice = c.sign_in("alice");
    let (status, page) = c.get(&alice, "/console/tenants");
    assert_eq!(status, 200);
    assert!(page.contains("id=\"tenant-acme\""), "{page}");
    assert!(page.contains("acme-key-0001"), "its own key: {page}");
    for other in ["tenant-globex", "tenant-master", globex_key.as_str()] {
        assert!(!page.contains(other), "{other}: {page}");
    }
    let (_, page) = c.get(&alice, "/console/users");
    assert!(page.contains("id=\"user-alice\""), "{page}");
    assert!(
        !page.contains("user-vic") && !page.contains("user-root"),
        "{page}"
    );
    assert!(!page.contains("href=\"/console/tokens\""), "{page}");
    for path in [
        "/console/tokens",
        "/console/plugins",
        "/console/plugins/yealink",
        "/console/dhcp",
        "/console/operations/1",
    ] {
        let (status, page) = c.get(&alice, path);
        assert_eq!(status, 403, "{path}: {page}");
    }
    for (path, form, expected) in [
        ("/console/tenants/globex/delete", vec![], 404),
        (
            "/console/tenants/globex/delete",
            vec![("confirm", "yes")],
            404,
        ),
        (
            "/console/tenants/master/delete",
            vec![("confirm", "yes")],
            404,
        ),
        ("/console/tenants/globex/key", vec![("do", "clear")], 404),
        (
            "/console/tenants/nonexistent/key",
            vec![("key", "abcdefgh12"), ("do", "set")],
            404,
        ),
        ("/console/users/vic/delete", vec![], 404),
        ("/console/users/root/delete", vec![("confirm", "yes")], 404),
        ("/console/tokens", vec![("tenant", "acme")], 403),
        ("/console/tokens/abc/delete", vec![("confirm", "yes")], 403),
        ("/console/plugins", vec![], 403),
    ] {
        let (status, _, page) = c.post_csrf(&alice, path, &form);
        assert_eq!(status, expected, "{path}: {page}");
        assert!(!page.contains(&globex_key), "{path}: {page}");
    }
    // A child under another tenant, a user there: refused, nothing made.
    let (status, _, page) = c.post_csrf(
        &alice,
        "/console/tenants",
        &[("parent", "globex"), ("id", "sneaky")],
    );
    assert_eq!(status, 400, "{page}");
    let (status, _, page) = c.post_csrf(
        &alice,
        "/console/users",
        &[
            ("name", "mallory"),
            ("tenant", "globex"),
            ("role", "admin"),
            ("password", "mallory-password"),
        ],
    );
    assert_eq!(status, 400, "{page}");
    let reply = c.api("GET", "/users", None, None);
    assert!(
        !reply.body.to_string().contains("mallory"),
        "{:?}",
        reply.body
    );
    let reply = c.api("GET", "/tenants", None, None);
    assert!(
        !reply.body.to_string().contains("sneaky"),
        "{:?}",
        reply.body
    );
    let reply = c.api("GET", "/configure/provisioning_key", Some("globex"), None);
    assert_eq!(
        reply.body["param"]["value"],
        globex_key.as_str(),
        "untouched"
    );
    // Its own tenant is not deleted from below (the API's rule), and no button offers it.
    let (status, _, page) = c.post_csrf(
        &alice,
        "/console/tenants/acme/delete",
        &[("confirm", "yes")],
    );
    assert_eq!(status, 403, "{page}");
}

/// A static file server on 127.0.0.1 over `root` (one request per connection).
fn serve_dir(root: PathBuf) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read(&mut byte).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/");
                let file = path.strip_prefix("/repo/").unwrap_or("");
                match std::fs::read(root.join(file)) {
                    Ok(body) if !file.is_empty() && !file.contains("..") => {
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(&body);
                    }
                    _ => {
                        let _ = stream.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            });
        }
    });
    addr
}

fn manifest_version(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap()
        .to_owned()
}

#[test]
fn plugins_install_from_a_repository_through_the_pages() {
    // A signed repository (built with `provisiond repo`, as tests/plugin_repo.rs does) that
    // offers yealink one version ahead of the built-in one.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let repo = d.join("repository");
    std::fs::create_dir_all(&repo).unwrap();
    let (code, _, err) = run(command(d).args(["repo", "keygen", "signer"]));
    assert_eq!(code, 0, "{err}");
    let keys = d.join("trusted-keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::copy(d.join("signer.pub"), keys.join("signer.pub")).unwrap();
    let source = d.join("sources");
    let yealink = plugin_copy(&source, "yealink", "");
    let manifest = yealink.join("plugin.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let built_in = manifest_version(&text);
    let ahead = format!("{built_in}.1");
    std::fs::write(
        &manifest,
        text.replacen(
            &format!("version = \"{built_in}\""),
            &format!("version = \"{ahead}\""),
            1,
        ),
    )
    .unwrap();
    let (code, _, err) = run(command(d)
        .args(["repo", "pack"])
        .arg(&yealink)
        .arg("--out")
        .arg(&repo));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(command(d)
        .args(["repo", "index"])
        .arg(&repo)
        .arg("--sign")
        .arg(d.join("signer.key")));
    assert_eq!(code, 0, "{err}");
    let server = serve_dir(repo.clone());

    let mut c = Console::start_in(
        dir,
        &format!("[plugins]\ntrusted_keys_dir = \"{}\"\n", keys.display()),
    );
    let reply = c.api(
        "PUT",
        "/configure/plugin_server",
        None,
        Some(json!({"param": {"value": format!("http://{server}/repo/")}})),
    );
    assert_eq!(reply.status, 204, "{:?}", reply.body);
    c.user("root", "master", "admin");
    c.user("vic", "master", "viewer");
    let admin = c.sign_in("root");

    let (status, page) = c.get(&admin, "/console/plugins");
    assert_eq!(status, 200);
    assert!(page.contains("No plugin index yet"), "{page}");
    assert!(
        page.contains("id=\"plugin-yealink\""),
        "the built-in one is listed: {page}"
    );
    // Installing before an update: refused, said on the page.
    let (status, _, page) = c.post_csrf(&admin, "/console/plugins/yealink/install", &[]);
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("update it first"), "{page}");

    // Update the index, followed through the operation page to its end.
    let (status, head, page) = c.post_csrf(&admin, "/console/plugins", &[]);
    assert_eq!(status, 303, "{page}");
    let done = c.follow(&admin, &location_of(&head));
    assert!(done.contains("class=\"state success\""), "{done}");
    assert!(
        done.contains("href=\"&#x2F;console&#x2F;plugins\" id=\"back\""),
        "{done}"
    );
    let (_, page) = c.get(&admin, "/console/plugins");
    assert!(page.contains("id=\"offer-yealink\""), "{page}");
    assert!(page.contains(&ahead), "{page}");
    assert!(page.contains("install-plugin"), "{page}");

    // Install: the operation runs to success, the plugin in use is the repository's.
    let (status, head, page) = c.post_csrf(&admin, "/console/plugins/yealink/install", &[]);
    assert_eq!(status, 303, "{page}");
    let location = location_of(&head);
    assert!(location.contains("back=%2Fconsole%2Fplugins"), "{location}");
    let done = c.follow(&admin, &location);
    assert!(done.contains("class=\"state success\""), "{done}");
    assert!(done.contains("download|success"), "{done}");
    let (_, page) = c.get(&admin, "/console/plugins");
    let row = page
        .split("id=\"plugin-yealink\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect(&page)
        .to_owned();
    assert!(row.contains(&ahead), "{row}");
    assert!(row.contains("remove-plugin"), "{row}");
    let reply = c.api("GET", "/pg_mgr/install/installed", None, None);
    assert_eq!(reply.body["pkgs"]["yealink"]["version"], ahead.as_str());

    // Its page renders (with or without packages) and refuses an unknown package there.
    let (status, page) = c.get(&admin, "/console/plugins/yealink");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Plugin yealink"), "{page}");
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/plugins/yealink/packages/no-such/install",
        &[],
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("declares no package"), "{page}");
    let (status, _) = c.get(&admin, "/console/plugins/no-such-plugin");
    assert_eq!(status, 404);
    let (status, _) = c.get(&admin, "/console/operations/999999");
    assert_eq!(status, 404);

    // A viewer sees the plugins, no button.
    let viewer = c.sign_in("vic");
    let (status, page) = c.get(&viewer, "/console/plugins");
    assert_eq!(status, 200);
    assert!(page.contains(&ahead), "{page}");
    for mark in [
        "update-index",
        "install-plugin",
        "upgrade-plugin",
        "remove-plugin",
    ] {
        assert!(!page.contains(mark), "{mark}: {page}");
    }

    // Removal: a device uses the plugin, so the confirmation names the count and offers
    // force; without it the removal is refused with the count, with it the plugin goes.
    let reply = c.api(
        "POST",
        "/dev_mgr/devices",
        None,
        Some(json!({"device": {"mac": "00:15:65:01:02:03", "plugin": "yealink"}})),
    );
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let (status, _, page) = c.post_csrf(&admin, "/console/plugins/yealink/remove", &[]);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("1 device(s) use this plugin"), "{page}");
    assert!(page.contains("id=\"force\""), "{page}");
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/plugins/yealink/remove",
        &[("confirm", "yes")],
    );
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("1 device(s) use plugin yealink"), "{page}");
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/plugins/yealink/remove",
        &[("confirm", "yes"), ("force", "on")],
    );
    assert_eq!(status, 303, "{page}");
    let reply = c.api("GET", "/pg_mgr/install/installed", None, None);
    assert_eq!(
        reply.body["pkgs"]["yealink"]["version"],
        built_in.as_str(),
        "the built-in plugin took over"
    );
}

#[test]
fn dhcp_pools_and_leases() {
    // Off: the page says so.
    let off = Console::start("");
    off.user("root", "master", "admin");
    let jar = off.sign_in("root");
    let (status, page) = off.get(&jar, "/console/dhcp");
    assert_eq!(status, 200);
    assert!(page.contains("The DHCP responder is off"), "{page}");
    drop(off);

    let port = free_udp_port();
    let c = Console::start(&format!(
        "[dhcp]\nmode = \"server\"\nport = {port}\n[[dhcp.pools]]\nsubnet = \"10.95.0.0/16\"\n\
         ranges = [{{ start = \"10.95.0.10\", end = \"10.95.0.250\" }}]\nrouter = \"10.95.0.1\"\n"
    ));
    c.cli(&["tenant", "create", "acme"]);
    c.user("root", "master", "admin");
    c.user("alice", "acme", "admin");
    let admin = c.sign_in("root");
    let (status, page) = c.get(&admin, "/console/dhcp");
    assert_eq!(status, 200, "{page}");
    // Tera escapes "/" too.
    assert!(page.contains("10.95.0.0&#x2F;16"), "{page}");
    assert!(page.contains("10.95.0.10 – 10.95.0.250"), "{page}");
    assert!(page.contains("No lease."), "{page}");

    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let mac = [0x00, 0x15, 0x65, 0x44, 0x55, 0x66];
    let leased = relayed_dora(server, "10.95.0.1".parse().unwrap(), mac, 0x0c0a_0501, None);
    let (_, page) = c.get(&admin, "/console/dhcp");
    assert!(page.contains(&leased.to_string()), "{page}");
    assert!(page.contains("00:15:65:44:55:66"), "{page}");
    assert!(page.contains("bound"), "{page}");
    // Found by MAC (any spelling) and by address; another address has none.
    for q in ["00-15-65-44-55-66", &leased.to_string()] {
        let (status, page) = c.get(&admin, &format!("/console/dhcp?q={q}"));
        assert_eq!(status, 200, "{page}");
        assert!(page.contains("00:15:65:44:55:66"), "{q}: {page}");
    }
    let (_, page) = c.get(&admin, "/console/dhcp?q=10.95.9.9");
    assert!(page.contains("No lease for 10.95.9.9"), "{page}");
    let (status, page) = c.get(&admin, "/console/dhcp?q=nonsense");
    assert_eq!(status, 400);
    assert!(page.contains("MAC address"), "{page}");
    let (_, page) = c.get(&admin, "/console/dhcp?page=1");
    assert!(page.contains("No lease on this page"), "{page}");
    assert!(page.contains("id=\"prev\""), "{page}");
    // A page number at usize::MAX is clamped, not overflowed into a panic.
    let (status, page) = c.get(&admin, "/console/dhcp?page=18446744073709551615");
    assert!(status == 200 || status == 400, "{status}: {page}");
    assert!(page.contains("No lease on this page"), "{page}");

    // Leases are the server's: another tenant's admin gets 403 and no link.
    let alice = c.sign_in("alice");
    let (status, page) = c.get(&alice, "/console/dhcp");
    assert_eq!(status, 403, "{page}");
    assert!(!page.contains("00:15:65:44:55:66"));
    let (_, page) = c.get(&alice, "/console/");
    assert!(!page.contains("href=\"/console/dhcp\""), "{page}");
}

#[test]
fn plugin_packages_with_a_licence_through_the_pages() {
    // An admin copy of yealink that declares one raw firmware package under a licence that
    // must be accepted, served by this test on loopback.
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let firmware: &[u8] = b"T54W firmware version 1";
    std::fs::write(files.join("fw-1.rom"), firmware).unwrap();
    let server = serve_dir(files);
    plugin_copy(
        &dir.path().join("data/plugins"),
        "yealink",
        &format!(
            "[[packages]]\nid = \"fw\"\nversion = \"1\"\ndescription = \"T54W firmware\"\n\
             url = \"http://{server}/repo/fw-1.rom\"\nsha256 = \"{}\"\nsize = {}\nformat = \"raw\"\n\
             files = [{{ to = \"fw.rom\" }}]\nlicence_url = \"http://vendor.example/licence.html\"\n\
             licence_acceptance_required = true\n",
            sha256_hex(firmware),
            firmware.len()
        ),
    );
    let mut c = Console::start_in(dir, "");
    c.user("root", "master", "admin");
    let admin = c.sign_in("root");

    let (status, page) = c.get(&admin, "/console/plugins/yealink");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("id=\"package-fw\""), "{page}");
    assert!(
        page.contains("id=\"accept-fw\""),
        "a licence checkbox: {page}"
    );
    assert!(page.contains("install-package"), "{page}");
    // Without the licence accepted: refused on the page, naming the licence.
    let (status, _, page) =
        c.post_csrf(&admin, "/console/plugins/yealink/packages/fw/install", &[]);
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("vendor.example"), "{page}");
    // Accepted: the operation runs to success, back to the plugin's page.
    let (status, head, page) = c.post_csrf(
        &admin,
        "/console/plugins/yealink/packages/fw/install",
        &[("accept_licence", "on")],
    );
    assert_eq!(status, 303, "{page}");
    let done = c.follow(&admin, &location_of(&head));
    assert!(done.contains("class=\"state success\""), "{done}");
    // The way back (Tera escapes "/" in attributes; browsers read it as "/").
    assert!(
        done.contains("href=\"&#x2F;console&#x2F;plugins&#x2F;yealink\" id=\"back\""),
        "{done}"
    );
    let (_, page) = c.get(&admin, "/console/plugins/yealink");
    let row = page
        .split("id=\"package-fw\"")
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .expect(&page)
        .to_owned();
    assert!(row.contains("uninstall-package"), "{row}");
    assert!(
        !row.contains("class=\"install-package"),
        "installed at the declared version: {row}"
    );
    let reply = c.api(
        "GET",
        "/pg_mgr/plugins/yealink/install/installed",
        None,
        None,
    );
    assert_eq!(reply.body["pkgs"]["fw"]["version"], "1", "{:?}", reply.body);

    // Uninstalled after a confirmation page.
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/plugins/yealink/packages/fw/uninstall",
        &[],
    );
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Uninstall package fw of yealink?"), "{page}");
    let (status, _, page) = c.post_csrf(
        &admin,
        "/console/plugins/yealink/packages/fw/uninstall",
        &[("confirm", "yes")],
    );
    assert_eq!(status, 303, "{page}");
    let reply = c.api(
        "GET",
        "/pg_mgr/plugins/yealink/install/installed",
        None,
        None,
    );
    assert_eq!(reply.body, json!({"pkgs": {}}));
    let (_, page) = c.get(&admin, "/console/plugins/yealink");
    assert!(page.contains("class=\"install-package"), "{page}");
}

/// Signs in with an API token through the form; (status, headers, page) and the cookie jar.
fn sign_in_token(c: &Console, jar_name: &str, secret: &str) -> (u16, String, String, PathBuf) {
    let jar = c.dir().join(jar_name);
    let signin = format!("{}/console/signin", c.base);
    let (status, _, page) = req(&jar, "GET", &signin, &[]);
    assert_eq!(status, 200, "{page}");
    let csrf = csrf_of(&page);
    let (status, head, page) = req(&jar, "POST", &signin, &[("csrf", &csrf), ("token", secret)]);
    (status, head, page, jar)
}

/// The request goes to the sign-in page: no session behind the jar's cookie.
fn sent_to_sign_in(c: &Console, jar: &std::path::Path, path: &str) {
    let (status, head, page) = req(jar, "GET", &format!("{}{path}", c.base), &[]);
    assert_eq!(status, 303, "{path}: {page}");
    assert_eq!(location_of(&head), "/console/signin", "{path}");
}

#[test]
fn token_roles_cover_the_rest_acls_and_deleted_users_sessions_end() {
    let c = Console::start("");
    let token = |acl: &[&str]| -> String {
        let made = c.api(
            "POST",
            "/tokens",
            None,
            Some(json!({ "token": { "tenant": "master", "acl": acl } })),
        );
        assert_eq!(made.status, 201, "{:?}", made.body);
        made.body["token"].as_str().unwrap().to_owned()
    };
    let tokens = || {
        c.api("GET", "/tokens", None, None).body["tokens"]
            .as_array()
            .unwrap()
            .len()
    };
    let users = || {
        c.api("GET", "/users", None, None).body["users"]
            .as_array()
            .unwrap()
            .len()
    };

    // Devices and provisioning only: the console would show it tokens and users that the API
    // refuses it, so it does not sign in, and nothing is created through the pages.
    let dev_prov = token(&["provd.dev_mgr.#", "provd.prov_mgr.#"]);
    let (status, _, page, jar) = sign_in_token(&c, "devprov.jar", &dev_prov);
    assert_eq!(status, 401, "{page}");
    assert!(page.contains("viewer role"), "{page}");
    let (n_tokens, n_users) = (tokens(), users());
    for (path, form) in [
        (
            "/console/tokens",
            vec![("tenant", "master"), ("acl", "provd.#")],
        ),
        (
            "/console/users",
            vec![
                ("name", "mallory"),
                ("tenant", "master"),
                ("role", "admin"),
                ("password", "mallory-password"),
            ],
        ),
    ] {
        let (status, _, page) = c.post(&jar, path, &form);
        assert!(status == 303 || status == 403, "{path}: {status} {page}");
        assert!(!page.contains("token-secret"), "{page}");
    }
    assert_eq!((tokens(), users()), (n_tokens, n_users));

    // Reading devices only: not even a viewer.
    let reader = token(&["provd.dev_mgr.devices.read"]);
    let (status, _, page, _) = sign_in_token(&c, "reader.jar", &reader);
    assert_eq!(status, 401, "{page}");

    // provd.# is an admin: the tokens page offers to create one.
    let all = token(&["provd.#"]);
    let (status, head, page, jar) = sign_in_token(&c, "all.jar", &all);
    assert_eq!(status, 303, "{head}{page}");
    let (status, page) = c.get(&jar, "/console/tokens");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("create-token"), "{page}");

    // A user deleted from the console: their session ends at once.
    let root = c.signed_in("root", "master", "admin");
    let bob = c.signed_in("bob", "master", "admin");
    assert_eq!(c.get(&bob, "/console/users").0, 200);
    let (status, _, page) = c.post_csrf(&root, "/console/users/bob/delete", &[("confirm", "yes")]);
    assert_eq!(status, 303, "{page}");
    sent_to_sign_in(&c, &bob, "/console/");

    // Deleted by the API and created again as a viewer under the same name: the old
    // session is not the new user's, and ends.
    let carol = c.signed_in("carol", "master", "admin");
    let (_, page) = c.get(&carol, "/console/users");
    assert!(page.contains("create-user"), "{page}");
    assert_eq!(c.api("DELETE", "/users/carol", None, None).status, 204);
    c.user("carol", "master", "viewer");
    sent_to_sign_in(&c, &carol, "/console/users");
    let (status, _, page) = c.post(
        &carol,
        "/console/users",
        &[
            ("name", "mallory"),
            ("tenant", "master"),
            ("role", "admin"),
            ("password", "mallory-password"),
        ],
    );
    assert_eq!(status, 303, "{page}");
    assert!(c.api("GET", "/users/mallory", None, None).status != 200);
    // Signed in again, carol is a viewer.
    let carol = c.sign_in("carol");
    let (status, page) = c.get(&carol, "/console/users");
    assert_eq!(status, 200, "{page}");
    assert!(!page.contains("create-user"), "{page}");

    // The same user's role changed in the store (deleted and created by the CLI) also ends it.
    let dave = c.signed_in("dave", "master", "operator");
    c.cli(&["user", "delete", "dave"]);
    c.user("dave", "master", "operator");
    sent_to_sign_in(&c, &dave, "/console/");
}
