//! `provisiond plugin update|search|install|upgrade|remove`: the plugin repository through
//! the daemon's `/pg_mgr/install/…` routes (docs/plugin-repository.md).

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use super::{cell, finish, Answer, Client, Result};
use crate::cli::{ApiArgs, PluginAction, PluginArgs};

/// Time between two looks at an operation.
const POLL: Duration = Duration::from_millis(200);

/// `provisiond plugin …` for the subcommands that ask the daemon.
pub fn plugin_remote(args: &PluginArgs) -> ExitCode {
    finish(run(args))
}

fn run(args: &PluginArgs) -> Result<()> {
    let api = ApiArgs {
        source: args.source.clone(),
        socket: args.socket.clone(),
        json: false,
    };
    let client = Client::new(&api, None)?;
    match &args.action {
        PluginAction::Update => {
            let started = client.post("/pg_mgr/install/update", json!({}))?;
            follow(&client, &started)?;
            let list = client.get("/pg_mgr/install/installable")?;
            let count = list.json["pkgs"].as_object().map_or(0, |m| m.len());
            println!("plugin index updated: {count} plugin(s) available");
        }
        PluginAction::Search { text } => {
            let list = client.get("/pg_mgr/install/installable")?;
            let needle = text.as_deref().unwrap_or("").to_lowercase();
            println!(
                "{:<14} {:<10} {:<10} DESCRIPTION",
                "NAME", "VERSION", "INSTALLED"
            );
            let empty = serde_json::Map::new();
            for (name, p) in list.json["pkgs"].as_object().unwrap_or(&empty) {
                let description = p["description"].as_str().unwrap_or("");
                if !name.contains(&needle) && !description.to_lowercase().contains(&needle) {
                    continue;
                }
                println!(
                    "{name:<14} {:<10} {:<10} {description}",
                    cell(p.get("version")),
                    cell(p.get("installed_version"))
                );
            }
        }
        PluginAction::Install { name } | PluginAction::Upgrade { name } => {
            let what = if matches!(args.action, PluginAction::Install { .. }) {
                "install"
            } else {
                "upgrade"
            };
            let started = client.post(&format!("/pg_mgr/install/{what}"), json!({ "id": name }))?;
            follow(&client, &started)?;
            let installed = client.get("/pg_mgr/install/installed")?;
            let p = &installed.json["pkgs"][name.as_str()];
            println!(
                "{name}: repository version {}, in use {} ({})",
                cell(p.get("repository_version")),
                cell(p.get("version")),
                cell(p.get("origin"))
            );
        }
        PluginAction::Remove { name, force } => {
            client.post(
                "/pg_mgr/install/uninstall",
                json!({ "id": name, "force": force }),
            )?;
            println!("{name} removed");
        }
        PluginAction::List | PluginAction::Show { .. } | PluginAction::Packages(_) => {
            return Err("list and show read the plugin directories themselves".into())
        }
    }
    Ok(())
}

/// Follows the operation that `started` names (its `Location`) until it ends, showing its
/// progress on stderr; forgets it then. An operation that failed is an error with its reason.
fn follow(client: &Client, started: &Answer) -> Result<()> {
    let location = started
        .location
        .as_deref()
        .ok_or("the daemon started no operation (no Location)")?;
    // `/0.2/pg_mgr/operations/<n>`: the client puts its own base in front.
    let path = location.strip_prefix("/0.2").unwrap_or(location);
    let mut last = String::new();
    loop {
        let answer = client.get(path)?;
        let status = answer.json["status"].as_str().unwrap_or("").to_owned();
        let state = status
            .split_once('|')
            .map_or(status.as_str(), |(_, s)| s)
            .split([';', '('])
            .next()
            .unwrap_or("");
        if status != last {
            eprintln!("{status}");
            last = status.clone();
        }
        match state {
            "success" => {
                let _ = client.delete(path);
                return Ok(());
            }
            "fail" => {
                let _ = client.delete(path);
                let reason = answer.json.get("error").and_then(Value::as_str);
                return Err(reason.unwrap_or("the operation failed").to_owned());
            }
            _ => std::thread::sleep(POLL),
        }
    }
}
