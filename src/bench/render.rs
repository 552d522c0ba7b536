//! `provisiond bench render`: identification + rendering throughput on one core.

use std::time::Instant;

use serde_json::json;

use crate::cli::RenderBenchArgs;
use crate::config;
use crate::ident::{Identifier, RequestContext};
use crate::model::{Config, Device, Mac};
use crate::plugins::{PluginSet, Renderer, ServerInfo, Target};
use crate::store::Store;

/// Runs the benchmark and prints one line per plugin.
pub fn run(args: &RenderBenchArgs) -> anyhow::Result<()> {
    let loaded = config::load(args.source.config.as_deref(), &args.source.default_config)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let set = PluginSet::with_embedded(&crate::admin::plugin_roots(&loaded.settings));
    anyhow::ensure!(
        !set.is_empty(),
        "no plugin loaded from {}",
        loaded.settings.general.plugins_dir.display()
    );
    let dir = std::env::temp_dir().join(format!("provisiond-bench-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(dir.clone());
    let store = Store::open(&dir)?;
    store.ensure_defaults("master")?;
    let mut base = store
        .config("base")?
        .ok_or_else(|| anyhow::anyhow!("no base config"))?;
    base.raw_config = json!({"ntp_ip": "10.0.0.1", "timezone": "Europe/Paris", "locale": "fr_FR", "sip_dtmf_mode": "RTP-out-of-band"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    store.update_config(&base)?;
    store.create_config(&Config {
        id: "bench".into(),
        parent_ids: vec!["base".into()],
        raw_config: json!({"sip_lines": {
            "1": {"username": "1001", "password": "pw-1001", "display_name": "Alice", "registrar_ip": "10.0.0.10"},
            "2": {"username": "1002", "password": "pw-1002", "display_name": "Bob", "registrar_ip": "10.0.0.10"}}})
        .as_object()
        .cloned()
        .unwrap_or_default(),
        tenant: "master".into(),
        deletable: true,
        transient: false,
        role: None,
        extra: Default::default(),
        generation: 0,
        revision: 0,
    })?;
    let ident = Identifier::new(store.clone(), "master");
    let renderer = Renderer::new(
        store.clone(),
        ServerInfo {
            base_url: Some("http://10.0.0.2:8667".parse()?),
            url_key_strategy: false,
        },
    );
    println!("iterations per figure: {} (one thread)", args.iterations);
    println!(
        "{:<14} {:<28} {:>16} {:>18}",
        "PLUGIN", "FILE", "cached/s", "uncached/s"
    );
    for (n, plugin) in set.iter().enumerate() {
        if args
            .plugin
            .as_ref()
            .is_some_and(|only| *only != plugin.name)
        {
            continue;
        }
        let Some(pattern) = plugin
            .routes()
            .find(|(p, t)| {
                matches!(t, Target::Template(_)) && (p.contains("{mac}") || p.contains("{MAC}"))
            })
            .map(|(p, _)| p.to_owned())
        else {
            println!("{:<14} (no per-device template route)", plugin.name);
            continue;
        };
        let mac = Mac::new([0x02, 0, 0, 0, 0, n as u8]);
        let path = pattern
            .replace("{mac}", &mac.to_bare())
            .replace("{MAC}", &mac.to_bare().to_ascii_uppercase())
            .replace('*', "x");
        let mut device = Device::new(format!("bench{n}"), "master");
        device.mac = Some(mac);
        // Its own address: a file name without a MAC rule still finds it by IP.
        let ip: std::net::IpAddr = format!("10.0.{}.{}", n / 200, n % 200 + 50).parse()?;
        device.ip = Some(ip);
        device.plugin = Some(plugin.name.clone());
        device.config = Some("bench".into());
        device.admin_password = Some("bench-admin-password".into());
        store.create_device(&device)?;
        let ctx = RequestContext::Tftp {
            src: ip,
            filename: path.clone(),
        };
        let once = |clear: bool| -> anyhow::Result<()> {
            let found = ident
                .identify(&ctx, &set)?
                .ok_or_else(|| anyhow::anyhow!("{path}: device not identified"))?;
            let resolved = plugin
                .resolve(&path)
                .ok_or_else(|| anyhow::anyhow!("{path}: no route"))?;
            if clear {
                renderer.clear_cache();
            }
            renderer.render(plugin, &found.device, &resolved)?;
            Ok(())
        };
        once(false)?;
        let rate = |clear: bool, iterations: u32| -> anyhow::Result<f64> {
            let start = Instant::now();
            for _ in 0..iterations {
                once(clear)?;
            }
            Ok(f64::from(iterations) / start.elapsed().as_secs_f64())
        };
        let cached = rate(false, args.iterations)?;
        let uncached = rate(true, (args.iterations / 10).max(1))?;
        println!(
            "{:<14} {:<28} {:>16.0} {:>18.0}",
            plugin.name, path, cached, uncached
        );
    }
    Ok(())
}

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
