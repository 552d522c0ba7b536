//! Finding, reading, merging and checking the configuration files.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use toml::{Table, Value};

use super::Settings;

/// Main configuration file of a packaged installation.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/provisiond/provisiond.toml";

/// Development configuration used when no file exists: unprivileged ports on 127.0.0.1,
/// data under the working directory, DHCP off.
pub const EMBEDDED_DEV_CONFIG: &str = include_str!("dev.toml");

/// Where a piece of configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// [`EMBEDDED_DEV_CONFIG`].
    Embedded,
    /// A file.
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Embedded => f.write_str("<embedded development default>"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The merged, validated settings.
    pub settings: Settings,
    /// Files read, in merge order (or the embedded default alone).
    pub sources: Vec<Source>,
}

impl Loaded {
    /// True when no file was found and the embedded development default is in use.
    pub fn is_embedded(&self) -> bool {
        self.sources == [Source::Embedded]
    }
}

/// One configuration problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or the embedded default) that set the key; `None` for a built-in default.
    pub source: Option<Source>,
    /// Key path, `dhcp.pools[0].ranges[1]`; empty for whole-file problems.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{source}: ")?,
            None => f.write_str("built-in default: ")?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found; the configuration is unusable when this is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

fn whole_file(source: &Source, message: String) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        source: Some(source.clone()),
        path: String::new(),
        message,
    }])
}

/// Loads the configuration: `explicit` if given (it must exist), else `default_path` if it
/// exists, else the embedded development default. A file's `conf.d/*.toml` siblings are
/// merged over it in file-name order.
pub fn load(explicit: Option<&Path>, default_path: &Path) -> Result<Loaded, ConfigErrors> {
    let main = match explicit {
        Some(path) => Some(path.to_path_buf()),
        None if default_path.exists() => Some(default_path.to_path_buf()),
        None => None,
    };
    let mut inputs: Vec<(Source, String)> = Vec::new();
    match &main {
        None => inputs.push((Source::Embedded, EMBEDDED_DEV_CONFIG.to_owned())),
        Some(path) => {
            inputs.push(read(path)?);
            let dir = path.parent().unwrap_or(Path::new(".")).join("conf.d");
            for fragment in fragments(&dir)? {
                inputs.push(read(&fragment)?);
            }
        }
    }
    from_texts(inputs)
}

fn read(path: &Path) -> Result<(Source, String), ConfigErrors> {
    let source = Source::File(path.to_path_buf());
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((source, text)),
        Err(e) => Err(whole_file(&source, format!("cannot read: {e}"))),
    }
}

/// The `*.toml` files of a conf.d directory, by name; hidden files (editor and dpkg
/// leftovers start with a dot or end in another suffix) are skipped.
fn fragments(dir: &Path) -> Result<Vec<PathBuf>, ConfigErrors> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(whole_file(
                &Source::File(dir.to_path_buf()),
                format!("cannot list: {e}"),
            ))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".toml") && path.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Checks, merges and validates configuration texts given in merge order.
pub(crate) fn from_texts(inputs: Vec<(Source, String)>) -> Result<Loaded, ConfigErrors> {
    let mut merged = Table::new();
    let mut origins: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors = Vec::new();
    for (index, (source, text)) in inputs.iter().enumerate() {
        // Each file must be valid alone: this is where unknown keys and wrong types are
        // caught with the file's own line numbers.
        if let Err(e) =
            serde_path_to_error::deserialize::<_, Settings>(toml::Deserializer::new(text))
        {
            errors.push(ConfigError {
                source: Some(source.clone()),
                path: display_path(e.path()),
                message: e.inner().to_string().trim_end().to_owned(),
            });
            continue;
        }
        match text.parse::<Table>() {
            Ok(table) => merge(&mut merged, table, "", index, &mut origins),
            Err(e) => errors.push(ConfigError {
                source: Some(source.clone()),
                path: String::new(),
                message: e.to_string().trim_end().to_owned(),
            }),
        }
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let sources: Vec<Source> = inputs.into_iter().map(|(source, _)| source).collect();
    let settings: Settings =
        serde_path_to_error::deserialize(Value::Table(merged)).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                source: None,
                path: display_path(e.path()),
                message: format!("after merging the files: {}", e.inner()),
            }])
        })?;
    let problems = super::validate::validate(&settings);
    if !problems.is_empty() {
        return Err(ConfigErrors(
            problems
                .into_iter()
                .map(|(path, message)| ConfigError {
                    source: origin_of(&path, &origins).map(|i| sources[i].clone()),
                    path,
                    message,
                })
                .collect(),
        ));
    }
    Ok(Loaded { settings, sources })
}

fn display_path(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." {
        String::new()
    } else {
        text
    }
}

/// Merges `src` into `dst`: tables key by key, anything else replaced; records which input
/// set each leaf.
fn merge(
    dst: &mut Table,
    src: Table,
    prefix: &str,
    input: usize,
    origins: &mut BTreeMap<String, usize>,
) {
    for (key, value) in src {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (dst.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(incoming)) => {
                merge(existing, incoming, &path, input, origins);
            }
            (_, Value::Table(incoming)) => {
                let mut fresh = Table::new();
                merge(&mut fresh, incoming, &path, input, origins);
                dst.insert(key, Value::Table(fresh));
            }
            (_, value) => {
                origins.insert(path, input);
                dst.insert(key, value);
            }
        }
    }
}

/// The input that set the value at `path` (`dhcp.pools[0].ranges[1]` → whoever set
/// `dhcp.pools`), or `None` when it is a built-in default.
fn origin_of(path: &str, origins: &BTreeMap<String, usize>) -> Option<usize> {
    let mut key: String = path.split('[').next().unwrap_or(path).to_owned();
    loop {
        if let Some(&input) = origins.get(&key) {
            return Some(input);
        }
        key.truncate(key.rfind('.')?);
    }
}

/// Key paths whose values differ between two configurations (arrays compared whole).
pub fn changed_keys(old: &Settings, new: &Settings) -> Vec<String> {
    fn leaves(
        prefix: &str,
        value: serde_json::Value,
        out: &mut BTreeMap<String, serde_json::Value>,
    ) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, value) in map {
                    let path = if prefix.is_empty() {
                        key
                    } else {
                        format!("{prefix}.{key}")
                    };
                    leaves(&path, value, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other);
            }
        }
    }
    let flat = |settings: &Settings| {
        let mut out = BTreeMap::new();
        leaves(
            "",
            serde_json::to_value(settings).unwrap_or_default(),
            &mut out,
        );
        out
    };
    let (before, after) = (flat(old), flat(new));
    let mut keys: Vec<String> = before
        .keys()
        .chain(after.keys())
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
