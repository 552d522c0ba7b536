//! Plugins installed from a repository (docs/plugin-repository.md): the index fetched from
//! `plugin_server`, what it offers, what is installed, install, upgrade and removal.
//!
//! On disk, under `<data_dir>/plugins/<name>/`: one directory per version
//! (`<version>/<name>/plugin.toml`…), `current`, a symbolic link to the version in use, and
//! a marker file. An install downloads and unpacks into `.tmp-*` beside them, moves the
//! version into place and only then replaces `current` (a new link renamed over the old one):
//! until that rename nothing that the loader reads has changed, so a failure (bad hash, bad
//! archive, full disk, killed process) leaves the previous state, and leftovers are removed at
//! the next start. The plugin set is then loaded again and swapped: requests in flight keep
//! the set (and the version directory) they started with.
//!
//! One repository operation runs at a time; the others wait for it.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::oip::{OipHandle, Oips};
use super::{ManageError, Result};
use crate::config;
use crate::files::FileService;
use crate::plugins::fetch::{self, Expected, Fetcher};
use crate::plugins::repo::{self, Entry, Index, Limits};
use crate::plugins::{Origin, PluginSet};
use crate::store::Store;

/// Largest index or signature downloaded.
const MAX_INDEX_BYTES: u64 = 4 << 20;
/// Name of the cached index (with where it came from and how it was checked).
const CACHE_FILE: &str = "index.json";
/// Prefix of the scratch directories of installs and removals.
const TMP_PREFIX: &str = ".tmp-";

/// The index as last fetched and verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cached {
    /// The plugin server it came from, with a trailing slash.
    server: String,
    /// The trusted key that verified it; `None` when accepted unsigned (`allow_unsigned`).
    verified_by: Option<String>,
    /// The index.
    index: Index,
}

/// A plugin the repository offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installable {
    /// Its index entry.
    pub entry: Entry,
    /// The version installed from the repository, if any.
    pub installed: Option<String>,
}

/// A plugin in use, wherever it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Name.
    pub name: String,
    /// Version in use.
    pub version: String,
    /// One line.
    pub description: String,
    /// Vendor.
    pub vendor: String,
    /// Models.
    pub models: Vec<String>,
    /// Layer it comes from.
    pub origin: Origin,
    /// Version installed from the repository (it may be older than the one in use).
    pub repository_version: Option<String>,
}

/// The plugin repository of one daemon.
#[derive(Debug)]
pub struct Repository {
    plugins_dir: PathBuf,
    cache_dir: PathBuf,
    settings: config::Plugins,
    busy: tokio::sync::Mutex<()>,
}

/// Removes `path` (a directory or a file), whatever it is; for leftovers.
fn remove_any(path: &Path) {
    let removed = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(_) => return,
    };
    if let Err(e) = removed {
        tracing::warn!(path = %path.display(), "cannot remove: {e}");
    }
}

/// A scratch directory that is removed when dropped (an install that fails or is abandoned).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_any(&self.0);
    }
}

fn internal(what: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{what} {}: {e}", path.display())
}

impl Repository {
    /// The repository of a daemon whose data directory is `data_dir`; removes what an
    /// interrupted install or removal left.
    pub fn new(data_dir: &Path, settings: config::Plugins) -> Repository {
        let repository = Repository {
            plugins_dir: data_dir.join("plugins"),
            cache_dir: data_dir.join("repository"),
            settings,
            busy: tokio::sync::Mutex::new(()),
        };
        repository.clean_leftovers();
        repository
    }

    /// Where installed plugins live (the admin plugin root).
    pub fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    fn clean_leftovers(&self) {
        let Ok(entries) = fs::read_dir(&self.plugins_dir) else {
            return;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TMP_PREFIX) {
                tracing::info!(path = %path.display(), "removing what an interrupted plugin install left");
                remove_any(&path);
            } else if repo::is_repository_dir(&path) {
                remove_any(&path.join(".current-new"));
                if repo::current_version(&path).is_none() {
                    tracing::info!(path = %path.display(), "removing a plugin install that never finished");
                    remove_any(&path);
                }
            }
        }
    }

    fn scratch(&self) -> std::result::Result<Scratch, String> {
        fs::create_dir_all(&self.plugins_dir)
            .map_err(|e| internal("cannot create", &self.plugins_dir, e))?;
        let path = self
            .plugins_dir
            .join(format!("{TMP_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        fs::create_dir(&path).map_err(|e| internal("cannot create", &path, e))?;
        Ok(Scratch(path))
    }

    fn fetcher(&self, store: &Store) -> std::result::Result<Fetcher, String> {
        let proxy = match store.param("http_proxy").map_err(|e| e.to_string())? {
            Some(serde_json::Value::String(p)) => {
                Some(Url::parse(&p).map_err(|e| format!("http_proxy {p:?}: {e}"))?)
            }
            _ => None,
        };
        Fetcher::new(
            proxy.as_ref(),
            Duration::from_secs(self.settings.download_timeout_secs),
        )
        .map_err(|e| e.to_string())
    }

    fn allows_unsigned(&self, server: &Url) -> bool {
        let with_slash = |u: &Url| {
            let mut s = u.to_string();
            if !s.ends_with('/') {
                s.push('/');
            }
            s
        };
        self.settings
            .allow_unsigned
            .iter()
            .any(|u| with_slash(u) == with_slash(server))
    }

    fn read_cache(&self) -> Option<Cached> {
        let path = self.cache_dir.join(CACHE_FILE);
        let bytes = fs::read(&path).ok()?;
        match serde_json::from_slice::<Cached>(&bytes) {
            Ok(cached) => {
                if cached.verified_by.is_none() {
                    tracing::warn!(
                        server = %cached.server,
                        "using a plugin index that is not signed by a trusted key (allow_unsigned)"
                    );
                }
                Some(cached)
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), "cached plugin index unreadable, ignored: {e}");
                None
            }
        }
    }

    /// `install/update`: fetches the index and its signature from `plugin_server` (through
    /// `http_proxy`), verifies it with the trusted keys and caches it.
    pub async fn update(&self, store: &Store, op: &OipHandle) -> std::result::Result<(), String> {
        let _one = self.busy.lock().await;
        op.progress(None, None);
        let server = match store.param("plugin_server").map_err(|e| e.to_string())? {
            Some(serde_json::Value::String(s)) => s,
            _ => {
                return Err("no plugin_server is configured (PUT /configure/plugin_server)".into())
            }
        };
        let mut base = Url::parse(&server).map_err(|e| format!("plugin_server {server:?}: {e}"))?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let join = |file: &str| base.join(file).map_err(|e| format!("{file}: {e}"));
        let fetcher = self.fetcher(store)?;
        let index_bytes = fetcher
            .bytes(&join(repo::INDEX_FILE)?, MAX_INDEX_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        let signature = match fetcher
            .bytes(&join(repo::SIGNATURE_FILE)?, MAX_INDEX_BYTES)
            .await
        {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(fetch::FetchError::Status { status: 404, .. }) => {
                Err(repo::RepoError::Signature("the index is not signed".into()))
            }
            Err(e) => return Err(e.to_string()),
        };
        let (keys, problems) = repo::trusted_keys(&self.settings.trusted_keys_dir);
        for problem in problems {
            tracing::warn!("trusted key skipped: {problem}");
        }
        let verified = signature.and_then(|sig| repo::verify(&index_bytes, &sig, &keys));
        let shown = fetch::shown(&base);
        let verified_by = match verified {
            Ok(key) => Some(key),
            Err(e) if self.allows_unsigned(&base) => {
                tracing::warn!(server = %shown, "plugin index accepted anyway (allow_unsigned): {e}");
                None
            }
            Err(e) => {
                return Err(format!(
                    "{shown}{}: {e} (trusted keys in {})",
                    repo::INDEX_FILE,
                    self.settings.trusted_keys_dir.display()
                ))
            }
        };
        let index = Index::parse(&index_bytes).map_err(|e| format!("{shown}: {e}"))?;
        let cached = Cached {
            server: base.to_string(),
            verified_by,
            index,
        };
        let cache_dir = self.cache_dir.clone();
        tokio::task::spawn_blocking(move || write_atomically(&cache_dir, CACHE_FILE, &cached))
            .await
            .map_err(|e| e.to_string())??;
        tracing::info!(server = %shown, "plugin index updated");
        Ok(())
    }

    /// `install/installable`: the plugins of the cached index (none before an update).
    pub fn installable(&self) -> Vec<Installable> {
        let Some(cached) = self.read_cache() else {
            return Vec::new();
        };
        cached
            .index
            .plugins
            .into_iter()
            .map(|entry| Installable {
                installed: repo::current_version(&self.plugins_dir.join(&entry.name)),
                entry,
            })
            .collect()
    }

    /// `install/installed`: every plugin in use, and the repository's versions.
    pub fn installed(&self, set: &PluginSet) -> Vec<Installed> {
        set.iter()
            .map(|p| Installed {
                name: p.name.clone(),
                version: p.version.clone(),
                description: p.description.clone(),
                vendor: p.vendor.clone(),
                models: p.models.clone(),
                origin: p.origin,
                repository_version: repo::current_version(&self.plugins_dir.join(&p.name)),
            })
            .collect()
    }

    /// Checks that `name` can be installed (`upgrade`: upgraded) before an operation starts;
    /// returns its index entry.
    pub fn check_install(&self, name: &str, upgrade: bool) -> Result<Entry> {
        let Some(cached) = self.read_cache() else {
            return Err(ManageError::field(
                "id",
                "no plugin index yet: update it first (POST install/update)",
            ));
        };
        let entry = cached.index.get(name).cloned().ok_or_else(|| {
            ManageError::field("id", format!("the repository has no plugin {name:?}"))
        })?;
        let installed = repo::current_version(&self.plugins_dir.join(name));
        match (upgrade, installed) {
            (false, Some(v)) => Err(ManageError::field(
                "id",
                format!("{name} {v} is already installed: upgrade it instead"),
            )),
            (true, None) => Err(ManageError::field(
                "id",
                format!("{name} is not installed from the repository: install it first"),
            )),
            _ if entry.size > self.settings.max_archive_bytes => Err(ManageError::field(
                "id",
                format!(
                    "{name}'s archive is {} bytes, more than [plugins] max_archive_bytes ({})",
                    entry.size, self.settings.max_archive_bytes
                ),
            )),
            _ => Ok(entry),
        }
    }

    /// `install/install` and `install/upgrade`: downloads `name`'s archive (progress in `op`,
    /// in bytes), checks its size and hash against the index, unpacks it, checks that it
    /// loads, switches `current` to it and swaps the plugin set.
    pub async fn install(
        &self,
        store: &Store,
        files: &FileService,
        roots: &[(PathBuf, Origin)],
        name: &str,
        upgrade: bool,
        op: &OipHandle,
    ) -> std::result::Result<(), String> {
        let _one = self.busy.lock().await;
        let entry = self
            .check_install(name, upgrade)
            .map_err(|e| e.to_string())?;
        let cached = self.read_cache().ok_or("the plugin index disappeared")?;
        let installed = repo::current_version(&self.plugins_dir.join(name));
        if installed.as_deref() == Some(entry.version.as_str()) {
            tracing::info!(plugin = name, version = %entry.version, "already at the repository's version");
            op.progress(Some(0), Some(0));
            return Ok(());
        }
        let url = Url::parse(&cached.server)
            .and_then(|base| base.join(&entry.archive))
            .map_err(|e| format!("{}: {e}", entry.archive))?;
        let sha256 = fetch::parse_sha256(&entry.sha256).ok_or("bad hash in the index")?;
        let scratch = self.scratch()?;
        let progress = |got: u64, _total: Option<u64>| op.progress(Some(got), Some(entry.size));
        let fetched = self
            .fetcher(store)?
            .to_file(
                &url,
                &scratch.0,
                self.settings.max_archive_bytes,
                Some(Expected {
                    size: entry.size,
                    sha256,
                }),
                &progress,
            )
            .await
            .map_err(|e| e.to_string())?;
        let plugins_dir = self.plugins_dir.clone();
        let limits = Limits {
            max_bytes: self.settings.max_unpacked_bytes,
            ..Limits::default()
        };
        let roots = roots.to_vec();
        let set = tokio::task::spawn_blocking(move || {
            let bytes = fs::read(fetched.file.path())
                .map_err(|e| internal("cannot read", fetched.file.path(), e))?;
            drop(fetched);
            place(&plugins_dir, &scratch, &entry, &bytes, limits)?;
            drop(scratch);
            Ok::<_, String>(PluginSet::with_embedded(&roots))
        })
        .await
        .map_err(|e| e.to_string())??;
        files.set_plugins(Arc::new(set));
        tracing::info!(
            plugin = name,
            "plugin installed from the repository; plugins reloaded"
        );
        Ok(())
    }

    /// `install/uninstall`: removes `name`'s repository install and swaps the plugin set (a
    /// built-in plugin of that name takes over). Refused while devices use the plugin, with
    /// their count, unless `force`.
    pub async fn uninstall(
        &self,
        store: &Store,
        files: &FileService,
        roots: &[(PathBuf, Origin)],
        name: &str,
        force: bool,
    ) -> Result<()> {
        let _one = self.busy.lock().await;
        let dir = self.plugins_dir.join(name);
        if !repo::valid_name(name) || repo::current_version(&dir).is_none() {
            return Err(ManageError::field(
                "id",
                format!("{name:?} is not installed from the repository"),
            ));
        }
        let users = device_counts(store)?.get(name).copied().unwrap_or(0);
        if users > 0 && !force {
            return Err(ManageError::field(
                "id",
                format!(
                    "{users} device(s) use plugin {name}: remove it with force to do it anyway"
                ),
            ));
        }
        let scratch = self.scratch().map_err(ManageError::Internal)?;
        let trash = scratch.0.join(name);
        fs::rename(&dir, &trash)
            .map_err(|e| ManageError::Internal(internal("cannot remove", &dir, e)))?;
        let roots = roots.to_vec();
        let set = tokio::task::spawn_blocking(move || PluginSet::with_embedded(&roots))
            .await
            .map_err(|e| ManageError::Internal(e.to_string()))?;
        files.set_plugins(Arc::new(set));
        tracing::info!(
            plugin = name,
            devices = users,
            "plugin removed; plugins reloaded"
        );
        // The removed files go once no request may still read them: the scratch directory
        // is dropped after the swap.
        drop(scratch);
        Ok(())
    }
}

/// Devices by plugin name, over every tenant (kept with the data: no device is read).
pub fn device_counts(store: &Store) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for (_, plugin, n) in store.plugin_counts()? {
        *counts.entry(plugin).or_default() += n;
    }
    Ok(counts)
}

/// Runs `work` in a task of its own as an operation in progress labelled `label`; the
/// operation ends in success or in failure with the work's error. Must run inside the async
/// runtime.
pub fn run_operation<F, Fut>(oips: &Oips, label: &'static str, work: F) -> OipHandle
where
    F: FnOnce(OipHandle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), String>> + Send + 'static,
{
    let op = oips.start(Some(label));
    let handle = op.clone();
    tokio::spawn(async move {
        match work(handle.clone()).await {
            Ok(()) => handle.succeed(),
            Err(e) => {
                tracing::warn!(operation = handle.id(), "plugin {label} failed: {e}");
                handle.fail(e);
            }
        }
    });
    op
}

/// Starts fetching and verifying the repository's index (`install/update`).
pub fn start_update(repo: &Arc<Repository>, store: &Store, oips: &Oips) -> OipHandle {
    let (repo, store) = (Arc::clone(repo), store.clone());
    run_operation(oips, "update", move |op| async move {
        repo.update(&store, &op).await
    })
}

/// Checks that `name` can be installed (`upgrade`: upgraded) and starts the download and
/// install (`install/install`, `install/upgrade`). Reads the cached index: run it off the
/// async runtime's threads, inside the runtime.
pub fn start_install(
    repo: &Arc<Repository>,
    store: &Store,
    files: &Arc<FileService>,
    roots: &[(PathBuf, Origin)],
    oips: &Oips,
    name: &str,
    upgrade: bool,
) -> Result<OipHandle> {
    repo.check_install(name, upgrade)?;
    let (repo, store, files) = (Arc::clone(repo), store.clone(), Arc::clone(files));
    let (roots, name) = (roots.to_vec(), name.to_owned());
    Ok(run_operation(oips, "download", move |op| async move {
        repo.install(&store, &files, &roots, &name, upgrade, &op)
            .await
    }))
}

/// Writes `value` as `dir/file` through a temporary file renamed over it.
fn write_atomically(
    dir: &Path,
    file: &str,
    value: &impl Serialize,
) -> std::result::Result<(), String> {
    use std::io::Write as _;
    fs::create_dir_all(dir).map_err(|e| internal("cannot create", dir, e))?;
    let mut temp =
        tempfile::NamedTempFile::new_in(dir).map_err(|e| internal("cannot write in", dir, e))?;
    let text = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    temp.write_all(&text)
        .and_then(|()| temp.as_file().sync_all())
        .map_err(|e| internal("cannot write in", dir, e))?;
    temp.persist(dir.join(file))
        .map_err(|e| internal("cannot write in", dir, e.error))?;
    Ok(())
}

/// Unpacks `bytes` (the verified archive of `entry`) in `scratch`, checks that it loads as
/// that plugin and version, moves it to `<plugins_dir>/<name>/<version>` and switches
/// `current` to it; the version before stays (requests in flight may read it), older ones go.
fn place(
    plugins_dir: &Path,
    scratch: &Scratch,
    entry: &Entry,
    bytes: &[u8],
    limits: Limits,
) -> std::result::Result<(), String> {
    let unpacked = scratch.0.join(&entry.version);
    fs::create_dir(&unpacked).map_err(|e| internal("cannot create", &unpacked, e))?;
    repo::unpack(bytes, &unpacked, &entry.archive, &entry.name, limits)
        .map_err(|e| e.to_string())?;
    let plugin = crate::plugins::load_dir(&unpacked.join(&entry.name))
        .map_err(|e| format!("{}: the plugin does not load: {e}", entry.archive))?;
    if plugin.version != entry.version {
        return Err(format!(
            "{}: holds version {}, the index says {}",
            entry.archive, plugin.version, entry.version
        ));
    }
    let dir = plugins_dir.join(&entry.name);
    fs::create_dir_all(&dir).map_err(|e| internal("cannot create", &dir, e))?;
    let marker = dir.join(repo::MARKER);
    if !marker.exists() {
        fs::write(&marker, b"installed from a plugin repository\n")
            .map_err(|e| internal("cannot write", &marker, e))?;
    }
    let previous = repo::current_version(&dir);
    let target = dir.join(&entry.version);
    if target.exists() {
        // A version installed before and left beside the current one: replaced.
        remove_any(&target);
    }
    fs::rename(&unpacked, &target).map_err(|e| internal("cannot move into", &target, e))?;
    let link = dir.join(".current-new");
    remove_any(&link);
    std::os::unix::fs::symlink(&entry.version, &link)
        .map_err(|e| internal("cannot create", &link, e))?;
    fs::rename(&link, dir.join(repo::CURRENT))
        .map_err(|e| internal("cannot switch", &dir.join(repo::CURRENT), e))?;
    if let Ok(d) = fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    // Versions older than the one just replaced are not read by anything any more.
    if let Ok(entries) = fs::read_dir(&dir) {
        for old in entries.filter_map(|e| e.ok()) {
            let name = old.file_name().to_string_lossy().into_owned();
            let keep = name == entry.version
                || Some(&name) == previous.as_ref()
                || name == repo::CURRENT
                || name.starts_with('.');
            if !keep {
                remove_any(&old.path());
            }
        }
    }
    Ok(())
}
