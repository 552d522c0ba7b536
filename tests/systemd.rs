//! The daemon under a service manager: sd_notify (READY=1 once every socket is bound,
//! RELOADING=1 then READY=1 around a SIGHUP reload, WATCHDOG=1, STOPPING=1) and the
//! capabilities it reports after binding, checked against /proc for every thread.

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::{command, listening_on, write_config, Daemon, PATIENCE};
use nix::sys::signal::Signal;

/// Receives notifications until one contains `wanted`; returns it.
fn receive_until(socket: &UnixDatagram, wanted: &str, seen: &mut Vec<String>) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                seen.push(message.clone());
                if message.lines().any(|l| l == wanted) {
                    return message;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    panic!("no {wanted} notification; seen: {seen:?}");
}

#[test]
fn notifies_ready_after_binding_then_reloading_watchdog_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = write_config(dir, "");
    let notify_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&notify_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut daemon = Daemon::start({
        let mut cmd = command(dir);
        cmd.args(["serve", "--config"])
            .arg(&config)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("WATCHDOG_USEC", "400000")
            .env_remove("WATCHDOG_PID");
        cmd
    });
    let mut seen = Vec::new();
    let ready = receive_until(&socket, "READY=1", &mut seen);
    assert!(ready.contains("STATUS="), "{ready}");
    // READY=1 comes after every socket is bound and the capabilities are dropped.
    let http = listening_on(&daemon.expect_line(&["HTTP provisioning on"]));
    std::net::TcpStream::connect(http).expect("HTTP accepts once READY=1 is sent");
    daemon.expect_line(&["capabilities after binding"]);
    assert!(
        !seen.iter().any(|m| m.contains("WATCHDOG=1")),
        "watchdog before READY: {seen:?}"
    );

    // WATCHDOG_USEC=400000: a ping every 200 ms.
    let started = Instant::now();
    receive_until(&socket, "WATCHDOG=1", &mut seen);
    receive_until(&socket, "WATCHDOG=1", &mut seen);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "watchdog pings too slow"
    );
    daemon.expect_line(&["systemd watchdog: pinging every 200ms"]);

    daemon.signal(Signal::SIGHUP);
    let reloading = receive_until(&socket, "RELOADING=1", &mut seen);
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    receive_until(&socket, "READY=1", &mut seen);

    daemon.signal(Signal::SIGTERM);
    receive_until(&socket, "STOPPING=1", &mut seen);
    let status = daemon.wait();
    assert!(status.success(), "{status:?}: {:?}", daemon.seen);
}

#[test]
fn every_thread_keeps_exactly_the_capabilities_logged_after_binding() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = write_config(dir, "");
    let mut daemon = Daemon::start({
        let mut cmd = command(dir);
        cmd.args(["serve", "--config"]).arg(&config);
        cmd
    });
    let line = daemon.expect_line(&["capabilities after binding"]);
    daemon.expect_line(&["ready"]);
    // "capabilities after binding: none kept (CapEff 0000000000000000) …"
    let logged = line
        .split("(CapEff ")
        .nth(1)
        .and_then(|rest| rest.get(..16))
        .unwrap_or_else(|| panic!("no CapEff in {line}"));
    assert!(line.contains(": none kept"), "{line}");
    assert_eq!(logged, "0000000000000000", "{line}");
    let pid = daemon.child.id();
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = match std::fs::read_to_string(task.unwrap().path().join("status")) {
            Ok(status) => status,
            Err(_) => continue, // the thread ended meanwhile
        };
        for set in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
            let value = status
                .lines()
                .find_map(|l| l.strip_prefix(set))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {set} in {status}"));
            assert_eq!(value, logged, "{set} of a thread:\n{status}");
        }
        threads += 1;
    }
    assert!(
        threads > 1,
        "a multi-threaded daemon has more than one thread"
    );
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait().success());
}
