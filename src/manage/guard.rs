//! The limiter of guessable secrets in requests: provisioning codes, automatic-provisioning
//! tokens and `url_key` provisioning keys. Every attempt takes a token from its source's
//! bucket and, for codes and automatic tokens, from a bucket of that secret shared by all
//! sources; a success gives them back, so only failures cost. A source (or everybody) out of
//! tokens is refused without the secret being looked at, which bounds the guesses an attacker
//! gets whatever they send.
//!
//! With the defaults one address may fail 10 times at once, then once a minute (1,440 wrong
//! guesses a day), and all addresses together 100 codes at once, then one every 10 s (8,640 a
//! day). Against 12-digit codes that is 8,640 × 7 = 60,480 guesses during the 7 days a
//! rollout's codes live: with 1,000 codes live at once, a chance of 60,480 × 1,000 / 10^12 ≈
//! 6 × 10^-5 of hitting any one of them in a week, from any number of addresses. `url_key`
//! keys (8 to 256 characters chosen by the admin, not 12 digits) have no shared bucket: a
//! flood of wrong keys from many addresses must not stop every phone's keyed fetches.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bucket sizes and refill periods of a [`SecretGuard`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardLimits {
    /// Failures one source may have in a row.
    pub source_burst: u32,
    /// One failure more per source every this long.
    pub source_refill: Duration,
    /// Failures all sources together may have in a row.
    pub global_burst: u32,
    /// One failure more for everybody every this long.
    pub global_refill: Duration,
    /// Sources tracked at once; beyond, new sources only have the global bucket.
    pub max_sources: usize,
}

impl Default for GuardLimits {
    fn default() -> GuardLimits {
        GuardLimits {
            source_burst: 10,
            source_refill: Duration::from_secs(60),
            global_burst: 100,
            global_refill: Duration::from_secs(10),
            max_sources: 65_536,
        }
    }
}

/// Which secret an attempt guessed, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// A provisioning code.
    Code,
    /// An automatic-provisioning token.
    AutoToken,
    /// A `url_key` provisioning key.
    UrlKey,
}

impl Secret {
    /// The name in /metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Secret::Code => "code",
            Secret::AutoToken => "auto_token",
            Secret::UrlKey => "url_key",
        }
    }

    const ALL: [Secret; 3] = [Secret::Code, Secret::AutoToken, Secret::UrlKey];

    fn index(self) -> usize {
        self as usize
    }

    /// Whether all sources share a budget for this secret.
    fn shared(self) -> bool {
        self != Secret::UrlKey
    }
}

/// The attempt was refused before looking at the secret: too many failures lately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed attempts; try again later")]
pub struct Limited;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            at: now,
        }
    }

    fn refill(&mut self, burst: u32, period: Duration, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let rate = 1.0 / period.as_secs_f64().max(1e-9);
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(burst));
        self.at = now;
    }
}

struct Buckets {
    sources: HashMap<IpAddr, Bucket>,
    /// Per secret, by [`Secret::index`]; `None` for the secrets without a shared budget.
    global: [Option<Bucket>; 3],
}

/// Failures counted per secret, and attempts refused by the limit.
#[derive(Debug, Default)]
struct Counters {
    failed: [AtomicU64; 3],
    limited: [AtomicU64; 3],
}

/// Per-source and global failure budgets for guessable secrets; see the module doc.
pub struct SecretGuard {
    limits: GuardLimits,
    buckets: Mutex<Buckets>,
    counters: Counters,
    /// Last time a refusal was logged, so that a flood writes one line a minute.
    logged: Mutex<Option<Instant>>,
}

/// The bucket key of an address: IPv6 clients are one source per /64 (one host can use a
/// whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

impl SecretGuard {
    /// A guard with these limits.
    pub fn new(limits: GuardLimits, now: Instant) -> SecretGuard {
        SecretGuard {
            buckets: Mutex::new(Buckets {
                sources: HashMap::new(),
                global: Secret::ALL
                    .map(|s| s.shared().then(|| Bucket::full(limits.global_burst, now))),
            }),
            limits,
            counters: Counters::default(),
            logged: Mutex::new(None),
        }
    }

    /// Takes one attempt of `source` at `secret`: `Err` when the source or everybody is out
    /// of failures. Give it back with [`SecretGuard::succeeded`] when the secret was right.
    pub fn attempt(&self, secret: Secret, source: IpAddr, now: Instant) -> Result<(), Limited> {
        let l = &self.limits;
        let key = source_key(source);
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let global_ok = match &mut b.global[secret.index()] {
            Some(g) => {
                g.refill(l.global_burst, l.global_refill, now);
                g.tokens >= 1.0
            }
            None => true,
        };
        if !b.sources.contains_key(&key) && b.sources.len() >= l.max_sources {
            // Forget the sources whose bucket refilled: they owe nothing.
            b.sources.retain(|_, s| {
                s.refill(l.source_burst, l.source_refill, now);
                s.tokens < f64::from(l.source_burst)
            });
        }
        let tracked = b.sources.contains_key(&key) || b.sources.len() < l.max_sources;
        let source_ok = match b.sources.get_mut(&key) {
            Some(s) => {
                s.refill(l.source_burst, l.source_refill, now);
                s.tokens >= 1.0
            }
            None => true,
        };
        if !source_ok || !global_ok {
            drop(b);
            self.counters.limited[secret.index()].fetch_add(1, Ordering::Relaxed);
            self.log_limited(secret, source, now);
            return Err(Limited);
        }
        if let Some(g) = &mut b.global[secret.index()] {
            g.tokens -= 1.0;
        }
        if tracked {
            let burst = l.source_burst;
            let s = b
                .sources
                .entry(key)
                .or_insert_with(|| Bucket::full(burst, now));
            s.tokens -= 1.0;
        }
        Ok(())
    }

    /// Gives back the tokens of an attempt at `secret` that was right (or that failed for
    /// another reason than a wrong secret).
    pub fn succeeded(&self, secret: Secret, source: IpAddr, now: Instant) {
        let l = &self.limits;
        let key = source_key(source);
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = &mut b.global[secret.index()] {
            g.refill(l.global_burst, l.global_refill, now);
            g.tokens = (g.tokens + 1.0).min(f64::from(l.global_burst));
        }
        let full = match b.sources.get_mut(&key) {
            Some(s) => {
                s.refill(l.source_burst, l.source_refill, now);
                s.tokens = (s.tokens + 1.0).min(f64::from(l.source_burst));
                s.tokens >= f64::from(l.source_burst)
            }
            None => false,
        };
        if full {
            b.sources.remove(&key);
        }
    }

    /// Counts a failed attempt (its tokens stay taken).
    pub fn failed(&self, secret: Secret) {
        self.counters.failed[secret.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed attempts at `secret` since start.
    pub fn failures(&self, secret: Secret) -> u64 {
        self.counters.failed[secret.index()].load(Ordering::Relaxed)
    }

    /// Attempts at `secret` refused by the limit since start.
    pub fn limited(&self, secret: Secret) -> u64 {
        self.counters.limited[secret.index()].load(Ordering::Relaxed)
    }

    fn log_limited(&self, secret: Secret, source: IpAddr, now: Instant) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(60)) {
            *logged = Some(now);
            tracing::warn!(
                %source,
                secret = secret.as_str(),
                "too many wrong {} attempts: refusing attempts (one line a minute at most; \
                 provisiond_secret_attempts_limited_total counts them)",
                secret.as_str()
            );
        }
    }

    /// Appends the counters in Prometheus' text format.
    pub fn write_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP provisiond_secret_failures_total Wrong provisioning codes, automatic-provisioning tokens and url_key keys.\n\
             # TYPE provisiond_secret_failures_total counter"
        );
        for s in Secret::ALL {
            let _ = writeln!(
                out,
                "provisiond_secret_failures_total{{secret=\"{}\"}} {}",
                s.as_str(),
                self.failures(s)
            );
        }
        let _ = writeln!(
            out,
            "# HELP provisiond_secret_attempts_limited_total Attempts refused unread because their source or everybody failed too often.\n\
             # TYPE provisiond_secret_attempts_limited_total counter"
        );
        for s in Secret::ALL {
            let _ = writeln!(
                out,
                "provisiond_secret_attempts_limited_total{{secret=\"{}\"}} {}",
                s.as_str(),
                self.limited(s)
            );
        }
    }
}

impl Default for SecretGuard {
    fn default() -> SecretGuard {
        SecretGuard::new(GuardLimits::default(), Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits() -> GuardLimits {
        GuardLimits {
            source_burst: 3,
            source_refill: Duration::from_secs(60),
            global_burst: 5,
            global_refill: Duration::from_secs(10),
            max_sources: 4,
        }
    }

    #[test]
    fn a_source_gets_its_burst_then_one_per_period() {
        let t0 = Instant::now();
        let g = SecretGuard::new(limits(), t0);
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(g.attempt(Secret::Code, a, t0), Ok(()));
        }
        assert_eq!(g.attempt(Secret::Code, a, t0), Err(Limited));
        assert_eq!(
            g.attempt(Secret::Code, a, t0 + Duration::from_secs(59)),
            Err(Limited)
        );
        assert_eq!(
            g.attempt(Secret::Code, a, t0 + Duration::from_secs(60)),
            Ok(())
        );
        assert_eq!(g.limited(Secret::Code), 2);
        // Another source is not held back by this one.
        assert_eq!(g.attempt(Secret::UrlKey, ip("192.0.2.2"), t0), Ok(()));
    }

    #[test]
    fn successes_cost_nothing() {
        let t0 = Instant::now();
        let g = SecretGuard::new(limits(), t0);
        let a = ip("192.0.2.1");
        for _ in 0..20 {
            assert_eq!(g.attempt(Secret::Code, a, t0), Ok(()));
            g.succeeded(Secret::Code, a, t0);
        }
    }

    #[test]
    fn many_sources_share_the_global_budget() {
        let t0 = Instant::now();
        let g = SecretGuard::new(limits(), t0);
        for n in 0..5 {
            assert_eq!(
                g.attempt(Secret::Code, ip(&format!("10.0.0.{n}")), t0),
                Ok(())
            );
        }
        assert_eq!(g.attempt(Secret::Code, ip("10.0.1.1"), t0), Err(Limited));
        assert_eq!(
            g.attempt(Secret::Code, ip("10.0.1.1"), t0 + Duration::from_secs(10)),
            Ok(())
        );
    }

    #[test]
    fn wrong_keys_from_everywhere_do_not_stop_other_phones() {
        let t0 = Instant::now();
        let g = SecretGuard::new(limits(), t0);
        for n in 0..50 {
            let _ = g.attempt(Secret::UrlKey, ip(&format!("10.2.0.{n}")), t0);
        }
        assert_eq!(g.attempt(Secret::UrlKey, ip("10.3.0.1"), t0), Ok(()));
        // Codes keep their own shared budget.
        assert_eq!(g.attempt(Secret::Code, ip("10.3.0.2"), t0), Ok(()));
    }

    #[test]
    fn an_ipv6_host_is_one_source_per_64() {
        let t0 = Instant::now();
        let g = SecretGuard::new(limits(), t0);
        for n in 1..=3 {
            let addr = ip(&format!("2001:db8:0:1::{n}"));
            assert_eq!(g.attempt(Secret::Code, addr, t0), Ok(()));
        }
        assert_eq!(
            g.attempt(Secret::Code, ip("2001:db8:0:1::ff"), t0),
            Err(Limited)
        );
        assert_eq!(g.attempt(Secret::Code, ip("2001:db8:0:2::1"), t0), Ok(()));
    }

    #[test]
    fn tracked_sources_are_bounded() {
        let t0 = Instant::now();
        let mut l = limits();
        l.global_burst = 1000;
        let g = SecretGuard::new(l, t0);
        for n in 0..100 {
            let _ = g.attempt(
                Secret::Code,
                ip(&format!("10.1.{}.{}", n / 250, n % 250)),
                t0,
            );
        }
        let tracked = g.buckets.lock().unwrap().sources.len();
        assert!(tracked <= 4, "{tracked} sources tracked");
    }
}
