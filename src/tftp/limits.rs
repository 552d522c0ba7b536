//! Concurrent transfer limits, global and per client IP.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Counts running transfers; a [`Slot`] is one of them.
#[derive(Debug)]
pub(super) struct Limits {
    max_total: usize,
    max_per_client: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// One running transfer; dropping it frees its place.
#[derive(Debug)]
pub(super) struct Slot {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Limits {
    /// Limits of `max_total` transfers, `max_per_client` of them from one IP address.
    pub(super) fn new(max_total: usize, max_per_client: usize) -> Arc<Limits> {
        Arc::new(Limits {
            max_total,
            max_per_client,
            counts: Mutex::default(),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Nothing panics while the lock is held, and the counts stay usable if it ever did.
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A slot for `client`, or `None` when a limit is reached.
    pub(super) fn acquire(self: &Arc<Self>, client: IpAddr) -> Option<Slot> {
        // An IPv4 client seen through a dual-stack socket is the same client.
        let client = client.to_canonical();
        let mut counts = self.counts();
        let mine = counts.per_client.get(&client).copied().unwrap_or(0);
        if counts.total >= self.max_total || mine >= self.max_per_client {
            return None;
        }
        counts.total += 1;
        counts.per_client.insert(client, mine + 1);
        Some(Slot {
            limits: Arc::clone(self),
            client,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(mine) = counts.per_client.get_mut(&self.client) {
            *mine -= 1;
            if *mine == 0 {
                counts.per_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_and_per_client() {
        let limits = Limits::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let a1 = limits.acquire(a).unwrap();
        let _a2 = limits.acquire(a).unwrap();
        assert!(limits.acquire(a).is_none(), "per client");
        let _b1 = limits.acquire(b).unwrap();
        assert!(
            limits.acquire("10.0.0.3".parse().unwrap()).is_none(),
            "global"
        );
        drop(a1);
        let _a3 = limits.acquire(a).unwrap();
        drop(_b1);
        assert!(limits.acquire("10.0.0.2".parse().unwrap()).is_some());
    }
}
