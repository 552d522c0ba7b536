//! Admin commands that read local state directly: `plugin list|show`, `dhcp-snippet`.

use std::process::ExitCode;

use crate::cli::{DhcpSnippetArgs, PluginAction, PluginArgs};
use crate::config::{self, Settings};
use crate::plugins::{Origin, PluginSet, Target};

/// The plugin directories of a configuration: built-in first, admin last (it wins); the
/// embedded plugins go under both ([`PluginSet::with_embedded`]).
pub fn plugin_roots(settings: &Settings) -> Vec<(std::path::PathBuf, Origin)> {
    vec![
        (settings.general.plugins_dir.clone(), Origin::Builtin),
        (settings.general.data_dir.join("plugins"), Origin::Admin),
    ]
}

/// `provisiond repo …`: builds a plugin repository (docs/plugin-repository.md).
pub fn repo(args: &crate::cli::RepoArgs) -> ExitCode {
    use crate::cli::RepoAction;
    use crate::plugins::repo;
    let done = match &args.action {
        RepoAction::Keygen { prefix } => repo::keygen(prefix).map(|(secret, public)| {
            println!("secret key: {} (keep it private)", secret.display());
            println!(
                "public key: {} (copy it into [plugins] trusted_keys_dir)",
                public.display()
            );
        }),
        RepoAction::Pack { plugin_dir, out } => repo::pack(plugin_dir, out).map(|e| {
            println!(
                "{} {} {} bytes sha256 {}",
                e.archive, e.version, e.size, e.sha256
            );
        }),
        RepoAction::Index { dir, sign } => repo::write_index(dir, sign.as_deref()).map(|index| {
            for e in &index.plugins {
                println!("{:<14} {:<10} {}", e.name, e.version, e.archive);
            }
            println!(
                "{} written{}",
                dir.join(repo::INDEX_FILE).display(),
                if sign.is_some() {
                    ", signed"
                } else {
                    ", NOT signed"
                }
            );
        }),
        RepoAction::Verify { dir, key } => repo::verify_dir(dir, key).map(|index| {
            println!(
                "{}: signature and {} archive(s) verified",
                dir.display(),
                index.plugins.len()
            );
        }),
        RepoAction::Sign { file, key } => std::fs::read(file)
            .map_err(|source| repo::RepoError::Io {
                path: file.display().to_string(),
                source,
            })
            .and_then(|data| repo::sign(&data, key))
            .and_then(|signature| {
                let mut out = file.clone().into_os_string();
                out.push(".minisig");
                std::fs::write(&out, signature).map_err(|source| repo::RepoError::Io {
                    path: out.to_string_lossy().into_owned(),
                    source,
                })?;
                println!("{} written", std::path::Path::new(&out).display());
                Ok(())
            }),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("repo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `provisiond plugin …`.
pub fn plugin(args: &PluginArgs) -> ExitCode {
    if let PluginAction::Packages(packages) = &args.action {
        // Through the daemon: its plugins and packages are the ones that count.
        let mut packages = packages.clone();
        packages.socket = args.socket.clone();
        return crate::admin_client::packages(&args.source, &packages);
    }
    if !matches!(args.action, PluginAction::List | PluginAction::Show { .. }) {
        return crate::admin_client::plugin_remote(args);
    }
    let loaded = match config::load(args.source.config.as_deref(), &args.source.default_config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let set = PluginSet::with_embedded(&plugin_roots(&loaded.settings));
    match &args.action {
        PluginAction::List => {
            println!(
                "{:<16} {:<10} {:<8} {:<12} {:<24} {:<40} MODELS",
                "NAME", "VERSION", "ORIGIN", "VENDOR", "FROM", "IDENTIFIED BY"
            );
            for p in set.iter() {
                let sources: Vec<&str> = p.identify_sources().iter().map(|s| s.as_str()).collect();
                println!(
                    "{:<16} {:<10} {:<8} {:<12} {:<24} {:<40} {}",
                    p.name,
                    p.version,
                    p.origin.as_str(),
                    p.vendor,
                    p.location().display(),
                    if sources.is_empty() {
                        "-".to_owned()
                    } else {
                        sources.join(",")
                    },
                    p.models.join(" ")
                );
            }
            for e in &set.errors {
                eprintln!("not loaded: {e}");
            }
            if set.errors.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        PluginAction::Show { name } => {
            let Some(p) = set.get(name) else {
                for e in set.errors.iter().filter(|e| e.dir.ends_with(name)) {
                    eprintln!("not loaded: {e}");
                }
                eprintln!("no plugin {name:?}");
                return ExitCode::FAILURE;
            };
            println!("name:        {}", p.name);
            println!("version:     {}", p.version);
            println!("vendor:      {}", p.vendor);
            println!("description: {}", p.description);
            println!("origin:      {}", p.origin.as_str());
            println!("directory:   {}", p.location().display());
            if let Some(replaced) = p.replaces {
                println!("replaces:    the {} plugin {name}", replaced.as_str());
            }
            println!("models:      {}", p.models.join(", "));
            println!("sync event:  {}", p.sync_event.as_deref().unwrap_or("-"));
            println!("identify:");
            for (source, pattern, score) in p.rules() {
                println!("  {source:?} (score {score}): {pattern}");
            }
            println!("files:");
            for (pattern, target) in p.routes() {
                match target {
                    Target::Template(t) => println!("  {pattern} -> templates/{t}"),
                    Target::Static(_) => println!("  {pattern} -> static/"),
                }
            }
            if !p.dhcp_options.is_empty() {
                println!(
                    "dhcp options (vendor class {}):",
                    p.dhcp_vendor_class
                        .as_ref()
                        .map(|r| r.as_str())
                        .unwrap_or("from identify rules")
                );
                for o in &p.dhcp_options {
                    println!(
                        "  {:>3} = {}{}",
                        o.code,
                        o.value,
                        if o.always { " (always)" } else { "" }
                    );
                }
            }
            ExitCode::SUCCESS
        }
        _ => crate::admin_client::plugin_remote(args),
    }
}

/// `provisiond dhcp-snippet`: prints the snippet on stdout, what could not be written on
/// stderr (as comments in the snippet too).
pub fn dhcp_snippet(args: &DhcpSnippetArgs) -> ExitCode {
    use crate::config::HttpAuthStrategy;
    use crate::dhcp::snippet::{self, Params};
    use crate::files::{valid_provisioning_key, UrlKey};

    let loaded = match config::load(args.source.config.as_deref(), &args.source.default_config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let settings = &loaded.settings;
    let key = match (settings.auth.http_auth_strategy, &args.key) {
        (HttpAuthStrategy::Disabled, None) => UrlKey::Off,
        (HttpAuthStrategy::Disabled, Some(_)) => {
            eprintln!("dhcp-snippet: --key is for http_auth_strategy = \"url_key\", which is off");
            return ExitCode::FAILURE;
        }
        (HttpAuthStrategy::UrlKey, Some(key)) if valid_provisioning_key(key) => {
            UrlKey::Key(key.clone())
        }
        (HttpAuthStrategy::UrlKey, Some(_)) => {
            eprintln!(
                "dhcp-snippet: --key: {}",
                crate::files::PROVISIONING_KEY_RULE
            );
            return ExitCode::FAILURE;
        }
        (HttpAuthStrategy::UrlKey, None) => UrlKey::Missing,
    };
    let base_url = args
        .base_url
        .clone()
        .or_else(|| settings.general.base_url.clone());
    let server_ip = args.server_ip.or_else(|| match base_url.as_ref()?.host()? {
        url::Host::Ipv4(ip) => Some(ip),
        _ => None,
    });
    let set = PluginSet::with_embedded(&plugin_roots(settings));
    for e in &set.errors {
        eprintln!("not loaded: {e}");
    }
    let params = Params {
        base_url,
        key,
        server_ip,
    };
    let snippet = snippet::render(&set, &params, args.format);
    for problem in &snippet.problems {
        eprintln!("dhcp-snippet: {problem}");
    }
    print!("{}", snippet.text);
    ExitCode::SUCCESS
}

/// `provisiond store check [--repair]`: opens the store of the configuration's `data_dir`
/// (the daemon must be stopped: the store has one process at a time), compares every derived
/// tree with its records, prints one line per tree, and with `--repair` rebuilds them all
/// when one differs. Exit 0 when consistent (or repaired), 1 otherwise.
pub fn store(args: &crate::cli::StoreArgs) -> ExitCode {
    let crate::cli::StoreAction::Check { repair } = args.action;
    let source = &args.source;
    let loaded = match crate::config::load(source.config.as_deref(), &source.default_config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };
    let general = &loaded.settings.general;
    // A daemon that was just told to stop may hold the lock for a moment longer (its last
    // flush): a locked store is tried again for a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let store = loop {
        match crate::store::Store::open_with_cache(&general.data_dir, general.store_cache_mib) {
            Ok(store) => break store,
            Err(crate::store::StoreError::Open {
                source: crate::store::OpenError::Locked(_),
                ..
            }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => {
                eprintln!("{e}\n(stop provisiond first: the store has one user at a time)");
                return ExitCode::FAILURE;
            }
        }
    };
    let checks = match store.check_indexes() {
        Ok(checks) => checks,
        Err(e) => {
            eprintln!("store check failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut broken = 0;
    for c in &checks {
        let state = if c.consistent { "ok" } else { "DIFFERS" };
        broken += usize::from(!c.consistent);
        println!(
            "{:<16} {state:<8} {} entries expected, {} found",
            c.tree, c.expected, c.found
        );
    }
    if broken == 0 {
        println!(
            "store {}: every index matches its records",
            store.path().display()
        );
        return ExitCode::SUCCESS;
    }
    if !repair {
        eprintln!("{broken} index(es) differ from their records: run `provisiond store check --repair` with the daemon stopped");
        return ExitCode::FAILURE;
    }
    let repaired = store
        .repair_indexes()
        .and_then(|rewritten| Ok((rewritten, store.check_indexes()?)));
    match repaired {
        Ok((rewritten, after)) if after.iter().all(|c| c.consistent) => {
            let entries = if rewritten == 1 { "entry" } else { "entries" };
            println!(
                "repaired: every index rebuilt from the records ({rewritten} {entries} written or removed)"
            );
            ExitCode::SUCCESS
        }
        Ok(_) => {
            eprintln!(
                "indexes still differ after the rebuild: the records themselves may be damaged"
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("repair failed: {e}");
            ExitCode::FAILURE
        }
    }
}
