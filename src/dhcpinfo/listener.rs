//! The daemon side: a UNIX datagram socket whose events go to identification through a
//! bounded queue, so that a flood is dropped and counted instead of stalling the reader.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::net::UnixDatagram;
use tokio::sync::watch;

use super::{parse_datagram, Event, MAX_DATAGRAM};
use crate::files::FileService;
use crate::ratelimit::{Kind, Source};

/// The one source of the socket's datagrams: their senders (`dhcp-notify`, unbound) have no
/// address, and a bound one could name itself anything.
const SENDERS: Source = Source::Local("the dhcpinfo socket");

/// Events waiting for identification; more are dropped and counted.
pub const QUEUE: usize = 4096;

/// Binds the socket: a stale socket file is replaced, the new one is 0660 and, when `group`
/// is set, owned by that group (the DHCP server's) so that its hook may write.
pub fn bind(path: &Path, group: Option<&str>) -> anyhow::Result<UnixDatagram> {
    use anyhow::Context;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            anyhow::bail!(
                "dhcpinfo.socket {} exists and is not a socket: refusing to replace it",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let socket = UnixDatagram::bind(path)
        .with_context(|| format!("cannot bind dhcpinfo.socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(name) = group {
        let gid = nix::unistd::Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid)
            .with_context(|| format!("dhcpinfo.group {name:?} does not exist"))?;
        nix::unistd::chown(path, None, Some(gid))
            .with_context(|| format!("cannot give {} to group {name}", path.display()))?;
    }
    Ok(socket)
}

/// Reads events until `shutdown`; a worker thread applies them in order.
pub async fn serve(
    socket: UnixDatagram,
    files: Arc<FileService>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (queue, events) = std::sync::mpsc::sync_channel::<Event>(QUEUE);
    let worker_files = Arc::clone(&files);
    let worker = std::thread::Builder::new()
        .name("dhcpinfo".into())
        .spawn(move || {
            for event in events {
                let counters = &worker_files.dhcpinfo;
                let result = match &event {
                    Event::Lease(ctx) => worker_files
                        .identify_via(ctx, crate::store::Via::Dhcpinfo)
                        .map(|_| ()),
                    Event::Gone(ip) => worker_files.forget_ip(*ip).map(|_| ()),
                };
                match result {
                    Ok(()) => counters.accepted.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        tracing::warn!("lease event not applied: {e}");
                        counters.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        });
    if let Err(e) = &worker {
        tracing::error!("cannot start the dhcpinfo worker: {e}");
        return;
    }
    // One byte more than allowed, to tell an oversize datagram from a full one.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let counters = &files.dhcpinfo;
    loop {
        let n = tokio::select! {
            received = socket.recv(&mut buf) => match received {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("dhcpinfo socket: {e}");
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        counters.received.fetch_add(1, Ordering::Relaxed);
        if n > MAX_DATAGRAM {
            counters.oversize.fetch_add(1, Ordering::Relaxed);
            if files.rejected.admit(Kind::DhcpinfoMalformed, SENDERS) {
                tracing::warn!("dhcpinfo: datagram over {MAX_DATAGRAM} bytes dropped");
            }
            continue;
        }
        match parse_datagram(&buf[..n]) {
            Ok(event) => {
                if queue.try_send(event).is_err() {
                    let dropped = counters.queue_full.fetch_add(1, Ordering::Relaxed);
                    if dropped % 1000 == 0 {
                        tracing::warn!(
                            dropped = dropped + 1,
                            "dhcpinfo: queue full, lease events dropped"
                        );
                    }
                }
            }
            Err(e) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                if files.rejected.admit(Kind::DhcpinfoMalformed, SENDERS) {
                    tracing::warn!("dhcpinfo: malformed lease event dropped: {e}");
                }
            }
        }
    }
    drop(queue);
    if let Ok(handle) = worker {
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
}
