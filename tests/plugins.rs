//! Built-in plugins: every plugin loads, identifies its vendor's real strings, renders files
//! whose parameters sit at the vendor's names, escapes hostile values, and matches its
//! golden files. Vectors live in tests/vectors/<plugin>.toml (format in docs/plugins.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use provisiond::config::HttpAuthStrategy;
use provisiond::files::{FileService, Requester};
use provisiond::model::{Config, Device, Mac, RawConfig};
use provisiond::plugins::{
    EmbeddedFile, EmbeddedPlugin, Origin, Plugin, PluginSet, Renderer, RuleSource, ServerInfo,
    Target, BUILT_IN,
};
use provisiond::store::Store;
use serde::Deserialize;
use serde_json::json;

const DEFAULT_MAC: &str = "80:5e:c0:11:22:33";
const HOSTILE: &str =
    "{{ admin_password }}</x><evil a=\"1\">&amp; 'q' \"dq\"\nline.1.injected = 1\r\n[section]";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn builtin() -> PluginSet {
    PluginSet::load(&[(root().join("plugins"), Origin::Builtin)])
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    #[serde(default)]
    identify: Vec<IdentifyVector>,
    #[serde(default)]
    render: Vec<RenderVector>,
    /// Why the vendor has fewer than 3 DHCP vendor classes (with its source), if it has.
    #[serde(default)]
    fewer_dhcp_vendor_classes: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentifyVector {
    source: RuleSource,
    input: String,
    #[serde(default)]
    none: bool,
    vendor: Option<String>,
    model: Option<String>,
    version: Option<String>,
    mac: Option<String>,
    sn: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenderVector {
    path: String,
    config: String,
    format: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    expect: Vec<Expect>,
    #[serde(default)]
    absent: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    key: Option<String>,
    element: Option<String>,
    attribute: Option<String>,
    #[serde(default)]
    attrs: BTreeMap<String, String>,
    text: Option<String>,
    value: Option<String>,
}

fn vectors() -> Vec<(String, Vectors)> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(root().join("tests/vectors"))
        .expect("tests/vectors")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        let parsed: Vectors =
            toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        out.push((name, parsed));
    }
    out
}

#[test]
fn every_builtin_plugin_loads_and_has_vectors() {
    let set = builtin();
    assert!(
        set.errors.is_empty(),
        "built-in plugins failed to load: {:#?}",
        set.errors
    );
    for name in [
        "yealink",
        "polycom",
        "snom",
        "cisco-mpp",
        "grandstream",
        "fanvil",
    ] {
        assert!(set.get(name).is_some(), "built-in plugin {name} is missing");
    }
    let tested: BTreeSet<String> = vectors().into_iter().map(|(n, _)| n).collect();
    for plugin in set.iter() {
        assert!(
            tested.contains(&plugin.name),
            "plugin {} has no tests/vectors/{}.toml",
            plugin.name,
            plugin.name
        );
        assert!(
            plugin.location().join("README.md").is_file(),
            "plugin {} has no README.md",
            plugin.name
        );
    }
    for name in &tested {
        assert!(
            set.get(name).is_some(),
            "vectors for {name} but no such plugin"
        );
    }
}

fn check_identify(set: &PluginSet, plugin: &Plugin, v: &IdentifyVector) {
    let found = plugin.extract(v.source, &v.input);
    if v.none {
        assert!(
            found.is_none(),
            "{}: {:?} {:?} should not match, got {found:?}",
            plugin.name,
            v.source,
            v.input
        );
        return;
    }
    let found = found.unwrap_or_else(|| {
        panic!(
            "{}: {:?} {:?} did not match",
            plugin.name, v.source, v.input
        )
    });
    let ctx = format!("{}: {:?} {:?}", plugin.name, v.source, v.input);
    assert_eq!(found.vendor, v.vendor, "vendor of {ctx}");
    assert_eq!(found.model, v.model, "model of {ctx}");
    assert_eq!(found.version, v.version, "version of {ctx}");
    assert_eq!(
        found.mac,
        v.mac.as_deref().map(|m| m.parse::<Mac>().unwrap()),
        "mac of {ctx}"
    );
    assert_eq!(found.sn, v.sn, "sn of {ctx}");
    // No other plugin may claim the same string as strongly.
    for other in set.iter().filter(|p| p.name != plugin.name) {
        if let Some(theirs) = other.extract(v.source, &v.input) {
            assert!(
                theirs.score < found.score,
                "{ctx} is also matched by {} with score {}",
                other.name,
                theirs.score
            );
        }
    }
}

#[test]
fn identification_vectors() {
    let set = builtin();
    for (name, vectors) in vectors() {
        let plugin = set.get(&name).unwrap_or_else(|| panic!("no plugin {name}"));
        let (mut matched, mut refused) = (BTreeMap::<String, usize>::new(), 0);
        for v in &vectors.identify {
            check_identify(&set, plugin, v);
            if v.none {
                refused += 1;
            } else {
                *matched.entry(format!("{:?}", v.source)).or_default() += 1;
            }
        }
        assert!(
            matched.get("UserAgent").copied().unwrap_or(0) >= 3,
            "{name}: at least 3 User-Agent vectors"
        );
        assert!(
            matched.get("DhcpVendorClass").copied().unwrap_or(0) >= 3
                || vectors.fewer_dhcp_vendor_classes.is_some(),
            "{name}: at least 3 DHCP vendor-class vectors, or fewer_dhcp_vendor_classes"
        );
        assert!(refused >= 3, "{name}: at least 3 none = true vectors");
    }
}

/// A store with the harness's fixed configs and one device of `plugin`.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    renderer: Renderer,
}

fn base_raw() -> RawConfig {
    json!({
        "ntp_ip": "10.0.0.1",
        "timezone": "Europe/Paris",
        "locale": "fr_FR",
        "admin_password": "Adm1n-Secret-Pass",
        "sip_dtmf_mode": "RTP-out-of-band",
        "vlan_id": 20
    })
    .as_object()
    .cloned()
    .unwrap()
}

fn two_lines_raw(display_name: &str) -> RawConfig {
    json!({
        "sip_lines": {
            "1": {"username": "1001", "password": "pw-1001", "display_name": display_name, "registrar_ip": "10.0.0.10"},
            "2": {"username": "1002", "auth_username": "auth1002", "password": "pw-1002", "display_name": "Bob Example",
                  "registrar_ip": "10.0.0.10", "registrar_port": 5070, "transport": "tcp"}
        },
        "funckeys": {"1": {"type": "speeddial", "value": "1003", "label": "Carol"}}
    })
    .as_object()
    .cloned()
    .unwrap()
}

impl Fixture {
    fn new(display_name: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.ensure_defaults("master").unwrap();
        let mut base = store.config("base").unwrap().unwrap();
        base.raw_config = base_raw();
        store.update_config(&base).unwrap();
        store
            .create_config(&Config {
                id: "two_lines".into(),
                parent_ids: vec!["base".into()],
                raw_config: two_lines_raw(display_name),
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
        Fixture {
            _dir: dir,
            store,
            renderer,
        }
    }

    fn device(&self, plugin: &Plugin, v: &RenderVector) -> Device {
        let mac = mac_in(&v.path).unwrap_or_else(|| DEFAULT_MAC.parse().unwrap());
        let mut device = Device::new(format!("dev{}", mac.to_bare()), "master");
        device.mac = Some(mac);
        device.ip = Some("10.0.0.50".parse().unwrap());
        device.vendor = Some(plugin.vendor.clone());
        device.model = v.model.clone().or_else(|| plugin.models.first().cloned());
        device.version = Some("1.0.0".into());
        device.plugin = Some(plugin.name.clone());
        device.config = Some(v.config.clone());
        device.admin_password = Some("Generated-Per-Device-1".into());
        match self.store.device_by_mac(&mac).unwrap() {
            // Vectors sharing a MAC each get the config and model they name.
            Some(existing)
                if existing.config == device.config && existing.model == device.model =>
            {
                existing
            }
            Some(existing) => {
                let mut changed = existing.clone();
                changed.config = device.config.clone();
                changed.model = device.model.clone();
                self.store.update_device(&changed).unwrap()
            }
            None => self.store.create_device(&device).unwrap(),
        }
    }

    fn render(&self, plugin: &Plugin, v: &RenderVector) -> String {
        let device = self.device(plugin, v);
        let resolved = plugin
            .resolve(&v.path)
            .unwrap_or_else(|| panic!("{}: no route for {}", plugin.name, v.path));
        assert!(
            matches!(resolved.target, Target::Template(_)),
            "{}: {} is not a template route",
            plugin.name,
            v.path
        );
        if let Some(mac) = resolved.mac {
            assert_eq!(
                Some(mac),
                device.mac,
                "{}: the route's MAC is the device's",
                plugin.name
            );
        }
        let rendered = self
            .renderer
            .render(plugin, &device, &resolved)
            .unwrap_or_else(|e| panic!("{} {} ({}): {e}", plugin.name, v.path, v.config));
        String::from_utf8(rendered.body.to_vec()).expect("UTF-8 output")
    }
}

/// The first run of 12 hex digits in a path, as a MAC.
fn mac_in(path: &str) -> Option<Mac> {
    let bytes = path.as_bytes();
    (0..bytes.len().saturating_sub(11)).find_map(|i| {
        let run = &path[i..i + 12];
        let edge_ok = |j: usize| j >= bytes.len() || !bytes[j].is_ascii_hexdigit();
        (run.bytes().all(|b| b.is_ascii_hexdigit())
            && (i == 0 || !bytes[i - 1].is_ascii_hexdigit())
            && edge_ok(i + 12))
        .then(|| run.to_ascii_lowercase().parse().ok())
        .flatten()
    })
}

/// `key = value` lines; every other non-blank line must be a comment or a section header.
/// A key may repeat (Yealink sets `static.security.user_password` once per account).
fn parse_cfg(text: &str, what: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty()
            || t.starts_with('#')
            || t.starts_with(';')
            || (t.starts_with('[') && t.ends_with(']'))
            || t.starts_with("<<")
        {
            continue;
        }
        let (key, value) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("{what}: not a key = value line: {line:?}"));
        let key = key.trim().to_owned();
        assert!(
            !key.is_empty() && !key.contains(char::is_whitespace),
            "{what}: malformed key in {line:?}"
        );
        out.entry(key).or_default().push(value.trim().to_owned());
    }
    out
}

fn check_cfg(text: &str, v: &RenderVector, what: &str) {
    let keys = if v.format == "set" {
        parse_set(text, what)
    } else {
        parse_cfg(text, what)
    };
    for e in &v.expect {
        let key = e
            .key
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: cfg expectations use key/value"));
        let value = e
            .value
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: cfg expectations use key/value"));
        let found = keys.get(key).cloned().unwrap_or_default();
        assert!(
            found.contains(value),
            "{what}: {key} = {value:?}, found {found:?}"
        );
    }
    for key in &v.absent {
        assert!(!keys.contains_key(key), "{what}: {key} must be absent");
    }
}

/// Avaya settings scripts: `SET NAME value` lines (a value in double quotes is unquoted), `GET
/// file`, `IF … GOTO …` and `#` comments/labels; anything else is an error.
fn parse_set(text: &str, what: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with("GET ") || t.starts_with("IF ") {
            continue;
        }
        let rest = t
            .strip_prefix("SET ")
            .unwrap_or_else(|| panic!("{what}: not a SET line: {line:?}"));
        let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "{what}: malformed name in {line:?}"
        );
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(quoted) => {
                let inner = quoted
                    .strip_suffix('"')
                    .unwrap_or_else(|| panic!("{what}: unclosed quote in {line:?}"));
                assert!(!inner.contains('"'), "{what}: a quote inside {line:?}");
                inner
            }
            None => value,
        };
        out.entry(name.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    out
}

fn check_xml(text: &str, v: &RenderVector, what: &str) {
    let doc = roxmltree::Document::parse(text)
        .unwrap_or_else(|e| panic!("{what}: invalid XML: {e}\n{text}"));
    for e in &v.expect {
        if let Some(attribute) = &e.attribute {
            let found: Vec<&str> = doc
                .descendants()
                .filter_map(|n| n.attribute(attribute.as_str()))
                .collect();
            assert!(
                found.iter().any(|f| Some(*f) == e.value.as_deref()),
                "{what}: attribute {attribute} = {:?}, found {found:?}",
                e.value
            );
        } else if let Some(element) = &e.element {
            let found: Vec<Option<&str>> = doc
                .descendants()
                .filter(|n| n.has_tag_name(element.as_str()))
                .filter(|n| {
                    e.attrs
                        .iter()
                        .all(|(k, val)| n.attribute(k.as_str()) == Some(val.as_str()))
                })
                .map(|n| n.text())
                .collect();
            assert!(
                !found.is_empty(),
                "{what}: no element {element} with {:?}",
                e.attrs
            );
            if let Some(text) = &e.text {
                assert!(
                    found.iter().any(|f| f.unwrap_or("") == text),
                    "{what}: element {element} {:?} text {text:?}, found {found:?}",
                    e.attrs
                );
            }
        } else {
            panic!("{what}: xml expectations use element or attribute");
        }
    }
    for name in &v.absent {
        assert!(
            !doc.descendants()
                .any(|n| n.has_tag_name(name.as_str()) || n.attribute(name.as_str()).is_some()),
            "{what}: {name} must be absent"
        );
    }
}

fn golden_path(plugin: &str, v: &RenderVector) -> PathBuf {
    root()
        .join("tests/golden")
        .join(plugin)
        .join(&v.config)
        .join(&v.path)
}

/// `UPDATE_GOLDEN=1` rewrites every golden file; `UPDATE_GOLDEN=yealink,snom` only those plugins'.
fn updating(plugin: &str) -> bool {
    match std::env::var("UPDATE_GOLDEN") {
        Ok(v) if v == "1" => true,
        Ok(v) => v.split(',').any(|p| p.trim() == plugin),
        Err(_) => false,
    }
}

fn check_golden(plugin: &str, path: &Path, text: &str) {
    if updating(plugin) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
        return;
    }
    let golden = fs::read_to_string(path).unwrap_or_else(|_| {
        panic!(
            "missing golden file {}: run UPDATE_GOLDEN=1 cargo test --test plugins",
            path.display()
        )
    });
    assert_eq!(
        golden,
        text,
        "{} differs from the rendering",
        path.display()
    );
}

#[test]
fn render_vectors_and_golden_files() {
    let set = builtin();
    for (name, vectors) in vectors() {
        let plugin = set.get(&name).unwrap_or_else(|| panic!("no plugin {name}"));
        let configs: BTreeSet<&str> = vectors.render.iter().map(|v| v.config.as_str()).collect();
        assert!(
            configs.contains("two_lines") && configs.contains("autoprov"),
            "{name}: render two_lines and autoprov"
        );
        let fixture = Fixture::new("Alice Example");
        for v in &vectors.render {
            let what = format!("{name} {} ({})", v.path, v.config);
            let text = without_form_sig(&fixture.render(plugin, v));
            match v.format.as_str() {
                "cfg" | "set" => check_cfg(&text, v, &what),
                "xml" => check_xml(&text, v, &what),
                other => panic!("{what}: unknown format {other}"),
            }
            check_golden(&name, &golden_path(&name, v), &text);
        }
    }
}

/// `text` with the signature of code form URLs replaced by `SIG`: it comes from the store's
/// random secret, new in every fixture (tests/code_form.rs checks real signatures).
fn without_form_sig(text: &str) -> String {
    let re = regex::Regex::new("(code-form/[0-9a-f]{12}/)[0-9a-f]{32}").unwrap();
    re.replace_all(text, "${1}SIG").into_owned()
}

/// A display name full of template syntax, markup and line breaks stays one value.
#[test]
fn hostile_values_cannot_break_the_file_structure() {
    let set = builtin();
    for (name, vectors) in vectors() {
        let plugin = set.get(&name).unwrap();
        for v in vectors.render.iter().filter(|v| v.config == "two_lines") {
            let what = format!("{name} {} (hostile display name)", v.path);
            let benign = Fixture::new("Alice Example").render(plugin, v);
            let hostile = Fixture::new(HOSTILE).render(plugin, v);
            if benign.contains("Alice Example") {
                assert!(
                    hostile.contains("{{ admin_password }}"),
                    "{what}: template syntax in a value was evaluated"
                );
            }
            let parse = if v.format == "set" {
                parse_set
            } else {
                parse_cfg
            };
            match v.format.as_str() {
                "cfg" | "set" => {
                    let a: BTreeSet<String> = parse(&benign, &what).into_keys().collect();
                    let b: BTreeSet<String> = parse(&hostile, &what).into_keys().collect();
                    assert_eq!(a, b, "{what}: the hostile value changed the set of keys");
                    assert_eq!(
                        benign.lines().count(),
                        hostile.lines().count(),
                        "{what}: line count changed"
                    );
                }
                _ => {
                    let bd = roxmltree::Document::parse(&benign).unwrap();
                    let hd = roxmltree::Document::parse(&hostile)
                        .unwrap_or_else(|e| panic!("{what}: invalid XML: {e}\n{hostile}"));
                    let shape = |d: &roxmltree::Document| -> Vec<(String, usize)> {
                        d.descendants()
                            .filter(|n| n.is_element())
                            .map(|n| (n.tag_name().name().to_owned(), n.attributes().len()))
                            .collect()
                    };
                    assert_eq!(
                        shape(&bd),
                        shape(&hd),
                        "{what}: the hostile value changed the element structure"
                    );
                    let flattened = HOSTILE.replace(['\n', '\r'], " ");
                    let carried = hd.descendants().any(|n| {
                        n.text() == Some(flattened.as_str())
                            || n.attributes().any(|a| a.value() == flattened)
                    });
                    let used = benign.contains("Alice Example");
                    assert!(
                        !used || carried,
                        "{what}: the display name does not come back intact from the parser"
                    );
                }
            }
        }
    }
}

#[test]
fn a_broken_plugin_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    fs::create_dir_all(good.join("templates")).unwrap();
    fs::write(
        good.join("plugin.toml"),
        "name = \"good\"\nversion = \"1\"\nvendor = \"Good\"\n[[identify]]\nsource = \"user_agent\"\npattern = '^Good (?P<model>\\w+)'\n[[files]]\npath = \"{mac}.cfg\"\ntemplate = \"mac.cfg.tera\"\n",
    )
    .unwrap();
    fs::write(
        good.join("templates/mac.cfg.tera"),
        "mac = {{ device.mac_bare }}\n",
    )
    .unwrap();
    // (directory, plugin.toml, optional template (file, body), fragment the error must name)
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, &'a str);
    let broken: &[Case] = &[
        ("syntax", "name = \"syntax\"\nversion = ", None, "plugin.toml"),
        ("unknown-key", "name = \"unknown-key\"\nversion = \"1\"\nvendor = \"X\"\ncolour = \"red\"\n", None, "colour"),
        ("bad-regex", "name = \"bad-regex\"\nversion = \"1\"\nvendor = \"X\"\n[[identify]]\nsource = \"user_agent\"\npattern = \"(unclosed\"\n", None, "identify[0].pattern"),
        ("bad-group", "name = \"bad-group\"\nversion = \"1\"\nvendor = \"X\"\n[[identify]]\nsource = \"user_agent\"\npattern = \"(?P<serial>x)\"\n", None, "unknown group"),
        ("no-template", "name = \"no-template\"\nversion = \"1\"\nvendor = \"X\"\n[[files]]\npath = \"a.cfg\"\ntemplate = \"missing.tera\"\n", None, "files[0].template"),
        ("bad-template", "name = \"bad-template\"\nversion = \"1\"\nvendor = \"X\"\n[[files]]\npath = \"a.cfg\"\ntemplate = \"a.cfg.tera\"\n", Some(("a.cfg.tera", "{% if %}")), "a.cfg.tera"),
        ("other-name", "name = \"elsewhere\"\nversion = \"1\"\nvendor = \"X\"\n", None, "differs from the directory name"),
        ("bad-route", "name = \"bad-route\"\nversion = \"1\"\nvendor = \"X\"\n[[files]]\npath = \"{serial}.cfg\"\nstatic = true\n", None, "files[0].path"),
        ("bad-option", "name = \"bad-option\"\nversion = \"1\"\nvendor = \"X\"\n[dhcp]\n[[dhcp.options]]\ncode = 66\nvalue = \"{nope}\"\n", None, "dhcp.options[0].value"),
        ("no-form-template", "name = \"no-form-template\"\nversion = \"1\"\nvendor = \"X\"\n[code_form]\ninput = \"in.xml.tera\"\nresult = \"out.xml.tera\"\n", Some(("in.xml.tera", "<a/>")), "code_form.result"),
        ("bad-form-param", "name = \"bad-form-param\"\nversion = \"1\"\nvendor = \"X\"\n[code_form]\ninput = \"in.xml.tera\"\nresult = \"in.xml.tera\"\nparam = \"a&b\"\n", Some(("in.xml.tera", "<a/>")), "code_form.param"),
    ];
    for (name, manifest, template, _) in broken {
        let d = dir.path().join(name);
        fs::create_dir_all(d.join("templates")).unwrap();
        fs::write(d.join("plugin.toml"), manifest).unwrap();
        if let Some((file, body)) = template {
            fs::write(d.join("templates").join(file), body).unwrap();
        }
    }
    fs::create_dir_all(dir.path().join("no-manifest")).unwrap();

    let set = PluginSet::load(&[(dir.path().to_path_buf(), Origin::Admin)]);
    assert_eq!(
        set.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        vec!["good"]
    );
    assert_eq!(set.errors.len(), broken.len() + 1, "{:#?}", set.errors);
    for (name, _, _, fragment) in broken {
        let error = set
            .errors
            .iter()
            .find(|e| e.dir.ends_with(name))
            .unwrap_or_else(|| panic!("no error for {name}: {:#?}", set.errors));
        let text = error.to_string();
        assert!(text.contains(fragment), "{name}: {text}");
        assert!(
            text.starts_with(&dir.path().join(name).display().to_string()),
            "{name}: names the file: {text}"
        );
    }
    let good = set.get("good").unwrap();
    assert_eq!(
        good.extract(RuleSource::UserAgent, "Good X1")
            .unwrap()
            .model
            .as_deref(),
        Some("X1")
    );
}

#[test]
fn an_admin_plugin_replaces_the_builtin_of_the_same_name() {
    let builtin_dir = tempfile::tempdir().unwrap();
    let admin_dir = tempfile::tempdir().unwrap();
    for (root, version) in [(builtin_dir.path(), "1.0"), (admin_dir.path(), "9.9")] {
        let d = root.join("acme");
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join("plugin.toml"),
            format!("name = \"acme\"\nversion = \"{version}\"\nvendor = \"Acme\"\n"),
        )
        .unwrap();
    }
    let set = PluginSet::load(&[
        (builtin_dir.path().to_path_buf(), Origin::Builtin),
        (admin_dir.path().to_path_buf(), Origin::Admin),
    ]);
    let acme = set.get("acme").unwrap();
    assert_eq!((acme.version.as_str(), acme.origin), ("9.9", Origin::Admin));
    assert_eq!(acme.replaces, Some(Origin::Builtin));
}

/// Every file of the repository's plugins that the loader reads, as `plugin/path` → bytes.
fn repository_plugin_files() -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(root().join("plugins")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_str().unwrap().to_owned();
        files.insert(
            format!("{name}/plugin.toml"),
            fs::read(dir.join("plugin.toml")).unwrap(),
        );
        for template in fs::read_dir(dir.join("templates")).unwrap() {
            let template = template.unwrap().path();
            let file = template.file_name().unwrap().to_str().unwrap().to_owned();
            files.insert(
                format!("{name}/templates/{file}"),
                fs::read(&template).unwrap(),
            );
        }
        add_tree(&dir.join("static"), &format!("{name}/static"), &mut files);
    }
    files
}

/// The files under `dir` (none when it does not exist), recursively, as `prefix/path`.
fn add_tree(dir: &Path, prefix: &str, files: &mut BTreeMap<String, Vec<u8>>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let key = format!("{prefix}/{}", path.file_name().unwrap().to_str().unwrap());
        if path.is_dir() {
            add_tree(&path, &key, files);
        } else {
            files.insert(key, fs::read(&path).unwrap());
        }
    }
}

#[test]
fn the_binary_embeds_every_builtin_plugin_as_it_is_in_the_repository() {
    let embedded: BTreeMap<String, Vec<u8>> = BUILT_IN
        .iter()
        .flat_map(|p| {
            p.files
                .iter()
                .map(move |f| (format!("{}/{}", p.name, f.path), f.bytes.to_vec()))
        })
        .collect();
    let on_disk = repository_plugin_files();
    assert_eq!(
        embedded.keys().collect::<Vec<_>>(),
        on_disk.keys().collect::<Vec<_>>()
    );
    assert!(embedded == on_disk, "embedded bytes differ from plugins/");

    // Alone, they load without error, as embedded plugins with no directory.
    let set = PluginSet::with_embedded(&[]);
    assert!(set.errors.is_empty(), "{:#?}", set.errors);
    let names: Vec<&str> = set.iter().map(|p| p.name.as_str()).collect();
    let repository = builtin();
    let expected: Vec<&str> = repository.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, expected);
    for plugin in set.iter() {
        assert_eq!(
            (plugin.origin, plugin.dir.as_deref()),
            (Origin::Embedded, None)
        );
        assert_eq!(plugin.location(), Path::new("(embedded)"));
    }
}

/// A made-up embedded plugin: one template route, one static route with one file.
static ACME_FILES: [EmbeddedFile; 3] = [
    EmbeddedFile {
        path: "plugin.toml",
        bytes: b"name = \"acme\"\nversion = \"1.0\"\nvendor = \"Acme\"\n\
                 [[identify]]\nsource = \"user_agent\"\n\
                 pattern = '^Acme (?P<model>A\\d) (?P<mac>[0-9a-f:]{17})$'\n\
                 [[files]]\npath = \"{mac}.cfg\"\ntemplate = \"mac.cfg.tera\"\n\
                 [[files]]\npath = \"fw/*.bin\"\nstatic = true\n",
        modified: 1_700_000_000,
    },
    EmbeddedFile {
        path: "templates/mac.cfg.tera",
        bytes: b"from = embedded\n",
        modified: 1_700_000_000,
    },
    EmbeddedFile {
        path: "static/fw/a1.bin",
        bytes: b"\x00firmware\xff",
        modified: 1_700_000_000,
    },
];
static ACME: [EmbeddedPlugin; 2] = [
    EmbeddedPlugin {
        name: "acme",
        files: &ACME_FILES,
    },
    // Cannot happen with build.rs (it embeds what the tests above load), but would be named.
    EmbeddedPlugin {
        name: "broken",
        files: &[EmbeddedFile {
            path: "plugin.toml",
            bytes: b"name = \"broken\"\n",
            modified: 0,
        }],
    },
];

#[test]
fn embedded_plugins_serve_their_static_files_and_directories_replace_them() {
    let set = PluginSet::load_over(&ACME, &[]);
    let acme = set.get("acme").unwrap();
    assert_eq!((acme.origin, acme.replaces), (Origin::Embedded, None));
    let resolved = acme.resolve("fw/a1.bin").unwrap();
    let Target::Static(path) = &resolved.target else {
        panic!("{resolved:?}");
    };
    let (body, modified, etag) = acme.embedded_static(path).unwrap();
    assert_eq!(&body[..], b"\x00firmware\xff");
    assert_eq!(
        modified,
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)
    );
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let missing = acme.resolve("fw/a2.bin").unwrap();
    let Target::Static(path) = &missing.target else {
        panic!("{missing:?}");
    };
    assert!(acme.embedded_static(path).is_none());
    let error = set
        .errors
        .iter()
        .find(|e| e.dir.ends_with("broken"))
        .unwrap();
    assert!(
        error
            .to_string()
            .starts_with("(embedded)/broken/plugin.toml: "),
        "{error}"
    );

    // Served to a phone as any static file is.
    let store_dir = tempfile::tempdir().unwrap();
    let store = Store::open(store_dir.path()).unwrap();
    store.ensure_defaults("master").unwrap();
    let files = FileService::new(
        store.clone(),
        "master",
        HttpAuthStrategy::Disabled,
        std::sync::Arc::new(PluginSet::load_over(&ACME, &[])),
        Renderer::new(store, ServerInfo::default()),
    );
    let phone = Requester::Http {
        src: "10.0.0.7".parse().unwrap(),
        user_agent: Some("Acme A1 80:5e:c0:11:22:33".into()),
    };
    let served = files.answer(&phone, "fw/a1.bin").unwrap();
    assert_eq!(
        (&served.body[..], served.plugin.as_str()),
        (&b"\x00firmware\xff"[..], "acme")
    );
    let served = files.answer(&phone, "805ec0112233.cfg").unwrap();
    assert_eq!(&served.body[..], b"from = embedded\n");
    assert!(files.answer(&phone, "fw/a2.bin").is_err());

    // A directory of the same name wins, and its static files come from its directory; a
    // broken directory of the same name leaves the embedded plugin in service.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good/acme");
    fs::create_dir_all(good.join("templates")).unwrap();
    fs::write(
        good.join("plugin.toml"),
        "name = \"acme\"\nversion = \"2.0\"\nvendor = \"Acme\"\n[[files]]\npath = \"fw/*.bin\"\nstatic = true\n",
    )
    .unwrap();
    let bad = dir.path().join("bad/acme");
    fs::create_dir_all(&bad).unwrap();
    fs::write(bad.join("plugin.toml"), "name = \"acme\"\n").unwrap();
    let set = PluginSet::load_over(&ACME, &[(dir.path().join("good"), Origin::Builtin)]);
    let acme = set.get("acme").unwrap();
    assert_eq!(
        (acme.version.as_str(), acme.origin, acme.replaces),
        ("2.0", Origin::Builtin, Some(Origin::Embedded))
    );
    let resolved = acme.resolve("fw/a1.bin").unwrap();
    assert_eq!(
        resolved.target,
        Target::Static(good.join("static/fw/a1.bin"))
    );
    assert!(acme.embedded_static(Path::new("fw/a1.bin")).is_none());
    let set = PluginSet::load_over(&ACME, &[(dir.path().join("bad"), Origin::Admin)]);
    let acme = set.get("acme").unwrap();
    assert_eq!(
        (acme.version.as_str(), acme.origin),
        ("1.0", Origin::Embedded)
    );
    assert!(set.errors.iter().any(|e| e.dir == bad), "{:#?}", set.errors);
}
