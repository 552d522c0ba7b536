//! The resync queue: devices waiting for a NOTIFY, coalesced, bounded, sent at a bounded rate
//! by at most `[sync] concurrency` workers, each outcome recorded per device.
//!
//! No task runs while nothing waits: [`SyncQueue::queue`] starts workers on the runtime it
//! is called from, up to the concurrency bound, and a finishing worker starts the next one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::digest::Credentials;
use crate::config;
use crate::files::FileService;
use crate::model::Device;
use crate::plugins::{
    merged_raw_config, Plugin, PluginSet, Renderer, Resolved, ServerInfo, Target,
};
use crate::store::{LastSync, Reason, Store, StoreError, SyncState, SyncStatus};

/// What [`SyncQueue::queue`] did with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// The device now waits for its turn.
    Queued,
    /// The device was already waiting: it is told once (a forcing reason wins).
    Coalesced,
    /// The queue is full: nothing will be sent (counted, warned about).
    Dropped,
    /// `[sync] enabled = false`: nothing is ever sent.
    Disabled,
}

/// What the queue did so far, for `/metrics`.
#[derive(Debug, Default)]
pub struct SyncCounters {
    /// Devices queued.
    pub queued: AtomicU64,
    /// Requests for a device that was already waiting.
    pub coalesced: AtomicU64,
    /// Requests refused because the queue was full.
    pub dropped: AtomicU64,
    /// NOTIFYs that the phone accepted.
    pub sent_ok: AtomicU64,
    /// NOTIFYs refused, unanswered, or whose credentials the phone refused.
    pub sent_failed: AtomicU64,
    /// Config changes that left the device's rendered files as it last got them.
    pub unchanged: AtomicU64,
    /// Devices with nothing to send to (no address, no plugin, deleted…).
    pub skipped: AtomicU64,
}

/// The resync queue; a cheap handle, shared by the REST API, the provisioning server and
/// whoever else resyncs phones.
#[derive(Clone)]
pub struct SyncQueue {
    shared: Arc<Shared>,
}

struct Shared {
    settings: config::Sync,
    /// `None` for a queue that never sends ([`SyncQueue::disabled`]).
    core: Option<Core>,
    state: Mutex<Waiting>,
    /// When the next NOTIFY may start (`[sync] rate`).
    next_start: Mutex<Option<Instant>>,
    runtime: OnceLock<Handle>,
    counters: SyncCounters,
    /// When a drop was last warned about.
    warned: Mutex<Option<std::time::Instant>>,
}

struct Core {
    store: Store,
    files: Arc<FileService>,
    /// Its own renderer, emptied after each device: the served files' cache is not filled
    /// with every device of a mass resync.
    renderer: Renderer,
}

#[derive(Default)]
struct Waiting {
    /// Devices in the order they will be told.
    order: VecDeque<String>,
    waiting: HashMap<String, Entry>,
    /// Devices queued again while their NOTIFY is in flight: they wait for it to end, so
    /// that a phone never gets two of ours at once.
    deferred: HashMap<String, Entry>,
    running: HashSet<String>,
}

struct Entry {
    reason: Reason,
    waiters: Vec<oneshot::Sender<LastSync>>,
}

/// How often a full queue is warned about at most.
const DROP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

impl Default for SyncQueue {
    fn default() -> Self {
        SyncQueue::disabled()
    }
}

impl SyncQueue {
    /// A queue that resyncs devices of `store` with `settings`; rendering (for the files'
    /// digest) sees the server as `server` describes it.
    pub fn new(
        store: Store,
        files: Arc<FileService>,
        server: ServerInfo,
        settings: config::Sync,
    ) -> SyncQueue {
        let renderer = Renderer::new(store.clone(), server);
        SyncQueue::build(
            settings,
            Some(Core {
                store,
                files,
                renderer,
            }),
        )
    }

    /// A queue that sends nothing (tests and tools without a daemon).
    pub fn disabled() -> SyncQueue {
        SyncQueue::build(
            config::Sync {
                enabled: false,
                ..config::Sync::default()
            },
            None,
        )
    }

    fn build(settings: config::Sync, core: Option<Core>) -> SyncQueue {
        // Workers run on the runtime that builds the queue (the daemon's), else on the first
        // one that queues a device.
        let runtime = OnceLock::new();
        if let Ok(handle) = Handle::try_current() {
            let _ = runtime.set(handle);
        }
        SyncQueue {
            shared: Arc::new(Shared {
                settings,
                core,
                state: Mutex::default(),
                next_start: Mutex::default(),
                runtime,
                counters: SyncCounters::default(),
                warned: Mutex::default(),
            }),
        }
    }

    /// The `[sync]` settings.
    pub fn settings(&self) -> &config::Sync {
        &self.shared.settings
    }

    /// What the queue did so far.
    pub fn counters(&self) -> &SyncCounters {
        &self.shared.counters
    }

    /// Devices waiting for their turn now.
    pub fn waiting(&self) -> usize {
        let state = self.shared.lock();
        state.waiting.len() + state.deferred.len()
    }

    /// NOTIFYs in flight now.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().running.len()
    }

    /// Queues a resync of `device` for `reason`; never waits. Call it from a Tokio runtime
    /// (an async task or a blocking thread of one): workers start on it.
    pub fn queue(&self, device: &str, reason: Reason) -> Queued {
        self.enqueue(device, reason, None)
    }

    /// [`SyncQueue::queue`], and a receiver of the outcome once the device was handled
    /// (dropped unanswered when the queue refused the request).
    pub fn queue_watched(
        &self,
        device: &str,
        reason: Reason,
    ) -> (Queued, oneshot::Receiver<LastSync>) {
        let (tx, rx) = oneshot::channel();
        (self.enqueue(device, reason, Some(tx)), rx)
    }

    fn enqueue(
        &self,
        device: &str,
        reason: Reason,
        waiter: Option<oneshot::Sender<LastSync>>,
    ) -> Queued {
        let shared = &self.shared;
        if !shared.settings.enabled || shared.core.is_none() {
            return Queued::Disabled;
        }
        let mut state = shared.lock();
        let running = state.running.contains(device);
        let waiting = state.waiting.len() + state.deferred.len();
        let slot = if running {
            &mut state.deferred
        } else {
            &mut state.waiting
        };
        if let Some(entry) = slot.get_mut(device) {
            if reason.forces() && !entry.reason.forces() {
                entry.reason = reason;
            }
            entry.waiters.extend(waiter);
            shared.counters.coalesced.fetch_add(1, Relaxed);
            return Queued::Coalesced;
        }
        if waiting >= shared.settings.queue_max {
            drop(state);
            shared.counters.dropped.fetch_add(1, Relaxed);
            shared.warn_dropped();
            return Queued::Dropped;
        }
        slot.insert(
            device.to_owned(),
            Entry {
                reason,
                waiters: waiter.into_iter().collect(),
            },
        );
        if !running {
            state.order.push_back(device.to_owned());
        }
        drop(state);
        shared.counters.queued.fetch_add(1, Relaxed);
        Shared::pump(shared);
        Queued::Queued
    }

    /// Records how a resync of `device` ended without queueing it (a request refused before
    /// any NOTIFY, such as a device without an address). Blocking (a store write).
    pub fn record(
        &self,
        device: &str,
        reason: Reason,
        state: SyncStatus,
        detail: &str,
    ) -> Result<LastSync, StoreError> {
        let last = LastSync {
            state,
            at: crate::model::now(),
            detail: detail.to_owned(),
            reason,
        };
        if let Some(core) = &self.shared.core {
            let previous = core.previous_digest(device);
            core.store.set_sync_state(
                device,
                &SyncState {
                    last: last.clone(),
                    files_digest: previous,
                },
            )?;
        }
        Ok(last)
    }
}

/// Where a NOTIFY for `device` goes and with what event, or why none can be sent. The same
/// rules for `POST /dev_mgr/synchronize` and the queue.
pub fn target(
    device: &Device,
    plugins: &PluginSet,
    settings: &config::Sync,
) -> Result<(SocketAddr, String), &'static str> {
    if !settings.enabled {
        return Err("[sync] enabled = false");
    }
    // An IPv4 phone stored as ::ffff:a.b.c.d is written as IPv4 in the NOTIFY; addresses no
    // phone can have are refused.
    let target = device
        .ip
        .map(|ip| ip.to_canonical())
        .filter(|ip| !ip.is_unspecified() && !ip.is_multicast() && ip != &IpAddr::from([255; 4]))
        .map(|ip| SocketAddr::new(ip, settings.sip_port))
        .ok_or("the device has no usable IP address")?;
    let event = device
        .plugin
        .as_deref()
        .and_then(|name| plugins.get(name))
        .and_then(|plugin| plugin.sync_event.clone())
        .ok_or("the device's plugin has no sync_event")?;
    Ok((target, event))
}

/// What a worker found out about a device before sending anything.
enum Plan {
    /// The device no longer exists.
    Gone,
    /// A config change for a device that has no files to render: nothing to do.
    Ignore,
    /// Nothing to send; record this.
    Record(SyncStatus, String),
    /// Send a NOTIFY.
    Send {
        target: SocketAddr,
        event: String,
        credentials: Option<Credentials>,
    },
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handle(&self) -> Option<Handle> {
        if let Some(handle) = self.runtime.get() {
            return Some(handle.clone());
        }
        let handle = Handle::try_current().ok()?;
        Some(self.runtime.get_or_init(|| handle).clone())
    }

    fn warn_dropped(&self) {
        let now = std::time::Instant::now();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if warned.is_some_and(|at| now.duration_since(at) < DROP_WARNING_INTERVAL) {
            return;
        }
        *warned = Some(now);
        tracing::warn!(
            queue_max = self.settings.queue_max,
            dropped_total = self.counters.dropped.load(Relaxed),
            "resync queue full: devices dropped without a NOTIFY (warned at most once a minute; [sync] queue_max)"
        );
    }

    /// Starts workers for waiting devices while fewer than `concurrency` run.
    fn pump(self: &Arc<Self>) {
        // Without a runtime (a tool, a test without one) devices wait until a call with one.
        let Some(handle) = self.handle() else {
            return;
        };
        loop {
            let mut state = self.lock();
            if state.running.len() >= self.settings.concurrency {
                return;
            }
            let Some(device) = state.order.pop_front() else {
                return;
            };
            let Some(entry) = state.waiting.remove(&device) else {
                continue;
            };
            state.running.insert(device.clone());
            drop(state);
            let shared = Arc::clone(self);
            handle.spawn(async move {
                // Created inside the task: a task that never runs (runtime shutting down)
                // starts no other.
                let done = Done {
                    shared: Arc::clone(&shared),
                    device: device.clone(),
                };
                shared.work(&device, entry).await;
                drop(done);
            });
        }
    }

    /// One device, start to end: plan, NOTIFY, record, tell the waiters.
    async fn work(self: &Arc<Self>, device: &str, entry: Entry) {
        let last = self.attempt(device, entry.reason).await;
        for waiter in entry.waiters {
            let _ = waiter.send(last.clone());
        }
    }

    async fn attempt(self: &Arc<Self>, device: &str, reason: Reason) -> LastSync {
        let finished = |state: SyncStatus, detail: String| LastSync {
            state,
            at: crate::model::now(),
            detail,
            reason,
        };
        let planning = {
            let shared = Arc::clone(self);
            let device = device.to_owned();
            tokio::task::spawn_blocking(move || shared.plan(&device, reason)).await
        };
        let (plan, digest) = match planning {
            Ok(Ok(planned)) => planned,
            Ok(Err(e)) => {
                tracing::warn!(device, "resync not attempted: {e}");
                return self
                    .save(device, finished(SyncStatus::Failed, e.to_string()), None)
                    .await;
            }
            Err(e) => {
                tracing::error!(device, "resync planning failed: {e}");
                return finished(SyncStatus::Failed, "internal error".to_owned());
            }
        };
        let (target, event, credentials) = match plan {
            Plan::Gone => {
                self.counters.skipped.fetch_add(1, Relaxed);
                return finished(SyncStatus::Skipped, "the device no longer exists".into());
            }
            Plan::Ignore => {
                self.counters.skipped.fetch_add(1, Relaxed);
                return finished(
                    SyncStatus::Skipped,
                    "the device has no config or no plugin".into(),
                );
            }
            Plan::Record(state, detail) => {
                let counter = match state {
                    SyncStatus::Unchanged => &self.counters.unchanged,
                    _ => &self.counters.skipped,
                };
                counter.fetch_add(1, Relaxed);
                tracing::debug!(device, reason = reason.as_str(), "resync: {detail}");
                return self.save(device, finished(state, detail), None).await;
            }
            Plan::Send {
                target,
                event,
                credentials,
            } => (target, event, credentials),
        };
        self.wait_for_slot().await;
        let timeout = Duration::from_secs(self.settings.timeout_secs.max(1));
        match super::sip::notify(target, &event, timeout, credentials.as_ref()).await {
            Ok(code) => {
                self.counters.sent_ok.fetch_add(1, Relaxed);
                tracing::info!(device, %target, code, reason = reason.as_str(), "SIP NOTIFY {event}: accepted");
                let last = finished(SyncStatus::Ok, format!("{target} answered {code}"));
                self.save(device, last, digest).await
            }
            Err(e) => {
                self.counters.sent_failed.fetch_add(1, Relaxed);
                tracing::warn!(device, reason = reason.as_str(), "SIP NOTIFY {event}: {e}");
                self.save(device, finished(SyncStatus::Failed, e.to_string()), None)
                    .await
            }
        }
    }

    /// Records `last` for `device`, with `digest` as the files the phone now has (`None`:
    /// the ones it had).
    async fn save(
        self: &Arc<Self>,
        device: &str,
        last: LastSync,
        digest: Option<String>,
    ) -> LastSync {
        let Some(core) = &self.core else {
            return last;
        };
        let store = core.store.clone();
        let device = device.to_owned();
        let record = last.clone();
        let shared = Arc::clone(self);
        let written = tokio::task::spawn_blocking(move || {
            let files_digest = match digest {
                Some(d) => Some(d),
                None => shared
                    .core
                    .as_ref()
                    .and_then(|c| c.previous_digest(&device)),
            };
            store
                .set_sync_state(
                    &device,
                    &SyncState {
                        last: record,
                        files_digest,
                    },
                )
                .map_err(|e| (device, e))
        })
        .await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err((device, e))) => tracing::warn!(device, "resync state not recorded: {e}"),
            Err(e) => tracing::error!("resync state task failed: {e}"),
        }
        last
    }

    /// Waits for the next start allowed by `[sync] rate`.
    async fn wait_for_slot(&self) {
        let interval = Duration::from_secs(1) / self.settings.rate.max(1);
        let slot = {
            let mut next = self.next_start.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Blocking: what to do for `device`, and the digest of its rendered files.
    fn plan(&self, device: &str, reason: Reason) -> Result<(Plan, Option<String>), StoreError> {
        let Some(core) = &self.core else {
            return Ok((Plan::Gone, None));
        };
        let Some(device) = core.store.device(device)? else {
            return Ok((Plan::Gone, None));
        };
        let plugins = core.files.plugins();
        let plugin = device.plugin.as_deref().and_then(|p| plugins.get(p));
        let chain = device
            .config
            .as_ref()
            .map(|_| core.renderer.config_chain(&device));
        let digest = match (plugin, &chain) {
            (Some(plugin), Some(_)) => Some(core.files_digest(plugin, &device)),
            _ => None,
        };
        if reason == Reason::ConfigChanged {
            let Some(digest) = &digest else {
                return Ok((Plan::Ignore, None));
            };
            if core.previous_digest(&device.id).as_ref() == Some(digest) {
                let detail = "rendered files unchanged since the last NOTIFY accepted".to_owned();
                return Ok((Plan::Record(SyncStatus::Unchanged, detail), None));
            }
        }
        let (target, event) = match target(&device, &plugins, &self.settings) {
            Ok(found) => found,
            Err(why) => return Ok((Plan::Record(SyncStatus::Skipped, why.to_owned()), None)),
        };
        let credentials = match chain {
            Some(Ok(chain)) => {
                line_credentials(&merged_raw_config(chain.iter().map(|c| &c.raw_config)))
            }
            Some(Err(e)) => {
                tracing::debug!(device = %device.id, "no credentials for the NOTIFY: {e}");
                None
            }
            None => None,
        };
        Ok((
            Plan::Send {
                target,
                event,
                credentials,
            },
            digest,
        ))
    }
}

impl Core {
    /// The files digest recorded at the device's last accepted NOTIFY. A state that no longer
    /// decodes counts as none (it is overwritten by the next outcome).
    fn previous_digest(&self, device: &str) -> Option<String> {
        match self.store.sync_state(device) {
            Ok(state) => state.and_then(|s| s.files_digest),
            Err(e) => {
                tracing::warn!(device, "resync state unreadable: {e}");
                None
            }
        }
    }

    /// SHA-256 over every template route of the plugin rendered for `device` (the route, then
    /// the file or the rendering error), in the plugin's route order.
    fn files_digest(&self, plugin: &Plugin, device: &Device) -> String {
        let mut hash = Sha256::new();
        for (pattern, target) in plugin.routes() {
            if !matches!(target, Target::Template(_)) {
                continue;
            }
            let resolved = Resolved {
                target: target.clone(),
                mac: device.mac,
                content_type: String::new(),
            };
            hash.update((pattern.len() as u64).to_be_bytes());
            hash.update(pattern.as_bytes());
            match self.renderer.render(plugin, device, &resolved) {
                Ok(rendered) => {
                    hash.update([1]);
                    hash.update((rendered.body.len() as u64).to_be_bytes());
                    hash.update(&rendered.body);
                }
                Err(e) => {
                    hash.update([0]);
                    hash.update(e.to_string().as_bytes());
                }
            }
        }
        self.renderer.clear_cache();
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// SIP line 1's digest credentials in a merged raw config: `auth_username`, else
/// `username`, and `password`.
fn line_credentials(raw: &crate::model::RawConfig) -> Option<Credentials> {
    let line = raw.get("sip_lines")?.get("1")?;
    let text = |key: &str| {
        line.get(key)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
    };
    Some(Credentials {
        username: text("auth_username")
            .or_else(|| text("username"))?
            .to_owned(),
        password: line.get("password")?.as_str()?.to_owned(),
    })
}

/// Ends a worker: frees its place and starts the next device.
struct Done {
    shared: Arc<Shared>,
    device: String,
}

impl Drop for Done {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.running.remove(&self.device);
        if let Some(entry) = state.deferred.remove(&self.device) {
            state.waiting.insert(self.device.clone(), entry);
            state.order.push_back(self.device.clone());
        }
        drop(state);
        Shared::pump(&self.shared);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue over an empty store, outside any runtime: devices stay waiting, so that what
    /// the queue holds can be looked at.
    fn idle_queue(queue_max: usize) -> (tempfile::TempDir, SyncQueue) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let files = Arc::new(FileService::new(
            store.clone(),
            "master",
            config::HttpAuthStrategy::Disabled,
            Arc::new(PluginSet::load(&[])),
            Renderer::new(store.clone(), ServerInfo::default()),
        ));
        let settings = config::Sync {
            queue_max,
            ..config::Sync::default()
        };
        let queue = SyncQueue::new(store, files, ServerInfo::default(), settings);
        (dir, queue)
    }

    fn reason_of(queue: &SyncQueue, device: &str) -> Option<Reason> {
        queue.shared.lock().waiting.get(device).map(|e| e.reason)
    }

    #[test]
    fn a_waiting_device_is_queued_once_and_a_forcing_reason_wins() {
        let (_dir, queue) = idle_queue(10);
        assert_eq!(queue.queue("d", Reason::ConfigChanged), Queued::Queued);
        assert_eq!(queue.queue("d", Reason::ConfigChanged), Queued::Coalesced);
        assert_eq!(reason_of(&queue, "d"), Some(Reason::ConfigChanged));
        // A redemption must reach the phone even if its files compare equal.
        assert_eq!(queue.queue("d", Reason::Redeemed), Queued::Coalesced);
        assert_eq!(reason_of(&queue, "d"), Some(Reason::Redeemed));
        assert_eq!(queue.queue("d", Reason::ConfigChanged), Queued::Coalesced);
        assert_eq!(reason_of(&queue, "d"), Some(Reason::Redeemed));
        assert_eq!(queue.waiting(), 1);
        let c = queue.counters();
        assert_eq!((c.queued.load(Relaxed), c.coalesced.load(Relaxed)), (1, 3));
    }

    #[test]
    fn beyond_queue_max_requests_are_dropped_and_counted() {
        let (_dir, queue) = idle_queue(2);
        assert_eq!(queue.queue("a", Reason::Manual), Queued::Queued);
        assert_eq!(queue.queue("b", Reason::Manual), Queued::Queued);
        assert_eq!(queue.queue("c", Reason::Manual), Queued::Dropped);
        assert_eq!(queue.queue("d", Reason::Reset), Queued::Dropped);
        // A device already waiting still coalesces.
        assert_eq!(queue.queue("a", Reason::Job), Queued::Coalesced);
        assert_eq!(queue.waiting(), 2);
        assert_eq!(queue.counters().dropped.load(Relaxed), 2);
        // Refused requests tell their watchers at once: no outcome will come.
        let (queued, mut outcome) = queue.queue_watched("e", Reason::Manual);
        assert_eq!(queued, Queued::Dropped);
        assert!(outcome.try_recv().is_err());
    }

    #[test]
    fn a_disabled_queue_takes_nothing() {
        let queue = SyncQueue::disabled();
        assert_eq!(queue.queue("d", Reason::Redeemed), Queued::Disabled);
        assert_eq!(queue.waiting(), 0);
        assert_eq!(queue.counters().queued.load(Relaxed), 0);
    }

    #[test]
    fn line_one_credentials_prefer_the_auth_username() {
        let raw = |v: serde_json::Value| v.as_object().cloned().unwrap();
        let both = raw(serde_json::json!({"sip_lines": {"1": {
            "username": "1001", "auth_username": "auth1001", "password": "pw"}}}));
        let c = line_credentials(&both).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("auth1001", "pw")
        );
        let user = raw(serde_json::json!({"sip_lines": {"1": {
            "username": "1001", "auth_username": "", "password": ""}}}));
        assert_eq!(line_credentials(&user).unwrap().username, "1001");
        for none in [
            serde_json::json!({}),
            serde_json::json!({"sip_lines": {"2": {"username": "u", "password": "p"}}}),
            serde_json::json!({"sip_lines": {"1": {"username": "u"}}}),
            serde_json::json!({"sip_lines": {"1": {"password": "p"}}}),
            serde_json::json!({"sip_lines": {"1": {"username": 5, "password": "p"}}}),
            serde_json::json!({"sip_lines": []}),
        ] {
            assert!(line_credentials(&raw(none.clone())).is_none(), "{none}");
        }
    }
}
