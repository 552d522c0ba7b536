//! Identification: from a request (DHCP, HTTP, TFTP) to a device record and its plugin.
//!
//! extract (every plugin's rules) → retrieve (by MAC, then by IP) → update the fields that
//! changed → autocreate unknown devices → choose the plugin. Pure logic over the store.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{self, Added, Device, Mac};
use crate::plugins::{Extracted, Plugin, PluginSet, RuleSource};
use crate::ratelimit::{Kind, Rejections, Source};
use crate::store::{Store, StoreError, Via, AUTOPROV_CONFIG};

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
    counters: AutocreateCounters,
    rejected: Arc<Rejections>,
    events: Arc<crate::events::Events>,
}

/// Default of `[general] autocreate_per_second`: the bucket's refill, new devices per second.
pub const DEFAULT_AUTOCREATE_PER_SECOND: u32 = 100;
/// Default of `[general] autocreate_burst`: the bucket's size, new devices at once. A rollout
/// of this many phones powered on together is created without a refusal.
pub const DEFAULT_AUTOCREATE_BURST: u32 = 2000;
/// MACs remembered as having spent a token (the oldest forgotten first).
pub const RECENT_MACS: usize = 8192;
/// How long a MAC that spent a token creates its device again without spending another.
pub const RECENT_WINDOW: Duration = Duration::from_secs(600);

/// Bounds on devices created by identification: anyone on the network can make up MACs.
///
/// A token bucket of `burst` tokens refilled at `per_second`: over any `t` seconds at most
/// `burst + per_second × t` unknown MACs get a device, and none once the store holds
/// `max_devices`. A MAC spends one token however many ways it shows up: one that spent a
/// token within [`RECENT_WINDOW`] (among the last [`RECENT_MACS`]) is let through again
/// without spending another (its lease and its first fetch racing, a retried request, a
/// creation that lost to a concurrent one).
#[derive(Debug, Clone)]
pub struct AutocreateLimits {
    /// Tokens added per second.
    pub per_second: f64,
    /// Size of the bucket, full at start.
    pub burst: f64,
    /// No creation once the store holds this many devices.
    pub max_devices: usize,
    tokens: f64,
    refilled: Instant,
    recent: RecentMacs,
}

/// How a new MAC fared with the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It spent a token now.
    Token,
    /// It spent one within the window: let through without spending.
    Recent,
    /// No token left.
    Empty,
}

impl AutocreateLimits {
    /// Limits with a full bucket of `burst` tokens refilled at `per_second`.
    pub fn new(per_second: u32, burst: u32, max_devices: usize) -> AutocreateLimits {
        AutocreateLimits {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            max_devices,
            tokens: f64::from(burst.max(1)),
            refilled: Instant::now(),
            recent: RecentMacs::default(),
        }
    }

    /// Tokens in the bucket at `now`.
    pub fn available(&mut self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled = self.refilled.max(now);
        self.tokens
    }

    /// Lets `mac` create its device at `now` if it spent a token recently, else if a token
    /// is left (spending it).
    pub fn admit(&mut self, mac: Mac, now: Instant) -> Admission {
        if self.recent.contains(mac, now) {
            return Admission::Recent;
        }
        if self.available(now) < 1.0 {
            return Admission::Empty;
        }
        self.tokens -= 1.0;
        self.recent.insert(mac, now);
        Admission::Token
    }
}

/// The MACs that spent a token lately, oldest first; bounded in number and age.
#[derive(Debug, Clone, Default)]
struct RecentMacs {
    order: VecDeque<(Instant, Mac)>,
    spent: HashMap<Mac, Instant>,
}

impl RecentMacs {
    fn forget_before(&mut self, now: Instant) {
        while let Some(&(at, mac)) = self.order.front() {
            if now.saturating_duration_since(at) < RECENT_WINDOW && self.order.len() <= RECENT_MACS
            {
                break;
            }
            self.order.pop_front();
            // A MAC is in `order` once: `insert` is only called for one not in `spent`.
            self.spent.remove(&mac);
        }
    }

    fn contains(&mut self, mac: Mac, now: Instant) -> bool {
        self.forget_before(now);
        self.spent.contains_key(&mac)
    }

    fn insert(&mut self, mac: Mac, now: Instant) {
        if self.spent.insert(mac, now).is_none() {
            self.order.push_back((now, mac));
        }
        self.forget_before(now);
    }
}

/// What autocreation did since start (`provisiond_autocreate_total` on /metrics).
#[derive(Debug, Default)]
pub struct AutocreateCounters {
    /// Devices created by identification.
    pub created: AtomicU64,
    /// Unknown MACs refused: the bucket was empty.
    pub refused_rate: AtomicU64,
    /// Unknown MACs refused: the store holds `max_devices` devices.
    pub refused_max_devices: AtomicU64,
    /// Tokens taken from the bucket.
    pub tokens_spent: AtomicU64,
    /// Creations let through without a token: the MAC spent one within the window.
    pub recent: AtomicU64,
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
            // The all-zero MAC is a placeholder name (Polycom's 000000000000.cfg, asked for
            // by every phone), never a device.
            let claims: Vec<(Mac, &Arc<Plugin>)> = plugins
                .iter()
                .filter_map(|pl| pl.resolve(path).and_then(|r| r.mac).map(|m| (m, pl)))
                .filter(|(m, _)| m.octets() != [0; 6])
                .collect();
            if let Some((mac, _)) = claims.first() {
                info.mac = Some(*mac);
            }
            // Several vendors use `{mac}.cfg`: the route chooses the plugin only when it is
            // the only one to claim the path; otherwise a later request (User-Agent, DHCP)
            // will. A plugin with file-name rules has said which names are its phones' (here
            // none matched, or it would be `best` already): its route alone does not claim
            // another vendor's file.
            if let [(_, only)] = claims.as_slice() {
                if !only.has_rules_for(RuleSource::Filename) {
                    best = best.or_else(|| Some(Arc::clone(only)));
                }
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

    /// An identifier that autocreates devices in `default_tenant`, without limits until
    /// [`Identifier::set_limits`].
    pub fn new(store: Store, default_tenant: impl Into<String>) -> Identifier {
        Identifier {
            store,
            default_tenant: default_tenant.into(),
            limits: std::sync::Mutex::new(AutocreateLimits::new(u32::MAX, u32::MAX, usize::MAX)),
            counters: AutocreateCounters::default(),
            rejected: Arc::default(),
            events: Arc::default(),
        }
    }

    /// Publishes the devices it creates on `events`.
    pub fn publishing_to(mut self, events: Arc<crate::events::Events>) -> Identifier {
        self.events = events;
        self
    }

    /// Counts refused autocreations in `rejected` (and bounds their log lines with it).
    pub fn reporting_to(mut self, rejected: Arc<Rejections>) -> Identifier {
        self.rejected = rejected;
        self
    }

    /// Replaces the autocreation limits.
    pub fn set_limits(&self, limits: AutocreateLimits) {
        *self.limits.lock().unwrap_or_else(|e| e.into_inner()) = limits;
    }

    /// What autocreation did so far.
    pub fn autocreate_counters(&self) -> &AutocreateCounters {
        &self.counters
    }

    /// Tokens left in the autocreation bucket now.
    pub fn autocreate_tokens(&self) -> f64 {
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        limits.available(Instant::now())
    }

    /// May `mac`, unknown, get a device now? Refusals are counted and their log lines
    /// bounded per source (`src`, the requester's address) like other strangers' events.
    fn may_create(&self, mac: Mac, src: Option<IpAddr>) -> bool {
        let (admission, max_devices, burst, per_second) = {
            let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
            let admission = limits.admit(mac, Instant::now());
            (
                admission,
                limits.max_devices,
                limits.burst,
                limits.per_second,
            )
        };
        let reason = match admission {
            Admission::Empty => Some("no token left"),
            // The bucket first: counting the devices may cost more than a bucket refusal.
            Admission::Token | Admission::Recent if self.store.device_count() >= max_devices => {
                Some("max_devices reached")
            }
            Admission::Token | Admission::Recent => None,
        };
        let bump = |n: &AtomicU64| n.fetch_add(1, Ordering::Relaxed);
        match admission {
            Admission::Token => bump(&self.counters.tokens_spent),
            Admission::Recent => bump(&self.counters.recent),
            Admission::Empty => bump(&self.counters.refused_rate),
        };
        let Some(reason) = reason else {
            return true;
        };
        if admission != Admission::Empty {
            bump(&self.counters.refused_max_devices);
        }
        let source = src.map_or(Source::Local("a request without address"), Source::from);
        if self.rejected.admit(Kind::Autocreate, source) {
            tracing::warn!(
                device_mac = %mac,
                src = %source,
                burst,
                per_second,
                max_devices,
                "unknown phone not created: autocreation limit ({reason})"
            );
        }
        false
    }

    /// Identifies the device behind `ctx`, updating or creating its record. `Ok(None)` when
    /// the request names no known device and carries no MAC to create one with.
    pub fn identify(
        &self,
        ctx: &RequestContext,
        plugins: &PluginSet,
    ) -> Result<Option<Identified>, IdentError> {
        self.identify_with(ctx, plugins, true, None, None)
    }

    /// [`Identifier::identify`] of a request that came through `via` (a DHCP lease event
    /// of a foreign server looks like the built-in responder's): the device's history names it.
    pub fn identify_via(
        &self,
        ctx: &RequestContext,
        plugins: &PluginSet,
        via: Via,
    ) -> Result<Option<Identified>, IdentError> {
        self.identify_with(ctx, plugins, true, None, Some(via))
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
        self.identify_with(ctx, plugins, writes, tenant, None)
    }

    /// Like [`Identifier::identify`] but never writes: fails with
    /// [`IdentError::WouldWrite`] when the store would change. Servers answer the common case
    /// (a known phone, nothing new) this way without leaving the async runtime.
    pub fn identify_readonly(
        &self,
        ctx: &RequestContext,
        plugins: &PluginSet,
    ) -> Result<Option<Identified>, IdentError> {
        self.identify_with(ctx, plugins, false, None, None)
    }

    fn identify_with(
        &self,
        ctx: &RequestContext,
        plugins: &PluginSet,
        writes: bool,
        tenant: Option<&str>,
        via: Option<Via>,
    ) -> Result<Option<Identified>, IdentError> {
        let (info, best) = extract(ctx, plugins);
        let via = via.unwrap_or(match ctx {
            RequestContext::Dhcp { .. } => Via::Dhcp,
            RequestContext::Http { .. } => Via::Http,
            RequestContext::Tftp { .. } => Via::Tftp,
        });
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
                    match self.update(
                        device,
                        &info,
                        best.as_deref(),
                        releasing,
                        (now, via),
                        writes,
                    )? {
                        Some(device) => (device, false),
                        None => continue,
                    }
                }
                None if releasing => return Ok(None),
                None => match info.mac {
                    None => return Ok(None),
                    Some(_) if !writes => return Err(IdentError::WouldWrite),
                    Some(mac) if !self.may_create(mac, info.ip) => return Ok(None),
                    Some(mac) => match self.autocreate(mac, &info, best.as_deref(), now, via) {
                        Ok(device) => {
                            self.counters.created.fetch_add(1, Ordering::Relaxed);
                            (device, true)
                        }
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
        (now, via): (u64, Via),
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
        match self.store.update_device_identified(&new, via, now) {
            Ok(stored) => Ok(Some(stored)),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(StoreError::Taken { .. }) => {
                // The identified MAC belongs to another record: keep this one's.
                new.mac = device.mac;
                match self.store.update_device_identified(&new, via, now) {
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
        via: Via,
    ) -> Result<Device, IdentError> {
        let mut device = Device::new(model::new_device_id(), self.default_tenant.clone());
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
        let stored = self.store.create_device_identified(&device, via, now)?;
        tracing::info!(device = %stored.id, device_mac = %mac, tenant = %stored.tenant, vendor = ?stored.vendor, model = ?stored.model, plugin = ?stored.plugin, "new device created in autoprov");
        self.events.publish_at(
            stored.tenant.clone(),
            crate::events::What::Device(crate::events::DeviceCreated::of(&stored, "autocreated")),
            now,
        );
        Ok(stored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> Mac {
        let b = i.to_be_bytes();
        Mac::new([0x02, 0x42, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn a_full_bucket_admits_a_rollout_then_refills_at_the_rate() {
        let mut limits = AutocreateLimits::new(100, 2000, usize::MAX);
        let t0 = limits.refilled;
        let admitted = (0..3000)
            .filter(|&i| limits.admit(mac(i), t0) == Admission::Token)
            .count();
        assert_eq!(admitted, 2000, "the burst, then nothing");
        // Half a second later: 50 more.
        let t1 = t0 + Duration::from_millis(500);
        let more = (3000..3100)
            .filter(|&i| limits.admit(mac(i), t1) == Admission::Token)
            .count();
        assert_eq!(more, 50);
        // Never more than the burst, however long the bucket rested.
        let later = t1 + Duration::from_secs(3600);
        assert_eq!(limits.available(later), 2000.0);
    }

    #[test]
    fn a_mac_spends_one_token_within_the_window() {
        let mut limits = AutocreateLimits::new(1, 2, usize::MAX);
        let t0 = limits.refilled;
        assert_eq!(limits.admit(mac(1), t0), Admission::Token);
        assert_eq!(limits.admit(mac(1), t0), Admission::Recent);
        assert_eq!(limits.admit(mac(2), t0), Admission::Token);
        assert_eq!(limits.admit(mac(3), t0), Admission::Empty);
        assert_eq!(
            limits.admit(mac(1), t0),
            Admission::Recent,
            "even when empty"
        );
        // After the window the MAC is new again and needs a token.
        let after = t0 + RECENT_WINDOW;
        assert_eq!(limits.admit(mac(1), after), Admission::Token);
        assert_eq!(limits.admit(mac(2), after), Admission::Token);
        assert_eq!(limits.admit(mac(3), after), Admission::Empty);
    }

    #[test]
    fn the_recent_set_is_bounded_oldest_first() {
        let per_second = u32::MAX;
        let mut limits = AutocreateLimits::new(per_second, u32::MAX, usize::MAX);
        let t0 = limits.refilled;
        let n = RECENT_MACS as u32 + 10;
        for i in 0..n {
            assert_eq!(limits.admit(mac(i), t0), Admission::Token);
        }
        assert_eq!(limits.recent.order.len(), RECENT_MACS);
        assert_eq!(limits.recent.spent.len(), RECENT_MACS);
        assert_eq!(limits.admit(mac(0), t0), Admission::Token, "forgotten");
        assert_eq!(limits.admit(mac(n - 1), t0), Admission::Recent);
    }
}
