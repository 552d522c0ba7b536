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

/// `provisiond plugin …`.
pub fn plugin(args: &PluginArgs) -> ExitCode {
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
                "{:<14} {:<10} {:<8} {:<12} {:<24} MODELS",
                "NAME", "VERSION", "ORIGIN", "VENDOR", "FROM"
            );
            for p in set.iter() {
                println!(
                    "{:<14} {:<10} {:<8} {:<12} {:<24} {}",
                    p.name,
                    p.version,
                    p.origin.as_str(),
                    p.vendor,
                    p.location().display(),
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
