//! `provisiond bench …`: figures for the performance targets, never timed assertions.

mod dhcp;
mod http;
mod render;
mod startup;
mod store;
mod storm;
mod tftp;

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::BenchKind;

/// Runs one benchmark and prints its figures.
pub fn run(what: &BenchKind) -> ExitCode {
    let result = match what {
        BenchKind::Render(args) => render::run(args),
        BenchKind::Http(args) => runtime().and_then(|rt| rt.block_on(http::run(args))),
        BenchKind::Tftp(args) => runtime().and_then(|rt| rt.block_on(tftp::run(args))),
        BenchKind::Dhcp(args) => dhcp::run(args),
        BenchKind::Storm(args) => runtime().and_then(|rt| rt.block_on(storm::run(args))),
        BenchKind::Store(args) => store::run(args),
        BenchKind::Startup(args) => startup::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Load generators only talk to this machine or to test namespaces.
fn check_target(addr: &std::net::SocketAddr) -> anyhow::Result<()> {
    let ip = addr.ip();
    let allowed = ip.is_loopback() || std::env::var_os("PROVISIOND_BENCH_ANY_TARGET").is_some();
    anyhow::ensure!(allowed, "{addr}: load only loopback targets (or set PROVISIOND_BENCH_ANY_TARGET inside a test namespace)");
    Ok(())
}

/// p50 and p99 of latencies.
fn percentiles(latencies: &mut [Duration]) -> (Duration, Duration) {
    if latencies.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}
