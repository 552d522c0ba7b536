//! The REST API through a real HTTP client (curl) against a server on 127.0.0.1: wazo-provd
//! client compatibility, every route's errors, authentication, and tenant isolation.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::{curl, ApiReply as Reply, InProcess};
use provisiond::http::api::router;
use provisiond::http::HttpLimits;
use provisiond::model::{self};
use provisiond::store::Store;
use serde_json::{json, Value};

/// Connection lifetime in these tests.
const MAX_CONN_SECS: u64 = 60;
const MEDIA: &str = "application/vnd.proformatique.provd+json";

struct Api {
    addr: SocketAddr,
    store: Store,
    _http: InProcess,
    _dir: tempfile::TempDir,
}

/// Request body limit of the test servers.
const MAX_BODY: usize = 64 * 1024;
/// Request head limit of the test servers.
const MAX_HEAD: usize = 16384;

fn start() -> Api {
    start_with(MAX_BODY)
}

/// The API router over `store`, with the repository's plugins.
fn app(store: &Store, max_body: usize) -> axum::Router {
    router(Arc::new(common::api_state(store)), max_body)
}

/// The limits of the daemon's API listeners, with shorter times.
fn limits() -> HttpLimits {
    HttpLimits {
        max_request_bytes: MAX_HEAD,
        ..common::api_limits(MAX_CONN_SECS)
    }
}

fn start_with(max_body: usize) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults("master").unwrap();
    let http = InProcess::start(app(&store, max_body), limits(), None);
    Api {
        addr: http.addr,
        store,
        _http: http,
        _dir: dir,
    }
}

impl Api {
    /// A token of `tenant` with `acl` (default `provd.#`); creates the tenant if needed.
    fn token(&self, tenant: &str, acl: &[&str], expires: Option<u64>) -> String {
        common::api_token(&self.store, tenant, acl, expires)
    }

    /// One request; `token` None sends none; `body` is sent with the provd media type.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        tenant: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.raw(
            method,
            path,
            token,
            tenant,
            body.map(|b| (MEDIA.to_owned(), b.to_string())),
        )
    }

    fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        tenant: Option<&str>,
        body: Option<(String, String)>,
    ) -> Reply {
        let mut headers = Vec::new();
        if let Some(t) = token {
            headers.push(format!("X-Auth-Token: {t}"));
        }
        if let Some(t) = tenant {
            headers.push(format!("Wazo-Tenant: {t}"));
        }
        curl(
            &[],
            &format!("http://{}{path}", self.addr),
            method,
            &headers,
            body,
        )
    }
}

fn enc(v: &Value) -> String {
    percent_encoding::utf8_percent_encode(&v.to_string(), percent_encoding::NON_ALPHANUMERIC)
        .to_string()
}

#[test]
fn wazo_provd_client_shaped_requests_work() {
    let api = start();
    let t = api.token("master", &[], None);
    let tk = Some(t.as_str());
    for base in ["/0.2", "/api/provd/0.2"] {
        let root = api.call("GET", &format!("{base}/"), tk, None, None);
        assert_eq!(root.status, 200);
        assert_eq!(
            root.headers.get("content-type").map(String::as_str),
            Some(MEDIA)
        );
        assert!(root.body["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["rel"] == "dev" && l["href"] == format!("{base}/dev_mgr")));
    }
    // Devices: create, read, search, update, delete.
    let created = api.call("POST", "/0.2/dev_mgr/devices", tk, None, Some(json!({"device": {"mac": "00:15:65:AA:BB:CC", "ip": "10.0.0.5", "plugin": "yealink", "config": "autoprov", "X_custom": "kept"}})));
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created.headers.get("location"),
        Some(&format!("/0.2/dev_mgr/devices/{id}"))
    );
    let device = api
        .call("GET", &format!("/0.2/dev_mgr/devices/{id}"), tk, None, None)
        .body["device"]
        .clone();
    assert_eq!(device["mac"], "00:15:65:aa:bb:cc");
    assert_eq!(
        (
            device["tenant_uuid"].as_str(),
            device["is_new"].as_bool(),
            device["configured"].as_bool()
        ),
        (Some("master"), Some(true), Some(true))
    );
    assert_eq!(device["X_custom"], "kept");
    api.call(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        None,
        Some(json!({"device": {"id": "second", "mac": "00:15:65:00:00:02", "ip": "10.0.0.6"}})),
    );
    let q = api.call(
        "GET",
        &format!(
            "/0.2/dev_mgr/devices?q={}",
            enc(&json!({"mac": "00:15:65:aa:bb:cc"}))
        ),
        tk,
        None,
        None,
    );
    assert_eq!(q.body["devices"].as_array().unwrap().len(), 1);
    use base64::Engine;
    let q64 = base64::engine::general_purpose::STANDARD
        .encode(json!({"ip": {"$in": ["10.0.0.6"]}}).to_string());
    let found = api.call(
        "GET",
        &format!(
            "/0.2/dev_mgr/devices?q64={}&fields=ip",
            enc(&json!(q64)).trim_matches('%').replace("%22", "")
        ),
        tk,
        None,
        None,
    );
    let found = if found.status == 200 {
        found
    } else {
        api.call(
            "GET",
            &format!("/0.2/dev_mgr/devices?q64={q64}&fields=ip"),
            tk,
            None,
            None,
        )
    };
    assert_eq!(
        found.body["devices"],
        json!([{"id": "second", "ip": "10.0.0.6"}]),
        "{:?}",
        found.body
    );
    let sorted = api.call(
        "GET",
        "/0.2/dev_mgr/devices?sort=ip&sort_ord=DESC&limit=1",
        tk,
        None,
        None,
    );
    assert_eq!(sorted.body["devices"][0]["ip"], "10.0.0.6");
    let skipped = api.call("GET", "/0.2/dev_mgr/devices?sort=ip&skip=1", tk, None, None);
    assert_eq!(skipped.body["devices"][0]["ip"], "10.0.0.6");
    let put = api.call(
        "PUT",
        &format!("/0.2/dev_mgr/devices/{id}"),
        tk,
        None,
        Some(json!({"device": {"id": id, "mac": "00:15:65:aa:bb:cc", "description": "desk"}})),
    );
    assert_eq!(put.status, 204, "{:?}", put.body);
    let after = api
        .call("GET", &format!("/0.2/dev_mgr/devices/{id}"), tk, None, None)
        .body["device"]
        .clone();
    assert_eq!(after["description"], "desk");
    assert!(
        after.get("ip").is_none() && after.get("X_custom").is_none(),
        "PUT replaces the whole device: {after}"
    );
    // Operations.
    let sync = api.call(
        "POST",
        "/0.2/dev_mgr/synchronize",
        tk,
        None,
        Some(json!({"id": id})),
    );
    assert_eq!(sync.status, 201);
    let op = sync.headers["location"].clone();
    assert!(op.starts_with("/0.2/dev_mgr/synchronize/"));
    let status = api.call("GET", &op, tk, None, None);
    assert_eq!(status.status, 200);
    assert!(status.body["status"].as_str().is_some_and(|s| [
        "waiting", "progress", "success", "fail"
    ]
    .iter()
    .any(|st| s.starts_with(st))));
    assert_eq!(api.call("DELETE", &op, tk, None, None).status, 204);
    assert_eq!(api.call("GET", &op, tk, None, None).status, 404);
    assert_eq!(
        api.call(
            "POST",
            "/0.2/dev_mgr/reconfigure",
            tk,
            None,
            Some(json!({"id": id}))
        )
        .status,
        204
    );
    assert_eq!(
        api.call(
            "DELETE",
            &format!("/0.2/dev_mgr/devices/{id}"),
            tk,
            None,
            None
        )
        .status,
        204
    );
    assert_eq!(
        api.call("GET", &format!("/0.2/dev_mgr/devices/{id}"), tk, None, None)
            .status,
        404
    );

    // DHCP info feeds identification.
    let dhcp = api.call("POST", "/0.2/dev_mgr/dhcpinfo", tk, None, Some(json!({"dhcp_info": {"op": "commit", "ip": "10.0.0.9", "mac": "80:5e:c0:00:00:09", "options": ["06079.65.61.6c.69.6e.6b"]}})));
    assert_eq!(dhcp.status, 204, "{:?}", dhcp.body);
    let dev = api
        .store
        .device_by_mac(&"80:5e:c0:00:00:09".parse().unwrap())
        .unwrap()
        .expect("created from DHCP info");
    assert_eq!(
        (dev.vendor.as_deref(), dev.plugin.as_deref()),
        (Some("Yealink"), Some("yealink"))
    );

    // Configs.
    let c = api.call("POST", "/0.2/cfg_mgr/configs", tk, None, Some(json!({"config": {"id": "reg1", "parent_ids": ["base"], "raw_config": {"sip_registrar_ip": "10.0.0.10"}, "X_type": "registrar"}})));
    assert_eq!(c.status, 201, "{:?}", c.body);
    assert_eq!(
        c.headers.get("location").map(String::as_str),
        Some("/0.2/cfg_mgr/configs/reg1")
    );
    let q64 = base64::engine::general_purpose::STANDARD
        .encode(json!({"X_type": "registrar"}).to_string());
    let regs = api.call(
        "GET",
        &format!("/0.2/cfg_mgr/configs?q64={q64}"),
        tk,
        None,
        None,
    );
    assert_eq!(
        regs.body["configs"].as_array().map(|a| a.len()),
        Some(1),
        "{:?}",
        regs.body
    );
    api.call("POST", "/0.2/cfg_mgr/configs", tk, None, Some(json!({"config": {"id": "dev1", "parent_ids": ["reg1"], "raw_config": {"sip_lines": {"1": {"username": "1001"}}}}})));
    let raw = api.call("GET", "/0.2/cfg_mgr/configs/dev1/raw", tk, None, None);
    assert_eq!(
        raw.body["raw_config"],
        json!({"sip_registrar_ip": "10.0.0.10", "sip_lines": {"1": {"username": "1001"}}})
    );
    assert_eq!(
        api.call(
            "PUT",
            "/0.2/cfg_mgr/configs/dev1",
            tk,
            None,
            Some(json!({"config": {"id": "dev1", "parent_ids": ["base"], "raw_config": {}}}))
        )
        .status,
        204
    );
    assert_eq!(
        api.call("GET", "/0.2/cfg_mgr/configs/dev1", tk, None, None)
            .body["config"]["parent_ids"],
        json!(["base"])
    );
    assert_eq!(
        api.call("DELETE", "/0.2/cfg_mgr/configs/base", tk, None, None)
            .status,
        403,
        "built-in configs stay"
    );
    assert_eq!(
        api.call("DELETE", "/0.2/cfg_mgr/configs/dev1", tk, None, None)
            .status,
        204
    );
    api.call("POST", "/0.2/cfg_mgr/configs", tk, None, Some(json!({"config": {"id": "ap-template", "parent_ids": ["base"], "raw_config": {}, "role": "autocreate"}})));
    let auto = api.call("POST", "/0.2/cfg_mgr/autocreate", tk, None, Some(json!({})));
    assert_eq!(auto.status, 201, "{:?}", auto.body);
    let auto_cfg = api
        .call(
            "GET",
            &format!("/0.2/cfg_mgr/configs/{}", auto.body["id"].as_str().unwrap()),
            tk,
            None,
            None,
        )
        .body["config"]
        .clone();
    assert_eq!(
        (
            auto_cfg["transient"].as_bool(),
            auto_cfg["parent_ids"].clone()
        ),
        (Some(true), json!(["ap-template"]))
    );

    // Configure parameters.
    let params = api.call("GET", "/0.2/configure", tk, None, None);
    assert!(params.body["params"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["id"] == "provisioning_key"));
    assert_eq!(
        api.call(
            "PUT",
            "/0.2/configure/provisioning_key",
            tk,
            None,
            Some(json!({"param": {"value": "a1b2c3d4e5f6g7h8"}}))
        )
        .status,
        204
    );
    assert_eq!(
        api.call("GET", "/0.2/configure/provisioning_key", tk, None, None)
            .body,
        json!({"param": {"value": "a1b2c3d4e5f6g7h8"}})
    );
    assert_eq!(
        api.call(
            "PUT",
            "/0.2/configure/NAT",
            tk,
            None,
            Some(json!({"param": {"value": "1"}}))
        )
        .status,
        204
    );
    assert_eq!(
        api.call("GET", "/0.2/configure/NAT", tk, None, None).body["param"]["value"],
        1
    );
    assert_eq!(
        api.call(
            "PUT",
            "/0.2/configure/provisioning_key",
            tk,
            None,
            Some(json!({"param": {"value": null}}))
        )
        .status,
        204
    );
    assert_eq!(
        api.call("GET", "/0.2/configure/provisioning_key", tk, None, None)
            .body["param"]["value"],
        Value::Null
    );

    // Plugins and status.
    let plugins = api.call("GET", "/0.2/pg_mgr/plugins", tk, None, None);
    assert!(plugins.body["plugins"]["yealink"]["links"].is_array());
    let info = api.call("GET", "/0.2/pg_mgr/plugins/yealink/info", tk, None, None);
    assert_eq!(info.body["plugin_info"]["vendor"], "Yealink");
    assert_eq!(
        info.body["plugin_info"]["identify"],
        json!(["user_agent", "dhcp_vendor_class", "filename"])
    );
    assert_eq!(
        api.call(
            "POST",
            "/0.2/pg_mgr/reload",
            tk,
            None,
            Some(json!({"id": "yealink"}))
        )
        .status,
        204
    );
    assert_eq!(
        api.call("GET", "/0.2/status", tk, None, None).body["rest_api"],
        "ok"
    );
}

#[test]
fn invalid_input_gets_a_clear_error() {
    let api = start();
    let t = api.token("master", &[], None);
    let tk = Some(t.as_str());
    let cases: Vec<(&str, &str, Option<Value>, u16, &str)> = vec![
        (
            "POST",
            "/0.2/dev_mgr/devices",
            Some(json!({"device": {"mac": "not-a-mac"}})),
            400,
            "mac",
        ),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            Some(json!({"device": {"ip": "999.1.1.1"}})),
            400,
            "ip",
        ),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            Some(json!({"device": {"col\u{1}our": "red"}})),
            400,
            "key name",
        ),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            Some(json!({"device": {"id": "a/b"}})),
            400,
            "id",
        ),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            Some(json!({"device": {"config": "nope"}})),
            400,
            "config",
        ),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            Some(json!({"devices": {}})),
            400,
            "device",
        ),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            Some(json!({"device": {"vendor": 5}})),
            400,
            "vendor",
        ),
        (
            "PUT",
            "/0.2/dev_mgr/devices/nope",
            Some(json!({"device": {}})),
            404,
            "nope",
        ),
        (
            "POST",
            "/0.2/dev_mgr/synchronize",
            Some(json!({})),
            400,
            "id",
        ),
        (
            "POST",
            "/0.2/dev_mgr/synchronize",
            Some(json!({"id": "nope"})),
            404,
            "nope",
        ),
        (
            "POST",
            "/0.2/dev_mgr/reconfigure",
            Some(json!({"id": "nope"})),
            400,
            "nope",
        ),
        (
            "POST",
            "/0.2/dev_mgr/dhcpinfo",
            Some(
                json!({"dhcp_info": {"op": "renew", "ip": "10.0.0.1", "mac": "00:15:65:00:00:01"}}),
            ),
            400,
            "op",
        ),
        (
            "POST",
            "/0.2/dev_mgr/dhcpinfo",
            Some(
                json!({"dhcp_info": {"op": "commit", "ip": "10.0.0.1", "mac": "00:15:65:00:00:01", "options": ["6x"]}}),
            ),
            400,
            "options[0]",
        ),
        (
            "POST",
            "/0.2/cfg_mgr/configs",
            Some(json!({"config": {"raw_config": {}}})),
            400,
            "parent_ids",
        ),
        (
            "POST",
            "/0.2/cfg_mgr/configs",
            Some(json!({"config": {"parent_ids": []}})),
            400,
            "raw_config",
        ),
        (
            "POST",
            "/0.2/cfg_mgr/configs",
            Some(json!({"config": {"parent_ids": ["ghost"], "raw_config": {}}})),
            400,
            "ghost",
        ),
        (
            "POST",
            "/0.2/cfg_mgr/configs",
            Some(json!({"config": {"id": "base", "parent_ids": [], "raw_config": {}}})),
            409,
            "base",
        ),
        ("GET", "/0.2/cfg_mgr/configs/nope/raw", None, 404, "nope"),
        (
            "PUT",
            "/0.2/configure/provisioning_key",
            Some(json!({"param": {"value": "short"}})),
            400,
            "param.value",
        ),
        (
            "PUT",
            "/0.2/configure/provisioning_key",
            Some(json!({"param": {"value": "bad-chars!!"}})),
            400,
            "param.value",
        ),
        (
            "PUT",
            "/0.2/configure/NAT",
            Some(json!({"param": {"value": "2"}})),
            400,
            "NAT",
        ),
        (
            "PUT",
            "/0.2/configure/locale",
            Some(json!({"param": {"value": "french"}})),
            400,
            "locale",
        ),
        ("GET", "/0.2/configure/nope", None, 404, "nope"),
        (
            "PUT",
            "/0.2/configure/locale",
            Some(json!({"value": "fr_FR"})),
            400,
            "param",
        ),
        ("GET", "/0.2/pg_mgr/plugins/nope/info", None, 404, "nope"),
        (
            "POST",
            "/0.2/pg_mgr/reload",
            Some(json!({"id": "nope"})),
            400,
            "nope",
        ),
        (
            "GET",
            "/0.2/dev_mgr/devices?q=%7Bnot%20json",
            None,
            400,
            "q",
        ),
        (
            "GET",
            "/0.2/dev_mgr/devices?q=%7B%22mac%22%3A%7B%22%24regex%22%3A%22x%22%7D%7D",
            None,
            400,
            "$regex",
        ),
        ("GET", "/0.2/dev_mgr/devices?limit=-1", None, 400, "limit"),
        (
            "GET",
            "/0.2/dev_mgr/devices?sort_ord=SIDEWAYS",
            None,
            400,
            "sort_ord",
        ),
        ("GET", "/0.2/nope", None, 404, "no such resource"),
        ("DELETE", "/0.2/tenants/master", None, 403, "master"),
    ];
    for (method, path, body, status, fragment) in cases {
        let r = api.call(method, path, tk, None, body.clone());
        assert_eq!(r.status, status, "{method} {path} {body:?}: {:?}", r.body);
        let text = r.body.to_string();
        assert!(
            text.contains(fragment),
            "{method} {path}: {fragment:?} not in {text}"
        );
        assert!(
            r.body.get("error").is_some(),
            "{method} {path}: JSON error body: {text}"
        );
    }
    let bad_json = api.raw(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        None,
        Some((MEDIA.into(), "{\"device\": ".into())),
    );
    assert_eq!(bad_json.status, 400);
    let media = api.raw(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        None,
        Some(("text/plain".into(), "{}".into())),
    );
    assert_eq!(media.status, 415);
    let plain_json = api.raw(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        None,
        Some((
            "application/json; charset=utf-8".into(),
            json!({"device": {}}).to_string(),
        )),
    );
    assert_eq!(plain_json.status, 201, "plain JSON is accepted too");
    let huge = api.raw(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        None,
        Some((
            MEDIA.into(),
            format!(
                "{{\"device\": {{\"description\": \"{}\"}}}}",
                "x".repeat(100_000)
            ),
        )),
    );
    assert_eq!(huge.status, 413, "bodies over the limit are refused");
}

/// Checks that `r` is the API's JSON error: `status`, the provd media type, exactly
/// `{"error": <text>, "details": …}`; with `field`, details name it and their message holds
/// `fragment`, otherwise the error text holds it.
#[track_caller]
fn assert_error(r: &Reply, status: u16, field: Option<&str>, fragment: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some(MEDIA),
        "{:?}",
        r.body
    );
    let body = r
        .body
        .as_object()
        .unwrap_or_else(|| panic!("not JSON: {:?}", r.body));
    assert_eq!(body.len(), 2, "{:?}", r.body);
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{:?}", r.body));
    match field {
        Some(field) => {
            assert_eq!(r.body["details"]["field"], field, "{:?}", r.body);
            let message = r.body["details"]["message"].as_str().unwrap_or("");
            assert!(
                message.contains(fragment),
                "{fragment:?} not in {:?}",
                r.body
            );
        }
        None => assert!(error.contains(fragment), "{fragment:?} not in {:?}", r.body),
    }
}

/// Everything a refused write must leave alone.
fn snapshot(store: &Store) -> String {
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}",
        store.devices().unwrap(),
        store.configs().unwrap(),
        store.tenants().unwrap(),
        store.tokens().unwrap()
    )
}

#[test]
fn data_after_the_json_body_is_refused() {
    let api = start();
    let t = api.token("master", &[], None);
    let tk = Some(t.as_str());
    let created = api.call(
        "POST",
        "/0.2/cfg_mgr/configs",
        tk,
        None,
        Some(json!({"config": {"id": "c1", "parent_ids": ["base"], "raw_config": {}}})),
    );
    assert_eq!(created.status, 201);
    let before = snapshot(&api.store);
    let bodies = [
        ("POST", "/0.2/dev_mgr/devices", r#"{"device": {}} trailing"#),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            r#"{"device": {}}{"device": {}}"#,
        ),
        ("POST", "/0.2/dev_mgr/devices", r#"{"device": {}} 1"#),
        (
            "PUT",
            "/0.2/cfg_mgr/configs/c1",
            r#"{"config": {"parent_ids": [], "raw_config": {"x": 1}}},"#,
        ),
        ("POST", "/0.2/tenants", r#"{"tenant": {"id": "tx"}}]"#),
        ("POST", "/0.2/dev_mgr/reconfigure", r#"{"id": "x"} {"#),
    ];
    for (method, path, text) in bodies {
        let r = api.raw(method, path, tk, None, Some((MEDIA.into(), text.into())));
        assert_error(&r, 400, Some("body"), "data after the JSON value");
        assert_eq!(snapshot(&api.store), before, "{method} {path} {text}");
    }
    // Whitespace after the value is not data.
    let r = api.raw(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        None,
        Some((
            MEDIA.into(),
            "{\"device\": {\"id\": \"d1\"}}\r\n \t\n".into(),
        )),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
}

#[test]
fn router_and_server_errors_are_json_errors() {
    let api = start();
    let t = api.token("master", &[], None);
    let tk = Some(t.as_str());
    for path in [
        "/0.2/nope",
        "/nope",
        "/api/provd/0.2/dev_mgr/nothing",
        "/0.2/dev_mgr/devices/a/b",
    ] {
        let r = api.call("GET", path, tk, None, None);
        assert_error(&r, 404, None, "no such resource");
    }
    // A known path with a method it does not have, with and without a trailing slash.
    for path in [
        "/0.2/dev_mgr/devices",
        "/0.2/dev_mgr/devices/",
        "/api/provd/0.2/status",
    ] {
        let r = api.call("PATCH", path, tk, None, None);
        assert_error(&r, 405, None, "method PATCH is not allowed");
        assert!(r.headers.contains_key("allow"), "{path}: {:?}", r.headers);
    }
    let r = api.call("DELETE", "/0.2/dev_mgr/devices", tk, None, None);
    assert_error(&r, 405, None, "method DELETE is not allowed");
    assert_eq!(
        r.headers.get("allow").map(String::as_str),
        Some("GET,HEAD,POST")
    );

    // A body over the limit names the limit.
    let before = snapshot(&api.store);
    let huge = format!(
        "{{\"device\": {{\"X_big\": \"{}\"}}}}",
        "x".repeat(MAX_BODY)
    );
    let r = api.raw(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        None,
        Some((MEDIA.into(), huge)),
    );
    assert_error(&r, 413, Some("body"), &format!("limit of {MAX_BODY} bytes"));
    assert_eq!(snapshot(&api.store), before);

    // Path segments that are not UTF-8 once percent-decoded name their parameter.
    for (method, path, field) in [
        ("GET", "/0.2/dev_mgr/devices/%FF", "id"),
        ("DELETE", "/0.2/dev_mgr/devices/a%C3%28", "id"),
        ("GET", "/api/provd/0.2/cfg_mgr/configs/%80/raw", "id"),
        ("GET", "/0.2/dev_mgr/synchronize/%FE", "op"),
        ("GET", "/0.2/configure/%FF", "param"),
        ("GET", "/0.2/pg_mgr/plugins/%FF/info", "id"),
    ] {
        let r = api.call(method, path, tk, None, None);
        assert_error(&r, 400, Some(field), "not UTF-8 once percent-decoded");
    }

    // The server's own refusals of oversized heads, worded by the API.
    let long_query = format!("/0.2/dev_mgr/devices?q={}", "x".repeat(MAX_HEAD));
    let r = api.call("GET", &long_query, tk, None, None);
    assert_error(
        &r,
        414,
        None,
        &format!("over the limit of {MAX_HEAD} bytes"),
    );
    let big_header = format!("X-Big: {}", "b".repeat(MAX_HEAD));
    let r = curl(
        &[],
        &format!("http://{}/0.2/dev_mgr/devices", api.addr),
        "GET",
        &[format!("X-Auth-Token: {t}"), big_header],
        None,
    );
    assert_error(
        &r,
        431,
        None,
        &format!("over the limit of {MAX_HEAD} bytes"),
    );
    // Just under the limit is served.
    let fits = format!("X-Fits: {}", "b".repeat(MAX_HEAD - 1024));
    let r = curl(
        &[],
        &format!("http://{}/0.2/dev_mgr/devices", api.addr),
        "GET",
        &[format!("X-Auth-Token: {t}"), fits],
        None,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
}

#[test]
fn the_admin_socket_answers_json_errors_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults("master").unwrap();
    let socket = dir.path().join("api.sock");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let app = app(&store, MAX_BODY);
    let listener = {
        let _guard = runtime.enter();
        tokio::net::UnixListener::bind(&socket).unwrap()
    };
    runtime.spawn(provisiond::http::serve_unix(
        listener,
        app,
        provisiond::http::api::LocalAdmin,
        provisiond::http::LocalPolicy { group: None },
        limits(),
        shutdown,
    ));
    let via = ["--unix-socket", socket.to_str().unwrap()];
    let before = snapshot(&store);
    let r = curl(&via, "http://local/0.2/dev_mgr/devices", "PATCH", &[], None);
    assert_error(&r, 405, None, "method PATCH is not allowed");
    let r = curl(
        &via,
        "http://local/0.2/dev_mgr/devices",
        "POST",
        &[format!("X-Big: {}", "b".repeat(MAX_HEAD))],
        Some((MEDIA.into(), json!({"device": {}}).to_string())),
    );
    assert_error(&r, 431, None, "over the limit");
    let r = curl(
        &via,
        "http://local/0.2/dev_mgr/devices",
        "POST",
        &[],
        Some((MEDIA.into(), r#"{"device": {}} x"#.into())),
    );
    assert_error(&r, 400, Some("body"), "data after the JSON value");
    assert_eq!(snapshot(&store), before);
    // The socket works for a well-formed request.
    let r = curl(&via, "http://local/0.2/dev_mgr/devices", "GET", &[], None);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let _ = stop.send(true);
}

#[test]
fn read_only_fields_must_have_their_type() {
    let api = start();
    let t = api.token("master", &[], None);
    let tk = Some(t.as_str());
    let created = api.call(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        None,
        Some(json!({"device": {"id": "d1", "mac": "00:15:65:00:00:01"}})),
    );
    assert_eq!(created.status, 201);
    let created = api.call(
        "POST",
        "/0.2/cfg_mgr/configs",
        tk,
        None,
        Some(json!({"config": {"id": "c1", "parent_ids": ["base"], "raw_config": {}}})),
    );
    assert_eq!(created.status, 201);
    let before = snapshot(&api.store);
    let devices = [
        ("is_new", json!("yes"), "a boolean"),
        ("configured", json!(1), "a boolean"),
        ("added", json!(5), "a string"),
        ("tenant_uuid", json!(["master"]), "a string"),
        ("id", json!(5), "must be a string"),
    ];
    for (field, value, message) in devices {
        let mut device = json!({"mac": "00:15:65:00:00:01"});
        device[field] = value;
        for (method, path) in [
            ("POST", "/0.2/dev_mgr/devices"),
            ("PUT", "/0.2/dev_mgr/devices/d1"),
        ] {
            let r = api.call(method, path, tk, None, Some(json!({ "device": device })));
            assert_error(&r, 400, Some(field), message);
            assert_eq!(snapshot(&api.store), before, "{method} {field}");
        }
    }
    let configs = [
        ("deletable", json!("no"), "a boolean"),
        ("tenant_uuid", json!(3), "a string"),
        ("id", json!({"x": 1}), "must be a string"),
    ];
    for (field, value, message) in configs {
        let mut config = json!({"parent_ids": ["base"], "raw_config": {"a": 1}});
        config[field] = value;
        for (method, path) in [
            ("POST", "/0.2/cfg_mgr/configs"),
            ("PUT", "/0.2/cfg_mgr/configs/c1"),
        ] {
            let r = api.call(method, path, tk, None, Some(json!({ "config": config })));
            assert_error(&r, 400, Some(field), message);
            assert_eq!(snapshot(&api.store), before, "{method} {field}");
        }
    }
    // A malformed id in a PUT body is refused even though the path's id wins.
    let r = api.call(
        "PUT",
        "/0.2/dev_mgr/devices/d1",
        tk,
        None,
        Some(json!({"device": {"id": "a/b"}})),
    );
    assert_error(&r, 400, Some("id"), "invalid id");
    assert_eq!(snapshot(&api.store), before);
    // Sent back with the types the API shows, they are accepted and ignored.
    let shown = api
        .call("GET", "/0.2/dev_mgr/devices/d1", tk, None, None)
        .body["device"]
        .clone();
    let mut device = shown.clone();
    device["is_new"] = json!(false);
    device["tenant_uuid"] = json!("someone-else");
    device["added"] = json!("auto");
    let r = api.call(
        "PUT",
        "/0.2/dev_mgr/devices/d1",
        tk,
        None,
        Some(json!({ "device": device })),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
    let after = api
        .call("GET", "/0.2/dev_mgr/devices/d1", tk, None, None)
        .body["device"]
        .clone();
    assert_eq!(after, shown);
    let mut config = api
        .call("GET", "/0.2/cfg_mgr/configs/c1", tk, None, None)
        .body["config"]
        .clone();
    // `deletable` is written like wazo-provd's (tests/wazo_compat.rs), `tenant_uuid` ignored.
    config["deletable"] = json!(false);
    config["tenant_uuid"] = Value::Null;
    let r = api.call(
        "PUT",
        "/0.2/cfg_mgr/configs/c1",
        tk,
        None,
        Some(json!({ "config": config })),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
    let stored = api.store.config("c1").unwrap().unwrap();
    assert_eq!(
        (stored.deletable, stored.tenant.as_str()),
        (false, "master")
    );
}

#[test]
fn a_repeated_query_parameter_is_refused() {
    let api = start();
    let t = api.token("master", &[], None);
    let tk = Some(t.as_str());
    let q64 = "e30"; // base64 of {}
    let repeats = [
        ("limit", "limit=1&limit=x"),
        ("limit", "limit=1&limit=1"),
        ("skip", "skip=0&sort=id&skip=1"),
        ("q", "q=%7B%7D&q=%7B%7D"),
        ("q64", &format!("q64={q64}&q64={q64}")),
        ("sort", "sort=id&sort=mac"),
        ("sort_ord", "sort_ord=ASC&sort_ord=DESC"),
        ("recurse", "recurse=true&recurse=false"),
        ("fields", "fields=id&fields=mac"),
    ];
    for list in ["/0.2/dev_mgr/devices", "/api/provd/0.2/cfg_mgr/configs"] {
        for (name, query) in repeats {
            let r = api.call("GET", &format!("{list}?{query}"), tk, None, None);
            assert_error(&r, 400, Some(name), "given more than once");
        }
        // Each once, and unknown parameters (even repeated) are still fine.
        let r = api.call(
            "GET",
            &format!("{list}?limit=1&skip=0&sort=id&x=1&x=2"),
            tk,
            None,
            None,
        );
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
}

#[test]
fn bounds_are_refused_naming_the_field_and_the_bound() {
    // Room in the body for a raw config over its own limit.
    let api = start_with(1 << 20);
    let t = api.token("master", &[], None);
    let tk = Some(t.as_str());
    let made = api.call(
        "POST",
        "/0.2/cfg_mgr/configs",
        tk,
        None,
        Some(json!({"config": {"id": "c1", "parent_ids": ["base"], "raw_config": {}}})),
    );
    assert_eq!(made.status, 201);
    let made = api.call(
        "POST",
        "/0.2/tenants",
        tk,
        None,
        Some(json!({"tenant": {"id": "t1"}})),
    );
    assert_eq!(made.status, 201);
    let made = api.call(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        None,
        Some(json!({"device": {"id": "d1"}})),
    );
    assert_eq!(made.status, 201);

    /// `levels` nested objects, the outermost included.
    fn nested(levels: usize) -> Value {
        (1..levels).fold(json!({}), |inner, _| json!({ "k": inner }))
    }
    let acls = |n: usize| {
        (0..n)
            .map(|i| format!("provd.acl{i}.read"))
            .collect::<Vec<_>>()
    };
    let long = |n: usize| "é".repeat(n);
    let raw_size = 256 * 1024;
    let cases: Vec<(&str, &str, Value, &str, String)> = vec![
        (
            "POST",
            "/0.2/tokens",
            json!({"token": {"tenant": "t1", "acl": acls(257)}}),
            "token.acl",
            "at most 256 entries".into(),
        ),
        (
            "POST",
            "/0.2/tokens",
            json!({"token": {"tenant": "t1", "acl": ["provd.#", format!("provd.{}", "a".repeat(251))]}}),
            "token.acl[1]",
            "at most 256 characters".into(),
        ),
        (
            "POST",
            "/0.2/tokens",
            json!({"token": {"tenant": "t1", "description": long(1025)}}),
            "token.description",
            "at most 1024 characters".into(),
        ),
        (
            "POST",
            "/0.2/tenants",
            json!({"tenant": {"id": "t2", "name": long(1025)}}),
            "tenant.name",
            "at most 1024 characters".into(),
        ),
        (
            "PUT",
            "/0.2/tenants/t1",
            json!({"tenant": {"name": long(1025)}}),
            "tenant.name",
            "at most 1024 characters".into(),
        ),
        (
            "POST",
            "/0.2/tenants",
            json!({"tenant": {"id": "t".repeat(65)}}),
            "tenant.id",
            "1 to 64 characters".into(),
        ),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            json!({"device": {"id": "d".repeat(65)}}),
            "id",
            "1 to 64 characters".into(),
        ),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            json!({"device": {"id": "dé"}}),
            "id",
            "A-Z a-z 0-9 _ . -".into(),
        ),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            json!({"device": {"description": long(257)}}),
            "description",
            "at most 256 characters".into(),
        ),
        (
            "PUT",
            "/0.2/dev_mgr/devices/d1",
            json!({"device": {"X_deep": nested(33)}}),
            "X_deep",
            "deeper than 32 levels".into(),
        ),
        (
            "POST",
            "/0.2/cfg_mgr/configs",
            json!({"config": {"id": "c".repeat(65), "parent_ids": [], "raw_config": {}}}),
            "id",
            "1 to 64 characters".into(),
        ),
        (
            "POST",
            "/0.2/cfg_mgr/configs",
            json!({"config": {"parent_ids": ["p".repeat(65)], "raw_config": {}}}),
            "parent_ids",
            "1 to 64 characters".into(),
        ),
        (
            "POST",
            "/0.2/cfg_mgr/configs",
            json!({"config": {"parent_ids": [], "raw_config": {}, "role": "r".repeat(65)}}),
            "role",
            "at most 64 characters".into(),
        ),
        (
            "PUT",
            "/0.2/cfg_mgr/configs/c1",
            json!({"config": {"parent_ids": [], "raw_config": {"a": nested(32)}}}),
            "raw_config.a",
            "deeper than 32 levels".into(),
        ),
        (
            "PUT",
            "/0.2/cfg_mgr/configs/c1",
            json!({"config": {"parent_ids": [], "raw_config": {}, "X_deep": nested(33)}}),
            "X_deep",
            "deeper than 32 levels".into(),
        ),
        (
            "PUT",
            "/0.2/cfg_mgr/configs/c1",
            json!({"config": {"parent_ids": [], "raw_config": {"big": "x".repeat(raw_size)}}}),
            "raw_config",
            format!("over the limit of {raw_size}"),
        ),
    ];
    for (method, path, body, field, message) in cases {
        let before = snapshot(&api.store);
        let r = api.call(method, path, tk, None, Some(body));
        assert_error(&r, 400, Some(field), &message);
        assert_eq!(snapshot(&api.store), before, "{method} {path} {field}");
    }
    // The bounds themselves are allowed.
    let ok: Vec<(&str, &str, Value)> = vec![
        (
            "POST",
            "/0.2/tokens",
            json!({"token": {"tenant": "t1", "acl": acls(256), "description": long(1024)}}),
        ),
        (
            "POST",
            "/0.2/tokens",
            json!({"token": {"tenant": "t1", "acl": [format!("provd.{}", "a".repeat(250))]}}),
        ),
        (
            "PUT",
            "/0.2/tenants/t1",
            json!({"tenant": {"name": long(1024)}}),
        ),
        (
            "POST",
            "/0.2/dev_mgr/devices",
            json!({"device": {"id": "d".repeat(64), "description": long(256), "X_deep": nested(32)}}),
        ),
        (
            "PUT",
            "/0.2/cfg_mgr/configs/c1",
            json!({"config": {"parent_ids": [], "raw_config": {"a": nested(31)}, "role": "r".repeat(64)}}),
        ),
        // {"big":"…"} is 10 bytes of JSON around the string.
        (
            "PUT",
            "/0.2/cfg_mgr/configs/c1",
            json!({"config": {"parent_ids": [], "raw_config": {"big": "x".repeat(raw_size - 10)}}}),
        ),
    ];
    for (method, path, body) in ok {
        let r = api.call(method, path, tk, None, Some(body));
        assert!(
            r.status == 201 || r.status == 204,
            "{method} {path}: {} {:?}",
            r.status,
            r.body
        );
    }
    let token = api
        .store
        .tokens()
        .unwrap()
        .into_iter()
        .find(|t| t.acl.len() == 256)
        .expect("the token with 256 ACLs");
    assert_eq!(token.description.map(|d| d.chars().count()), Some(1024));
}

#[test]
fn authentication_failures() {
    let api = start();
    let good = api.token("master", &[], None);
    let expired = api.token("master", &[], Some(model::now() - 1));
    let read_only = api.token("master", &["provd.dev_mgr.devices.read"], None);
    let tenant_a = api.token("tenant-a", &[], None);
    api.token("tenant-b", &[], None);
    assert_eq!(
        api.call("GET", "/0.2/dev_mgr/devices", None, None, None)
            .status,
        401
    );
    assert_eq!(
        api.call("GET", "/0.2/dev_mgr/devices", Some("wrong"), None, None)
            .status,
        401
    );
    assert_eq!(
        api.call("GET", "/0.2/dev_mgr/devices", Some(&expired), None, None)
            .status,
        401
    );
    assert_eq!(
        api.call("GET", "/0.2/dev_mgr/devices", Some(&read_only), None, None)
            .status,
        200
    );
    assert_eq!(
        api.call(
            "POST",
            "/0.2/dev_mgr/devices",
            Some(&read_only),
            None,
            Some(json!({"device": {}}))
        )
        .status,
        403
    );
    assert_eq!(
        api.call(
            "GET",
            "/0.2/dev_mgr/devices",
            Some(&tenant_a),
            Some("tenant-b"),
            None
        )
        .status,
        401
    );
    assert_eq!(
        api.call(
            "GET",
            "/0.2/dev_mgr/devices",
            Some(&good),
            Some("no-such-tenant"),
            None
        )
        .status,
        401
    );
    assert_eq!(
        api.call(
            "GET",
            "/0.2/dev_mgr/devices",
            Some(&good),
            Some("tenant-b"),
            None
        )
        .status,
        200
    );
    // A sub-tenant sees its own subtree of tenants, nothing above it.
    let listed = api.call("GET", "/0.2/tenants", Some(&tenant_a), None, None);
    assert_eq!(listed.status, 200);
    let ids: Vec<&str> = listed.body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert!(!ids.contains(&"master"), "{ids:?}");
    for (method, path) in [
        ("POST", "/0.2/tokens"),
        ("POST", "/0.2/pg_mgr/reload"),
        ("PUT", "/0.2/configure/NAT"),
    ] {
        let body = (method != "GET").then(|| json!({}));
        let r = api.call(method, path, Some(&tenant_a), None, body);
        assert!(
            r.status == 403 || r.status == 400,
            "{method} {path} by a sub-tenant: {}",
            r.status
        );
        assert_ne!(r.status, 200);
    }
    assert_eq!(api.call("GET", "/metrics", None, None, None).status, 401);
    let metrics = api.call("GET", "/metrics", Some(&good), None, None);
    assert_eq!(metrics.status, 200);
    assert!(metrics.body.as_str().is_some_and(|m| m.contains("provisiond_api_requests_total{route=\"/0.2/dev_mgr/devices\",method=\"GET\",status=\"401\"}")), "{:?}", metrics.body);
}

/// Three tenants each with a device and a config; every route, with each tenant's token,
/// the master's, and the master's naming a tenant.
#[test]
fn tenant_isolation_matrix() {
    let api = start();
    let master = api.token("master", &[], None);
    let tenants = ["ta", "tb", "tc"];
    let tokens: Vec<String> = tenants.iter().map(|t| api.token(t, &[], None)).collect();
    for (i, (tenant, token)) in tenants.iter().zip(&tokens).enumerate() {
        let c = api.call("POST", "/0.2/cfg_mgr/configs", Some(token), None, Some(json!({"config": {"id": format!("cfg-{tenant}"), "parent_ids": ["base"], "raw_config": {}}})));
        assert_eq!(c.status, 201, "{:?}", c.body);
        let d = api.call("POST", "/0.2/dev_mgr/devices", Some(token), None, Some(json!({"device": {"id": format!("dev-{tenant}"), "mac": format!("00:15:65:00:00:0{i}"), "config": format!("cfg-{tenant}")}})));
        assert_eq!(d.status, 201, "{:?}", d.body);
    }
    for (me, token) in tenants.iter().zip(&tokens) {
        let listed = api.call(
            "GET",
            "/0.2/dev_mgr/devices?recurse=true",
            Some(token),
            None,
            None,
        );
        let ids: Vec<&str> = listed.body["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            vec![format!("dev-{me}").as_str()],
            "{me} lists only its own devices"
        );
        let configs = api.call(
            "GET",
            "/0.2/cfg_mgr/configs?recurse=true",
            Some(token),
            None,
            None,
        );
        let ids: Vec<&str> = configs.body["configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert!(
            ids.contains(&format!("cfg-{me}").as_str())
                && ids
                    .iter()
                    .all(|id| !id.starts_with("cfg-") || *id == format!("cfg-{me}")),
            "{me}: {ids:?}"
        );
        for other in tenants.iter().filter(|t| *t != me) {
            let selector = enc(&json!({"id": format!("dev-{other}")}));
            assert_eq!(
                api.call(
                    "GET",
                    &format!("/0.2/dev_mgr/devices?q={selector}&recurse=true"),
                    Some(token),
                    None,
                    None
                )
                .body["devices"],
                json!([])
            );
            let dev = format!("/0.2/dev_mgr/devices/dev-{other}");
            let cfg = format!("/0.2/cfg_mgr/configs/cfg-{other}");
            let cases: Vec<(&str, String, Option<Value>)> = vec![
                ("GET", dev.clone(), None),
                (
                    "PUT",
                    dev.clone(),
                    Some(json!({"device": {"description": "mine now"}})),
                ),
                ("DELETE", dev.clone(), None),
                (
                    "POST",
                    "/0.2/dev_mgr/synchronize".into(),
                    Some(json!({"id": format!("dev-{other}")})),
                ),
                (
                    "POST",
                    "/0.2/dev_mgr/reconfigure".into(),
                    Some(json!({"id": format!("dev-{other}")})),
                ),
                ("GET", cfg.clone(), None),
                ("GET", format!("{cfg}/raw"), None),
                (
                    "PUT",
                    cfg.clone(),
                    Some(json!({"config": {"parent_ids": [], "raw_config": {"x": 1}}})),
                ),
                ("DELETE", cfg.clone(), None),
                (
                    "POST",
                    "/0.2/cfg_mgr/configs".into(),
                    Some(
                        json!({"config": {"parent_ids": [format!("cfg-{other}")], "raw_config": {}}}),
                    ),
                ),
                (
                    "POST",
                    "/0.2/dev_mgr/devices".into(),
                    Some(json!({"device": {"config": format!("cfg-{other}")}})),
                ),
            ];
            for (method, path, body) in cases {
                let r = api.call(method, &path, Some(token), None, body);
                assert!(
                    r.status == 404 || r.status == 400,
                    "{me} {method} {path}: {} {:?}",
                    r.status,
                    r.body
                );
                assert!(!r.body.to_string().contains("mine now"));
            }
            assert_eq!(
                api.call("GET", &dev, Some(token), Some(other), None).status,
                401,
                "{me} cannot name {other}"
            );
        }
    }
    // Nothing of another tenant changed.
    for tenant in tenants {
        let d = api.store.device(&format!("dev-{tenant}")).unwrap().unwrap();
        assert_eq!(
            (d.tenant.as_str(), d.description.as_deref()),
            (tenant, None)
        );
        assert!(api
            .store
            .config(&format!("cfg-{tenant}"))
            .unwrap()
            .unwrap()
            .raw_config
            .is_empty());
    }
    // The master reaches a sub-tenant's device by id (it is below it), and lists it when it
    // names the tenant or lists recursively.
    assert_eq!(
        api.call(
            "GET",
            "/0.2/dev_mgr/devices/dev-ta",
            Some(&master),
            None,
            None
        )
        .status,
        200
    );
    assert_eq!(
        api.call(
            "GET",
            "/0.2/dev_mgr/devices/dev-ta",
            Some(&master),
            Some("ta"),
            None
        )
        .status,
        200
    );
    assert_eq!(
        api.call("GET", "/0.2/dev_mgr/devices", Some(&master), None, None)
            .body["devices"],
        json!([])
    );
    assert_eq!(
        api.call(
            "GET",
            "/0.2/dev_mgr/devices?recurse=true",
            Some(&master),
            None,
            None
        )
        .body["devices"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        api.call(
            "GET",
            "/0.2/dev_mgr/devices",
            Some(&master),
            Some("tb"),
            None
        )
        .body["devices"][0]["id"],
        "dev-tb"
    );
}

#[test]
fn tenant_rules_of_seed_002() {
    let api = start();
    let master = api.token("master", &[], None);
    let a = api.token("ta", &[], None);
    let b = api.token("tb", &[], None);
    // A phone shows up: it lands in master.
    let dhcp = api.call("POST", "/0.2/dev_mgr/dhcpinfo", Some(&master), None, Some(json!({"dhcp_info": {"op": "commit", "ip": "10.0.0.9", "mac": "80:5e:c0:00:00:09", "options": []}})));
    assert_eq!(dhcp.status, 204);
    let id = api
        .store
        .device_by_mac(&"80:5e:c0:00:00:09".parse().unwrap())
        .unwrap()
        .unwrap()
        .id;
    let path = format!("/0.2/dev_mgr/devices/{id}");
    assert_eq!(
        api.call("GET", &path, Some(&master), None, None).body["device"]["is_new"],
        true
    );
    // Tenant A provisions it: it moves to A.
    api.call(
        "POST",
        "/0.2/cfg_mgr/configs",
        Some(&a),
        None,
        Some(json!({"config": {"id": "line-a", "parent_ids": ["base"], "raw_config": {}}})),
    );
    let claim = api.call(
        "PUT",
        &path,
        Some(&a),
        None,
        Some(json!({"device": {"mac": "80:5e:c0:00:00:09", "config": "line-a"}})),
    );
    assert_eq!(claim.status, 204, "{:?}", claim.body);
    let now = api.call("GET", &path, Some(&a), None, None).body["device"].clone();
    assert_eq!(
        (now["tenant_uuid"].as_str(), now["is_new"].as_bool()),
        (Some("ta"), Some(false))
    );
    // B cannot take it, nor can the master acting for B.
    assert_eq!(
        api.call(
            "PUT",
            &path,
            Some(&b),
            None,
            Some(json!({"device": {"mac": "80:5e:c0:00:00:09"}}))
        )
        .status,
        404
    );
    assert_eq!(
        api.call(
            "PUT",
            &path,
            Some(&master),
            Some("tb"),
            Some(json!({"device": {"mac": "80:5e:c0:00:00:09"}}))
        )
        .status,
        404
    );
    // Reset to autoprov keeps the tenant.
    assert_eq!(
        api.call(
            "PUT",
            &path,
            Some(&a),
            None,
            Some(json!({"device": {"mac": "80:5e:c0:00:00:09", "config": "autoprov"}}))
        )
        .status,
        204
    );
    assert_eq!(api.store.device(&id).unwrap().unwrap().tenant, "ta");
    // The store itself refuses a move out of a tenant, whoever asks.
    let mut moved = api.store.device(&id).unwrap().unwrap();
    moved.tenant = "tb".into();
    assert!(matches!(
        api.store.update_device(&moved),
        Err(provisiond::store::StoreError::TenantLocked { .. })
    ));
    // A master device given a config of tenant B by the master joins B.
    api.call(
        "POST",
        "/0.2/cfg_mgr/configs",
        Some(&b),
        None,
        Some(json!({"config": {"id": "line-b", "parent_ids": ["base"], "raw_config": {}}})),
    );
    let dhcp = api.call("POST", "/0.2/dev_mgr/dhcpinfo", Some(&master), None, Some(json!({"dhcp_info": {"op": "commit", "ip": "10.0.0.10", "mac": "80:5e:c0:00:00:10", "options": []}})));
    assert_eq!(dhcp.status, 204);
    let id2 = api
        .store
        .device_by_mac(&"80:5e:c0:00:00:10".parse().unwrap())
        .unwrap()
        .unwrap()
        .id;
    let r = api.call(
        "PUT",
        &format!("/0.2/dev_mgr/devices/{id2}"),
        Some(&master),
        Some("tb"),
        Some(json!({"device": {"mac": "80:5e:c0:00:00:10", "config": "line-b"}})),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(api.store.device(&id2).unwrap().unwrap().tenant, "tb");
    // DHCP info is the master's business.
    assert_eq!(api.call("POST", "/0.2/dev_mgr/dhcpinfo", Some(&a), None, Some(json!({"dhcp_info": {"op": "commit", "ip": "10.0.0.11", "mac": "80:5e:c0:00:00:11", "options": []}}))).status, 403);
}

#[test]
fn review_fixes_in_the_api() {
    let api = start();
    let t = api.token("master", &[], None);
    let tk = Some(t.as_str());
    let op = api.call("GET", "/0.2/dev_mgr/synchronize/abc", tk, None, None);
    assert_eq!(op.status, 404);
    assert!(op.body.get("error").is_some(), "JSON error: {:?}", op.body);
    let junk = api.call(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        None,
        Some(json!({"device": {}, "junk": 1})),
    );
    assert_eq!(junk.status, 400, "{:?}", junk.body);
    let junk = api.call(
        "POST",
        "/0.2/cfg_mgr/configs",
        tk,
        None,
        Some(json!({"config": {"parent_ids": [], "raw_config": {}}, "junk": 1})),
    );
    assert_eq!(junk.status, 400);
    let no_acl = api.token("master", &["provd.dev_mgr.#"], None);
    assert_eq!(
        api.call("GET", "/0.2/configure/nope", Some(&no_acl), None, None)
            .status,
        403,
        "the ACL is checked first"
    );
    assert_eq!(
        api.call(
            "PUT",
            "/0.2/configure/locale",
            tk,
            None,
            Some(json!({"param": {}}))
        )
        .status,
        400,
        "value is required"
    );
    assert_eq!(
        api.call(
            "PUT",
            "/0.2/configure/locale",
            tk,
            None,
            Some(json!({"param": {"value": null}}))
        )
        .status,
        204,
        "null clears"
    );

    // A lease that ends without a MAC clears the address of the device that has it.
    let commit = json!({"dhcp_info": {"op": "commit", "ip": "10.0.0.40", "mac": "80:5e:c0:00:00:40", "options": []}});
    assert_eq!(
        api.call("POST", "/0.2/dev_mgr/dhcpinfo", tk, None, Some(commit))
            .status,
        204
    );
    let release = json!({"dhcp_info": {"op": "release", "ip": "10.0.0.40"}});
    assert_eq!(
        api.call("POST", "/0.2/dev_mgr/dhcpinfo", tk, None, Some(release))
            .status,
        204
    );
    assert_eq!(
        api.store
            .device_by_mac(&"80:5e:c0:00:00:40".parse().unwrap())
            .unwrap()
            .unwrap()
            .ip,
        None
    );

    // Tenants: default_config must exist, is kept when absent, and feeds /raw.
    api.call("POST", "/0.2/cfg_mgr/configs", tk, None, Some(json!({"config": {"id": "defaults", "parent_ids": [], "raw_config": {"ntp_ip": "10.0.0.1"}}})));
    let bad = api.call(
        "POST",
        "/0.2/tenants",
        tk,
        None,
        Some(json!({"tenant": {"id": "tz", "default_config": "ghost"}})),
    );
    assert_eq!(bad.status, 400);
    assert_eq!(
        api.call(
            "POST",
            "/0.2/tenants",
            tk,
            None,
            Some(json!({"tenant": {"id": "tz", "default_config": "defaults"}}))
        )
        .status,
        201
    );
    assert_eq!(
        api.call(
            "PUT",
            "/0.2/tenants/tz",
            tk,
            None,
            Some(json!({"tenant": {"name": "Zed"}}))
        )
        .status,
        204
    );
    assert_eq!(
        api.store
            .tenant("tz")
            .unwrap()
            .unwrap()
            .default_config
            .as_deref(),
        Some("defaults")
    );
    let tz = api.token("tz", &[], None);
    api.call("POST", "/0.2/cfg_mgr/configs", Some(&tz), None, Some(json!({"config": {"id": "zline", "parent_ids": ["base"], "raw_config": {"locale": "fr_FR"}}})));
    let raw = api.call(
        "GET",
        "/0.2/cfg_mgr/configs/zline/raw",
        Some(&tz),
        None,
        None,
    );
    assert_eq!(
        raw.body["raw_config"],
        json!({"ntp_ip": "10.0.0.1", "locale": "fr_FR"}),
        "raw merges the tenant's default config as rendering does"
    );

    // A token is created with a Location; deleting its tenant revokes it.
    let created = api.call(
        "POST",
        "/0.2/tokens",
        tk,
        None,
        Some(json!({"token": {"tenant": "tz"}})),
    );
    assert_eq!(created.status, 201);
    assert!(created
        .headers
        .get("location")
        .is_some_and(|l| l.starts_with("/0.2/tokens/")));
    let secret = created.body["token"].as_str().unwrap().to_owned();
    assert_eq!(
        api.call("GET", "/0.2/dev_mgr/devices", Some(&secret), None, None)
            .status,
        200
    );
    assert_eq!(
        api.call(
            "DELETE",
            "/0.2/cfg_mgr/configs/zline",
            Some(&tz),
            None,
            None
        )
        .status,
        204
    );
    assert_eq!(
        api.call("DELETE", "/0.2/tenants/tz", tk, None, None).status,
        204
    );
    assert_eq!(
        api.call("GET", "/0.2/dev_mgr/devices", Some(&secret), None, None)
            .status,
        401
    );
}

#[test]
fn synchronisation_operations_belong_to_the_device_tenant() {
    let api = start();
    let a = api.token("tenant-a", &[], None);
    let b = api.token("tenant-b", &[], None);
    let created = api.call(
        "POST",
        "/0.2/dev_mgr/devices",
        Some(&a),
        None,
        Some(json!({"device": {"mac": "80:5e:c0:61:00:01"}})),
    );
    assert_eq!(created.status, 201, "{:?}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let sync = api.call(
        "POST",
        "/0.2/dev_mgr/synchronize",
        Some(&a),
        None,
        Some(json!({"id": id})),
    );
    assert_eq!(sync.status, 201);
    let op = sync.headers["location"].clone();
    // No IP: nothing to send, the operation failed at once.
    let seen = api.call("GET", &op, Some(&a), None, None);
    assert_eq!(
        (seen.status, seen.body["status"].as_str()),
        (200, Some("fail"))
    );
    // Another tenant neither reads nor deletes it.
    assert_eq!(api.call("GET", &op, Some(&b), None, None).status, 404);
    assert_eq!(api.call("DELETE", &op, Some(&b), None, None).status, 404);
    assert_eq!(api.call("DELETE", &op, Some(&a), None, None).status, 204);
}

/// GET `path` with these raw header lines (curl's `-H`; `Name;` sends an empty header).
fn get_with(api: &Api, path: &str, headers: &[String]) -> Reply {
    curl(
        &[],
        &format!("http://{}{path}", api.addr),
        "GET",
        headers,
        None,
    )
}

#[test]
fn authorization_bearer_is_accepted_like_x_auth_token() {
    let api = start();
    let good = api.token("master", &[], None);
    let other = api.token("master", &[], None);
    let expired = api.token("master", &[], Some(model::now() - 1));
    let bearer = |t: &str| format!("Authorization: Bearer {t}");

    // What Prometheus sends, on /metrics and on the API; the scheme is case-insensitive.
    for path in [
        "/metrics",
        "/0.2/dev_mgr/devices",
        "/api/provd/0.2/cfg_mgr/configs",
    ] {
        let r = get_with(&api, path, &[bearer(&good)]);
        assert_eq!(r.status, 200, "{path}: {:?}", r.body);
    }
    let r = get_with(
        &api,
        "/0.2/dev_mgr/devices",
        &[format!("Authorization: bearer  {good}")],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let metrics = get_with(&api, "/metrics", &[bearer(&good)]);
    assert!(
        metrics.body.as_str().is_some_and(|m| m.contains(
            "provisiond_api_requests_total{route=\"/0.2/dev_mgr/devices\",method=\"GET\",status=\"200\"}"
        )),
        "{:?}",
        metrics.body
    );
    // Both headers with the same token.
    let r = get_with(
        &api,
        "/0.2/dev_mgr/devices",
        &[format!("X-Auth-Token: {good}"), bearer(&good)],
    );
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Unknown and expired tokens are refused as with X-Auth-Token.
    for token in ["wrong", expired.as_str()] {
        for path in ["/metrics", "/0.2/dev_mgr/devices"] {
            let r = get_with(&api, path, &[bearer(token)]);
            assert_error(&r, 401, None, "token");
        }
    }
    // Two different tokens: neither is picked.
    let r = get_with(
        &api,
        "/0.2/dev_mgr/devices",
        &[format!("X-Auth-Token: {good}"), bearer(&other)],
    );
    assert_error(&r, 401, None, "different tokens");

    // Malformed Authorization headers, alone or beside a good X-Auth-Token.
    for value in [
        "Authorization: Basic dXNlcjpwYXNz".to_owned(),
        "Authorization;".to_owned(),
        "Authorization: Bearer".to_owned(),
        "Authorization: Bearer ".to_owned(),
        format!("Authorization: Bearer {good} extra"),
        format!("Authorization: Bearer {}", "x".repeat(513)),
        format!("Authorization: {good}"),
    ] {
        for with_x_auth in [false, true] {
            let mut headers = vec![value.clone()];
            if with_x_auth {
                headers.push(format!("X-Auth-Token: {good}"));
            }
            for path in ["/metrics", "/0.2/dev_mgr/devices"] {
                let r = get_with(&api, path, &headers);
                assert_error(&r, 401, Some("Authorization"), "expected Bearer");
            }
        }
    }
    let r = get_with(
        &api,
        "/0.2/dev_mgr/devices",
        &[bearer(&good), bearer(&good)],
    );
    assert_error(&r, 401, Some("Authorization"), "more than once");
    let r = get_with(&api, "/0.2/dev_mgr/devices", &["X-Auth-Token;".to_owned()]);
    assert_error(&r, 401, Some("X-Auth-Token"), "expected a token");
    let r = get_with(&api, "/0.2/dev_mgr/devices", &[]);
    assert_error(&r, 401, None, "missing token");
}
