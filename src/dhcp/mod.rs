//! DHCPv4 responder (`[dhcp] mode = "server" | "phones-only"`): RFC 2131 leases in the store,
//! and the provisioning options of the client's vendor plugin. See docs/dhcp.md.
//!
//! Threads: one async task per socket reads datagrams into a bounded queue; one engine thread
//! parses them, runs the state machine, writes leases, identifies the devices behind the
//! batch's ACK, RELEASE and expiry events (`RequestContext::Dhcp` for `ident`: store work
//! only, and a refused autocreation is a bucket check), flushes leases and devices once, and
//! only then sends the replies: a phone that got a lease from us exists before it can ask
//! for a file.

mod engine;
pub mod packet;
mod provision;
pub mod snippet;
mod socket;

pub use engine::{ClientKey, DECLINE_QUARANTINE_SECS};
pub use packet::{MsgType, ParseError, Request};
pub use provision::{provisioning_url, vendor_options, vendor_plugin, VendorOption, Vendors};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use socket2::Socket;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::config::{Dhcp, DhcpMode};
use crate::files::FileService;
use crate::ident::RequestContext;
use crate::ratelimit::{Kind, Rejections};
use crate::store::Store;

use engine::{Engine, Origin, Reply};
use socket::LinkSender;

/// The DHCP engine as `serve` loads it at start (every lease of the store), held by
/// `bench startup` to measure its time and memory.
pub struct LoadedEngine(Engine);

impl LoadedEngine {
    /// Loads the engine from the store. Blocking.
    pub fn load(settings: &Dhcp, store: Store) -> Result<LoadedEngine, crate::store::StoreError> {
        Engine::new(settings, store, None).map(LoadedEngine)
    }

    /// Number of leases the engine holds.
    pub fn lease_count(&self) -> usize {
        self.0.lease_count()
    }
}

/// Datagrams waiting for the engine; more are dropped and counted (clients retransmit).
pub const QUEUE: usize = 4096;
/// Largest datagram read; longer ones are dropped.
const RECV_BUFFER: usize = 4096;
/// How often leases are checked for expiry and lapsed offers forgotten.
const TICK: Duration = Duration::from_secs(1);

/// What the responder did, for metrics and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams read.
    pub received: AtomicU64,
    /// Dropped as malformed (truncated, bad cookie, hlen, option overrun…).
    pub malformed: AtomicU64,
    /// Dropped because the engine queue was full.
    pub queue_full: AtomicU64,
    /// Requests answered with nothing (other server chosen, not a phone, no pool…).
    pub silent: AtomicU64,
    /// DHCPOFFERs sent.
    pub offers: AtomicU64,
    /// DHCPACKs sent (leases and INFORMs).
    pub acks: AtomicU64,
    /// DHCPNAKs sent.
    pub naks: AtomicU64,
    /// Replies that could not be sent.
    pub send_errors: AtomicU64,
    /// Store writes that failed (no ACK was sent).
    pub store_errors: AtomicU64,
    /// Lease events identified (before the replies of their batch).
    pub ident_events: AtomicU64,
    /// Identifications that failed (the reply is sent all the same: the lease is written).
    pub ident_failed: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The bound responder; [`DhcpServer::run`] serves until shutdown.
pub struct DhcpServer {
    settings: Dhcp,
    sockets: Vec<Arc<Socket>>,
    link: Option<LinkSender>,
    port: u16,
    counters: Arc<Counters>,
    loaded: Option<tokio::sync::oneshot::Sender<()>>,
}

impl DhcpServer {
    /// Binds UDP `settings.port` on every address, one socket per interface of
    /// `settings.interfaces` (SO_BINDTODEVICE) or a single one when the list is empty.
    /// Port 0 takes an ephemeral port (tests). `mode = "off"` is refused.
    pub async fn bind(settings: &Dhcp) -> anyhow::Result<DhcpServer> {
        if settings.mode == DhcpMode::Off {
            anyhow::bail!("dhcp.mode is off: the DHCP server is not started");
        }
        let mut sockets = Vec::new();
        let mut port = settings.port;
        let devices: Vec<Option<&str>> = if settings.interfaces.is_empty() {
            vec![None]
        } else {
            settings
                .interfaces
                .iter()
                .map(|i| Some(i.as_str()))
                .collect()
        };
        for device in devices {
            let socket = socket::open(port, device).with_context(|| match device {
                Some(d) => format!("cannot listen on UDP port {port} of interface {d} (dhcp)"),
                None => format!("cannot listen on UDP port {port} (dhcp)"),
            })?;
            if port == 0 {
                port = socket
                    .local_addr()?
                    .as_socket()
                    .map(|a| a.port())
                    .context("DHCP socket has no port")?;
            }
            sockets.push(Arc::new(socket));
        }
        // Off port 67 every reply goes back to the sender: no link-layer unicast is needed.
        let link = if port == engine::SERVER_PORT {
            match LinkSender::open() {
                Ok(link) => Some(link),
                Err(e) => {
                    tracing::warn!("no packet socket ({e}; CAP_NET_RAW is needed): replies to clients without an address are broadcast");
                    None
                }
            }
        } else {
            None
        };
        Ok(DhcpServer {
            settings: settings.clone(),
            sockets,
            link,
            port,
            counters: Arc::new(Counters::default()),
            loaded: None,
        })
    }

    /// The UDP port served.
    pub fn local_port(&self) -> u16 {
        self.port
    }

    /// Sends on `signal` once [`DhcpServer::run`] has read the leases, and drops it if it
    /// gives up: the daemon holds its other passes over the leases until then, so that they
    /// do not slow the engine's load down on a two-core machine.
    pub fn signal_loaded(&mut self, signal: tokio::sync::oneshot::Sender<()>) {
        self.loaded = Some(signal);
    }

    /// The counters, shared with the running server.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.counters)
    }

    /// Serves until `shutdown` turns true. `store` holds the leases; identification goes
    /// through `files`; `base_url` (`[general] base_url`) fills `{provisioning_url}` when the
    /// pool has no `base_url` of its own.
    pub async fn run(
        self,
        files: Arc<FileService>,
        store: Store,
        base_url: Option<url::Url>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // For /metrics; a second server in the same process keeps its counters to itself.
        let _ = files.dhcp.set(Arc::clone(&self.counters));
        let settings = self.settings.clone();
        let engine_store = store.clone();
        let engine =
            tokio::task::spawn_blocking(move || Engine::new(&settings, engine_store, base_url))
                .await;
        // Dropped on the error paths as well: a waiter goes on either way.
        let loaded = self.loaded;
        let engine = match engine {
            Ok(Ok(engine)) => engine,
            Ok(Err(e)) => {
                tracing::error!("DHCP server not started: cannot read the leases: {e}");
                return;
            }
            Err(e) => {
                tracing::error!("DHCP server not started: {e}");
                return;
            }
        };
        tracing::info!(
            port = self.port,
            mode = ?self.settings.mode,
            leases = engine.lease_count(),
            "DHCP server ready"
        );
        if let Some(loaded) = loaded {
            let _ = loaded.send(());
        }
        let counters = Arc::clone(&self.counters);
        let (queue, incoming) = sync_channel::<Incoming>(QUEUE);
        let engine_counters = Arc::clone(&counters);
        let rejected = Arc::clone(&files.rejected);
        let sockets = self.sockets.clone();
        let link = self.link;
        let worker = std::thread::Builder::new()
            .name("dhcp".into())
            .spawn(move || {
                serve_requests(
                    engine,
                    incoming,
                    Senders { sockets, link },
                    files,
                    store,
                    engine_counters,
                )
            });
        let worker = match worker {
            Ok(w) => w,
            Err(e) => {
                tracing::error!("cannot start the DHCP thread: {e}");
                return;
            }
        };

        let mut readers = tokio::task::JoinSet::new();
        for (index, socket) in self.sockets.iter().enumerate() {
            // SAFETY: the socket owns its fd, which stays open while registered: the Arc
            // is shared only with the engine thread, which never closes it.
            match unsafe { AsyncFd::register(Arc::clone(socket)) } {
                Ok(fd) => {
                    readers.spawn(read_socket(
                        index,
                        fd,
                        queue.clone(),
                        Arc::clone(&counters),
                        Arc::clone(&rejected),
                    ));
                }
                Err(e) => tracing::error!("DHCP socket not served: {e}"),
            }
        }
        drop(queue);
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { break },
                // Every reader stopped (the engine thread is gone): nothing left to serve.
                None = readers.join_next() => break,
            }
        }
        readers.abort_all();
        while readers.join_next().await.is_some() {}
        // The readers held the last queue senders: the engine thread ends after the requests
        // already queued.
        let _ = tokio::task::spawn_blocking(move || {
            let _ = worker.join();
        })
        .await;
        tracing::info!("DHCP server stopped");
    }
}

struct Incoming {
    socket: usize,
    data: Vec<u8>,
    origin: Origin,
}

async fn read_socket(
    index: usize,
    fd: AsyncFd<Arc<Socket>>,
    queue: SyncSender<Incoming>,
    counters: Arc<Counters>,
    rejected: Arc<Rejections>,
) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let mut guard = match fd.readable().await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::error!("DHCP socket: {e}");
                return;
            }
        };
        let received = match guard.try_io(|inner| socket::recv(inner.get_ref(), &mut buf)) {
            Ok(Ok(received)) => received,
            Ok(Err(e)) => {
                tracing::debug!("DHCP socket: {e}");
                continue;
            }
            Err(_would_block) => continue,
        };
        bump(&counters.received);
        if received.truncated {
            bump(&counters.malformed);
            if rejected.admit(
                Kind::DhcpMalformed,
                std::net::IpAddr::V4(*received.src.ip()),
            ) {
                tracing::debug!(src = %received.src, "DHCP datagram over {RECV_BUFFER} bytes dropped");
            }
            continue;
        }
        let incoming = Incoming {
            socket: index,
            data: buf[..received.len].to_vec(),
            origin: Origin {
                src: received.src,
                info: received.info,
            },
        };
        match queue.try_send(incoming) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = counters.queue_full.fetch_add(1, Ordering::Relaxed);
                if dropped % 1000 == 0 {
                    tracing::warn!(dropped = dropped + 1, "DHCP queue full: requests dropped");
                }
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

/// Where replies leave.
struct Senders {
    /// The UDP sockets, by the index requests came in on.
    sockets: Vec<Arc<Socket>>,
    /// The packet socket for address-less clients, when it could be opened.
    link: Option<LinkSender>,
}

impl Senders {
    fn send(&self, socket: usize, reply: &Reply) -> std::io::Result<usize> {
        if let (Some(sender), Some(link)) = (&self.link, reply.link) {
            match sender.send(
                link.ifindex,
                link.mac.octets(),
                link.source,
                link.dst,
                &reply.bytes,
            ) {
                Ok(n) => return Ok(n),
                Err(e) => {
                    tracing::debug!(mac = %link.mac, dst = %reply.dst, "link-layer unicast failed ({e}): sent by UDP")
                }
            }
        }
        let socket = &self.sockets[socket.min(self.sockets.len() - 1)];
        socket::send(socket, &reply.bytes, reply.dst, reply.via)
    }
}

fn serve_requests(
    mut engine: Engine,
    incoming: Receiver<Incoming>,
    senders: Senders,
    files: Arc<FileService>,
    store: Store,
    counters: Arc<Counters>,
) {
    let mut last_tick = Instant::now();
    let mut batch = Batch::default();
    loop {
        match incoming.recv_timeout(TICK) {
            Ok(first) => {
                // Group commit: what is already queued is handled together and the leases
                // written for it are flushed once, before any of its replies leaves.
                let mut next = Some(first);
                let mut handled = 0;
                while let Some(datagram) = next {
                    handled += 1;
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        handle_datagram(&mut engine, &datagram, &files, &counters, &mut batch)
                    }));
                    if result.is_err() {
                        bump(&counters.malformed);
                        tracing::error!(src = %datagram.origin.src, "DHCP request handling panicked: request dropped");
                    }
                    next = if handled < BATCH {
                        incoming.try_recv().ok()
                    } else {
                        None
                    };
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            batch.events.extend(engine.tick(crate::model::now()));
        }
        batch.commit(&mut engine, &senders, &files, &store, &counters);
    }
}

/// Most requests handled before the leases they wrote are flushed and their replies sent.
const BATCH: usize = 256;

/// Replies and lease events waiting for the flush of the leases they depend on.
#[derive(Default)]
struct Batch {
    replies: Vec<(usize, Reply)>,
    events: Vec<RequestContext>,
}

impl Batch {
    /// Identifies the devices behind the lease events, flushes their writes with the leases
    /// (one flush), then sends the replies. A phone's ACK therefore leaves after its device
    /// is on disk, and its first file request finds the device instead of racing the lease
    /// to create it. When the flush fails, the replies are dropped (no ACK for a lease that
    /// may not survive a crash: the clients retransmit).
    fn commit(
        &mut self,
        engine: &mut Engine,
        senders: &Senders,
        files: &FileService,
        store: &Store,
        counters: &Counters,
    ) {
        let deferred = store.defer_flushes();
        let (events, started) = (self.events.len(), Instant::now());
        for event in self.events.drain(..) {
            identify(files, &event, counters);
        }
        let devices_written = deferred.skipped();
        drop(deferred);
        let identified = started.elapsed();
        let flushed = engine.flush(devices_written);
        if events > 0 {
            tracing::debug!(
                target: "provisiond::dhcp::batch",
                events,
                replies = self.replies.len(),
                identify_ms = identified.as_secs_f64() * 1e3,
                flush_ms = (started.elapsed() - identified).as_secs_f64() * 1e3,
                "DHCP batch written"
            );
        }
        if let Err(e) = flushed {
            let lost = self.replies.len();
            bump(&counters.store_errors);
            tracing::error!("DHCP leases not flushed, {lost} replies withheld: {e}");
            self.replies.clear();
        }
        for (socket, reply) in self.replies.drain(..) {
            match reply.msg_type {
                MsgType::Offer => bump(&counters.offers),
                MsgType::Ack => bump(&counters.acks),
                MsgType::Nak => bump(&counters.naks),
                _ => {}
            }
            if let Err(e) = senders.send(socket, &reply) {
                bump(&counters.send_errors);
                tracing::debug!(dst = %reply.dst, "DHCP reply not sent: {e}");
            }
        }
    }
}

/// Applies one lease event to its device. Store work only: the write's flush is the batch's.
fn identify(files: &FileService, event: &RequestContext, counters: &Counters) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| files.identify(event)));
    match result {
        Ok(Ok(_)) => bump(&counters.ident_events),
        Ok(Err(e)) => {
            bump(&counters.ident_failed);
            tracing::warn!("DHCP lease event not applied to the device: {e}");
        }
        Err(_) => {
            bump(&counters.ident_failed);
            tracing::error!("DHCP lease event identification panicked: event dropped");
        }
    }
}

fn handle_datagram(
    engine: &mut Engine,
    datagram: &Incoming,
    files: &FileService,
    counters: &Counters,
    batch: &mut Batch,
) {
    let req = match Request::parse(&datagram.data) {
        Ok(req) => req,
        Err(e) => {
            bump(&counters.malformed);
            let src = std::net::IpAddr::V4(*datagram.origin.src.ip());
            if files.rejected.admit(Kind::DhcpMalformed, src) {
                tracing::debug!(src = %datagram.origin.src, "DHCP datagram dropped: {e}");
            }
            return;
        }
    };
    let plugins = files.plugins();
    let url_key = |tenant: Option<&str>| files.dhcp_url_key(tenant);
    let vendors = Vendors {
        plugins: &plugins,
        url_key: &url_key,
    };
    let outcome = engine.handle(&req, &datagram.origin, &vendors, crate::model::now());
    if outcome.store_error {
        bump(&counters.store_errors);
    }
    match outcome.reply {
        Some(reply) => {
            tracing::debug!(
                mac = %req.mac,
                xid = req.xid,
                request = ?req.msg_type,
                reply = ?reply.msg_type,
                ip = %reply.yiaddr,
                dst = %reply.link.map_or(reply.dst, |l| l.dst),
                link = reply.link.is_some(),
                "DHCP"
            );
            batch.replies.push((datagram.socket, reply));
        }
        None => {
            bump(&counters.silent);
            tracing::debug!(
                mac = %req.mac,
                xid = req.xid,
                request = ?req.msg_type,
                "DHCP: no reply: {}",
                outcome.silent.unwrap_or("-")
            );
        }
    }
    batch.events.extend(outcome.events);
}
