//! Live events for people watching the daemon (the console's `/console/events`): a phone
//! fetched a file, a device was created, a provisioning code was used or revoked.
//!
//! Published by the layers that every transport and the API go through (`files`, `ident`,
//! `manage`), never by the console. Publishing never waits: the channel is a bounded
//! broadcast, and a subscriber that falls behind loses the oldest events and is told how many
//! (its page then offers a reload). A small ring keeps the last boot events for the overview.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};

use crate::model::UnixTime;

/// Events a subscriber may be behind before it loses the oldest.
pub const CHANNEL_CAPACITY: usize = 256;
/// Subscribers at once (each an open `/console/events` stream); more are refused.
pub const MAX_SUBSCRIBERS: usize = 64;
/// Boot events kept for the overview.
pub const RECENT_BOOTS: usize = 200;

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
    recent: Mutex<VecDeque<Arc<Event>>>,
    streams: Arc<Semaphore>,
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

/// One subscriber; holds one of the [`MAX_SUBSCRIBERS`] places until dropped.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
    closing: watch::Receiver<bool>,
    _place: OwnedSemaphorePermit,
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
        let (tx, _) = broadcast::channel(capacity.max(1));
        Events {
            tx,
            seq: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_BOOTS)),
            streams: Arc::new(Semaphore::new(subscribers)),
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
            if recent.len() == RECENT_BOOTS {
                recent.pop_front();
            }
            recent.push_back(Arc::clone(&event));
        }
        // No subscriber is not an error: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// A new subscriber, or `None` when [`MAX_SUBSCRIBERS`] are already listening or the
    /// daemon is stopping.
    pub fn subscribe(&self) -> Option<Subscription> {
        if *self.closing.borrow() {
            return None;
        }
        let place = Arc::clone(&self.streams).try_acquire_owned().ok()?;
        Some(Subscription {
            rx: self.tx.subscribe(),
            closing: self.closing.subscribe(),
            _place: place,
        })
    }

    /// The last `n` boot events whose tenant `shown` accepts, newest first.
    pub fn recent_boots(&self, n: usize, shown: impl Fn(&str) -> bool) -> Vec<Arc<Event>> {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent
            .iter()
            .rev()
            .filter(|e| shown(&e.tenant))
            .take(n)
            .cloned()
            .collect()
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
        let mut a = events.subscribe().unwrap();
        let _b = events.subscribe().unwrap();
        assert!(events.subscribe().is_none(), "bounded");
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
            events.subscribe().is_some(),
            "a dropped place is free again"
        );
        let recent = events.recent_boots(3, |t| t == "t");
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[0].seq, 10);
        assert!(events.recent_boots(3, |t| t == "other").is_empty());
        let mut c = events.subscribe().unwrap();
        events.close();
        assert!(matches!(c.next().await, Next::Closed));
        assert!(events.subscribe().is_none());
    }
}
