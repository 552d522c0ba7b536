//! Log lines that strangers cause, bounded per source and summarised.
//!
//! A malformed datagram, a hostile path, a wrong `url_key` or an unknown API token costs the
//! sender one packet and would cost the operator one log line each: a flood of them would
//! flood the journal. Every such event goes through [`Rejections::admit`], which counts it
//! (exactly, for `/metrics`) and says whether its line may be logged. In each window of
//! [`Limits::window`] (per kind of event), the first [`Limits::burst`] events of a source are
//! logged as usual, [`Limits::max_lines`] at most for all sources together; the others are
//! suppressed, and when the window closes one summary line per source says how many were,
//! like "1,203 malformed TFTP requests from 127.0.0.1 in the last 60 s (suppressed)".
//!
//! Memory is bounded whatever the senders claim to be: at most [`Limits::max_sources`]
//! sources are tracked per kind and window, the rest share one "other sources" bucket, and at
//! most [`Limits::max_summaries`] sources get their own summary line (the rest share one).
//! Windows close at the first event after their end, or from [`Rejections::flush_due`], which
//! the daemon calls every second, and at shutdown from [`Rejections::flush_all`].

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What a stranger did, by transport and reason; each kind has its own windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A datagram on the TFTP port that is not a valid request.
    TftpMalformed,
    /// A TFTP file name with a backslash or NUL, or one that could leave the served tree.
    TftpPath,
    /// A TFTP write request.
    TftpMethod,
    /// A TFTP request refused by the transfer limits.
    TftpBusy,
    /// A TFTP file name without a valid `url_key` key.
    TftpUrlKey,
    /// A TFTP file request with no file to answer (unknown device, no route…).
    TftpNotFound,
    /// An HTTP path that is too long, not UTF-8, has forbidden characters or could leave the
    /// served tree.
    HttpPath,
    /// An HTTP method other than GET and HEAD on the provisioning server.
    HttpMethod,
    /// An HTTP path without a valid `url_key` key.
    HttpUrlKey,
    /// An HTTP file request with no file to answer (unknown device, no route…).
    HttpNotFound,
    /// A code form request refused: malformed path, wrong signature, unknown device or no
    /// form for it, or a phone whose User-Agent names another MAC.
    HttpCodeForm,
    /// A datagram on the dhcpinfo socket that is not a valid lease event.
    DhcpinfoMalformed,
    /// A datagram on the DHCP port that is not a valid DHCP message.
    DhcpMalformed,
    /// An API request with an unknown or expired token.
    ApiToken,
    /// An unknown phone not created: the autocreation bucket was empty or the store full
    /// (any transport: identification refuses it).
    Autocreate,
}

impl Kind {
    /// Every kind, in the order of `/metrics`.
    pub const ALL: [Kind; 15] = [
        Kind::TftpMalformed,
        Kind::TftpPath,
        Kind::TftpMethod,
        Kind::TftpBusy,
        Kind::TftpUrlKey,
        Kind::TftpNotFound,
        Kind::HttpPath,
        Kind::HttpMethod,
        Kind::HttpUrlKey,
        Kind::HttpNotFound,
        Kind::HttpCodeForm,
        Kind::DhcpinfoMalformed,
        Kind::DhcpMalformed,
        Kind::ApiToken,
        Kind::Autocreate,
    ];

    /// The `transport` label.
    pub fn transport(self) -> &'static str {
        match self {
            Kind::TftpMalformed
            | Kind::TftpPath
            | Kind::TftpMethod
            | Kind::TftpBusy
            | Kind::TftpUrlKey
            | Kind::TftpNotFound => "tftp",
            Kind::HttpPath
            | Kind::HttpMethod
            | Kind::HttpUrlKey
            | Kind::HttpNotFound
            | Kind::HttpCodeForm => "http",
            Kind::DhcpinfoMalformed => "dhcpinfo",
            Kind::DhcpMalformed => "dhcp",
            Kind::ApiToken => "api",
            Kind::Autocreate => "ident",
        }
    }

    /// The `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::TftpMalformed | Kind::DhcpinfoMalformed | Kind::DhcpMalformed => "malformed",
            Kind::TftpPath | Kind::HttpPath => "path",
            Kind::TftpMethod | Kind::HttpMethod => "method",
            Kind::TftpBusy => "busy",
            Kind::TftpUrlKey | Kind::HttpUrlKey => "url_key",
            Kind::TftpNotFound | Kind::HttpNotFound => "not_found",
            Kind::HttpCodeForm => "code_form",
            Kind::ApiToken => "token",
            Kind::Autocreate => "autocreate",
        }
    }

    /// The events in a summary line, plural.
    fn noun(self) -> &'static str {
        match self {
            Kind::TftpMalformed => "malformed TFTP requests",
            Kind::TftpPath => "TFTP requests with a refused file name",
            Kind::TftpMethod => "TFTP write requests",
            Kind::TftpBusy => "TFTP requests refused as busy",
            Kind::TftpUrlKey => "TFTP requests without a valid url_key",
            Kind::TftpNotFound => "TFTP requests for no file",
            Kind::HttpPath => "HTTP requests with a refused path",
            Kind::HttpMethod => "HTTP requests with a refused method",
            Kind::HttpUrlKey => "HTTP requests without a valid url_key",
            Kind::HttpNotFound => "HTTP requests for no file",
            Kind::HttpCodeForm => "refused code form requests",
            Kind::DhcpinfoMalformed => "malformed lease events",
            Kind::DhcpMalformed => "malformed DHCP datagrams",
            Kind::ApiToken => "API requests with an unknown or expired token",
            Kind::Autocreate => "unknown phones not created (autocreation limit)",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Who sent an event: an address, or a local socket whose senders have no identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A network peer (IPv4-mapped IPv6 addresses are taken as IPv4).
    Ip(IpAddr),
    /// Every sender on a local socket, named.
    Local(&'static str),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Source {
        Source::Ip(ip.to_canonical())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ip(ip) => ip.fmt(f),
            Source::Local(name) => f.write_str(name),
        }
    }
}

/// How much is logged per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Length of a window.
    pub window: Duration,
    /// Lines logged per source and window.
    pub burst: u32,
    /// Lines logged per window, all sources together (a flood from many addresses).
    pub max_lines: u32,
    /// Sources tracked per window; later ones share one bucket.
    pub max_sources: usize,
    /// Sources with a summary line of their own; the others share one.
    pub max_summaries: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            window: Duration::from_secs(60),
            burst: 10,
            max_lines: 100,
            max_sources: 4096,
            max_summaries: 10,
        }
    }
}

/// Whom a summary is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Senders {
    /// One source.
    One(Source),
    /// Sources without a line of their own: `tracked` of them, plus any beyond the tracking
    /// cap when `untracked`.
    Others {
        /// Tracked sources folded into this line.
        tracked: usize,
        /// True when sources beyond the cap sent some of these events.
        untracked: bool,
    },
}

/// Events suppressed in one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// What they were.
    pub kind: Kind,
    /// Who sent them.
    pub from: Senders,
    /// How many were not logged.
    pub suppressed: u64,
    /// Length of the window, in seconds.
    pub seconds: u64,
}

/// `1203` as `1,203`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} from ",
            thousands(self.suppressed),
            self.kind.noun()
        )?;
        match self.from {
            Senders::One(source) => write!(f, "{source}")?,
            Senders::Others { tracked, untracked } => {
                let n = thousands(tracked as u64);
                let plural = if tracked == 1 { "" } else { "s" };
                match (tracked, untracked) {
                    (0, _) => f.write_str("other sources")?,
                    // At least one more sent beyond the tracking cap.
                    (_, true) => write!(f, "over {n} other sources")?,
                    (_, false) => write!(f, "{n} other source{plural}")?,
                }
            }
        }
        write!(f, " in the last {} s (suppressed)", self.seconds)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    logged: u32,
    suppressed: u64,
}

#[derive(Debug)]
struct Window {
    start: Instant,
    sources: HashMap<Source, Count>,
    /// Sources beyond `max_sources`, as one.
    overflow: Count,
    lines: u32,
}

/// The windows of one kind of event; pure (time comes from the caller).
#[derive(Debug)]
pub struct Limiter {
    kind: Kind,
    limits: Limits,
    window: Option<Window>,
}

impl Limiter {
    /// A limiter with no open window.
    pub fn new(kind: Kind, limits: Limits) -> Limiter {
        Limiter {
            kind,
            limits,
            window: None,
        }
    }

    /// Counts an event of `source` at `now`: true when its line may be logged; also the
    /// summaries of the window that this event found over.
    pub fn event(&mut self, source: Source, now: Instant) -> (bool, Vec<Summary>) {
        let summaries = self.close_due(now);
        let limits = self.limits;
        let window = self.window.get_or_insert_with(|| Window {
            start: now,
            sources: HashMap::new(),
            overflow: Count::default(),
            lines: 0,
        });
        let count =
            if window.sources.len() < limits.max_sources || window.sources.contains_key(&source) {
                window.sources.entry(source).or_default()
            } else {
                &mut window.overflow
            };
        let log = count.logged < limits.burst && window.lines < limits.max_lines;
        if log {
            count.logged += 1;
            window.lines += 1;
        } else {
            count.suppressed += 1;
        }
        (log, summaries)
    }

    /// Closes the window if it ended by `now`, with its summaries.
    pub fn close_due(&mut self, now: Instant) -> Vec<Summary> {
        match &self.window {
            Some(w) if now.saturating_duration_since(w.start) >= self.limits.window => {
                self.close(now)
            }
            _ => Vec::new(),
        }
    }

    /// Closes the window whatever its age (shutdown), with its summaries.
    pub fn close(&mut self, now: Instant) -> Vec<Summary> {
        let Some(window) = self.window.take() else {
            return Vec::new();
        };
        let elapsed = now
            .saturating_duration_since(window.start)
            .min(self.limits.window);
        // Rounded up: a window that saw events lasted at least a second in the text.
        let seconds = elapsed.as_secs() + u64::from(elapsed.subsec_nanos() > 0);
        let seconds = seconds.max(1);
        let mut noisy: Vec<(Source, u64)> = window
            .sources
            .into_iter()
            .filter(|(_, c)| c.suppressed > 0)
            .map(|(s, c)| (s, c.suppressed))
            .collect();
        // The loudest first; the order among equals is fixed so that output is stable.
        noisy.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let rest = noisy.split_off(noisy.len().min(self.limits.max_summaries));
        let mut out: Vec<Summary> = noisy
            .into_iter()
            .map(|(source, suppressed)| Summary {
                kind: self.kind,
                from: Senders::One(source),
                suppressed,
                seconds,
            })
            .collect();
        let others = rest.iter().map(|(_, n)| n).sum::<u64>() + window.overflow.suppressed;
        if others > 0 {
            out.push(Summary {
                kind: self.kind,
                from: Senders::Others {
                    tracked: rest.len(),
                    untracked: window.overflow.suppressed > 0,
                },
                suppressed: others,
                seconds,
            });
        }
        out
    }
}

/// The time source, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// Every kind's limiter and exact count; shared by all transports of a daemon.
pub struct Rejections {
    limiters: Vec<Mutex<Limiter>>,
    totals: Vec<AtomicU64>,
    clock: Clock,
}

impl fmt::Debug for Rejections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejections").finish_non_exhaustive()
    }
}

impl Default for Rejections {
    fn default() -> Rejections {
        Rejections::new(Limits::default(), Arc::new(Instant::now))
    }
}

impl Rejections {
    /// Limiters with these limits, reading time from `clock`.
    pub fn new(limits: Limits, clock: Clock) -> Rejections {
        Rejections {
            limiters: Kind::ALL
                .iter()
                .map(|&kind| Mutex::new(Limiter::new(kind, limits)))
                .collect(),
            totals: Kind::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            clock,
        }
    }

    fn limiter(&self, kind: Kind) -> MutexGuard<'_, Limiter> {
        // The limiter is consistent between statements: a panic elsewhere leaves it usable.
        self.limiters[kind.index()]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts an event of `kind` from `source`: true when the caller should log its line.
    pub fn admit(&self, kind: Kind, source: impl Into<Source>) -> bool {
        self.totals[kind.index()].fetch_add(1, Ordering::Relaxed);
        let now = (self.clock)();
        let (log, summaries) = self.limiter(kind).event(source.into(), now);
        summaries.iter().for_each(emit);
        log
    }

    /// Events of `kind` counted so far, logged or not.
    pub fn total(&self, kind: Kind) -> u64 {
        self.totals[kind.index()].load(Ordering::Relaxed)
    }

    /// Logs the summaries of the windows that ended.
    pub fn flush_due(&self) {
        let now = (self.clock)();
        for kind in Kind::ALL {
            let summaries = self.limiter(kind).close_due(now);
            summaries.iter().for_each(emit);
        }
    }

    /// Closes every window and logs its summaries (at shutdown: nothing is left untold).
    pub fn flush_all(&self) {
        let now = (self.clock)();
        for kind in Kind::ALL {
            let summaries = self.limiter(kind).close(now);
            summaries.iter().for_each(emit);
        }
    }

    /// Calls [`Rejections::flush_due`] every second until `shutdown` turns true.
    pub async fn flush_periodically(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow_and_update() {
                return;
            }
            tokio::select! {
                _ = tick.tick() => self.flush_due(),
                changed = shutdown.changed() => if changed.is_err() { return },
            }
        }
    }

    /// Appends `provisiond_rejected_total{transport,reason}` in Prometheus text format.
    pub fn write_metrics(&self, out: &mut String) {
        out.push_str("# HELP provisiond_rejected_total Requests and datagrams refused as malformed, hostile or unauthorised, by transport and reason (their log lines are rate-limited).\n# TYPE provisiond_rejected_total counter\n");
        for kind in Kind::ALL {
            out.push_str(&format!(
                "provisiond_rejected_total{{transport=\"{}\",reason=\"{}\"}} {}\n",
                kind.transport(),
                kind.reason(),
                self.total(kind)
            ));
        }
    }
}

/// Logs a summary with the level and target of the lines it stands for, so that a filter
/// that hides them hides their summaries too.
fn emit(s: &Summary) {
    macro_rules! line {
        ($level:ident, $target:literal) => {
            tracing::$level!(
                target: $target,
                reason = s.kind.reason(),
                transport = s.kind.transport(),
                suppressed = s.suppressed,
                "{s}"
            )
        };
    }
    match s.kind {
        Kind::TftpMalformed | Kind::TftpPath | Kind::TftpBusy => line!(warn, "provisiond::tftp"),
        Kind::TftpMethod => line!(info, "provisiond::tftp"),
        Kind::TftpUrlKey | Kind::TftpNotFound => line!(info, "provisiond::tftp::access"),
        Kind::HttpPath
        | Kind::HttpMethod
        | Kind::HttpUrlKey
        | Kind::HttpNotFound
        | Kind::HttpCodeForm => line!(info, "provisiond::http::access"),
        Kind::DhcpinfoMalformed => line!(warn, "provisiond::dhcpinfo::listener"),
        Kind::DhcpMalformed => line!(debug, "provisiond::dhcp"),
        Kind::ApiToken => line!(warn, "provisiond::http::api::auth"),
        Kind::Autocreate => line!(warn, "provisiond::ident"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Source {
        Source::from(text.parse::<IpAddr>().unwrap())
    }

    fn small() -> Limits {
        Limits {
            window: Duration::from_secs(60),
            burst: 3,
            max_lines: 100,
            max_sources: 4,
            max_summaries: 2,
        }
    }

    /// Sends `n` events of `source` at `now`; returns how many were admitted.
    fn send(l: &mut Limiter, source: Source, n: usize, now: Instant) -> usize {
        (0..n)
            .filter(|_| {
                let (log, summaries) = l.event(source, now);
                assert!(summaries.is_empty(), "no window ends inside a burst");
                log
            })
            .count()
    }

    #[test]
    fn a_burst_is_logged_then_the_rest_is_summarised_when_the_window_ends() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Kind::TftpMalformed, small());
        let a = ip("127.0.0.1");
        assert_eq!(send(&mut l, a, 1000, t0), 3);
        assert_eq!(send(&mut l, a, 203, t0 + Duration::from_secs(59)), 0);
        assert!(l.close_due(t0 + Duration::from_secs(59)).is_empty());
        let summaries = l.close_due(t0 + Duration::from_secs(60));
        assert_eq!(
            summaries,
            [Summary {
                kind: Kind::TftpMalformed,
                from: Senders::One(a),
                suppressed: 1200,
                seconds: 60,
            }]
        );
        assert_eq!(
            summaries[0].to_string(),
            "1,200 malformed TFTP requests from 127.0.0.1 in the last 60 s (suppressed)"
        );
        // A new window: the source gets its burst again.
        assert_eq!(send(&mut l, a, 5, t0 + Duration::from_secs(61)), 3);
    }

    #[test]
    fn the_next_event_after_the_window_closes_it() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Kind::DhcpinfoMalformed, small());
        let s = Source::Local("the dhcpinfo socket");
        send(&mut l, s, 4, t0);
        let (log, summaries) = l.event(s, t0 + Duration::from_secs(300));
        assert!(log, "first event of the new window");
        assert_eq!(summaries.len(), 1);
        assert_eq!(
            summaries[0].to_string(),
            "1 malformed lease events from the dhcpinfo socket in the last 60 s (suppressed)"
        );
    }

    #[test]
    fn a_window_without_suppression_says_nothing() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Kind::HttpUrlKey, small());
        send(&mut l, ip("10.0.0.1"), 3, t0);
        assert!(l.close(t0 + Duration::from_secs(61)).is_empty());
        assert!(l.close(t0 + Duration::from_secs(62)).is_empty(), "closed");
    }

    #[test]
    fn sources_are_independent() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Kind::HttpUrlKey, small());
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        assert_eq!(send(&mut l, a, 50, t0), 3);
        assert_eq!(send(&mut l, b, 2, t0), 2, "a's flood costs b nothing");
        assert_eq!(
            send(&mut l, ip("::ffff:10.0.0.2"), 5, t0),
            1,
            "the same IPv4 client"
        );
        let summaries = l.close(t0 + Duration::from_millis(2500));
        assert_eq!(
            summaries,
            [
                Summary {
                    kind: Kind::HttpUrlKey,
                    from: Senders::One(a),
                    suppressed: 47,
                    seconds: 3,
                },
                Summary {
                    kind: Kind::HttpUrlKey,
                    from: Senders::One(b),
                    suppressed: 4,
                    seconds: 3,
                },
            ]
        );
    }

    #[test]
    fn sources_beyond_the_cap_share_one_bucket_and_one_summary() {
        let t0 = Instant::now();
        let mut l = Limiter::new(Kind::TftpMalformed, small());
        // A flood from made-up addresses: four tracked, the others one bucket.
        let mut logged = 0;
        for i in 0..10_000u32 {
            let source = Source::from(IpAddr::from(i.to_be_bytes()));
            logged += usize::from(l.event(source, t0).0);
        }
        let tracked = l.window.as_ref().map(|w| w.sources.len());
        assert_eq!(tracked, Some(4), "memory stays bounded");
        assert_eq!(
            logged,
            4 + 3,
            "one line per tracked source, a burst for the rest"
        );
        let summaries = l.close(t0 + Duration::from_secs(60));
        assert_eq!(
            summaries,
            [Summary {
                kind: Kind::TftpMalformed,
                from: Senders::Others {
                    tracked: 0,
                    untracked: true,
                },
                suppressed: 10_000 - 7,
                seconds: 60,
            }]
        );
        assert_eq!(
            summaries[0].to_string(),
            "9,993 malformed TFTP requests from other sources in the last 60 s (suppressed)"
        );
    }

    #[test]
    fn lines_per_window_are_capped_for_all_sources_together() {
        let t0 = Instant::now();
        let limits = Limits {
            max_lines: 5,
            max_sources: 100,
            ..small()
        };
        let mut l = Limiter::new(Kind::ApiToken, limits);
        let logged: usize = (0..20u8)
            .map(|i| send(&mut l, Source::from(IpAddr::from([10, 0, 0, i])), 3, t0))
            .sum();
        assert_eq!(logged, 5);
        let summaries = l.close(t0 + Duration::from_secs(60));
        // The two loudest (equals by address), then one line for the other seventeen that lost
        // lines (10.0.0.1 lost one).
        assert_eq!(summaries.len(), 3);
        assert_eq!(
            summaries[0].from,
            Senders::One(Source::from(IpAddr::from([10, 0, 0, 2])))
        );
        assert_eq!(
            summaries[2].from,
            Senders::Others {
                tracked: 17,
                untracked: false,
            }
        );
        let total: u64 = summaries.iter().map(|s| s.suppressed).sum();
        assert_eq!(total, 60 - 5, "every suppressed event is in one summary");
    }

    #[test]
    fn rejections_count_exactly_and_read_the_injected_clock() {
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock_now = Arc::clone(&now);
        let clock: Clock = Arc::new(move || *clock_now.lock().unwrap());
        let r = Rejections::new(small(), clock);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let admitted = (0..500).filter(|_| r.admit(Kind::TftpMalformed, a)).count();
        assert_eq!(admitted, 3);
        assert!(r.admit(Kind::HttpUrlKey, a), "kinds are independent");
        *now.lock().unwrap() += Duration::from_secs(60);
        r.flush_due();
        assert!(r.admit(Kind::TftpMalformed, a), "flushed: a new window");
        assert_eq!(r.total(Kind::TftpMalformed), 501);
        assert_eq!(r.total(Kind::HttpUrlKey), 1);
        let mut text = String::new();
        r.write_metrics(&mut text);
        assert!(text
            .contains("provisiond_rejected_total{transport=\"tftp\",reason=\"malformed\"} 501\n"));
        assert!(text.contains("provisiond_rejected_total{transport=\"api\",reason=\"token\"} 0\n"));
    }

    #[test]
    fn every_kind_has_its_own_slot() {
        for (i, kind) in Kind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?}");
        }
    }

    #[test]
    fn numbers_have_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
