//! What wazo-provd's own clients and integration suite rely on (docs/wazo-compat.md), through a
//! real HTTP client (curl) against the API served on 127.0.0.1 with the shipped body limit:
//! unknown keys kept, `deletable`, the status codes that wazo-provd pins, `/configure`
//! parameters, the provisioning key rules, `Location` headers and operations followed the way
//! wazo-provd-client follows them, and a config body of wazo-provd's "max buffer" size.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{curl, ApiReply as Reply, InProcess, PATIENCE};
use provisiond::http::api::fields::{MAX_EXTRA_KEYS, MAX_EXTRA_KEY_CHARS, MAX_RAW_CONFIG_BYTES};
use provisiond::http::api::router;
use provisiond::store::Store;
use serde_json::{json, Map, Value};

const MEDIA: &str = "application/vnd.proformatique.provd+json";
const BASES: [&str; 2] = ["/api/provd/0.2", "/0.2"];

struct Server {
    addr: SocketAddr,
    store: Store,
    /// Stands in for the phones' SIP stack: NOTIFYs of synchronisations come here.
    phone: UdpSocket,
    _http: InProcess,
    _dir: tempfile::TempDir,
}

/// The API with the shipped `[api]` body limit, the repository's plugins, and NOTIFYs sent to
/// a socket of the test that answers only when told (a synchronisation stays in `progress`
/// until then: the timeout is far beyond the test's length).
fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults("master").unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").unwrap();
    phone.set_read_timeout(Some(PATIENCE)).unwrap();
    let state = common::api_state(&store).with_sync(provisiond::config::Sync {
        enabled: true,
        timeout_secs: 600,
        sip_port: phone.local_addr().unwrap().port(),
        ..Default::default()
    });
    let app = router(
        Arc::new(state),
        provisiond::config::Api::default().max_body_bytes,
    );
    let limits = common::api_limits(60);
    let http = InProcess::start(app, limits, None);
    Server {
        addr: http.addr,
        store,
        phone,
        _http: http,
        _dir: dir,
    }
}

impl Server {
    /// A token of `tenant` (created if needed) with every provd ACL.
    fn token(&self, tenant: &str) -> String {
        common::api_token(&self.store, tenant, &[], None)
    }

    /// One request shaped like wazo-provd-client's: `X-Auth-Token`, `Connection: close`, no
    /// `Accept`, the provd media type on bodies.
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
        self.send(method, path, token, body.map(|b| b.to_string()))
    }

    fn send(&self, method: &str, path: &str, token: Option<&str>, body: Option<String>) -> Reply {
        let mut headers = vec!["Connection: close".to_owned()];
        if let Some(token) = token {
            headers.push(format!("X-Auth-Token: {token}"));
        }
        curl(
            &[],
            &format!("http://{}{path}", self.addr),
            method,
            &headers,
            body.map(|text| (MEDIA.to_owned(), text)),
        )
    }

    /// The phone answers the next NOTIFY with a 200 (its Via, From, To, Call-ID and CSeq).
    fn phone_accepts_one_notify(&self) {
        let mut buf = [0u8; 4096];
        let (n, from) = self.phone.recv_from(&mut buf).expect("a NOTIFY in time");
        let request = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(request.starts_with("NOTIFY "), "{request}");
        let mut answer = "SIP/2.0 200 OK\r\n".to_owned();
        for line in request.split("\r\n") {
            let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
            if ["via", "from", "to", "call-id", "cseq"].contains(&name.as_str()) {
                answer.push_str(line);
                answer.push_str("\r\n");
            }
        }
        answer.push_str("Content-Length: 0\r\n\r\n");
        self.phone.send_to(answer.as_bytes(), from).unwrap();
    }
}

/// The error field named by a JSON error answer.
fn field(r: &Reply) -> &str {
    r.body["details"]["field"].as_str().unwrap_or("")
}

fn percent(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A device body of our own, with keys that provisiond does not interpret.
fn device_body(id: &str, mac: &str) -> Value {
    json!({"device": {
        "id": id,
        "mac": mac,
        "ip": "10.20.0.7",
        "plugin": "yealink",
        "vendor": "Yealink",
        "model": "T46U",
        "options": {"switchboard": true, "sip_transport": ["udp", "tls"]},
        "uuid": "6a9b0c1d-0000-4000-8000-00000000abcd",
        "X_inventory": {"room": "B12", "tags": [1, 2, 3]},
        "cabinet": null,
    }})
}

/// A config body of our own, with wazo-confd's registrar keys.
fn registrar_body(id: &str) -> Value {
    json!({"config": {
        "id": id,
        "parent_ids": ["base"],
        "deletable": true,
        "X_type": "registrar",
        "displayname": "Branch office",
        "registrar_main": "192.0.2.10",
        "registrar_main_port": 5060,
        "proxy_main": "192.0.2.10",
        "proxy_backup": null,
        "label": "BRANCH",
        "raw_config": {"X_key": "branch", "ntp_ip": "192.0.2.1", "ntp_enabled": true},
    }})
}

#[test]
fn unknown_keys_round_trip_on_devices_and_configs() {
    let server = start();
    let t = server.token("master");
    let tk = Some(t.as_str());

    // Devices: every key kept as sent, `null` included; PUT replaces them all.
    let sent = device_body("desk1", "00:15:65:10:20:30");
    let r = server.call("POST", "/0.2/dev_mgr/devices", tk, Some(sent.clone()));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let shown = server.call("GET", "/0.2/dev_mgr/devices/desk1", tk, None);
    assert_eq!(shown.status, 200);
    for key in ["options", "uuid", "X_inventory", "cabinet"] {
        assert_eq!(
            shown.body["device"].get(key),
            Some(&sent["device"][key]),
            "{key}: {}",
            shown.body
        );
    }
    let listed = server.call(
        "GET",
        &format!(
            "/0.2/dev_mgr/devices?q={}&fields=options",
            percent(r#"{"uuid":"6a9b0c1d-0000-4000-8000-00000000abcd"}"#)
        ),
        tk,
        None,
    );
    assert_eq!(
        listed.body["devices"],
        json!([{"id": "desk1", "options": sent["device"]["options"]}]),
        "extra keys are searchable and selectable like the others"
    );
    let mut changed = shown.body.clone();
    let device = changed["device"].as_object_mut().unwrap();
    device.remove("uuid");
    device.insert("X_inventory".into(), json!("moved"));
    let r = server.call("PUT", "/0.2/dev_mgr/devices/desk1", tk, Some(changed));
    assert_eq!(r.status, 204, "{:?}", r.body);
    let after = server.call("GET", "/0.2/dev_mgr/devices/desk1", tk, None);
    assert_eq!(after.body["device"]["X_inventory"], "moved");
    assert!(after.body["device"].get("uuid").is_none(), "{}", after.body);
    assert_eq!(after.body["device"]["options"], sent["device"]["options"]);

    // Configs: the same, next to the keys provisiond interprets.
    let sent = registrar_body("branch");
    let r = server.call("POST", "/0.2/cfg_mgr/configs", tk, Some(sent.clone()));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let shown = server.call("GET", "/0.2/cfg_mgr/configs/branch", tk, None);
    let config = &shown.body["config"];
    for key in [
        "X_type",
        "displayname",
        "registrar_main",
        "registrar_main_port",
        "proxy_main",
        "proxy_backup",
        "label",
        "raw_config",
        "parent_ids",
        "deletable",
    ] {
        assert_eq!(config.get(key), Some(&sent["config"][key]), "{key}");
    }
    let mut changed = shown.body.clone();
    changed["config"]["displayname"] = json!("Branch office (new)");
    changed["config"]
        .as_object_mut()
        .unwrap()
        .remove("registrar_main_port");
    let r = server.call("PUT", "/0.2/cfg_mgr/configs/branch", tk, Some(changed));
    assert_eq!(r.status, 204, "{:?}", r.body);
    let after = server.call("GET", "/0.2/cfg_mgr/configs/branch", tk, None);
    assert_eq!(after.body["config"]["displayname"], "Branch office (new)");
    assert!(after.body["config"].get("registrar_main_port").is_none());

    // The keys provisiond interprets are still typed, read-only ones included.
    let before_devices = server.store.devices().unwrap();
    for (key, value) in [
        ("mac", json!(5)),
        ("ip", json!("10.0.1.xx")),
        ("is_new", json!("yes")),
    ] {
        let mut body = device_body("typed", "00:15:65:10:20:31");
        body["device"][key] = value;
        let r = server.call("POST", "/0.2/dev_mgr/devices", tk, Some(body));
        assert_eq!((r.status, field(&r)), (400, key), "{:?}", r.body);
    }
    let mut body = registrar_body("typed");
    body["config"]["role"] = json!(7);
    let r = server.call("POST", "/0.2/cfg_mgr/configs", tk, Some(body));
    assert_eq!((r.status, field(&r)), (400, "role"), "{:?}", r.body);

    // Bounds: the count of extra keys, the length of their names, the depth of their values.
    let mut many = device_body("many", "00:15:65:10:20:32");
    let extras = many["device"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| !["id", "mac", "ip", "plugin", "vendor", "model"].contains(&k.as_str()))
        .count();
    for i in extras..MAX_EXTRA_KEYS {
        many["device"][format!("k{i}")] = json!(i);
    }
    let r = server.call("POST", "/0.2/dev_mgr/devices", tk, Some(many.clone()));
    assert_eq!(
        r.status, 201,
        "{MAX_EXTRA_KEYS} extra keys fit: {:?}",
        r.body
    );
    many["device"]["id"] = json!("many2");
    many["device"]["mac"] = json!("00:15:65:10:20:33");
    many["device"]["one_more"] = json!(true);
    let r = server.call("POST", "/0.2/dev_mgr/devices", tk, Some(many));
    assert_eq!((r.status, field(&r)), (400, "device"), "{:?}", r.body);
    let mut config = registrar_body("long");
    config["config"]["n".repeat(MAX_EXTRA_KEY_CHARS + 1)] = json!(1);
    let r = server.call("POST", "/0.2/cfg_mgr/configs", tk, Some(config));
    assert_eq!(r.status, 400, "{:?}", r.body);
    let deep = (0..40).fold(json!(0), |inner, _| json!([inner]));
    let mut config = registrar_body("deep");
    config["config"]["X_deep"] = deep;
    let r = server.call("POST", "/0.2/cfg_mgr/configs", tk, Some(config));
    assert_eq!((r.status, field(&r)), (400, "X_deep"), "{:?}", r.body);
    assert_eq!(
        server.store.devices().unwrap().len(),
        before_devices.len() + 1
    );
    assert!(server.store.config("long").unwrap().is_none());
    assert!(server.store.config("deep").unwrap().is_none());
}

#[test]
fn an_undeletable_config_is_refused_until_made_deletable() {
    let server = start();
    let t = server.token("master");
    let tk = Some(t.as_str());
    let mut body = registrar_body("keep");
    body["config"]["deletable"] = json!(false);
    let r = server.call("POST", "/0.2/cfg_mgr/configs", tk, Some(body.clone()));
    assert_eq!(r.status, 201, "{:?}", r.body);
    let shown = server.call("GET", "/0.2/cfg_mgr/configs/keep", tk, None);
    assert_eq!(shown.body["config"]["deletable"], false);
    let r = server.call("DELETE", "/0.2/cfg_mgr/configs/keep", tk, None);
    assert_eq!(r.status, 403, "{:?}", r.body);
    assert!(server.store.config("keep").unwrap().is_some());

    body["config"]["deletable"] = json!(true);
    let r = server.call("PUT", "/0.2/cfg_mgr/configs/keep", tk, Some(body.clone()));
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = server.call("DELETE", "/0.2/cfg_mgr/configs/keep", tk, None);
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = server.call("GET", "/0.2/cfg_mgr/configs/keep", tk, None);
    assert_eq!(r.status, 404);

    // A PUT without the key replaces the config with a deletable one, as in wazo-provd.
    body["config"]["deletable"] = json!(false);
    assert_eq!(
        server
            .call("POST", "/0.2/cfg_mgr/configs", tk, Some(body.clone()))
            .status,
        201
    );
    body["config"].as_object_mut().unwrap().remove("deletable");
    let r = server.call("PUT", "/0.2/cfg_mgr/configs/keep", tk, Some(body));
    assert_eq!(r.status, 204, "{:?}", r.body);
    assert_eq!(
        server
            .call("DELETE", "/0.2/cfg_mgr/configs/keep", tk, None)
            .status,
        204
    );

    // The built-in configs stay undeletable: rendering and autocreation need them.
    let base = server.call("GET", "/0.2/cfg_mgr/configs/autoprov", tk, None);
    let mut base = base.body;
    base["config"]["deletable"] = json!(true);
    let r = server.call("PUT", "/0.2/cfg_mgr/configs/autoprov", tk, Some(base));
    assert_eq!(r.status, 204, "{:?}", r.body);
    let r = server.call("DELETE", "/0.2/cfg_mgr/configs/autoprov", tk, None);
    assert_eq!(r.status, 403, "{:?}", r.body);
}

#[test]
fn status_codes_that_wazo_provd_pins() {
    let server = start();
    let t = server.token("master");
    let tk = Some(t.as_str());
    let a = server.token("tenant-a");
    let b = server.token("tenant-b");

    // Authentication comes before everything else.
    for (method, path) in [
        ("GET", "/0.2/cfg_mgr/configs"),
        ("GET", "/0.2/cfg_mgr/configs/invalid_id"),
        ("DELETE", "/0.2/cfg_mgr/configs/invalid_id"),
        ("POST", "/0.2/dev_mgr/reconfigure"),
    ] {
        let r = server.call(
            method,
            path,
            Some("invalid-token"),
            Some(json!({"id": "x"})),
        );
        assert_eq!(r.status, 401, "{method} {path}");
    }

    // dhcpinfo: `options` is required for commit; an unknown op is refused.
    let lease = json!({"ip": "10.30.0.1", "mac": "ab:bc:cd:de:ff:01", "op": "commit"});
    let r = server.call(
        "POST",
        "/0.2/dev_mgr/dhcpinfo",
        tk,
        Some(json!({ "dhcp_info": lease })),
    );
    assert_eq!(
        (r.status, field(&r)),
        (400, "dhcp_info.options"),
        "{:?}",
        r.body
    );
    let mut bad_op = lease.clone();
    bad_op["op"] = json!("renew");
    bad_op["options"] = json!([]);
    let r = server.call(
        "POST",
        "/0.2/dev_mgr/dhcpinfo",
        tk,
        Some(json!({ "dhcp_info": bad_op })),
    );
    assert_eq!(r.status, 400, "{:?}", r.body);
    let mut good = lease.clone();
    good["options"] = json!([]);
    let r = server.call(
        "POST",
        "/0.2/dev_mgr/dhcpinfo",
        tk,
        Some(json!({ "dhcp_info": good })),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);
    let found = server.call(
        "GET",
        &format!(
            "/0.2/dev_mgr/devices?q={}",
            percent(r#"{"mac":"ab:bc:cd:de:ff:01"}"#)
        ),
        tk,
        None,
    );
    assert_eq!(
        found.body["devices"][0]["ip"], "10.30.0.1",
        "{}",
        found.body
    );
    // An ended lease needs neither the MAC nor the options.
    let r = server.call(
        "POST",
        "/0.2/dev_mgr/dhcpinfo",
        tk,
        Some(json!({"dhcp_info": {"ip": "10.30.0.1", "op": "expiry"}})),
    );
    assert_eq!(r.status, 204, "{:?}", r.body);

    // reconfigure: 400 for an unknown device and for another tenant's; synchronize: 404.
    let mine = server.call(
        "POST",
        "/0.2/dev_mgr/devices",
        Some(&a),
        Some(json!({"device": {"id": "a-phone", "mac": "00:15:65:20:00:01"}})),
    );
    assert_eq!(mine.status, 201, "{:?}", mine.body);
    for (token, id, status) in [
        (&a, "a-phone", 204),
        (&a, "unknown_id", 400),
        (&b, "a-phone", 400),
    ] {
        let r = server.call(
            "POST",
            "/0.2/dev_mgr/reconfigure",
            Some(token),
            Some(json!({ "id": id })),
        );
        assert_eq!(r.status, status, "reconfigure {id}: {:?}", r.body);
    }
    for (token, id) in [(&a, "unknown_id"), (&b, "a-phone")] {
        let r = server.call(
            "POST",
            "/0.2/dev_mgr/synchronize",
            Some(token),
            Some(json!({ "id": id })),
        );
        assert_eq!(r.status, 404, "synchronize {id}: {:?}", r.body);
    }

    // Devices.
    for device in [
        json!({"ip": "10.0.1.xx", "mac": "00:15:65:20:00:02"}),
        json!({"id": "*&!\"/invalid _", "ip": "10.0.1.2", "mac": "00:15:65:20:00:02"}),
    ] {
        let r = server.call(
            "POST",
            "/0.2/dev_mgr/devices",
            tk,
            Some(json!({ "device": device })),
        );
        assert_eq!(r.status, 400, "{device}: {:?}", r.body);
    }
    let r = server.call(
        "PUT",
        "/0.2/dev_mgr/devices/invalid_id",
        tk,
        Some(json!({"device": {"id": "invalid_id", "ip": "1.2.3.4", "mac": "00:15:65:20:00:03"}})),
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        server
            .call("GET", "/0.2/dev_mgr/devices/unknown_id", tk, None)
            .status,
        404
    );
    assert_eq!(
        server
            .call("DELETE", "/0.2/dev_mgr/devices/unknown_id", tk, None)
            .status,
        404
    );
    // A device without an ip does not break a sort on it; unknown parameters are ignored.
    let r = server.call(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        Some(json!({"device": {"mac": "aa:bb:cc:dd:ee:ff", "plugin": null}})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = server.call(
        "GET",
        "/0.2/dev_mgr/devices?sort=ip&sort_ord=ASC&reverse=True",
        tk,
        None,
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    // Unique MAC: a deliberate difference (a second device cannot take over a phone's files).
    let r = server.call(
        "POST",
        "/0.2/dev_mgr/devices",
        tk,
        Some(json!({"device": {"mac": "aa:bb:cc:dd:ee:ff"}})),
    );
    assert_eq!(r.status, 409, "{:?}", r.body);

    // Configs.
    let mut no_parents = registrar_body("test1");
    no_parents["config"]
        .as_object_mut()
        .unwrap()
        .remove("parent_ids");
    let r = server.call("POST", "/0.2/cfg_mgr/configs", tk, Some(no_parents));
    assert_eq!((r.status, field(&r)), (400, "parent_ids"));
    let r = server.call(
        "PUT",
        "/0.2/cfg_mgr/configs/None",
        tk,
        Some(json!({"config": {"id": null}})),
    );
    assert_eq!(r.status, 404, "the id is looked up before the body is read");
    for (method, path) in [
        ("GET", "/0.2/cfg_mgr/configs/invalid_id"),
        ("GET", "/0.2/cfg_mgr/configs/invalid_id/raw"),
        ("DELETE", "/0.2/cfg_mgr/configs/invalid_id"),
    ] {
        assert_eq!(
            server.call(method, path, tk, None).status,
            404,
            "{method} {path}"
        );
    }

    // Parameters.
    assert_eq!(
        server
            .call("GET", "/0.2/configure/invalid_param", tk, None)
            .status,
        404
    );
    let r = server.call(
        "PUT",
        "/0.2/configure/invalid_param",
        tk,
        Some(json!({"param": {"value": "invalid_value"}})),
    );
    assert_eq!(r.status, 404);
    for value in [json!("fr_FR"), Value::Null] {
        let r = server.call(
            "PUT",
            "/0.2/configure/locale",
            tk,
            Some(json!({"param": {"value": value}})),
        );
        assert_eq!(r.status, 204, "{value}: {:?}", r.body);
        assert_eq!(r.headers.get("content-type"), None, "204 has no body");
    }
    // Errors stay JSON (wazo-provd's are plain text): a superset for clients that only look
    // at the status.
    let r = server.call("GET", "/0.2/configure/invalid_param", tk, None);
    assert_eq!(
        r.headers.get("content-type").map(String::as_str),
        Some(MEDIA)
    );
    assert!(r.body["error"].is_string(), "{:?}", r.body);
}

#[test]
fn configure_has_plugin_server_and_http_proxy() {
    let server = start();
    let t = server.token("master");
    let tk = Some(t.as_str());
    let list = server.call("GET", "/0.2/configure", tk, None);
    let ids: Vec<&str> = list.body["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "plugin_server",
            "http_proxy",
            "locale",
            "NAT",
            "provisioning_key"
        ]
    );
    let value = |name: &str| {
        let r = server.call("GET", &format!("/0.2/configure/{name}"), tk, None);
        assert_eq!(r.status, 200, "{name}: {:?}", r.body);
        r.body["param"]["value"].clone()
    };
    let put = |name: &str, v: Value| {
        server.call(
            "PUT",
            &format!("/0.2/configure/{name}"),
            tk,
            Some(json!({"param": {"value": v}})),
        )
    };
    assert_eq!(value("plugin_server"), Value::Null);
    assert_eq!(value("http_proxy"), Value::Null);

    let cases = [
        (
            "plugin_server",
            "https://plugins.example.org/provd/2/stable/",
            true,
        ),
        ("plugin_server", "http://192.0.2.8:8080/", true),
        ("plugin_server", "ftp://plugins.example.org/", false),
        ("plugin_server", "plugins.example.org/stable", false),
        ("plugin_server", "https://", false),
        (
            "http_proxy",
            "http://user:secret@proxy.example.org:3128",
            true,
        ),
        ("http_proxy", "http://proxy.example.org:3128/", true),
        ("http_proxy", "http://proxy.example.org:3128/path", false),
        ("http_proxy", "proxy.example.org:3128", false),
    ];
    for (name, url, ok) in cases {
        let before = value(name);
        let r = put(name, json!(url));
        if ok {
            assert_eq!(r.status, 204, "{name} {url}: {:?}", r.body);
            assert_eq!(value(name), json!(url), "stored as given");
        } else {
            assert_eq!((r.status, field(&r)), (400, "param.value"), "{name} {url}");
            assert_eq!(value(name), before, "{name} {url}: unchanged");
        }
    }
    let r = put("plugin_server", json!(5));
    assert_eq!(r.status, 400);
    for name in ["plugin_server", "http_proxy"] {
        assert_eq!(put(name, Value::Null).status, 204);
        assert_eq!(value(name), Value::Null, "{name} cleared");
        // Global parameters: another tenant may not set them.
        let other = server.token("tenant-c");
        let r = server.call(
            "PUT",
            &format!("/0.2/configure/{name}"),
            Some(&other),
            Some(json!({"param": {"value": "http://192.0.2.9/"}})),
        );
        assert_eq!(r.status, 403, "{name}");
    }
}

#[test]
fn provisioning_key_matrix() {
    let server = start();
    let main = server.token("master");
    let sub = server.token("tenant-sub");
    let put = |token: &str, v: Value| {
        server.call(
            "PUT",
            "/0.2/configure/provisioning_key",
            Some(token),
            Some(json!({"param": {"value": v}})),
        )
    };
    let get = |token: &str| {
        server
            .call("GET", "/0.2/configure/provisioning_key", Some(token), None)
            .body["param"]["value"]
            .clone()
    };
    assert_eq!(get(&sub), Value::Null, "a tenant without a key");
    for bad in [
        json!("a".repeat(7)),
        json!("a".repeat(257)),
        json!("asdf1234%$"),
        json!("with space1"),
        json!("slash/key12"),
        json!(12345678),
    ] {
        let r = put(&main, bad.clone());
        assert_eq!((r.status, field(&r)), (400, "param.value"), "{bad}");
        assert_eq!(get(&main), Value::Null, "{bad}");
    }
    for good in [
        "a".repeat(8),
        "a".repeat(256),
        "this-is-a-key".into(),
        "Aa0-$~.z".into(),
    ] {
        let r = put(&main, json!(&good));
        assert_eq!(r.status, 204, "{good}: {:?}", r.body);
        assert_eq!(get(&main), json!(&good));
    }
    // Setting one's own key again is fine; another tenant's is refused with 400.
    assert_eq!(put(&main, json!("secure-key")).status, 204);
    assert_eq!(put(&main, json!("secure-key")).status, 204);
    let r = put(&sub, json!("secure-key"));
    assert_eq!((r.status, field(&r)), (400, "param.value"), "{:?}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("another tenant")),
        "{:?}",
        r.body
    );
    assert_eq!(get(&sub), Value::Null);
    // null and "" clear; any number of tenants may have no key.
    assert_eq!(put(&main, Value::Null).status, 204);
    assert_eq!(put(&main, Value::Null).status, 204);
    assert_eq!(put(&sub, json!("")).status, 204);
    assert_eq!(get(&main), Value::Null);
    assert_eq!(get(&sub), Value::Null);
    // The cleared key is free again.
    assert_eq!(put(&sub, json!("secure-key")).status, 204);
    assert_eq!(
        server
            .store
            .tenant_by_key("secure-key")
            .unwrap()
            .map(|t| t.id),
        Some("tenant-sub".into())
    );
}

/// wazo-provd-client's URL for an operation: its base for the manager, then the Location
/// without its first three `/`-separated parts (``, `0.2`, the manager).
fn client_url(manager_base: &str, location: &str) -> String {
    let rest: Vec<&str> = location.split('/').skip(3).collect();
    format!("{manager_base}/{}", rest.join("/"))
}

/// One operation status in wazo-provd's grammar: `[label|]state[;current[/end]]` followed by
/// sub-operations, each in parentheses. Answers (label, state, current, end, sub-operations).
#[derive(Debug, PartialEq)]
struct Oip {
    label: Option<String>,
    state: String,
    current: Option<u64>,
    end: Option<u64>,
    subs: Vec<Oip>,
}

fn parse_oip(text: &str) -> Result<Oip, String> {
    let head = regex::Regex::new(r"^(?:(\w+)\|)?(\w+)(?:;(\d+)(?:/(\d+))?)?").unwrap();
    let m = head
        .captures(text)
        .ok_or_else(|| format!("no state in {text:?}"))?;
    let number = |i: usize| -> Result<Option<u64>, String> {
        m.get(i)
            .map(|n| n.as_str().parse().map_err(|e| format!("{e}")))
            .transpose()
    };
    let mut subs = Vec::new();
    let mut rest = &text[m.get(0).map_or(0, |w| w.end())..];
    while !rest.is_empty() {
        if !rest.starts_with('(') {
            return Err(format!("{rest:?} is not a parenthesised sub-operation"));
        }
        let mut depth = 0usize;
        let mut close = None;
        for (i, c) in rest.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let close = close.ok_or_else(|| format!("unbalanced parentheses in {text:?}"))?;
        subs.push(parse_oip(&rest[1..close])?);
        rest = &rest[close + 1..];
    }
    Ok(Oip {
        label: m.get(1).map(|l| l.as_str().to_owned()),
        state: m[2].to_owned(),
        current: number(3)?,
        end: number(4)?,
        subs,
    })
}

#[test]
fn the_status_grammar_check_is_a_real_check() {
    let nested = parse_oip("op|progress(op1|progress;2/9(op11|success))(op2|waiting)").unwrap();
    assert_eq!(nested.label.as_deref(), Some("op"));
    assert_eq!(nested.subs.len(), 2);
    assert_eq!(
        (
            nested.subs[0].current,
            nested.subs[0].end,
            nested.subs[0].subs.len()
        ),
        (Some(2), Some(9), 1)
    );
    for bad in ["", "a-b|progress", "progress(", "progress)x", "progress x"] {
        assert!(parse_oip(bad).is_err(), "{bad:?}");
    }
}

/// Checks a status the way wazo-provd-client reads it; its state.
fn oip_state(reply: &Reply) -> String {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let text = reply.body["status"]
        .as_str()
        .unwrap_or_else(|| panic!("no status in {:?}", reply.body));
    let oip = parse_oip(text).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ["waiting", "progress", "success", "fail"].contains(&oip.state.as_str()),
        "{text}"
    );
    oip.state
}

#[test]
fn locations_are_wazo_provds_and_operations_are_followed_like_its_client() {
    let server = start();
    let t = server.token("master");
    let tk = Some(t.as_str());
    let template = json!({"config": {
        "id": "autoprov-tpl",
        "parent_ids": ["base"],
        "role": "autocreate",
        "raw_config": {"sip_lines": {"1": {"username": "anonymous"}}},
    }});
    assert_eq!(
        server
            .call("POST", "/0.2/cfg_mgr/configs", tk, Some(template))
            .status,
        201
    );
    for (n, base) in BASES.iter().enumerate() {
        // Devices and configs.
        let id = format!("phone{n}");
        let r = server.call(
            "POST",
            &format!("{base}/dev_mgr/devices"),
            tk,
            Some(json!({"device": {"id": id, "mac": format!("00:15:65:30:00:0{n}")}})),
        );
        assert_eq!(r.status, 201, "{base}: {:?}", r.body);
        assert_eq!(r.body, json!({ "id": id }));
        assert_eq!(
            r.headers.get("location"),
            Some(&format!("/0.2/dev_mgr/devices/{id}")),
            "{base}"
        );
        let r = server.call(
            "POST",
            &format!("{base}/cfg_mgr/configs"),
            tk,
            Some(registrar_body(&format!("cfg{n}"))),
        );
        assert_eq!(
            r.headers.get("location"),
            Some(&format!("/0.2/cfg_mgr/configs/cfg{n}")),
            "{base}"
        );
        // Autocreate names the config under the configs (not wazo-provd's
        // `/cfg_mgr/autocreate/<id>`), and that path finds it.
        let r = server.call(
            "POST",
            &format!("{base}/cfg_mgr/autocreate"),
            tk,
            Some(json!({})),
        );
        assert_eq!(r.status, 201, "{base}: {:?}", r.body);
        let created = r.body["id"].as_str().unwrap().to_owned();
        let location = r.headers["location"].clone();
        assert_eq!(location, format!("/0.2/cfg_mgr/configs/{created}"));
        let found = server.call("GET", &location, tk, None);
        assert_eq!(found.body["config"]["id"], created.as_str());
        assert_eq!(found.body["config"]["transient"], true);
    }

    // Synchronize through the public base, followed on it as wazo-provd-client does.
    let dev_mgr = "/api/provd/0.2/dev_mgr";
    let r = server.call(
        "POST",
        &format!("{dev_mgr}/devices"),
        tk,
        Some(json!({"device": {"id": "desk", "mac": "00:15:65:30:00:10", "ip": "127.0.0.1", "plugin": "yealink"}})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = server.call(
        "POST",
        &format!("{dev_mgr}/synchronize"),
        tk,
        Some(json!({"id": "desk"})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body, Value::Null, "no body, as in wazo-provd");
    let location = r.headers["location"].clone();
    let number = location
        .strip_prefix("/0.2/dev_mgr/synchronize/")
        .unwrap_or_else(|| panic!("Location {location}"));
    assert!(number.parse::<u64>().is_ok_and(|n| n >= 1), "{location}");
    let url = client_url(dev_mgr, &location);
    assert_eq!(url, format!("{dev_mgr}/synchronize/{number}"));
    // The phone has not answered yet.
    assert_eq!(oip_state(&server.call("GET", &url, tk, None)), "progress");
    server.phone_accepts_one_notify();
    let deadline = Instant::now() + PATIENCE;
    loop {
        let state = oip_state(&server.call("GET", &url, tk, None));
        if state != "progress" {
            assert_eq!(state, "success");
            break;
        }
        assert!(Instant::now() < deadline, "{url} still in progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(server.call("DELETE", &url, tk, None).status, 204);
    assert_eq!(server.call("GET", &url, tk, None).status, 404);
    assert_eq!(server.call("DELETE", &url, tk, None).status, 404);

    // Through the other base: a device without an address fails at once; same rules.
    let r = server.call(
        "POST",
        "/0.2/dev_mgr/synchronize",
        tk,
        Some(json!({"id": "phone0"})),
    );
    assert_eq!(r.status, 201, "{:?}", r.body);
    let location = r.headers["location"].clone();
    assert!(
        location.starts_with("/0.2/dev_mgr/synchronize/"),
        "{location}"
    );
    for manager_base in ["/0.2/dev_mgr", dev_mgr] {
        let url = client_url(manager_base, &location);
        assert_eq!(oip_state(&server.call("GET", &url, tk, None)), "fail");
    }
    let url = client_url(dev_mgr, &location);
    assert_eq!(server.call("DELETE", &url, tk, None).status, 204);
    assert_eq!(server.call("GET", &url, tk, None).status, 404);
}

/// JSON as Python's `json.dumps` writes it by default (`", "` and `": "`), which is what
/// wazo-provd-client sends: one space after each separator.
fn python_json(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), python_json(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(python_json).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

#[test]
fn a_config_of_1024_sip_lines_is_accepted_with_the_default_limit() {
    let server = start();
    let t = server.token("master");
    let tk = Some(t.as_str());
    let mut lines = Map::new();
    for i in 0..1024 {
        lines.insert(
            i.to_string(),
            json!({
                "username": format!("user{i:04}"),
                "password": format!("pw-{i:04}-xyzzy"),
                "display_name": format!("Line {i}"),
                "number": format!("line{i}"),
                "proxy_ip": "127.0.0.1",
                "registrar_ip": "127.0.0.1",
            }),
        );
    }
    let mut body = registrar_body("test1");
    body["config"]["raw_config"]["sip_lines"] = Value::Object(lines);
    let text = python_json(&body);
    assert!(
        (150_000..200_000).contains(&text.len()),
        "wazo-provd's test sends about 160 KB: {}",
        text.len()
    );
    let r = server.send("POST", "/0.2/cfg_mgr/configs", tk, Some(text));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["id"], "test1");
    let raw = server.call("GET", "/0.2/cfg_mgr/configs/test1/raw", tk, None);
    assert_eq!(
        raw.body["raw_config"]["sip_lines"]
            .as_object()
            .map(Map::len),
        Some(1024)
    );
    assert_eq!(
        raw.body["raw_config"]["sip_lines"]["1023"]["number"],
        "line1023"
    );
    assert_eq!(
        server
            .call("DELETE", "/0.2/cfg_mgr/configs/test1", tk, None)
            .status,
        204
    );

    // The raw config has its own, smaller bound, so that a raw config too large is named as
    // such rather than answered 413 for the whole body.
    let mut body = registrar_body("too-big");
    body["config"]["raw_config"]["X_blob"] = json!("x".repeat(MAX_RAW_CONFIG_BYTES));
    let r = server.call("POST", "/0.2/cfg_mgr/configs", tk, Some(body));
    assert_eq!((r.status, field(&r)), (400, "raw_config"), "{:?}", r.body);
}

#[test]
fn autocreate_copies_autoprov_on_a_fresh_store_and_prefers_an_admin_template() {
    let server = start();
    let t = server.token("master");
    let tk = Some(t.as_str());
    let parent_of_new = |server: &Server| {
        let r = server.call("POST", "/0.2/cfg_mgr/autocreate", tk, Some(json!({})));
        assert_eq!(r.status, 201, "{:?}", r.body);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let created = server.call("GET", &format!("/0.2/cfg_mgr/configs/{id}"), tk, None);
        created.body["config"]["parent_ids"].clone()
    };
    // wazo-provd's `autoprov` carries the role, and so does the built-in one.
    let autoprov = server.call("GET", "/0.2/cfg_mgr/configs/autoprov", tk, None);
    assert_eq!(autoprov.body["config"]["role"], "autocreate");
    assert_eq!(parent_of_new(&server), json!(["autoprov"]));
    let template = json!({"config": {
        "id": "zz-lines",
        "parent_ids": ["base"],
        "role": "autocreate",
        "raw_config": {},
    }});
    let r = server.call("POST", "/0.2/cfg_mgr/configs", tk, Some(template));
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(parent_of_new(&server), json!(["zz-lines"]));
    // Without any template, a clear 404.
    for id in ["autoprov", "zz-lines"] {
        let path = format!("/0.2/cfg_mgr/configs/{id}");
        let mut plain = server.call("GET", &path, tk, None).body["config"].clone();
        plain["role"] = Value::Null;
        let r = server.call("PUT", &path, tk, Some(json!({ "config": plain })));
        assert_eq!(r.status, 204, "{id}: {:?}", r.body);
    }
    let r = server.call("POST", "/0.2/cfg_mgr/autocreate", tk, Some(json!({})));
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert!(r.body.to_string().contains("autocreate"), "{:?}", r.body);
}
