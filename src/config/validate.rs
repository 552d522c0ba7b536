//! Checks that span keys or need more than a type: ranges, subnets, address clashes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use url::Url;

use super::{DhcpMode, Pool, Settings};
use crate::model::validate_id;

/// Highest `[sync] rate` (NOTIFYs started per second).
pub const MAX_SYNC_RATE: u32 = 10_000;
/// Highest `[sync] concurrency` (NOTIFYs in flight).
pub const MAX_SYNC_CONCURRENCY: usize = 256;

/// A problem: key path and message.
type Problem = (String, String);

struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push((path.into(), message.into()));
    }
}

/// Every problem in `settings`, in key order; empty when it is usable.
pub(super) fn validate(settings: &Settings) -> Vec<Problem> {
    let mut p = Problems(Vec::new());
    general(settings, &mut p);
    listeners(settings, &mut p);
    limits(settings, &mut p);
    dhcp(settings, &mut p);
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&settings.log.level) {
        p.add(
            "log.level",
            format!("invalid filter {:?}: {e}", settings.log.level),
        );
    }
    p.0
}

fn general(s: &Settings, p: &mut Problems) {
    if s.general.data_dir.as_os_str().is_empty() {
        p.add("general.data_dir", "must not be empty");
    }
    if s.general.plugins_dir.as_os_str().is_empty() {
        p.add("general.plugins_dir", "must not be empty");
    }
    if s.general.autocreate_per_second == 0 {
        p.add("general.autocreate_per_second", "must be at least 1");
    }
    if s.general.autocreate_burst == 0 {
        p.add("general.autocreate_burst", "must be at least 1");
    }
    if !(8..=65_536).contains(&s.general.store_cache_mib) {
        p.add("general.store_cache_mib", "must be between 8 and 65536");
    }
    if let Err(e) = validate_id(&s.general.default_tenant) {
        p.add("general.default_tenant", e.to_string());
    }
    if let Some(url) = &s.general.base_url {
        check_base_url("general.base_url", url, p);
    }
    if s.https.enabled {
        for (key, value) in [("https.cert", &s.https.cert), ("https.key", &s.https.key)] {
            if value.is_none() {
                p.add(key, "required when https.enabled = true");
            }
        }
    }
    if s.dhcpinfo.enabled && s.dhcpinfo.socket.as_os_str().is_empty() {
        p.add(
            "dhcpinfo.socket",
            "must not be empty when dhcpinfo.enabled = true",
        );
    }
    if s.api.socket.as_os_str().is_empty() {
        p.add("api.socket", "must not be empty");
    }
}

fn check_base_url(path: &str, url: &Url, p: &mut Problems) {
    if !matches!(url.scheme(), "http" | "https") {
        p.add(path, format!("{url}: the scheme must be http or https"));
    } else if url.host().is_none() {
        p.add(path, format!("{url}: a host is required"));
    } else if url.query().is_some() || url.fragment().is_some() {
        p.add(
            path,
            format!("{url}: a base URL takes no query or fragment"),
        );
    }
}

/// Two sockets of the same protocol clash when they share a port and one address covers
/// the other; port 0 (an ephemeral port chosen at bind time) never clashes.
fn clash(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn listeners(s: &Settings, p: &mut Problems) {
    let mut tcp: Vec<(&str, SocketAddr)> = Vec::new();
    if s.http.enabled {
        tcp.push(("http.listen", s.http.listen));
    }
    if s.https.enabled {
        tcp.push(("https.listen", s.https.listen));
    }
    if s.api.enabled {
        tcp.push(("api.listen", s.api.listen));
    }
    for (i, (key, addr)) in tcp.iter().enumerate() {
        if let Some((other, _)) = tcp[..i].iter().find(|(_, prior)| clash(prior, addr)) {
            p.add(*key, format!("{addr} is already used by {other}"));
        }
    }
    if s.tftp.enabled && s.dhcp.mode != DhcpMode::Off && s.tftp.listen.port() == s.dhcp.port {
        p.add(
            "tftp.listen",
            format!("UDP port {} is already used by dhcp.port", s.dhcp.port),
        );
    }
    if s.dhcp.port == 0 {
        p.add("dhcp.port", "must not be 0");
    }
}

fn limits(s: &Settings, p: &mut Problems) {
    if s.http.max_request_bytes < 1024 {
        p.add("http.max_request_bytes", "must be at least 1024");
    }
    if s.http.request_timeout_secs == 0 {
        p.add("http.request_timeout_secs", "must be at least 1");
    }
    if s.console.idle_timeout_secs == 0 {
        p.add("console.idle_timeout_secs", "must be at least 1");
    }
    if !(1..=60).contains(&s.console.live_check_secs) {
        // Proxies commonly close a stream idle for a minute.
        p.add("console.live_check_secs", "must be 1 to 60");
    }
    if s.console.max_session_secs < s.console.idle_timeout_secs {
        p.add(
            "console.max_session_secs",
            "must be at least console.idle_timeout_secs",
        );
    }
    if s.api.max_body_bytes < 1024 {
        p.add("api.max_body_bytes", "must be at least 1024");
    }
    if s.tftp.max_transfers == 0 {
        p.add("tftp.max_transfers", "must be at least 1");
    }
    if s.tftp.max_per_client == 0 {
        p.add("tftp.max_per_client", "must be at least 1");
    }
    if s.tftp.timeout_secs == 0 {
        p.add("tftp.timeout_secs", "must be between 1 and 255");
    }
    if s.tftp.retries == 0 {
        p.add("tftp.retries", "must be at least 1");
    }
    // RFC 3261's timer F: a non-INVITE transaction is over after 32 s.
    if !(1..=32).contains(&s.sync.timeout_secs) {
        p.add("sync.timeout_secs", "must be between 1 and 32");
    }
    if s.sync.queue_max == 0 {
        p.add("sync.queue_max", "must be at least 1");
    }
    if !(1..=MAX_SYNC_RATE).contains(&s.sync.rate) {
        p.add(
            "sync.rate",
            format!("must be between 1 and {MAX_SYNC_RATE}"),
        );
    }
    // Each NOTIFY in flight holds a UDP socket for up to timeout_secs.
    if !(1..=MAX_SYNC_CONCURRENCY).contains(&s.sync.concurrency) {
        p.add(
            "sync.concurrency",
            format!("must be between 1 and {MAX_SYNC_CONCURRENCY}"),
        );
    }
    if s.plugins.max_archive_bytes == 0 || s.plugins.max_unpacked_bytes == 0 {
        p.add("plugins.max_archive_bytes", "sizes must be at least 1");
    }
    if !(1..=86_400).contains(&s.plugins.download_timeout_secs) {
        p.add(
            "plugins.download_timeout_secs",
            "must be between 1 and 86400",
        );
    }
}

fn usable(net: &Ipv4Net, ip: Ipv4Addr) -> bool {
    net.contains(&ip) && ip != net.network() && ip != net.broadcast()
}

fn dhcp(s: &Settings, p: &mut Problems) {
    let d = &s.dhcp;
    if d.mode != DhcpMode::Off && d.pools.is_empty() {
        p.add(
            "dhcp.pools",
            format!(
                "at least one pool is needed when dhcp.mode = {:?}",
                mode_name(d.mode)
            ),
        );
    }
    for (i, name) in d.interfaces.iter().enumerate() {
        // IFNAMSIZ is 16 with the terminating NUL.
        if name.is_empty()
            || name.len() > 15
            || name.contains(['/', ' ', '\0'])
            || name == "."
            || name == ".."
        {
            p.add(
                format!("dhcp.interfaces[{i}]"),
                format!("{name:?} is not a network interface name"),
            );
        }
    }
    let mut macs: HashMap<_, String> = HashMap::new();
    let mut fixed: HashMap<Ipv4Addr, String> = HashMap::new();
    for (i, pool) in d.pools.iter().enumerate() {
        let at = format!("dhcp.pools[{i}]");
        pool_alone(&at, pool, p);
        for (j, other) in d.pools[..i].iter().enumerate() {
            if pool.subnet.contains(&other.subnet) || other.subnet.contains(&pool.subnet) {
                p.add(
                    format!("{at}.subnet"),
                    format!(
                        "{} overlaps dhcp.pools[{j}].subnet {}",
                        pool.subnet, other.subnet
                    ),
                );
            }
        }
        for (k, r) in pool.reservations.iter().enumerate() {
            let here = format!("{at}.reservations[{k}]");
            if let Some(first) = macs.insert(r.mac, here.clone()) {
                p.add(
                    format!("{here}.mac"),
                    format!("{} is already reserved by {first}", r.mac),
                );
            }
            if let Some(first) = fixed.insert(r.ip, here.clone()) {
                p.add(
                    format!("{here}.ip"),
                    format!("{} is already reserved by {first}", r.ip),
                );
            }
        }
    }
}

fn mode_name(mode: DhcpMode) -> &'static str {
    match mode {
        DhcpMode::Off => "off",
        DhcpMode::Server => "server",
        DhcpMode::PhonesOnly => "phones-only",
    }
}

fn pool_alone(at: &str, pool: &Pool, p: &mut Problems) {
    let net = pool.subnet;
    if net.network() != net.addr() {
        p.add(
            format!("{at}.subnet"),
            format!("{net} has host bits set; the subnet is {}", net.trunc()),
        );
    }
    if net.prefix_len() > 30 {
        p.add(
            format!("{at}.subnet"),
            format!("{net} has no room for clients (the prefix must be /30 or shorter)"),
        );
    }
    if pool.ranges.is_empty() && pool.reservations.is_empty() {
        p.add(
            format!("{at}.ranges"),
            "a pool needs at least one range or reservation",
        );
    }
    for (j, range) in pool.ranges.iter().enumerate() {
        let here = format!("{at}.ranges[{j}]");
        if range.start > range.end {
            p.add(
                &here,
                format!("start {} is after end {}", range.start, range.end),
            );
        }
        for (name, ip) in [("start", range.start), ("end", range.end)] {
            if !usable(&net, ip) {
                p.add(
                    format!("{here}.{name}"),
                    format!("{ip} is not a usable address of {net}"),
                );
            }
        }
        for (k, other) in pool.ranges[..j].iter().enumerate() {
            if range.start <= other.end && other.start <= range.end {
                p.add(&here, format!("overlaps {at}.ranges[{k}]"));
            }
        }
    }
    if let Some(router) = pool.router {
        if !usable(&net, router) {
            p.add(
                format!("{at}.router"),
                format!("{router} is not a usable address of {net}"),
            );
        }
    }
    if let Some(domain) = &pool.domain {
        let valid = !domain.is_empty()
            && domain.len() <= 253
            && domain.trim_end_matches('.').split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !valid {
            p.add(
                format!("{at}.domain"),
                format!("{domain:?} is not a domain name"),
            );
        }
    }
    if pool.lease_time < 60 {
        p.add(format!("{at}.lease_time"), "must be at least 60 seconds");
    }
    let t1 = pool.renew_time.unwrap_or(pool.lease_time / 2);
    let t2 = pool.rebind_time.unwrap_or(pool.lease_time / 8 * 7);
    if pool.renew_time.is_some() && t1 >= pool.lease_time {
        p.add(
            format!("{at}.renew_time"),
            format!("{t1} must be shorter than lease_time {}", pool.lease_time),
        );
    }
    if pool.rebind_time.is_some() && t2 >= pool.lease_time {
        p.add(
            format!("{at}.rebind_time"),
            format!("{t2} must be shorter than lease_time {}", pool.lease_time),
        );
    }
    if t1 >= t2 && (pool.renew_time.is_some() || pool.rebind_time.is_some()) {
        p.add(
            format!("{at}.renew_time"),
            format!("{t1} must be shorter than rebind_time {t2}"),
        );
    }
    for (k, ip) in pool.exclude.iter().enumerate() {
        if !net.contains(ip) {
            p.add(
                format!("{at}.exclude[{k}]"),
                format!("{ip} is outside {net}"),
            );
        }
    }
    for (k, r) in pool.reservations.iter().enumerate() {
        if !usable(&net, r.ip) {
            p.add(
                format!("{at}.reservations[{k}].ip"),
                format!("{} is not a usable address of {net}", r.ip),
            );
        } else if pool.exclude.contains(&r.ip) {
            p.add(
                format!("{at}.reservations[{k}].ip"),
                format!("{} is also in {at}.exclude", r.ip),
            );
        }
    }
    if let Some(url) = &pool.base_url {
        check_base_url(&format!("{at}.base_url"), url, p);
    }
}
