//! The OpenAPI document `src/http/api/api.yml` against the running API (curl on 127.0.0.1).
//! Checks that it is served unchanged under both bases. Checks that it lists exactly the
//! router's routes. Checks that each ACL it documents is the one that the handler checks.
//! Checks that the status codes, headers and bodies that the handlers answer are the
//! documented ones.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use common::InProcess;
use provisiond::http::api::{hash_token, router, ROUTES};
use provisiond::model::{self, Token};
use provisiond::store::Store;
use serde_json::Value;

const BASES: [&str; 2] = ["/api/provd/0.2", "/0.2"];
const METHODS: [&str; 4] = ["post", "get", "put", "delete"];

fn document_text() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/http/api/api.yml");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn document() -> Value {
    serde_yaml::from_str(&document_text()).expect("api.yml is YAML")
}

struct Api {
    addr: SocketAddr,
    store: Store,
    state: Arc<provisiond::http::api::ApiState>,
    _http: InProcess,
    _dir: tempfile::TempDir,
}

fn start() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("data")).unwrap();
    store.ensure_defaults("master").unwrap();
    let mut state = common::api_state(&store);
    let packages = package_fixture(&mut state, dir.path());
    let state = Arc::new(state.with_packages(packages));
    let app = router(Arc::clone(&state), 1 << 20);
    let limits = common::api_limits(60);
    let http = InProcess::start(app, limits, None);
    Api {
        addr: http.addr,
        store,
        state,
        _http: http,
        _dir: dir,
    }
}

/// The examples' vendor package: an admin copy of yealink declaring `fixture-fw` (the id of
/// the examples), installed already, so that installing it again does nothing (no download)
/// and upgrading and uninstalling find it.
fn package_fixture(
    state: &mut provisiond::http::api::ApiState,
    dir: &std::path::Path,
) -> Arc<provisiond::plugins::packages::PackageStore> {
    use provisiond::plugins::packages::PackageStore;
    use provisiond::plugins::{Origin, PluginSet};
    let body = b"fixture firmware";
    let admin = dir.join("admin-plugins");
    common::plugin_copy(
        &admin,
        "yealink",
        &format!(
            "[[packages]]\nid = \"fixture-fw\"\nversion = \"1\"\nurl = \"http://127.0.0.1:9/fixture.rom\"\n\
             sha256 = \"{}\"\nsize = {}\nformat = \"raw\"\nfiles = [{{ to = \"fixture.rom\" }}]\n",
            common::sha256_hex(body),
            body.len()
        ),
    );
    state.plugin_roots.push((admin, Origin::Admin));
    let set = PluginSet::load(&state.plugin_roots);
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    let package = set.get("yealink").unwrap().packages[0].clone();
    state.files.set_plugins(Arc::new(set));
    let packages = Arc::new(PackageStore::open(dir.join("packages")).unwrap());
    let download = dir.join("fixture.rom");
    fs::write(&download, body).unwrap();
    packages.install("yealink", &package, &download).unwrap();
    packages
}

impl Api {
    /// A token of the default tenant with `acl`; returns (secret, listed id).
    fn token(&self, acl: &[&str]) -> (String, String) {
        let secret = format!("secret-{}", model::new_id());
        let hash = hash_token(&secret);
        self.store
            .create_token(&Token {
                hash: hash.clone(),
                tenant: "master".into(),
                acl: acl.iter().map(|a| a.to_string()).collect(),
                created: model::now(),
                expires: None,
                description: None,
            })
            .unwrap();
        (secret, hash[..16].to_owned())
    }
}

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    /// The media type, without parameters.
    fn media_type(&self) -> Option<&str> {
        self.headers
            .get("content-type")
            .map(|v| v.split(';').next().unwrap_or("").trim())
    }
}

/// One request with curl; `body` is sent as `application/vnd.proformatique.provd+json`.
fn curl(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Reply {
    let tmp = tempfile::tempdir().unwrap();
    let (head, out) = (tmp.path().join("h"), tmp.path().join("b"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--path-as-is", "--max-time", "20", "-X"])
        .arg(method.to_ascii_uppercase())
        .arg("-o")
        .arg(&out)
        .arg("-D")
        .arg(&head)
        .args(["-w", "%{http_code}"]);
    if let Some(token) = token {
        cmd.arg("-H").arg(format!("X-Auth-Token: {token}"));
    }
    if let Some(body) = body {
        cmd.args([
            "-H",
            "Content-Type: application/vnd.proformatique.provd+json",
            "--data-binary",
            body,
        ]);
    }
    let output = cmd
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl (apt-get install curl)");
    let status = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "curl {method} {path}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    // Only the last response's headers matter (curl writes one block per response).
    let head = fs::read_to_string(&head).unwrap_or_default();
    let headers = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: fs::read(&out).unwrap_or_default(),
    }
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    let mut node = node;
    while let Some(reference) = node.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {reference}"));
        node = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("dangling $ref {reference}"));
    }
    node
}

/// Every `$ref` anywhere in the document.
fn refs(node: &Value, out: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The schema keywords that `validate` understands; the document must use no others.
const KEYWORDS: &[&str] = &[
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "nullable",
    "description",
    "example",
    "allOf",
    "pattern",
    "maxLength",
    "minimum",
    "maxItems",
];

/// Checks `value` against an OpenAPI 3.0 schema (the subset in `KEYWORDS`).
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    let obj = schema
        .as_object()
        .ok_or_else(|| format!("{at}: schema is not an object"))?;
    for key in obj.keys() {
        assert!(
            KEYWORDS.contains(&key.as_str()),
            "schema keyword {key} at {at} is not checked by this test"
        );
    }
    if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
        for part in all {
            validate(doc, part, value, at)?;
        }
    }
    if value.is_null() {
        return if obj.get("nullable") == Some(&Value::Bool(true)) {
            Ok(())
        } else {
            Err(format!("{at}: null is not allowed"))
        };
    }
    if let Some(allowed) = obj.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            return Err(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    let Some(kind) = obj.get("type").and_then(Value::as_str) else {
        return Ok(());
    };
    match (kind, value) {
        ("object", Value::Object(map)) => {
            let empty = serde_json::Map::new();
            let properties = obj
                .get("properties")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            for name in obj
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = name.as_str().unwrap();
                if !map.contains_key(name) {
                    return Err(format!("{at}: missing required key {name}"));
                }
            }
            for (key, item) in map {
                let where_ = format!("{at}.{key}");
                match (properties.get(key), obj.get("additionalProperties")) {
                    (Some(sub), _) => validate(doc, sub, item, &where_)?,
                    (None, Some(Value::Bool(false))) => {
                        return Err(format!("{at}: undocumented key {key}"))
                    }
                    (None, Some(sub @ Value::Object(_))) => validate(doc, sub, item, &where_)?,
                    (None, _) => {}
                }
            }
            Ok(())
        }
        ("array", Value::Array(items)) => {
            if let Some(max) = obj.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    return Err(format!("{at}: more than {max} items"));
                }
            }
            let sub = obj
                .get("items")
                .ok_or_else(|| format!("{at}: array without items"))?;
            for (i, item) in items.iter().enumerate() {
                validate(doc, sub, item, &format!("{at}[{i}]"))?;
            }
            Ok(())
        }
        ("string", Value::String(s)) => {
            if let Some(max) = obj.get("maxLength").and_then(Value::as_u64) {
                if s.chars().count() as u64 > max {
                    return Err(format!("{at}: longer than {max}"));
                }
            }
            if let Some(pattern) = obj.get("pattern").and_then(Value::as_str) {
                if !regex::Regex::new(pattern).unwrap().is_match(s) {
                    return Err(format!("{at}: {s:?} does not match {pattern}"));
                }
            }
            Ok(())
        }
        ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => {
            match obj.get("minimum").and_then(Value::as_f64) {
                Some(min) if n.as_f64().unwrap() < min => Err(format!("{at}: below {min}")),
                _ => Ok(()),
            }
        }
        ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) => Ok(()),
        _ => Err(format!("{at}: {value} is not of type {kind}")),
    }
}

/// Every (path, method, operation) of the document, in `ROUTES` order, methods in `METHODS`
/// order.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, _) in ROUTES {
        let item = &doc["paths"][*path];
        for method in ["get", "post", "put", "delete"] {
            if let Some(op) = item.get(method) {
                out.push((path.to_string(), method.to_owned(), op.clone()));
            }
        }
    }
    out
}

/// The collections whose objects get their id from the server (and so have no id in their
/// POST examples).
const SERVER_CHOSEN: [&str; 4] = [
    "/prov_mgr/categories",
    "/prov_mgr/codes",
    "/prov_mgr/rollouts",
    "/prov_mgr/jobs",
];

/// What the path parameters stand for: the token to delete, and the objects of
/// [`SERVER_CHOSEN`] that the POSTs created, by collection, read from their `Location`.
struct Ids {
    token: String,
    created: BTreeMap<String, String>,
}

impl Ids {
    fn new(token: &str) -> Ids {
        Ids {
            token: token.to_owned(),
            created: BTreeMap::new(),
        }
    }

    /// Remembers the object that a 201 names in its `Location` (`/0.2/<collection>/<id>`).
    fn remember(&mut self, reply: &Reply) {
        let named = reply
            .headers
            .get("location")
            .and_then(|l| l.strip_prefix("/0.2"))
            .and_then(|l| l.rsplit_once('/'));
        if let (201, Some((collection, id))) = (reply.status, named) {
            self.created.insert(collection.to_owned(), id.to_owned());
        }
    }
}

/// `template` (a path or an ACL of `path`) with the path parameters filled in, so that the
/// successful run finds what its POSTs created. An object of [`SERVER_CHOSEN`] that no POST
/// created yet is named `none` (the ACL check comes before the lookup).
fn fill(template: &str, path: &str, ids: &Ids) -> String {
    let id = match path {
        p if p.starts_with("/dev_mgr/devices/") => "dev1",
        p if p.starts_with("/cfg_mgr/configs/") => "cfg1",
        p if p.starts_with("/pg_mgr/plugins/") => "yealink",
        p if p.starts_with("/tenants/") => "t1",
        p if p.starts_with("/tokens/") => &ids.token,
        // The user that `POST /users` created (its `Location`); `none` before it.
        p if p.starts_with("/users/") => ids.created.get("/users").map_or("none", String::as_str),
        p => SERVER_CHOSEN
            .iter()
            .find(|c| p.starts_with(&format!("{c}/")))
            .map_or("", |c| ids.created.get(*c).map_or("none", String::as_str)),
    };
    template
        .replace("{id}", id)
        .replace("{code}", id)
        .replace("{op}", "1")
        .replace("{param}", "locale")
        .replace("{tenant}", "master")
}

/// The example request body of an operation, as JSON text.
fn example_body(doc: &Value, op: &Value) -> Option<String> {
    let body = resolve(doc, op.get("requestBody")?);
    let media = &body["content"]["application/vnd.proformatique.provd+json"];
    let example = media
        .get("example")
        .unwrap_or_else(|| panic!("request body without an example: {op}"));
    validate(doc, &media["schema"], example, "example").unwrap();
    Some(example.to_string())
}

/// The example body of `POST <path>`, as JSON.
fn post_example(doc: &Value, path: &str) -> Value {
    let op = &doc["paths"][path]["post"];
    let text = example_body(doc, op).unwrap_or_else(|| panic!("POST {path}: no example"));
    serde_json::from_str(&text).unwrap()
}

/// The provisioning category and the code that the examples of `POST /prov_mgr/codes`,
/// `/prov_mgr/rollouts`, `/prov_mgr/jobs` and `/prov_mgr/redeem` name, made in the store
/// before the run: a code's digits are drawn by the server, and the category that
/// `POST /prov_mgr/categories` creates must stay free of live codes for its DELETE to succeed
/// (a category that codes name cannot be deleted).
fn provisioning_fixtures(doc: &Value, store: &Store) {
    let name = post_example(doc, "/prov_mgr/codes")["code"]["category"].clone();
    for (path, envelope) in [("/prov_mgr/rollouts", "rollout"), ("/prov_mgr/jobs", "job")] {
        assert_eq!(
            post_example(doc, path)[envelope]["category"],
            name,
            "{path}"
        );
    }
    assert_ne!(
        post_example(doc, "/prov_mgr/categories")["category"]["name"],
        name
    );
    let category = store
        .create_category(&model::Category {
            id: model::new_id(),
            tenant: "master".into(),
            name: name.as_str().unwrap().to_owned(),
            description: None,
            config: None,
            firmware: BTreeMap::new(),
            provisioning: true,
            revision: 0,
        })
        .unwrap();
    let now = model::now();
    store
        .create_code(&model::Code {
            code: post_example(doc, "/prov_mgr/redeem")["code"]
                .as_str()
                .unwrap()
                .to_owned(),
            tenant: "master".into(),
            category: category.id,
            config: None,
            label: None,
            rollout: None,
            created: now,
            expires: now + model::CODE_TTL_SECS,
        })
        .unwrap();
}

/// The JSON body of a reply.
fn json_body(what: &str, reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"))
}

/// Checks a reply against the documented responses of `op`.
fn check_reply(doc: &Value, what: &str, url: &str, op: &Value, reply: &Reply) {
    let documented = op["responses"]
        .get(reply.status.to_string())
        .unwrap_or_else(|| {
            panic!(
                "{what}: status {} is not documented (body {})",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            )
        });
    let documented = resolve(doc, documented);
    if documented
        .get("headers")
        .and_then(|h| h.get("Location"))
        .is_some()
    {
        let location = reply
            .headers
            .get("location")
            .unwrap_or_else(|| panic!("{what}: no Location"));
        // Always wazo-provd's `/0.2/…` form, whichever base was asked; an autocreated config
        // is named under the configs.
        let path = BASES
            .iter()
            .find_map(|base| url.strip_prefix(base))
            .unwrap_or_else(|| panic!("{what}: no base in {url}"));
        // Plugin and package operations are all followed under `/pg_mgr/operations`.
        let path = if path == "/cfg_mgr/autocreate" {
            "/cfg_mgr/configs"
        } else if path.starts_with("/pg_mgr/") {
            // Plugin operations are followed at one place (`oip_started`).
            "/pg_mgr/operations"
        } else {
            path
        };
        assert!(
            location.starts_with(&format!("/0.2{path}/")),
            "{what}: Location {location}"
        );
    }
    let Some(content) = documented.get("content").and_then(Value::as_object) else {
        assert!(
            reply.body.is_empty(),
            "{what}: undocumented body {}",
            String::from_utf8_lossy(&reply.body)
        );
        return;
    };
    let media = reply
        .media_type()
        .unwrap_or_else(|| panic!("{what}: no Content-Type"));
    let schema = &content
        .get(media)
        .unwrap_or_else(|| panic!("{what}: media type {media} is not documented"))["schema"];
    if media.ends_with("json") {
        let body: Value = serde_json::from_slice(&reply.body)
            .unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"));
        if let Err(e) = validate(doc, schema, &body, "body") {
            panic!("{what}: {e}\n{body:#}");
        }
    }
}

#[test]
fn both_bases_serve_the_file_without_a_token() {
    let api = start();
    let text = document_text();
    for base in BASES {
        let reply = curl(api.addr, "get", &format!("{base}/api/api.yml"), None, None);
        assert_eq!(reply.status, 200, "{base}");
        assert_eq!(reply.media_type(), Some("application/yaml"), "{base}");
        assert!(
            reply.body == text.as_bytes(),
            "{base}: served document differs from the file"
        );
    }
}

#[test]
fn document_lists_exactly_the_routes() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.0.3");
    let servers: Vec<&str> = doc["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap())
        .collect();
    assert_eq!(servers, BASES);
    assert_eq!(
        doc["security"],
        serde_json::json!([{ "token": [] }, { "bearer": [] }])
    );
    let scheme = &doc["components"]["securitySchemes"]["token"];
    assert_eq!(
        (&scheme["type"], &scheme["in"], &scheme["name"]),
        (&"apiKey".into(), &"header".into(), &"X-Auth-Token".into())
    );
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&"http".into(), &"bearer".into())
    );

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for key in item.as_object().unwrap().keys() {
            if key != "parameters" {
                documented.insert((path.clone(), key.clone()));
            }
        }
    }
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .flat_map(|(path, methods)| methods.iter().map(|m| (path.to_string(), m.to_string())))
        .collect();
    assert_eq!(documented, routed);

    let mut all_refs = Vec::new();
    refs(&doc, &mut all_refs);
    for reference in &all_refs {
        resolve(&doc, &serde_json::json!({ "$ref": reference }));
    }

    let template_param = regex::Regex::new(r"\{([a-z_]+)\}").unwrap();
    for (path, method, op) in operations(&doc) {
        let what = format!("{} {path}", method.to_uppercase());
        let responses = op["responses"].as_object();
        assert!(
            responses.is_some_and(|r| !r.is_empty()),
            "{what}: no response"
        );
        // Every template parameter is declared, in the path item or the operation.
        let declared: Vec<Value> = [&doc["paths"][&path]["parameters"], &op["parameters"]]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
            .map(|p| resolve(&doc, p).clone())
            .collect();
        for name in template_param.captures_iter(&path).map(|c| c[1].to_owned()) {
            assert!(
                declared.iter().any(|p| p["name"] == name.as_str()
                    && p["in"] == "path"
                    && p["required"] == true),
                "{what}: path parameter {name} is not declared"
            );
        }
        if path == "/api/api.yml" {
            assert_eq!(op["security"], serde_json::json!([]), "{what}");
            continue;
        }
        let acl = op["x-acl"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no x-acl"));
        let description = op["description"].as_str().unwrap_or("");
        assert!(
            description.contains(&format!("ACL: `{acl}`")),
            "{what}: the description does not name the ACL {acl}"
        );
        assert!(
            declared
                .iter()
                .any(|p| p["name"] == "Wazo-Tenant" && p["in"] == "header"),
            "{what}: no Wazo-Tenant parameter"
        );
        for code in ["401", "403"] {
            assert!(op["responses"].get(code).is_some(), "{what}: no {code}");
        }
        let list = path == "/dev_mgr/devices" || path == "/cfg_mgr/configs";
        let query: BTreeSet<String> = declared
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        // The provisioning lists take `recurse` only: they have no selector, sort or paging.
        let want: BTreeSet<String> = if list && method == "get" {
            [
                "q", "q64", "fields", "skip", "limit", "sort", "sort_ord", "recurse",
            ]
            .map(String::from)
            .into()
        } else if SERVER_CHOSEN.contains(&path.as_str()) && method == "get" {
            ["recurse".to_owned()].into()
        } else {
            BTreeSet::new()
        };
        assert_eq!(query, want, "{what}: query parameters");
    }
}

#[test]
fn documented_acls_are_the_ones_checked() {
    let doc = document();
    let api = start();
    let (none, _) = api.token(&[]);
    let ids = Ids::new("0123456789abcdef");
    for (path, method, op) in operations(&doc) {
        if path == "/api/api.yml" {
            continue;
        }
        let url = format!("/0.2{}", fill(&path, &path, &ids));
        let what = format!("{} {url}", method.to_uppercase());
        let body = example_body(&doc, &op);

        let anonymous = curl(api.addr, &method, &url, None, body.as_deref());
        assert_eq!(anonymous.status, 401, "{what}");
        check_reply(&doc, &what, &url, &op, &anonymous);

        let reply = curl(api.addr, &method, &url, Some(&none), body.as_deref());
        assert_eq!(reply.status, 403, "{what}");
        check_reply(&doc, &what, &url, &op, &reply);
        let answer: Value = serde_json::from_slice(&reply.body).unwrap();
        let acl = fill(op["x-acl"].as_str().unwrap(), &path, &ids);
        assert_eq!(
            answer["error"],
            format!("the token lacks the ACL {acl}"),
            "{what}"
        );
    }
}

#[test]
fn answers_are_the_documented_ones() {
    let doc = document();
    let api = start();
    let (all, _) = api.token(&["#"]);
    // Deleted by `DELETE /tokens/{id}`.
    let (_, spare_id) = api.token(&["provd.status.read"]);
    provisioning_fixtures(&doc, &api.store);
    // A plugin operation for `/pg_mgr/operations/{op}` (number 1, as the synchronisation
    // that the examples start), finished as a download would.
    let oip = api.state.oips.start(Some("download"));
    assert_eq!(oip.id(), 1);
    oip.progress(Some(10), Some(10));
    oip.succeed();
    repository_fixture(&api.store);
    let mut ids = Ids::new(&spare_id);
    let ops = operations(&doc);
    let mut seen = BTreeSet::new();
    for method in METHODS {
        for (path, _, op) in ops.iter().filter(|(_, m, _)| m == method) {
            let url = format!("/api/provd/0.2{}", fill(path, path, &ids));
            let what = format!("{} {url}", method.to_uppercase());
            let reply = curl(
                api.addr,
                method,
                &url,
                Some(&all),
                example_body(&doc, op).as_deref(),
            );
            check_reply(&doc, &what, &url, op, &reply);
            ids.remember(&reply);
            seen.insert((what, reply.status));
            if method == "get" && path == "/prov_mgr/rollouts/{id}" {
                let status = check_csv_export(&doc, api.addr, &all, &url, op);
                seen.insert((format!("GET {url}.csv"), status));
            }
        }
    }
    // The examples chain: what the POSTs create, the GETs, PUTs and DELETEs find (autocreate
    // copies the built-in `autoprov`).
    let failed: Vec<_> = seen
        .iter()
        .filter(|(_, status)| !(200..300).contains(status))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
}

/// A cached plugin index naming the plugins of the install examples, with the upgrade's and
/// the uninstall's plugins installed from it: the install and upgrade operations start (and
/// fail later, the server being unreachable); the uninstall succeeds.
fn repository_fixture(store: &Store) {
    let data = store.path().parent().unwrap().to_path_buf();
    let doc = document();
    let name = |path: &str| post_example(&doc, path)["id"].as_str().unwrap().to_owned();
    let (install, upgrade, uninstall) = (
        name("/pg_mgr/install/install"),
        name("/pg_mgr/install/upgrade"),
        name("/pg_mgr/install/uninstall"),
    );
    let entry = |plugin: &str| {
        serde_json::json!({"name": plugin, "version": "99.0", "archive": format!("{plugin}-99.0.tar.gz"),
            "size": 10, "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"})
    };
    let cache = serde_json::json!({"server": "http://127.0.0.1:9/", "verified_by": null,
        "index": {"format": 1, "plugins": [entry(&install), entry(&upgrade), entry(&uninstall)]}});
    std::fs::create_dir_all(data.join("repository")).unwrap();
    std::fs::write(data.join("repository/index.json"), cache.to_string()).unwrap();
    for plugin in [&upgrade, &uninstall] {
        let dir = data.join("plugins").join(plugin);
        std::fs::create_dir_all(dir.join("1.0")).unwrap();
        std::fs::write(dir.join(".repository"), "").unwrap();
        std::os::unix::fs::symlink("1.0", dir.join("current")).unwrap();
    }
}

/// `GET <url>.csv` (a rollout's export): the documented media type and columns, one line per
/// entry of the rollout that the example of `POST /prov_mgr/rollouts` made; its status.
fn check_csv_export(doc: &Value, addr: SocketAddr, token: &str, url: &str, op: &Value) -> u16 {
    let csv_url = format!("{url}.csv");
    let what = format!("GET {csv_url}");
    let reply = curl(addr, "get", &csv_url, Some(token), None);
    check_reply(doc, &what, &csv_url, op, &reply);
    assert_eq!(reply.status, 200, "{what}");
    assert_eq!(reply.media_type(), Some("text/csv"), "{what}");
    let id = url.rsplit('/').next().unwrap();
    assert_eq!(
        reply.headers.get("content-disposition").map(String::as_str),
        Some(format!("attachment; filename=\"rollout-{id}.csv\"").as_str()),
        "{what}"
    );
    let documented = op["responses"]["200"]["content"]["text/csv"]["example"]
        .as_str()
        .unwrap();
    let body = String::from_utf8(reply.body.clone()).unwrap();
    assert_eq!(
        body.lines().next(),
        documented.lines().next(),
        "{what}: columns"
    );
    assert!(body.ends_with("\r\n"), "{what}: CRLF line ends");
    let entries = post_example(doc, "/prov_mgr/rollouts")["rollout"]["entries"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(body.lines().count(), 1 + entries, "{what}: {body}");
    reply.status
}

#[test]
fn every_list_takes_the_documented_recurse_values() {
    let doc = document();
    let api = start();
    let (all, _) = api.token(&["#"]);
    let values: Vec<String> = doc["components"]["parameters"]["recurse"]["schema"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let mut lists = BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        let declares = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| resolve(&doc, p)["name"] == "recurse");
        if !declares {
            continue;
        }
        lists.insert(path.clone());
        for value in &values {
            let url = format!("/0.2{path}?recurse={value}");
            let reply = curl(api.addr, &method, &url, Some(&all), None);
            assert_eq!(reply.status, 200, "{url}");
            check_reply(&doc, &url, &url, &op, &reply);
        }
        for query in ["recurse=yes", "recurse=true&recurse=false"] {
            let url = format!("/0.2{path}?{query}");
            let reply = curl(api.addr, &method, &url, Some(&all), None);
            assert_eq!(reply.status, 400, "{url}");
            check_reply(&doc, &url, &url, &op, &reply);
            assert_eq!(
                json_body(&url, &reply)["details"]["field"],
                "recurse",
                "{url}"
            );
        }
    }
    let want: BTreeSet<String> = ["/dev_mgr/devices", "/cfg_mgr/configs"]
        .into_iter()
        .chain(SERVER_CHOSEN)
        .map(String::from)
        .collect();
    assert_eq!(lists, want);
}

#[test]
fn provisioning_refusals_are_the_documented_ones() {
    let doc = document();
    let api = start();
    let (all, _) = api.token(&["#"]);
    let op = |path: &str, method: &str| doc["paths"][path][method].clone();
    let call = |method: &str, path: &str, doc_path: &str, body: Option<Value>| {
        let url = format!("/0.2{path}");
        let what = format!("{} {url}", method.to_uppercase());
        let body = body.map(|b| b.to_string());
        let reply = curl(api.addr, method, &url, Some(&all), body.as_deref());
        check_reply(&doc, &what, &url, &op(doc_path, method), &reply);
        reply
    };
    let category = serde_json::json!({ "category": { "name": "Desk", "provisioning": true } });

    let created = call(
        "post",
        "/prov_mgr/categories",
        "/prov_mgr/categories",
        Some(category.clone()),
    );
    assert_eq!(created.status, 201);
    let category_id = json_body("category", &created)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let taken = call(
        "post",
        "/prov_mgr/categories",
        "/prov_mgr/categories",
        Some(category),
    );
    assert_eq!(taken.status, 400);
    assert_eq!(json_body("taken name", &taken)["details"]["field"], "name");

    let issued = call(
        "post",
        "/prov_mgr/codes",
        "/prov_mgr/codes",
        Some(serde_json::json!({ "code": { "category": "Desk" } })),
    );
    assert_eq!(issued.status, 201);
    let code = json_body("code", &issued)["code"]["code"]
        .as_str()
        .unwrap()
        .to_owned();
    let in_use = call(
        "delete",
        &format!("/prov_mgr/categories/{category_id}"),
        "/prov_mgr/categories/{id}",
        None,
    );
    assert_eq!(in_use.status, 409, "a category that a live code names");

    // Two phones behind one address: the PBX must name the device.
    for id in ["phone-a", "phone-b"] {
        let device = serde_json::json!({ "device": { "id": id, "ip": "10.0.0.50" } });
        let reply = call("post", "/dev_mgr/devices", "/dev_mgr/devices", Some(device));
        assert_eq!(reply.status, 201);
    }
    let ambiguous = call(
        "post",
        "/prov_mgr/redeem",
        "/prov_mgr/redeem",
        Some(serde_json::json!({ "code": code, "ip": "10.0.0.50" })),
    );
    assert_eq!(ambiguous.status, 409);
    let mut candidates: Vec<Value> = json_body("ambiguous", &ambiguous)["details"]["candidates"]
        .as_array()
        .unwrap()
        .clone();
    candidates.sort_by_key(|v| v.to_string());
    assert_eq!(candidates, ["phone-a", "phone-b"]);
    let still = call(
        "get",
        &format!("/prov_mgr/codes/{code}"),
        "/prov_mgr/codes/{code}",
        None,
    );
    assert_eq!(
        still.status, 200,
        "a refused redemption leaves the code live"
    );

    // The 409 above cost nothing (only a wrong code does); the budget of 127.0.0.1 is 10.
    let wrong = serde_json::json!({ "code": "000000000000", "device_id": "phone-a" });
    let mut failures = 0;
    let limited = loop {
        let reply = call(
            "post",
            "/prov_mgr/redeem",
            "/prov_mgr/redeem",
            Some(wrong.clone()),
        );
        if reply.status != 404 {
            break reply;
        }
        assert_eq!(
            json_body("wrong code", &reply)["error"],
            "code not accepted"
        );
        failures += 1;
        assert!(failures <= 10, "still answered after {failures} failures");
    };
    assert_eq!(limited.status, 429);
    assert_eq!(failures, 10);
    // Not looked at: the right code for one phone is refused too.
    let right = serde_json::json!({ "code": code, "device_id": "phone-a" });
    let refused = call("post", "/prov_mgr/redeem", "/prov_mgr/redeem", Some(right));
    assert_eq!(refused.status, 429);

    // The CSV hands codes out: it needs codes.read besides rollouts.read.
    let rollout =
        serde_json::json!({ "rollout": { "category": "Desk", "entries": [{ "label": "Ann" }] } });
    let made = call(
        "post",
        "/prov_mgr/rollouts",
        "/prov_mgr/rollouts",
        Some(rollout),
    );
    assert_eq!(made.status, 201);
    let rollout_id = json_body("rollout", &made)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (reader, _) = api.token(&["provd.prov_mgr.rollouts.read"]);
    let get_op = op("/prov_mgr/rollouts/{id}", "get");
    let url = format!("/0.2/prov_mgr/rollouts/{rollout_id}");
    let shown = curl(api.addr, "get", &url, Some(&reader), None);
    assert_eq!(shown.status, 200);
    check_reply(&doc, &url, &url, &get_op, &shown);
    let entry = &json_body(&url, &shown)["rollout"]["entries"][0];
    assert!(
        entry["code"].as_str().is_some_and(|c| c.starts_with('…')),
        "{entry}"
    );
    let csv_url = format!("{url}.csv");
    let csv = curl(api.addr, "get", &csv_url, Some(&reader), None);
    assert_eq!(csv.status, 403);
    check_reply(&doc, &csv_url, &csv_url, &get_op, &csv);
    assert_eq!(
        json_body(&csv_url, &csv)["error"],
        "the token lacks the ACL provd.prov_mgr.codes.read"
    );
}

#[test]
fn documented_bounds_are_the_enforced_ones() {
    use provisiond::http::api::fields::*;
    use serde_json::json;
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Id"]["pattern"],
        format!("^[A-Za-z0-9_.-]{{1,{}}}$", model::MAX_ID_CHARS)
    );
    let token = &schemas["TokenEnvelopeIn"]["properties"]["token"]["properties"];
    assert_eq!(token["acl"]["maxItems"], json!(MAX_ACLS));
    assert_eq!(token["acl"]["items"]["maxLength"], json!(MAX_ACL_CHARS));
    assert_eq!(
        token["description"]["maxLength"],
        json!(MAX_DESCRIPTION_CHARS)
    );
    assert_eq!(
        schemas["TenantEnvelopeIn"]["properties"]["tenant"]["properties"]["name"]["maxLength"],
        json!(MAX_DESCRIPTION_CHARS)
    );
    assert_eq!(
        schemas["ConfigIn"]["properties"]["role"]["maxLength"],
        json!(MAX_ROLE_CHARS)
    );
    let device = schemas["DeviceIn"]["properties"].as_object().unwrap();
    let writable = [
        "mac",
        "ip",
        "vendor",
        "model",
        "version",
        "sn",
        "plugin",
        "config",
        "description",
        "remote_state_sip_username",
    ];
    for name in writable {
        assert_eq!(
            device[name]["maxLength"],
            json!(MAX_DEVICE_TEXT_CHARS),
            "DeviceIn.{name}"
        );
    }
    // The bounds without a schema keyword are stated in the prose, in the same numbers.
    let words = |v: &Value| {
        v.as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let info = words(&doc["info"]["description"]);
    let raw = words(&schemas["RawConfig"]["description"]);
    for text in [&info, &raw] {
        assert!(
            text.contains(&format!("{MAX_JSON_DEPTH} levels of nesting")),
            "{text}"
        );
        assert!(
            text.contains(&format!("{MAX_RAW_CONFIG_BYTES} bytes")),
            "{text}"
        );
    }
    assert!(info.contains(&format!(
        "{MAX_ACLS} entries of at most {MAX_ACL_CHARS} characters"
    )));
    assert!(info.contains(&format!(
        "Keys that provisiond does not interpret: {MAX_EXTRA_KEYS} per device or config, names of 1 to {MAX_EXTRA_KEY_CHARS} characters"
    )), "{info}");
    assert!(
        info.contains(&format!(
            "values of {MAX_JSON_DEPTH} levels of nesting; their size is bounded by the body limit"
        )),
        "{info}"
    );
    assert!(info.contains(&format!(
        "URL parameters of `/configure`: {MAX_URL_CHARS} characters"
    )));
    for schema in ["DeviceIn", "ConfigIn"] {
        let text = words(&schemas[schema]["description"]);
        assert!(
            text.contains(&format!(
                "at most {MAX_EXTRA_KEYS} of them, names of at most {MAX_EXTRA_KEY_CHARS} characters, values nested at most {MAX_JSON_DEPTH} levels"
            )),
            "{schema}: {text}"
        );
    }
}
