//! `provisiond serve`: start-up, signal handling, configuration reload and shutdown.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::cli::ConfigArgs;
use crate::config::{self, changed_keys, HttpAuthStrategy, Loaded};
use crate::files::FileService;
use crate::http::api::{self, ApiState, LocalAdmin};
use crate::http::{self, provisioning, provisioning::Provisioning, HttpLimits, LocalPolicy};
use crate::ident::AutocreateLimits;
use crate::logging::{self, LogHandle};
use crate::plugins::{PluginSet, Renderer, ServerInfo};
use crate::store::{Store, SCHEMA_VERSION};
use crate::sync::SyncQueue;
use crate::systemd;
use crate::tftp::{FileSource, TftpOptions, TftpServer};

/// Group whose members may use the local admin socket.
const ADMIN_GROUP: &str = "provisiond";
/// Connections the HTTP(S) servers keep open at once (the unit raises LimitNOFILE well above).
const MAX_HTTP_CONNECTIONS: usize = 1024;
/// Longest life of one HTTP connection (a firmware image over a slow link still fits).
const MAX_CONNECTION_TIME: Duration = Duration::from_secs(15 * 60);
/// Time given to servers to finish in-flight requests at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Keys that a SIGHUP applies to the running daemon; every other change needs a restart.
const LIVE_KEYS: &[&str] = &["log.level"];

/// Runs the daemon until SIGTERM or SIGINT; the exit code is 0 after a clean shutdown.
pub fn serve(args: &ConfigArgs) -> ExitCode {
    let loaded = match config::load(args.config.as_deref(), &args.default_config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("provisiond: not started: the configuration is invalid");
            return ExitCode::FAILURE;
        }
    };
    let log = match logging::init(&loaded.settings.log.level) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("provisiond: {e}");
            return ExitCode::FAILURE;
        }
    };
    if loaded.is_embedded() {
        info!(
            version = env!("CARGO_PKG_VERSION"),
            "no configuration file (no --config, {} absent): running on the embedded development default (HTTP 127.0.0.1:8667, API 127.0.0.1:8666, TFTP 127.0.0.1:6969, DHCP off, data in ./provisiond-data)",
            args.default_config.display()
        );
    } else {
        info!(
            version = env!("CARGO_PKG_VERSION"),
            "starting with configuration from {}",
            describe(&loaded)
        );
    }
    if log.env_override {
        info!("RUST_LOG is set: it overrides [log] level");
    }
    // Every thread but this one gives up the capabilities the daemon will not keep as soon
    // as it starts; this one binds the sockets first (see `service`).
    let keep = systemd::retained(&loaded.settings);
    let keep_for_threads = keep.clone();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || systemd::drop_on_thread_start(&keep_for_threads))
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, loaded, &log, &keep)) {
        Ok(()) => {
            info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn describe(loaded: &Loaded) -> String {
    loaded
        .sources
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Connections waiting to be accepted on the phones' listeners. The usual 128 (std's and
/// tokio's) overflowed in a boot storm of 1,000 phones, and a SYN that finds the queue full is
/// retransmitted only a second later. The kernel caps it at `net.core.somaxconn`.
pub const PHONE_BACKLOG: u32 = 4096;

/// A listener for phones (HTTP, HTTPS) with a backlog of [`PHONE_BACKLOG`].
fn bind_phones(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As TcpListener::bind: a restarted daemon rebinds at once.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(PHONE_BACKLOG)
}

async fn run(
    args: &ConfigArgs,
    mut running: Loaded,
    log: &LogHandle,
    keep: &caps::CapsHashSet,
) -> anyhow::Result<()> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut hangup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    let store = open_store(&running).await?;
    // A lease MAC index without its settled mark (a new store, or one an older provisiond left
    // after an unclean stop) is checked while the daemon serves: a pass over every lease that
    // would otherwise hold the start by a second at a million leases.
    // It waits for the DHCP engine's own pass over the leases: run side by side on two
    // cores, each slowed the other and the DHCP server was ready later.
    let (engine_loaded, wait_for_engine) = tokio::sync::oneshot::channel::<()>();
    let (shutdown_tx, shutdown) = watch::channel(false);
    let checking = store.clone();
    let mut stopping = shutdown.clone();
    let lease_check = tokio::spawn(async move {
        tokio::select! {
            // A dropped sender (no DHCP server, or one that did not start) also ends the wait.
            _ = wait_for_engine => {}
            // A stop before the engine has loaded leaves the index unchecked: the next start
            // checks it, and the stop does not wait for a pass over every lease.
            _ = stopping.wait_for(|stop| *stop) => return,
        }
        let checked = tokio::task::spawn_blocking(move || checking.check_lease_index()).await;
        match checked {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => error!("cannot check the lease MAC index against the leases: {e}"),
            Err(e) => error!("the lease MAC index check failed: {e}"),
        }
    });
    let mut engine_loaded = Some(engine_loaded);
    let settings = running.settings.clone();
    let server_info = ServerInfo {
        base_url: settings.general.base_url.clone(),
        url_key_strategy: settings.auth.http_auth_strategy == HttpAuthStrategy::UrlKey,
    };
    let renderer = Renderer::new(store.clone(), server_info.clone());
    let files = Arc::new(FileService::new(
        store.clone(),
        &settings.general.default_tenant,
        settings.auth.http_auth_strategy,
        load_plugins(&running),
        renderer,
    ));
    files.set_autocreate_limits(AutocreateLimits::new(
        settings.general.autocreate_per_second,
        settings.general.autocreate_burst,
        settings.general.max_devices,
    ));
    // Installed vendor packages: opened (and what an interrupted install left, removed)
    // before anything serves their files.
    let package_root = settings.general.data_dir.join("packages");
    let package_store = Arc::new(
        crate::plugins::packages::PackageStore::open(package_root.clone()).with_context(|| {
            format!(
                "cannot open the package directory {}",
                package_root.display()
            )
        })?,
    );
    let _ = files.packages.set(Arc::clone(&package_store));
    let mut servers = Vec::new();
    // One queue for the REST API and the provisioning server: a device is coalesced and
    // rate-limited whichever of them asks. Its workers run on this runtime.
    let sync = SyncQueue::new(
        store.clone(),
        Arc::clone(&files),
        server_info,
        settings.sync.clone(),
    );
    let app = provisioning::router(Arc::new(
        Provisioning::new(Arc::clone(&files)).with_sync(sync.clone()),
    ));
    let limits = HttpLimits {
        max_request_bytes: settings.http.max_request_bytes,
        request_timeout: Duration::from_secs(settings.http.request_timeout_secs),
        max_connections: MAX_HTTP_CONNECTIONS,
        max_connection_time: MAX_CONNECTION_TIME,
        shutdown_grace: SHUTDOWN_GRACE,
        refusal: http::plain_refusal,
    };
    if settings.http.enabled {
        let listener = bind_phones(settings.http.listen)
            .with_context(|| format!("cannot listen on http.listen {}", settings.http.listen))?;
        info!(
            "HTTP provisioning on {}",
            listener.local_addr().unwrap_or(settings.http.listen)
        );
        servers.push(tokio::spawn(http::serve(
            listener,
            None,
            app.clone(),
            limits,
            shutdown.clone(),
        )));
    }
    if settings.https.enabled {
        let (Some(cert), Some(key)) = (&settings.https.cert, &settings.https.key) else {
            anyhow::bail!("https.cert and https.key are required when https.enabled = true");
        };
        let tls = http::load_tls(cert, key).context("cannot use the HTTPS certificate")?;
        let listener = bind_phones(settings.https.listen)
            .with_context(|| format!("cannot listen on https.listen {}", settings.https.listen))?;
        info!(
            "HTTPS provisioning on {}",
            listener.local_addr().unwrap_or(settings.https.listen)
        );
        servers.push(tokio::spawn(http::serve(
            listener,
            Some(tls),
            app,
            limits,
            shutdown.clone(),
        )));
    }
    let api_state = Arc::new(
        ApiState::new(
            store.clone(),
            Arc::clone(&files),
            settings.general.default_tenant.clone(),
            crate::admin::plugin_roots(&settings),
        )
        .with_sync_queue(sync)
        .with_base_url(settings.general.base_url.clone())
        .with_plugin_settings(settings.plugins.clone())
        .with_packages(Arc::clone(&package_store)),
    );
    let api_app = api::router(Arc::clone(&api_state), settings.api.max_body_bytes);
    // The console shares the TCP listener; what it does not route goes to the API.
    let tcp_app = if settings.console.enabled {
        let console = crate::http::console::ConsoleState::new(api_state, &settings.console)?
            .with_dhcp(&settings.dhcp);
        crate::http::console::router(Arc::new(console)).fallback_service(api_app.clone())
    } else {
        api_app.clone()
    };
    // The API's own refusals (oversized heads) are JSON errors like the rest of its answers.
    let api_limits = HttpLimits {
        refusal: api::refusal,
        ..limits
    };
    if settings.api.enabled {
        let listener = TcpListener::bind(settings.api.listen)
            .await
            .with_context(|| format!("cannot listen on api.listen {}", settings.api.listen))?;
        info!(
            "REST API on {}",
            listener.local_addr().unwrap_or(settings.api.listen)
        );
        servers.push(tokio::spawn(http::serve(
            listener,
            None,
            tcp_app,
            api_limits,
            shutdown.clone(),
        )));
    }
    let (local, policy) = bind_admin_socket(&settings.api.socket)?;
    info!("local admin API on {}", settings.api.socket.display());
    servers.push(tokio::spawn(http::serve_unix(
        local,
        api_app,
        LocalAdmin,
        policy,
        api_limits,
        shutdown.clone(),
    )));
    if settings.dhcpinfo.enabled {
        let socket = crate::dhcpinfo::bind(
            &settings.dhcpinfo.socket,
            settings.dhcpinfo.group.as_deref(),
        )?;
        info!(
            "DHCP lease events on {}",
            settings.dhcpinfo.socket.display()
        );
        servers.push(tokio::spawn(crate::dhcpinfo::serve(
            socket,
            Arc::clone(&files),
            shutdown.clone(),
        )));
    }
    if settings.tftp.enabled {
        let options = TftpOptions {
            max_transfers: settings.tftp.max_transfers,
            timeout_secs: settings.tftp.timeout_secs,
            retries: settings.tftp.retries,
            max_per_client: settings.tftp.max_per_client,
        };
        let server = TftpServer::bind(settings.tftp.listen, options)
            .await
            .with_context(|| format!("cannot listen on tftp.listen {}", settings.tftp.listen))?
            .with_rejections(Arc::clone(&files.rejected));
        info!(
            "TFTP provisioning on {}",
            server.local_addr().unwrap_or(settings.tftp.listen)
        );
        let source: Arc<dyn FileSource> = Arc::clone(&files) as Arc<dyn FileSource>;
        let shutdown = shutdown.clone();
        servers.push(tokio::spawn(async move {
            if let Err(e) = server.run(source, shutdown).await {
                error!("TFTP server stopped: {e}");
            }
        }));
    }
    if settings.dhcp.mode != crate::config::DhcpMode::Off {
        let mut server = crate::dhcp::DhcpServer::bind(&settings.dhcp)
            .await
            .with_context(|| format!("cannot listen on dhcp.port {}", settings.dhcp.port))?;
        if let Some(engine_loaded) = engine_loaded.take() {
            server.signal_loaded(engine_loaded);
        }
        info!(
            "DHCP server ({:?}) on UDP port {}",
            settings.dhcp.mode,
            server.local_port()
        );
        servers.push(tokio::spawn(server.run(
            Arc::clone(&files),
            store.clone(),
            settings.general.base_url.clone(),
            shutdown.clone(),
        )));
    }
    // Without a DHCP server the lease check starts now.
    drop(engine_loaded);
    // Summaries of suppressed lines come out when their window ends, even if the flood did.
    let flusher = tokio::spawn(Arc::clone(&files.rejected).flush_periodically(shutdown.clone()));
    let sweeper = tokio::spawn(sweep_codes(store.clone(), shutdown.clone()));
    // Every socket is bound: from here on the daemon keeps only `keep`.
    drop_capabilities(keep)?;
    info!(
        path = %store.path().display(),
        schema = SCHEMA_VERSION,
        devices = store.device_count(),
        "store open; ready"
    );
    systemd::ready("ready: serving phones");
    let watchdog = systemd::watchdog().map(|period| {
        info!("systemd watchdog: pinging every {:?}", period / 2);
        tokio::spawn(systemd::watchdog_pings(period))
    });

    loop {
        tokio::select! {
            _ = terminate.recv() => { info!("SIGTERM received: shutting down"); break; }
            _ = interrupt.recv() => { info!("SIGINT received: shutting down"); break; }
            _ = hangup.recv() => {
                systemd::reloading();
                reload(args, &mut running, log);
                files.set_plugins(load_plugins(&running));
                systemd::ready("ready: serving phones");
            }
        }
    }
    systemd::stopping();
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }

    // Open event streams never end on their own: closed first, they do not hold the
    // servers' graceful shutdown.
    files.events.close();
    let _ = shutdown_tx.send(true);
    for server in servers {
        if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
            warn!("a server did not stop within {SHUTDOWN_GRACE:?}");
        }
    }
    let _ = flusher.await;
    let _ = sweeper.await;
    // Whatever was suppressed in the windows still open is told before the daemon ends.
    files.rejected.flush_all();
    let _ = std::fs::remove_file(&settings.api.socket);
    if settings.dhcpinfo.enabled {
        let _ = std::fs::remove_file(&settings.dhcpinfo.socket);
    }
    // A lease index check still running ends first (seconds at most), so that its work is
    // kept: `shutdown` marks only a checked index, and an unfinished check runs again at the
    // next start.
    let _ = lease_check.await;
    // Marks the lease index settled: the next start need not check it against the leases.
    let flushing = store.clone();
    tokio::task::spawn_blocking(move || flushing.shutdown())
        .await
        .context("store flush task failed")?
        .context("cannot flush the store at shutdown")?;
    Ok(())
}

/// Drops the capabilities of this thread (the others did at their start) to `keep`, logs what
/// remains, and checks that no thread of the process holds more.
fn drop_capabilities(keep: &caps::CapsHashSet) -> anyhow::Result<()> {
    let kept = systemd::drop_after_binding(keep)
        .map_err(|e| anyhow::anyhow!("cannot drop capabilities after binding: {e}"))?;
    info!(
        capabilities = %kept.names(),
        cap_eff = %kept.cap_eff,
        bounding = %kept.bounding.join(","),
        "capabilities after binding: {} kept (CapEff {})",
        kept.names(),
        kept.cap_eff
    );
    match systemd::thread_cap_eff() {
        Ok(threads) => {
            let more: Vec<String> = threads
                .iter()
                .filter(|(_, eff)| *eff != kept.cap_eff)
                .map(|(tid, eff)| format!("thread {tid}: CapEff {eff}"))
                .collect();
            if !more.is_empty() {
                anyhow::bail!(
                    "threads kept other capabilities than CapEff {}: {}",
                    kept.cap_eff,
                    more.join(", ")
                );
            }
            debug!(
                "{} threads, all with CapEff {}",
                threads.len(),
                kept.cap_eff
            );
        }
        Err(e) => warn!("cannot read /proc/self/task to check the threads' capabilities: {e}"),
    }
    Ok(())
}

/// Binds the admin socket: a stale socket file is replaced, the new one is 0660 and, when the
/// group exists, owned by group `provisiond` (whose members may use it).
fn bind_admin_socket(
    path: &std::path::Path,
) -> anyhow::Result<(tokio::net::UnixListener, LocalPolicy)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "api.socket {} exists and is not a socket: refusing to replace it",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("api.socket {} is in use by another process", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on api.socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    let group = nix::unistd::Group::from_name(ADMIN_GROUP)
        .ok()
        .flatten()
        .map(|g| g.gid);
    // Under the unit the socket is born in group provisiond (Group=): no chown needed.
    let born_in = std::fs::metadata(path).map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.gid()
    });
    if let Some(gid) = group.filter(|g| born_in.ok() != Some(g.as_raw())) {
        if let Err(e) = nix::unistd::chown(path, None, Some(gid)) {
            warn!("cannot give {} to group {ADMIN_GROUP}: {e}", path.display());
        }
    }
    Ok((
        listener,
        LocalPolicy {
            group: group.map(|g| g.as_raw()),
        },
    ))
}

async fn open_store(loaded: &Loaded) -> anyhow::Result<Store> {
    let general = loaded.settings.general.clone();
    let opening = tokio::task::spawn_blocking(move || -> anyhow::Result<Store> {
        std::fs::create_dir_all(&general.data_dir)
            .with_context(|| format!("cannot create data_dir {}", general.data_dir.display()))?;
        let store = Store::open_deferring_lease_check(&general.data_dir, general.store_cache_mib).map_err(|e| {
            let e = anyhow::Error::from(e);
            if nix::unistd::geteuid().is_root() && is_permission_denied(&e) {
                e.context(format!(
                    "a daemon run as root keeps no capability (no CAP_DAC_OVERRIDE): run it as the owner of {} (e.g. runuser -u provisiond -- provisiond serve)",
                    general.data_dir.display()
                ))
            } else {
                e
            }
        })?;
        store
            .ensure_defaults(&general.default_tenant)
            .context("cannot create the default tenant and configs")?;
        Ok(store)
    });
    tokio::pin!(opening);
    // An open is quick, but the import of a sled store or a schema migration can take minutes
    // at a million devices: systemd would kill a start that long (TimeoutStartSec) unless
    // told that it goes on.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + STORE_OPEN_TICK,
        STORE_OPEN_TICK,
    );
    loop {
        tokio::select! {
            opened = &mut opening => return opened.context("store task failed")?,
            _ = tick.tick() => crate::systemd::notify(&[
                sd_notify::NotifyState::ExtendTimeoutUsec(3 * STORE_OPEN_TICK.as_micros() as u32),
                sd_notify::NotifyState::Status("opening the store (an import or a schema migration)"),
            ]),
        }
    }
}

/// How often a long store open tells systemd that the start goes on.
const STORE_OPEN_TICK: std::time::Duration = std::time::Duration::from_secs(10);

fn is_permission_denied(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
            || cause.to_string().contains("Permission denied")
    })
}

/// Loads the plugins of the running configuration and says what loaded and what did not.
fn load_plugins(running: &Loaded) -> Arc<PluginSet> {
    let set = PluginSet::with_embedded(&crate::admin::plugin_roots(&running.settings));
    let names: Vec<String> = set
        .iter()
        .map(|p| match &p.dir {
            Some(dir) => format!("{} ({})", p.name, dir.display()),
            None => format!("{} (embedded)", p.name),
        })
        .collect();
    if set.is_empty() {
        warn!(dir = %running.settings.general.plugins_dir.display(), "no plugin loaded: phones cannot be provisioned");
    } else {
        info!("{} plugins loaded: {}", names.len(), names.join(", "));
    }
    // Each load error was logged by PluginSet::load with its file and field.
    Arc::new(set)
}

/// Re-reads the configuration on SIGHUP; applies what can change live, names the rest.
fn reload(args: &ConfigArgs, running: &mut Loaded, log: &LogHandle) {
    info!("SIGHUP received: reloading the configuration");
    let fresh = match config::load(args.config.as_deref(), &args.default_config) {
        Ok(fresh) => fresh,
        Err(errors) => {
            for e in &errors.0 {
                error!("{e}");
            }
            error!("configuration reload failed: keeping the running configuration");
            return;
        }
    };
    let changed = changed_keys(&running.settings, &fresh.settings);
    if changed.is_empty() {
        info!(
            "configuration reloaded from {}: nothing changed",
            describe(&fresh)
        );
        return;
    }
    let (live, restart): (Vec<String>, Vec<String>) = changed
        .into_iter()
        .partition(|k| LIVE_KEYS.contains(&k.as_str()));
    if live.iter().any(|k| k == "log.level") {
        match log.set_level(&fresh.settings.log.level) {
            Ok(()) => {
                running.settings.log = fresh.settings.log.clone();
                debug!("log filter is now {:?}", running.settings.log.level);
            }
            Err(e) => error!("cannot apply log.level: {e}"),
        }
    }
    if !live.is_empty() {
        info!(
            "configuration reloaded from {}: applied {}",
            describe(&fresh),
            live.join(", ")
        );
    }
    if !restart.is_empty() {
        warn!(
            "configuration reloaded from {}: these changes take effect only after a restart: {}",
            describe(&fresh),
            restart.join(", ")
        );
    }
    running.sources = fresh.sources;
}

/// How often expired provisioning codes are deleted (they are refused at use from their
/// expiry second on, whatever the sweeper does).
const CODE_SWEEP_PERIOD: Duration = Duration::from_secs(30);

/// Deletes expired provisioning codes every [`CODE_SWEEP_PERIOD`] until shutdown.
async fn sweep_codes(store: crate::store::Store, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CODE_SWEEP_PERIOD) => {}
            _ = shutdown.changed() => return,
        }
        let store = store.clone();
        let swept = tokio::task::spawn_blocking(move || {
            crate::manage::codes::sweep(&store, crate::model::now())
        })
        .await;
        match swept {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!("expired provisioning codes not swept: {e}"),
            Err(e) => warn!("code sweeper: {e}"),
        }
    }
}
