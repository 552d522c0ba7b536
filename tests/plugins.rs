//! Built-in plugins: every plugin loads, identifies its vendor's real strings, renders files
//! whose parameters sit at the vendor's names, escapes hostile values, and matches its
//! golden files. Vectors live in tests/vectors/<plugin>.toml (format in docs/plugins.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use provisiond::config::HttpAuthStrategy;
use provisiond::files::{FileService, Requester};
use provisiond::ident::{extract, DhcpOp, RequestContext};
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
    /// Sources for which the vendor's phones send nothing to identify them, with the reason.
    #[serde(default)]
    missing: Missing,
}

/// `[missing]` of a vectors file: why a source has fewer vectors than the harness asks for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Missing {
    user_agent: Option<String>,
    dhcp_vendor_class: Option<String>,
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
    /// script: the command words of a line (before its first `/switch`).
    command: Option<String>,
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
        "innovaphone",
        "mitel-aastra",
        "htek",
        "audiocodes",
        "panasonic",
        "gigaset",
        "alcatel",
        "digium",
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
        let reason = |r: &Option<String>| r.as_deref().is_some_and(|r| !r.trim().is_empty());
        assert!(
            matched.get("UserAgent").copied().unwrap_or(0) >= 3
                || reason(&vectors.missing.user_agent),
            "{name}: at least 3 User-Agent vectors (or [missing] user_agent = \"why\")"
        );
        assert!(
            matched.get("DhcpVendorClass").copied().unwrap_or(0) >= 3
                || reason(&vectors.missing.dhcp_vendor_class),
            "{name}: at least 3 DHCP vendor-class vectors (or [missing] dhcp_vendor_class = \"why\")"
        );
        assert!(refused >= 3, "{name}: at least 3 none = true vectors");
    }
}

/// The request a vector's input arrives in: a User-Agent over HTTP, an option 60 or 77 in a
/// DHCP request (from a client address of no vendor's OUI), a file name over TFTP.
fn request_of(v: &IdentifyVector) -> (RequestContext, Option<Mac>) {
    let src: std::net::IpAddr = "10.0.0.50".parse().unwrap();
    let chaddr: Mac = "02:00:00:00:00:01".parse().unwrap();
    let dhcp = |code: u8| RequestContext::Dhcp {
        op: DhcpOp::Commit,
        ip: "10.0.0.50".parse().unwrap(),
        mac: chaddr,
        options: vec![(code, v.input.as_bytes().to_vec())],
    };
    match v.source {
        RuleSource::UserAgent => (
            RequestContext::Http {
                src,
                path: String::new(),
                user_agent: Some(v.input.clone()),
            },
            None,
        ),
        RuleSource::DhcpVendorClass => (dhcp(60), Some(chaddr)),
        RuleSource::DhcpUserClass => (dhcp(77), Some(chaddr)),
        RuleSource::Filename => (
            RequestContext::Tftp {
                src,
                filename: v.input.clone(),
            },
            None,
        ),
    }
}

/// The whole corpus (every tests/vectors/*.toml) through the daemon's own identification
/// with every built-in plugin loaded together: each positive vector must be won by its file's
/// plugin with exactly the expected fields, and no negative may be won by its file's plugin.
/// Prints the per-field accuracy, per plugin and overall; fails below 100 %.
#[test]
fn corpus_identification_accuracy() {
    const FIELDS: [&str; 5] = ["vendor", "model", "version", "mac", "plugin"];
    let set = builtin();
    // (right, total) per field, and for the negatives, per plugin.
    type Counts = ([(usize, usize); 5], (usize, usize));
    let mut rows: Vec<(String, Counts)> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for (name, vectors) in vectors() {
        let mut fields = [(0usize, 0usize); 5];
        let mut negatives = (0usize, 0usize);
        for v in &vectors.identify {
            let (request, chaddr) = request_of(v);
            let (info, best) = extract(&request, &set);
            let winner = best.map(|p| p.name.clone());
            if v.none {
                negatives.1 += 1;
                if winner.as_deref() == Some(name.as_str()) {
                    failures.push(format!(
                        "{name}: negative {:?} {:?} is claimed",
                        v.source, v.input
                    ));
                } else {
                    negatives.0 += 1;
                }
                continue;
            }
            // A DHCP request always carries the client's MAC.
            let mac = v
                .mac
                .as_deref()
                .map(|m| m.parse::<Mac>().unwrap())
                .or(chaddr);
            let checks = [
                (format!("{:?}", info.vendor), format!("{:?}", v.vendor)),
                (format!("{:?}", info.model), format!("{:?}", v.model)),
                (format!("{:?}", info.version), format!("{:?}", v.version)),
                (format!("{:?}", info.mac), format!("{mac:?}")),
                (format!("{winner:?}"), format!("{:?}", Some(&name))),
            ];
            for (i, (got, want)) in checks.iter().enumerate() {
                fields[i].1 += 1;
                if got == want {
                    fields[i].0 += 1;
                } else {
                    failures.push(format!(
                        "{name}: {:?} {:?}: {} is {got}, expected {want}",
                        v.source, v.input, FIELDS[i]
                    ));
                }
            }
        }
        rows.push((name, (fields, negatives)));
    }
    let percent = |(right, total): (usize, usize)| {
        if total == 0 {
            "-".to_owned()
        } else {
            format!("{:.1}%", 100.0 * right as f64 / total as f64)
        }
    };
    let cell = |(right, total): (usize, usize)| format!("{right}/{total}");
    let mut table = format!("{:<14}", "corpus");
    for f in FIELDS.iter().chain(&["negatives"]) {
        table.push_str(&format!(" {f:>10}"));
    }
    table.push('\n');
    let (mut all, mut all_negatives) = ([(0usize, 0usize); 5], (0usize, 0usize));
    for (name, (fields, negatives)) in &rows {
        table.push_str(&format!("{name:<14}"));
        for (i, f) in fields.iter().enumerate() {
            table.push_str(&format!(" {:>10}", cell(*f)));
            all[i].0 += f.0;
            all[i].1 += f.1;
        }
        table.push_str(&format!(" {:>10}\n", cell(*negatives)));
        all_negatives.0 += negatives.0;
        all_negatives.1 += negatives.1;
    }
    table.push_str(&format!("{:<14}", "accuracy"));
    for f in all.iter().chain([&all_negatives]) {
        table.push_str(&format!(" {:>10}", percent(*f)));
    }
    eprintln!("identification over the corpus (every plugin loaded):\n{table}");
    assert!(
        failures.is_empty(),
        "identification below 100 % on the corpus:\n{}",
        failures.join("\n")
    );
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

/// `name: value` lines (Mitel/Aastra): the name is everything before the first `:` and may
/// hold spaces; `#` starts a comment line.
fn parse_colon(text: &str, what: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (key, value) = t
            .split_once(':')
            .unwrap_or_else(|| panic!("{what}: not a name: value line: {line:?}"));
        assert!(
            !key.is_empty()
                && key == key.trim()
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == ' '),
            "{what}: malformed name in {line:?}"
        );
        out.entry(key.to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    out
}

/// Panasonic's standard format: the fixed first line, then `NAME="value"` lines (no spaces
/// around `=`, the value always in double quotes and holding none) and `#` comment lines.
fn parse_quoted(text: &str, what: &str) -> BTreeMap<String, Vec<String>> {
    const HEADER: &str = "# Panasonic SIP Phone Standard Format File #";
    assert!(
        text.starts_with(HEADER),
        "{what}: the first line must start with {HEADER:?}"
    );
    assert!(
        text.ends_with('\n'),
        "{what}: the file must end with a line break"
    );
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines() {
        let t = line.strip_suffix('\r').unwrap_or(line);
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (key, value) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("{what}: not a NAME=\"value\" line: {line:?}"));
        assert!(
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
            "{what}: malformed name in {line:?}"
        );
        let inner = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !v.contains('"'))
            .unwrap_or_else(|| panic!("{what}: the value is not one quoted string: {line:?}"));
        out.entry(key.to_owned())
            .or_default()
            .push(inner.to_owned());
    }
    out
}

/// One command of an innovaphone update script: its command words, then `/switch value`
/// pairs (a switch followed by another switch or by the end of the line has an empty value).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ScriptLine {
    command: String,
    switches: BTreeMap<String, String>,
}

/// An innovaphone update script: one command per line, `#` comment lines. Every command
/// starts with a verb the device knows (`config`, `vars`, `mod`); after the first switch,
/// every token is a switch or a switch's value, and no switch repeats in a line, so that a
/// value with a space in it (a second token) or a `/` (a new switch) is caught.
fn parse_script(text: &str, what: &str) -> Vec<ScriptLine> {
    // The device reads CRLF lines, as innovaphone's own update server writes them.
    assert!(
        text.split_inclusive('\n').all(|l| l.ends_with("\r\n")),
        "{what}: every line of an update script ends with CRLF"
    );
    let mut out = Vec::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let tokens: Vec<&str> = t.split_whitespace().collect();
        assert!(
            matches!(tokens[0], "config" | "vars" | "mod"),
            "{what}: unknown command verb in {line:?}"
        );
        let words = tokens.iter().take_while(|w| !w.starts_with('/')).count();
        let mut switches = BTreeMap::new();
        let mut rest = tokens[words..].iter().peekable();
        while let Some(switch) = rest.next() {
            let name = switch
                .strip_prefix('/')
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| panic!("{what}: stray token {switch:?} in {line:?}"));
            let value = match rest.peek() {
                Some(v) if !v.starts_with('/') => rest.next().map(|v| v.to_string()),
                _ => None,
            };
            assert!(
                switches
                    .insert(name.to_owned(), value.unwrap_or_default())
                    .is_none(),
                "{what}: switch /{name} twice in {line:?}"
            );
        }
        out.push(ScriptLine {
            command: tokens[..words].join(" "),
            switches,
        });
    }
    out
}

fn check_script(text: &str, v: &RenderVector, what: &str) {
    let lines = parse_script(text, what);
    for e in &v.expect {
        let command = e
            .command
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: script expectations use command (and attrs)"));
        let found: Vec<&ScriptLine> = lines.iter().filter(|l| &l.command == command).collect();
        assert!(
            found.iter().any(|l| e
                .attrs
                .iter()
                .all(|(k, val)| l.switches.get(k) == Some(val))),
            "{what}: no command {command:?} with {:?}, found {found:?}",
            e.attrs
        );
    }
    for command in &v.absent {
        assert!(
            !lines
                .iter()
                .any(|l| l.command.starts_with(command.as_str())),
            "{what}: no command may start with {command:?}"
        );
    }
}

fn check_cfg(text: &str, v: &RenderVector, what: &str) {
    check_keys(&parse_cfg(text, what), v, what);
}

/// Key/value expectations over a parsed key → values map.
fn check_keys(keys: &BTreeMap<String, Vec<String>>, v: &RenderVector, what: &str) {
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
                "cfg" => check_cfg(&text, v, &what),
                "colon" => check_keys(&parse_colon(&text, &what), v, &what),
                "quoted" => check_keys(&parse_quoted(&text, &what), v, &what),
                "script" => check_script(&text, v, &what),
                "set" => check_keys(&parse_set(&text, &what), v, &what),
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
            type Parser = fn(&str, &str) -> BTreeMap<String, Vec<String>>;
            let keyed: Option<Parser> = match v.format.as_str() {
                "cfg" => Some(parse_cfg),
                "colon" => Some(parse_colon),
                "quoted" => Some(parse_quoted),
                "set" => Some(parse_set),
                _ => None,
            };
            match v.format.as_str() {
                "cfg" | "colon" | "quoted" | "set" => {
                    let parse = keyed.expect("a key/value format");
                    let a: BTreeSet<String> = parse(&benign, &what).into_keys().collect();
                    let b: BTreeSet<String> = parse(&hostile, &what).into_keys().collect();
                    assert_eq!(a, b, "{what}: the hostile value changed the set of keys");
                    assert_eq!(
                        benign.lines().count(),
                        hostile.lines().count(),
                        "{what}: line count changed"
                    );
                }
                "script" => {
                    let shape = |text: &str| -> Vec<(String, Vec<String>)> {
                        parse_script(text, &what)
                            .into_iter()
                            .map(|l| (l.command, l.switches.into_keys().collect()))
                            .collect()
                    };
                    assert_eq!(
                        shape(&benign),
                        shape(&hostile),
                        "{what}: the hostile value changed the commands"
                    );
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
