//! The plugin repository's format (docs/plugin-repository.md): a JSON index of plugin
//! archives, signed with Ed25519 in minisign's format, and the archives themselves (tar.gz of
//! one plugin directory). Building them (`provisiond repo`), checking them, unpacking them
//! safely; fetching and installing is `crate::manage::plugins`.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write as _};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::fetch::{hex, parse_sha256};

/// Name of the index in a repository.
pub const INDEX_FILE: &str = "index.json";
/// Name of the index's signature in a repository.
pub const SIGNATURE_FILE: &str = "index.json.minisig";
/// The index format this version reads and writes.
pub const FORMAT: u32 = 1;
/// Name of the link to the version in use, in an installed plugin's directory.
pub const CURRENT: &str = "current";
/// Marker file of a plugin directory made by the repository code (not by an admin).
pub const MARKER: &str = ".repository";

/// The repository's index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// [`FORMAT`].
    pub format: u32,
    /// The plugins, one entry per name.
    pub plugins: Vec<Entry>,
}

/// One plugin of the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Plugin name (its directory's).
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// One line.
    #[serde(default)]
    pub description: String,
    /// What it provisions.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// File name of the archive, beside the index.
    pub archive: String,
    /// Archive size in bytes.
    pub size: u64,
    /// SHA-256 of the archive, lower-case hex.
    pub sha256: String,
}

/// A vendor, model and firmware version a plugin provisions (`*`: any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    /// Vendor.
    pub vendor: String,
    /// Model.
    pub model: String,
    /// Firmware version.
    pub version: String,
}

/// Why a repository file, key or archive is refused.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The index is not a valid index.
    #[error("index: {0}")]
    Index(String),
    /// The signature does not verify with a trusted key, or cannot be read.
    #[error("signature: {0}")]
    Signature(String),
    /// A key file cannot be read or made.
    #[error("key {path}: {reason}")]
    Key {
        /// The key file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An archive is refused (unsafe path, link, too large, not a plugin…).
    #[error("archive {archive}: {reason}")]
    Archive {
        /// The archive's name.
        archive: String,
        /// Why.
        reason: String,
    },
    /// A plugin directory cannot be packed.
    #[error("plugin {dir}: {reason}")]
    Plugin {
        /// The directory.
        dir: String,
        /// Why.
        reason: String,
    },
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Result alias of this module.
pub type Result<T> = std::result::Result<T, RepoError>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A plugin name as plugin.toml allows it: 1–64 of `a-z 0-9 - _`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// A version usable as a directory name: 1–64 of `A-Za-z0-9 . - _ +`, not starting with `.`.
pub fn valid_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= 64
        && !version.starts_with('.')
        && version
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".-_+".contains(&c))
}

impl Index {
    /// Parses and checks an index: its format, unique valid names, versions usable as
    /// directory names, archive names that are plain file names, hashes in hex.
    pub fn parse(bytes: &[u8]) -> Result<Index> {
        let index: Index =
            serde_json::from_slice(bytes).map_err(|e| RepoError::Index(e.to_string()))?;
        if index.format != FORMAT {
            return Err(RepoError::Index(format!(
                "format {} (this provisiond reads format {FORMAT})",
                index.format
            )));
        }
        let mut names = BTreeSet::new();
        for (i, e) in index.plugins.iter().enumerate() {
            let bad = |what: &str| RepoError::Index(format!("plugins[{i}] ({}): {what}", e.name));
            if !valid_name(&e.name) {
                return Err(bad("name: use 1 to 64 of a-z, 0-9, - and _"));
            }
            if !names.insert(e.name.as_str()) {
                return Err(bad("name listed twice"));
            }
            if !valid_version(&e.version) {
                return Err(bad("version: use 1 to 64 of A-Z, a-z, 0-9, ., -, _ and +"));
            }
            let plain = !e.archive.is_empty()
                && !e.archive.starts_with('.')
                && e.archive.len() <= 255
                && e.archive
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b".-_+".contains(&c));
            if !plain {
                return Err(bad("archive: a plain file name beside the index"));
            }
            if parse_sha256(&e.sha256).is_none() {
                return Err(bad("sha256: 64 hex digits"));
            }
        }
        Ok(index)
    }

    /// The entry of plugin `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.plugins.iter().find(|e| e.name == name)
    }
}

/// A trusted public key and the file it came from.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// The key file, for logs.
    pub file: String,
    /// The key.
    pub key: minisign_verify::PublicKey,
}

/// The public keys (`*.pub`, minisign format) in `dir`, and why other `*.pub` files were
/// skipped. A missing directory has no key.
pub fn trusted_keys(dir: &Path) -> (Vec<TrustedKey>, Vec<String>) {
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return (keys, problems);
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .collect();
    paths.sort();
    for path in paths {
        let read = fs::read_to_string(&path).map_err(|e| e.to_string());
        match read.and_then(|text| {
            minisign_verify::PublicKey::decode(text.trim()).map_err(|e| e.to_string())
        }) {
            Ok(key) => keys.push(TrustedKey {
                file: path.display().to_string(),
                key,
            }),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    (keys, problems)
}

/// The key id that a minisign signature names, as minisign prints it (hex, upper case).
fn key_id_of(signature: &str) -> Option<String> {
    use base64::Engine as _;
    let line = signature.lines().nth(1)?;
    let bin = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .ok()?;
    let id = bin.get(2..10)?;
    Some(id.iter().rev().map(|b| format!("{b:02X}")).collect())
}

/// Checks that `signature` (a minisign signature file's text) signs `data` with one of
/// `keys`; returns the file of the key that did.
pub fn verify(data: &[u8], signature: &str, keys: &[TrustedKey]) -> Result<String> {
    let sig = minisign_verify::Signature::decode(signature)
        .map_err(|e| RepoError::Signature(format!("unreadable: {e}")))?;
    let id = key_id_of(signature).unwrap_or_else(|| "?".into());
    let mut known = false;
    for trusted in keys {
        match trusted.key.verify(data, &sig, false) {
            Ok(()) => return Ok(trusted.file.clone()),
            Err(minisign_verify::Error::UnexpectedKeyId) => {}
            Err(_) => known = true,
        }
    }
    if known {
        Err(RepoError::Signature(format!(
            "does not verify with the trusted key {id}: the index was altered or signed again"
        )))
    } else {
        Err(RepoError::Signature(format!(
            "signed by key {id}, which is not among the trusted keys"
        )))
    }
}

/// `provisiond repo keygen`: a new key pair, unencrypted, as `<prefix>.key` (mode 0600) and
/// `<prefix>.pub`; refuses to overwrite.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let secret_path = prefix.with_extension("key");
    let public_path = prefix.with_extension("pub");
    let fail = |path: &Path, reason: String| RepoError::Key {
        path: path.display().to_string(),
        reason,
    };
    let pair = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| fail(&secret_path, e.to_string()))?;
    let secret = pair
        .sk
        .to_box(Some("provisiond plugin repository secret key"))
        .map_err(|e| fail(&secret_path, e.to_string()))?
        .into_string();
    let public = pair
        .pk
        .to_box()
        .map_err(|e| fail(&public_path, e.to_string()))?
        .into_string();
    for (path, text, mode) in [(&secret_path, secret, 0o600), (&public_path, public, 0o644)] {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(io_err(path))?;
        file.write_all(text.as_bytes()).map_err(io_err(path))?;
    }
    Ok((secret_path, public_path))
}

/// A minisign signature of `data` with the (unencrypted) secret key in `key_file`.
pub fn sign(data: &[u8], key_file: &Path) -> Result<String> {
    let fail = |reason: String| RepoError::Key {
        path: key_file.display().to_string(),
        reason,
    };
    let text = fs::read_to_string(key_file).map_err(io_err(key_file))?;
    let secret = minisign::SecretKeyBox::from_string(&text)
        .and_then(|b| b.into_unencrypted_secret_key())
        .map_err(|e| {
            fail(format!(
                "{e} (an unencrypted minisign secret key is needed)"
            ))
        })?;
    let signature = minisign::sign(
        None,
        &secret,
        data,
        Some(&format!("provisiond plugin index, {} bytes", data.len())),
        Some("signature from a provisiond plugin repository key"),
    )
    .map_err(|e| fail(e.to_string()))?;
    Ok(signature.into_string())
}

/// Bounds on what an archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of file content in all.
    pub max_bytes: u64,
    /// Entries (files and directories).
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 << 20,
            max_entries: 10_000,
        }
    }
}

/// The files under `dir` (relative, sorted), directories first of their contents; refuses
/// links and special files, which an archive must not carry.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, bool)>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err(&path))?;
        let relative = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        if kind.is_dir() {
            out.push((relative, true));
            walk(root, &path, out)?;
        } else if kind.is_file() {
            out.push((relative, false));
        } else {
            return Err(RepoError::Plugin {
                dir: root.display().to_string(),
                reason: format!("{}: only files and directories are packed", path.display()),
            });
        }
    }
    Ok(())
}

/// The index entry of a loaded plugin, for an archive of `size` bytes hashed `sha256`.
fn entry_of(plugin: &super::Plugin, archive: String, size: u64, sha256: &[u8; 32]) -> Entry {
    let models = if plugin.models.is_empty() {
        vec!["*".to_owned()]
    } else {
        plugin.models.clone()
    };
    Entry {
        name: plugin.name.clone(),
        version: plugin.version.clone(),
        description: plugin.description.clone(),
        capabilities: models
            .into_iter()
            .map(|model| Capability {
                vendor: plugin.vendor.clone(),
                model,
                version: "*".into(),
            })
            .collect(),
        archive,
        size,
        sha256: hex(sha256),
    }
}

/// `provisiond repo pack`: checks that `plugin_dir` loads, then writes
/// `<out>/<name>-<version>.tar.gz` (entries under `<name>/`, sorted, times and owners zeroed,
/// so that the same directory gives the same archive) and returns its index entry.
pub fn pack(plugin_dir: &Path, out: &Path) -> Result<Entry> {
    let plugin = super::load_dir(plugin_dir).map_err(|e| RepoError::Plugin {
        dir: plugin_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    if !valid_version(&plugin.version) {
        return Err(RepoError::Plugin {
            dir: plugin_dir.display().to_string(),
            reason: format!(
                "version {:?}: use 1 to 64 of A-Z, a-z, 0-9, ., -, _ and +",
                plugin.version
            ),
        });
    }
    let mut files = Vec::new();
    walk(plugin_dir, plugin_dir, &mut files)?;
    let archive_name = format!("{}-{}.tar.gz", plugin.name, plugin.version);
    let archive_path = out.join(&archive_name);
    let mut temp = tempfile::Builder::new()
        .prefix(".pack-")
        .tempfile_in(out)
        .map_err(io_err(out))?;
    {
        let gz = flate2::write::GzEncoder::new(temp.as_file_mut(), flate2::Compression::best());
        let mut tar = tar::Builder::new(gz);
        let root = Path::new(&plugin.name);
        for (relative, is_dir) in &files {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            let name = root.join(relative);
            if *is_dir {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                tar.append_data(&mut header, &name, std::io::empty())
                    .map_err(io_err(&name))?;
            } else {
                let path = plugin_dir.join(relative);
                let body = fs::read(&path).map_err(io_err(&path))?;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(body.len() as u64);
                tar.append_data(&mut header, &name, body.as_slice())
                    .map_err(io_err(&name))?;
            }
        }
        let gz = tar.into_inner().map_err(io_err(&archive_path))?;
        gz.finish().map_err(io_err(&archive_path))?;
    }
    let bytes = fs::read(temp.path()).map_err(io_err(temp.path()))?;
    let sha256: [u8; 32] = Sha256::digest(&bytes).into();
    temp.persist(&archive_path)
        .map_err(|e| io_err(&archive_path)(e.error))?;
    Ok(entry_of(&plugin, archive_name, bytes.len() as u64, &sha256))
}

/// `provisiond repo index`: the index of the archives (`*.tar.gz`) in `dir`, each unpacked
/// and loaded to check it; writes `index.json`, and with `key`, `index.json.minisig`.
pub fn write_index(dir: &Path, key: Option<&Path>) -> Result<Index> {
    let mut archives: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".tar.gz") && !n.starts_with('.'))
        })
        .collect();
    archives.sort();
    let mut plugins: Vec<Entry> = Vec::new();
    for path in archives {
        let archive = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let scratch = tempfile::tempdir_in(dir).map_err(io_err(dir))?;
        let name = unpack_any(&bytes, scratch.path(), &archive, Limits::default())?;
        let plugin =
            super::load_dir(&scratch.path().join(&name)).map_err(|e| RepoError::Archive {
                archive: archive.clone(),
                reason: e.to_string(),
            })?;
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        let entry = entry_of(&plugin, archive.clone(), bytes.len() as u64, &sha256);
        // Two archives of one plugin: the newest version is listed.
        match plugins.iter_mut().find(|e| e.name == entry.name) {
            Some(listed) if super::version_newer(&entry.version, &listed.version) => {
                *listed = entry
            }
            Some(_) => {}
            None => plugins.push(entry),
        }
    }
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    let index = Index {
        format: FORMAT,
        plugins,
    };
    let mut text =
        serde_json::to_vec_pretty(&index).map_err(|e| RepoError::Index(e.to_string()))?;
    text.push(b'\n');
    let index_path = dir.join(INDEX_FILE);
    let signature = key.map(|key| sign(&text, key)).transpose()?;
    fs::write(&index_path, &text).map_err(io_err(&index_path))?;
    let sig_path = dir.join(SIGNATURE_FILE);
    match signature {
        Some(sig) => fs::write(&sig_path, sig).map_err(io_err(&sig_path))?,
        None => match fs::remove_file(&sig_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&sig_path)(e)),
            _ => {}
        },
    }
    Ok(index)
}

/// `provisiond repo verify`: checks `dir` as the daemon would use it with the public key
/// `key`: the signature of `index.json`, the index itself, and each archive's size, hash and
/// content (unpacked and loaded as its plugin and version).
pub fn verify_dir(dir: &Path, key: &Path) -> Result<Index> {
    let index_path = dir.join(INDEX_FILE);
    let data = fs::read(&index_path).map_err(io_err(&index_path))?;
    let sig_path = dir.join(SIGNATURE_FILE);
    let signature = fs::read_to_string(&sig_path).map_err(io_err(&sig_path))?;
    let text = fs::read_to_string(key).map_err(io_err(key))?;
    let public = minisign_verify::PublicKey::decode(text.trim()).map_err(|e| RepoError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let trusted = [TrustedKey {
        file: key.display().to_string(),
        key: public,
    }];
    verify(&data, &signature, &trusted)?;
    let index = Index::parse(&data)?;
    for entry in &index.plugins {
        let path = dir.join(&entry.archive);
        let bytes = fs::read(&path).map_err(io_err(&path))?;
        let refuse = |reason: String| RepoError::Archive {
            archive: entry.archive.clone(),
            reason,
        };
        let sha256: [u8; 32] = Sha256::digest(&bytes).into();
        if bytes.len() as u64 != entry.size || hex(&sha256) != entry.sha256.to_ascii_lowercase() {
            return Err(refuse("size or SHA-256 differs from the index".into()));
        }
        let scratch = tempfile::tempdir_in(dir).map_err(io_err(dir))?;
        unpack(
            &bytes,
            scratch.path(),
            &entry.archive,
            &entry.name,
            Limits::default(),
        )?;
        let plugin = super::load_dir(&scratch.path().join(&entry.name))
            .map_err(|e| refuse(e.to_string()))?;
        if plugin.version != entry.version {
            return Err(refuse(format!(
                "holds version {}, the index says {}",
                plugin.version, entry.version
            )));
        }
    }
    Ok(index)
}

/// Unpacks a plugin archive into `dest` (an empty directory): every entry under one top
/// directory, which must be `name`. See [`unpack_any`] for the checks.
pub fn unpack(bytes: &[u8], dest: &Path, archive: &str, name: &str, limits: Limits) -> Result<()> {
    let top = unpack_any(bytes, dest, archive, limits)?;
    if top != name {
        return Err(RepoError::Archive {
            archive: archive.into(),
            reason: format!("holds plugin {top:?}, not {name:?}"),
        });
    }
    Ok(())
}

/// Unpacks a tar.gz into `dest`, refusing absolute paths, `..`, links and special files,
/// entries outside one top directory, more than `limits` of content or entries; returns the
/// top directory's name.
fn unpack_any(bytes: &[u8], dest: &Path, archive: &str, limits: Limits) -> Result<String> {
    let refuse = |reason: String| RepoError::Archive {
        archive: archive.into(),
        reason,
    };
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let entries = tar
        .entries()
        .map_err(|e| refuse(format!("not a tar.gz: {e}")))?;
    let mut top: Option<String> = None;
    let mut total: u64 = 0;
    for (count, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| refuse(format!("damaged: {e}")))?;
        if count >= limits.max_entries {
            return Err(refuse(format!("more than {} entries", limits.max_entries)));
        }
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let text = std::str::from_utf8(&raw)
            .map_err(|_| refuse(format!("{shown}: the path is not UTF-8")))?;
        let path = Path::new(text);
        let mut parts = Vec::new();
        for component in path.components() {
            match component {
                Component::Normal(part) => parts.push(part.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => {
                    return Err(refuse(format!(
                        "{shown}: absolute paths and .. are refused"
                    )))
                }
            }
        }
        let Some(first) = parts.first() else {
            continue;
        };
        match &top {
            None => top = Some(first.clone()),
            Some(t) if t == first => {}
            Some(t) => {
                return Err(refuse(format!(
                    "{shown}: outside the plugin's directory {t}/"
                )))
            }
        }
        if !valid_name(first) {
            return Err(refuse(format!("{shown}: {first:?} is not a plugin name")));
        }
        let target = parts
            .iter()
            .fold(dest.to_path_buf(), |p, part| p.join(part));
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                fs::create_dir_all(&target).map_err(io_err(&target))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().unwrap_or(u64::MAX);
                total = total.saturating_add(size);
                if total > limits.max_bytes {
                    return Err(refuse(format!(
                        "unpacks to more than {} bytes",
                        limits.max_bytes
                    )));
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&target)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::AlreadyExists => {
                            refuse(format!("{shown}: listed twice"))
                        }
                        _ => io_err(&target)(e),
                    })?;
                let mut body = Vec::new();
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut body)
                    .map_err(|e| refuse(format!("{shown}: damaged: {e}")))?;
                if body.len() as u64 != size {
                    return Err(refuse(format!("{shown}: truncated")));
                }
                file.write_all(&body).map_err(io_err(&target))?;
            }
            // Metadata of the tar format itself, already applied by the reader.
            tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(refuse(format!(
                    "{shown}: {other:?} entries (links, devices, fifos) are refused"
                )))
            }
        }
    }
    top.ok_or_else(|| refuse("empty".into()))
}

/// The real directory of the version that `<plugin_dir>/current` names, when it names one.
pub fn current_version_dir(plugin_dir: &Path) -> Option<PathBuf> {
    let link = plugin_dir.join(CURRENT);
    fs::symlink_metadata(&link).ok()?;
    let real = fs::canonicalize(&link).ok()?;
    real.is_dir().then_some(real)
}

/// The version that `<plugin_dir>/current` names.
pub fn current_version(plugin_dir: &Path) -> Option<String> {
    let target = fs::read_link(plugin_dir.join(CURRENT)).ok()?;
    let version = target.file_name()?.to_str()?.to_owned();
    valid_version(&version).then_some(version)
}

/// True when `dir` was made by the repository code (it holds [`MARKER`]).
pub fn is_repository_dir(dir: &Path) -> bool {
    dir.join(MARKER).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_checks_names_versions_archives_and_hashes() {
        let good = r#"{"format":1,"plugins":[{"name":"yealink","version":"1.2.0",
            "archive":"yealink-1.2.0.tar.gz","size":10,
            "sha256":"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}]}"#;
        let index = Index::parse(good.as_bytes()).unwrap();
        assert_eq!(index.get("yealink").unwrap().size, 10);
        for (from, to, why) in [
            ("\"format\":1", "\"format\":2", "format 2"),
            ("yealink-1.2.0.tar.gz", "../x.tar.gz", "archive"),
            ("\"1.2.0\"", "\"../1\"", "version"),
            ("\"name\":\"yealink\"", "\"name\":\"Yea\"", "name"),
            ("ba78", "zz78", "sha256"),
        ] {
            let err = Index::parse(good.replace(from, to).as_bytes()).unwrap_err();
            assert!(err.to_string().contains(why), "{err}");
        }
    }

    #[test]
    fn signatures_verify_with_their_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = keygen(&dir.path().join("repo")).unwrap();
        let sig = sign(b"data", &secret).unwrap();
        let keys_dir = dir.path().join("keys");
        fs::create_dir(&keys_dir).unwrap();
        let (none, _) = trusted_keys(&keys_dir);
        assert!(verify(b"data", &sig, &none)
            .unwrap_err()
            .to_string()
            .contains("not among the trusted keys"));
        fs::copy(&public, keys_dir.join("repo.pub")).unwrap();
        let (keys, problems) = trusted_keys(&keys_dir);
        assert!(problems.is_empty());
        assert!(verify(b"data", &sig, &keys).is_ok());
        assert!(verify(b"dat4", &sig, &keys)
            .unwrap_err()
            .to_string()
            .contains("does not verify"));
        assert!(keygen(&dir.path().join("repo")).is_err(), "no overwrite");
    }

    #[test]
    fn an_installed_plugin_wins_only_when_newer() {
        use crate::plugins::{Origin, PluginSet};
        let builtin = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins");
        let source = builtin.join("snom");
        let version = crate::plugins::load_dir(&source).unwrap().version;
        let packed = tempfile::tempdir().unwrap();
        let entry = pack(&source, packed.path()).unwrap();
        let bytes = fs::read(packed.path().join(&entry.archive)).unwrap();
        for (installed, expected) in [
            (version.clone(), Origin::Builtin),
            (format!("{version}.1"), Origin::Installed),
        ] {
            let admin = tempfile::tempdir().unwrap();
            let version_dir = admin.path().join("snom").join(&installed);
            fs::create_dir_all(&version_dir).unwrap();
            unpack(&bytes, &version_dir, "a", "snom", Limits::default()).unwrap();
            let manifest = version_dir.join("snom/plugin.toml");
            let text = fs::read_to_string(&manifest).unwrap().replacen(
                &format!("version = \"{version}\""),
                &format!("version = \"{installed}\""),
                1,
            );
            fs::write(&manifest, text).unwrap();
            std::os::unix::fs::symlink(&installed, admin.path().join("snom/current")).unwrap();
            let set = PluginSet::load(&[
                (builtin.clone(), Origin::Builtin),
                (admin.path().to_path_buf(), Origin::Admin),
            ]);
            assert!(set.errors.is_empty(), "{:?}", set.errors);
            let snom = set.get("snom").unwrap();
            assert_eq!(snom.origin, expected, "installed {installed}");
            if expected == Origin::Installed {
                assert_eq!(snom.version, installed);
                assert_eq!(snom.replaces, Some(Origin::Builtin));
                // The real directory of the version, not the link: a later switch does not
                // move the files under this loaded plugin.
                assert_eq!(
                    snom.dir.as_deref(),
                    Some(version_dir.canonicalize().unwrap().join("snom").as_path())
                );
            }
        }
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(crate::plugins::version_newer("1.10", "1.9"));
        assert!(crate::plugins::version_newer("2.0.1", "2.0"));
        assert!(!crate::plugins::version_newer("1.0", "1.0"));
        assert!(!crate::plugins::version_newer("0.9", "1.0"));
    }

    /// An archive entry of the tests: path, type, content.
    type TestEntry<'a> = (&'a str, tar::EntryType, &'a [u8]);

    fn tar_gz(entries: &[TestEntry<'_>]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (path, kind, body) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            if *kind == tar::EntryType::Symlink {
                header.set_link_name("/etc/passwd").unwrap();
            }
            // Written by hand: `append_data` itself refuses `..`.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            tar.append(&header, *body).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn unsafe_archives_are_refused() {
        use tar::EntryType::{Regular, Symlink};
        let cases: [(&[TestEntry<'_>], &str); 5] = [
            (&[("p/../../evil", Regular, b"x")], ".. are refused"),
            (&[("/etc/evil", Regular, b"x")], ".. are refused"),
            (&[("p/link", Symlink, b"")], "refused"),
            (&[("p/a", Regular, b"x"), ("q/b", Regular, b"x")], "outside"),
            (&[("p/big", Regular, &[0u8; 2048])], "more than 1024 bytes"),
        ];
        for (entries, why) in cases {
            let dir = tempfile::tempdir().unwrap();
            let limits = Limits {
                max_bytes: 1024,
                max_entries: 10,
            };
            let err = unpack(&tar_gz(entries), dir.path(), "a.tar.gz", "p", limits).unwrap_err();
            assert!(err.to_string().contains(why), "{entries:?}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let ok = tar_gz(&[("p/x/y", Regular, b"hello")]);
        unpack(&ok, dir.path(), "a.tar.gz", "p", Limits::default()).unwrap();
        assert_eq!(fs::read(dir.path().join("p/x/y")).unwrap(), b"hello");
    }
}
