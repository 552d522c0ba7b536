//! Vendor packages of plugins (firmware, language files): their declarations, checked when a
//! plugin loads, and their installed files, which phones get as the plugin's static files.
//!
//! Installed packages live under `<data_dir>/packages` (built-in plugins' directories are
//! read-only):
//!
//! ```text
//! <root>/<plugin>/<package>/installed.json      the record: version, files, hash
//! <root>/<plugin>/<package>/<version>-<nonce>/  the files, by their served names
//! <root>/.staging/                              downloads and unpacking in progress
//! ```
//!
//! An install downloads (already verified by size and SHA-256) and unpacks into `.staging`,
//! renames the result next to the record, then renames a new record over the old one: that
//! rename is the switch. Killed before it, the previous record and its files are intact;
//! the leftovers (staging, directories that no record names) are removed at the next start.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use regex::Regex;
use serde::{Deserialize, Serialize};
use url::Url;

use super::fetch::{hex, parse_sha256};
use super::manifest::{PackageFileSpec, PackageFormatSpec, PackageSpec};
use super::route::safe_relative;

/// Largest download a package may declare.
pub const MAX_PACKAGE_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Most members an archive may have (directories included).
pub const MAX_MEMBERS: usize = 10_000;
/// Most bytes a package may unpack to, all files together.
pub const MAX_UNPACKED_BYTES: u64 = 4 * 1024 * 1024 * 1024;
/// Name of a package's record in its directory.
const RECORD: &str = "installed.json";
/// Directory of work in progress, under the root.
const STAGING: &str = ".staging";

/// How a package's download is unpacked.
pub type PackageFormat = PackageFormatSpec;

/// A vendor package a plugin declares, checked.
#[derive(Debug, Clone)]
pub struct Package {
    /// Unique within the plugin.
    pub id: String,
    /// Its version.
    pub version: String,
    /// One line.
    pub description: String,
    /// Where it is downloaded from.
    pub url: Url,
    /// SHA-256 of the download.
    pub sha256: [u8; 32],
    /// Exact size of the download.
    pub size: u64,
    /// The vendor's licence.
    pub licence_url: Option<Url>,
    /// Installing needs an explicit acceptance of the licence.
    pub licence_acceptance_required: bool,
    /// How it is unpacked.
    pub format: PackageFormat,
    /// Which members land where.
    pub files: Vec<FileMap>,
}

/// One `[[packages.files]]`, checked.
#[derive(Debug, Clone)]
pub struct FileMap {
    /// The glob as written, and compiled; `None` for a raw package.
    pub from: Option<(String, Regex)>,
    /// Served path, or directory (ending with `/`; `/` alone is the top).
    pub to: String,
}

impl FileMap {
    fn is_dir(&self) -> bool {
        self.to.ends_with('/')
    }

    /// The served name of `member` under this mapping, if it matches.
    fn place(&self, member: &str) -> Option<String> {
        let (_, regex) = self.from.as_ref()?;
        if !regex.is_match(member) {
            return None;
        }
        if !self.is_dir() {
            return Some(self.to.clone());
        }
        let base = member.rsplit('/').next().unwrap_or(member);
        Some(
            format!("{}{base}", self.to)
                .trim_start_matches('/')
                .to_owned(),
        )
    }
}

fn plain_name(text: &str, extra: &[char]) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && !text.starts_with('.')
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || extra.contains(&c))
}

/// A glob (`*`, `?` within one path component) as an anchored regex.
fn glob(pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() || pattern.starts_with('/') || pattern.contains(['\\', '\0']) {
        return Err("must be a relative member path".into());
    }
    if pattern.split('/').any(|part| part == ".." || part == ".") {
        return Err("must not contain . or .. components".into());
    }
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    Regex::new(&re).map_err(|e| e.to_string())
}

/// Checks a `[[packages]]` declaration; the error names the field (relative to the package).
pub(super) fn validate(spec: &PackageSpec) -> Result<Package, (String, String)> {
    let bad = |field: &str, message: String| (field.to_owned(), message);
    if !plain_name(&spec.id, &['.', '-', '_']) {
        return Err(bad(
            "id",
            format!("{:?}: use 1 to 64 of a-z, 0-9, ., -, _", spec.id),
        ));
    }
    let version_ok = !spec.version.is_empty()
        && spec.version.len() <= 64
        && !spec.version.starts_with('.')
        && spec
            .version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+~-".contains(c));
    if !version_ok {
        return Err(bad(
            "version",
            format!(
                "{:?}: use 1 to 64 of A-Z, a-z, 0-9, ., _, +, ~, -",
                spec.version
            ),
        ));
    }
    if spec.description.chars().any(|c| c.is_control()) {
        return Err(bad("description", "must be one line of text".into()));
    }
    let web_url = |field: &str, text: &str| -> Result<Url, (String, String)> {
        let url = Url::parse(text).map_err(|e| bad(field, format!("{text:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(field, format!("{text:?}: only http and https URLs")));
        }
        Ok(url)
    };
    let url = web_url("url", &spec.url)?;
    let sha256 =
        parse_sha256(&spec.sha256).ok_or_else(|| bad("sha256", "must be 64 hex digits".into()))?;
    if spec.size == 0 || spec.size > MAX_PACKAGE_BYTES {
        return Err(bad(
            "size",
            format!("must be between 1 and {MAX_PACKAGE_BYTES} bytes"),
        ));
    }
    let licence_url = spec
        .licence_url
        .as_deref()
        .map(|u| web_url("licence_url", u))
        .transpose()?;
    if spec.licence_acceptance_required && licence_url.is_none() {
        return Err(bad(
            "licence_acceptance_required",
            "needs licence_url: the admin accepts a licence that can be read".into(),
        ));
    }
    if spec.files.is_empty() {
        return Err(bad("files", "at least one [[packages.files]]".into()));
    }
    if spec.format == PackageFormat::Raw && spec.files.len() != 1 {
        return Err(bad("files", "a raw package has exactly one file".into()));
    }
    let files = spec
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| file_map(spec.format, f).map_err(|m| bad(&format!("files[{i}]"), m)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Package {
        id: spec.id.clone(),
        version: spec.version.clone(),
        description: spec.description.clone(),
        url,
        sha256,
        size: spec.size,
        licence_url,
        licence_acceptance_required: spec.licence_acceptance_required,
        format: spec.format,
        files,
    })
}

fn file_map(format: PackageFormat, spec: &PackageFileSpec) -> Result<FileMap, String> {
    let is_dir = spec.to.ends_with('/');
    let dir_ok = spec.to == "/" || safe_relative(spec.to.trim_end_matches('/')).is_some();
    if (is_dir && !dir_ok) || (!is_dir && safe_relative(&spec.to).is_none()) {
        return Err(format!(
            "to: {:?} is not a plain relative path (no .., no leading dot or slash)",
            spec.to
        ));
    }
    let from = match (format, &spec.from) {
        (PackageFormat::Raw, None) if is_dir => {
            return Err("to: a raw package's file needs a name, not a directory".into())
        }
        (PackageFormat::Raw, None) => None,
        (PackageFormat::Raw, Some(_)) => {
            return Err("from: a raw package is the file itself; set only `to`".into())
        }
        (_, None) => return Err("from: which archive members (a path or a glob)".into()),
        (_, Some(pattern)) => Some((
            pattern.clone(),
            glob(pattern).map_err(|e| format!("from: {e}"))?,
        )),
    };
    Ok(FileMap {
        from,
        to: spec.to.clone(),
    })
}

/// Why installing or removing a package failed.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// A file operation failed (a full disk, a read-only directory…).
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The download is not an archive of the declared format, or is damaged.
    #[error("not a valid {format} archive: {reason}")]
    Archive {
        /// `zip` or `tar`.
        format: &'static str,
        /// Why.
        reason: String,
    },
    /// A member's path could leave the package's directory.
    #[error("archive member {member:?} refused: {why}")]
    UnsafeMember {
        /// The member's path, as stored.
        member: String,
        /// Why.
        why: &'static str,
    },
    /// More members than [`MAX_MEMBERS`].
    #[error("the archive has more than {0} members")]
    TooManyMembers(usize),
    /// The files unpack to more than allowed.
    #[error("the archive unpacks to more than {0} bytes")]
    TooLarge(u64),
    /// A `from` matched no member.
    #[error("no archive member matches {0:?}")]
    NoMatch(String),
    /// A `from` with a single destination matched several members.
    #[error("{from:?} matches several members for the single file {to:?}")]
    SeveralMatches {
        /// The glob.
        from: String,
        /// The destination.
        to: String,
    },
    /// Two members land on the same served name.
    #[error("two archive members land on {0:?}")]
    Duplicate(String),
    /// Another installed package of the plugin serves this name.
    #[error("{file:?} is already served by package {other:?} of this plugin; uninstall it first")]
    Conflict {
        /// The served name.
        file: String,
        /// The package that serves it.
        other: String,
    },
    /// The package is not installed.
    #[error("package {0:?} is not installed")]
    NotInstalled(String),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> PackageError + '_ {
    move |source| PackageError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// What an installed package is, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// The package.
    pub id: String,
    /// Its version.
    pub version: String,
    /// Its description when installed.
    pub description: String,
    /// Where it came from.
    pub url: String,
    /// SHA-256 of the download, hex.
    pub sha256: String,
    /// Size of the download.
    pub size: u64,
    /// Served names, sorted.
    pub files: Vec<String>,
    /// Its directory (a name under the package's directory).
    pub dir: String,
    /// When it was installed (Unix seconds).
    pub installed_at: u64,
}

/// The installed packages of every plugin, and their files.
#[derive(Debug)]
pub struct PackageStore {
    root: PathBuf,
    installed: RwLock<BTreeMap<String, BTreeMap<String, Installed>>>,
    /// Serialises switches, so that conflicts are checked against a stable state.
    switching: Mutex<()>,
}

fn sync_dir(dir: &Path) -> Result<(), PackageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn random_nonce() -> String {
    crate::model::new_id()[..12].to_owned()
}

impl PackageStore {
    /// The store under `root` (`<data_dir>/packages`): created if missing; work left by an
    /// interrupted install (staging, directories no record names) is removed.
    pub fn open(root: PathBuf) -> Result<PackageStore, PackageError> {
        let staging = root.join(STAGING);
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io_err(&staging))?;
        }
        fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        let mut installed: BTreeMap<String, BTreeMap<String, Installed>> = BTreeMap::new();
        for plugin_dir in subdirs(&root)? {
            let Some(plugin) = name_of(&plugin_dir) else {
                continue;
            };
            for package_dir in subdirs(&plugin_dir)? {
                let Some(id) = name_of(&package_dir) else {
                    continue;
                };
                let record = read_record(&package_dir);
                let keep = record.as_ref().map(|r| r.dir.clone());
                for dir in subdirs(&package_dir)? {
                    if name_of(&dir) != keep {
                        tracing::info!(dir = %dir.display(), "removing what an interrupted package install left");
                        fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
                    }
                }
                let tmp = package_dir.join(format!("{RECORD}.tmp"));
                if tmp.exists() {
                    fs::remove_file(&tmp).map_err(io_err(&tmp))?;
                }
                match record {
                    Some(record) if record.id == id => {
                        installed
                            .entry(plugin.clone())
                            .or_default()
                            .insert(id, record);
                    }
                    _ => {
                        let _ = fs::remove_dir(&package_dir);
                    }
                }
            }
        }
        Ok(PackageStore {
            root,
            installed: RwLock::new(installed),
            switching: Mutex::new(()),
        })
    }

    /// Where downloads go (same file system as the installed files).
    pub fn staging(&self) -> PathBuf {
        self.root.join(STAGING)
    }

    /// The installed packages of `plugin`, by id.
    pub fn installed(&self, plugin: &str) -> Vec<Installed> {
        self.read()
            .get(plugin)
            .map(|p| p.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The installed package `id` of `plugin`.
    pub fn get(&self, plugin: &str, id: &str) -> Option<Installed> {
        self.read().get(plugin)?.get(id).cloned()
    }

    /// Every installed file of `plugin` (for checks that name files).
    pub fn has_file(&self, plugin: &str, path: &str) -> bool {
        self.find(plugin, path).is_some()
    }

    /// The installed file that `plugin` serves as `path`: (its package's directory, the
    /// file), or `None`. Only names recorded at install are found.
    pub fn find(&self, plugin: &str, path: &str) -> Option<(PathBuf, PathBuf)> {
        let map = self.read();
        let found = map
            .get(plugin)?
            .values()
            .find(|p| p.files.binary_search_by(|f| f.as_str().cmp(path)).is_ok())?;
        let dir = self.root.join(plugin).join(&found.id).join(&found.dir);
        let file = dir.join(safe_relative(path)?);
        Some((dir, file))
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, BTreeMap<String, Installed>>> {
        self.installed.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs `package` of `plugin` from `download` (already verified against the
    /// declared size and hash): unpacks it in staging, then switches. Blocking.
    pub fn install(
        &self,
        plugin: &str,
        package: &Package,
        download: &Path,
    ) -> Result<Installed, PackageError> {
        let staging = self.staging();
        fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        let work = tempfile::Builder::new()
            .prefix("unpack-")
            .tempdir_in(&staging)
            .map_err(io_err(&staging))?;
        let out = work.path().join("files");
        fs::create_dir(&out).map_err(io_err(&out))?;
        let mut files = unpack(package, download, &out)?;
        files.sort();

        let _switching = self.switching.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(others) = self.read().get(plugin) {
            for other in others.values().filter(|o| o.id != package.id) {
                if let Some(file) = files.iter().find(|f| other.files.binary_search(f).is_ok()) {
                    return Err(PackageError::Conflict {
                        file: file.clone(),
                        other: other.id.clone(),
                    });
                }
            }
        }
        let package_dir = self.root.join(plugin).join(&package.id);
        fs::create_dir_all(&package_dir).map_err(io_err(&package_dir))?;
        let dir_name = format!("{}-{}", package.version, random_nonce());
        let final_dir = package_dir.join(&dir_name);
        fs::rename(&out, &final_dir).map_err(io_err(&final_dir))?;
        let record = Installed {
            id: package.id.clone(),
            version: package.version.clone(),
            description: package.description.clone(),
            url: super::fetch::shown(&package.url),
            sha256: hex(&package.sha256),
            size: package.size,
            files,
            dir: dir_name,
            installed_at: crate::model::now(),
        };
        if let Err(e) = write_record(&package_dir, &record) {
            let _ = fs::remove_dir_all(&final_dir);
            return Err(e);
        }
        let previous = self
            .installed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(plugin.to_owned())
            .or_default()
            .insert(package.id.clone(), record.clone());
        if let Some(previous) = previous {
            // Transfers in progress hold the file in memory: removing it now is safe.
            let old = package_dir.join(&previous.dir);
            if let Err(e) = fs::remove_dir_all(&old) {
                tracing::warn!(dir = %old.display(), "cannot remove the previous version: {e}; removed at the next start");
            }
        }
        Ok(record)
    }

    /// Removes the installed package `id` of `plugin`; its files are no longer served.
    pub fn uninstall(&self, plugin: &str, id: &str) -> Result<Installed, PackageError> {
        let _switching = self.switching.lock().unwrap_or_else(|e| e.into_inner());
        let record = self
            .get(plugin, id)
            .ok_or_else(|| PackageError::NotInstalled(id.to_owned()))?;
        let package_dir = self.root.join(plugin).join(id);
        let record_path = package_dir.join(RECORD);
        fs::remove_file(&record_path).map_err(io_err(&record_path))?;
        let _ = sync_dir(&package_dir);
        if let Some(p) = self
            .installed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(plugin)
        {
            p.remove(id);
        }
        if let Err(e) = fs::remove_dir_all(&package_dir) {
            tracing::warn!(dir = %package_dir.display(), "cannot remove: {e}; removed at the next start");
        }
        Ok(record)
    }
}

/// Subdirectories of `dir` (none when it is missing), not following symlinks.
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>, PackageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        if entry.file_type().map_err(io_err(dir))?.is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The file name of `path`, unless hidden (staging) or not UTF-8.
fn name_of(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    (!name.starts_with('.')).then(|| name.to_owned())
}

fn read_record(package_dir: &Path) -> Option<Installed> {
    let path = package_dir.join(RECORD);
    let text = fs::read(&path).ok()?;
    match serde_json::from_slice::<Installed>(&text) {
        Ok(mut record) => {
            record.files.sort();
            let dir_ok = name_of(Path::new(&record.dir)).is_some_and(|d| d == record.dir)
                && package_dir.join(&record.dir).is_dir();
            if dir_ok && record.files.iter().all(|f| safe_relative(f).is_some()) {
                Some(record)
            } else {
                tracing::error!(file = %path.display(), "package record names missing or unsafe files: ignored");
                None
            }
        }
        Err(e) => {
            tracing::error!(file = %path.display(), "unreadable package record: {e}: ignored");
            None
        }
    }
}

/// Writes the record next to the files, then renames it into place: the switch.
fn write_record(package_dir: &Path, record: &Installed) -> Result<(), PackageError> {
    let tmp = package_dir.join(format!("{RECORD}.tmp"));
    let text = serde_json::to_vec_pretty(record).map_err(|e| PackageError::Io {
        path: tmp.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&text).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    drop(file);
    let path = package_dir.join(RECORD);
    fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(package_dir)
}

/// A member path as a plain relative path (`./` prefixes dropped), or why it is refused.
fn member_path(name: &str) -> Result<String, &'static str> {
    if name.contains('\0') {
        return Err("NUL in the path");
    }
    if name.contains('\\') {
        return Err("backslash in the path");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    let mut rest = name;
    while let Some(tail) = rest.strip_prefix("./") {
        rest = tail;
    }
    let rest = rest.trim_end_matches('/');
    let mut parts = Vec::new();
    for part in rest.split('/') {
        match part {
            ".." => return Err("`..` in the path"),
            "." | "" => return Err("empty or `.` component in the path"),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Where the members go, with the checks and bounds that apply to every format.
struct Placer<'a> {
    package: &'a Package,
    out: &'a Path,
    matched: Vec<usize>,
    placed: BTreeMap<String, ()>,
    members: usize,
    bytes: u64,
}

impl<'a> Placer<'a> {
    fn new(package: &'a Package, out: &'a Path) -> Placer<'a> {
        Placer {
            package,
            out,
            matched: vec![0; package.files.len()],
            placed: BTreeMap::new(),
            members: 0,
            bytes: 0,
        }
    }

    /// Counts one member and checks its path; the served names it lands on.
    fn member(&mut self, raw_name: &str) -> Result<Vec<String>, PackageError> {
        self.members += 1;
        if self.members > MAX_MEMBERS {
            return Err(PackageError::TooManyMembers(MAX_MEMBERS));
        }
        let name = member_path(raw_name).map_err(|why| PackageError::UnsafeMember {
            member: raw_name.to_owned(),
            why,
        })?;
        let mut dests = Vec::new();
        for (i, map) in self.package.files.iter().enumerate() {
            if let Some(dest) = map.place(&name) {
                self.matched[i] += 1;
                if safe_relative(&dest).is_none() {
                    return Err(PackageError::UnsafeMember {
                        member: raw_name.to_owned(),
                        why: "its name is not servable (hidden or unusual)",
                    });
                }
                if self.placed.insert(dest.clone(), ()).is_some() {
                    return Err(PackageError::Duplicate(dest));
                }
                dests.push(dest);
            }
        }
        Ok(dests)
    }

    /// Copies `reader` to the first destination (bounded), then copies that file to the
    /// others.
    fn write(&mut self, reader: &mut dyn Read, dests: &[String]) -> Result<(), PackageError> {
        let Some(first) = dests.first() else {
            return Ok(());
        };
        let limit = (MAX_UNPACKED_BYTES - self.bytes).min(crate::files::MAX_STATIC_BYTES);
        let path = self.out.join(first);
        let written = self.write_file(&path, &mut reader.take(limit + 1))?;
        if written > limit {
            return Err(PackageError::TooLarge(limit));
        }
        self.bytes += written;
        for other in &dests[1..] {
            let to = self.out.join(other);
            if self.bytes + written > MAX_UNPACKED_BYTES {
                return Err(PackageError::TooLarge(MAX_UNPACKED_BYTES));
            }
            self.write_file(&to, &mut File::open(&path).map_err(io_err(&path))?)?;
            self.bytes += written;
        }
        Ok(())
    }

    fn write_file(&self, path: &Path, reader: &mut dyn Read) -> Result<u64, PackageError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io_err(path))?;
        let written = std::io::copy(reader, &mut file).map_err(|e| {
            // A damaged member (bad CRC, truncated stream) surfaces here as a read error.
            PackageError::Archive {
                format: match self.package.format {
                    PackageFormat::Zip => "zip",
                    PackageFormat::Tar => "tar",
                    PackageFormat::Raw => "raw",
                },
                reason: format!("reading into {}: {e}", path.display()),
            }
        })?;
        file.sync_all().map_err(io_err(path))?;
        Ok(written)
    }

    /// Every mapping matched as it must; the served names.
    fn finish(self) -> Result<Vec<String>, PackageError> {
        for (map, count) in self.package.files.iter().zip(&self.matched) {
            let from = map
                .from
                .as_ref()
                .map(|(f, _)| f.clone())
                .unwrap_or_default();
            if *count == 0 {
                return Err(PackageError::NoMatch(from));
            }
            if *count > 1 && !map.is_dir() {
                return Err(PackageError::SeveralMatches {
                    from,
                    to: map.to.clone(),
                });
            }
        }
        Ok(self.placed.into_keys().collect())
    }
}

/// Unpacks `download` into `out` as the package says; the served names.
fn unpack(package: &Package, download: &Path, out: &Path) -> Result<Vec<String>, PackageError> {
    let mut placer = Placer::new(package, out);
    let mut file = File::open(download).map_err(io_err(download))?;
    match package.format {
        PackageFormat::Raw => {
            let to = package.files[0].to.clone();
            placer.placed.insert(to.clone(), ());
            placer.write(&mut file, std::slice::from_ref(&to))?;
            Ok(vec![to])
        }
        PackageFormat::Zip => {
            let archive_err = |e: zip::result::ZipError| PackageError::Archive {
                format: "zip",
                reason: e.to_string(),
            };
            let mut archive = zip::ZipArchive::new(file).map_err(archive_err)?;
            if archive.len() > MAX_MEMBERS {
                return Err(PackageError::TooManyMembers(MAX_MEMBERS));
            }
            for i in 0..archive.len() {
                let mut member = archive.by_index(i).map_err(archive_err)?;
                let name = String::from_utf8_lossy(member.name_raw()).into_owned();
                // Unix file type bits, when the archiver stored them.
                let kind = member.unix_mode().map(|m| m & 0o170000);
                if member.is_symlink() || kind == Some(0o120000) {
                    return Err(PackageError::UnsafeMember {
                        member: name,
                        why: "symbolic links are not unpacked",
                    });
                }
                if !matches!(kind, None | Some(0) | Some(0o100000) | Some(0o040000)) {
                    return Err(PackageError::UnsafeMember {
                        member: name,
                        why: "only regular files and directories are unpacked",
                    });
                }
                if member.is_dir() {
                    member_path(&name).map_err(|why| PackageError::UnsafeMember {
                        member: name.clone(),
                        why,
                    })?;
                    placer.members += 1;
                    continue;
                }
                let dests = placer.member(&name)?;
                placer.write(&mut member, &dests)?;
            }
            placer.finish()
        }
        PackageFormat::Tar => {
            let mut magic = [0u8; 2];
            let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
            let file = File::open(download).map_err(io_err(download))?;
            let reader: Box<dyn Read> = if gzip {
                Box::new(flate2::read::GzDecoder::new(file))
            } else {
                Box::new(file)
            };
            let archive_err = |e: std::io::Error| PackageError::Archive {
                format: "tar",
                reason: e.to_string(),
            };
            let mut archive = tar::Archive::new(reader);
            for entry in archive.entries().map_err(archive_err)? {
                let mut entry = entry.map_err(archive_err)?;
                let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
                use tar::EntryType as T;
                match entry.header().entry_type() {
                    T::Regular | T::Continuous => {
                        let dests = placer.member(&name)?;
                        placer.write(&mut entry, &dests)?;
                    }
                    T::Directory => {
                        member_path(&name).map_err(|why| PackageError::UnsafeMember {
                            member: name.clone(),
                            why,
                        })?;
                        placer.members += 1;
                    }
                    T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => {}
                    T::Symlink | T::Link => {
                        return Err(PackageError::UnsafeMember {
                            member: name,
                            why: "symbolic and hard links are not unpacked",
                        })
                    }
                    _ => {
                        return Err(PackageError::UnsafeMember {
                            member: name,
                            why: "only regular files and directories are unpacked",
                        })
                    }
                }
            }
            placer.finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interrupted_install_leaves_the_previous_version_and_no_leftovers() {
        let root = tempfile::tempdir().unwrap();
        let body = b"firmware";
        let spec: PackageSpec = toml::from_str(&format!(
            "id = \"fw\"\nversion = \"1\"\nurl = \"http://127.0.0.1:9/fw\"\nsha256 = \"{}\"\n\
             size = 8\nformat = \"raw\"\nfiles = [{{ to = \"fw.rom\" }}]\n",
            hex(&<sha2::Sha256 as sha2::Digest>::digest(body))
        ))
        .unwrap();
        let package = validate(&spec).unwrap();
        let download = root.path().join("download");
        fs::write(&download, body).unwrap();
        let store = PackageStore::open(root.path().join("packages")).unwrap();
        let record = store.install("yealink", &package, &download).unwrap();
        assert!(store.has_file("yealink", "fw.rom"));
        // What a killed install leaves: staging work, an unrecorded version, a record draft.
        let package_dir = root.path().join("packages/yealink/fw");
        fs::create_dir_all(root.path().join("packages/.staging/unpack-x/files")).unwrap();
        fs::create_dir_all(package_dir.join("2-abc")).unwrap();
        fs::write(package_dir.join("installed.json.tmp"), b"{").unwrap();
        drop(store);
        let store = PackageStore::open(root.path().join("packages")).unwrap();
        assert_eq!(store.get("yealink", "fw"), Some(record.clone()));
        let (dir, file) = store.find("yealink", "fw.rom").unwrap();
        assert_eq!(fs::read(file).unwrap(), body);
        assert!(dir.ends_with(&record.dir));
        assert!(!package_dir.join("2-abc").exists());
        assert!(!package_dir.join("installed.json.tmp").exists());
        assert_eq!(fs::read_dir(store.staging()).unwrap().count(), 0);
        assert!(store.find("yealink", "../fw/installed.json").is_none());
    }

    #[test]
    fn member_paths() {
        assert_eq!(member_path("./fw/a.rom"), Ok("fw/a.rom".into()));
        assert_eq!(member_path("fw/"), Ok("fw".into()));
        for bad in ["/etc/passwd", "../x", "a/../../b", "a\\b", "a//b", "a/./b"] {
            assert!(member_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placements() {
        let dir = FileMap {
            from: Some(("fw/*.rom".into(), glob("fw/*.rom").unwrap())),
            to: "firmware/".into(),
        };
        assert_eq!(
            dir.place("fw/T54W.rom").as_deref(),
            Some("firmware/T54W.rom")
        );
        assert_eq!(dir.place("fw/sub/T54W.rom"), None);
        assert_eq!(dir.place("T54W.rom"), None);
        let top = FileMap {
            from: Some(("*.rom".into(), glob("*.rom").unwrap())),
            to: "/".into(),
        };
        assert_eq!(top.place("a.rom").as_deref(), Some("a.rom"));
        let one = FileMap {
            from: Some(("x/fw.bin".into(), glob("x/fw.bin").unwrap())),
            to: "T54W-96.rom".into(),
        };
        assert_eq!(one.place("x/fw.bin").as_deref(), Some("T54W-96.rom"));
        assert!(glob("../x").is_err());
        assert!(glob("/x").is_err());
    }
}
