//! Provisioning codes, rollouts, automatic provisioning, jobs and per-device admin passwords
//! through the REST API and the phones' provisioning server, both served on 127.0.0.1 in
//! process over one store and one `FileService` (as the daemon wires them), driven with curl;
//! and the daemon itself for what it logs.
//!
//! Failures at guessing secrets are budgeted per source address: tests that fail on purpose
//! send from their own loopback address (`curl --interface 127.0.0.N`), so that their budget
//! is theirs.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use common::{csv_rows, curl, ApiReply, InProcess};
use provisiond::config::HttpAuthStrategy;
use provisiond::files::FileService;
use provisiond::http::api::ApiState;
use provisiond::http::provisioning::Provisioning;
use provisiond::http::HttpLimits;
use provisiond::model::{Device, Mac};
use provisiond::plugins::{Origin, PluginSet, Renderer, ServerInfo};
use provisiond::store::Store;
use serde_json::{json, Value};

const MEDIA: &str = "application/vnd.proformatique.provd+json";
const ROOT: &str = "master";
/// How phones reach the provisioning server, as `[general] base_url` would say.
const BASE_URL: &str = "http://10.0.0.2:8667";

/// `provisiond_hijacks_refused_total` counts for the whole process: the tests that read it
/// take this lock, so that another test's refusals never land between their readings.
static HIJACK_COUNTER: Mutex<()> = Mutex::new(());

fn hijack_counter() -> MutexGuard<'static, ()> {
    HIJACK_COUNTER.lock().unwrap_or_else(|e| e.into_inner())
}

/// The REST API and the provisioning server over one fresh store.
struct Server {
    api: SocketAddr,
    prov: SocketAddr,
    store: Store,
    /// A token of the root tenant with every provd ACL.
    root: String,
    _api_http: InProcess,
    _prov_http: InProcess,
    _dir: tempfile::TempDir,
}

fn start(strategy: HttpAuthStrategy) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults(ROOT).unwrap();
    let roots = vec![(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins"),
        Origin::Builtin,
    )];
    let plugins = PluginSet::load(&roots);
    assert!(plugins.errors.is_empty(), "{:?}", plugins.errors);
    let renderer = Renderer::new(
        store.clone(),
        ServerInfo {
            base_url: Some(BASE_URL.parse().unwrap()),
            url_key_strategy: strategy == HttpAuthStrategy::UrlKey,
        },
    );
    let files = Arc::new(FileService::new(
        store.clone(),
        ROOT,
        strategy,
        Arc::new(plugins),
        renderer,
    ));
    let state = ApiState::new(store.clone(), Arc::clone(&files), ROOT.into(), roots)
        .with_base_url(Some(BASE_URL.parse().unwrap()));
    let api_app = provisiond::http::api::router(
        Arc::new(state),
        provisiond::config::Api::default().max_body_bytes,
    );
    let api_http = InProcess::start(api_app, common::api_limits(60), None);
    let prov_app = provisiond::http::provisioning::router(Arc::new(Provisioning::new(files)));
    let prov_limits = HttpLimits {
        max_request_bytes: 4096,
        request_timeout: Duration::from_secs(5),
        max_connections: 64,
        max_connection_time: Duration::from_secs(60),
        shutdown_grace: Duration::from_secs(5),
        refusal: provisiond::http::plain_refusal,
    };
    let prov_http = InProcess::start(prov_app, prov_limits, None);
    let root = common::api_token(&store, ROOT, &[], None);
    Server {
        api: api_http.addr,
        prov: prov_http.addr,
        store,
        root,
        _api_http: api_http,
        _prov_http: prov_http,
        _dir: dir,
    }
}

/// A Yealink T54W's User-Agent, which names its MAC.
fn yealink(mac: &str) -> String {
    format!("Yealink SIP-T54W 96.86.0.70 {mac}")
}

/// The file a Yealink phone asks for: its bare MAC and `.cfg`.
fn mac_file(mac: &str) -> String {
    format!("{}.cfg", mac.replace(':', ""))
}

impl Server {
    /// One API request with `token`, from 127.0.0.1.
    fn call(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> ApiReply {
        self.call_from("127.0.0.1", token, method, path, body)
    }

    /// One API request with `token`, from the loopback address `source`.
    fn call_from(
        &self,
        source: &str,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> ApiReply {
        curl(
            &["--interface", source],
            &format!("http://{}/api/provd/0.2{path}", self.api),
            method,
            &[format!("X-Auth-Token: {token}")],
            body.map(|b| (MEDIA.to_owned(), b.to_string())),
        )
    }

    /// `call`, which must answer `status`; the body.
    fn ok(&self, token: &str, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let r = self.call(token, method, path, body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        r.body
    }

    /// Creates tenant `id` below `parent` through the API; a token of it with every provd ACL.
    fn tenant(&self, id: &str, parent: &str) -> String {
        self.ok(
            &self.root,
            "POST",
            "/tenants",
            Some(json!({"tenant": {"id": id, "parent": parent}})),
            201,
        );
        common::api_token(&self.store, id, &[], None)
    }

    /// Creates a category of `token`'s tenant; its id.
    fn category(
        &self,
        token: &str,
        name: &str,
        provisioning: bool,
        config: Option<&str>,
    ) -> String {
        let body = self.ok(
            token,
            "POST",
            "/prov_mgr/categories",
            Some(
                json!({"category": {"name": name, "provisioning": provisioning, "config": config}}),
            ),
            201,
        );
        body["id"].as_str().expect("category id").to_owned()
    }

    /// Creates a config of `token`'s tenant below `base`.
    fn config(&self, token: &str, id: &str, raw: Value) {
        self.ok(
            token,
            "POST",
            "/cfg_mgr/configs",
            Some(json!({"config": {"id": id, "parent_ids": ["base"], "raw_config": raw}})),
            201,
        );
    }

    /// Issues a code of `token`'s provisioning category `category`; its 12 digits.
    fn code(&self, token: &str, category: &str) -> String {
        let body = self.ok(
            token,
            "POST",
            "/prov_mgr/codes",
            Some(json!({"code": {"category": category}})),
            201,
        );
        let code = body["code"]["code"].as_str().expect("the code").to_owned();
        assert!(
            code.len() == 12 && code.bytes().all(|b| b.is_ascii_digit()),
            "{code}"
        );
        code
    }

    /// Creates a device of `token`'s tenant through the API; its id.
    fn device(&self, token: &str, mac: &str, ip: Option<&str>) -> String {
        let body = self.ok(
            token,
            "POST",
            "/dev_mgr/devices",
            Some(json!({"device": {"mac": mac, "ip": ip}})),
            201,
        );
        body["id"].as_str().expect("device id").to_owned()
    }

    fn stored(&self, id: &str) -> Device {
        self.store.device(id).unwrap().expect("the device")
    }

    fn by_mac(&self, mac: &str) -> Option<Device> {
        self.store
            .device_by_mac(&mac.parse::<Mac>().unwrap())
            .unwrap()
    }

    /// True while `code` is live (the owning tenant's token sees it).
    fn live(&self, token: &str, code: &str) -> bool {
        let r = self.call(token, "GET", &format!("/prov_mgr/codes/{code}"), None);
        assert!(matches!(r.status, 200 | 404), "{}", r.body);
        r.status == 200
    }

    /// A phone's GET of `path` on the provisioning server from `source`: status and body.
    fn fetch_from(&self, source: &str, path: &str, user_agent: &str) -> (u16, String) {
        let r = curl(
            &["--interface", source, "--path-as-is"],
            &format!("http://{}{path}", self.prov),
            "GET",
            &[format!("User-Agent: {user_agent}")],
            None,
        );
        let body = match r.body {
            Value::String(s) => s,
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (r.status, body)
    }

    /// The Yealink phone `mac` fetches its MAC file (from 127.0.0.1); the file must come.
    fn phone_file(&self, mac: &str) -> String {
        let (status, body) =
            self.fetch_from("127.0.0.1", &format!("/{}", mac_file(mac)), &yealink(mac));
        assert_eq!(status, 200, "{mac}: {body}");
        body
    }

    /// The value of the /metrics sample `name` (with its labels).
    fn metric(&self, name: &str) -> f64 {
        let r = curl(
            &[],
            &format!("http://{}/metrics", self.api),
            "GET",
            &[format!("X-Auth-Token: {}", self.root)],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let text = r.body.as_str().expect("metrics are text");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no sample {name} in\n{text}"))
    }
}

/// `POST /prov_mgr/redeem` body naming the phone by device id.
fn by_device(code: &str, id: &str) -> Option<Value> {
    Some(json!({"code": code, "device_id": id}))
}

#[test]
fn redemption_by_device_id_respects_tenants() {
    let _counter = hijack_counter();
    let s = start(HttpAuthStrategy::Disabled);
    let a = s.tenant("acme", ROOT);
    let _kid = s.tenant("acme-kid", "acme");
    let b = s.tenant("beta", ROOT);
    let cat_a = s.category(&a, "desk", true, None);
    let cat_b = s.category(&b, "desk", true, None);
    let tokens = [("acme", &a, &cat_a), ("beta", &b, &cat_b)];
    let hijacks = s.metric("provisiond_hijacks_refused_total");
    let mut refused = 0;
    let mut n = 0;
    for owner in [ROOT, "acme", "beta", "acme-kid"] {
        for (code_tenant, code_token, category) in tokens {
            n += 1;
            let mac = format!("80:5e:c0:01:00:{n:02x}");
            let owner_token = common::api_token(&s.store, owner, &[], None);
            let id = s.device(&owner_token, &mac, None);
            let before = s.stored(&id);
            let code = s.code(code_token, "desk");
            let r = s.call(&s.root, "POST", "/prov_mgr/redeem", by_device(&code, &id));
            let cell = format!("device of {owner} × code of {code_tenant}");
            if owner == ROOT || owner == code_tenant {
                assert_eq!(r.status, 200, "{cell}: {}", r.body);
                assert_eq!(r.body["tenant_uuid"], code_tenant, "{cell}");
                let after = s.stored(&id);
                assert_eq!(after.tenant, code_tenant, "{cell}");
                assert_eq!(after.category.as_deref(), Some(category.as_str()), "{cell}");
                assert!(after.configured, "{cell}");
                assert!(!s.live(code_token, &code), "{cell}: the code is used");
            } else {
                refused += 1;
                assert_eq!(r.status, 403, "{cell}: {}", r.body);
                assert_eq!(s.stored(&id), before, "{cell}: the device changed");
                assert!(s.live(code_token, &code), "{cell}: the code was consumed");
            }
        }
    }
    assert_eq!(refused, 4);
    assert_eq!(
        s.metric("provisiond_hijacks_refused_total"),
        hijacks + f64::from(refused)
    );

    // A token of beta neither redeems nor sees a code of acme; one neutral answer.
    let code = s.code(&a, "desk");
    let beta_device = s.device(&b, "80:5e:c0:01:01:01", None);
    let before = s.stored(&beta_device);
    let r = s.call(
        &b,
        "POST",
        "/prov_mgr/redeem",
        by_device(&code, &beta_device),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body["error"], "code not accepted");
    assert_eq!(s.stored(&beta_device), before);
    let listed = s.ok(&b, "GET", "/prov_mgr/codes?recurse=true", None, 200);
    assert!(
        !listed.to_string().contains(&code),
        "beta lists acme's code: {listed}"
    );
    assert!(!s.live(&b, &code), "beta reads acme's code");
    assert!(s.live(&a, &code));
    let listed = s.ok(&a, "GET", "/prov_mgr/codes", None, 200);
    assert!(listed.to_string().contains(&code), "{listed}");
}

#[test]
fn redemption_by_ip_needs_one_device_there() {
    let s = start(HttpAuthStrategy::Disabled);
    let a = s.tenant("acme", ROOT);
    s.category(&a, "desk", true, None);
    let alone = s.device(&s.root, "80:5e:c0:02:00:01", Some("10.9.8.7"));
    let shared: BTreeSet<String> = ["80:5e:c0:02:00:02", "80:5e:c0:02:00:03"]
        .iter()
        .map(|mac| s.device(&s.root, mac, Some("10.9.8.8")))
        .collect();

    let code = s.code(&a, "desk");
    let r = s.call(
        &s.root,
        "POST",
        "/prov_mgr/redeem",
        Some(json!({"code": code, "ip": "10.9.8.7"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["device"]["id"], alone.as_str());
    assert_eq!(s.stored(&alone).tenant, "acme");

    let code = s.code(&a, "desk");
    let r = s.call(
        &s.root,
        "POST",
        "/prov_mgr/redeem",
        Some(json!({"code": code, "ip": "10.9.8.8"})),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let listed: BTreeSet<String> = r.body["details"]["candidates"]
        .as_array()
        .expect("the candidates")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    assert_eq!(listed, shared);
    assert!(s.live(&a, &code));
    for id in &shared {
        assert_eq!(s.stored(id).tenant, ROOT);
    }
    // As the answer says: by device id.
    let first = shared.iter().next().unwrap();
    let r = s.call(&s.root, "POST", "/prov_mgr/redeem", by_device(&code, first));
    assert_eq!(r.status, 200, "{}", r.body);
}

fn column(rows: &[Vec<String>], n: usize) -> Vec<String> {
    rows.iter().map(|r| r[n].clone()).collect()
}

#[test]
fn rollouts_export_inert_quoted_csv_and_follow_their_codes() {
    let s = start(HttpAuthStrategy::Disabled);
    let a = s.tenant("acme", ROOT);
    s.category(&a, "desk", true, None);
    let formula = "=cmd|' /C calc'!A0";
    let quoted = "Doe, \"Jane\"";
    let created = s.ok(
        &a,
        "POST",
        "/prov_mgr/rollouts",
        Some(json!({"rollout": {"category": "desk", "entries": [
            {"label": formula}, {"label": quoted}, {"label": "Bob"}
        ]}})),
        201,
    );
    let id = created["id"].as_str().expect("rollout id").to_owned();
    let codes: Vec<String> = created["rollout"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["code"].as_str().expect("code").to_owned())
        .collect();
    assert_eq!(codes.len(), 3);
    assert!(codes.iter().all(|c| s.live(&a, c)));

    // From CSV text, with a quoted comma.
    let from_csv = s.ok(
        &a,
        "POST",
        "/prov_mgr/rollouts",
        Some(
            json!({"rollout": {"category": "desk", "csv": "label\r\nAlice\r\n\"Smith, Ann\"\r\n"}}),
        ),
        201,
    );
    let labels: Vec<&str> = from_csv["rollout"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["label"].as_str())
        .collect();
    assert_eq!(labels, ["Alice", "Smith, Ann"]);

    let csv_path = format!("/prov_mgr/rollouts/{id}.csv");
    let export = |token: &str| {
        let r = s.call(token, "GET", &csv_path, None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.headers
                .get("content-type")
                .is_some_and(|t| t.starts_with("text/csv")),
            "{:?}",
            r.headers
        );
        csv_rows(r.body.as_str().expect("CSV text"))
    };
    let rows = export(&a);
    assert_eq!(column(&rows, 0), codes);
    assert_eq!(
        column(&rows, 1),
        [format!("'{formula}"), quoted.to_owned(), "Bob".to_owned()],
        "the formula is inert, the comma and quotes survive"
    );
    assert_eq!(column(&rows, 2), ["desk"; 3]);
    assert_eq!(column(&rows, 3), ["pending"; 3]);
    assert_eq!(column(&rows, 4), ["", "", ""]);

    // Bob's code is used, the second one revoked.
    let before = provisiond::model::now();
    let r = s.call(
        &s.root,
        "POST",
        "/prov_mgr/redeem",
        Some(json!({"code": codes[2], "mac": "80:5e:c0:03:00:01"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let after = provisiond::model::now();
    s.ok(
        &a,
        "DELETE",
        &format!("/prov_mgr/codes/{}", codes[1]),
        None,
        204,
    );
    let rows = export(&a);
    assert_eq!(column(&rows, 3), ["pending", "revoked", "registered"]);
    assert_eq!(column(&rows, 4), ["", "", "80:5e:c0:03:00:01"]);
    let at = humantime::parse_rfc3339(&rows[2][5]).expect("an RFC 3339 time");
    let at = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(
        (before..=after).contains(&at),
        "{at} not in {before}..={after}"
    );
    assert_eq!(rows[0][5], "");
    let shown = s.ok(&a, "GET", &format!("/prov_mgr/rollouts/{id}"), None, 200);
    let states: Vec<&str> = shown["rollout"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["state"].as_str())
        .collect();
    assert_eq!(states, ["pending", "revoked", "registered"]);

    // Without codes.read: tails only, and no sheet.
    let reader = common::api_token(&s.store, "acme", &["provd.prov_mgr.rollouts.read"], None);
    let shown = s.ok(
        &reader,
        "GET",
        &format!("/prov_mgr/rollouts/{id}"),
        None,
        200,
    );
    let tails: Vec<&str> = shown["rollout"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["code"].as_str())
        .collect();
    let want: Vec<String> = codes
        .iter()
        .map(|c| provisiond::model::code_tail(c))
        .collect();
    assert_eq!(tails, want);
    assert!(!shown.to_string().contains(&codes[0]), "{shown}");
    assert_eq!(s.call(&reader, "GET", &csv_path, None).status, 403);
}

#[test]
fn an_automatic_url_provisions_a_phone_of_the_root_only() {
    let _counter = hijack_counter();
    let s = start(HttpAuthStrategy::Disabled);
    let acme = s.tenant("acme", ROOT);
    let other = s.tenant("other", ROOT);
    s.config(
        &acme,
        "acme-line",
        json!({"sip_registrar_ip": "10.0.0.5", "sip_lines": {"1": {
            "username": "alice-1001", "password": "line-secret", "display_name": "Alice"
        }}}),
    );
    let category = s.category(&acme, "acme IP Phone", true, Some("acme-line"));
    s.category(&acme, "office", false, Some("acme-line"));
    let set = s.ok(
        &acme,
        "PUT",
        "/prov_mgr/auto",
        Some(json!({"auto": {"token": "abcdef#XYZ"}})),
        200,
    );
    // The seed's example: the space and the `#` encoded.
    let path = "/auto/acme/abcdef%23XYZ/acme%20IP%20Phone/";
    let shown = s.ok(&acme, "GET", "/prov_mgr/auto", None, 200);
    for auto in [&set, &shown] {
        let urls = auto["auto"]["urls"].as_array().expect("urls");
        assert_eq!(urls.len(), 1, "only the provisioning category: {auto}");
        assert_eq!(urls[0]["path"], path);
        assert_eq!(urls[0]["url"], format!("{BASE_URL}{path}"));
    }
    let hijacks = s.metric("provisiond_hijacks_refused_total");
    let failures = s.metric("provisiond_secret_failures_total{secret=\"auto_token\"}");

    let mac = "80:5e:c0:04:00:01";
    let (status, body) = s.fetch_from(
        "127.0.0.1",
        &format!("{path}{}", mac_file(mac)),
        &yealink(mac),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("alice-1001"), "the category's config: {body}");
    let device = s.by_mac(mac).expect("the phone is a device");
    assert_eq!(device.tenant, "acme");
    assert_eq!(device.category.as_deref(), Some(category.as_str()));
    assert!(device.configured);
    let shown = s.ok(
        &acme,
        "GET",
        &format!("/dev_mgr/devices/{}", device.id),
        None,
        200,
    );
    assert_eq!(shown["device"]["provisioned_by"], "auto");
    assert_eq!(shown["device"]["category"], category.as_str());
    assert_eq!(shown["device"]["tenant_uuid"], "acme");
    // Its next fetch leaves it as it is.
    let (status, _) = s.fetch_from(
        "127.0.0.1",
        &format!("{path}{}", mac_file(mac)),
        &yealink(mac),
    );
    assert_eq!(status, 200);
    assert_eq!(s.by_mac(mac).unwrap().admin_password, device.admin_password);

    let count = |token: &str| {
        s.ok(token, "GET", "/dev_mgr/devices", None, 200)["devices"]
            .as_array()
            .map_or(0, Vec::len)
    };
    let in_acme = count(&acme);
    // A wrong token, an unknown tenant, a category that is not for provisioning.
    let stranger = "80:5e:c0:04:00:02";
    for wrong in [
        "/auto/acme/abcdef%23XYW/acme%20IP%20Phone/",
        "/auto/nobody/abcdef%23XYZ/acme%20IP%20Phone/",
        "/auto/acme/abcdef%23XYZ/office/",
    ] {
        let (status, body) = s.fetch_from(
            "127.0.0.1",
            &format!("{wrong}{}", mac_file(stranger)),
            &yealink(stranger),
        );
        assert_eq!(status, 404, "{wrong}: {body}");
    }
    assert_eq!(s.by_mac(stranger), None, "a refused URL creates nothing");
    assert_eq!(count(&acme), in_acme);
    assert_eq!(
        s.metric("provisiond_secret_failures_total{secret=\"auto_token\"}"),
        failures + 3.0
    );

    // A phone of another tenant is not taken.
    let foreign = "80:5e:c0:04:00:03";
    let id = s.device(&other, foreign, None);
    let before = s.stored(&id);
    let (status, body) = s.fetch_from(
        "127.0.0.1",
        &format!("{path}{}", mac_file(foreign)),
        &yealink(foreign),
    );
    assert_eq!(status, 404, "{body}");
    // Identification records what the phone says, as on any fetch; provisioning changes
    // nothing.
    let after = s.stored(&id);
    assert_eq!(
        (
            &after.tenant,
            &after.category,
            &after.config,
            after.configured,
            &after.provisioned,
        ),
        (
            &before.tenant,
            &before.category,
            &before.config,
            before.configured,
            &before.provisioned,
        )
    );
    assert_eq!(s.metric("provisiond_hijacks_refused_total"), hijacks + 1.0);
    assert_eq!(count(&acme), in_acme);
}

/// The lines of `file` that start with `prefix`.
fn lines_with<'a>(file: &'a str, prefix: &str) -> Vec<&'a str> {
    file.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn jobs_layer_over_their_category_and_the_latest_wins() {
    let s = start(HttpAuthStrategy::Disabled);
    let a = s.tenant("acme", ROOT);
    let b = s.tenant("beta", ROOT);
    let c = s.category(&a, "C", true, None);
    s.category(&a, "D", true, None);
    s.category(&b, "C", true, None);
    // Each phone asks once (it becomes a T54W of the root), then joins its category.
    let phones = [
        ("80:5e:c0:05:00:01", &a, "C"),
        ("80:5e:c0:05:00:02", &a, "D"),
        ("80:5e:c0:05:00:03", &b, "C"),
    ];
    for (mac, token, category) in phones {
        s.phone_file(mac);
        let code = s.code(token, category);
        let r = s.call(
            &s.root,
            "POST",
            "/prov_mgr/redeem",
            Some(json!({"code": code, "mac": mac})),
        );
        assert_eq!(r.status, 200, "{mac}: {}", r.body);
    }
    let [(target, ..), (other_category, ..), (other_tenant, ..)] = phones;
    let job = |body: Value| -> String {
        let created = s.ok(
            &a,
            "POST",
            "/prov_mgr/jobs",
            Some(json!({ "job": body })),
            201,
        );
        created["id"].as_str().expect("job id").to_owned()
    };
    job(
        json!({"category": "C", "kind": "config", "type": "locale", "params": {"locale": "fr_FR"}}),
    );
    assert_eq!(
        lines_with(&s.phone_file(target), "lang.gui"),
        ["lang.gui = French"]
    );
    let german = job(
        json!({"category": "C", "kind": "config", "type": "locale", "params": {"locale": "de_DE"}}),
    );
    job(
        json!({"category": "C", "kind": "config", "type": "timezone", "params": {"timezone": "Europe/Paris"}}),
    );
    job(json!({"category": "C", "kind": "firmware", "versions": {
        "T54W": {"version": "96.86.0.100", "file": "T54W-96.86.0.100.rom"}
    }}));
    // A later firmware job for another model leaves the T54W's alone.
    job(json!({"category": "C", "kind": "firmware", "versions": {
        "T46U": {"version": "108.86.0.20", "file": "T46U-108.86.0.20.rom"}
    }}));
    let file = s.phone_file(target);
    assert_eq!(
        lines_with(&file, "lang.gui"),
        ["lang.gui = German"],
        "{file}"
    );
    assert_eq!(
        lines_with(&file, "local_time.time_zone"),
        ["local_time.time_zone = +1"],
        "{file}"
    );
    assert_eq!(
        lines_with(&file, "static.firmware.url"),
        [format!(
            "static.firmware.url = {BASE_URL}/T54W-96.86.0.100.rom"
        )],
        "{file}"
    );
    // A firmware job without versions takes the category's policy as it is now: later
    // changes of the policy do not move it.
    let policy = |version: &str| {
        json!({"category": {"name": "C", "provisioning": true, "firmware": {
            "T54W": {"version": version, "file": format!("T54W-{version}.rom")}
        }}})
    };
    s.ok(
        &a,
        "PUT",
        &format!("/prov_mgr/categories/{c}"),
        Some(policy("96.86.0.110")),
        204,
    );
    let snapshot = job(json!({"category": "C", "kind": "firmware"}));
    s.ok(
        &a,
        "PUT",
        &format!("/prov_mgr/categories/{c}"),
        Some(policy("96.86.0.120")),
        204,
    );
    assert_eq!(
        lines_with(&s.phone_file(target), "static.firmware.url"),
        [format!(
            "static.firmware.url = {BASE_URL}/T54W-96.86.0.110.rom"
        )]
    );
    s.ok(
        &a,
        "DELETE",
        &format!("/prov_mgr/jobs/{snapshot}"),
        None,
        204,
    );
    for untouched in [other_category, other_tenant] {
        let file = s.phone_file(untouched);
        for key in ["lang.gui", "local_time.time_zone", "static.firmware.url"] {
            assert!(
                lines_with(&file, key).is_empty(),
                "{untouched}: {key} in\n{file}"
            );
        }
    }
    // beta sees none of acme's jobs.
    let listed = s.ok(&b, "GET", "/prov_mgr/jobs?recurse=true", None, 200);
    assert_eq!(listed["jobs"], json!([]));

    s.ok(&a, "DELETE", &format!("/prov_mgr/jobs/{german}"), None, 204);
    let file = s.phone_file(target);
    assert_eq!(
        lines_with(&file, "lang.gui"),
        ["lang.gui = French"],
        "{file}"
    );
    assert_eq!(lines_with(&file, "local_time.time_zone").len(), 1);
}

#[test]
fn ten_wrong_codes_from_one_source_then_even_the_right_one_is_refused() {
    let s = start(HttpAuthStrategy::Disabled);
    let a = s.tenant("acme", ROOT);
    s.category(&a, "desk", true, None);
    let id = s.device(&s.root, "80:5e:c0:06:00:01", None);
    let code = s.code(&a, "desk");
    let redeem = |source: &str, code: &str| {
        s.call_from(
            source,
            &s.root,
            "POST",
            "/prov_mgr/redeem",
            by_device(code, &id),
        )
    };
    let last: u32 = code[10..].parse().unwrap();
    for n in 0..10 {
        // Ten distinct codes that differ from the right one in their last two digits only.
        let wrong = format!("{}{:02}", &code[..10], (last + 1 + n) % 100);
        assert_ne!(wrong, code);
        let r = redeem("127.0.0.3", &wrong);
        assert_eq!(r.status, 404, "wrong code {n}: {}", r.body);
        assert_eq!(r.body["error"], "code not accepted");
    }
    let r = redeem("127.0.0.3", &code);
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(
        s.live(&a, &code),
        "a refused attempt does not look at the code"
    );
    assert_eq!(s.stored(&id).tenant, ROOT);
    assert_eq!(
        s.metric("provisiond_secret_failures_total{secret=\"code\"}"),
        10.0
    );
    assert_eq!(
        s.metric("provisiond_secret_attempts_limited_total{secret=\"code\"}"),
        1.0
    );
    // Another source has its own budget.
    let r = redeem("127.0.0.4", &code);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.stored(&id).tenant, "acme");
}

#[test]
fn only_wrong_codes_cost_and_a_pbx_spends_its_phones_budgets() {
    let _counter = hijack_counter();
    let s = start(HttpAuthStrategy::Disabled);
    let a = s.tenant("acme", ROOT);
    let b = s.tenant("bravo", ROOT);
    s.category(&a, "desk", true, None);
    s.category(&b, "desk", true, None);
    // A phone of bravo: acme's right codes are refused for it, a dozen times, for free.
    let foreign = s.device(&s.root, "80:5e:c0:0a:00:01", None);
    let code_b = s.code(&b, "desk");
    let r = s.call(
        &s.root,
        "POST",
        "/prov_mgr/redeem",
        by_device(&code_b, &foreign),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    for n in 0..12 {
        let code = s.code(&a, "desk");
        let r = s.call_from(
            "127.0.0.7",
            &s.root,
            "POST",
            "/prov_mgr/redeem",
            by_device(&code, &foreign),
        );
        assert_eq!(r.status, 403, "hijack attempt {n}: {}", r.body);
    }
    let mine = s.device(&s.root, "80:5e:c0:0a:00:02", Some("10.7.0.2"));
    let code = s.code(&a, "desk");
    let r = s.call_from(
        "127.0.0.7",
        &s.root,
        "POST",
        "/prov_mgr/redeem",
        by_device(&code, &mine),
    );
    assert_eq!(r.status, 200, "right codes cost nothing: {}", r.body);

    // A PBX redeeming by `ip` for its users: the phone that mistyped pays, not its neighbour.
    s.device(&s.root, "80:5e:c0:0a:00:03", Some("10.7.0.3"));
    let neighbour = s.device(&s.root, "80:5e:c0:0a:00:04", Some("10.7.0.4"));
    let wrong = |ip: &str| json!({"code": "000000000000", "ip": ip});
    for n in 0..10 {
        let r = s.call_from(
            "127.0.0.8",
            &s.root,
            "POST",
            "/prov_mgr/redeem",
            Some(wrong("10.7.0.3")),
        );
        assert_eq!(r.status, 404, "wrong code {n}: {}", r.body);
    }
    let code = s.code(&a, "desk");
    let r = s.call_from(
        "127.0.0.8",
        &s.root,
        "POST",
        "/prov_mgr/redeem",
        Some(json!({"code": code, "ip": "10.7.0.3"})),
    );
    assert_eq!(r.status, 429, "the phone that failed ten times: {}", r.body);
    let r = s.call_from(
        "127.0.0.8",
        &s.root,
        "POST",
        "/prov_mgr/redeem",
        Some(json!({"code": code, "ip": "10.7.0.4"})),
    );
    assert_eq!(
        r.status, 200,
        "its neighbour, through the same PBX: {}",
        r.body
    );
    assert_eq!(s.stored(&neighbour).tenant, "acme");
}

#[test]
fn ten_wrong_url_keys_from_one_source_then_even_the_right_one_is_refused() {
    let s = start(HttpAuthStrategy::UrlKey);
    let mut master = s.store.tenant(ROOT).unwrap().unwrap();
    master.provisioning_key = Some("MasterKey-0001".into());
    s.store.update_tenant(&master).unwrap();
    let mac = "80:5e:c0:07:00:01";
    let keyed = |key: &str| format!("/device/provisioning/{key}/{}", mac_file(mac));
    for n in 0..10 {
        let (status, body) = s.fetch_from(
            "127.0.0.5",
            &keyed(&format!("MasterKey-{n:04}x")),
            &yealink(mac),
        );
        assert_eq!(status, 404, "wrong key {n}: {body}");
    }
    let (status, body) = s.fetch_from("127.0.0.5", &keyed("MasterKey-0001"), &yealink(mac));
    assert_eq!(status, 404, "the right key after 10 wrong ones: {body}");
    assert_eq!(s.by_mac(mac), None, "a refused request creates nothing");
    assert_eq!(
        s.metric("provisiond_secret_failures_total{secret=\"url_key\"}"),
        10.0
    );
    assert_eq!(
        s.metric("provisiond_secret_attempts_limited_total{secret=\"url_key\"}"),
        1.0
    );
    let (status, body) = s.fetch_from("127.0.0.6", &keyed("MasterKey-0001"), &yealink(mac));
    assert_eq!(status, 200, "another source: {body}");
}

#[test]
fn provisioned_phones_get_their_own_admin_password_and_reset_keeps_the_tenant() {
    const TENANT_PASSWORD: &str = "TenantAdminPass-0001";
    let s = start(HttpAuthStrategy::Disabled);
    s.ok(
        &s.root,
        "POST",
        "/cfg_mgr/configs",
        Some(json!({"config": {"id": "acme-defaults", "parent_ids": ["base"], "raw_config": {"admin_password": TENANT_PASSWORD}}})),
        201,
    );
    s.ok(
        &s.root,
        "POST",
        "/tenants",
        Some(json!({"tenant": {"id": "acme", "parent": ROOT, "default_config": "acme-defaults"}})),
        201,
    );
    let a = common::api_token(&s.store, "acme", &[], None);
    let category = s.category(&a, "desk", true, None);

    // A phone of acme that no code provisioned gets the tenant's password.
    let plain = "80:5e:c0:08:00:02";
    s.ok(
        &a,
        "POST",
        "/dev_mgr/devices",
        Some(json!({"device": {"mac": plain, "config": "autoprov"}})),
        201,
    );
    let file = s.phone_file(plain);
    assert!(file.contains(TENANT_PASSWORD), "{file}");

    let mac = "80:5e:c0:08:00:01";
    s.phone_file(mac);
    let code = s.code(&a, "desk");
    let r = s.call(
        &s.root,
        "POST",
        "/prov_mgr/redeem",
        Some(json!({"code": code, "mac": mac})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["device"]["id"]
        .as_str()
        .expect("device id")
        .to_owned();
    assert!(!r.body.to_string().contains(TENANT_PASSWORD), "{}", r.body);
    let secrets = format!("/dev_mgr/devices/{id}/secrets");
    let limited = common::api_token(
        &s.store,
        "acme",
        &["provd.dev_mgr.devices.#", "provd.dev_mgr.read"],
        None,
    );
    assert_eq!(s.call(&limited, "GET", &secrets, None).status, 403);
    let shown = s.ok(&a, "GET", &secrets, None, 200);
    let password = shown["secrets"]["admin_password"]
        .as_str()
        .expect("a password")
        .to_owned();
    assert!(password.chars().count() >= 16, "{password}");
    assert_ne!(password, TENANT_PASSWORD);
    // Only the secrets route shows it.
    assert!(!r.body.to_string().contains(&password), "{}", r.body);
    for path in [
        format!("/dev_mgr/devices/{id}"),
        "/dev_mgr/devices".to_owned(),
    ] {
        let shown = s.ok(&a, "GET", &path, None, 200);
        assert!(!shown.to_string().contains(&password), "{path}: {shown}");
    }
    let file = s.phone_file(mac);
    assert!(file.contains(&password), "{file}");
    assert!(!file.contains(TENANT_PASSWORD), "{file}");

    // A rotation job takes no parameters, and gives the category's phones new passwords now.
    let rotation = |params: Value| {
        s.call(
            &a,
            "POST",
            "/prov_mgr/jobs",
            Some(json!({"job": {"category": "desk", "kind": "config",
                "type": "admin_password_rotation", "params": params}})),
        )
    };
    let r = rotation(json!({"admin_password": "chosen"}));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        s.ok(&a, "GET", &secrets, None, 200),
        shown,
        "a refused job rotates nothing"
    );
    let r = rotation(json!({}));
    assert_eq!(r.status, 201, "{}", r.body);
    let rotated = s.ok(&a, "GET", &secrets, None, 200)["secrets"]["admin_password"]
        .as_str()
        .expect("a password")
        .to_owned();
    assert!(rotated.chars().count() >= 16, "{rotated}");
    assert_ne!(rotated, password);
    let file = s.phone_file(mac);
    assert!(
        file.contains(&rotated) && !file.contains(&password),
        "{file}"
    );
    // A phone outside the category keeps the tenant's password.
    assert!(s.phone_file(plain).contains(TENANT_PASSWORD));
    let password = rotated;

    let r = s.call(&a, "POST", &format!("/dev_mgr/devices/{id}/reset"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let reset = s.stored(&id);
    assert_eq!(reset.tenant, "acme");
    assert_eq!(reset.config.as_deref(), Some("autoprov"));
    assert_eq!(reset.category, None);
    assert!(!reset.configured);
    assert_ne!(reset.category.as_deref(), Some(category.as_str()));
    let file = s.phone_file(mac);
    assert!(file.contains("No SIP line is assigned"), "{file}");
    // Back in autoprov, the phone keeps its own password: never the tenant's.
    assert!(file.contains(&password), "{file}");
    assert!(!file.contains(TENANT_PASSWORD), "{file}");
    assert_eq!(
        s.stored(&id).tenant,
        "acme",
        "the fetch after reset keeps it"
    );
}

#[test]
fn no_log_line_holds_a_whole_code() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = common::write_config(dir, "[log]\nlevel = \"debug\"\n");
    let mut daemon = common::Daemon::start({
        let mut cmd = common::command(dir);
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    let http = common::listening_on(&daemon.expect_line(&["HTTP provisioning on"]));
    daemon.expect_line(&["ready"]);
    let socket = dir.join("api.sock");
    let via = ["--unix-socket", socket.to_str().unwrap()];
    let call = |method: &str, path: &str, body: Option<Value>| {
        curl(
            &via,
            &format!("http://local/api/provd/0.2{path}"),
            method,
            &[],
            body.map(|b| (MEDIA.to_owned(), b.to_string())),
        )
    };
    let r = call(
        "POST",
        "/prov_mgr/categories",
        Some(json!({"category": {"name": "desk", "provisioning": true}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let issue = || {
        let r = call(
            "POST",
            "/prov_mgr/codes",
            Some(json!({"code": {"category": "desk"}})),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["code"]["code"].as_str().expect("code").to_owned()
    };
    let used = issue();
    let revoked = issue();
    let wrong = format!("{}{}", &used[..11], (used.as_bytes()[11] - b'0' + 1) % 10);
    let redeem = |code: &str| {
        call(
            "POST",
            "/prov_mgr/redeem",
            Some(json!({"code": code, "mac": "80:5e:c0:09:00:01"})),
        )
    };
    assert_eq!(redeem(&wrong).status, 404);
    assert_eq!(
        call("GET", &format!("/prov_mgr/codes/{revoked}"), None).status,
        200
    );
    assert_eq!(
        call("DELETE", &format!("/prov_mgr/codes/{revoked}"), None).status,
        204
    );
    assert_eq!(redeem(&revoked).status, 404);
    assert_eq!(redeem(&used).status, 200);
    // An automatic URL's token is a secret too: the access log masks it.
    const TOKEN: &str = "Sekr3t-auto-token";
    let r = call(
        "PUT",
        "/prov_mgr/auto",
        Some(json!({"auto": {"token": TOKEN}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let auto = curl(
        &["-A", &yealink("80:5e:c0:09:00:02")],
        &format!("http://{http}/auto/master/{TOKEN}/desk/805ec0090002.cfg"),
        "GET",
        &[],
        None,
    );
    assert_eq!(auto.status, 200, "{}", auto.body);
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(daemon.wait().success());

    let lines = &daemon.seen;
    assert!(
        lines.iter().any(|l| l.contains("DEBUG")),
        "debug lines are written too:\n{}",
        lines.join("\n")
    );
    let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(TOKEN)).collect();
    assert!(leaks.is_empty(), "the token logged:\n{leaks:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("/auto/master/…/desk/805ec0090002.cfg")),
        "the masked access line:\n{}",
        lines.join("\n")
    );
    for code in [&used, &revoked, &wrong] {
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(code.as_str())).collect();
        assert!(leaks.is_empty(), "{code} logged in full:\n{leaks:#?}");
    }
    let tail = |code: &str, what: &str| {
        let tail = format!("…{}", &code[9..]);
        assert!(
            lines.iter().any(|l| l.contains(&tail) && l.contains(what)),
            "no {what:?} line with {tail}:\n{}",
            lines.join("\n")
        );
    };
    tail(&used, "issued");
    tail(&used, "redeemed");
    tail(&wrong, "refused");
    tail(&revoked, "revoked");
}
