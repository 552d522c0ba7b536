//! Start-up cost of a big store: fills a data directory with N devices (across many tenants,
//! each tenant with its own config) and N leases through the store API, then measures the
//! steps `serve` takes before it is ready (opening the store, the default records, the device
//! count of the ready line, the DHCP engine's lease load), the store's opening after a stop
//! that was not clean (the lease index checked against the leases), and a real
//! `provisiond serve` on that directory: time to `READY=1` (the systemd notification, received
//! on a socket of ours), to "DHCP server ready" with `--dhcp`, and its resident memory once
//! idle; then again after an unclean stop, and whether (and when) it checked the lease MAC
//! index.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::StartupBenchArgs;
use crate::dhcp::LoadedEngine;
use crate::model::{self, Added, Config, Device, Lease, LeaseState, Mac, RawConfig, Tenant};
use crate::store::{Store, StoreError, BASE_CONFIG};

const DEFAULT_TENANT: &str = "master";
/// First leased address; lease `i` is `FIRST_IP + i`, device `i` has that address too.
const FIRST_IP: u32 = 0x0a00_0001;
/// How long `serve` may take to become ready before the run is abandoned.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between readiness and the memory reading, for the start-up's transient work to end.
const SETTLE: Duration = Duration::from_secs(2);

/// A kind of phone the devices cycle through.
struct Phone {
    vendor: &'static str,
    plugin: &'static str,
    oui: [u8; 3],
    models: &'static [&'static str],
    version: &'static str,
}

const PHONES: &[Phone] = &[
    Phone {
        vendor: "Yealink",
        plugin: "yealink",
        oui: [0x80, 0x5e, 0xc0],
        models: &["T46U", "T54W", "T57W"],
        version: "108.86.0.45",
    },
    Phone {
        vendor: "Snom",
        plugin: "snom",
        oui: [0x00, 0x04, 0x13],
        models: &["D735", "D785"],
        version: "10.1.159.12",
    },
    Phone {
        vendor: "Fanvil",
        plugin: "fanvil",
        oui: [0x0c, 0x38, 0x3e],
        models: &["X4U", "X6U"],
        version: "2.12.1",
    },
    Phone {
        vendor: "Polycom",
        plugin: "polycom",
        oui: [0x64, 0x16, 0x7f],
        models: &["VVX 450", "VVX 250"],
        version: "6.4.3.5018",
    },
    Phone {
        vendor: "Grandstream",
        plugin: "grandstream",
        oui: [0xc0, 0x74, 0xad],
        models: &["GRP2614", "GXP2170"],
        version: "1.0.11.23",
    },
];

/// Removes a temporary data directory when the run ends, however it ends.
struct TempDir(Option<PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Runs the benchmark and prints its figures.
pub fn run(args: &StartupBenchArgs) -> anyhow::Result<()> {
    let (dir, _temporary) = match &args.dir {
        Some(dir) => (dir.clone(), TempDir(None)),
        None => {
            let dir = std::env::temp_dir().join(format!("provisiond-bench-{}", model::new_id()));
            (dir.clone(), TempDir(Some(dir)))
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if dir.join("db").exists() {
        println!(
            "fill      skipped: {} already holds a store, measured as it is",
            dir.display()
        );
    } else {
        fill(&dir, args)?;
    }
    reopen(&dir, args)?;
    wait_unlocked(&dir)?;
    serve(&dir, args, Start::Clean)?;
    wait_unlocked(&dir)?;
    stop_uncleanly(&dir, args.cache_mib)?;
    wait_unlocked(&dir)?;
    serve(&dir, args, Start::Unclean)
}

/// How the store was left before a `serve` run.
#[derive(Clone, Copy, PartialEq)]
enum Start {
    /// By a clean stop.
    Clean,
    /// By a process that wrote a lease and stopped without its shutdown.
    Unclean,
}

impl Start {
    fn label(self) -> &'static str {
        match self {
            Start::Clean => "serve",
            Start::Unclean => "unclean",
        }
    }
}

/// A stop that is not clean: a lease written (as the DHCP server does), no shutdown.
fn stop_uncleanly(dir: &Path, cache_mib: u32) -> anyhow::Result<Store> {
    let store = open_retrying(dir, cache_mib)?;
    if let Some(first) = store.leases_iter().next() {
        store.put_lease(&first?)?;
    }
    Ok(store)
}

fn tenant_id(i: u32) -> String {
    format!("tenant{i:04}")
}

fn config_id(tenant: u32) -> String {
    format!("lines-{}", tenant_id(tenant))
}

fn mac(i: u32) -> Mac {
    let oui = PHONES[i as usize % PHONES.len()].oui;
    let [_, a, b, c] = (i / PHONES.len() as u32).to_be_bytes();
    Mac::new([oui[0], oui[1], oui[2], a, b, c])
}

fn address(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(FIRST_IP.wrapping_add(i))
}

/// Device `i`: a phone that has been provisioned (configured, its tenant's config, seen).
fn device(i: u32, tenants: u32, now: u64) -> Device {
    let phone = &PHONES[i as usize % PHONES.len()];
    let tenant = i % tenants;
    let mut d = Device::new(model::new_device_id(), tenant_id(tenant));
    d.mac = Some(mac(i));
    d.ip = Some(IpAddr::V4(address(i)));
    d.vendor = Some(phone.vendor.to_owned());
    d.model = Some(phone.models[i as usize % phone.models.len()].to_owned());
    d.version = Some(phone.version.to_owned());
    d.plugin = Some(phone.plugin.to_owned());
    d.config = Some(config_id(tenant));
    d.configured = true;
    d.is_new = false;
    d.added = Added::Auto;
    d.last_seen = Some(now - u64::from(i % 86_400));
    d.admin_password = Some(format!("{:020}", u64::from(i) * 7_919));
    d
}

fn lease(i: u32, now: u64) -> Lease {
    let starts = now - u64::from(i % 43_200);
    Lease {
        ip: address(i),
        mac: mac(i),
        client_id: None,
        hostname: Some(format!("SIP-{:06}", i % 1_000_000)),
        starts,
        ends: starts + 86_400,
        state: LeaseState::Bound,
    }
}

fn fill(dir: &Path, args: &StartupBenchArgs) -> anyhow::Result<()> {
    let store = Store::open(dir)?;
    store.ensure_defaults(DEFAULT_TENANT)?;
    let now = model::now();
    let tenants = args.tenants.max(1);
    let started = Instant::now();
    for t in 0..tenants {
        store.create_tenant(&Tenant::new(tenant_id(t), Some(DEFAULT_TENANT)))?;
        let mut raw = RawConfig::new();
        raw.insert("locale".into(), "fr_FR".into());
        raw.insert("ntp_ip".into(), "192.0.2.123".into());
        raw.insert(
            "sip_proxy_ip".into(),
            format!("192.0.2.{}", t % 250 + 1).into(),
        );
        store.create_config(&Config {
            id: config_id(t),
            parent_ids: vec![BASE_CONFIG.to_owned()],
            raw_config: raw,
            tenant: tenant_id(t),
            deletable: true,
            transient: false,
            role: None,
            extra: Default::default(),
            revision: 0,
            generation: 0,
        })?;
    }
    println!(
        "fill      {tenants} tenants and their configs in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let next = AtomicU32::new(0);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let workers: Vec<_> = (0..args.threads.max(1))
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= args.devices {
                            return Ok(());
                        }
                        store.create_device(&device(i, tenants, now))?;
                        if (i + 1) % 100_000 == 0 {
                            println!(
                                "fill      {} devices, {:.0}/s",
                                i + 1,
                                f64::from(i + 1) / started.elapsed().as_secs_f64()
                            );
                        }
                    }
                })
            })
            .collect();
        for worker in workers {
            worker
                .join()
                .map_err(|_| anyhow::anyhow!("a filling thread panicked"))??;
        }
        Ok(())
    })?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "fill      {} devices in {took:.1} s ({:.0}/s, {} threads)",
        args.devices,
        f64::from(args.devices) / took,
        args.threads
    );

    let started = Instant::now();
    for i in 0..args.leases {
        store.put_lease_unflushed(&lease(i, now))?;
        // Flushed now and then, as the DHCP server does.
        if (i + 1) % 50_000 == 0 {
            store.flush()?;
        }
    }
    store.shutdown()?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "fill      {} leases in {took:.1} s ({:.0}/s)",
        args.leases,
        f64::from(args.leases) / took
    );
    Ok(())
}

/// The store steps of `serve`'s start-up, in process, each timed.
fn reopen(dir: &Path, args: &StartupBenchArgs) -> anyhow::Result<()> {
    let timed = |what: &str, started: Instant| {
        println!(
            "reopen    {what:<38} {:>9.3} s   RSS {}",
            started.elapsed().as_secs_f64(),
            status_field("self", "VmRSS:")
        );
    };
    let started = Instant::now();
    let store = open_retrying(dir, args.cache_mib)?;
    timed("Store::open", started);
    let step = Instant::now();
    store.ensure_defaults(DEFAULT_TENANT)?;
    timed("ensure_defaults", step);
    let step = Instant::now();
    let devices = store.device_count();
    timed(&format!("device count ({devices}, ready line)"), step);
    timed("total before ready", started);
    let step = Instant::now();
    let engine = LoadedEngine::load(&dhcp_settings(args)?, store.clone())?;
    timed(
        &format!("DHCP engine loaded ({} leases)", engine.lease_count()),
        step,
    );
    // What the engine's maps hold, apart from what reading the leases left in the block cache.
    let loaded = status_kib("self", "VmRSS:");
    drop(engine);
    crate::memory::release_freed();
    if let (Some(loaded), Some(dropped)) = (loaded, status_kib("self", "VmRSS:")) {
        println!(
            "reopen    the engine's maps hold {:.1} MB (RSS freed when it is dropped)",
            (loaded as f64 - dropped as f64) / 1024.0
        );
    }

    drop(store);
    drop(stop_uncleanly(dir, args.cache_mib)?);
    let started = Instant::now();
    let store = open_retrying(dir, args.cache_mib)?;
    timed("Store::open after an unclean stop", started);
    drop(store);
    drop(stop_uncleanly(dir, args.cache_mib)?);
    let started = Instant::now();
    let store = open_retrying_with(dir, args.cache_mib, Store::open_deferring_lease_check)?;
    timed("the same, the index check deferred", started);
    let started = Instant::now();
    let repaired = store.check_lease_index()?;
    timed(
        &format!("the deferred check ({repaired} repaired)"),
        started,
    );
    // Leaves the store as a clean stop would, for `serve`.
    store.shutdown()?;
    Ok(())
}

/// The `[dhcp]` section that `serve` is given with `--dhcp`: a pool over every lease.
fn dhcp_section(args: &StartupBenchArgs, port: u16) -> String {
    let last = address(args.leases.max(args.devices).saturating_add(1_000));
    format!(
        r#"[dhcp]
mode = "server"
port = {port}
server_id = "127.0.0.1"
[[dhcp.pools]]
subnet = "10.0.0.0/8"
ranges = [{{ start = "{}", end = "{last}" }}]
"#,
        address(0)
    )
}

/// [`dhcp_section`] as settings, for the engine loaded in process (its port is not bound).
fn dhcp_settings(args: &StartupBenchArgs) -> anyhow::Result<crate::config::Dhcp> {
    #[derive(serde::Deserialize)]
    struct Section {
        dhcp: crate::config::Dhcp,
    }
    let section: Section = toml::from_str(&dhcp_section(args, 67))?;
    Ok(section.dhcp)
}

/// Waits until no process holds the store's lock (the last handle's drop waits for the
/// database's background threads), else `serve` would refuse to start.
fn wait_unlocked(dir: &Path) -> anyhow::Result<()> {
    use nix::fcntl::{Flock, FlockArg};
    let path = dir.join(crate::store::STORE_DIR).join("LOCK");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let file = std::fs::File::open(&path)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            // Dropping the lock lets it go at once.
            Ok(_taken) => return Ok(()),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err((_, errno)) => anyhow::bail!("the store's lock at {}: {errno}", path.display()),
        }
    }
}

/// Opens the store, waiting for the previous handle's lock to go.
fn open_retrying(dir: &Path, cache_mib: u32) -> anyhow::Result<Store> {
    open_retrying_with(dir, cache_mib, Store::open_with_cache)
}

/// [`open_retrying`] through `open`.
fn open_retrying_with(
    dir: &Path,
    cache_mib: u32,
    open: impl Fn(&Path, u32) -> crate::store::Result<Store>,
) -> anyhow::Result<Store> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match open(dir, cache_mib) {
            Err(StoreError::Open {
                source: crate::store::OpenError::Locked(_),
                ..
            }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            opened => return Ok(opened?),
        }
    }
}

/// A UDP port free now on 127.0.0.1 (the DHCP server refuses port 0).
fn free_udp_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn serve_config(dir: &Path, args: &StartupBenchArgs) -> anyhow::Result<String> {
    let d = dir.display();
    let cache = args.cache_mib;
    let mut toml = format!(
        r#"[general]
data_dir = "{d}"
default_tenant = "{DEFAULT_TENANT}"
store_cache_mib = {cache}
# Nothing there: the embedded plugins only.
plugins_dir = "{d}/no-plugins"
[http]
listen = "127.0.0.1:0"
[api]
listen = "127.0.0.1:0"
socket = "{d}/api.sock"
[tftp]
listen = "127.0.0.1:0"
[dhcpinfo]
enabled = false
socket = "{d}/dhcpinfo.sock"
[log]
level = "info"
"#
    );
    if args.dhcp {
        toml.push_str(&dhcp_section(args, free_udp_port()?));
    }
    Ok(toml)
}

/// What the daemon said, line by line, as it said it.
enum Said {
    Line(Instant, String),
    Closed,
}

fn serve(dir: &Path, args: &StartupBenchArgs, start: Start) -> anyhow::Result<()> {
    let config = dir.join("bench-startup.toml");
    std::fs::write(&config, serve_config(dir, args)?)?;
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_millis(50)))?;

    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start provisiond serve")?;
    let result = watch(&mut child, &notify, started, args.dhcp, start);
    let stopping = Instant::now();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait()?;
    println!(
        "{:<9} stopped in {:.3} s ({status})",
        start.label(),
        stopping.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_file(&notify_path);
    result
}

/// Waits for readiness, then reads the child's memory once it is idle.
fn watch(
    child: &mut Child,
    notify: &UnixDatagram,
    started: Instant,
    dhcp: bool,
    start: Start,
) -> anyhow::Result<()> {
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, said) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(Said::Line(Instant::now(), line)).is_err() {
                return;
            }
        }
        let _ = tx.send(Said::Closed);
    });
    let mut ready = None;
    let mut dhcp_ready = None;
    let mut checked = None;
    let mut log = Vec::new();
    let mut buf = [0u8; 4096];
    let unclean = start == Start::Unclean;
    while ready.is_none() || (dhcp && dhcp_ready.is_none()) {
        anyhow::ensure!(
            started.elapsed() < READY_TIMEOUT,
            "serve not ready after {READY_TIMEOUT:?}:\n{}",
            log.join("\n")
        );
        if let Ok(n) = notify.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]);
            if ready.is_none() && message.lines().any(|l| l == "READY=1") {
                ready = Some((
                    started.elapsed(),
                    status_field(&child.id().to_string(), "VmRSS:"),
                ));
            }
        }
        while let Ok(said) = said.try_recv() {
            match said {
                Said::Line(at, line) => {
                    if line.contains("DHCP server ready") {
                        dhcp_ready = Some(at - started);
                    }
                    if line.contains("lease MAC index checked") {
                        checked = Some(at - started);
                    }
                    log.push(line);
                }
                Said::Closed => {
                    anyhow::bail!("serve exited before it was ready:\n{}", log.join("\n"))
                }
            }
        }
    }
    let secs = |d: Option<Duration>| d.map_or(0.0, |d| d.as_secs_f64());
    let label = start.label();
    let (ready, ready_rss) = ready.unzip();
    println!(
        "{label:<9} READY=1 after {:>9.3} s (process start included), RSS {} then",
        secs(ready),
        ready_rss.unwrap_or_default()
    );
    if dhcp {
        println!(
            "{label:<9} DHCP server ready after {:.3} s",
            secs(dhcp_ready)
        );
    }
    std::thread::sleep(SETTLE);
    while let Ok(Said::Line(at, line)) = said.try_recv() {
        if line.contains("lease MAC index checked") {
            checked = Some(at - started);
        }
    }
    match checked {
        Some(_) => println!(
            "{label:<9} lease MAC index checked after {:.3} s",
            secs(checked)
        ),
        // A lease write is one transaction with its index entry: a crash leaves the mark.
        None if unclean => println!("{label:<9} lease MAC index not checked (still marked)"),
        None => {}
    }
    let pid = child.id().to_string();
    println!(
        "{label:<9} idle RSS {} (peak {}), {} threads",
        status_field(&pid, "VmRSS:"),
        status_field(&pid, "VmHWM:"),
        status_field(&pid, "Threads:")
    );
    Ok(())
}

/// A field of `/proc/<pid>/status` (`self` for this process), `?` when unreadable.
/// A `/proc/<pid>/status` field in kB, as a number.
fn status_kib(pid: &str, name: &str) -> Option<u64> {
    status_field(pid, name)
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

fn status_field(pid: &str, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}
