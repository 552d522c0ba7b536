//! Plugins: loading vendor plugins (compiled in, then from directories), matching their routes,
//! rendering their files.

mod context;
mod embedded;
pub mod fetch;
mod manifest;
pub mod packages;
mod render;
pub mod repo;
mod route;
pub mod tz;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use regex::{Regex, RegexBuilder};
use serde::Serialize;

pub use context::{build_context, merged_raw_config, server_base, ContextError, ServerInfo};
pub use embedded::{EmbeddedFile, EmbeddedPlugin, BUILT_IN};
pub use manifest::{DhcpOptionSpec, RuleSource};
pub use render::{RenderError, RenderInputs, Rendered, Renderer};
pub use route::{safe_relative, MAX_PATH_LEN};

use crate::model::Mac;

/// Named groups a rule may capture.
const FIELDS: [&str; 5] = ["vendor", "model", "version", "mac", "sn"];
/// Bound on compiled regex size: plugins come from disk, but an admin typo should not eat memory.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Where a plugin was loaded from; the layers in the order they override each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Compiled into the binary (the repository's `plugins/` at build time).
    Embedded,
    /// From `[general] plugins_dir` (the package's /usr/share/provisiond/plugins).
    Builtin,
    /// Installed by the administrator in `<data_dir>/plugins`.
    Admin,
    /// Installed from a plugin repository into `<data_dir>/plugins/<name>/current`; it
    /// replaces a plugin of the same name only when its version is newer.
    Installed,
}

impl Origin {
    /// The name shown by listings and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Embedded => "embedded",
            Origin::Builtin => "builtin",
            Origin::Admin => "admin",
            Origin::Installed => "installed",
        }
    }
}

/// Shown instead of a directory for the embedded plugins, in errors and listings.
pub const EMBEDDED_DIR: &str = "(embedded)";

/// A loaded, validated plugin.
pub struct Plugin {
    /// Unique name (the directory name).
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// Vendor.
    pub vendor: String,
    /// One line.
    pub description: String,
    /// Models covered.
    pub models: Vec<String>,
    /// SIP NOTIFY event for resync.
    pub sync_event: Option<String>,
    /// Directory it was loaded from; `None` for an embedded plugin.
    pub dir: Option<PathBuf>,
    /// The layer it comes from.
    pub origin: Origin,
    /// The layer of the plugin of the same name that this one replaced, if any.
    pub replaces: Option<Origin>,
    /// `static/` files of an embedded plugin, by path under `static/`.
    embedded_static: BTreeMap<String, StaticFile>,
    rules: Vec<Rule>,
    routes: Vec<Route>,
    /// Clients (by option 60) that get `dhcp_options`; `None` uses the DHCP identify rules.
    pub dhcp_vendor_class: Option<Regex>,
    /// DHCP options for this vendor.
    pub dhcp_options: Vec<DhcpOptionSpec>,
    /// The provisioning-code form in the phone's XML browser, when the plugin has one.
    pub code_form: Option<CodeForm>,
    /// Vendor packages (firmware, language files) the admin may install, by id order of the
    /// manifest.
    pub packages: Vec<packages::Package>,
    xml: tera::Tera,
    text: tera::Tera,
}

impl Plugin {
    /// The option 60 patterns that choose this plugin's DHCP clients: `dhcp.vendor_class`,
    /// else its DHCP vendor-class identify rules.
    pub fn dhcp_vendor_patterns(&self) -> Vec<&str> {
        match &self.dhcp_vendor_class {
            Some(re) => vec![re.as_str()],
            None => self
                .rules
                .iter()
                .filter(|r| r.source == RuleSource::DhcpVendorClass)
                .map(|r| r.regex.as_str())
                .collect(),
        }
    }
}

/// A plugin's provisioning-code form (`[code_form]`): the templates of its two screens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeForm {
    /// Template of the input screen (context: [`crate::codeform::InputScreen`]).
    pub input: String,
    /// Template of the result screen (context: [`crate::codeform::ResultScreen`]).
    pub result: String,
    /// Content type of both screens.
    pub content_type: String,
    /// Query parameter that carries the code in the submission.
    pub param: String,
}

/// One screen of the code form, with its context.
#[derive(Debug, Clone, Copy)]
pub enum Screen<'a> {
    /// The input screen.
    Input(&'a crate::codeform::InputScreen),
    /// The result screen.
    Result(&'a crate::codeform::ResultScreen),
}

impl Plugin {
    /// Renders a screen of this plugin's code form; `None` when the plugin has no form.
    pub fn render_screen(&self, screen: Screen<'_>) -> Option<Result<String, RenderError>> {
        let form = self.code_form.as_ref()?;
        let (template, context) = match screen {
            Screen::Input(input) => (&form.input, tera::Context::from_serialize(input)),
            Screen::Result(result) => (&form.result, tera::Context::from_serialize(result)),
        };
        let failed = |e: &tera::Error| RenderError::Template {
            plugin: self.name.clone(),
            template: template.clone(),
            message: error_chain(e),
        };
        Some(context.map_err(|e| failed(&e)).and_then(|context| {
            self.tera_for(template)
                .render(template, &context)
                .map_err(|e| failed(&e))
        }))
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plugin({} {})", self.name, self.version)
    }
}

struct Rule {
    source: RuleSource,
    regex: Regex,
    score: u32,
    vendor: Option<String>,
    model: Option<String>,
}

struct Route {
    pattern: String,
    regex: Regex,
    target: Target,
    content_type: String,
}

/// What a route serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A template, by name.
    Template(String),
    /// A file under `static/`.
    Static(PathBuf),
}

/// The route that answers a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// What to serve.
    pub target: Target,
    /// MAC carried by the path (`{mac}`), which must be the device's.
    pub mac: Option<Mac>,
    /// Content type of the answer.
    pub content_type: String,
}

/// What one rule extracted from a request attribute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Score of the rule.
    pub score: u32,
    /// Vendor.
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Firmware version.
    pub version: Option<String>,
    /// MAC address.
    pub mac: Option<Mac>,
    /// Serial number.
    pub sn: Option<String>,
}

impl Plugin {
    /// The best match of this plugin's rules of `source` on `input` (the first of equal scores).
    pub fn extract(&self, source: RuleSource, input: &str) -> Option<Extracted> {
        self.rules
            .iter()
            .filter(|rule| rule.source == source)
            .filter_map(|rule| {
                let caps = rule.regex.captures(input)?;
                let text = |name: &str| {
                    caps.name(name)
                        .map(|m| m.as_str().to_owned())
                        .filter(|s| !s.is_empty())
                };
                let mac = match caps.name("mac") {
                    // A rule that captures something that is not a MAC did not match.
                    Some(m) => Some(
                        m.as_str()
                            .parse::<Mac>()
                            .ok()
                            .or_else(|| parse_loose_mac(m.as_str()))?,
                    ),
                    None => None,
                };
                Some(Extracted {
                    score: rule.score,
                    vendor: text("vendor")
                        .or_else(|| rule.vendor.clone())
                        .or_else(|| Some(self.vendor.clone())),
                    model: text("model").or_else(|| rule.model.clone()),
                    version: text("version"),
                    mac,
                    sn: text("sn"),
                })
            })
            // The first rule wins among equal scores: rules are tried in file order.
            .fold(None, |best: Option<Extracted>, e| match best {
                Some(b) if b.score >= e.score => Some(b),
                _ => Some(e),
            })
    }

    /// True when this plugin has a rule for `source`.
    pub fn has_rules_for(&self, source: RuleSource) -> bool {
        self.rules.iter().any(|r| r.source == source)
    }

    /// The route answering `path` (relative, no leading slash), if any.
    pub fn resolve(&self, path: &str) -> Option<Resolved> {
        let relative = safe_relative(path)?;
        self.routes.iter().find_map(|route| {
            let mac = route::matches(&route.regex, path)?;
            let target = match &route.target {
                Target::Template(name) => Target::Template(name.clone()),
                Target::Static(_) => Target::Static(match &self.dir {
                    Some(dir) => dir.join("static").join(&relative),
                    // Looked up in `embedded_static` by this relative path.
                    None => relative.clone(),
                }),
            };
            Some(Resolved {
                target,
                mac,
                content_type: route.content_type.clone(),
            })
        })
    }

    /// A `static/` file of an embedded plugin (`path` as [`Plugin::resolve`] gave it):
    /// content, modification time at build, validator. `None` for a directory plugin, whose
    /// files are read from `<dir>/static`.
    pub fn embedded_static(&self, path: &Path) -> Option<(Arc<[u8]>, SystemTime, String)> {
        let file = self.embedded_static.get(path.to_str()?)?;
        Some((Arc::clone(&file.body), file.modified, file.etag.clone()))
    }

    /// Where it was loaded from: its directory, or [`EMBEDDED_DIR`].
    pub fn location(&self) -> PathBuf {
        self.dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(EMBEDDED_DIR))
    }

    /// Route patterns, in order, with what they serve (for listings).
    pub fn routes(&self) -> impl Iterator<Item = (&str, &Target)> {
        self.routes.iter().map(|r| (r.pattern.as_str(), &r.target))
    }

    /// Template routes, in order: (pattern, template, content type), for previews.
    pub fn template_routes(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.routes.iter().filter_map(|r| match &r.target {
            Target::Template(name) => {
                Some((r.pattern.as_str(), name.as_str(), r.content_type.as_str()))
            }
            Target::Static(_) => None,
        })
    }

    /// Identification rules (source, pattern, score), for listings.
    pub fn rules(&self) -> impl Iterator<Item = (RuleSource, &str, u32)> {
        self.rules
            .iter()
            .map(|r| (r.source, r.regex.as_str(), r.score))
    }

    /// The request attributes (transports) some rule of this plugin identifies devices by,
    /// each once, in rule order.
    pub fn identify_sources(&self) -> Vec<RuleSource> {
        let mut sources: Vec<RuleSource> = Vec::new();
        for rule in &self.rules {
            if !sources.contains(&rule.source) {
                sources.push(rule.source);
            }
        }
        sources
    }

    fn tera_for(&self, template: &str) -> &tera::Tera {
        if is_xml_template(template) {
            &self.xml
        } else {
            &self.text
        }
    }
}

/// MACs as some vendors write them in User-Agents: 12 hex digits, any case.
fn parse_loose_mac(text: &str) -> Option<Mac> {
    let lower = text.to_ascii_lowercase();
    lower.parse().ok()
}

fn is_xml_template(name: &str) -> bool {
    [".xml.tera", ".htm.tera", ".html.tera"]
        .iter()
        .any(|s| name.ends_with(s))
}

/// XML (and HTML) escaping for values put in markup.
fn escape_xml(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 forbids even as references.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Escaping for key = value files: a value never starts a new line.
fn escape_line(input: &str) -> String {
    input
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The `percent` template filter: RFC 3986 percent-encoding of every byte but the unreserved
/// characters, for formats whose values are URL-encoded tokens (innovaphone's config
/// commands), so that a value can hold no space, no line break and no `/` switch.
fn percent_filter(
    value: &tera::Value,
    _: &std::collections::HashMap<String, tera::Value>,
) -> tera::Result<tera::Value> {
    let text = match value {
        tera::Value::String(s) => s.clone(),
        tera::Value::Null => String::new(),
        other => other.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(tera::Value::String(out))
}

/// A plugin that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadError {
    /// The plugin directory.
    pub dir: PathBuf,
    /// The file at fault.
    pub file: PathBuf,
    /// Field path in the file, when known.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every plugin that loaded, and why the others did not.
#[derive(Debug, Default)]
pub struct PluginSet {
    plugins: BTreeMap<String, Arc<Plugin>>,
    /// Plugins skipped, with the reason.
    pub errors: Vec<LoadError>,
}

impl PluginSet {
    /// Loads the plugin directories under each root, in order; a later root's plugin replaces
    /// an earlier one of the same name. A missing root is no error.
    pub fn load(roots: &[(PathBuf, Origin)]) -> PluginSet {
        PluginSet::load_over(&[], roots)
    }

    /// The plugins compiled into the binary ([`BUILT_IN`]), then each root's as [`load`]
    /// does: what the daemon and the commands use, so that the built-in plugins are there
    /// even where no plugin directory exists.
    ///
    /// [`load`]: PluginSet::load
    pub fn with_embedded(roots: &[(PathBuf, Origin)]) -> PluginSet {
        PluginSet::load_over(BUILT_IN, roots)
    }

    /// `embedded` plugins first, then each root's; a later layer's plugin replaces an
    /// earlier one of the same name.
    pub fn load_over(
        embedded: &'static [EmbeddedPlugin],
        roots: &[(PathBuf, Origin)],
    ) -> PluginSet {
        let mut set = PluginSet::default();
        for plugin in embedded {
            set.add(load_plugin(Files::Embedded(plugin), Origin::Embedded));
        }
        for (root, origin) in roots {
            let Ok(entries) = std::fs::read_dir(root) else {
                continue;
            };
            let mut dirs: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_dir()
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            dirs.sort();
            for dir in dirs {
                if *origin == Origin::Admin && !dir.join("plugin.toml").exists() {
                    // A repository install (docs/plugin-repository.md): the version that
                    // `current` names, by its real path so that a later switch does not
                    // change the files under a plugin already loaded.
                    if let Some(version_dir) = repo::current_version_dir(&dir) {
                        let name = dir.file_name().unwrap_or_default();
                        set.add(load_plugin(
                            Files::Dir(&version_dir.join(name)),
                            Origin::Installed,
                        ));
                        continue;
                    }
                    if repo::is_repository_dir(&dir) {
                        // An install that never reached its switch: no plugin yet.
                        continue;
                    }
                }
                set.add(load_plugin(Files::Dir(&dir), *origin));
            }
        }
        set
    }

    fn add(&mut self, loaded: Result<Plugin, LoadError>) {
        match loaded {
            Ok(mut plugin) => {
                if let Some(kept) = self.plugins.get(&plugin.name).filter(|p| {
                    plugin.origin == Origin::Installed
                        && !version_newer(&plugin.version, &p.version)
                }) {
                    tracing::info!(
                        plugin = %plugin.name,
                        "installed version {} is not newer than the {} one ({}): kept the {} one",
                        plugin.version,
                        kept.origin.as_str(),
                        kept.version,
                        kept.origin.as_str()
                    );
                    return;
                }
                let previous = self.plugins.get(&plugin.name).map(|p| p.origin);
                if let Some(previous) = previous {
                    tracing::info!(
                        plugin = %plugin.name,
                        dir = %plugin.location().display(),
                        "{} plugin replaces the {} one",
                        plugin.origin.as_str(),
                        previous.as_str()
                    );
                }
                plugin.replaces = previous;
                self.plugins.insert(plugin.name.clone(), Arc::new(plugin));
            }
            Err(e) => {
                tracing::error!("plugin not loaded: {e}");
                self.errors.push(e);
            }
        }
    }

    /// The plugin with this name.
    pub fn get(&self, name: &str) -> Option<&Arc<Plugin>> {
        self.plugins.get(name)
    }

    /// Every plugin, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Plugin>> {
        self.plugins.values()
    }

    /// Number of loaded plugins.
    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    /// True when no plugin loaded.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }
}

/// True when version `a` is newer than `b`: their runs of digits compared as numbers, other
/// runs as text, left to right (`1.10` > `1.9`, `2.0.1` > `2.0`).
pub fn version_newer(a: &str, b: &str) -> bool {
    version_key(a) > version_key(b)
}

/// The comparable parts of a version.
fn version_key(v: &str) -> Vec<(u64, String)> {
    let mut parts = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 {
            parts.push((rest[..digits].parse().unwrap_or(u64::MAX), String::new()));
            rest = &rest[digits..];
        } else {
            let text = rest.len() - rest.trim_start_matches(|c: char| !c.is_ascii_digit()).len();
            let word = rest[..text].trim_matches(|c: char| c == '.' || c == '-' || c == '_');
            if !word.is_empty() {
                parts.push((0, word.to_owned()));
            }
            rest = &rest[text..];
        }
    }
    parts
}

/// Loads the plugin directory `dir` alone (whose name is the plugin's), as an admin plugin:
/// what `provisiond repo` checks before it packs a plugin or indexes an archive.
pub fn load_dir(dir: &Path) -> Result<Plugin, LoadError> {
    load_plugin(Files::Dir(dir), Origin::Admin)
}

/// Where a plugin's files are read from.
#[derive(Clone, Copy)]
enum Files<'a> {
    /// A directory on disk.
    Dir(&'a Path),
    /// Compiled into the binary.
    Embedded(&'static EmbeddedPlugin),
}

impl Files<'_> {
    /// The directory, or `(embedded)/<name>`, for errors.
    fn shown_dir(&self) -> PathBuf {
        match self {
            Files::Dir(dir) => dir.to_path_buf(),
            Files::Embedded(plugin) => Path::new(EMBEDDED_DIR).join(plugin.name),
        }
    }

    fn dir_name(&self) -> String {
        match self {
            Files::Dir(dir) => dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            Files::Embedded(plugin) => plugin.name.to_owned(),
        }
    }

    /// A text file of the plugin (`relative` is `/`-separated).
    fn read(&self, relative: &str) -> Result<String, String> {
        match self {
            Files::Dir(dir) => {
                std::fs::read_to_string(dir.join(relative)).map_err(|e| format!("cannot read: {e}"))
            }
            Files::Embedded(plugin) => {
                let file = plugin
                    .file(relative)
                    .ok_or_else(|| "cannot read: not embedded".to_owned())?;
                String::from_utf8(file.bytes.to_vec())
                    .map_err(|_| "cannot read: not UTF-8".to_owned())
            }
        }
    }

    /// Names of the files directly in `templates/`, sorted.
    fn template_names(&self) -> Vec<String> {
        let mut names: Vec<String> = match self {
            Files::Dir(dir) => std::fs::read_dir(dir.join("templates"))
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default(),
            Files::Embedded(plugin) => plugin
                .files
                .iter()
                .filter_map(|f| f.path.strip_prefix("templates/"))
                .filter(|name| !name.contains('/'))
                .map(str::to_owned)
                .collect(),
        };
        names.sort();
        names
    }

    /// The `static/` files of an embedded plugin, ready to serve; none for a directory,
    /// whose files are read when asked for.
    fn embedded_static(&self) -> BTreeMap<String, StaticFile> {
        let Files::Embedded(plugin) = self else {
            return BTreeMap::new();
        };
        plugin
            .files
            .iter()
            .filter_map(|f| {
                let path = f.path.strip_prefix("static/")?;
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(f.bytes, &mut hasher);
                Some((
                    path.to_owned(),
                    StaticFile {
                        body: Arc::from(f.bytes),
                        modified: SystemTime::UNIX_EPOCH + Duration::from_secs(f.modified),
                        etag: format!("\"e{:016x}\"", std::hash::Hasher::finish(&hasher)),
                    },
                ))
            })
            .collect()
    }
}

/// A `static/` file of an embedded plugin.
struct StaticFile {
    body: Arc<[u8]>,
    modified: SystemTime,
    etag: String,
}

/// Manifest validation without reading the manifest from its plugin, reachable for
/// `tests/fuzz.rs` only; not an API.
#[doc(hidden)]
pub mod fuzz_api {
    use std::path::{Path, PathBuf};

    use super::{load_error, load_templates, plugin_from_text, Files, LoadError, Origin, Plugin};

    /// A plugin directory whose templates are loaded once, to check many manifest texts with.
    pub struct ManifestChecker {
        dir: PathBuf,
        templates: (tera::Tera, tera::Tera),
    }

    impl ManifestChecker {
        /// Loads the templates of the plugin directory `dir`.
        pub fn new(dir: &Path) -> Result<ManifestChecker, LoadError> {
            Ok(ManifestChecker {
                dir: dir.to_path_buf(),
                templates: load_templates(Files::Dir(dir), dir, &load_error(dir))?,
            })
        }

        /// What loading the directory gives when its `plugin.toml` holds `text`.
        pub fn load(&self, text: &str) -> Result<Plugin, LoadError> {
            plugin_from_text(Files::Dir(&self.dir), Origin::Admin, text, &|| {
                Ok(self.templates.clone())
            })
        }
    }
}

/// Builds the errors of the plugin shown as `dir`.
fn load_error(dir: &Path) -> impl Fn(&Path, &str, String) -> LoadError + '_ {
    move |file: &Path, field: &str, message: String| LoadError {
        dir: dir.to_path_buf(),
        file: file.to_path_buf(),
        field: field.to_owned(),
        message,
    }
}

fn load_plugin(files: Files<'_>, origin: Origin) -> Result<Plugin, LoadError> {
    let dir = files.shown_dir();
    let fail = load_error(&dir);
    let text = files
        .read("plugin.toml")
        .map_err(|e| fail(&dir.join("plugin.toml"), "", e))?;
    plugin_from_text(files, origin, &text, &|| load_templates(files, &dir, &fail))
}

/// The plugin that `files` hold when their manifest is `text`; `templates` is called once the
/// manifest's own checks passed, so that a manifest error is reported before a template one.
fn plugin_from_text(
    files: Files<'_>,
    origin: Origin,
    text: &str,
    templates: &dyn Fn() -> Result<(tera::Tera, tera::Tera), LoadError>,
) -> Result<Plugin, LoadError> {
    let dir = files.shown_dir();
    let manifest_path = dir.join("plugin.toml");
    let fail = load_error(&dir);
    let m: manifest::Manifest = serde_path_to_error::deserialize(toml::Deserializer::new(text))
        .map_err(|e| {
            let field = e.path().to_string();
            fail(
                &manifest_path,
                if field == "." { "" } else { &field },
                e.inner().to_string().trim_end().to_owned(),
            )
        })?;
    let bad = |field: String, message: String| fail(&manifest_path, &field, message);

    let dir_name = files.dir_name();
    let valid_name = !m.name.is_empty()
        && m.name.len() <= 64
        && m.name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_');
    if !valid_name {
        return Err(bad(
            "name".into(),
            format!("{:?}: use a-z, 0-9, - and _", m.name),
        ));
    }
    if m.name != dir_name {
        return Err(bad(
            "name".into(),
            format!("{:?} differs from the directory name {dir_name:?}", m.name),
        ));
    }
    if m.version.trim().is_empty() {
        return Err(bad("version".into(), "must not be empty".into()));
    }
    if m.vendor.trim().is_empty() {
        return Err(bad("vendor".into(), "must not be empty".into()));
    }
    if let Some(event) = &m.sync_event {
        if event.is_empty() || event.chars().any(|c| c.is_control()) {
            return Err(bad("sync_event".into(), "must be one line of text".into()));
        }
    }

    let mut rules = Vec::new();
    for (i, spec) in m.identify.iter().enumerate() {
        let regex = RegexBuilder::new(&spec.pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| bad(format!("identify[{i}].pattern"), e.to_string()))?;
        if let Some(name) = regex
            .capture_names()
            .flatten()
            .find(|n| !FIELDS.contains(n))
        {
            return Err(bad(
                format!("identify[{i}].pattern"),
                format!("unknown group {name:?}: use vendor, model, version, mac, sn"),
            ));
        }
        rules.push(Rule {
            source: spec.source,
            regex,
            score: spec.score,
            vendor: spec.vendor.clone(),
            model: spec.model.clone(),
        });
    }

    let (xml, text) = templates()?;
    let mut routes = Vec::new();
    for (i, spec) in m.files.iter().enumerate() {
        let (regex, _) =
            route::compile(&spec.path).map_err(|e| bad(format!("files[{i}].path"), e))?;
        let target = match (&spec.template, spec.is_static) {
            (Some(name), false) => {
                let tera = if is_xml_template(name) { &xml } else { &text };
                if !tera.get_template_names().any(|n| n == name) {
                    return Err(bad(
                        format!("files[{i}].template"),
                        format!("no templates/{name}"),
                    ));
                }
                Target::Template(name.clone())
            }
            (None, true) => Target::Static(PathBuf::new()),
            _ => {
                return Err(bad(
                    format!("files[{i}]"),
                    "set exactly one of template = \"…\" or static = true".into(),
                ))
            }
        };
        let content_type = match &spec.content_type {
            Some(ct) if ct.is_empty() || ct.chars().any(|c| c.is_control()) => {
                return Err(bad(
                    format!("files[{i}].content_type"),
                    "must be one line of text".into(),
                ))
            }
            Some(ct) => ct.clone(),
            None => route::content_type_for(&spec.path).to_owned(),
        };
        routes.push(Route {
            pattern: spec.path.clone(),
            regex,
            target,
            content_type,
        });
    }

    let code_form = match &m.code_form {
        None => None,
        Some(spec) => {
            for (field, name) in [("input", &spec.input), ("result", &spec.result)] {
                let tera = if is_xml_template(name) { &xml } else { &text };
                if !tera.get_template_names().any(|n| n == name) {
                    return Err(bad(
                        format!("code_form.{field}"),
                        format!("no templates/{name}"),
                    ));
                }
            }
            let content_type = match &spec.content_type {
                Some(ct) if ct.is_empty() || ct.chars().any(|c| c.is_control()) => {
                    return Err(bad(
                        "code_form.content_type".into(),
                        "must be one line of text".into(),
                    ))
                }
                Some(ct) => ct.clone(),
                None => route::content_type_for(spec.input.trim_end_matches(".tera")).to_owned(),
            };
            let param = spec.param.clone().unwrap_or_else(|| "code".to_owned());
            // It stands unescaped in a URL's query and in the phone's XML.
            let plain = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
            if param.is_empty() || param.len() > 32 || !param.chars().all(plain) {
                return Err(bad(
                    "code_form.param".into(),
                    format!("{param:?}: use 1 to 32 of A-Z a-z 0-9 _ -"),
                ));
            }
            Some(CodeForm {
                input: spec.input.clone(),
                result: spec.result.clone(),
                content_type,
                param,
            })
        }
    };

    let mut packages = Vec::new();
    for (i, spec) in m.packages.iter().enumerate() {
        let package = packages::validate(spec)
            .map_err(|(field, message)| bad(format!("packages[{i}].{field}"), message))?;
        if packages
            .iter()
            .any(|p: &packages::Package| p.id == package.id)
        {
            return Err(bad(
                format!("packages[{i}].id"),
                format!("{:?} is declared twice", package.id),
            ));
        }
        packages.push(package);
    }

    let (dhcp_vendor_class, dhcp_options) = match &m.dhcp {
        None => (None, Vec::new()),
        Some(spec) => {
            let class = spec
                .vendor_class
                .as_deref()
                .map(|p| RegexBuilder::new(p).size_limit(REGEX_SIZE_LIMIT).build())
                .transpose()
                .map_err(|e| bad("dhcp.vendor_class".into(), e.to_string()))?;
            for (i, option) in spec.options.iter().enumerate() {
                if option.code == 0 || option.code == 255 {
                    return Err(bad(
                        format!("dhcp.options[{i}].code"),
                        "must be between 1 and 254".into(),
                    ));
                }
                check_placeholders(&option.value)
                    .map_err(|e| bad(format!("dhcp.options[{i}].value"), e))?;
            }
            (class, spec.options.clone())
        }
    };

    Ok(Plugin {
        name: m.name,
        version: m.version,
        vendor: m.vendor,
        description: m.description,
        models: m.models,
        sync_event: m.sync_event,
        dir: match files {
            Files::Dir(dir) => Some(dir.to_path_buf()),
            Files::Embedded(_) => None,
        },
        origin,
        replaces: None,
        embedded_static: files.embedded_static(),
        rules,
        routes,
        dhcp_vendor_class,
        dhcp_options,
        code_form,
        packages,
        xml,
        text,
    })
}

fn check_placeholders(value: &str) -> Result<(), String> {
    let mut rest = value;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').ok_or("unclosed {")? + start;
        let name = &rest[start + 1..end];
        if !["provisioning_url", "server_ip", "tftp_server"].contains(&name) {
            return Err(format!("unknown placeholder {{{name}}}: use {{provisioning_url}}, {{server_ip}} or {{tftp_server}}"));
        }
        rest = &rest[end + 1..];
    }
    Ok(())
}

/// Loads `templates/*.tera` into an XML-escaping and a line-escaping engine.
fn load_templates(
    files: Files<'_>,
    dir: &Path,
    fail: &dyn Fn(&Path, &str, String) -> LoadError,
) -> Result<(tera::Tera, tera::Tera), LoadError> {
    let templates_dir = dir.join("templates");
    let mut xml_sources = Vec::new();
    let mut text_sources = Vec::new();
    for name in files.template_names() {
        if !name.ends_with(".tera") || name.starts_with('.') {
            continue;
        }
        let source = files
            .read(&format!("templates/{name}"))
            .map_err(|e| fail(&templates_dir.join(&name), "", e))?;
        if is_xml_template(&name) {
            xml_sources.push((name, source));
        } else {
            text_sources.push((name, source));
        }
    }
    let build = |sources: Vec<(String, String)>,
                 escape: fn(&str) -> String|
     -> Result<tera::Tera, LoadError> {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![".tera"]);
        tera.set_escape_fn(escape);
        tera.register_filter("percent", percent_filter);
        let names: Vec<String> = sources.iter().map(|(n, _)| n.clone()).collect();
        tera.add_raw_templates(sources).map_err(|e| {
            // Tera names the template in its error chain; point at the file when we can.
            let message = error_chain(&e);
            let file = names
                .iter()
                .find(|n| message.contains(n.as_str()))
                .map(|n| templates_dir.join(n))
                .unwrap_or_else(|| templates_dir.clone());
            fail(&file, "", message)
        })?;
        Ok(tera)
    };
    Ok((
        build(xml_sources, escape_xml)?,
        build(text_sources, escape_line)?,
    ))
}

/// An error and its causes on one line (tera puts the useful part in the sources).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escape_xml("a<b>&\"c'\n\u{1}"),
            "a&lt;b&gt;&amp;&quot;c&apos;  "
        );
        assert_eq!(
            escape_line("Alice\nlinekey.1.type = 15\r\u{0}x"),
            "Alice linekey.1.type = 15  x"
        );
    }

    #[test]
    fn placeholders() {
        assert!(check_placeholders("{provisioning_url}").is_ok());
        assert!(check_placeholders("tftp://{server_ip}/x").is_ok());
        assert!(check_placeholders("{nope}").is_err());
        assert!(check_placeholders("{provisioning_url").is_err());
    }
}
