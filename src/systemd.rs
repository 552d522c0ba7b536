//! What the daemon owes its service manager: capabilities dropped once the sockets are bound,
//! and sd_notify (`READY=1`, `RELOADING=1`, `STOPPING=1`, `STATUS=`, `WATCHDOG=1`).
//!
//! Capabilities are per thread in Linux. The daemon's own thread binds every socket and then
//! drops what it no longer needs ([`drop_after_binding`]); every other thread of the process
//! (tokio's workers and blocking pool, and the threads they start, such as the store's) drops the
//! same capabilities as its first act ([`drop_on_thread_start`], installed as tokio's
//! `on_thread_start`), so that no thread ever holds more than the kept set once it runs code
//! other than the binding. [`thread_cap_eff`] reads back every thread's effective set.

use std::time::Duration;

use caps::{CapSet, Capability, CapsHashSet};

use crate::config::Settings;

/// Capabilities the daemon needs after its sockets are bound, for `settings`.
///
/// None today: the privileged ports (HTTP 80, TFTP 69, HTTPS 443…) need
/// `CAP_NET_BIND_SERVICE` only for `bind`, and TFTP transfers use ephemeral ports. The DHCP
/// responder, when it needs raw sockets or `SO_BINDTODEVICE` while running, adds
/// `CAP_NET_RAW` here for `dhcp.mode` other than `off`.
pub fn retained(_settings: &Settings) -> CapsHashSet {
    CapsHashSet::new()
}

/// The capabilities of the calling thread after a drop, as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// Effective set, lowercase names (`cap_net_raw`), sorted.
    pub effective: Vec<String>,
    /// The effective set as `/proc/<pid>/status` shows it (`CapEff`, 16 hex digits).
    pub cap_eff: String,
    /// Bounding set, sorted names (shrunk only when the daemon had `CAP_SETPCAP`).
    pub bounding: Vec<String>,
}

impl Kept {
    /// `none` or the comma-separated names of the effective set.
    pub fn names(&self) -> String {
        if self.effective.is_empty() {
            "none".to_owned()
        } else {
            self.effective.join(",")
        }
    }
}

/// Reduces the calling thread's capabilities to `keep` (intersected with what it has):
/// bounding set (when `CAP_SETPCAP` allows it), ambient, inheritable, effective and permitted.
pub fn drop_to(keep: &CapsHashSet) -> Result<(), caps::errors::CapsError> {
    let permitted = caps::read(None, CapSet::Permitted)?;
    let kept: CapsHashSet = permitted.intersection(keep).copied().collect();
    // The bounding set limits what an execve could ever regain (uid 0 regains everything in
    // it); shrinking it needs CAP_SETPCAP, which a root daemon has and the unit's does not.
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP)? {
        for cap in caps::read(None, CapSet::Bounding)? {
            if !keep.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
    }
    // Kernels without ambient capabilities (before 4.3) have nothing to clear.
    let _ = caps::clear(None, CapSet::Ambient);
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &kept)?;
    caps::set(None, CapSet::Permitted, &kept)?;
    Ok(())
}

/// The calling thread's capabilities, for the log.
pub fn current() -> Result<Kept, caps::errors::CapsError> {
    let effective = caps::read(None, CapSet::Effective)?;
    let bounding = caps::read(None, CapSet::Bounding)?;
    Ok(Kept {
        effective: names(&effective),
        cap_eff: format!("{:016x}", mask(&effective)),
        bounding: names(&bounding),
    })
}

/// Drops the calling thread's capabilities to `keep` and says what is left.
pub fn drop_after_binding(keep: &CapsHashSet) -> Result<Kept, caps::errors::CapsError> {
    drop_to(keep)?;
    current()
}

/// For tokio's `on_thread_start`: the new thread gives up what the daemon will not keep.
/// A failure here cannot be reported to anyone but the log.
pub fn drop_on_thread_start(keep: &CapsHashSet) {
    if let Err(e) = drop_to(keep) {
        tracing::error!("cannot drop the capabilities of a new thread: {e}");
    }
}

fn names(set: &CapsHashSet) -> Vec<String> {
    let mut names: Vec<String> = set.iter().map(|c| c.to_string().to_lowercase()).collect();
    names.sort();
    names
}

fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0, |m, c| m | c.bitmask())
}

/// Every thread of this process with its `CapEff` from `/proc/self/task/<tid>/status`.
pub fn thread_cap_eff() -> std::io::Result<Vec<(u32, String)>> {
    let mut threads = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        // A thread may end between the listing and the read.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        if let Some(eff) = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .map(|v| v.trim().to_owned())
        {
            threads.push((tid, eff));
        }
    }
    Ok(threads)
}

/// Tells the service manager (`NOTIFY_SOCKET`; nothing happens without it) what happens.
pub fn notify(states: &[sd_notify::NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify the service manager: {e}");
    }
}

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
}

/// `RELOADING=1` with the monotonic time systemd asks for; [`ready`] ends the reload.
pub fn reloading() {
    match sd_notify::NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[
            sd_notify::NotifyState::Reloading,
            now,
            sd_notify::NotifyState::Status("reloading the configuration"),
        ]),
        Err(_) => notify(&[sd_notify::NotifyState::Reloading]),
    }
}

/// `STOPPING=1`.
pub fn stopping() {
    notify(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("stopping"),
    ]);
}

/// The watchdog period systemd asks for (`WATCHDOG_USEC`, for this process), if any.
pub fn watchdog() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Sends `WATCHDOG=1` every half `period` for as long as the runtime runs tasks: a runtime
/// that stops polling stops the pings, and systemd restarts the service.
pub async fn watchdog_pings(period: Duration) {
    let mut ticks = tokio::time::interval(period / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_mask_match_proc_status_format() {
        let set: CapsHashSet = [Capability::CAP_NET_RAW, Capability::CAP_NET_BIND_SERVICE]
            .into_iter()
            .collect();
        assert_eq!(names(&set), ["cap_net_bind_service", "cap_net_raw"]);
        assert_eq!(format!("{:016x}", mask(&set)), "0000000000002400");
        let kept = Kept {
            effective: Vec::new(),
            cap_eff: "0000000000000000".into(),
            bounding: Vec::new(),
        };
        assert_eq!(kept.names(), "none");
    }

    #[test]
    fn thread_cap_eff_lists_this_thread() {
        let threads = thread_cap_eff().unwrap();
        assert!(!threads.is_empty());
        assert!(threads.iter().all(|(_, eff)| eff.len() == 16));
    }
}
