//! Live events for people watching the daemon (the console's `/console/events`): a phone
//! fetched a file, a device was created, a provisioning code was used or revoked.
//!
//! Published by the layers that every transport and the API go through (`files`, `ident`,
//! `manage`), never by the console. Publishing never waits: the channel is a bounded
//! broadcast, and a subscriber that falls behind loses the oldest events and is told how many
//! (its page then offers a reload). Small rings, one per tenant, keep the last boot events for
//! the overview, so that one busy tenant cannot push the others' out.

use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};

use crate::model::UnixTime;

/// Events a subscriber may be behind before it loses the oldest.
pub const CHANNEL_CAPACITY: usize = 256;
/// Subscribers at once (each an open `/console/events` stream); more are refused.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Subscribers at once for one holder (a console session), so that one cannot take them all.
pub const MAX_PER_HOLDER: usize = 4;
/// Boot events kept per tenant for the overview.
pub const RECENT_BOOTS: usize = 20;
/// Tenants whose boot events are kept; beyond, the least recently booted tenant's go.
pub const RECENT_TENANTS: usize = 10_000;

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Increasing number, per daemon run.
    pub seq: u64,
    /// When it happened.
    pub at: UnixTime,
    /// The tenant it belongs to: only sessions that reach it see it.
    pub tenant: String,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// What happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum What {
    /// A phone was served one of its files.
    Boot(Boot),
    /// A device record was created.
    Device(DeviceCreated),
    /// A provisioning code was redeemed or revoked.
    Code(CodeUsed),
}

impl What {
    /// The event's name on the wire (SSE `event:` field).
    pub fn name(&self) -> &'static str {
        match self {
            What::Boot(_) => "boot",
            What::Device(_) => "device",
            What::Code(_) => "code",
        }
    }
}

/// A file served to a phone.
#[derive(Debug, Clone, Serialize)]
pub struct Boot {
    /// Device id.
    pub device: String,
    /// The file, as requested (without a URL key).
    pub file: String,
    /// Vendor, when known.
    pub vendor: Option<String>,
    /// Model, when known.
    pub model: Option<String>,
    /// The phone's address.
    pub ip: String,
    /// `http` or `tftp`.
    pub transport: &'static str,
}

/// A device record made.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceCreated {
    /// Device id.
    pub device: String,
    /// MAC, when known.
    pub mac: Option<String>,
    /// Address, when known.
    pub ip: Option<String>,
    /// Vendor, when known.
    pub vendor: Option<String>,
    /// Model, when known.
    pub model: Option<String>,
    /// `autocreated` (a phone's first request) or `created` (the API).
    pub how: &'static str,
}

impl DeviceCreated {
    /// The event for `device`, made `how`.
    pub fn of(device: &crate::model::Device, how: &'static str) -> DeviceCreated {
        DeviceCreated {
            device: device.id.clone(),
            mac: device.mac.map(|m| m.to_string()),
            ip: device.ip.map(|ip| ip.to_string()),
            vendor: device.vendor.clone(),
            model: device.model.clone(),
            how,
        }
    }
}

/// A provisioning code used up.
#[derive(Debug, Clone, Serialize)]
pub struct CodeUsed {
    /// Its last digits, as the logs show them.
    pub code_tail: String,
    /// Category id.
    pub category: String,
    /// The rollout it belongs to, if any.
    pub rollout: Option<String>,
    /// Its entry's index in that rollout.
    pub entry: Option<usize>,
    /// `registered` or `revoked`.
    pub state: &'static str,
    /// The device that redeemed it.
    pub device: Option<String>,
    /// That device's MAC.
    pub device_mac: Option<String>,
}

/// The bus: one per daemon, shared by everything that publishes or subscribes.
pub struct Events {
    tx: broadcast::Sender<Arc<Event>>,
    seq: AtomicU64,
    recent: Mutex<Recent>,
    streams: Arc<Semaphore>,
    holders: Arc<Mutex<HashMap<String, usize>>>,
    closing: watch::Sender<bool>,
}

impl Default for Events {
    fn default() -> Events {
        Events::with_limits(CHANNEL_CAPACITY, MAX_SUBSCRIBERS)
    }
}

/// What a subscriber gets next.
#[derive(Debug)]
pub enum Next {
    /// An event.
    Event(Arc<Event>),
    /// This many events were lost: the subscriber was too slow.
    Lagged(u64),
    /// The daemon is stopping.
    Closed,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// [`MAX_SUBSCRIBERS`] are listening.
    #[error("too many subscribers")]
    Full,
    /// The holder has [`MAX_PER_HOLDER`] already.
    #[error("too many subscribers for one holder")]
    HolderFull,
    /// The daemon is stopping.
    #[error("the daemon is stopping")]
    Closing,
}

/// One subscriber; holds one of the [`MAX_SUBSCRIBERS`] places, and one of its holder's,
/// until dropped.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
    closing: watch::Receiver<bool>,
    _place: OwnedSemaphorePermit,
    _holder: HolderPlace,
}

/// One of a holder's places; given back when dropped.
struct HolderPlace {
    holders: Arc<Mutex<HashMap<String, usize>>>,
    holder: String,
}

impl Drop for HolderPlace {
    fn drop(&mut self) {
        let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = holders.get_mut(&self.holder) {
            *n -= 1;
            // Gone holders leave no entry: the map stays as small as the open streams.
            if *n == 0 {
                holders.remove(&self.holder);
            }
        }
    }
}

/// The last boot events of each tenant, for at most `max_tenants` tenants.
struct Recent {
    per_tenant: usize,
    max_tenants: usize,
    /// Each tenant's ring, oldest first, and the `seq` of its newest event.
    rings: HashMap<String, (u64, VecDeque<Arc<Event>>)>,
    /// The tenants by the `seq` of their newest event: the first is the one to evict.
    by_last: BTreeMap<u64, String>,
}

impl Recent {
    fn push(&mut self, event: Arc<Event>) {
        if !self.rings.contains_key(&event.tenant) && self.rings.len() >= self.max_tenants {
            if let Some((_, stale)) = self.by_last.pop_first() {
                self.rings.remove(&stale);
            }
        }
        let (last, ring) = self
            .rings
            .entry(event.tenant.clone())
            .or_insert_with(|| (0, VecDeque::with_capacity(self.per_tenant)));
        self.by_last.remove(last);
        *last = event.seq;
        self.by_last.insert(event.seq, event.tenant.clone());
        if ring.len() >= self.per_tenant {
            ring.pop_front();
        }
        ring.push_back(event);
    }
}

/// An event ordered by `seq` reversed: a [`BinaryHeap`] of them pops the oldest first.
struct Oldest(Arc<Event>);

impl PartialEq for Oldest {
    fn eq(&self, other: &Oldest) -> bool {
        self.0.seq == other.0.seq
    }
}
impl Eq for Oldest {}
impl PartialOrd for Oldest {
    fn partial_cmp(&self, other: &Oldest) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Oldest {
    fn cmp(&self, other: &Oldest) -> std::cmp::Ordering {
        other.0.seq.cmp(&self.0.seq)
    }
}

impl Subscription {
    /// Waits for the next event (or loss, or the end).
    pub async fn next(&mut self) -> Next {
        if *self.closing.borrow() {
            return Next::Closed;
        }
        tokio::select! {
            got = self.rx.recv() => match got {
                Ok(event) => Next::Event(event),
                Err(broadcast::error::RecvError::Lagged(n)) => Next::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => Next::Closed,
            },
            // A dropped sender also means the end.
            _ = self.closing.changed() => Next::Closed,
        }
    }
}

impl Events {
    /// A bus keeping `capacity` events per subscriber, for at most `subscribers` at once.
    pub fn with_limits(capacity: usize, subscribers: usize) -> Events {
        Events::with_recent(capacity, subscribers, RECENT_BOOTS, RECENT_TENANTS)
    }

    /// The same keeping `per_tenant` boot events for each of at most `tenants` tenants.
    pub fn with_recent(
        capacity: usize,
        subscribers: usize,
        per_tenant: usize,
        tenants: usize,
    ) -> Events {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Events {
            tx,
            seq: AtomicU64::new(0),
            recent: Mutex::new(Recent {
                per_tenant: per_tenant.max(1),
                max_tenants: tenants.max(1),
                rings: HashMap::new(),
                by_last: BTreeMap::new(),
            }),
            streams: Arc::new(Semaphore::new(subscribers)),
            holders: Arc::new(Mutex::new(HashMap::new())),
            closing: watch::Sender::new(false),
        }
    }

    /// Publishes `what` for `tenant`, now. Never blocks on subscribers.
    pub fn publish(&self, tenant: impl Into<String>, what: What) {
        self.publish_at(tenant, what, crate::model::now());
    }

    /// Publishes `what` for `tenant` as of `at`.
    pub fn publish_at(&self, tenant: impl Into<String>, what: What, at: UnixTime) {
        let event = Arc::new(Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            at,
            tenant: tenant.into(),
            what,
        });
        if matches!(event.what, What::Boot(_)) {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.push(Arc::clone(&event));
        }
        // No subscriber is not an error: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// A new subscriber for `holder` (a console session), refused when [`MAX_SUBSCRIBERS`]
    /// are already listening, when `holder` has [`MAX_PER_HOLDER`], or when the daemon is
    /// stopping.
    pub fn subscribe(&self, holder: &str) -> Result<Subscription, Refused> {
        if *self.closing.borrow() {
            return Err(Refused::Closing);
        }
        let held = {
            let mut holders = self.holders.lock().unwrap_or_else(|e| e.into_inner());
            let n = holders.entry(holder.to_owned()).or_insert(0);
            if *n >= MAX_PER_HOLDER {
                return Err(Refused::HolderFull);
            }
            *n += 1;
            HolderPlace {
                holders: Arc::clone(&self.holders),
                holder: holder.to_owned(),
            }
        };
        // Without a global place, `held` is dropped and gives the holder's back.
        let place = Arc::clone(&self.streams)
            .try_acquire_owned()
            .map_err(|_| Refused::Full)?;
        Ok(Subscription {
            rx: self.tx.subscribe(),
            closing: self.closing.subscribe(),
            _place: place,
            _holder: held,
        })
    }

    /// The last `n` boot events of the tenants that `shown` accepts, newest first.
    pub fn recent_boots(&self, n: usize, shown: impl Fn(&str) -> bool) -> Vec<Arc<Event>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        // The newest `n` of the shown rings: a heap of at most `n`, its oldest on top.
        let mut newest = BinaryHeap::with_capacity(n + 1);
        for (tenant, (_, ring)) in &recent.rings {
            if !shown(tenant) {
                continue;
            }
            for event in ring {
                newest.push(Oldest(Arc::clone(event)));
                if newest.len() > n {
                    newest.pop();
                }
            }
        }
        // Ascending by `Oldest`'s order is newest first.
        newest.into_sorted_vec().into_iter().map(|e| e.0).collect()
    }

    /// Ends every subscription (the daemon is stopping): open streams close at once instead
    /// of holding the shutdown.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot(device: &str) -> What {
        What::Boot(Boot {
            device: device.into(),
            file: "a.cfg".into(),
            vendor: None,
            model: None,
            ip: "192.0.2.1".into(),
            transport: "http",
        })
    }

    #[tokio::test]
    async fn slow_subscribers_lose_events_and_the_publisher_never_waits() {
        let events = Events::with_limits(4, 2);
        let mut a = events.subscribe("s1").unwrap();
        let _b = events.subscribe("s2").unwrap();
        assert_eq!(events.subscribe("s3").err(), Some(Refused::Full), "bounded");
        for i in 0..10 {
            events.publish("t", boot(&i.to_string()));
        }
        assert!(matches!(a.next().await, Next::Lagged(6)));
        match a.next().await {
            Next::Event(e) => assert_eq!(e.seq, 7),
            other => panic!("{other:?}"),
        }
        drop(a);
        assert!(
            events.subscribe("s3").is_ok(),
            "a dropped place is free again"
        );
        let recent = events.recent_boots(3, |t| t == "t");
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[0].seq, 10);
        assert!(events.recent_boots(3, |t| t == "other").is_empty());
        let mut c = events.subscribe("s1").unwrap();
        events.close();
        assert!(matches!(c.next().await, Next::Closed));
        assert_eq!(events.subscribe("s4").err(), Some(Refused::Closing));
    }

    #[test]
    fn one_holder_gets_at_most_its_share_and_gets_it_back() {
        let events = Events::with_limits(4, MAX_PER_HOLDER + 1);
        let mut mine: Vec<_> = (0..MAX_PER_HOLDER)
            .map(|_| events.subscribe("me").unwrap())
            .collect();
        assert_eq!(events.subscribe("me").err(), Some(Refused::HolderFull));
        let other = events.subscribe("other").unwrap();
        // The daemon-wide bound is reached: a refusal there leaves no count behind.
        assert_eq!(events.subscribe("third").err(), Some(Refused::Full));
        assert!(!events.holders.lock().unwrap().contains_key("third"));
        mine.pop();
        let again = events.subscribe("me").unwrap();
        drop((other, again));
        mine.clear();
        assert!(events.holders.lock().unwrap().is_empty(), "no entry left");
    }

    #[test]
    fn each_tenant_keeps_its_own_boots_within_bounds() {
        let events = Events::with_recent(4, 2, 3, 2);
        events.publish("a", boot("a1"));
        for i in 0..300 {
            events.publish("b", boot(&format!("b{i}")));
        }
        let a = events.recent_boots(20, |t| t == "a");
        assert_eq!(a.len(), 1, "b's boots leave a's");
        let both = events.recent_boots(2, |_| true);
        let seqs: Vec<u64> = both.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [301, 300], "newest first, n shown");
        let all = events.recent_boots(20, |_| true);
        assert_eq!(all.len(), 4, "3 of b and 1 of a");
        assert_eq!(all[3].tenant, "a");
        // A third tenant evicts the least recently booted one (a), not the busy one.
        events.publish("c", boot("c1"));
        assert!(events.recent_boots(20, |t| t == "a").is_empty());
        assert_eq!(events.recent_boots(20, |t| t == "b").len(), 3);
        events.publish("b", boot("b-last"));
        events.publish("a", boot("a2"));
        assert!(
            events.recent_boots(20, |t| t == "c").is_empty(),
            "c was oldest"
        );
        let recent = events.recent_boots(20, |_| true);
        assert_eq!(recent[0].tenant, "a");
        let recent = events.recent.lock().unwrap();
        assert_eq!((recent.rings.len(), recent.by_last.len()), (2, 2));
    }
}
