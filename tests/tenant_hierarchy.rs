//! The tenant hierarchy (issue 13) through the REST API served on 127.0.0.1 and driven with
//! curl, the provisioning server for rendering, and the CLI against a running daemon.
//!
//! Every test builds the same tree: master → reseller → customer, and the sibling branch
//! master → other → other-child. Routes are exercised for each caller against objects owned
//! at each level; the expected answer of each cell comes from the rules of the contract
//! (subtree, ancestors), and every mismatch is collected before the test fails, so that one
//! run shows the whole picture.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{curl, ApiReply as Reply, InProcess};
use provisiond::files::FileService;
use provisiond::http::api::router;
use provisiond::store::Store;
use serde_json::{json, Value};

const MEDIA: &str = "application/vnd.proformatique.provd+json";
const ROOT: &str = "master";

/// Every tenant of the test tree with its parent.
const TREE: [(&str, Option<&str>); 5] = [
    ("master", None),
    ("reseller", Some("master")),
    ("customer", Some("reseller")),
    ("other", Some("master")),
    ("other-child", Some("other")),
];

fn parent_of(tenant: &str) -> Option<&'static str> {
    TREE.iter()
        .find(|(t, _)| *t == tenant)
        .and_then(|(_, p)| *p)
}

/// True when `x` is `a` or one of its descendants.
fn in_subtree(x: &str, a: &str) -> bool {
    let mut cur = TREE.iter().find(|(t, _)| *t == x).map(|(t, _)| *t);
    while let Some(t) = cur {
        if t == a {
            return true;
        }
        cur = parent_of(t);
    }
    false
}

/// True when `x` is a strict ancestor of `a`.
fn is_ancestor(x: &str, a: &str) -> bool {
    x != a && in_subtree(a, x)
}

/// Who sends a request: a token of `home`, with `Wazo-Tenant: header` when given.
#[derive(Clone, Copy)]
struct As {
    home: &'static str,
    header: Option<&'static str>,
}

impl As {
    const fn own(home: &'static str) -> As {
        As { home, header: None }
    }

    const fn naming(home: &'static str, tenant: &'static str) -> As {
        As {
            home,
            header: Some(tenant),
        }
    }

    /// The tenant the request acts for, or `None` when `Wazo-Tenant` names a tenant outside
    /// the token's subtree (401).
    fn acting(&self) -> Option<&'static str> {
        let asked = self.header.unwrap_or(self.home);
        in_subtree(asked, self.home).then_some(asked)
    }

    fn label(&self) -> String {
        match self.header {
            None => self.home.to_owned(),
            Some(t) => format!("{} (Wazo-Tenant: {t})", self.home),
        }
    }
}

/// The callers of the matrices: each tenant for itself, a parent for a descendant, and
/// `Wazo-Tenant` naming a sibling or an ancestor.
const CALLERS: [As; 9] = [
    As::own("master"),
    As::naming("master", "reseller"),
    As::own("reseller"),
    As::naming("reseller", "customer"),
    As::naming("reseller", "other"),
    As::naming("reseller", "master"),
    As::own("customer"),
    As::naming("customer", "reseller"),
    As::own("other"),
];

/// Mismatches collected over a test; `finish` fails with all of them.
#[derive(Default)]
struct Check(Vec<String>);

/// A short form of an answer's body for a mismatch line.
fn brief(body: &Value) -> String {
    let text = body.to_string();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

impl Check {
    /// Records a mismatch unless `got` has status `want`; true when it has.
    fn status(&mut self, what: &str, got: &Reply, want: u16) -> bool {
        if got.status == want {
            return true;
        }
        self.0.push(format!(
            "{what}: want {want}, got {} {}",
            got.status,
            brief(&got.body)
        ));
        false
    }

    /// Records a mismatch unless `got` is a `want` error naming `field`.
    fn field(&mut self, what: &str, got: &Reply, want: u16, field: &str) {
        if self.status(what, got, want) {
            let named = got.body["details"]["field"].as_str().unwrap_or("");
            self.that(
                format!("{what}: the error names field {field:?}, not {named:?}"),
                named == field,
            );
        }
    }

    /// Records `what` unless `ok`.
    fn that(&mut self, what: String, ok: bool) {
        if !ok {
            self.0.push(what);
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} mismatch(es):\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

struct Server {
    addr: SocketAddr,
    store: Store,
    files: Arc<FileService>,
    /// A token of each tenant of the tree, made after the tree.
    tokens: BTreeMap<&'static str, String>,
    _http: InProcess,
    _dir: tempfile::TempDir,
}

/// The API in process over a fresh store with the test tree: the tenants are created through
/// `POST /tenants` by the root's token (a refusal is a mismatch; the tenant is then made flat
/// by the token helper, so that the rest of the test still runs).
fn start(check: &mut Check) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults(ROOT).unwrap();
    let state = common::api_state(&store);
    let files = Arc::clone(&state.files);
    let app = router(
        Arc::new(state),
        provisiond::config::Api::default().max_body_bytes,
    );
    let http = InProcess::start(app, common::api_limits(60), None);
    let mut server = Server {
        addr: http.addr,
        store,
        files,
        tokens: BTreeMap::new(),
        _http: http,
        _dir: dir,
    };
    let root = server.token(ROOT);
    for (tenant, parent) in TREE {
        if let Some(parent) = parent {
            let r = server.call_with(
                "POST",
                "/0.2/tenants",
                &root,
                None,
                Some(json!({"tenant": {"id": tenant, "parent": parent}})),
            );
            check.status(
                &format!("setup: POST /tenants {tenant} with parent {parent}"),
                &r,
                201,
            );
        }
    }
    for (tenant, _) in TREE {
        let token = server.token(tenant);
        server.tokens.insert(tenant, token);
    }
    server
}

impl Server {
    /// A new token of `tenant` with every provd ACL.
    fn token(&self, tenant: &str) -> String {
        common::api_token(&self.store, tenant, &[], None)
    }

    fn call(&self, method: &str, path: &str, who: As, body: Option<Value>) -> Reply {
        self.call_with(method, path, &self.tokens[who.home], who.header, body)
    }

    fn call_with(
        &self,
        method: &str,
        path: &str,
        token: &str,
        header: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut headers = vec![format!("X-Auth-Token: {token}")];
        if let Some(tenant) = header {
            headers.push(format!("Wazo-Tenant: {tenant}"));
        }
        curl(
            &[],
            &format!("http://{}{path}", self.addr),
            method,
            &headers,
            body.map(|b| (MEDIA.to_owned(), b.to_string())),
        )
    }

    /// The tenant a device is stored in.
    fn device_tenant(&self, id: &str) -> Option<String> {
        self.store.device(id).unwrap().map(|d| d.tenant)
    }

    /// Creates the fixture device of `owner` as `owner`, after removing any earlier copy.
    fn reset_device(&self, owner: &'static str) {
        let id = device_id(owner);
        let _ = self.store.delete_device(&id);
        let r = self.call(
            "POST",
            "/0.2/dev_mgr/devices",
            As::own(owner),
            Some(device_body(owner, "created")),
        );
        assert_eq!(r.status, 201, "fixture device {id}: {}", r.body);
    }

    /// Creates the fixture config of `owner` as `owner`, after removing any earlier copy.
    fn reset_config(&self, owner: &'static str) {
        let id = config_id(owner);
        let _ = self.store.delete_config(&id);
        let r = self.call(
            "POST",
            "/0.2/cfg_mgr/configs",
            As::own(owner),
            Some(config_body(owner, "created")),
        );
        assert_eq!(r.status, 201, "fixture config {id}: {}", r.body);
    }

    /// Ids of a list answer (`devices` or `configs`), or the mismatch of its status.
    fn list_ids(&self, check: &mut Check, path: &str, key: &str, who: As) -> BTreeSet<String> {
        let r = self.call("GET", path, who, None);
        let want = if who.acting().is_some() { 200 } else { 401 };
        check.status(&format!("GET {path} as {}", who.label()), &r, want);
        r.body[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["id"].as_str().map(str::to_owned))
            .collect()
    }
}

fn device_id(owner: &str) -> String {
    format!("dev-{owner}")
}

fn device_mac(owner: &str) -> String {
    let n = TREE.iter().position(|(t, _)| *t == owner).unwrap_or(9);
    format!("00:15:65:aa:00:{n:02x}")
}

fn device_body(owner: &str, description: &str) -> Value {
    json!({"device": {
        "id": device_id(owner),
        "mac": device_mac(owner),
        "plugin": "yealink",
        "description": description,
    }})
}

fn config_id(owner: &str) -> String {
    format!("cfg-{owner}")
}

fn config_body(owner: &str, note: &str) -> Value {
    json!({"config": {
        "id": config_id(owner),
        "parent_ids": ["base"],
        "raw_config": {"X_owner": owner, "X_note": note},
    }})
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum DeviceRoute {
    Get,
    Reconfigure,
    Synchronize,
    Put,
    Delete,
}

/// The contract's answer to `route` on a device of `owner` for a caller acting for `acting`.
fn want_device(route: DeviceRoute, owner: &str, acting: Option<&str>) -> u16 {
    let Some(acting) = acting else {
        return 401;
    };
    let managed = in_subtree(owner, acting);
    match route {
        DeviceRoute::Get if managed => 200,
        DeviceRoute::Reconfigure if managed => 204,
        DeviceRoute::Synchronize if managed => 201,
        // A device still in the root is claimed by any tenant that updates it.
        DeviceRoute::Put if managed || owner == ROOT => 204,
        DeviceRoute::Delete if managed => 204,
        DeviceRoute::Reconfigure => 400,
        _ => 404,
    }
}

#[test]
fn device_routes_reach_the_subtree_only() {
    let mut check = Check::default();
    let server = start(&mut check);
    for (owner, _) in TREE {
        server.reset_device(owner);
    }
    let routes = [
        DeviceRoute::Get,
        DeviceRoute::Reconfigure,
        DeviceRoute::Synchronize,
        DeviceRoute::Put,
        DeviceRoute::Delete,
    ];
    for who in CALLERS {
        for (owner, _) in TREE {
            let id = device_id(owner);
            for route in routes {
                let one = format!("/0.2/dev_mgr/devices/{id}");
                let (method, path, body) = match route {
                    DeviceRoute::Get => ("GET", one, None),
                    DeviceRoute::Put => ("PUT", one, Some(device_body(owner, &who.label()))),
                    DeviceRoute::Delete => ("DELETE", one, None),
                    DeviceRoute::Reconfigure => (
                        "POST",
                        "/0.2/dev_mgr/reconfigure".to_owned(),
                        Some(json!({ "id": id })),
                    ),
                    DeviceRoute::Synchronize => (
                        "POST",
                        "/0.2/dev_mgr/synchronize".to_owned(),
                        Some(json!({ "id": id })),
                    ),
                };
                let what = format!(
                    "{method} {path} ({route:?}) on {owner}'s device as {}",
                    who.label()
                );
                let r = server.call(method, &path, who, body);
                let want = want_device(route, owner, who.acting());
                let as_wanted = check.status(&what, &r, want);
                if route == DeviceRoute::Put && as_wanted && want == 204 {
                    // A managed device keeps its tenant; a root device moves to its claimer.
                    let acting = who.acting().unwrap_or(owner);
                    let after = if owner == ROOT { acting } else { owner };
                    let stored = server.device_tenant(&id);
                    check.that(
                        format!("{what}: the device is now in {stored:?}, want {after}"),
                        stored.as_deref() == Some(after),
                    );
                }
                if matches!(route, DeviceRoute::Put | DeviceRoute::Delete) {
                    server.reset_device(owner);
                }
            }
        }
    }
    check.finish();
}

#[test]
fn device_lists_show_the_tenant_and_with_recurse_its_subtree() {
    let mut check = Check::default();
    let server = start(&mut check);
    for (owner, _) in TREE {
        server.reset_device(owner);
    }
    for who in CALLERS {
        let Some(acting) = who.acting() else {
            server.list_ids(&mut check, "/0.2/dev_mgr/devices", "devices", who);
            server.list_ids(
                &mut check,
                "/0.2/dev_mgr/devices?recurse=true",
                "devices",
                who,
            );
            continue;
        };
        for (path, recurse) in [
            ("/0.2/dev_mgr/devices", false),
            ("/0.2/dev_mgr/devices?recurse=true", true),
        ] {
            let got = server.list_ids(&mut check, path, "devices", who);
            let want: BTreeSet<String> = TREE
                .iter()
                .filter(|(t, _)| {
                    if recurse {
                        in_subtree(t, acting)
                    } else {
                        *t == acting
                    }
                })
                .map(|(t, _)| device_id(t))
                .collect();
            check.that(
                format!("GET {path} as {}: want {want:?}, got {got:?}", who.label()),
                got == want,
            );
        }
    }
    check.finish();
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum ConfigRoute {
    Get,
    Raw,
    Put,
    Delete,
}

/// The contract's answer to `route` on a config of `owner` for a caller acting for `acting`:
/// readable when managed or inherited from an ancestor, writable only when managed.
fn want_config(route: ConfigRoute, owner: &str, acting: Option<&str>) -> u16 {
    let Some(acting) = acting else {
        return 401;
    };
    let managed = in_subtree(owner, acting);
    let inherited = is_ancestor(owner, acting);
    match route {
        ConfigRoute::Get | ConfigRoute::Raw if managed || inherited => 200,
        ConfigRoute::Put | ConfigRoute::Delete if managed => 204,
        ConfigRoute::Put | ConfigRoute::Delete if inherited => 403,
        _ => 404,
    }
}

#[test]
fn config_routes_read_the_subtree_and_ancestors_and_write_the_subtree() {
    let mut check = Check::default();
    let server = start(&mut check);
    for (owner, _) in TREE {
        server.reset_config(owner);
    }
    let routes = [
        ConfigRoute::Get,
        ConfigRoute::Raw,
        ConfigRoute::Put,
        ConfigRoute::Delete,
    ];
    for who in CALLERS {
        for (owner, _) in TREE {
            let id = config_id(owner);
            for route in routes {
                let one = format!("/0.2/cfg_mgr/configs/{id}");
                let (method, path, body) = match route {
                    ConfigRoute::Get => ("GET", one, None),
                    ConfigRoute::Raw => ("GET", format!("{one}/raw"), None),
                    ConfigRoute::Put => ("PUT", one, Some(config_body(owner, &who.label()))),
                    ConfigRoute::Delete => ("DELETE", one, None),
                };
                let what = format!(
                    "{method} {path} ({route:?}) on {owner}'s config as {}",
                    who.label()
                );
                let r = server.call(method, &path, who, body);
                let want = want_config(route, owner, who.acting());
                if check.status(&what, &r, want) && route == ConfigRoute::Raw && want == 200 {
                    check.that(
                        format!("{what}: merged raw config {}", brief(&r.body)),
                        r.body["raw_config"]["X_owner"] == owner,
                    );
                }
                if route == ConfigRoute::Delete {
                    server.reset_config(owner);
                }
            }
        }
    }
    check.finish();
}

#[test]
fn config_lists_show_the_tenant_and_ancestors_and_with_recurse_descendants() {
    let mut check = Check::default();
    let server = start(&mut check);
    for (owner, _) in TREE {
        server.reset_config(owner);
    }
    for who in CALLERS {
        let Some(acting) = who.acting() else {
            server.list_ids(&mut check, "/0.2/cfg_mgr/configs", "configs", who);
            server.list_ids(
                &mut check,
                "/0.2/cfg_mgr/configs?recurse=true",
                "configs",
                who,
            );
            continue;
        };
        for (path, recurse) in [
            ("/0.2/cfg_mgr/configs", false),
            ("/0.2/cfg_mgr/configs?recurse=true", true),
        ] {
            let got = server.list_ids(&mut check, path, "configs", who);
            // The built-in configs belong to the root, an ancestor of every tenant.
            let mut want: BTreeSet<String> = ["base", "autoprov"].map(String::from).into();
            want.extend(
                TREE.iter()
                    .filter(|(t, _)| {
                        *t == acting || is_ancestor(t, acting) || (recurse && in_subtree(t, acting))
                    })
                    .map(|(t, _)| config_id(t)),
            );
            check.that(
                format!("GET {path} as {}: want {want:?}, got {got:?}", who.label()),
                got == want,
            );
        }
    }
    check.finish();
}

#[test]
fn devices_and_configs_use_configs_of_their_tenant_and_its_ancestors() {
    let mut check = Check::default();
    let server = start(&mut check);
    for (owner, _) in TREE {
        server.reset_config(owner);
    }

    // A device's config: its tenant's or an ancestor's; never a sibling's or a descendant's.
    let cases = [
        (As::own("customer"), "customer", 201),
        (As::own("customer"), "reseller", 201),
        (As::own("customer"), "master", 201),
        (As::own("customer"), "other", 400),
        (As::own("customer"), "other-child", 400),
        (As::own("reseller"), "customer", 400),
        (As::naming("reseller", "customer"), "reseller", 201),
        (As::naming("master", "customer"), "master", 201),
        (As::own("other-child"), "other", 201),
        (As::own("other-child"), "reseller", 400),
    ];
    for (n, (who, config_owner, want)) in cases.into_iter().enumerate() {
        let id = format!("uses-{n}");
        let config = config_id(config_owner);
        let r = server.call(
            "POST",
            "/0.2/dev_mgr/devices",
            who,
            Some(json!({"device": {
                "id": id,
                "mac": format!("00:15:65:bb:00:{n:02x}"),
                "config": config,
            }})),
        );
        let what = format!("POST device {id} with config {config} as {}", who.label());
        if want == 201 {
            if check.status(&what, &r, 201) {
                // Using an inherited config does not move the device.
                let acting = who.acting().unwrap_or(who.home);
                let stored = server.device_tenant(&id);
                check.that(
                    format!("{what}: the device is in {stored:?}, want {acting}"),
                    stored.as_deref() == Some(acting),
                );
            }
        } else {
            check.field(&what, &r, want, "config");
        }
    }

    // The same rule when a PUT gives the config.
    let r = server.call(
        "POST",
        "/0.2/dev_mgr/devices",
        As::own("customer"),
        Some(json!({"device": {"id": "desk", "mac": "00:15:65:bb:01:00"}})),
    );
    check.status("POST device desk as customer", &r, 201);
    for (config_owner, want) in [("other", 400), ("master", 204), ("reseller", 204)] {
        let config = config_id(config_owner);
        let r = server.call(
            "PUT",
            "/0.2/dev_mgr/devices/desk",
            As::own("customer"),
            Some(json!({"device": {"mac": "00:15:65:bb:01:00", "config": config}})),
        );
        let what = format!("PUT customer's device desk with config {config}");
        if want == 204 {
            check.status(&what, &r, 204);
        } else {
            check.field(&what, &r, want, "config");
        }
    }

    // A config's parents: its tenant's or an ancestor's.
    for (n, (who, parent_owner, want)) in [
        (As::own("customer"), "reseller", 201),
        (As::own("customer"), "master", 201),
        (As::own("customer"), "other", 400),
        (As::own("reseller"), "customer", 400),
        (As::naming("reseller", "customer"), "reseller", 201),
    ]
    .into_iter()
    .enumerate()
    {
        let parent = config_id(parent_owner);
        let r = server.call(
            "POST",
            "/0.2/cfg_mgr/configs",
            who,
            Some(json!({"config": {
                "id": format!("child-{n}"),
                "parent_ids": [parent],
                "raw_config": {},
            }})),
        );
        let what = format!(
            "POST config child-{n} with parent {parent} as {}",
            who.label()
        );
        if want == 201 {
            check.status(&what, &r, 201);
        } else {
            check.field(&what, &r, want, "parent_ids");
        }
    }
    check.finish();
}

#[test]
fn a_customer_device_renders_the_root_and_reseller_configs() {
    let mut check = Check::default();
    let server = start(&mut check);
    let provisioning = InProcess::start(
        provisiond::http::provisioning::router(Arc::new(
            provisiond::http::provisioning::Provisioning::new(Arc::clone(&server.files)),
        )),
        provisiond::http::HttpLimits {
            max_request_bytes: 4096,
            request_timeout: Duration::from_secs(5),
            max_connections: 16,
            max_connection_time: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(5),
            refusal: provisiond::http::plain_refusal,
        },
        None,
    );
    // The root's shared config, as Wazo's installer writes it.
    let posts = [
        (
            As::own(ROOT),
            json!({"config": {
                "id": "defaultconfigdevice",
                "parent_ids": ["base"],
                "deletable": false,
                "raw_config": {"ntp_enabled": true, "ntp_ip": "192.0.2.123"},
            }}),
        ),
        (
            As::own("reseller"),
            json!({"config": {
                "id": "reseller-phones",
                "parent_ids": ["defaultconfigdevice"],
                "raw_config": {"locale": "fr_FR"},
            }}),
        ),
        (
            As::own("customer"),
            json!({"config": {
                "id": "customer-phones",
                "parent_ids": ["reseller-phones"],
                "raw_config": {"user_password": "cust-4321"},
            }}),
        ),
    ];
    for (who, body) in posts {
        let r = server.call("POST", "/0.2/cfg_mgr/configs", who, Some(body.clone()));
        check.status(
            &format!("POST config {} as {}", body["config"]["id"], who.label()),
            &r,
            201,
        );
    }
    let fetch = |mac: &str| -> String {
        let r = curl(
            &[],
            &format!("http://{}/{}.cfg", provisioning.addr, mac.replace(':', "")),
            "GET",
            &[format!("User-Agent: Yealink SIP-T54W 96.86.0.70 {mac}")],
            None,
        );
        assert_eq!(r.status, 200, "{mac}.cfg: {}", brief(&r.body));
        r.body.as_str().unwrap_or_default().to_owned()
    };
    for (id, mac, config, lines) in [
        (
            "desk-root",
            "80:5e:c0:11:22:33",
            "defaultconfigdevice",
            &["local_time.ntp_server1 = 192.0.2.123"][..],
        ),
        (
            "desk-chain",
            "80:5e:c0:11:22:44",
            "customer-phones",
            &[
                "local_time.ntp_server1 = 192.0.2.123",
                "lang.gui = French",
                "static.security.user_password = user:cust-4321",
            ][..],
        ),
    ] {
        let r = server.call(
            "POST",
            "/0.2/dev_mgr/devices",
            As::own("customer"),
            Some(json!({"device": {"id": id, "mac": mac, "plugin": "yealink", "config": config}})),
        );
        if !check.status(
            &format!("POST customer's device {id} with config {config}"),
            &r,
            201,
        ) {
            continue;
        }
        let file = fetch(mac);
        for line in lines {
            check.that(
                format!("{id} ({config}): no line {line:?} in\n{file}"),
                file.lines().any(|l| l.trim() == *line),
            );
        }
        check.that(
            format!("{id} stays in customer"),
            server.device_tenant(id).as_deref() == Some("customer"),
        );
    }
    check.finish();
}

#[test]
fn tenants_api_shows_and_changes_the_subtree_only() {
    let mut check = Check::default();
    let server = start(&mut check);

    // GET /tenants: exactly the subtree, each with its parent.
    for who in [
        As::own("master"),
        As::own("reseller"),
        As::own("customer"),
        As::own("other"),
        As::naming("reseller", "customer"),
        As::naming("master", "other"),
    ] {
        let acting = who.acting().unwrap_or(who.home);
        let r = server.call("GET", "/0.2/tenants", who, None);
        let what = format!("GET /tenants as {}", who.label());
        if !check.status(&what, &r, 200) {
            continue;
        }
        let got: BTreeMap<String, Value> = r.body["tenants"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["id"].as_str().unwrap_or("?").to_owned(),
                    t.get("parent").cloned().unwrap_or(json!("<absent>")),
                )
            })
            .collect();
        let want: BTreeMap<String, Value> = TREE
            .iter()
            .filter(|(t, _)| in_subtree(t, acting))
            .map(|(t, p)| (t.to_string(), json!(p)))
            .collect();
        check.that(
            format!("{what}: want (id, parent) {want:?}, got {got:?}"),
            got == want,
        );
    }
    for (who, id, want) in [
        (As::own("reseller"), "customer", 200),
        (As::own("reseller"), "other", 404),
        (As::own("reseller"), "master", 404),
        (As::own("other"), "customer", 404),
    ] {
        let r = server.call("GET", &format!("/0.2/tenants/{id}"), who, None);
        if check.status(&format!("GET /tenants/{id} as {}", who.label()), &r, want) && want == 200 {
            check.that(
                format!("GET /tenants/{id}: parent {}", r.body["tenant"]["parent"]),
                r.body["tenant"]["parent"] == json!(parent_of(id)),
            );
        }
    }

    // POST: the parent defaults to the acting tenant and must be in its subtree.
    let r = server.call(
        "POST",
        "/0.2/tenants",
        As::own("reseller"),
        Some(json!({"tenant": {"id": "reseller-2"}})),
    );
    if check.status("POST /tenants reseller-2 as reseller", &r, 201) {
        let r = server.call("GET", "/0.2/tenants/reseller-2", As::own("reseller"), None);
        check.that(
            format!("reseller-2's parent: {}", brief(&r.body)),
            r.status == 200 && r.body["tenant"]["parent"] == "reseller",
        );
    }
    for (who, parent) in [
        (As::own("reseller"), "other"),
        (As::own("reseller"), "master"),
        (As::own("customer"), "reseller"),
        (As::own("master"), "nobody"),
    ] {
        let r = server.call(
            "POST",
            "/0.2/tenants",
            who,
            Some(json!({"tenant": {"id": "refused", "parent": parent}})),
        );
        check.field(
            &format!("POST /tenants with parent {parent} as {}", who.label()),
            &r,
            400,
            "tenant.parent",
        );
    }

    // PUT cannot move a tenant.
    let r = server.call(
        "PUT",
        "/0.2/tenants/customer",
        As::own(ROOT),
        Some(json!({"tenant": {"parent": "other"}})),
    );
    check.status("PUT /tenants/customer with parent other", &r, 400);
    let r = server.call(
        "PUT",
        "/0.2/tenants/customer",
        As::own(ROOT),
        Some(json!({"tenant": {"parent": "reseller", "name": "Customer"}})),
    );
    check.status("PUT /tenants/customer with its own parent", &r, 204);

    // Tokens stay the root's business.
    let r = server.call("GET", "/0.2/tokens", As::own("reseller"), None);
    check.status("GET /tokens as reseller", &r, 403);

    // DELETE: refused for the root, the token's own tenant, and a tenant still in use.
    let r = server.call(
        "POST",
        "/0.2/dev_mgr/devices",
        As::own("customer"),
        Some(json!({"device": {"id": "in-use", "mac": "00:15:65:cc:00:01"}})),
    );
    check.status("POST customer's device in-use", &r, 201);
    let r = server.call("DELETE", "/0.2/tenants/reseller", As::own(ROOT), None);
    if check.status("DELETE /tenants/reseller (has children)", &r, 409) {
        let message = r.body["error"].as_str().unwrap_or("").to_lowercase();
        check.that(
            format!("DELETE reseller: the refusal names child tenants: {message}"),
            message.contains("child"),
        );
    }
    let r = server.call("DELETE", "/0.2/tenants/customer", As::own(ROOT), None);
    if check.status("DELETE /tenants/customer (has a device)", &r, 409) {
        let message = r.body["error"].as_str().unwrap_or("").to_lowercase();
        check.that(
            format!("DELETE customer: the refusal names the device: {message}"),
            message.contains("device"),
        );
    }
    let r = server.call("DELETE", "/0.2/tenants/master", As::own(ROOT), None);
    check.status("DELETE /tenants/master (the root)", &r, 403);
    let leaf = server.token("other-child");
    let r = server.call_with("DELETE", "/0.2/tenants/other-child", &leaf, None, None);
    check.status("DELETE /tenants/other-child with its own token", &r, 403);
    let r = server.call(
        "DELETE",
        "/0.2/tenants/other-child",
        As::own("reseller"),
        None,
    );
    check.status("DELETE /tenants/other-child as reseller", &r, 404);

    // An empty leaf goes, and its tokens with it.
    let r = server.call_with("GET", "/0.2/dev_mgr/devices", &leaf, None, None);
    check.status("GET /dev_mgr/devices with other-child's token", &r, 200);
    let r = server.call("DELETE", "/0.2/tenants/other-child", As::own("other"), None);
    check.status("DELETE /tenants/other-child as other", &r, 204);
    let r = server.call_with("GET", "/0.2/dev_mgr/devices", &leaf, None, None);
    check.status(
        "GET /dev_mgr/devices with the deleted tenant's token",
        &r,
        401,
    );
    let r = server.call("GET", "/0.2/tenants", As::own("other"), None);
    let ids: Vec<&str> = r.body["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str())
        .collect();
    check.that(
        format!("GET /tenants as other after the delete: {ids:?}"),
        r.status == 200 && ids == ["other"],
    );
    check.finish();
}

#[test]
fn a_root_device_is_claimed_by_the_first_tenant_that_updates_it() {
    let mut check = Check::default();
    let server = start(&mut check);
    let body = json!({"device": {"id": "lobby", "mac": "00:15:65:dd:00:01", "plugin": "yealink"}});
    let r = server.call(
        "POST",
        "/0.2/dev_mgr/devices",
        As::own(ROOT),
        Some(body.clone()),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(server.device_tenant("lobby").as_deref(), Some(ROOT));

    let r = server.call(
        "PUT",
        "/0.2/dev_mgr/devices/lobby",
        As::own("customer"),
        Some(body.clone()),
    );
    check.status("PUT root device lobby as customer", &r, 204);
    let shown = server.call(
        "GET",
        "/0.2/dev_mgr/devices/lobby",
        As::own("customer"),
        None,
    );
    if check.status("GET lobby as customer", &shown, 200) {
        check.that(
            format!(
                "lobby's tenant_uuid: {}",
                shown.body["device"]["tenant_uuid"]
            ),
            shown.body["device"]["tenant_uuid"] == "customer",
        );
    }
    for (who, want) in [
        (As::own("other"), 404),
        (As::own("reseller"), 200),
        (As::own(ROOT), 200),
    ] {
        let r = server.call("GET", "/0.2/dev_mgr/devices/lobby", who, None);
        check.status(&format!("GET claimed lobby as {}", who.label()), &r, want);
    }
    // Once out of the root, the device is no longer claimable: its tenant's ancestors may
    // update it where it is, a stranger cannot reach it.
    for (who, want) in [
        (As::own(ROOT), 204),
        (As::own("reseller"), 204),
        (As::own("other"), 404),
    ] {
        let r = server.call("PUT", "/0.2/dev_mgr/devices/lobby", who, Some(body.clone()));
        check.status(&format!("PUT claimed lobby as {}", who.label()), &r, want);
        let stored = server.device_tenant("lobby");
        check.that(
            format!(
                "after PUT as {}: lobby is in {stored:?}, want customer",
                who.label()
            ),
            stored.as_deref() == Some("customer"),
        );
    }
    check.finish();
}

/// The CLI against the daemon of `dir`; (exit code, stdout, stderr).
fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    common::run(
        common::command(dir)
            .args(args)
            .arg("--config")
            .arg(dir.join("provisiond.toml")),
    )
}

fn cli_ok(dir: &Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = cli(dir, args);
    assert_eq!(code, 0, "{args:?}: stdout {stdout}, stderr {stderr}");
    stdout
}

#[test]
fn cli_creates_nested_tenants_lists_their_parents_and_keeps_a_parent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_daemon, _api) = common::start_daemon(dir);

    cli_ok(dir, &["tenant", "create", "reseller", "--parent", "master"]);
    cli_ok(
        dir,
        &["tenant", "create", "customer", "--parent", "reseller"],
    );
    // `add` stays an alias; the parent defaults to the tenant the CLI acts for.
    cli_ok(dir, &["tenant", "add", "legacy"]);

    let list = cli_ok(dir, &["tenant", "list"]);
    let header = list.lines().next().unwrap_or("");
    let column = header
        .find("PARENT")
        .unwrap_or_else(|| panic!("no PARENT column:\n{list}"));
    for (tenant, parent) in [
        ("master", "-"),
        ("reseller", "master"),
        ("customer", "reseller"),
        ("legacy", "master"),
    ] {
        let row = list
            .lines()
            .find(|l| l.split_whitespace().next() == Some(tenant))
            .unwrap_or_else(|| panic!("no row for {tenant}:\n{list}"));
        let shown = row
            .get(column..)
            .and_then(|rest| rest.split_whitespace().next());
        assert_eq!(shown, Some(parent), "{tenant}'s parent:\n{list}");
    }
    let json: Value = serde_json::from_str(&cli_ok(dir, &["tenant", "list", "--json"]))
        .unwrap_or_else(|e| panic!("tenant list --json: {e}"));
    let parents: BTreeMap<String, Value> = json["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or("?").to_owned(),
                t["parent"].clone(),
            )
        })
        .collect();
    assert_eq!(
        parents,
        BTreeMap::from([
            ("customer".to_owned(), json!("reseller")),
            ("legacy".to_owned(), json!("master")),
            ("master".to_owned(), Value::Null),
            ("reseller".to_owned(), json!("master")),
        ])
    );

    let (code, stdout, stderr) = cli(dir, &["tenant", "delete", "reseller"]);
    assert_ne!(code, 0, "deleting a parent: stdout {stdout}");
    assert!(
        stderr.to_lowercase().contains("child"),
        "the refusal names the child tenants: {stderr}"
    );
    // Once its child is gone, it can go.
    cli_ok(dir, &["tenant", "delete", "customer"]);
    cli_ok(dir, &["tenant", "delete", "reseller"]);
}
