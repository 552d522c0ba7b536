//! Identification: from a request (DHCP, HTTP, TFTP) to a device record and its plugin.
//!
//! extract (every plugin's rules) → retrieve (by MAC, then by IP) → update the fields that
//! changed → autocreate unknown devices → choose the plugin. Pure logic over the store.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use crate::model::{self, Added, Device, Mac};
use crate::plugins::{Extracted, Plugin, PluginSet, RuleSource};
use crate::store::{Store, StoreError, AUTOPROV_CONFIG};

/// `last_seen` is rewritten at most this often, so that a phone polling its files does not
/// cost a disk flush per request.
pub const LAST_SEEN_GRANULARITY_SECS: u64 = 60;
/// Length of generated admin passwords.
pub const ADMIN_PASSWORD_LEN: usize = 20;
/// Concurrent writers on one device retry this many times before giving up.
const MAX_RETRIES: usize = 64;

/// DHCP lease event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpOp {
    /// Lease granted or renewed.
    Commit,
    /// Released by the client.
    Release,
    /// Expired.
    Expiry,
}

/// One DHCP option: code and raw value.
pub type DhcpOption = (u8, Vec<u8>);

/// What a transport knows about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestContext {
    /// A DHCP lease event (own responder or a foreign server's hook).
    Dhcp {
        /// Event.
        op: DhcpOp,
        /// Leased address.
        ip: Ipv4Addr,
        /// Client hardware address.
        mac: Mac,
        /// Options the client sent.
        options: Vec<DhcpOption>,
    },
    /// An HTTP(S) request.
    Http {
        /// Peer address.
        src: IpAddr,
        /// Path relative to the provisioning root, no leading slash.
        path: String,
        /// `User-Agent` header.
        user_agent: Option<String>,
    },
    /// A TFTP read request.
    Tftp {
        /// Peer address.
        src: IpAddr,
        /// Requested file name.
        filename: String,
    },
}

/// What the request says about the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// MAC address.
    pub mac: Option<Mac>,
    /// IP address.
    pub ip: Option<IpAddr>,
    /// Vendor.
    pub vendor: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// Firmware version.
    pub version: Option<String>,
    /// Serial number.
    pub sn: Option<String>,
}

/// The outcome of identification.
#[derive(Debug, Clone)]
pub struct Identified {
    /// The device as stored after the update.
    pub device: Device,
    /// The plugin that renders its files, when one is set and loaded.
    pub plugin: Option<Arc<Plugin>>,
    /// True when this request created the device.
    pub created: bool,
    /// What the request said.
    pub info: DeviceInfo,
}

/// Why identification failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The device belongs to another tenant than the request may reach.
    #[error("device {device} belongs to tenant {tenant}")]
    OtherTenant {
        /// Device id.
        device: String,
        /// Its tenant.
        tenant: String,
    },
    /// A read-only identification would have had to write.
    #[error("identification needs to write")]
    WouldWrite,
    /// Other requests kept changing the device; this one gave up.
    #[error("the device record changed {0} times during identification; giving up")]
    Contended(usize),
    /// The system random source failed.
    #[error("cannot generate a password: {0}")]
    Random(String),
}

/// Runs the identification pipeline.
pub struct Identifier {
    store: Store,
    default_tenant: String,
    limits: std::sync::Mutex<AutocreateLimits>,
}

/// Bounds on devices created by identification: anyone on the network can make up MACs.
#[derive(Debug, Clone)]
pub struct AutocreateLimits {
    /// Creations per second, on average (a burst of as many is allowed).
    pub per_second: f64,
    /// No creation once the store holds this many devices.
    pub max_devices: usize,
    tokens: f64,
    refilled: std::time::Instant,
    refused: u64,
}

impl AutocreateLimits {
    /// Limits with a full bucket.
    pub fn new(per_second: u32, max_devices: usize) -> AutocreateLimits {
        AutocreateLimits {
            per_second: f64::from(per_second),
            max_devices,
            tokens: f64::from(per_second),
            refilled: std::time::Instant::now(),
            refused: 0,
        }
    }

    /// Takes one creation from the bucket, if any is left.
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second.max(1.0));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A DHCP option's value as text for the rules: lossy UTF-8, trailing NULs and surrounding
/// whitespace removed; other bytes are kept (Polycom's binary option 60 is matched as is).
fn option_text(options: &[DhcpOption], code: u8) -> Option<String> {
    let (_, value) = options.iter().find(|(c, _)| *c == code)?;
    let text = String::from_utf8_lossy(value);
    let text = text.trim_end_matches('\0').trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// Extracts device facts from a request with every plugin's rules; returns them with the
/// plugin whose rule scored highest.
pub fn extract(ctx: &RequestContext, plugins: &PluginSet) -> (DeviceInfo, Option<Arc<Plugin>>) {
    let mut inputs: Vec<(RuleSource, String)> = Vec::new();
    let mut info = DeviceInfo::default();
    match ctx {
        RequestContext::Dhcp {
            ip, mac, options, ..
        } => {
            info.ip = Some(IpAddr::V4(*ip));
            info.mac = Some(*mac);
            inputs.extend(option_text(options, 60).map(|t| (RuleSource::DhcpVendorClass, t)));
            inputs.extend(option_text(options, 77).map(|t| (RuleSource::DhcpUserClass, t)));
        }
        RequestContext::Http {
            src,
            path,
            user_agent,
        } => {
            info.ip = Some(*src);
            inputs.extend(user_agent.clone().map(|ua| (RuleSource::UserAgent, ua)));
            inputs.push((RuleSource::Filename, path.clone()));
        }
        RequestContext::Tftp { src, filename } => {
            info.ip = Some(*src);
            inputs.push((
                RuleSource::Filename,
                filename.trim_start_matches('/').to_owned(),
            ));
        }
    }
    // Every field is taken from the highest-scoring match that has it; the plugin is the one
    // with the highest-scoring match overall (ties: the first by name).
    let mut matches: Vec<(Extracted, &Arc<Plugin>)> = Vec::new();
    for plugin in plugins.iter() {
        for (source, input) in &inputs {
            if let Some(found) = plugin.extract(*source, input) {
                matches.push((found, plugin));
            }
        }
    }
    matches.sort_by_key(|(found, _)| std::cmp::Reverse(found.score));
    let best = matches.first().map(|(_, p)| Arc::clone(p));
    for (found, _) in &matches {
        if info.mac.is_none() {
            info.mac = found.mac;
        }
        info.vendor = info.vendor.take().or_else(|| found.vendor.clone());
        info.model = info.model.take().or_else(|| found.model.clone());
        info.version = info.version.take().or_else(|| found.version.clone());
        info.sn = info.sn.take().or_else(|| found.sn.clone());
    }
    let mut best = best;
    // A file route with {mac} names the device even when no rule captured the MAC
    // (docs/plugins.md); the plugin of that route serves it unless a rule chose another.
    if info.mac.is_none() {
        let path = match ctx {
            RequestContext::Http { path, .. } => Some(path.as_str()),
            RequestContext::Tftp { filename, .. } => Some(filename.trim_start_matches('/')),
            RequestContext::Dhcp { .. } => None,
        };
        if let Some(path) = path {
            let claims: Vec<(Mac, &Arc<Plugin>)> = plugins
                .iter()
                .filter_map(|pl| pl.resolve(path).and_then(|r| r.mac).map(|m| (m, pl)))
                .collect();
            if let Some((mac, _)) = claims.first() {
                info.mac = Some(*mac);
            }
            // Several vendors use `{mac}.cfg`: the route chooses the plugin only when it is
            // the only one to claim the path; otherwise a later request (User-Agent, DHCP)
            // will.
            if let [(_, only)] = claims.as_slice() {
                best = best.or_else(|| Some(Arc::clone(only)));
            }
        }
    }
    (info, best)
}

/// A random password of `len` characters from an unambiguous alphanumeric alphabet.
pub fn random_password(len: usize) -> Result<String, IdentError> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf).map_err(|e| IdentError::Random(e.to_string()))?;
        // Rejection sampling keeps every character equally likely.
        let limit = 256 - 256 % ALPHABET.len();
        for &b in &buf {
            if (b as usize) < limit && out.len() < len {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

impl Identifier {
    /// The tenant that unknown devices are created in.
    pub fn default_tenant(&self) -> &str {
        &self.default_tenant
    }

    /// An identifier that autocreates devices in `default_tenant`.
    pub fn new(store: Store, default_tenant: impl Into<String>) -> Identifier {
        Identifier {
            store,
            default_tenant: default_tenant.into(),
            limits: std::sync::Mutex::new(AutocreateLimits::new(u32::MAX, usize::MAX)),
        }
    }

    /// Replaces the autocreation limits.
    pub fn set_limits(&self, limits: AutocreateLimits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// May one more device be created now? Logs refusals (once per 100).
    fn may_create(&self) -> bool {
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        // The rate first: counting the devices scans them, so at most `per_second` times a
        // second (a DHCP flood of unknown MACs would otherwise scan them all for each).
        let allowed = limits.take() && self.store.device_count() < limits.max_devices;
        if !allowed {
            limits.refused += 1;
            if limits.refused % 100 == 1 {
                tracing::warn!(
                    devices = self.store.device_count(),
                    max_devices = limits.max_devices,
                    per_second = limits.per_second,
                    refused = limits.refused,
                    "unknown phone not created: autocreation limit reached"
                );
            }
        }
        allowed
    }

    /// Identifies the device behind `ctx`, updating or creating its record. `Ok(None)` when
    /// the request names no known device and carries no MAC to create one with.
    pub fn identify(
        &self,
        ctx: &RequestContext,
        plugins: &PluginSet,
    ) -> Result<Option<Identified>, IdentError> {
        self.identify_with(ctx, plugins, true, None)
    }

    /// Identification for a request that may only reach devices of `tenant` (a URL key's):
    /// a device of another tenant fails with [`IdentError::OtherTenant`] before anything is
    /// written, and unknown phones are created only when `tenant` is the default tenant.
    /// Without `writes`, fails with [`IdentError::WouldWrite`] instead of writing.
    pub fn identify_scoped(
        &self,
        ctx: &RequestContext,
        plugins: &PluginSet,
        writes: bool,
        tenant: Option<&str>,
    ) -> Result<Option<Identified>, IdentError> {
        self.identify_with(ctx, plugins, writes, tenant)
    }

    /// Like [`Identifier::identify`] but never writes: fails with
    /// [`IdentError::WouldWrite`] when the store would change. Servers answer the common case
    /// (a known phone, nothing new) this way without leaving the async runtime.
    pub fn identify_readonly(
        &self,
        ctx: &RequestContext,
        plugins: &PluginSet,
    ) -> Result<Option<Identified>, IdentError> {
        self.identify_with(ctx, plugins, false, None)
    }

    fn identify_with(
        &self,
        ctx: &RequestContext,
        plugins: &PluginSet,
        writes: bool,
        tenant: Option<&str>,
    ) -> Result<Option<Identified>, IdentError> {
        let (info, best) = extract(ctx, plugins);
        let releasing = matches!(
            ctx,
            RequestContext::Dhcp {
                op: DhcpOp::Release | DhcpOp::Expiry,
                ..
            }
        );
        let now = model::now();
        for _ in 0..MAX_RETRIES {
            let existing = self.retrieve(&info)?;
            if let (Some(device), Some(tenant)) = (&existing, tenant) {
                if device.tenant != tenant {
                    return Err(IdentError::OtherTenant {
                        device: device.id.clone(),
                        tenant: device.tenant.clone(),
                    });
                }
            }
            if existing.is_none() && tenant.is_some_and(|t| t != self.default_tenant) {
                return Ok(None);
            }
            let (device, created) = match existing {
                Some(device) => {
                    match self.update(device, &info, best.as_deref(), releasing, now, writes)? {
                        Some(device) => (device, false),
                        None => continue,
                    }
                }
                None if releasing => return Ok(None),
                None => match info.mac {
                    None => return Ok(None),
                    Some(_) if !writes => return Err(IdentError::WouldWrite),
                    Some(_) if !self.may_create() => return Ok(None),
                    Some(mac) => match self.autocreate(mac, &info, best.as_deref(), now) {
                        Ok(device) => (device, true),
                        // Another request created it first: take that one.
                        Err(IdentError::Store(
                            StoreError::Taken { .. } | StoreError::AlreadyExists { .. },
                        )) => continue,
                        Err(e) => return Err(e),
                    },
                },
            };
            let plugin = device
                .plugin
                .as_deref()
                .and_then(|name| plugins.get(name))
                .cloned();
            return Ok(Some(Identified {
                device,
                plugin,
                created,
                info,
            }));
        }
        Err(IdentError::Contended(MAX_RETRIES))
    }

    /// A lease of `ip` ended and its MAC is unknown (dxtorc's `release|expiry IP`): clears
    /// the address of the one device that still has it. Returns that device.
    pub fn forget_ip(&self, ip: std::net::Ipv4Addr) -> Result<Option<Device>, IdentError> {
        let ip = IpAddr::V4(ip);
        for _ in 0..MAX_RETRIES {
            let mut found = self.store.devices_at_ip(&ip, 2)?;
            if found.len() != 1 {
                return Ok(None);
            }
            let mut device = found.remove(0);
            device.ip = None;
            match self.store.update_device(&device) {
                Ok(saved) => return Ok(Some(saved)),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IdentError::Contended(MAX_RETRIES))
    }

    /// By MAC; else by IP when exactly one device has it and it does not contradict the MAC.
    fn retrieve(&self, info: &DeviceInfo) -> Result<Option<Device>, IdentError> {
        if let Some(mac) = &info.mac {
            if let Some(device) = self.store.device_by_mac(mac)? {
                return Ok(Some(device));
            }
        }
        if let Some(ip) = &info.ip {
            // Two are enough to know the address is ambiguous.
            let mut found = self.store.devices_at_ip(ip, 2)?;
            if found.len() == 1 {
                let device = found.remove(0);
                if info.mac.is_none() || device.mac.is_none() {
                    return Ok(Some(device));
                }
            }
        }
        Ok(None)
    }

    /// Writes what changed; `Ok(None)` when another writer got there first (retry).
    fn update(
        &self,
        device: Device,
        info: &DeviceInfo,
        best: Option<&Plugin>,
        releasing: bool,
        now: u64,
        writes: bool,
    ) -> Result<Option<Device>, IdentError> {
        let mut new = device.clone();
        if releasing {
            if new.ip == info.ip {
                new.ip = None;
            }
        } else {
            if info.ip.is_some() {
                new.ip = info.ip;
            }
            if new.mac.is_none() {
                new.mac = info.mac;
            }
            // Identified facts fill gaps; the firmware version follows upgrades.
            new.vendor = new.vendor.or_else(|| info.vendor.clone());
            new.model = new.model.or_else(|| info.model.clone());
            new.sn = new.sn.or_else(|| info.sn.clone());
            if info.version.is_some() {
                new.version = info.version.clone();
            }
            if new.plugin.is_none() {
                new.plugin = best.map(|p| p.name.clone());
            }
            if new.admin_password.is_none() {
                if !writes {
                    return Err(IdentError::WouldWrite);
                }
                new.admin_password = Some(random_password(ADMIN_PASSWORD_LEN)?);
            }
            if new
                .last_seen
                .is_none_or(|seen| now.saturating_sub(seen) >= LAST_SEEN_GRANULARITY_SECS)
            {
                new.last_seen = Some(now);
            }
        }
        if new == device {
            return Ok(Some(device));
        }
        if !writes {
            return Err(IdentError::WouldWrite);
        }
        match self.store.update_device(&new) {
            Ok(stored) => Ok(Some(stored)),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(StoreError::Taken { .. }) => {
                // The identified MAC belongs to another record: keep this one's.
                new.mac = device.mac;
                match self.store.update_device(&new) {
                    Ok(stored) => Ok(Some(stored)),
                    Err(StoreError::Conflict { .. }) => Ok(None),
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    fn autocreate(
        &self,
        mac: Mac,
        info: &DeviceInfo,
        best: Option<&Plugin>,
        now: u64,
    ) -> Result<Device, IdentError> {
        let mut device = Device::new(model::new_id(), self.default_tenant.clone());
        device.mac = Some(mac);
        device.ip = info.ip;
        device.vendor = info.vendor.clone();
        device.model = info.model.clone();
        device.version = info.version.clone();
        device.sn = info.sn.clone();
        device.plugin = best.map(|p| p.name.clone());
        device.config = Some(AUTOPROV_CONFIG.to_owned());
        device.added = Added::Auto;
        device.is_new = true;
        device.last_seen = Some(now);
        device.admin_password = Some(random_password(ADMIN_PASSWORD_LEN)?);
        let stored = self.store.create_device(&device)?;
        tracing::info!(device = %stored.id, device_mac = %mac, tenant = %stored.tenant, vendor = ?stored.vendor, model = ?stored.model, plugin = ?stored.plugin, "new device created in autoprov");
        Ok(stored)
    }
}
