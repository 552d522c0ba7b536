//! The rules of plugins' vendor packages (firmware, language files): what may be installed,
//! installing and upgrading as an operation in progress (download through the configured
//! proxy, verification, unpacking, switch), uninstalling. Files and records are
//! [`PackageStore`]'s; this module decides and sequences.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::oip::{OipHandle, Oips};
use super::{ManageError, Result};
use crate::plugins::fetch::{self, Expected, Fetcher};
use crate::plugins::packages::{Installed, Package, PackageStore};
use crate::plugins::Plugin;
use crate::store::Store;

/// A package download gives up after this long (a large firmware over a slow link).
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The body field by which an install or upgrade accepts the package's licence.
pub const ACCEPT_FIELD: &str = "accept_licence";

/// Installed packages and the operations on them, one at a time per package.
#[derive(Debug)]
pub struct Packages {
    /// Files and records.
    pub store: Arc<PackageStore>,
    locks: Mutex<HashMap<(String, String), OneAtATime>>,
}

/// Held while a package (plugin, id) is installed, upgraded or removed.
type OneAtATime = Arc<tokio::sync::Mutex<()>>;

/// Install, or upgrade (which needs the package installed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `install`: installs the declared version, whatever is installed.
    Install,
    /// `upgrade`: the package must be installed already.
    Upgrade,
}

impl Packages {
    /// Operations over `store`.
    pub fn new(store: Arc<PackageStore>) -> Packages {
        Packages {
            store,
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn lock_of(&self, plugin: &str, id: &str) -> OneAtATime {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(locks.entry((plugin.to_owned(), id.to_owned())).or_default())
    }
}

/// The packages `plugin` declares, wazo-provd's `pkgs` shape: id → description.
pub fn installable(plugin: &Plugin) -> BTreeMap<String, Value> {
    plugin
        .packages
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                json!({
                    "version": p.version,
                    "description": p.description,
                    "dsize": p.size,
                    "licence_url": p.licence_url.as_ref().map(|u| u.to_string()),
                    "licence_acceptance_required": p.licence_acceptance_required,
                }),
            )
        })
        .collect()
}

/// The installed packages of `plugin` (by name: a plugin that no longer loads still lists
/// them), id → description.
pub fn installed(packages: &Packages, plugin: &str) -> BTreeMap<String, Value> {
    packages
        .store
        .installed(plugin)
        .into_iter()
        .map(|p| {
            (
                p.id.clone(),
                json!({
                    "version": p.version,
                    "description": p.description,
                    "files": p.files,
                    "sha256": p.sha256,
                    "installed_at": p.installed_at,
                }),
            )
        })
        .collect()
}

/// The proxy of `/configure` `http_proxy`, if set.
fn proxy(store: &Store) -> Result<Option<url::Url>> {
    match store.param("http_proxy")? {
        Some(Value::String(text)) if !text.is_empty() => url::Url::parse(&text)
            .map(Some)
            .map_err(|e| ManageError::Internal(format!("http_proxy {text:?}: {e}"))),
        _ => Ok(None),
    }
}

/// Starts installing (or upgrading) package `id` of `plugin`; the operation reports its
/// progress and outcome. Refused at once when the package is unknown, its licence needs an
/// acceptance the request did not give, or (upgrade) it is not installed. Must run inside
/// the async runtime.
pub fn start(
    packages: &Arc<Packages>,
    store: &Store,
    oips: &Oips,
    plugin: Arc<Plugin>,
    id: &str,
    accept_licence: bool,
    mode: Mode,
) -> Result<OipHandle> {
    let package = plugin
        .packages
        .iter()
        .find(|p| p.id == id)
        .cloned()
        .ok_or_else(|| {
            ManageError::field(
                "id",
                format!("plugin {} declares no package {id:?}", plugin.name),
            )
        })?;
    if package.licence_acceptance_required && !accept_licence {
        let url = package
            .licence_url
            .as_ref()
            .map_or_else(String::new, |u| u.to_string());
        return Err(ManageError::field(
            ACCEPT_FIELD,
            format!(
                "package {id} is under a licence that must be accepted: read {url} and send \
                 \"{ACCEPT_FIELD}\": true (provisiond plugin packages … --accept-licence)"
            ),
        ));
    }
    if mode == Mode::Upgrade && packages.store.get(&plugin.name, id).is_none() {
        return Err(ManageError::field(
            "id",
            format!(
                "package {id} of plugin {} is not installed: install it",
                plugin.name
            ),
        ));
    }
    let proxy = proxy(store)?;
    let fetcher = Fetcher::new(proxy.as_ref(), DOWNLOAD_TIMEOUT)
        .map_err(|e| ManageError::Internal(e.to_string()))?;
    let handle = oips.start(Some(match mode {
        Mode::Install => "install",
        Mode::Upgrade => "upgrade",
    }));
    let task = handle.clone();
    let packages = Arc::clone(packages);
    tokio::spawn(async move {
        let name = plugin.name.clone();
        match run(&packages, &fetcher, &name, &package, &task).await {
            Ok(Some(done)) => {
                tracing::info!(plugin = %name, package = %done.id, version = %done.version, files = done.files.len(), "package installed");
                task.succeed();
            }
            Ok(None) => task.succeed(),
            Err(reason) => {
                tracing::warn!(plugin = %name, package = %package.id, "package not installed: {reason}");
                task.fail(reason);
            }
        }
    });
    Ok(handle)
}

/// Downloads, verifies and installs; `None` when that very version is installed already.
async fn run(
    packages: &Packages,
    fetcher: &Fetcher,
    plugin: &str,
    package: &Package,
    oip: &OipHandle,
) -> std::result::Result<Option<Installed>, String> {
    let lock = packages.lock_of(plugin, &package.id);
    let _one_at_a_time = lock.lock().await;
    let current = packages.store.get(plugin, &package.id);
    if current
        .is_some_and(|c| c.version == package.version && c.sha256 == fetch::hex(&package.sha256))
    {
        return Ok(None);
    }
    oip.progress(Some(0), Some(package.size));
    let expected = Expected {
        size: package.size,
        sha256: package.sha256,
    };
    let progress = |got: u64, _: Option<u64>| oip.progress(Some(got), Some(package.size));
    let fetched = fetcher
        .to_file(
            &package.url,
            &packages.store.staging(),
            package.size,
            Some(expected),
            &progress,
        )
        .await
        .map_err(|e| e.to_string())?;
    let store = Arc::clone(&packages.store);
    let (plugin, package) = (plugin.to_owned(), package.clone());
    tokio::task::spawn_blocking(move || {
        let done = store.install(&plugin, &package, fetched.file.path());
        drop(fetched);
        done
    })
    .await
    .map_err(|e| format!("install task: {e}"))?
    .map(Some)
    .map_err(|e| e.to_string())
}

/// Uninstalls package `id` of `plugin` (after any operation on it in progress).
pub async fn uninstall(packages: &Arc<Packages>, plugin: &str, id: &str) -> Result<Installed> {
    let lock = packages.lock_of(plugin, id);
    let _one_at_a_time = lock.lock().await;
    let store = Arc::clone(&packages.store);
    let (plugin, id) = (plugin.to_owned(), id.to_owned());
    let done = tokio::task::spawn_blocking(move || store.uninstall(&plugin, &id))
        .await
        .map_err(|e| ManageError::Internal(format!("uninstall task: {e}")))?;
    match done {
        Ok(record) => Ok(record),
        Err(e @ crate::plugins::packages::PackageError::NotInstalled(_)) => {
            Err(ManageError::field("id", e.to_string()))
        }
        Err(e) => Err(ManageError::Internal(e.to_string())),
    }
}

/// The firmware files of a job (`MODEL → {version, file}`) that no plugin serves: neither an
/// installed package's file nor a file of a plugin's `static/`. URLs are not looked at. Such
/// a job is kept (the file may come later) but deserves a warning.
pub fn unserved_firmware<'a>(
    packages: &Packages,
    plugins: &crate::plugins::PluginSet,
    files: impl IntoIterator<Item = &'a str>,
) -> Vec<String> {
    files
        .into_iter()
        .filter(|file| !file.contains("://"))
        .filter(|file| {
            !plugins.iter().any(|p| {
                packages.store.has_file(&p.name, file)
                    || p.dir.as_ref().is_some_and(|d| {
                        crate::plugins::safe_relative(file)
                            .is_some_and(|rel| d.join("static").join(rel).is_file())
                    })
            })
        })
        .map(str::to_owned)
        .collect()
}
