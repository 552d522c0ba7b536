//! TFTP load: concurrent read transfers of one file, with a minimal client (RRQ, blksize,
//! one ACK per block).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::net::UdpSocket;

use super::{check_target, percentiles};
use crate::cli::TftpBenchArgs;

const TIMEOUT: Duration = Duration::from_secs(5);

async fn fetch(target: SocketAddr, file: &str, blksize: u16) -> anyhow::Result<u64> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let mut rrq = vec![0, 1];
    for part in [file, "octet", "blksize", &blksize.to_string()] {
        rrq.extend_from_slice(part.as_bytes());
        rrq.push(0);
    }
    socket.send_to(&rrq, target).await?;
    let mut buf = vec![0u8; usize::from(blksize) + 4];
    let mut expected: u16 = 1;
    let mut total = 0u64;
    let mut peer: Option<SocketAddr> = None;
    let mut block_size = 512usize;
    loop {
        let (n, from) = tokio::time::timeout(TIMEOUT, socket.recv_from(&mut buf))
            .await
            .context("timed out")??;
        if peer.is_some_and(|p| p != from) {
            continue;
        }
        peer = Some(from);
        match (buf.get(0..2), n) {
            (Some([0, 6]), _) => {
                // OACK: the server accepted the block size.
                block_size = usize::from(blksize);
                socket.send_to(&[0, 4, 0, 0], from).await?;
            }
            (Some([0, 3]), n) if n >= 4 => {
                let block = u16::from_be_bytes([buf[2], buf[3]]);
                socket.send_to(&[0, 4, buf[2], buf[3]], from).await?;
                if block == expected {
                    let data = n - 4;
                    total += data as u64;
                    expected = expected.wrapping_add(1);
                    if data < block_size {
                        return Ok(total);
                    }
                }
            }
            (Some([0, 5]), _) => bail!(
                "server error: {}",
                String::from_utf8_lossy(&buf[4..n]).trim_end_matches('\0')
            ),
            _ => bail!("unexpected packet"),
        }
    }
}

/// Runs `transfers` fetches, `concurrency` at a time; prints MB/s and latency percentiles.
pub async fn run(args: &TftpBenchArgs) -> anyhow::Result<()> {
    check_target(&args.target)?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let next = Arc::clone(&next);
        let args = args.clone();
        workers.push(tokio::spawn(async move {
            let (mut bytes, mut failed, mut latencies) = (0u64, 0usize, Vec::new());
            while next.fetch_add(1, Ordering::Relaxed) < args.transfers {
                let t = Instant::now();
                match fetch(args.target, &args.file, args.blksize).await {
                    Ok(n) => {
                        bytes += n;
                        latencies.push(t.elapsed());
                    }
                    Err(_) => failed += 1,
                }
            }
            (bytes, failed, latencies)
        }));
    }
    let (mut bytes, mut failed, mut latencies) = (0u64, 0usize, Vec::new());
    for worker in workers {
        let (b, f, l) = worker.await?;
        bytes += b;
        failed += f;
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    let (p50, p99) = percentiles(&mut latencies);
    println!(
        "target {}  file {}  concurrency {}  blksize {}\n{:>6} ok {:>4} failed  {:>8.1} MB/s  p50 {:>8.1} ms  p99 {:>8.1} ms",
        args.target,
        args.file,
        args.concurrency,
        args.blksize,
        latencies.len(),
        failed,
        bytes as f64 / elapsed.as_secs_f64() / 1e6,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    Ok(())
}
