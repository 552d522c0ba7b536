//! `provisiond plugin packages PLUGIN …`: a plugin's vendor packages over the admin socket.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::{json, Value};

use super::{cell, finish, seg, table, Client, Result};
use crate::cli::{ApiArgs, ConfigArgs, PackagesArgs};

/// Pause between two looks at a running operation.
const POLL: Duration = Duration::from_millis(250);

/// `provisiond plugin packages …`.
pub fn packages(source: &ConfigArgs, args: &PackagesArgs) -> ExitCode {
    finish(packages_inner(source, args))
}

fn packages_inner(source: &ConfigArgs, args: &PackagesArgs) -> Result<()> {
    let api = ApiArgs {
        source: source.clone(),
        socket: args.socket.clone(),
        json: args.json,
    };
    let client = Client::new(&api, None)?;
    let base = format!("/pg_mgr/plugins/{}/install", seg(&args.plugin));
    let change = [
        ("install", &args.install),
        ("upgrade", &args.upgrade),
        ("uninstall", &args.remove),
    ]
    .into_iter()
    .find_map(|(verb, id)| id.as_ref().map(|id| (verb, id)));
    let Some((verb, id)) = change else {
        return list(&client, &api, &base);
    };
    let mut body = json!({ "id": id });
    if args.accept_licence {
        body[crate::manage::packages::ACCEPT_FIELD] = json!(true);
    }
    let answer = client.post(&format!("{base}/{verb}"), body)?;
    if verb == "uninstall" {
        println!("package {id} of plugin {} removed", args.plugin);
        return Ok(());
    }
    let location = answer
        .location
        .ok_or("the daemon started no operation (no Location in its answer)")?;
    let path = location
        .strip_prefix("/0.2")
        .ok_or_else(|| format!("unexpected operation location {location:?}"))?;
    let status = follow(&client, path)?;
    client.delete(path)?;
    if api.json {
        println!("{status}");
    }
    let installed = client.get(&format!("{base}/installed"))?;
    let version = cell(installed.json["pkgs"][id.as_str()].get("version"));
    println!("package {id} {version} of plugin {} installed", args.plugin);
    Ok(())
}

/// Waits for the operation at `path` to end; its last status, or its error.
fn follow(client: &Client, path: &str) -> Result<Value> {
    let mut shown = String::new();
    loop {
        let answer = client.get(path)?;
        let status = answer.json["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if status != shown {
            eprintln!("{status}");
            shown = status.clone();
        }
        let state = status
            .split_once('|')
            .map_or(status.as_str(), |(_, rest)| rest);
        if state.starts_with("success") {
            return Ok(answer.json);
        }
        if state.starts_with("fail") {
            let _ = client.delete(path);
            let error = answer.json["error"].as_str().unwrap_or("no reason given");
            return Err(error.to_owned());
        }
        std::thread::sleep(POLL);
    }
}

/// The declared packages with what is installed of each.
fn list(client: &Client, api: &ApiArgs, base: &str) -> Result<()> {
    let installable = client.get(&format!("{base}/installable"))?;
    let installed = client.get(&format!("{base}/installed"))?;
    if api.json {
        println!(
            "{}",
            json!({ "installable": installable.json["pkgs"], "installed": installed.json["pkgs"] })
        );
        return Ok(());
    }
    let mut ids: Vec<&String> = Vec::new();
    for answer in [&installable, &installed] {
        if let Some(pkgs) = answer.json["pkgs"].as_object() {
            ids.extend(pkgs.keys());
        }
    }
    ids.sort();
    ids.dedup();
    let rows = ids
        .into_iter()
        .map(|id| {
            let declared = installable.json["pkgs"].get(id.as_str());
            let present = installed.json["pkgs"].get(id.as_str());
            let licence = match declared {
                Some(d) if d["licence_acceptance_required"] == json!(true) => {
                    format!("must accept {}", cell(d.get("licence_url")))
                }
                Some(d) => cell(d.get("licence_url")),
                None => "-".to_owned(),
            };
            vec![
                id.clone(),
                declared.map_or("-".into(), |d| cell(d.get("version"))),
                present.map_or("-".into(), |p| cell(p.get("version"))),
                declared.map_or("-".into(), |d| cell(d.get("dsize"))),
                licence,
                declared
                    .or(present)
                    .map_or(String::new(), |d| cell(d.get("description"))),
            ]
        })
        .collect();
    table(
        &[
            "PACKAGE",
            "VERSION",
            "INSTALLED",
            "SIZE",
            "LICENCE",
            "DESCRIPTION",
        ],
        rows,
    );
    Ok(())
}
