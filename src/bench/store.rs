//! `bench store`: a store of N devices across T tenants, filled through `Store::create_device`
//! from several threads (every creation flushed, as the daemon's), then asked through the REST
//! API served over HTTP on 127.0.0.1 in this process, whose peak RSS is sampled meanwhile.
//!
//! Devices are a function of their number `i` (id, MAC, IP, serial, tenant…), so that lookups
//! can name any of them without keeping a million records in memory, and a store kept with
//! `--dir` can be measured again without filling it again.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::percentiles;
use crate::cli::StoreBenchArgs;
use crate::model::{self, Added, Device, Lease, LeaseState, Mac, Tenant, Token};
use crate::store::Store;

/// The default tenant, root of the bench's tenant tree.
const ROOT: &str = "master";

/// Level-2 tenants per level-1 tenant (a reseller and its customers).
const CHILDREN_PER_RESELLER: usize = 39;

/// Highest N: the device number fills the MAC's and the IP's last three bytes.
const MAX_DEVICES: u64 = 1 << 24;

/// Goals of issue 14 that this bench checks.
const LOOKUP_P99_GOAL: Duration = Duration::from_millis(2);
const LISTING_MEMORY_GOAL_MB: f64 = 16.0;
const CREATION_GOAL_PER_SEC: f64 = 2000.0;

/// Vendors: name (also the plugin), MAC prefix, serial prefix, models, versions.
struct Vendor {
    name: &'static str,
    plugin: &'static str,
    oui: [u8; 3],
    sn: &'static str,
    models: &'static [&'static str],
    versions: &'static [&'static str],
}

const VENDORS: [Vendor; 6] = [
    Vendor {
        name: "Yealink",
        plugin: "yealink",
        oui: [0x80, 0x5e, 0xc0],
        sn: "YL",
        models: &["T54W", "T46U", "T33G", "T57W"],
        versions: &["96.86.0.70", "108.86.0.45"],
    },
    Vendor {
        name: "Snom",
        plugin: "snom",
        oui: [0x00, 0x04, 0x13],
        sn: "SN",
        models: &["D785", "D717", "D865"],
        versions: &["10.1.159.12", "10.1.175.16"],
    },
    Vendor {
        name: "Polycom",
        plugin: "polycom",
        oui: [0x64, 0x16, 0x7f],
        sn: "PC",
        models: &["VVX 450", "VVX 350"],
        versions: &["6.4.3.1156"],
    },
    Vendor {
        name: "Fanvil",
        plugin: "fanvil",
        oui: [0x0c, 0x38, 0x3e],
        sn: "FV",
        models: &["X6U", "X4U", "X3U"],
        versions: &["2.12.1", "2.14.5"],
    },
    Vendor {
        name: "Grandstream",
        plugin: "grandstream",
        oui: [0xc0, 0x74, 0xad],
        sn: "GS",
        models: &["GRP2614", "GXP2170"],
        versions: &["1.0.9.135"],
    },
    Vendor {
        name: "Cisco",
        plugin: "cisco-mpp",
        oui: [0x00, 0x08, 0x2f],
        sn: "CS",
        models: &["CP-8841-3PCC", "CP-7841-3PCC"],
        versions: &["12.0.1"],
    },
];

/// A 64-bit mix of `x` (SplitMix64's finalizer): ids and choices that look random but are
/// the same in every run.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The tenants: `T` of them, in a two-level tree under the root (resellers, then their
/// customers), resellers first.
fn tenant_ids(count: usize) -> Vec<(String, Option<usize>)> {
    let resellers = count.div_ceil(CHILDREN_PER_RESELLER + 1).max(1).min(count);
    let mut out: Vec<(String, Option<usize>)> = (0..resellers)
        .map(|r| (format!("reseller-{r:03}"), None))
        .collect();
    for c in 0..count - resellers {
        out.push((format!("tenant-{c:05}"), Some(c % resellers)));
    }
    out
}

/// Device number `i` and what a lookup needs of it.
struct Sample {
    id: String,
    mac: Mac,
    ip: IpAddr,
    ip_shared: bool,
    sn: String,
    vendor: &'static str,
    model: &'static str,
    tenant: String,
}

/// `--random-ids`, set once by [`run`]; unset (tests), the ids are time-ordered.
static RANDOM_IDS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// The clock of the first time-ordered id (2026-12-01 in ms since the epoch).
const IDS_FROM_MS: u64 = 1_796_083_200_000;

fn sample(i: u64, tenants: &[String]) -> Sample {
    let h = mix(i);
    let vendor = &VENDORS[(h % VENDORS.len() as u64) as usize];
    let low = [(i >> 16) as u8, (i >> 8) as u8, i as u8];
    let tenant_no = (i % tenants.len() as u64) as usize;
    // One phone in ten sits behind its tenant's NAT address, shared with the tenant's others.
    let ip_shared = i % 10 == 0;
    let ip = if ip_shared {
        IpAddr::V4(Ipv4Addr::new(
            172,
            16,
            (tenant_no >> 8) as u8,
            tenant_no as u8,
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, low[0], low[1], low[2]))
    };
    let id = if RANDOM_IDS.get().copied().unwrap_or(false) {
        format!("{:016x}{:016x}", h, mix(h ^ 0x5bd1_e995))
    } else {
        // As `model::new_device_id` makes them: 48 bits of milliseconds (as if the devices were
        // created one a millisecond), the version digit, random bits.
        format!(
            "{:012x}7{:03x}{:016x}",
            IDS_FROM_MS + i,
            h & 0xfff,
            mix(h ^ 0x5bd1_e995)
        )
    };
    Sample {
        id,
        mac: Mac::new([
            vendor.oui[0],
            vendor.oui[1],
            vendor.oui[2],
            low[0],
            low[1],
            low[2],
        ]),
        ip,
        ip_shared,
        sn: format!("{}{i:09}", vendor.sn),
        vendor: vendor.name,
        model: vendor.models[((h >> 8) % vendor.models.len() as u64) as usize],
        tenant: tenants[tenant_no].clone(),
    }
}

fn device(i: u64, tenants: &[String]) -> Device {
    let s = sample(i, tenants);
    let h = mix(i);
    let vendor = VENDORS
        .iter()
        .find(|v| v.name == s.vendor)
        .unwrap_or(&VENDORS[0]);
    // A third of the phones were made by autocreation and still have its config.
    let auto = i % 3 == 0;
    let mut d = Device::new(s.id, s.tenant);
    d.mac = Some(s.mac);
    d.ip = Some(s.ip);
    d.vendor = Some(s.vendor.to_owned());
    d.model = Some(s.model.to_owned());
    d.version = Some(vendor.versions[((h >> 16) % vendor.versions.len() as u64) as usize].into());
    d.sn = Some(s.sn);
    d.plugin = Some(vendor.plugin.to_owned());
    d.config = Some(if auto { "autoprov" } else { "base" }.to_owned());
    d.configured = !auto;
    d.is_new = auto;
    d.added = if auto { Added::Auto } else { Added::Manual };
    d.last_seen = Some(model::now());
    d
}

/// The store's directory: a fresh temporary one removed on drop, or the caller's, kept.
struct Dir {
    path: PathBuf,
    remove: bool,
}

impl Dir {
    fn new(asked: Option<&Path>) -> anyhow::Result<Dir> {
        match asked {
            Some(path) => {
                std::fs::create_dir_all(path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                Ok(Dir {
                    path: path.to_owned(),
                    remove: false,
                })
            }
            None => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let path = std::env::temp_dir().join(format!(
                    "provisiond-bench-store-{}-{stamp}",
                    std::process::id()
                ));
                std::fs::create_dir(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                Ok(Dir { path, remove: true })
            }
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        if self.remove {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                eprintln!("bench: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

fn disk_usage(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One line of /proc/self/status, in kB.
fn status_kb(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The machine's load averages (1, 5, 15 min): the bench shares its cores with whatever runs.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The peak RSS over a measurement: VmHWM (reset before it, when the kernel lets us) and a
/// thread that reads VmRSS every few milliseconds, in case it does not.
struct RssWatch {
    before_kb: u64,
    /// Whether VmHWM was reset to the RSS of the start.
    hwm_reset: bool,
    peak_kb: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start() -> RssWatch {
        // "5" resets the peak to the current RSS (proc(5), clear_refs).
        let hwm_reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let before_kb = status_kb("VmRSS").unwrap_or(0);
        let peak_kb = Arc::new(AtomicU64::new(before_kb));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak_kb, stop) = (Arc::clone(&peak_kb), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(now) = status_kb("VmRSS") {
                        peak_kb.fetch_max(now, Ordering::Relaxed);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        RssWatch {
            before_kb,
            hwm_reset,
            peak_kb,
            stop,
            thread: Some(thread),
        }
    }

    /// (RSS before, peak during), in kB.
    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let sampled = self.peak_kb.load(Ordering::Relaxed);
        // Without the reset, VmHWM is the all-time peak (the fill's): only the samples count.
        let hwm = if self.hwm_reset {
            status_kb("VmHWM").unwrap_or(0)
        } else {
            0
        };
        (self.before_kb, sampled.max(hwm))
    }
}

/// The figures, in the order printed.
#[derive(Default)]
struct Table {
    rows: Vec<(String, String)>,
    missed: Vec<String>,
}

impl Table {
    fn row(&mut self, key: &str, value: String) {
        self.rows.push((key.to_owned(), value));
    }

    fn goal(&mut self, key: &str, met: bool, what: String) {
        if !met {
            self.missed.push(format!("{key}: {what}"));
        }
    }

    fn print(&self) {
        println!("| figure | result |");
        println!("| --- | --- |");
        for (key, value) in &self.rows {
            println!("| {key} | {value} |");
        }
        if self.missed.is_empty() {
            println!("goals of issue 14: all met");
        } else {
            for m in &self.missed {
                println!("goal missed: {m}");
            }
        }
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (k, c) in digits.chars().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Fills the store, serves it, measures, prints the table.
pub fn run(args: &StoreBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=MAX_DEVICES).contains(&args.devices),
        "--devices must be 1 to {MAX_DEVICES}"
    );
    anyhow::ensure!(args.tenants >= 1, "--tenants must be at least 1");
    anyhow::ensure!(args.writers >= 1, "--writers must be at least 1");
    anyhow::ensure!(
        RANDOM_IDS.set(args.random_ids).is_ok() || RANDOM_IDS.get() == Some(&args.random_ids),
        "bench store runs once per process"
    );
    let dir = Dir::new(args.dir.as_deref())?;
    let store = Store::open_with_cache(&dir.path, args.cache_mib)?;
    store.ensure_defaults(ROOT)?;
    let tree = tenant_ids(args.tenants);
    let tenants: Vec<String> = tree.iter().map(|(id, _)| id.clone()).collect();
    let mut table = Table::default();
    println!(
        "bench store: {} devices, {} tenants (2 levels under {ROOT}), {} writer threads, store in {}",
        thousands(args.devices),
        thousands(tenants.len() as u64),
        args.writers,
        dir.path.display()
    );

    let load_at_start = load_average();
    let already = store.device_count() as u64;
    if already == 0 {
        for (id, parent) in &tree {
            if store.tenant(id)?.is_none() {
                let parent = parent.map_or(ROOT, |p| tree[p].0.as_str());
                store.create_tenant(&Tenant::new(id.clone(), Some(parent)))?;
            }
        }
        fill(&store, args, &tenants, &mut table)?;
        if args.leases {
            fill_leases(&store, args, &tenants, &mut table)?;
        }
    } else {
        anyhow::ensure!(
            already == args.devices && store.tenants()?.len() == tenants.len() + 1,
            "{} holds {already} devices and {} tenants: give --devices and --tenants of its fill, or another --dir",
            dir.path.display(),
            store.tenants()?.len().saturating_sub(1)
        );
        println!("fill skipped: the store already holds these devices");
    }
    table.row(
        "store on disk",
        format!("{:.1} MB", disk_usage(&dir.path) as f64 / 1e6),
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(query(&store, args, &tenants, &mut table))?;
    drop(runtime);
    drop(store);
    table.row(
        "machine load average (1, 5, 15 min)",
        format!(
            "{load_at_start} at the start, {} at the end",
            load_average()
        ),
    );
    table.print();
    Ok(())
}

/// N creations from `writers` threads, each a flushed `create_device`; the rate per tenth.
fn fill(
    store: &Store,
    args: &StoreBenchArgs,
    tenants: &[String],
    table: &mut Table,
) -> anyhow::Result<()> {
    let n = args.devices;
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let tenths: Vec<Mutex<Option<Instant>>> = (0..10).map(|_| Mutex::new(None)).collect();
    let started = Instant::now();
    let mark = |k: u64| (n * k).div_ceil(10);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let mut workers = Vec::new();
        for _ in 0..args.writers {
            workers.push(scope.spawn(|| -> anyhow::Result<()> {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    store
                        .create_device(&device(i, tenants))
                        .with_context(|| format!("creating device {i}"))?;
                    let count = done.fetch_add(1, Ordering::Relaxed) + 1;
                    for k in 1..=10 {
                        if count == mark(k) {
                            let now = Instant::now();
                            if let Ok(mut slot) = tenths[k as usize - 1].lock() {
                                *slot = Some(now);
                            }
                            eprintln!(
                                "fill: {}/{} devices after {:.1} s",
                                thousands(count),
                                thousands(n),
                                started.elapsed().as_secs_f64()
                            );
                        }
                    }
                }
            }));
        }
        for w in workers {
            w.join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        Ok(())
    })?;
    let total = started.elapsed();
    let at = |k: usize| -> Duration {
        if k == 0 {
            return Duration::ZERO;
        }
        tenths[k - 1]
            .lock()
            .ok()
            .and_then(|t| *t)
            .map_or(total, |t| t - started)
    };
    let rate = |count: u64, d: Duration| count as f64 / d.as_secs_f64().max(1e-9);
    let overall = rate(n, total);
    let last = rate(n - mark(9), at(10).saturating_sub(at(9)));
    table.row(
        "creation, whole fill",
        format!(
            "{}/s ({} devices in {:.1} s, {} writers, each creation flushed)",
            thousands(overall as u64),
            thousands(n),
            total.as_secs_f64(),
            args.writers
        ),
    );
    table.row(
        "creation, last 10 % (rate at N)",
        format!("{}/s", thousands(last as u64)),
    );
    let per_tenth: Vec<String> = (1..=10)
        .map(|k| {
            let count = mark(k as u64) - mark(k as u64 - 1);
            thousands(rate(count, at(k).saturating_sub(at(k - 1))) as u64)
        })
        .collect();
    table.row("creation per tenth of the fill", per_tenth.join(" · "));
    table.goal(
        "creation at N",
        last >= CREATION_GOAL_PER_SEC,
        format!("{last:.0}/s < {CREATION_GOAL_PER_SEC:.0}/s"),
    );
    Ok(())
}

/// One lease per phone with an address of its own, written as the DHCP engine does (unflushed,
/// one flush per batch of 256).
fn fill_leases(
    store: &Store,
    args: &StoreBenchArgs,
    tenants: &[String],
    table: &mut Table,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let now = model::now();
    let mut written = 0u64;
    for i in 0..args.devices {
        let s = sample(i, tenants);
        let IpAddr::V4(ip) = s.ip else { continue };
        if s.ip_shared {
            continue;
        }
        store.put_lease_unflushed(&Lease {
            ip,
            mac: s.mac,
            client_id: None,
            hostname: None,
            starts: now,
            ends: now + 86_400,
            state: LeaseState::Bound,
        })?;
        written += 1;
        if written % 256 == 0 {
            store.flush()?;
        }
    }
    store.flush()?;
    let elapsed = started.elapsed();
    table.row(
        "leases (256 per flush)",
        format!(
            "{} in {:.1} s: {}/s",
            thousands(written),
            elapsed.as_secs_f64(),
            thousands((written as f64 / elapsed.as_secs_f64().max(1e-9)) as u64)
        ),
    );
    Ok(())
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One GET: status and the body handed to `sink` chunk by chunk (never kept whole).
async fn get(
    client: &HttpClient,
    uri: &str,
    token: &str,
    tenant: Option<&str>,
    mut sink: impl FnMut(&[u8]),
) -> anyhow::Result<hyper::StatusCode> {
    let mut request = hyper::Request::get(uri).header("X-Auth-Token", token);
    if let Some(tenant) = tenant {
        request = request.header("Wazo-Tenant", tenant);
    }
    let response = client.request(request.body(Empty::new())?).await?;
    let status = response.status();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            sink(data);
        }
    }
    Ok(status)
}

/// A lookup kind: its name in the table, and the request for device `i`, with the text the
/// answer must contain.
struct Lookup {
    name: &'static str,
    build: fn(&Sample) -> (String, Option<String>, String),
}

fn q(selector: serde_json::Value) -> String {
    utf8_percent_encode(&selector.to_string(), NON_ALPHANUMERIC).to_string()
}

const LOOKUPS: [Lookup; 7] = [
    Lookup {
        name: "GET device by id",
        build: |s| (format!("/devices/{}", s.id), None, s.id.clone()),
    },
    Lookup {
        name: "q mac (as root, recurse)",
        build: |s| {
            let sel = serde_json::json!({ "mac": s.mac.to_string() });
            (
                format!("/devices?recurse=true&q={}", q(sel)),
                None,
                s.id.clone(),
            )
        },
    },
    Lookup {
        name: "q ip (as root, recurse)",
        build: |s| {
            let sel = serde_json::json!({ "ip": s.ip.to_string() });
            (
                format!("/devices?recurse=true&q={}", q(sel)),
                None,
                s.id.clone(),
            )
        },
    },
    Lookup {
        name: "q sn (as its tenant)",
        build: |s| {
            let sel = serde_json::json!({ "sn": s.sn });
            (
                format!("/devices?q={}", q(sel)),
                Some(s.tenant.clone()),
                s.id.clone(),
            )
        },
    },
    Lookup {
        name: "q sn (as root, recurse)",
        build: |s| {
            let sel = serde_json::json!({ "sn": s.sn });
            (
                format!("/devices?recurse=true&q={}", q(sel)),
                None,
                s.id.clone(),
            )
        },
    },
    Lookup {
        name: "q mac (as its tenant)",
        build: |s| {
            let sel = serde_json::json!({ "mac": s.mac.to_string() });
            (
                format!("/devices?q={}", q(sel)),
                Some(s.tenant.clone()),
                s.id.clone(),
            )
        },
    },
    Lookup {
        name: "q vendor+model, limit 10 (as its tenant)",
        build: |s| {
            let sel = serde_json::json!({ "vendor": s.vendor, "model": s.model });
            (
                format!("/devices?limit=10&q={}", q(sel)),
                Some(s.tenant.clone()),
                format!("\"model\":\"{}\"", s.model),
            )
        },
    },
];

/// Serves the API on 127.0.0.1 and measures lookups, pages, the full listing and the count.
async fn query(
    store: &Store,
    args: &StoreBenchArgs,
    tenants: &[String],
    table: &mut Table,
) -> anyhow::Result<()> {
    let (addr, _stop) = serve(store).await?;
    let secret = format!("bench-{}", model::new_id());
    store.create_token(&Token {
        hash: crate::http::api::hash_token(&secret),
        tenant: ROOT.into(),
        acl: vec!["provd.#".into()],
        created: model::now(),
        expires: None,
        description: Some("bench store".into()),
    })?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{addr}/0.2/dev_mgr");
    let idle_kb = status_kb("VmRSS").unwrap_or(0);
    table.row(
        "RSS with the API up, before any request",
        format!("{:.1} MB", mb(idle_kb)),
    );

    let n = args.devices;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    // The store alone, without HTTP or the API: what of a lookup's time is the database's.
    for (name, by_mac) in [
        ("store read by id, in process (no HTTP)", false),
        ("store read by MAC, in process (no HTTP)", true),
    ] {
        let mut latencies = Vec::with_capacity(args.lookups);
        for _ in 0..args.lookups {
            seed = mix(seed);
            let s = sample(seed % n, tenants);
            let t = Instant::now();
            let found = if by_mac {
                store.device_by_mac(&s.mac)?
            } else {
                store.device(&s.id)?
            };
            latencies.push(t.elapsed());
            anyhow::ensure!(
                found.is_some_and(|d| d.id == s.id),
                "{name}: device {} missing",
                s.id
            );
        }
        let (p50, p99) = percentiles(&mut latencies);
        table.row(
            name,
            format!(
                "p50 {}, p99 {} ({} reads)",
                ms(p50),
                ms(p99),
                thousands(args.lookups as u64)
            ),
        );
    }
    for lookup in &LOOKUPS {
        let watch = RssWatch::start();
        let mut latencies = Vec::with_capacity(args.lookups);
        let mut wrong = 0usize;
        let mut done = 0usize;
        while done < args.lookups {
            seed = mix(seed);
            let s = sample(seed % n, tenants);
            if lookup.name.starts_with("q ip") && s.ip_shared {
                continue;
            }
            done += 1;
            let (path, tenant, expect) = (lookup.build)(&s);
            let mut body = Vec::new();
            let t = Instant::now();
            let status = get(
                &client,
                &format!("{base}{path}"),
                &secret,
                tenant.as_deref(),
                |c| body.extend_from_slice(c),
            )
            .await?;
            latencies.push(t.elapsed());
            let text = String::from_utf8_lossy(&body);
            if !status.is_success() || !text.contains(&expect) {
                wrong += 1;
            }
        }
        let (before, peak) = watch.finish();
        let (p50, p99) = percentiles(&mut latencies);
        table.row(
            lookup.name,
            format!(
                "p50 {}, p99 {} ({} requests, {} wrong; peak RSS +{:.1} MB)",
                ms(p50),
                ms(p99),
                thousands(latencies.len() as u64),
                wrong,
                mb(peak.saturating_sub(before))
            ),
        );
        anyhow::ensure!(
            wrong == 0,
            "{}: {wrong} answers without the device",
            lookup.name
        );
        if !lookup.name.contains("vendor") {
            table.goal(
                lookup.name,
                p99 <= LOOKUP_P99_GOAL,
                format!("p99 {} > {}", ms(p99), ms(LOOKUP_P99_GOAL)),
            );
        }
    }

    for (name, order) in [
        ("page of 100 sorted by mac, skip 1000 (root, recurse)", ""),
        ("same, sort_ord=DESC", "&sort_ord=DESC"),
    ] {
        let rounds = (args.lookups / 10).max(10);
        let watch = RssWatch::start();
        let mut latencies = Vec::with_capacity(rounds);
        let mut bytes = 0usize;
        for _ in 0..rounds {
            let uri = format!("{base}/devices?recurse=true&sort=mac&skip=1000&limit=100{order}");
            let mut body = Vec::new();
            let t = Instant::now();
            let status = get(&client, &uri, &secret, None, |c| body.extend_from_slice(c)).await?;
            latencies.push(t.elapsed());
            anyhow::ensure!(status.is_success(), "{name}: {status}");
            bytes = body.len();
        }
        let (before, peak) = watch.finish();
        let (p50, p99) = percentiles(&mut latencies);
        table.row(
            name,
            format!(
                "p50 {}, p99 {} ({rounds} requests, {bytes} bytes each; peak RSS +{:.1} MB)",
                ms(p50),
                ms(p99),
                mb(peak.saturating_sub(before))
            ),
        );
    }

    // The whole store, streamed: time, size, and what it costs in memory. Twice: the first
    // pass also reads the store into its block cache (bounded by `store_cache_mib`), which a
    // daemon that has run a while has already done; the second shows the listing alone.
    for pass in [
        "full listing, recurse=true (root)",
        "full listing again (cache warm)",
    ] {
        let watch = RssWatch::start();
        let t = Instant::now();
        let mut bytes = 0u64;
        let mut listed = Counter::new(b"\"tenant_uuid\":");
        let status = get(
            &client,
            &format!("{base}/devices?recurse=true"),
            &secret,
            None,
            |c| {
                bytes += c.len() as u64;
                listed.feed(c);
            },
        )
        .await?;
        let elapsed = t.elapsed();
        let (before, peak) = watch.finish();
        anyhow::ensure!(status.is_success(), "full listing: {status}");
        let above = mb(peak.saturating_sub(before));
        table.row(
            pass,
            format!(
                "{} devices, {:.1} MB in {:.2} s ({} devices/s); RSS {:.1} MB before, peak +{above:.1} MB",
                thousands(listed.found),
                bytes as f64 / 1e6,
                elapsed.as_secs_f64(),
                thousands((listed.found as f64 / elapsed.as_secs_f64().max(1e-9)) as u64),
                mb(before)
            ),
        );
        anyhow::ensure!(
            listed.found == n,
            "the full listing had {} devices, the store {n}",
            listed.found
        );
        table.goal(
            pass,
            above <= LISTING_MEMORY_GOAL_MB,
            format!("+{above:.1} MB > {LISTING_MEMORY_GOAL_MB} MB above idle"),
        );
    }

    // The device count as a monitoring system reads it: /metrics, one line per tenant and plugin.
    let rounds = (args.lookups / 10).max(10);
    let mut latencies = Vec::with_capacity(rounds);
    let mut total = 0u64;
    for _ in 0..rounds {
        let mut body = Vec::new();
        let t = Instant::now();
        let status = get(
            &client,
            &format!("http://{addr}/metrics"),
            &secret,
            None,
            |c| body.extend_from_slice(c),
        )
        .await?;
        latencies.push(t.elapsed());
        anyhow::ensure!(status.is_success(), "/metrics: {status}");
        total = String::from_utf8_lossy(&body)
            .lines()
            .filter(|l| l.starts_with("provisiond_devices{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
    }
    let (p50, p99) = percentiles(&mut latencies);
    table.row(
        "/metrics (provisiond_devices, per tenant and plugin)",
        format!(
            "p50 {}, p99 {} ({rounds} requests); devices counted {}",
            ms(p50),
            ms(p99),
            thousands(total)
        ),
    );
    anyhow::ensure!(total == n, "/metrics counts {total} devices, the store {n}");
    Ok(())
}

/// Counts a pattern in a byte stream cut in arbitrary chunks.
struct Counter {
    pattern: &'static [u8],
    tail: Vec<u8>,
    found: u64,
}

impl Counter {
    fn new(pattern: &'static [u8]) -> Counter {
        Counter {
            pattern,
            tail: Vec::new(),
            found: 0,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        // The end of the last chunk goes first, so that a pattern cut in two is seen once.
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(chunk);
        self.found += window
            .windows(self.pattern.len())
            .filter(|w| *w == self.pattern)
            .count() as u64;
        let keep = self.pattern.len() - 1;
        self.tail = window[window.len().saturating_sub(keep)..].to_vec();
    }
}

/// The REST API as the daemon serves it, on an ephemeral port of 127.0.0.1; the server stops
/// when the returned sender is dropped.
async fn serve(store: &Store) -> anyhow::Result<(SocketAddr, tokio::sync::watch::Sender<bool>)> {
    use crate::http::api::{self, ApiState};
    use crate::plugins::{PluginSet, Renderer, ServerInfo};
    let plugins = Arc::new(PluginSet::with_embedded(&[]));
    let files = Arc::new(crate::files::FileService::new(
        store.clone(),
        ROOT,
        crate::config::HttpAuthStrategy::Disabled,
        plugins,
        Renderer::new(store.clone(), ServerInfo::default()),
    ));
    let state = Arc::new(ApiState::new(store.clone(), files, ROOT.into(), Vec::new()));
    let app = api::router(state, 1024 * 1024);
    let limits = crate::http::HttpLimits {
        max_request_bytes: 16384,
        request_timeout: Duration::from_secs(10),
        max_connections: 64,
        // A listing of millions of devices must not be cut by the connection's lifetime.
        max_connection_time: Duration::from_secs(6 * 3600),
        shutdown_grace: Duration::from_secs(1),
        refusal: api::refusal,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(crate::http::serve(listener, None, app, limits, shutdown));
    Ok((addr, stop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tenant_tree_has_two_levels_and_the_asked_size() {
        for count in [1, 2, 40, 41, 1000] {
            let tree = tenant_ids(count);
            assert_eq!(tree.len(), count);
            let resellers = tree.iter().filter(|(_, p)| p.is_none()).count();
            for (_, parent) in &tree {
                if let Some(p) = parent {
                    assert!(*p < resellers, "a customer's parent is a reseller");
                }
            }
        }
    }

    #[test]
    fn devices_have_unique_macs_ids_and_serials() {
        let tenants: Vec<String> = tenant_ids(7).into_iter().map(|(id, _)| id).collect();
        let mut macs = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        let mut sns = std::collections::HashSet::new();
        for i in 0..5000 {
            let d = device(i, &tenants);
            assert!(macs.insert(d.mac), "MAC of {i}");
            assert!(ids.insert(d.id.clone()), "id of {i}");
            assert!(sns.insert(d.sn.clone()), "sn of {i}");
            model::validate_id(&d.id).unwrap();
        }
    }

    #[test]
    fn the_counter_sees_a_pattern_cut_between_chunks() {
        let text = b"xx\"tenant_uuid\":1,\"tenant_uuid\":2";
        for cut in 0..text.len() {
            let mut c = Counter::new(b"\"tenant_uuid\":");
            c.feed(&text[..cut]);
            c.feed(&text[cut..]);
            assert_eq!(c.found, 2, "cut at {cut}");
        }
    }
}
