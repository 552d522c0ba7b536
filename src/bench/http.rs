//! HTTP load: distinct Yealink-style phones fetching their MAC file over keep-alive connections.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::{check_target, percentiles};
use crate::cli::HttpBenchArgs;
use crate::model::Mac;

fn phone(i: u32) -> (String, String) {
    let b = i.to_be_bytes();
    let mac = Mac::new([0x80, 0x5e, 0xc0, b[1], b[2], b[3]]);
    (
        format!("{}.cfg", mac.to_bare()),
        format!("Yealink SIP-T54W 96.86.0.70 {mac}"),
    )
}

struct Pass {
    ok: u32,
    failed: u32,
    bytes: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn pass(args: &HttpBenchArgs, total: u32, save: bool) -> anyhow::Result<Pass> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency)
        .build_http();
    let next = Arc::new(AtomicU32::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let client = client.clone();
        let next = Arc::clone(&next);
        let args = args.clone();
        workers.push(tokio::spawn(async move {
            let mut result = Pass {
                ok: 0,
                failed: 0,
                bytes: 0,
                elapsed: Duration::ZERO,
                latencies: Vec::new(),
            };
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                let (file, ua) = phone(n % args.devices.max(1));
                let uri = format!("http://{}{}/{file}", args.target, args.prefix);
                let request = hyper::Request::get(uri)
                    .header("user-agent", ua)
                    .body(Empty::new())?;
                let t = Instant::now();
                let outcome = async {
                    let response = client.request(request).await?;
                    let status = response.status();
                    let body = response.into_body().collect().await?.to_bytes();
                    anyhow::Ok((status, body))
                }
                .await;
                result.latencies.push(t.elapsed());
                match outcome {
                    Ok((status, body)) if status.is_success() => {
                        result.ok += 1;
                        result.bytes += body.len() as u64;
                        if let (true, Some(dir)) = (save, &args.save) {
                            tokio::fs::write(dir.join(&file), &body).await?;
                        }
                    }
                    _ => result.failed += 1,
                }
            }
            anyhow::Ok(result)
        }));
    }
    let mut total_pass = Pass {
        ok: 0,
        failed: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for worker in workers {
        let part = worker.await.context("worker")??;
        total_pass.ok += part.ok;
        total_pass.failed += part.failed;
        total_pass.bytes += part.bytes;
        total_pass.latencies.extend(part.latencies);
    }
    total_pass.elapsed = started.elapsed();
    Ok(total_pass)
}

fn report(name: &str, mut p: Pass) {
    let (p50, p99) = percentiles(&mut p.latencies);
    let rate = f64::from(p.ok) / p.elapsed.as_secs_f64();
    println!(
        "{name:<8} {:>8} ok {:>6} failed {:>10.0} req/s  p50 {:>8.3} ms  p99 {:>8.3} ms  {:>8.1} MB/s",
        p.ok,
        p.failed,
        rate,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        p.bytes as f64 / p.elapsed.as_secs_f64() / 1e6
    );
}

/// Warm-up (one request per phone; creates the devices), then the measured pass.
pub async fn run(args: &HttpBenchArgs) -> anyhow::Result<()> {
    check_target(&args.target)?;
    if let Some(dir) = &args.save {
        tokio::fs::create_dir_all(dir).await?;
    }
    println!(
        "target {}  phones {}  concurrency {}",
        args.target, args.devices, args.concurrency
    );
    if !args.no_warmup {
        report("warm-up", pass(args, args.devices, true).await?);
    }
    report("measured", pass(args, args.requests, false).await?);
    Ok(())
}
