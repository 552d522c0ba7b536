//! The example plugin of docs/plugins.md ("Writing a plugin family") is the one in
//! tests/plugin-example, word for word, and it loads, identifies and renders as its vectors say.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use provisiond::model::{Config, Device, Mac};
use provisiond::plugins::{Origin, PluginSet, Renderer, RuleSource, ServerInfo};
use provisiond::store::Store;
use serde::Deserialize;
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The files the doc shows, in the order it shows them.
const SHOWN: [&str; 3] = [
    "tests/plugin-example/plugins/acme/plugin.toml",
    "tests/plugin-example/plugins/acme/templates/phone.cfg.tera",
    "tests/plugin-example/acme.toml",
];

/// The fenced block after each `<!-- example: PATH -->` line of the doc, by PATH.
fn doc_examples() -> BTreeMap<String, String> {
    let doc = fs::read_to_string(root().join("docs/plugins.md")).unwrap();
    let mut out = BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line
            .strip_prefix("<!-- example: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(fence.starts_with("```"), "{path}: a fenced block follows");
        let mut body = String::new();
        for line in lines.by_ref() {
            if line == "```" {
                break;
            }
            body.push_str(line);
            body.push('\n');
        }
        out.insert(path.to_owned(), body);
    }
    out
}

#[test]
fn the_doc_shows_the_example_files_verbatim() {
    let shown = doc_examples();
    assert_eq!(
        shown.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut sorted = SHOWN.to_vec();
            sorted.sort();
            sorted
        },
        "docs/plugins.md shows exactly the example's files"
    );
    for path in SHOWN {
        let file = fs::read_to_string(root().join(path)).unwrap();
        assert_eq!(
            shown[path], file,
            "{path} differs from its copy in docs/plugins.md"
        );
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    identify: Vec<Identify>,
    render: Vec<Render>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Identify {
    source: RuleSource,
    input: String,
    #[serde(default)]
    none: bool,
    vendor: Option<String>,
    model: Option<String>,
    version: Option<String>,
    mac: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Render {
    path: String,
    config: String,
    format: String,
    expect: Vec<Expect>,
    #[serde(default)]
    absent: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    key: String,
    value: String,
}

#[test]
fn the_example_plugin_loads_identifies_and_renders() {
    let set = PluginSet::load(&[(root().join("tests/plugin-example/plugins"), Origin::Admin)]);
    assert!(set.errors.is_empty(), "{:#?}", set.errors);
    let acme = set.get("acme").expect("the example loads");
    let vectors: Vectors =
        toml::from_str(&fs::read_to_string(root().join("tests/plugin-example/acme.toml")).unwrap())
            .unwrap();

    for v in &vectors.identify {
        let found = acme.extract(v.source, &v.input);
        if v.none {
            assert!(found.is_none(), "{:?} must not match", v.input);
            continue;
        }
        let found = found.unwrap_or_else(|| panic!("{:?} did not match", v.input));
        assert_eq!(found.vendor, v.vendor, "{}", v.input);
        assert_eq!(found.model, v.model, "{}", v.input);
        assert_eq!(found.version, v.version, "{}", v.input);
        let mac = v.mac.as_deref().map(|m| m.parse::<Mac>().unwrap());
        assert_eq!(found.mac, mac, "{}", v.input);
    }

    // The fixed test device and configs of tests/plugins.rs (docs/plugins.md), reduced to
    // what the example uses.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.ensure_defaults("master").unwrap();
    let mut base = store.config("base").unwrap().unwrap();
    base.raw_config = json!({"ntp_ip": "10.0.0.1", "timezone": "Europe/Paris",
                             "admin_password": "Adm1n-Secret-Pass"})
    .as_object()
    .cloned()
    .unwrap();
    store.update_config(&base).unwrap();
    store
        .create_config(&Config {
            id: "two_lines".into(),
            parent_ids: vec!["base".into()],
            raw_config: json!({"sip_lines": {
                "1": {"username": "1001", "password": "pw-1001", "display_name": "Alice Example", "registrar_ip": "10.0.0.10"},
                "2": {"username": "1002", "auth_username": "auth1002", "password": "pw-1002", "display_name": "Bob Example",
                      "registrar_ip": "10.0.0.10", "registrar_port": 5070, "transport": "tcp"}}})
            .as_object()
            .cloned()
            .unwrap(),
            tenant: "master".into(),
            deletable: true,
            transient: false,
            role: None,
            extra: Default::default(),
            generation: 0,
            revision: 0,
        })
        .unwrap();
    let renderer = Renderer::new(
        store.clone(),
        ServerInfo {
            base_url: Some("http://10.0.0.2:8667".parse().unwrap()),
            url_key_strategy: false,
        },
    );
    for (i, v) in vectors.render.iter().enumerate() {
        assert_eq!(v.format, "cfg");
        let resolved = acme.resolve(&v.path).expect("a route");
        let mut device = Device::new(format!("dev{i}"), "master");
        device.mac = resolved.mac;
        device.vendor = Some("Acme".into());
        device.model = Some("A10".into());
        device.plugin = Some("acme".into());
        device.config = Some(v.config.clone());
        device.admin_password = Some("Generated-Per-Device-1".into());
        if let Some(old) = store.device_by_mac(&resolved.mac.unwrap()).unwrap() {
            store.delete_device(&old.id).unwrap();
        }
        let device = store.create_device(&device).unwrap();
        let body = renderer.render(acme, &device, &resolved).unwrap().body;
        let text = String::from_utf8(body.to_vec()).unwrap();
        let keys: BTreeMap<&str, &str> = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{l:?}"));
                (k.trim(), v.trim())
            })
            .collect();
        for e in &v.expect {
            assert_eq!(keys.get(e.key.as_str()), Some(&e.value.as_str()), "{text}");
        }
        for key in &v.absent {
            assert!(!keys.contains_key(key.as_str()), "{key} in {text}");
        }
    }
}
