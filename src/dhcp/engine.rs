//! The RFC 2131 state machine and the address allocator. One thread owns an [`Engine`]: it is
//! plain synchronous logic over the store (the lease owner) and in-memory indexes rebuilt from
//! the store at start.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use url::Url;

use crate::config::{Dhcp, DhcpMode, Pool};
use crate::ident::{DhcpOp, RequestContext};
use crate::model::{Lease, LeaseState, LeaseView, Mac, UnixTime};
use crate::store::{Store, StoreError};

use super::packet::{code, encode_reply, Importance, MsgType, ReplyHeader, ReplyOptions, Request};
use super::provision::{self, Vendors};
use super::socket::PktInfo;

/// A declined address is not handed out again for this long (the client found it in use).
pub const DECLINE_QUARANTINE_SECS: u64 = 3600;
/// Client port (RFC 2131).
pub const CLIENT_PORT: u16 = 68;
/// Server (and relay) port.
pub const SERVER_PORT: u16 = 67;
/// Least time between two "pool exhausted" warnings of one pool.
const EXHAUSTED_WARNING_EVERY: Duration = Duration::from_secs(60);

/// What identifies a client's lease: its client identifier (option 61) when it sends one,
/// else its hardware address. Sixteen bytes and `Copy`, because the engine keeps one per lease
/// and a million leases must not cost a heap allocation each: a MAC or an identifier of up to
/// 14 bytes (the usual `01` + MAC is 7) is kept as it is, a longer identifier as 120 bits of
/// its SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey([u8; 16]);

const KEY_MAC: u8 = 0;
const KEY_ID: u8 = 1;
const KEY_ID_DIGEST: u8 = 2;
const KEY_ID_INLINE: usize = 14;

impl ClientKey {
    fn mac(mac: Mac) -> ClientKey {
        let mut k = [0; 16];
        k[0] = KEY_MAC;
        k[1..7].copy_from_slice(&mac.octets());
        ClientKey(k)
    }

    fn id(id: &[u8]) -> ClientKey {
        let mut k = [0; 16];
        if id.len() <= KEY_ID_INLINE {
            k[0] = KEY_ID;
            // At most 14: fits.
            k[1] = id.len() as u8;
            k[2..2 + id.len()].copy_from_slice(id);
        } else {
            use sha2::Digest;
            k[0] = KEY_ID_DIGEST;
            k[1..].copy_from_slice(&sha2::Sha256::digest(id)[..15]);
        }
        ClientKey(k)
    }

    fn of_request(req: &Request) -> ClientKey {
        match req.client_id() {
            Some(id) => ClientKey::id(id),
            None => ClientKey::mac(req.mac),
        }
    }

    fn of_lease(lease: &Lease) -> ClientKey {
        ClientKey::of_parts(lease.client_id.as_deref(), lease.mac)
    }

    /// The key of a lease record with this client identifier (hex) and MAC.
    fn of_parts(client_id: Option<&str>, mac: Mac) -> ClientKey {
        match client_id.and_then(from_hex) {
            Some(id) if !id.is_empty() => ClientKey::id(&id),
            _ => ClientKey::mac(mac),
        }
    }

    /// The identifier's bytes when the key holds them (not for a MAC or a digest).
    fn inline_id(&self) -> Option<&[u8]> {
        (self.0[0] == KEY_ID).then(|| &self.0[2..2 + usize::from(self.0[1])])
    }
}

/// What the engine keeps of a lease; the store's record adds the host name (and the client
/// identifier's bytes when the key is a digest), read back when the engine rewrites a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    key: ClientKey,
    mac: Mac,
    state: LeaseState,
    ends: UnixTime,
}

impl Slot {
    fn of(lease: &Lease) -> Slot {
        Slot {
            key: ClientKey::of_lease(lease),
            mac: lease.mac,
            state: lease.state,
            ends: lease.ends,
        }
    }

    fn of_view(lease: &LeaseView<'_>) -> Slot {
        Slot {
            key: ClientKey::of_parts(lease.client_id.as_deref(), lease.mac),
            mac: lease.mac,
            state: lease.state,
            ends: lease.ends,
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

struct PoolState {
    cfg: Pool,
    /// Inclusive ranges as integers, in order.
    ranges: Vec<(u32, u32)>,
    size: u64,
    excluded: HashSet<Ipv4Addr>,
    reserved_by_mac: HashMap<Mac, (Ipv4Addr, Option<String>)>,
    reserved_ips: HashMap<Ipv4Addr, Mac>,
    /// Next never-used address to try, as an index over the ranges.
    cursor: u64,
    /// Every address of the ranges has been used once: only reuse is left.
    exhausted: bool,
    /// When "pool exhausted" was last logged.
    exhausted_warned: Option<Instant>,
}

impl PoolState {
    fn new(cfg: &Pool) -> PoolState {
        let ranges: Vec<(u32, u32)> = cfg
            .ranges
            .iter()
            .map(|r| (u32::from(r.start), u32::from(r.end)))
            .filter(|(a, b)| a <= b)
            .collect();
        let size = ranges.iter().map(|(a, b)| u64::from(b - a) + 1).sum();
        PoolState {
            excluded: cfg.exclude.iter().copied().collect(),
            reserved_by_mac: cfg
                .reservations
                .iter()
                .map(|r| (r.mac, (r.ip, r.hostname.clone())))
                .collect(),
            reserved_ips: cfg.reservations.iter().map(|r| (r.ip, r.mac)).collect(),
            cfg: cfg.clone(),
            ranges,
            size,
            cursor: 0,
            exhausted: false,
            exhausted_warned: None,
        }
    }

    fn nth(&self, mut n: u64) -> Option<Ipv4Addr> {
        for (a, b) in &self.ranges {
            let len = u64::from(b - a) + 1;
            if n < len {
                return Some(Ipv4Addr::from(a + n as u32));
            }
            n -= len;
        }
        None
    }

    fn in_subnet(&self, ip: Ipv4Addr) -> bool {
        self.cfg.subnet.contains(&ip)
    }

    /// An address this pool may hand out to anyone (not its network or broadcast address,
    /// not excluded, not reserved).
    fn dynamic(&self, ip: Ipv4Addr) -> bool {
        let n = u32::from(ip);
        self.ranges.iter().any(|(a, b)| *a <= n && n <= *b)
            && self.usable(ip)
            && !self.reserved_ips.contains_key(&ip)
    }

    fn usable(&self, ip: Ipv4Addr) -> bool {
        let net = &self.cfg.subnet;
        net.contains(&ip)
            && (net.prefix_len() >= 31 || (ip != net.network() && ip != net.broadcast()))
            && !self.excluded.contains(&ip)
    }

    fn renew_time(&self) -> u32 {
        self.cfg.renew_time.unwrap_or(self.cfg.lease_time / 2)
    }

    fn rebind_time(&self) -> u32 {
        self.cfg
            .rebind_time
            .unwrap_or((u64::from(self.cfg.lease_time) * 7 / 8) as u32)
    }
}

struct Offer {
    key: ClientKey,
    until: Instant,
}

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    /// Sender address and port.
    pub src: SocketAddrV4,
    /// Receiving interface, from IP_PKTINFO.
    pub info: Option<PktInfo>,
}

/// A reply to send.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Message type.
    pub msg_type: MsgType,
    /// Encoded message.
    pub bytes: Vec<u8>,
    /// Destination.
    pub dst: SocketAddrV4,
    /// Outgoing interface and source address.
    pub via: Option<(i32, Ipv4Addr)>,
    /// Address given (OFFER, ACK).
    pub yiaddr: Ipv4Addr,
    /// A reply to a client on the link (not relayed): sent as a frame to its hardware
    /// address (or the broadcast address), with `dst` the UDP fallback when that fails.
    pub link: Option<LinkReply>,
}

/// A reply sent by the link layer: no ARP is needed, so a client without an address yet
/// gets it (RFC 2131 §4.1), and a flood of requests from made-up addresses cannot fill the
/// send queue with replies waiting for ARP answers that never come (which would hold back
/// every other reply, broadcasts included). Relayed replies still go by UDP to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkReply {
    /// The client's hardware address.
    pub mac: Mac,
    /// The interface the request came in on.
    pub ifindex: i32,
    /// Source address.
    pub source: Ipv4Addr,
    /// IP destination: `ciaddr` or `yiaddr`, port 68.
    pub dst: SocketAddrV4,
}

/// What handling one request produced.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The reply, if any.
    pub reply: Option<Reply>,
    /// Lease events for identification.
    pub events: Vec<RequestContext>,
    /// Why nothing was sent, for the debug log.
    pub silent: Option<&'static str>,
    /// A store write failed.
    pub store_error: bool,
}

impl Outcome {
    fn silent(why: &'static str) -> Outcome {
        Outcome {
            silent: Some(why),
            ..Outcome::default()
        }
    }
}

/// The lease state and the protocol logic.
pub struct Engine {
    mode: DhcpMode,
    port: u16,
    server_id: Option<Ipv4Addr>,
    offer_hold: Duration,
    base_url: Option<Url>,
    pools: Vec<PoolState>,
    writer: LeaseWriter,
    /// Every lease of the store, by address. B-trees rather than hash maps for the two maps
    /// that grow with the leases: built from sorted input at start they pack their nodes
    /// (about 40 bytes a lease), where a hash map of a million entries is half empty.
    leases: BTreeMap<Ipv4Addr, Slot>,
    /// The address of each client's latest lease.
    by_client: BTreeMap<ClientKey, Ipv4Addr>,
    offers: HashMap<Ipv4Addr, Offer>,
    offer_by_client: HashMap<ClientKey, Ipv4Addr>,
    /// Bound and declined leases by end, for expiry (stale entries skipped).
    timers: BTreeSet<(UnixTime, Ipv4Addr)>,
    /// Released and expired leases by end: reused least recently used first.
    reusable: BTreeSet<(UnixTime, Ipv4Addr)>,
}

/// Lease writes for group commit: unflushed until [`LeaseWriter::flush`].
struct LeaseWriter {
    store: Store,
    /// Leases were written since the last flush.
    unflushed: bool,
}

impl LeaseWriter {
    fn write(&mut self, lease: &Lease) -> Result<(), StoreError> {
        // Set before the write: a write that fails half-way may still have reached the
        // journal, and flushing it then costs nothing.
        self.unflushed = true;
        self.store.put_lease_unflushed(lease)
    }

    fn flush(&mut self, also: bool) -> Result<(), StoreError> {
        if std::mem::take(&mut self.unflushed) || also {
            self.store.flush()?;
        }
        Ok(())
    }
}

impl Engine {
    /// Loads every lease from the store. Blocking.
    pub fn new(settings: &Dhcp, store: Store, base_url: Option<Url>) -> Result<Engine, StoreError> {
        // The store iterates by address: `leases` is sorted already, the others are sorted
        // once here, and each map is bulk-built.
        let mut leases = Vec::new();
        let mut clients = Vec::new();
        let mut timers = Vec::new();
        let mut reusable = Vec::new();
        store.for_each_lease_view(|lease| {
            let slot = Slot::of_view(&lease);
            match lease.state {
                LeaseState::Bound | LeaseState::Declined => timers.push((lease.ends, lease.ip)),
                LeaseState::Released | LeaseState::Expired | LeaseState::Offered => {
                    reusable.push((lease.ends, lease.ip))
                }
            }
            if lease.state != LeaseState::Declined {
                clients.push((slot.key, lease.starts, lease.ip));
            }
            leases.push((lease.ip, slot));
            Ok(())
        })?;
        // A client's latest lease is the last of its run (ties: the higher address).
        clients.sort_unstable();
        let by_client = clients
            .chunk_by(|a, b| a.0 == b.0)
            .filter_map(|run| run.last())
            .map(|&(key, _, ip)| (key, ip))
            .collect();
        drop(clients);
        let engine = Engine {
            mode: settings.mode,
            port: settings.port,
            server_id: settings.server_id,
            offer_hold: Duration::from_secs(u64::from(settings.offer_hold_secs.max(1))),
            base_url,
            pools: settings.pools.iter().map(PoolState::new).collect(),
            leases: leases.into_iter().collect(),
            by_client,
            offers: HashMap::new(),
            offer_by_client: HashMap::new(),
            timers: timers.into_iter().collect(),
            reusable: reusable.into_iter().collect(),
            writer: LeaseWriter {
                store,
                unflushed: false,
            },
        };
        // The sorted lists above were as large as the maps built from them.
        crate::memory::release_freed();
        Ok(engine)
    }

    /// Makes every lease written since the last flush durable (group commit: replies that
    /// depend on those writes are sent only after this succeeded), with the other writes of
    /// this thread when `also` (identification's, whose flushes were deferred); nothing to
    /// do when nothing was written. Blocking.
    pub fn flush(&mut self, also: bool) -> Result<(), StoreError> {
        self.writer.flush(also)
    }

    /// Number of leases known (any state).
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    /// Handles one request.
    pub fn handle(
        &mut self,
        req: &Request,
        origin: &Origin,
        vendors: &Vendors<'_>,
        now: UnixTime,
    ) -> Outcome {
        let key = ClientKey::of_request(req);
        let Some(server_id) = self
            .server_id
            .or_else(|| origin.info.map(|i| i.local))
            .filter(|ip| !ip.is_unspecified())
        else {
            return Outcome::silent("no server address (no IP_PKTINFO and no dhcp.server_id)");
        };
        if self.mode == DhcpMode::PhonesOnly
            && !self.knows(&key)
            && !provision::is_phone(req, vendors.plugins)
        {
            return Outcome::silent("phones-only: not identified as a phone");
        }
        let instant = Instant::now();
        match req.msg_type {
            MsgType::Discover => self.discover(req, origin, &key, server_id, vendors, now, instant),
            MsgType::Request => self.request(req, origin, &key, server_id, vendors, now, instant),
            MsgType::Decline => self.decline(req, &key, server_id, now),
            MsgType::Release => self.release(req, &key, server_id, now),
            MsgType::Inform => self.inform(req, origin, server_id, vendors),
            _ => Outcome::silent("not a client message"),
        }
    }

    /// True when the client has a lease or an offer here (it is answered in `phones-only`
    /// mode even when a later message lacks its vendor class).
    fn knows(&self, key: &ClientKey) -> bool {
        self.offer_by_client.contains_key(key)
            || self
                .by_client
                .get(key)
                .and_then(|ip| self.leases.get(ip))
                .is_some_and(|l| l.state == LeaseState::Bound)
    }

    fn pool_of(&self, ip: Ipv4Addr) -> Option<usize> {
        self.pools.iter().position(|p| p.in_subnet(ip))
    }

    /// The pool of the client's network: subnet selection (118), link selection (82.5), the
    /// relay address, the receiving interface's address, then (INFORM and renewals) ciaddr.
    fn select_pool(&self, req: &Request, origin: &Origin) -> Option<usize> {
        let link = req
            .subnet_selection()
            .or_else(|| req.link_selection())
            .or_else(|| Some(req.giaddr).filter(|ip| !ip.is_unspecified()));
        if let Some(link) = link {
            return self.pool_of(link);
        }
        if let Some(p) = origin.info.and_then(|i| self.pool_of(i.local)) {
            return Some(p);
        }
        Some(req.ciaddr)
            .filter(|ip| !ip.is_unspecified())
            .and_then(|ip| self.pool_of(ip))
    }

    /// True when `ip` is free for this client (no live lease or offer of another client, and
    /// not declined and quarantined).
    fn available(&self, ip: Ipv4Addr, key: &ClientKey, now: UnixTime, instant: Instant) -> bool {
        if let Some(offer) = self.offers.get(&ip) {
            if offer.key != *key && offer.until > instant {
                return false;
            }
        }
        match self.leases.get(&ip) {
            None => true,
            Some(lease) if lease.key == *key => {
                !(lease.state == LeaseState::Declined && lease.ends > now)
            }
            Some(lease) => match lease.state {
                LeaseState::Bound | LeaseState::Declined => lease.ends <= now,
                LeaseState::Released | LeaseState::Expired | LeaseState::Offered => true,
            },
        }
    }

    /// True when this client may be bound to `ip` in pool `p`.
    fn may_bind(
        &self,
        p: usize,
        key: &ClientKey,
        mac: Mac,
        ip: Ipv4Addr,
        now: UnixTime,
        instant: Instant,
    ) -> bool {
        let pool = &self.pools[p];
        let allowed = match pool.reserved_by_mac.get(&mac) {
            Some((reserved, _)) => *reserved == ip,
            None => pool.dynamic(ip),
        };
        allowed && self.available(ip, key, now, instant)
    }

    fn allocate(
        &mut self,
        p: usize,
        key: &ClientKey,
        mac: Mac,
        requested: Option<Ipv4Addr>,
        now: UnixTime,
        instant: Instant,
    ) -> Option<Ipv4Addr> {
        if let Some((ip, _)) = self.pools[p].reserved_by_mac.get(&mac) {
            if self.available(*ip, key, now, instant) {
                return Some(*ip);
            }
            tracing::warn!(%mac, ip = %ip, "reserved address in use by another client: giving a dynamic one");
        }
        let previous = [
            self.offer_by_client.get(key).copied(),
            self.by_client.get(key).copied(),
            requested,
        ];
        for ip in previous.into_iter().flatten() {
            if self.pools[p].dynamic(ip) && self.available(ip, key, now, instant) {
                return Some(ip);
            }
        }
        // A never-used address.
        if !self.pools[p].exhausted {
            let size = self.pools[p].size;
            for _ in 0..size {
                let pool = &mut self.pools[p];
                let n = pool.cursor;
                pool.cursor = (n + 1) % size;
                let Some(ip) = pool.nth(n) else { break };
                if pool.dynamic(ip)
                    && !self.leases.contains_key(&ip)
                    && self.available(ip, key, now, instant)
                {
                    return Some(ip);
                }
            }
            self.pools[p].exhausted = true;
        }
        // The least recently used released or expired address.
        let mut stale = Vec::new();
        let mut found = None;
        for &(end, ip) in &self.reusable {
            match self.leases.get(&ip) {
                Some(l)
                    if l.ends == end
                        && matches!(
                            l.state,
                            LeaseState::Released | LeaseState::Expired | LeaseState::Offered
                        ) =>
                {
                    if self.pools[p].dynamic(ip) && self.available(ip, key, now, instant) {
                        found = Some(ip);
                        break;
                    }
                }
                _ => stale.push((end, ip)),
            }
        }
        for entry in stale {
            self.reusable.remove(&entry);
        }
        if found.is_none() {
            // Bound leases past their end that the next sweep has not expired yet.
            found = self
                .leases
                .iter()
                .filter(|(_, l)| {
                    matches!(l.state, LeaseState::Bound | LeaseState::Declined) && l.ends <= now
                })
                .filter(|(ip, _)| {
                    self.pools[p].dynamic(**ip) && self.available(**ip, key, now, instant)
                })
                .min_by_key(|(_, l)| l.ends)
                .map(|(ip, _)| *ip);
        }
        found
    }

    fn hold_offer(&mut self, key: &ClientKey, ip: Ipv4Addr, instant: Instant) {
        if let Some(old) = self.offer_by_client.insert(*key, ip) {
            if old != ip {
                self.offers.remove(&old);
            }
        }
        self.offers.insert(
            ip,
            Offer {
                key: *key,
                until: instant + self.offer_hold,
            },
        );
    }

    fn drop_offer(&mut self, key: &ClientKey) {
        if let Some(ip) = self.offer_by_client.remove(key) {
            if self.offers.get(&ip).is_some_and(|o| o.key == *key) {
                self.offers.remove(&ip);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn discover(
        &mut self,
        req: &Request,
        origin: &Origin,
        key: &ClientKey,
        server_id: Ipv4Addr,
        vendors: &Vendors<'_>,
        now: UnixTime,
        instant: Instant,
    ) -> Outcome {
        let Some(p) = self.select_pool(req, origin) else {
            return Outcome::silent("no pool for the client's network");
        };
        let Some(ip) = self.allocate(p, key, req.mac, req.requested_ip(), now, instant) else {
            // Once a minute per pool at most: a busy segment would otherwise flood the log.
            let pool = &mut self.pools[p];
            if pool
                .exhausted_warned
                .is_none_or(|at| instant.duration_since(at) >= EXHAUSTED_WARNING_EVERY)
            {
                pool.exhausted_warned = Some(instant);
                tracing::warn!(subnet = %pool.cfg.subnet, mac = %req.mac, "DHCP pool exhausted: no address to offer (said at most once a minute)");
            }
            return Outcome::silent("pool exhausted");
        };
        self.hold_offer(key, ip, instant);
        let options = self.options(Some(p), req, server_id, vendors, true);
        self.reply(
            req,
            origin,
            MsgType::Offer,
            ip,
            Ipv4Addr::UNSPECIFIED,
            &options,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        req: &Request,
        origin: &Origin,
        key: &ClientKey,
        server_id: Ipv4Addr,
        vendors: &Vendors<'_>,
        now: UnixTime,
        instant: Instant,
    ) -> Outcome {
        let (ip, p) = if let Some(chosen) = req.server_id() {
            // SELECTING.
            if chosen != server_id {
                self.drop_offer(key);
                return Outcome::silent("the client chose another server");
            }
            let Some(ip) = req
                .requested_ip()
                .or_else(|| Some(req.ciaddr).filter(|ip| !ip.is_unspecified()))
            else {
                return Outcome::silent("REQUEST without a requested address");
            };
            let Some(p) = self.select_pool(req, origin) else {
                return Outcome::silent("no pool for the client's network");
            };
            (ip, p)
        } else if let Some(ip) = req.requested_ip() {
            // INIT-REBOOT.
            let Some(p) = self.select_pool(req, origin) else {
                return Outcome::silent("no pool for the client's network");
            };
            (ip, p)
        } else if !req.ciaddr.is_unspecified() {
            // RENEWING (unicast) or REBINDING (broadcast).
            let Some(p) = self.pool_of(req.ciaddr) else {
                return Outcome::silent("renewal of an address outside every pool");
            };
            (req.ciaddr, p)
        } else {
            return Outcome::silent("REQUEST without a requested address");
        };
        if !self.may_bind(p, key, req.mac, ip, now, instant) {
            self.drop_offer(key);
            return self.nak(req, origin, server_id, "requested address not available");
        }
        let lease = match self.commit(p, key, req, ip, now) {
            Ok(lease) => lease,
            Err(e) => {
                tracing::error!(%ip, mac = %req.mac, "lease not written, no DHCPACK sent: {e}");
                return Outcome {
                    store_error: true,
                    ..Outcome::silent("store error")
                };
            }
        };
        let options = self.options(Some(p), req, server_id, vendors, true);
        let mut outcome = self.reply(req, origin, MsgType::Ack, ip, req.ciaddr, &options);
        outcome
            .events
            .push(provision::context(req, DhcpOp::Commit, lease.ip));
        outcome
    }

    fn commit(
        &mut self,
        p: usize,
        key: &ClientKey,
        req: &Request,
        ip: Ipv4Addr,
        now: UnixTime,
    ) -> Result<Lease, StoreError> {
        let pool = &self.pools[p];
        let hostname = pool
            .reserved_by_mac
            .get(&req.mac)
            .and_then(|(_, h)| h.clone())
            .or_else(|| req.hostname());
        let lease = Lease {
            ip,
            mac: req.mac,
            client_id: req.client_id().map(to_hex),
            hostname,
            starts: now,
            ends: now + u64::from(pool.cfg.lease_time),
            state: LeaseState::Bound,
        };
        // A client holds one address: a different previous one is released first (so that
        // the store's MAC index ends on the new lease).
        if let Some(old) = self.by_client.get(key).copied().filter(|old| *old != ip) {
            if let Some(previous) = self.leases.get(&old).copied() {
                if previous.state == LeaseState::Bound && previous.key == *key {
                    let mut released = self.record(old, &previous);
                    released.state = LeaseState::Released;
                    released.ends = now;
                    self.writer.write(&released)?;
                    self.replace_lease(&released);
                }
            }
        }
        self.writer.write(&lease)?;
        self.replace_lease(&lease);
        self.by_client.insert(*key, ip);
        self.offer_by_client.remove(key);
        self.offers.remove(&ip);
        Ok(lease)
    }

    fn decline(
        &mut self,
        req: &Request,
        key: &ClientKey,
        server_id: Ipv4Addr,
        now: UnixTime,
    ) -> Outcome {
        if req.server_id().is_some_and(|id| id != server_id) {
            return Outcome::silent("DECLINE for another server");
        }
        let Some(ip) = req.requested_ip() else {
            return Outcome::silent("DECLINE without an address");
        };
        let ours = self.leases.get(&ip).is_some_and(|l| l.key == *key)
            || self.offer_by_client.get(key) == Some(&ip);
        if !ours || self.pool_of(ip).is_none() {
            return Outcome::silent("DECLINE of an address the client does not hold");
        }
        let lease = Lease {
            ip,
            mac: req.mac,
            client_id: req.client_id().map(to_hex),
            hostname: None,
            starts: now,
            ends: now + DECLINE_QUARANTINE_SECS,
            state: LeaseState::Declined,
        };
        if let Err(e) = self.writer.write(&lease) {
            tracing::error!(%ip, "declined lease not written: {e}");
            return Outcome {
                store_error: true,
                ..Outcome::silent("store error")
            };
        }
        tracing::warn!(%ip, mac = %req.mac, "address declined by the client (in use on the network): quarantined for {DECLINE_QUARANTINE_SECS} s");
        self.replace_lease(&lease);
        if self.by_client.get(key) == Some(&ip) {
            self.by_client.remove(key);
        }
        self.drop_offer(key);
        // The device must not keep an address that it gave back.
        Outcome {
            events: vec![provision::context(req, DhcpOp::Release, ip)],
            ..Outcome::silent("DECLINE handled")
        }
    }

    fn release(
        &mut self,
        req: &Request,
        key: &ClientKey,
        server_id: Ipv4Addr,
        now: UnixTime,
    ) -> Outcome {
        if req.server_id().is_some_and(|id| id != server_id) {
            return Outcome::silent("RELEASE for another server");
        }
        let ip = req.ciaddr;
        let Some(lease) = self.leases.get(&ip).copied() else {
            return Outcome::silent("RELEASE of an unknown lease");
        };
        if lease.key != *key || lease.state != LeaseState::Bound {
            return Outcome::silent("RELEASE of a lease the client does not hold");
        }
        let mut released = self.record(ip, &lease);
        released.state = LeaseState::Released;
        released.ends = now;
        if let Err(e) = self.writer.write(&released) {
            tracing::error!(%ip, "released lease not written: {e}");
            return Outcome {
                store_error: true,
                ..Outcome::silent("store error")
            };
        }
        self.replace_lease(&released);
        Outcome {
            events: vec![provision::context(req, DhcpOp::Release, ip)],
            ..Outcome::silent("RELEASE handled")
        }
    }

    fn inform(
        &mut self,
        req: &Request,
        origin: &Origin,
        server_id: Ipv4Addr,
        vendors: &Vendors<'_>,
    ) -> Outcome {
        let p = self.select_pool(req, origin);
        let options = self.options(p, req, server_id, vendors, false);
        if p.is_none() && options.len() <= 1 {
            // Nothing but the server id to say.
            return Outcome::silent("INFORM from outside every pool");
        }
        self.reply(
            req,
            origin,
            MsgType::Ack,
            Ipv4Addr::UNSPECIFIED,
            req.ciaddr,
            &options,
        )
    }

    fn nak(&mut self, req: &Request, origin: &Origin, server_id: Ipv4Addr, why: &str) -> Outcome {
        let mut options = ReplyOptions::default();
        options.set(
            code::SERVER_ID,
            server_id.octets().to_vec(),
            Importance::Essential,
        );
        options.set(
            code::MESSAGE,
            why.as_bytes().to_vec(),
            Importance::Unrequested,
        );
        self.reply(
            req,
            origin,
            MsgType::Nak,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &options,
        )
    }

    /// The options of an OFFER or ACK (`lease`: with lease times) or an INFORM's ACK.
    fn options(
        &self,
        p: Option<usize>,
        req: &Request,
        server_id: Ipv4Addr,
        vendors: &Vendors<'_>,
        lease: bool,
    ) -> ReplyOptions {
        let asked = req.requested_params();
        let weight = |c: u8| {
            if asked.contains(&c) {
                Importance::Requested
            } else {
                Importance::Unrequested
            }
        };
        let mut o = ReplyOptions::default();
        o.set(
            code::SERVER_ID,
            server_id.octets().to_vec(),
            Importance::Essential,
        );
        let ips = |list: &[Ipv4Addr]| list.iter().flat_map(|ip| ip.octets()).collect::<Vec<u8>>();
        let pool = p.map(|p| &self.pools[p]);
        if let Some(pool) = pool {
            if lease {
                o.set(
                    code::LEASE_TIME,
                    pool.cfg.lease_time.to_be_bytes().to_vec(),
                    Importance::Essential,
                );
                o.set(
                    code::RENEWAL,
                    pool.renew_time().to_be_bytes().to_vec(),
                    Importance::Essential,
                );
                o.set(
                    code::REBINDING,
                    pool.rebind_time().to_be_bytes().to_vec(),
                    Importance::Essential,
                );
            }
            o.set(
                code::SUBNET_MASK,
                pool.cfg.subnet.netmask().octets().to_vec(),
                Importance::Essential,
            );
            if let Some(router) = pool.cfg.router {
                o.set(code::ROUTER, router.octets().to_vec(), weight(code::ROUTER));
            }
            if !pool.cfg.dns.is_empty() {
                o.set(code::DNS, ips(&pool.cfg.dns), weight(code::DNS));
            }
            if let Some(domain) = &pool.cfg.domain {
                o.set(
                    code::DOMAIN,
                    domain.as_bytes().to_vec(),
                    weight(code::DOMAIN),
                );
            }
            if !pool.cfg.ntp.is_empty() {
                o.set(code::NTP, ips(&pool.cfg.ntp), weight(code::NTP));
            }
            if let Some((_, Some(hostname))) = pool.reserved_by_mac.get(&req.mac) {
                o.set(
                    code::HOSTNAME,
                    hostname.as_bytes().to_vec(),
                    weight(code::HOSTNAME),
                );
            }
        }
        if let Some(plugin) = provision::vendor_plugin(req, vendors.plugins) {
            let base = pool
                .and_then(|pool| pool.cfg.base_url.as_ref())
                .or(self.base_url.as_ref());
            let key = (vendors.url_key)(pool.and_then(|pool| pool.cfg.tenant.as_deref()));
            for option in provision::vendor_options(&plugin, base, &key, server_id) {
                if option.always || asked.contains(&option.code) {
                    o.set(option.code, option.value, Importance::Requested);
                }
            }
        }
        o
    }

    fn reply(
        &self,
        req: &Request,
        origin: &Origin,
        msg_type: MsgType,
        yiaddr: Ipv4Addr,
        ciaddr: Ipv4Addr,
        options: &ReplyOptions,
    ) -> Outcome {
        let mut flags = req.flags & 0x8000;
        if msg_type == MsgType::Nak && !req.giaddr.is_unspecified() {
            // RFC 2131 §4.3.2: the relay broadcasts a NAK.
            flags |= 0x8000;
        }
        let header = ReplyHeader {
            xid: req.xid,
            flags,
            ciaddr,
            yiaddr,
            giaddr: req.giaddr,
            chaddr: req.chaddr,
        };
        let Some(bytes) = encode_reply(
            &header,
            msg_type,
            options,
            req.option(code::RELAY_AGENT),
            req.max_reply(),
        ) else {
            return Outcome::silent("reply could not be encoded");
        };
        let dst = self.destination(req, origin, msg_type, ciaddr);
        let (mac, to) = if !dst.ip().is_broadcast() {
            (req.mac, dst)
        } else if msg_type != MsgType::Nak && flags & 0x8000 == 0 && !yiaddr.is_unspecified() {
            (req.mac, SocketAddrV4::new(yiaddr, CLIENT_PORT))
        } else {
            (Mac::new([0xff; 6]), dst)
        };
        // `ciaddr` may be behind a router (a routed client renewing by unicast): by the link
        // only when it is in the subnet of a pool that the receiving address is in too.
        let on_link = |info: &PktInfo| {
            ciaddr.is_unspecified()
                || self
                    .pools
                    .iter()
                    .any(|p| p.in_subnet(info.local) && p.in_subnet(ciaddr))
        };
        let link = match origin.info {
            Some(info)
                if self.port == SERVER_PORT
                    && req.giaddr.is_unspecified()
                    && !info.local.is_unspecified()
                    && on_link(&info) =>
            {
                Some(LinkReply {
                    mac,
                    ifindex: info.ifindex,
                    source: info.local,
                    dst: to,
                })
            }
            _ => None,
        };
        Outcome {
            reply: Some(Reply {
                msg_type,
                bytes,
                dst,
                // The source address is always ours; the interface is forced only for
                // broadcasts (unicasts follow the routing table, e.g. to a relay).
                via: origin.info.filter(|i| !i.local.is_unspecified()).map(|i| {
                    let ifindex = if dst.ip().is_broadcast() {
                        i.ifindex
                    } else {
                        0
                    };
                    (ifindex, i.local)
                }),
                yiaddr,
                link,
            }),
            ..Outcome::default()
        }
    }

    /// RFC 2131 §4.1, except off port 67 where every reply goes back to the sender (tests,
    /// perfdhcp on loopback). A client without an address is sent a broadcast here; `reply`
    /// adds the link-layer unicast when it did not ask for a broadcast.
    fn destination(
        &self,
        req: &Request,
        origin: &Origin,
        msg_type: MsgType,
        ciaddr: Ipv4Addr,
    ) -> SocketAddrV4 {
        if self.port != SERVER_PORT {
            return origin.src;
        }
        if !req.giaddr.is_unspecified() {
            return SocketAddrV4::new(req.giaddr, SERVER_PORT);
        }
        if msg_type != MsgType::Nak && !ciaddr.is_unspecified() {
            return SocketAddrV4::new(ciaddr, CLIENT_PORT);
        }
        SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
    }

    /// Puts `lease` in place of this address's lease, with its entry in `timers` (bound,
    /// declined) or `reusable` (released, expired, offered). The old lease's entry goes: left
    /// behind, every renewal of a lease would leave one until the old end passed, and a client
    /// renewing in a loop would grow the sets without bound.
    fn replace_lease(&mut self, lease: &Lease) {
        let entry = (lease.ends, lease.ip);
        match lease.state {
            LeaseState::Bound | LeaseState::Declined => self.timers.insert(entry),
            LeaseState::Released | LeaseState::Expired | LeaseState::Offered => {
                self.reusable.insert(entry)
            }
        };
        let slot = Slot::of(lease);
        if let Some(old) = self.leases.insert(lease.ip, slot) {
            let old_entry = (old.ends, lease.ip);
            if old_entry != entry {
                self.timers.remove(&old_entry);
                self.reusable.remove(&old_entry);
            }
            // The address changed hands: its former client no longer gets it back, and keeping
            // that client's entry would grow the map with every MAC ever seen.
            if old.key != slot.key && self.by_client.get(&old.key) == Some(&lease.ip) {
                self.by_client.remove(&old.key);
            }
        }
    }

    /// The whole record of the lease at `ip`, which the engine knows as `slot`, for a
    /// rewrite: the host name and the client identifier come from the store. A record that
    /// is missing (deleted through the API) or unreadable is rebuilt from the slot, without a
    /// host name, rather than leaving the engine and the store disagreeing on its state.
    fn record(&self, ip: Ipv4Addr, slot: &Slot) -> Lease {
        let stored = match self.writer.store.lease(ip) {
            Ok(lease) => lease.filter(|l| Slot::of(l).key == slot.key && l.mac == slot.mac),
            Err(e) => {
                tracing::warn!(%ip, "lease record unreadable, rewritten from memory: {e}");
                None
            }
        };
        match stored {
            Some(mut lease) => {
                lease.state = slot.state;
                lease.ends = slot.ends;
                lease
            }
            None => Lease {
                ip,
                mac: slot.mac,
                client_id: slot.key.inline_id().map(to_hex),
                hostname: None,
                starts: slot.ends,
                ends: slot.ends,
                state: slot.state,
            },
        }
    }

    /// Entries in the lease timers (bound and declined leases by end) and in the reusable
    /// set: at most one per lease.
    #[cfg(test)]
    fn timer_entries(&self) -> usize {
        self.timers.len() + self.reusable.len()
    }

    /// Clients remembered with their address: at most one per lease.
    #[cfg(test)]
    fn client_entries(&self) -> usize {
        self.by_client.len()
    }

    /// Expires bound leases past their end and ends quarantines; forgets lapsed offers.
    /// Returns the expiry events for identification.
    pub fn tick(&mut self, now: UnixTime) -> Vec<RequestContext> {
        let mut events = Vec::new();
        while let Some(&(end, ip)) = self.timers.first() {
            if end > now {
                break;
            }
            self.timers.pop_first();
            let Some(mut lease) = self.leases.get(&ip).copied() else {
                continue;
            };
            if lease.ends != end || !matches!(lease.state, LeaseState::Bound | LeaseState::Declined)
            {
                continue;
            }
            let was_bound = lease.state == LeaseState::Bound;
            lease.state = LeaseState::Expired;
            self.leases.insert(ip, lease);
            if let Err(e) = self.writer.write(&self.record(ip, &lease)) {
                tracing::error!(%ip, "expired lease not written: {e}");
            }
            self.reusable.insert((end, ip));
            if was_bound {
                tracing::debug!(%ip, mac = %lease.mac, "lease expired");
                events.push(RequestContext::Dhcp {
                    op: DhcpOp::Expiry,
                    ip,
                    mac: lease.mac,
                    options: Vec::new(),
                });
            }
        }
        let instant = Instant::now();
        let before = self.offers.len();
        self.offers.retain(|_, o| o.until > instant);
        if self.offers.len() != before {
            let offers = &self.offers;
            self.offer_by_client
                .retain(|k, ip| offers.get(ip).is_some_and(|o| o.key == *k));
            // A lapsed offer's address may be a never-leased one again.
            for pool in &mut self.pools {
                pool.exhausted = false;
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
    use dhcproto::{Encodable, Encoder};

    use super::*;
    use crate::files::UrlKey;
    use crate::plugins::PluginSet;

    const RELAY: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

    fn vendors_and_origin(plugins: &PluginSet) -> (Vendors<'_>, Origin) {
        (
            Vendors {
                plugins,
                url_key: &|_: Option<&str>| UrlKey::Off,
            },
            Origin {
                src: SocketAddrV4::new(RELAY, 67),
                info: None,
            },
        )
    }

    fn engine(dir: &std::path::Path) -> Engine {
        let pool: Pool = toml::from_str(
            "subnet = \"10.1.0.0/24\"\nranges = [{ start = \"10.1.0.10\", end = \"10.1.0.20\" }]\n",
        )
        .unwrap();
        let settings = Dhcp {
            mode: DhcpMode::Server,
            port: 6767,
            server_id: Some(SERVER),
            pools: vec![pool],
            ..Dhcp::default()
        };
        Engine::new(&settings, Store::open_retrying(dir).unwrap(), None).unwrap()
    }

    /// A relayed request of this type; `ciaddr` set for renewals, option 50/54 when given.
    fn request(kind: MessageType, ciaddr: Ipv4Addr, requested: Option<Ipv4Addr>) -> Request {
        request_of(MAC, kind, ciaddr, requested)
    }

    fn request_of(
        mac: [u8; 6],
        kind: MessageType,
        ciaddr: Ipv4Addr,
        requested: Option<Ipv4Addr>,
    ) -> Request {
        let mut m = Message::default();
        m.set_opcode(Opcode::BootRequest)
            .set_xid(7)
            .set_giaddr(RELAY)
            .set_ciaddr(ciaddr)
            .set_chaddr(&mac);
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        if let Some(ip) = requested {
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
            m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        }
        let mut bytes = Vec::new();
        m.encode(&mut Encoder::new(&mut bytes)).unwrap();
        Request::parse(&bytes).unwrap()
    }

    /// A DISCOVER then REQUEST of `mac` with these extra options; the ACKed address.
    fn lease_with(
        engine: &mut Engine,
        mac: [u8; 6],
        extra: &[DhcpOption],
        now: UnixTime,
    ) -> Option<Ipv4Addr> {
        let plugins = PluginSet::load(&[]);
        let (vendors, origin) = vendors_and_origin(&plugins);
        let with = |mut req: Message| {
            for option in extra {
                req.opts_mut().insert(option.clone());
            }
            let mut bytes = Vec::new();
            req.encode(&mut Encoder::new(&mut bytes)).unwrap();
            Request::parse(&bytes).unwrap()
        };
        let message = |kind, requested: Option<Ipv4Addr>| {
            let mut m = Message::default();
            m.set_opcode(Opcode::BootRequest)
                .set_xid(7)
                .set_giaddr(RELAY)
                .set_chaddr(&mac);
            m.opts_mut().insert(DhcpOption::MessageType(kind));
            if let Some(ip) = requested {
                m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
                m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
            }
            m
        };
        let discover = with(message(MessageType::Discover, None));
        let offered = engine
            .handle(&discover, &origin, &vendors, now)
            .reply?
            .yiaddr;
        let request = with(message(MessageType::Request, Some(offered)));
        let ack = engine.handle(&request, &origin, &vendors, now).reply?;
        (ack.msg_type == MsgType::Ack).then_some(ack.yiaddr)
    }

    #[test]
    fn clients_keep_their_address_across_a_restart_whatever_their_identifier() {
        let dir = tempfile::tempdir().unwrap();
        let long_id: Vec<u8> = (0..20).collect();
        let clients: [([u8; 6], Vec<DhcpOption>); 3] = [
            ([0x02, 0, 0, 2, 0, 1], vec![]),
            (
                [0x02, 0, 0, 2, 0, 2],
                vec![DhcpOption::ClientIdentifier(vec![1, 2, 0, 0, 2, 0, 2])],
            ),
            // Longer than a key holds: kept as a digest.
            (
                [0x02, 0, 0, 2, 0, 3],
                vec![DhcpOption::ClientIdentifier(long_id.clone())],
            ),
        ];
        let mut before = engine(dir.path());
        let first: Vec<_> = clients
            .iter()
            .map(|(mac, extra)| lease_with(&mut before, *mac, extra, 1_000_000).unwrap())
            .collect();
        before.flush(false).unwrap();
        drop(before);
        let mut engine = engine(dir.path());
        // Other clients first: a restarted engine that forgot who holds what would give them
        // the addresses above.
        for n in 0..3u8 {
            lease_with(&mut engine, [0x02, 0, 0, 3, 0, n], &[], 1_000_100).unwrap();
        }
        let again: Vec<_> = clients
            .iter()
            .map(|(mac, extra)| lease_with(&mut engine, *mac, extra, 1_000_200).unwrap())
            .collect();
        assert_eq!(first, again);
        // The same long identifier from another MAC is the same client.
        let moved = lease_with(
            &mut engine,
            [0x02, 0, 0, 2, 0, 9],
            &[DhcpOption::ClientIdentifier(long_id)],
            1_000_300,
        );
        assert_eq!(moved, Some(first[2]));
    }

    #[test]
    fn rewritten_leases_keep_their_host_name_and_client_identifier() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = engine(dir.path());
        let long_id: Vec<u8> = (100..130).collect();
        let start: UnixTime = 1_000_000;
        let ip = lease_with(
            &mut engine,
            MAC,
            &[
                DhcpOption::ClientIdentifier(long_id.clone()),
                DhcpOption::Hostname("desk-42".into()),
            ],
            start,
        )
        .unwrap();
        // The engine keeps neither; expiry rewrites the record from the store's copy.
        let events = engine.tick(start + 86_400 * 30);
        assert_eq!(events.len(), 1);
        engine.flush(false).unwrap();
        let stored = engine.writer.store.lease(ip).unwrap().unwrap();
        assert_eq!(stored.state, LeaseState::Expired);
        assert_eq!(stored.hostname.as_deref(), Some("desk-42"));
        assert_eq!(stored.client_id, Some(to_hex(&long_id)));
        assert_eq!(stored.starts, start);
    }

    #[test]
    fn renewals_and_releases_keep_one_timer_per_lease() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = engine(dir.path());
        let plugins = PluginSet::load(&[]);
        let (vendors, origin) = vendors_and_origin(&plugins);
        let start: UnixTime = 1_000_000;
        let offer = engine.handle(
            &request(MessageType::Discover, Ipv4Addr::UNSPECIFIED, None),
            &origin,
            &vendors,
            start,
        );
        let offered = offer.reply.expect("an OFFER").yiaddr;
        let ack = engine.handle(
            &request(MessageType::Request, Ipv4Addr::UNSPECIFIED, Some(offered)),
            &origin,
            &vendors,
            start,
        );
        assert_eq!(ack.reply.map(|r| r.msg_type), Some(MsgType::Ack));
        assert_eq!(engine.timer_entries(), 1);
        // A client renewing every second for 1,000 s: each ACK moves the lease's end.
        for t in 1..=1000 {
            let renewal = engine.handle(
                &request(MessageType::Request, offered, None),
                &origin,
                &vendors,
                start + t,
            );
            assert_eq!(renewal.reply.map(|r| r.msg_type), Some(MsgType::Ack));
        }
        assert_eq!(engine.timer_entries(), 1, "one entry for the one lease");
        engine.handle(
            &request(MessageType::Release, offered, None),
            &origin,
            &vendors,
            start + 1001,
        );
        assert_eq!(engine.timer_entries(), 1, "the released lease only");
        assert_eq!(engine.leases[&offered].state, LeaseState::Released);
    }

    #[test]
    fn a_flood_of_new_clients_keeps_one_client_entry_per_lease() {
        let dir = tempfile::tempdir().unwrap();
        let mut engine = engine(dir.path());
        let plugins = PluginSet::load(&[]);
        let (vendors, origin) = vendors_and_origin(&plugins);
        let none = Ipv4Addr::UNSPECIFIED;
        // 500 made-up clients through a pool of 11 addresses, each releasing its lease: the
        // addresses change hands again and again.
        for n in 0..500u16 {
            let [hi, lo] = n.to_be_bytes();
            let mac = [0x02, 0, 0, 1, hi, lo];
            let now = 1_000_000 + UnixTime::from(n);
            let discover = request_of(mac, MessageType::Discover, none, None);
            let offered = engine
                .handle(&discover, &origin, &vendors, now)
                .reply
                .expect("an OFFER")
                .yiaddr;
            let req = request_of(mac, MessageType::Request, none, Some(offered));
            let ack = engine.handle(&req, &origin, &vendors, now);
            assert_eq!(ack.reply.map(|r| r.msg_type), Some(MsgType::Ack));
            let release = request_of(mac, MessageType::Release, offered, None);
            engine.handle(&release, &origin, &vendors, now);
        }
        assert_eq!(engine.lease_count(), 11);
        assert!(
            engine.client_entries() <= engine.lease_count(),
            "{} client entries for {} leases",
            engine.client_entries(),
            engine.lease_count()
        );
        assert!(engine.timer_entries() <= engine.lease_count());
    }
}
