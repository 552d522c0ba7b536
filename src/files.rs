//! Answering a phone's file request, for every transport: identification → the device's
//! plugin route → rendered template or static file.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use std::net::IpAddr;

use crate::config::HttpAuthStrategy;
use crate::ident::{IdentError, Identifier, RequestContext};
use crate::manage::guard::{Secret, SecretGuard};
use crate::plugins::{safe_relative, PluginSet, RenderError, Renderer, Target, MAX_PATH_LEN};
use crate::store::{Store, StoreError};

/// Largest static file served, so that a stray multi-gigabyte file cannot exhaust memory.
pub const MAX_STATIC_BYTES: u64 = 256 * 1024 * 1024;

/// A file ready to send.
#[derive(Debug, Clone)]
pub struct Served {
    /// Content.
    pub body: Arc<[u8]>,
    /// Content type.
    pub content_type: String,
    /// Strong validator.
    pub etag: String,
    /// Last modification time.
    pub modified: SystemTime,
    /// Device id.
    pub device: String,
    /// Plugin name.
    pub plugin: String,
    /// The device's MAC (`-` when it has none), for the access logs (`DEVICE_MAC` in journald).
    pub mac: String,
    /// The device's tenant, for the access logs.
    pub tenant: String,
}

fn shown_mac(device: &crate::model::Device) -> String {
    device
        .mac
        .map(|m| m.to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// Path prefix of keyed URLs (`url_key` strategy).
pub const KEY_PREFIX: &str = "device/provisioning/";

/// Shortest provisioning key, in characters (wazo-provd's bound).
pub const MIN_PROVISIONING_KEY_CHARS: usize = 8;

/// Longest provisioning key, in characters (wazo-provd's bound).
pub const MAX_PROVISIONING_KEY_CHARS: usize = 256;

/// The rule of [`valid_provisioning_key`] in words, for error messages.
pub const PROVISIONING_KEY_RULE: &str = "8 to 256 characters among A-Z a-z 0-9 - $ ~ .";

/// wazo-provd's rule, so that keys that Wazo sets work here: 8 to 256 characters among
/// `A-Z a-z 0-9 - $ ~ .`, all of which stand unescaped in a URL path segment.
pub fn valid_provisioning_key(key: &str) -> bool {
    (MIN_PROVISIONING_KEY_CHARS..=MAX_PROVISIONING_KEY_CHARS).contains(&key.len())
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'$' | b'~' | b'.'))
}

/// The provisioning key that DHCP's `{provisioning_url}` carries for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlKey {
    /// The `url_key` strategy is off: plain URLs.
    Off,
    /// The key of the client's tenant (the default tenant's for an unknown client).
    Key(String),
    /// The strategy is on but the tenant has no key: no URL can work for this client.
    Missing,
}

/// Who asks, as the transport knows it.
#[derive(Debug, Clone)]
pub enum Requester {
    /// HTTP(S) client.
    Http {
        /// Peer address.
        src: IpAddr,
        /// `User-Agent`.
        user_agent: Option<String>,
    },
    /// TFTP client.
    Tftp {
        /// Peer address.
        src: IpAddr,
    },
}

impl Requester {
    /// The client's address.
    pub fn src(&self) -> IpAddr {
        match self {
            Requester::Http { src, .. } | Requester::Tftp { src } => src.to_canonical(),
        }
    }

    fn context(&self, file: &str) -> RequestContext {
        match self {
            Requester::Http { src, user_agent } => RequestContext::Http {
                src: src.to_canonical(),
                path: file.to_owned(),
                user_agent: user_agent.clone(),
            },
            Requester::Tftp { src } => RequestContext::Tftp {
                src: src.to_canonical(),
                filename: file.to_owned(),
            },
        }
    }
}

/// The values of an automatic-provisioning URL `/auto/<tenant>/<token>/<category>/<file>`,
/// each percent-decoded on its own (the token and category may hold `/`, `#`, spaces).
#[derive(Debug, Clone)]
pub struct AutoUrl {
    /// Tenant id.
    pub tenant: String,
    /// Security token.
    pub token: String,
    /// Category name.
    pub category: String,
}

/// Why a request is not answered with a file.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The path could leave the served tree or is too long.
    #[error("unsafe or empty path")]
    UnsafePath,
    /// `url_key`: the path is not `device/provisioning/<key>/<file>`.
    #[error("url_key: not a /device/provisioning/<key>/<file> path")]
    NotKeyed,
    /// `url_key`: malformed or unknown key.
    #[error("url_key: {0} key")]
    BadKey(&'static str),
    /// An automatic-provisioning URL that names no tenant, token or provisioning category.
    #[error("automatic URL: {0}")]
    BadAuto(&'static str),
    /// Automatic provisioning failed on our side.
    #[error("automatic provisioning: {0}")]
    Auto(String),
    /// The read-only path cannot answer without blocking work (writes, rendering, disk):
    /// the caller retries with [`FileService::answer`] on a blocking thread.
    #[error("needs a blocking thread")]
    NeedsBlocking,
    /// The store failed while looking the key up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No device could be identified.
    #[error("unknown device")]
    UnknownDevice,
    /// The device belongs to another tenant than the URL's key.
    #[error("device {device} belongs to tenant {tenant}, not to the tenant of this URL")]
    WrongTenant {
        /// Device id.
        device: String,
        /// Its tenant.
        tenant: String,
    },
    /// The device has no (loaded) plugin.
    #[error("device {0} has no usable plugin")]
    NoPlugin(String),
    /// The plugin has no route for this path.
    #[error("plugin {plugin} serves no {path:?}")]
    NoRoute {
        /// Plugin name.
        plugin: String,
        /// Requested path.
        path: String,
    },
    /// The path names another device's MAC.
    #[error("device {device} asked for the file of another MAC")]
    ForeignMac {
        /// Device id.
        device: String,
    },
    /// Missing, unreadable or unsafe static file.
    #[error("static file {0}: not found")]
    NoStatic(String),
    /// Identification failed.
    #[error(transparent)]
    Ident(#[from] IdentError),
    /// Rendering failed.
    #[error(transparent)]
    Render(#[from] RenderError),
}

impl FetchError {
    /// The kind of refusal for the rate-limited log, `None` for our own failures (always
    /// logged).
    pub fn rejection(&self, over_http: bool) -> Option<crate::ratelimit::Kind> {
        use crate::ratelimit::Kind;
        let (url_key, path, not_found) = if over_http {
            (Kind::HttpUrlKey, Kind::HttpPath, Kind::HttpNotFound)
        } else {
            (Kind::TftpUrlKey, Kind::TftpPath, Kind::TftpNotFound)
        };
        match self {
            _ if self.is_internal() => None,
            // Not an answer: retried on a blocking thread, where it gets one.
            FetchError::NeedsBlocking => None,
            FetchError::NotKeyed | FetchError::BadKey(_) | FetchError::BadAuto(_) => Some(url_key),
            FetchError::UnsafePath => Some(path),
            _ => Some(not_found),
        }
    }

    /// True for failures on our side (the phone gets a 500 / TFTP error 0), false for
    /// requests that simply have no answer (404 / TFTP error 1).
    pub fn is_internal(&self) -> bool {
        match self {
            // A device with no config yet, or whose config was deleted (the API allows both, as
            // wazo-provd does), has no files: a 404 as for an unknown file, not our failure.
            FetchError::Render(RenderError::NoConfig(_) | RenderError::MissingConfig(..)) => false,
            FetchError::Ident(_)
            | FetchError::Render(_)
            | FetchError::Store(_)
            | FetchError::Auto(_) => true,
            _ => false,
        }
    }

    /// The device that the refusal is worth a warning about (a config deleted under it).
    pub fn warn_device(&self) -> Option<&str> {
        match self {
            FetchError::WrongTenant { device, .. } | FetchError::ForeignMac { device } => {
                Some(device)
            }
            FetchError::Render(RenderError::MissingConfig(_, device)) => Some(device),
            _ => None,
        }
    }
}

/// Answers counted by transport and outcome, for `/metrics`.
#[derive(Debug, Default)]
pub struct FileCounters {
    /// HTTP(S) files served.
    pub http_ok: std::sync::atomic::AtomicU64,
    /// HTTP(S) requests refused (404) or failed (500).
    pub http_refused: std::sync::atomic::AtomicU64,
    /// TFTP files served.
    pub tftp_ok: std::sync::atomic::AtomicU64,
    /// TFTP requests refused or failed.
    pub tftp_refused: std::sync::atomic::AtomicU64,
}

/// Everything needed to answer file requests; shared by the HTTP and TFTP servers.
pub struct FileService {
    /// Outcomes by transport.
    pub counters: FileCounters,
    /// Static files in memory.
    pub statics: StaticCache,
    /// Lease events received over the dhcpinfo socket.
    pub dhcpinfo: crate::dhcpinfo::Counters,
    /// The DHCP server's counters, once it runs.
    pub dhcp: std::sync::OnceLock<Arc<crate::dhcp::Counters>>,
    /// Installed vendor packages, served as their plugins' static files (once opened).
    pub packages: std::sync::OnceLock<Arc<crate::plugins::packages::PackageStore>>,
    /// What strangers sent, counted, and their log lines bounded; shared by every transport.
    pub rejected: Arc<crate::ratelimit::Rejections>,
    /// Failure budgets of guessable secrets (url_key keys, automatic URLs, codes), shared
    /// with the API and the phone's code form.
    pub guard: Arc<SecretGuard>,
    /// Live events (files served, devices created, codes used), for the console.
    pub events: Arc<crate::events::Events>,
    store: Store,
    strategy: HttpAuthStrategy,
    ident: Identifier,
    plugins: RwLock<Arc<PluginSet>>,
    renderer: Renderer,
}

impl FileService {
    /// A service over `store` with these plugins.
    pub fn new(
        store: Store,
        default_tenant: &str,
        strategy: HttpAuthStrategy,
        plugins: Arc<PluginSet>,
        renderer: Renderer,
    ) -> FileService {
        let rejected: Arc<crate::ratelimit::Rejections> = Arc::default();
        let events: Arc<crate::events::Events> = Arc::default();
        FileService {
            counters: FileCounters::default(),
            statics: StaticCache::default(),
            dhcpinfo: crate::dhcpinfo::Counters::default(),
            dhcp: std::sync::OnceLock::new(),
            packages: std::sync::OnceLock::new(),
            ident: Identifier::new(store.clone(), default_tenant)
                .reporting_to(Arc::clone(&rejected))
                .publishing_to(Arc::clone(&events)),
            events,
            rejected,
            guard: Arc::default(),
            store,
            strategy,
            plugins: RwLock::new(plugins),
            renderer,
        }
    }

    /// Replaces the plugins (after a reload) and forgets cached files.
    pub fn set_plugins(&self, plugins: Arc<PluginSet>) {
        *self.plugins.write().unwrap_or_else(|e| e.into_inner()) = plugins;
        self.renderer.clear_cache();
    }

    /// A lease without a known MAC ended: the device that still has `ip` loses it. Blocking.
    pub fn forget_ip(
        &self,
        ip: std::net::Ipv4Addr,
    ) -> Result<Option<crate::model::Device>, IdentError> {
        self.ident.forget_ip(ip)
    }

    /// Bounds the devices that identification may create.
    pub fn set_autocreate_limits(&self, limits: crate::ident::AutocreateLimits) {
        self.ident.set_limits(limits);
    }

    /// What autocreation did so far.
    pub fn autocreate_counters(&self) -> &crate::ident::AutocreateCounters {
        self.ident.autocreate_counters()
    }

    /// Tokens left in the autocreation bucket now.
    pub fn autocreate_tokens(&self) -> f64 {
        self.ident.autocreate_tokens()
    }

    /// Identification alone (DHCP lease facts): updates or creates the device. Blocking.
    pub fn identify(
        &self,
        ctx: &RequestContext,
    ) -> Result<Option<crate::ident::Identified>, IdentError> {
        self.ident.identify(ctx, &self.plugins())
    }

    /// [`FileService::identify`] of an event that came through `via` (a foreign DHCP
    /// server's lease events: [`crate::store::Via::Dhcpinfo`]).
    pub fn identify_via(
        &self,
        ctx: &RequestContext,
        via: crate::store::Via,
    ) -> Result<Option<crate::ident::Identified>, IdentError> {
        self.ident.identify_via(ctx, &self.plugins(), via)
    }

    /// The store the files are answered from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The renderer of the plugins' templates.
    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// The loaded plugins.
    pub fn plugins(&self) -> Arc<PluginSet> {
        Arc::clone(&self.plugins.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The key DHCP options put in the provisioning URL for the clients of a pool of
    /// `tenant` (the default tenant when `None`, where unknown phones are created). Never
    /// chosen by the client's MAC: a client can claim any MAC, and would get another tenant's
    /// key. Blocking.
    pub fn dhcp_url_key(&self, tenant: Option<&str>) -> UrlKey {
        if self.strategy != HttpAuthStrategy::UrlKey {
            return UrlKey::Off;
        }
        let tenant = tenant.unwrap_or(self.ident.default_tenant());
        match self.store.tenant(tenant) {
            Ok(Some(t)) => t.provisioning_key.map_or(UrlKey::Missing, UrlKey::Key),
            Ok(None) => {
                tracing::warn!(%tenant, "DHCP: the pool's tenant does not exist: no provisioning URL");
                UrlKey::Missing
            }
            Err(e) => {
                tracing::warn!(%tenant, "DHCP: tenant not read for its provisioning key: {e}");
                UrlKey::Missing
            }
        }
    }

    /// Answers a request for `path` (decoded, without leading `/`): applies the `url_key`
    /// strategy, checks the path, then [`FileService::fetch`]. Blocking (it may flush the
    /// store).
    pub fn answer(&self, who: &Requester, path: &str) -> Result<Served, FetchError> {
        self.answer_with(who, path, true)
    }

    /// [`FileService::answer`] without any store write: `None` when the request needs one
    /// (new phone, changed facts), and the caller then uses `answer` off the async runtime.
    pub fn answer_readonly(
        &self,
        who: &Requester,
        path: &str,
    ) -> Option<Result<Served, FetchError>> {
        match self.answer_with(who, path, false) {
            Err(FetchError::Ident(IdentError::WouldWrite) | FetchError::NeedsBlocking) => None,
            other => Some(other),
        }
    }

    fn answer_with(&self, who: &Requester, path: &str, writes: bool) -> Result<Served, FetchError> {
        let result = self.answer_uncounted(who, path, writes);
        let (ok, refused) = match who {
            Requester::Http { .. } => (&self.counters.http_ok, &self.counters.http_refused),
            Requester::Tftp { .. } => (&self.counters.tftp_ok, &self.counters.tftp_refused),
        };
        match &result {
            Ok(_) => ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            // A read-only attempt that needs a write is retried with writes: not an answer.
            Err(FetchError::Ident(IdentError::WouldWrite) | FetchError::NeedsBlocking) => 0,
            Err(_) => refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        result
    }

    fn answer_uncounted(
        &self,
        who: &Requester,
        path: &str,
        writes: bool,
    ) -> Result<Served, FetchError> {
        let (file, tenant) = match self.strategy {
            HttpAuthStrategy::Disabled => (path, None),
            HttpAuthStrategy::UrlKey => {
                let (key, file) = path
                    .strip_prefix(KEY_PREFIX)
                    .and_then(|rest| rest.split_once('/'))
                    .ok_or(FetchError::NotKeyed)?;
                let src = who.src();
                let now = std::time::Instant::now();
                if self.guard.attempt(Secret::UrlKey, src, now).is_err() {
                    return Err(FetchError::BadKey("rate-limited"));
                }
                let found = if valid_provisioning_key(key) {
                    match self.store.tenant_by_key(key) {
                        Ok(found) => found,
                        Err(e) => {
                            // Our failure, not a wrong guess.
                            self.guard.succeeded(Secret::UrlKey, src, now);
                            return Err(e.into());
                        }
                    }
                } else {
                    None
                };
                let Some(tenant) = found else {
                    self.guard.failed(Secret::UrlKey);
                    return Err(FetchError::BadKey("unknown or malformed"));
                };
                self.guard.succeeded(Secret::UrlKey, src, now);
                (file, Some(tenant.id))
            }
        };
        if file.len() > MAX_PATH_LEN || safe_relative(file).is_none() {
            return Err(FetchError::UnsafePath);
        }
        self.fetch_with(&who.context(file), file, tenant.as_deref(), writes)
    }

    /// Answers `file` requested through an automatic-provisioning URL: checks the URL (its
    /// failures count against the client), identifies the phone (creating it if new), moves a
    /// phone of the default tenant to the URL's tenant and category, then serves the file.
    /// Blocking. The `url_key` strategy does not apply: the token authenticates.
    pub fn answer_auto(
        &self,
        who: &Requester,
        auto: &AutoUrl,
        file: &str,
    ) -> Result<Served, FetchError> {
        let result = self.answer_auto_uncounted(who, auto, file);
        let (ok, refused) = match who {
            Requester::Http { .. } => (&self.counters.http_ok, &self.counters.http_refused),
            Requester::Tftp { .. } => (&self.counters.tftp_ok, &self.counters.tftp_refused),
        };
        match &result {
            Ok(_) => ok.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            Err(_) => refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        result
    }

    fn answer_auto_uncounted(
        &self,
        who: &Requester,
        auto: &AutoUrl,
        file: &str,
    ) -> Result<Served, FetchError> {
        use crate::manage::ManageError;
        let target = match crate::manage::auto::check_url(
            &self.store,
            &self.guard,
            &auto.tenant,
            &auto.token,
            &auto.category,
            who.src(),
        ) {
            Ok(target) => target,
            Err(ManageError::Store(e)) => return Err(e.into()),
            Err(ManageError::RateLimited) => return Err(FetchError::BadAuto("rate-limited")),
            Err(_) => return Err(FetchError::BadAuto("unknown tenant, token or category")),
        };
        if file.len() > MAX_PATH_LEN || safe_relative(file).is_none() {
            return Err(FetchError::UnsafePath);
        }
        let plugins = self.plugins();
        let ctx = who.context(file);
        let identified = self.ident.identify_scoped(&ctx, &plugins, true, None)?;
        let device = identified.ok_or(FetchError::UnknownDevice)?.device;
        let device =
            match crate::manage::auto::assign(&self.store, &target, &device, crate::model::now()) {
                Ok(device) => device,
                Err(ManageError::Forbidden(_)) => {
                    return Err(FetchError::WrongTenant {
                        device: device.id,
                        tenant: device.tenant,
                    })
                }
                Err(ManageError::Store(e)) => return Err(e.into()),
                Err(e) => return Err(FetchError::Auto(e.to_string())),
            };
        self.serve_told(&ctx, &plugins, device, file, true)
    }

    /// Answers `path` (relative, already checked by the transport) for the request `ctx`;
    /// with `tenant`, only a device of that tenant is served. Blocking: call it off the
    /// async runtime.
    pub fn fetch(
        &self,
        ctx: &RequestContext,
        path: &str,
        tenant: Option<&str>,
    ) -> Result<Served, FetchError> {
        self.fetch_with(ctx, path, tenant, true)
    }

    fn fetch_with(
        &self,
        ctx: &RequestContext,
        path: &str,
        tenant: Option<&str>,
        writes: bool,
    ) -> Result<Served, FetchError> {
        let plugins = self.plugins();
        let identified = match self.ident.identify_scoped(ctx, &plugins, writes, tenant) {
            Err(IdentError::OtherTenant { device, tenant }) => {
                return Err(FetchError::WrongTenant { device, tenant })
            }
            other => other?,
        };
        let device = identified.ok_or(FetchError::UnknownDevice)?.device;
        self.serve_told(ctx, &plugins, device, path, writes)
    }

    /// [`FileService::serve`], and a boot event when the file went out.
    fn serve_told(
        &self,
        ctx: &RequestContext,
        plugins: &PluginSet,
        device: crate::model::Device,
        path: &str,
        writes: bool,
    ) -> Result<Served, FetchError> {
        let (vendor, model) = (device.vendor.clone(), device.model.clone());
        let served = self.serve(plugins, device, path, writes)?;
        let (ip, transport) = match ctx {
            RequestContext::Http { src, .. } => (src.to_string(), "http"),
            RequestContext::Tftp { src, .. } => (src.to_string(), "tftp"),
            RequestContext::Dhcp { ip, .. } => (ip.to_string(), "dhcp"),
        };
        self.events.publish(
            served.tenant.clone(),
            crate::events::What::Boot(crate::events::Boot {
                device: served.device.clone(),
                // The path without a URL key: the key is a secret.
                file: path.to_owned(),
                vendor,
                model,
                ip,
                transport,
            }),
        );
        Ok(served)
    }

    /// Serves `path` to the identified `device`.
    fn serve(
        &self,
        plugins: &PluginSet,
        device: crate::model::Device,
        path: &str,
        writes: bool,
    ) -> Result<Served, FetchError> {
        let identified_plugin = device
            .plugin
            .as_deref()
            .and_then(|name| plugins.get(name))
            .cloned();
        let plugin = identified_plugin.ok_or_else(|| FetchError::NoPlugin(device.id.clone()))?;
        let resolved = plugin.resolve(path).ok_or_else(|| FetchError::NoRoute {
            plugin: plugin.name.clone(),
            path: path.to_owned(),
        })?;
        if resolved.mac.is_some() && resolved.mac != device.mac {
            return Err(FetchError::ForeignMac { device: device.id });
        }
        match &resolved.target {
            Target::Template(_) if !writes => {
                // The async fast path only serves what is already rendered.
                let rendered = self
                    .renderer
                    .cached_render(&plugin, &device, &resolved)?
                    .ok_or(FetchError::NeedsBlocking)?;
                Ok(Served {
                    body: rendered.body,
                    content_type: rendered.content_type,
                    etag: rendered.etag,
                    modified: rendered.modified,
                    mac: shown_mac(&device),
                    tenant: device.tenant,
                    device: device.id,
                    plugin: plugin.name.clone(),
                })
            }
            Target::Static(_) if !writes => Err(FetchError::NeedsBlocking),
            Target::Template(_) => {
                let rendered = self.renderer.render(&plugin, &device, &resolved)?;
                Ok(Served {
                    body: rendered.body,
                    content_type: rendered.content_type,
                    etag: rendered.etag,
                    modified: rendered.modified,
                    mac: shown_mac(&device),
                    tenant: device.tenant,
                    device: device.id,
                    plugin: plugin.name.clone(),
                })
            }
            Target::Static(file) => {
                let found = match &plugin.dir {
                    Some(dir) => self.statics.read(&dir.join("static"), file),
                    None => plugin.embedded_static(file),
                }
                // The plugin's own static/ first (an admin's copy wins), then its packages.
                .or_else(|| {
                    let (root, file) = self.packages.get()?.find(&plugin.name, path)?;
                    self.statics.read(&root, &file)
                });
                let (body, modified, etag) =
                    found.ok_or_else(|| FetchError::NoStatic(path.to_owned()))?;
                Ok(Served {
                    body,
                    content_type: resolved.content_type,
                    etag,
                    modified,
                    mac: shown_mac(&device),
                    tenant: device.tenant,
                    device: device.id,
                    plugin: plugin.name.clone(),
                })
            }
        }
    }
}

/// Static files kept in memory, shared by every transfer of the same file.
#[derive(Default)]
pub struct StaticCache {
    files: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, StaticEntry>>,
}

#[derive(Clone)]
struct StaticEntry {
    len: u64,
    modified: SystemTime,
    body: Arc<[u8]>,
    etag: String,
}

/// Bytes of static files kept in memory; past it the cache starts over.
pub const STATIC_CACHE_BYTES: u64 = 512 * 1024 * 1024;

impl StaticCache {
    /// The content of a regular file that really lies under `root` (symlinks resolved),
    /// read once and shared while its size and modification time stay the same: a hundred
    /// phones fetching one firmware image hold one copy, not a hundred.
    fn read(&self, root: &Path, file: &Path) -> Option<(Arc<[u8]>, SystemTime, String)> {
        let root = root.canonicalize().ok()?;
        let real = file.canonicalize().ok()?;
        if !real.starts_with(&root) {
            tracing::warn!(file = %file.display(), "static file resolves outside the plugin's static dir: refused");
            return None;
        }
        let meta = std::fs::metadata(&real).ok()?;
        if !meta.is_file() || meta.len() > MAX_STATIC_BYTES {
            return None;
        }
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let fresh = |e: &StaticEntry| e.len == meta.len() && e.modified == modified;
        if let Some(e) = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&real)
            .filter(|e| fresh(e))
        {
            return Some((Arc::clone(&e.body), e.modified, e.etag.clone()));
        }
        let body: Arc<[u8]> = Arc::from(std::fs::read(&real).ok()?);
        let mut hasher = DefaultHasher::new();
        real.hash(&mut hasher);
        meta.len().hash(&mut hasher);
        modified.hash(&mut hasher);
        let entry = StaticEntry {
            len: meta.len(),
            modified,
            body,
            etag: format!("\"s{:016x}\"", hasher.finish()),
        };
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let held: u64 = files.values().map(|e| e.len).sum();
        if held + entry.len > STATIC_CACHE_BYTES {
            files.clear();
        }
        files.insert(real, entry.clone());
        Some((entry.body, entry.modified, entry.etag))
    }

    /// Number of files held.
    pub fn len(&self) -> usize {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no file is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl crate::tftp::FileSource for FileService {
    fn read(
        &self,
        peer: std::net::SocketAddr,
        filename: &str,
    ) -> Result<Arc<[u8]>, crate::tftp::FileError> {
        use crate::tftp::FileError;
        let started = std::time::Instant::now();
        let result = self.answer(&Requester::Tftp { src: peer.ip() }, filename);
        let shown: String = filename.chars().take(200).collect();
        match result {
            Ok(served) => {
                tracing::info!(
                    target: "provisiond::tftp::access",
                    %peer,
                    file = %shown,
                    status = "ok",
                    bytes = served.body.len(),
                    duration_us = started.elapsed().as_micros() as u64,
                    device = %served.device,
                    device_mac = %served.mac,
                    tenant = %served.tenant,
                    plugin = %served.plugin,
                    "request"
                );
                Ok(served.body)
            }
            Err(e) => {
                let logged = e
                    .rejection(false)
                    .is_none_or(|kind| self.rejected.admit(kind, peer.ip()));
                if logged {
                    tracing::info!(target: "provisiond::tftp::access", %peer, file = %shown, status = "refused", reason = %e, "request");
                }
                match e {
                    FetchError::UnsafePath => Err(FileError::AccessViolation),
                    e if e.is_internal() => {
                        tracing::error!(%peer, "cannot answer {shown}: {e}");
                        Err(FileError::Other("internal error".into()))
                    }
                    _ => Err(FileError::NotFound),
                }
            }
        }
    }
}
