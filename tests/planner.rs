//! The device listing's query planner (issue 14) against a full scan: on random stores and
//! random list queries, the REST answer (which reads the store's indexes: id, MAC and IP
//! indexes, per-tenant field indexes, index orders for sorts) equals the reference semantics
//! (`ListQuery::apply`) over every listed device.
//!
//! Requests go through the real router (`tower::ServiceExt::oneshot`, no socket: hundreds of
//! queries per case); the store is a real store directory.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use proptest::prelude::*;
use provisiond::http::api::query::ListQuery;
use provisiond::http::api::router;
use provisiond::model::{Added, Device, Tenant};
use provisiond::store::Store;
use serde_json::{json, Value};
use tower::ServiceExt;

/// master → a → a1, master → b.
const TENANTS: [(&str, Option<&str>); 4] = [
    ("master", None),
    ("a", Some("master")),
    ("a1", Some("a")),
    ("b", Some("master")),
];

const VENDORS: [&str; 4] = ["Yealink", "Snom", "Poly", ""];
const MODELS: [&str; 3] = ["T54W", "D785", "VVX"];
const PLUGINS: [&str; 3] = ["yealink", "snom", "gone"];
const CONFIGS: [&str; 2] = ["base", "autoprov"];
const IPS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "::1"];

#[derive(Debug, Clone)]
struct Dev {
    tenant: usize,
    mac: bool,
    ip: Option<usize>,
    vendor: Option<usize>,
    model: Option<usize>,
    plugin: Option<usize>,
    config: Option<usize>,
    sn: Option<u8>,
    auto: bool,
    extra: Option<u8>,
}

fn dev() -> impl Strategy<Value = Dev> {
    (
        0..TENANTS.len(),
        any::<bool>(),
        prop::option::of(0..IPS.len()),
        prop::option::of(0..VENDORS.len()),
        prop::option::of(0..MODELS.len()),
        prop::option::of(0..PLUGINS.len()),
        prop::option::of(0..CONFIGS.len()),
        prop::option::of(0u8..3),
        any::<bool>(),
        prop::option::of(0u8..3),
    )
        .prop_map(
            |(tenant, mac, ip, vendor, model, plugin, config, sn, auto, extra)| Dev {
                tenant,
                mac,
                ip,
                vendor,
                model,
                plugin,
                config,
                sn,
                auto,
                extra,
            },
        )
}

fn mac_of(n: usize) -> String {
    format!("00:15:65:00:{:02x}:{:02x}", n / 256, n % 256)
}

/// A value a selector may test `key` against: mostly ones that occur, sometimes not.
fn value_for(key: &str, pick: usize) -> Value {
    let from = |list: &[&str]| json!(list.get(pick % (list.len() + 1)).copied().unwrap_or("zzz"));
    match key {
        "vendor" => from(&VENDORS),
        "model" => from(&MODELS),
        "plugin" => from(&PLUGINS),
        "config" => from(&CONFIGS),
        "ip" => from(&IPS),
        "mac" => json!(mac_of(pick % 8)),
        "sn" => json!(format!("SN{}", pick % 4)),
        "added" => from(&["auto"]),
        "id" => json!(format!("d{:03}", pick % 12)),
        "tenant_uuid" => from(&TENANTS.map(|t| t.0)),
        "X_k" => json!(pick % 4),
        _ => json!("zzz"),
    }
}

const KEYS: [&str; 12] = [
    "vendor",
    "model",
    "plugin",
    "config",
    "ip",
    "mac",
    "sn",
    "added",
    "id",
    "tenant_uuid",
    "X_k",
    "description",
];

#[derive(Debug, Clone)]
struct Clause {
    key: usize,
    op: u8,
    picks: Vec<usize>,
}

fn clause() -> impl Strategy<Value = Clause> {
    (
        0..KEYS.len(),
        0u8..5,
        prop::collection::vec(0usize..6, 0..3),
    )
        .prop_map(|(key, op, picks)| Clause { key, op, picks })
}

#[derive(Debug, Clone)]
struct Query {
    caller: usize,
    recurse: bool,
    clauses: Vec<Clause>,
    sort: Option<(usize, bool)>,
    skip: usize,
    limit: usize,
}

fn query() -> impl Strategy<Value = Query> {
    (
        0..TENANTS.len(),
        any::<bool>(),
        prop::collection::vec(clause(), 0..3),
        prop::option::of((0..KEYS.len(), any::<bool>())),
        0usize..4,
        0usize..5,
    )
        .prop_map(|(caller, recurse, clauses, sort, skip, limit)| Query {
            caller,
            recurse,
            clauses,
            sort,
            skip,
            limit,
        })
}

/// The query string pairs of a query.
fn pairs(q: &Query) -> Vec<(String, String)> {
    let mut selector = serde_json::Map::new();
    for c in &q.clauses {
        let key = KEYS[c.key];
        let first = c.picks.first().copied().unwrap_or(0);
        let cond = match c.op {
            0 => value_for(key, first),
            1 => json!({"$in": c.picks.iter().map(|&p| value_for(key, p)).collect::<Vec<_>>()}),
            2 => json!({"$ne": value_for(key, first)}),
            3 => json!({"$exists": first % 2 == 0}),
            _ => json!({"$gt": value_for(key, first)}),
        };
        selector.insert(key.to_owned(), cond);
    }
    let mut out = Vec::new();
    if !selector.is_empty() {
        out.push(("q".to_owned(), Value::Object(selector).to_string()));
    }
    if let Some((key, desc)) = q.sort {
        out.push(("sort".to_owned(), KEYS[key].to_owned()));
        out.push((
            "sort_ord".to_owned(),
            if desc { "DESC" } else { "ASC" }.to_owned(),
        ));
    }
    if q.skip > 0 {
        out.push(("skip".to_owned(), q.skip.to_string()));
    }
    if q.limit > 0 {
        out.push(("limit".to_owned(), q.limit.to_string()));
    }
    if q.recurse {
        out.push(("recurse".to_owned(), "true".to_owned()));
    }
    out
}

fn encode(pairs: &[(String, String)]) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        .collect::<Vec<_>>()
        .join("&")
}

struct World {
    _dir: tempfile::TempDir,
    app: axum::Router,
    token: String,
    runtime: tokio::runtime::Runtime,
}

impl World {
    fn new(devices: &[Dev]) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("data")).unwrap();
        store.ensure_defaults("master").unwrap();
        for (id, parent) in TENANTS.iter().skip(1) {
            store.create_tenant(&Tenant::new(*id, *parent)).unwrap();
        }
        for (n, d) in devices.iter().enumerate() {
            let mut device = Device::new(format!("d{n:03}"), TENANTS[d.tenant].0);
            device.mac = d.mac.then(|| mac_of(n).parse().unwrap());
            device.ip = d.ip.map(|i| IPS[i].parse().unwrap());
            device.vendor = d.vendor.map(|i| VENDORS[i].to_owned());
            device.model = d.model.map(|i| MODELS[i].to_owned());
            device.plugin = d.plugin.map(|i| PLUGINS[i].to_owned());
            device.config = d.config.map(|i| CONFIGS[i].to_owned());
            device.sn = d.sn.map(|i| format!("SN{i}"));
            device.added = if d.auto { Added::Auto } else { Added::Manual };
            if let Some(x) = d.extra {
                device.extra.insert("X_k".to_owned(), json!(x));
            }
            store.create_device(&device).unwrap();
        }
        let token = common::api_token(&store, "master", &[], None);
        let app = router(Arc::new(common::api_state(&store)), 1 << 20);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        World {
            _dir: dir,
            app,
            token,
            runtime,
        }
    }

    fn list(&self, acting: &str, query: &str) -> Value {
        let request = Request::get(format!("/0.2/dev_mgr/devices?{query}"))
            .header("X-Auth-Token", &self.token)
            .header("Wazo-Tenant", acting)
            .body(Body::empty())
            .unwrap();
        self.runtime.block_on(async {
            let response = self.app.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), 200, "{query}");
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .expect("a complete body");
            serde_json::from_slice(&body).expect("one JSON document")
        })
    }
}

/// The tenants of `root`'s subtree.
fn subtree(root: &str) -> BTreeSet<&'static str> {
    TENANTS
        .iter()
        .map(|t| t.0)
        .filter(|t| {
            let mut at = Some(*t);
            while let Some(x) = at {
                if x == root {
                    return true;
                }
                at = TENANTS.iter().find(|t| t.0 == x).and_then(|t| t.1);
            }
            false
        })
        .collect()
}

proptest! {
    // 20 stores of up to 40 devices, up to 40 queries each, in CI (PROPTEST_CASES=N for more).
    #![proptest_config(ProptestConfig { cases: 20, ..ProptestConfig::default() })]

    #[test]
    fn planned_listings_equal_a_full_scan(
        devices in prop::collection::vec(dev(), 0..40),
        queries in prop::collection::vec(query(), 1..40),
    ) {
        let world = World::new(&devices);
        // Every device, read by the plainest path, checked against what was stored.
        let all = world.list("master", "recurse=true")["devices"].as_array().unwrap().clone();
        let ids: Vec<&str> = all.iter().filter_map(|d| d["id"].as_str()).collect();
        let want: Vec<String> = (0..devices.len()).map(|n| format!("d{n:03}")).collect();
        prop_assert_eq!(ids, want);
        for q in &queries {
            let acting = TENANTS[q.caller].0;
            let pairs = pairs(q);
            let listed: BTreeSet<&str> = if q.recurse {
                subtree(acting)
            } else {
                [acting].into()
            };
            let candidates: Vec<Value> = all
                .iter()
                .filter(|d| d["tenant_uuid"].as_str().is_some_and(|t| listed.contains(t)))
                .cloned()
                .collect();
            let reference = ListQuery::parse(&pairs).unwrap().apply(candidates).unwrap();
            let got = world.list(acting, &encode(&pairs));
            prop_assert_eq!(&got["devices"], &Value::Array(reference), "{} as {}", encode(&pairs), acting);
        }
    }
}
