//! `provisiond category|code|rollout|job|auto …`: the provisioning API over the admin socket.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{json, Map, Value};

use super::{cell, fields, finish, list, output, seg, table, Client, Result};
use crate::cli::{AutoAction, CategoryAction, CodeAction, JobAction, ProvArgs, RolloutAction};

/// `MODEL=VERSION:FILE` entries as the API's firmware map.
fn firmware(entries: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for entry in entries {
        let parsed = entry
            .split_once('=')
            .and_then(|(model, rest)| rest.split_once(':').map(|(v, f)| (model, v, f)));
        let Some((model, version, file)) = parsed else {
            return Err(format!("{entry:?}: expected MODEL=VERSION:FILE"));
        };
        out.insert(
            model.to_owned(),
            json!({ "version": version, "file": file }),
        );
    }
    Ok(out)
}

/// `provisiond category …`.
pub fn category(args: &ProvArgs<CategoryAction>) -> ExitCode {
    finish(category_inner(args))
}

fn category_inner(args: &ProvArgs<CategoryAction>) -> Result<()> {
    let api = &args.api;
    let client = Client::new(api, args.tenant.as_deref())?;
    match &args.action {
        CategoryAction::List { recurse } => {
            let answer = client.get(&format!("/prov_mgr/categories?recurse={recurse}"))?;
            output(api, &answer, |json| {
                let rows = list(json, "categories")
                    .iter()
                    .map(|c| {
                        vec![
                            cell(c.get("id")),
                            cell(c.get("tenant_uuid")),
                            cell(c.get("name")),
                            cell(c.get("provisioning")),
                            cell(c.get("config")),
                        ]
                    })
                    .collect();
                table(&["ID", "TENANT", "NAME", "PROVISIONING", "CONFIG"], rows);
            });
        }
        CategoryAction::Show { id } => {
            let id = category_id(&client, id)?;
            let answer = client.get(&format!("/prov_mgr/categories/{}", seg(&id)))?;
            output(api, &answer, |json| fields(&json["category"]));
        }
        CategoryAction::Create {
            name,
            config_id,
            description,
            provisioning,
            firmware: policy,
        } => {
            let body = json!({ "category": {
                "name": name,
                "config": config_id,
                "description": description,
                "provisioning": provisioning,
                "firmware": firmware(policy)?,
            }});
            let answer = client.post("/prov_mgr/categories", body)?;
            output(api, &answer, |json| {
                println!("category {} created", cell(json.get("id")))
            });
        }
        CategoryAction::Delete { id } => {
            let id = category_id(&client, id)?;
            let answer = client.delete(&format!("/prov_mgr/categories/{}", seg(&id)))?;
            output(api, &answer, |_| println!("category {id} deleted"));
        }
    }
    Ok(())
}

/// The id of the category named `name_or_id` (an id is kept as it is).
fn category_id(client: &Client, name_or_id: &str) -> Result<String> {
    let answer = client.get("/prov_mgr/categories")?;
    let found = list(&answer.json, "categories")
        .iter()
        .find(|c| c["name"] == name_or_id)
        .and_then(|c| c["id"].as_str())
        .map(str::to_owned);
    Ok(found.unwrap_or_else(|| name_or_id.to_owned()))
}

/// `provisiond code …`.
pub fn code(args: &ProvArgs<CodeAction>) -> ExitCode {
    finish(code_inner(args))
}

fn code_inner(args: &ProvArgs<CodeAction>) -> Result<()> {
    let api = &args.api;
    let client = Client::new(api, args.tenant.as_deref())?;
    match &args.action {
        CodeAction::Create {
            category,
            config_id,
            label,
        } => {
            let body = json!({ "code": {
                "category": category,
                "config": config_id,
                "label": label,
            }});
            let answer = client.post("/prov_mgr/codes", body)?;
            output(api, &answer, |json| {
                let code = &json["code"];
                println!(
                    "{}  (valid until {})",
                    cell(code.get("code")),
                    cell(code.get("expires_at"))
                );
            });
        }
        CodeAction::List { recurse } => {
            let answer = client.get(&format!("/prov_mgr/codes?recurse={recurse}"))?;
            output(api, &answer, |json| {
                let rows = list(json, "codes")
                    .iter()
                    .map(|c| {
                        vec![
                            cell(c.get("code")),
                            cell(c.get("tenant_uuid")),
                            cell(c.get("category")),
                            cell(c.get("config")),
                            cell(c.get("expires_at")),
                            cell(c.get("label")),
                        ]
                    })
                    .collect();
                table(
                    &["CODE", "TENANT", "CATEGORY", "CONFIG", "EXPIRES", "LABEL"],
                    rows,
                );
            });
        }
        CodeAction::Revoke { code } => {
            let answer = client.delete(&format!("/prov_mgr/codes/{}", seg(code)))?;
            output(api, &answer, |_| println!("code revoked"));
        }
        CodeAction::Redeem {
            code,
            mac,
            ip,
            device,
        } => {
            let mut body = Map::new();
            body.insert("code".into(), json!(code));
            match (mac, ip, device) {
                (Some(mac), None, None) => body.insert("mac".into(), json!(mac)),
                (None, Some(ip), None) => body.insert("ip".into(), json!(ip)),
                (None, None, Some(id)) => body.insert("device_id".into(), json!(id)),
                _ => return Err("name the phone with one of --mac, --ip, --device".into()),
            };
            let answer = client.post("/prov_mgr/redeem", Value::Object(body))?;
            output(api, &answer, |json| {
                println!(
                    "device {} now in tenant {}, category {}; a resync is queued",
                    cell(json["device"].get("id")),
                    cell(json.get("tenant_uuid")),
                    cell(json.get("category"))
                )
            });
        }
    }
    Ok(())
}

/// `LABEL` or `LABEL=CONFIG` entries.
fn entries(given: &[String]) -> Vec<Value> {
    given
        .iter()
        .map(|e| match e.split_once('=') {
            Some((label, config)) => json!({ "label": label, "config": config }),
            None => json!({ "label": e }),
        })
        .collect()
}

fn read_csv(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| format!("cannot read the standard input: {e}"))?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
    }
}

/// `provisiond rollout …`.
pub fn rollout(args: &ProvArgs<RolloutAction>) -> ExitCode {
    finish(rollout_inner(args))
}

fn rollout_rows(rollout: &Value) {
    let rows = list(rollout, "entries")
        .iter()
        .map(|e| {
            vec![
                cell(e.get("code")),
                cell(e.get("state")),
                cell(e.get("device_mac")),
                cell(e.get("registered_at")),
                cell(e.get("config")),
                cell(e.get("label")),
            ]
        })
        .collect();
    table(
        &["CODE", "STATE", "MAC", "REGISTERED", "CONFIG", "LABEL"],
        rows,
    );
}

fn rollout_inner(args: &ProvArgs<RolloutAction>) -> Result<()> {
    let api = &args.api;
    let client = Client::new(api, args.tenant.as_deref())?;
    match &args.action {
        RolloutAction::Create {
            category,
            csv,
            entry,
        } => {
            let body = match csv {
                Some(path) => json!({ "rollout": {
                    "category": category, "csv": read_csv(path)?,
                }}),
                None if entry.is_empty() => {
                    return Err("give the entries with --csv FILE or --entry LABEL[=CONFIG]".into())
                }
                None => json!({ "rollout": {
                    "category": category, "entries": entries(entry),
                }}),
            };
            let answer = client.post("/prov_mgr/rollouts", body)?;
            output(api, &answer, |json| {
                println!(
                    "rollout {} created, codes valid until {}",
                    cell(json.get("id")),
                    cell(json["rollout"].get("expires_at"))
                );
                rollout_rows(&json["rollout"]);
            });
        }
        RolloutAction::List => {
            let answer = client.get("/prov_mgr/rollouts")?;
            output(api, &answer, |json| {
                let rows = list(json, "rollouts")
                    .iter()
                    .map(|r| {
                        let mut states: BTreeMap<String, usize> = BTreeMap::new();
                        for e in list(r, "entries") {
                            *states.entry(cell(e.get("state"))).or_default() += 1;
                        }
                        let summary: Vec<String> =
                            states.iter().map(|(s, n)| format!("{n} {s}")).collect();
                        vec![
                            cell(r.get("id")),
                            cell(r.get("tenant_uuid")),
                            cell(r.get("category")),
                            cell(r.get("expires_at")),
                            summary.join(", "),
                        ]
                    })
                    .collect();
                table(&["ID", "TENANT", "CATEGORY", "EXPIRES", "ENTRIES"], rows);
            });
        }
        RolloutAction::Show { id } => {
            let answer = client.get(&format!("/prov_mgr/rollouts/{}", seg(id)))?;
            output(api, &answer, |json| rollout_rows(&json["rollout"]));
        }
        RolloutAction::Export { id, output: file } => {
            let answer = client.get(&format!("/prov_mgr/rollouts/{}.csv", seg(id)))?;
            match file {
                Some(path) => std::fs::write(path, &answer.text)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
                None => print!("{}", answer.text),
            }
        }
        RolloutAction::Delete { id } => {
            let answer = client.delete(&format!("/prov_mgr/rollouts/{}", seg(id)))?;
            output(api, &answer, |_| println!("rollout {id} deleted"));
        }
    }
    Ok(())
}

/// `KEY=VALUE` parameters: VALUE as JSON when it parses (`true`, `3`, `"x"`), else text.
fn params(given: &[String]) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    for p in given {
        let (key, value) = p
            .split_once('=')
            .ok_or_else(|| format!("{p:?}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
        out.insert(key.to_owned(), value);
    }
    Ok(out)
}

/// `provisiond job …`.
pub fn job(args: &ProvArgs<JobAction>) -> ExitCode {
    finish(job_inner(args))
}

fn job_inner(args: &ProvArgs<JobAction>) -> Result<()> {
    let api = &args.api;
    let client = Client::new(api, args.tenant.as_deref())?;
    let created = |answer: &super::Answer| {
        output(api, answer, |json| {
            println!("job {} created", cell(json.get("id")))
        })
    };
    match &args.action {
        JobAction::List => {
            let answer = client.get("/prov_mgr/jobs")?;
            output(api, &answer, |json| {
                let rows = list(json, "jobs")
                    .iter()
                    .map(|j| {
                        let what = match j["kind"].as_str() {
                            Some("firmware") => j["versions"].to_string(),
                            _ => format!("{} {}", cell(j.get("type")), j["params"]),
                        };
                        vec![
                            cell(j.get("id")),
                            cell(j.get("tenant_uuid")),
                            cell(j.get("category")),
                            cell(j.get("kind")),
                            what,
                        ]
                    })
                    .collect();
                table(&["ID", "TENANT", "CATEGORY", "KIND", "WHAT"], rows);
            });
        }
        JobAction::Firmware { category, versions } => {
            let versions = if versions.is_empty() {
                Value::Null
            } else {
                Value::Object(firmware(versions)?)
            };
            let body = json!({ "job": {
                "category": category, "kind": "firmware", "versions": versions,
            }});
            created(&client.post("/prov_mgr/jobs", body)?);
        }
        JobAction::Config {
            category,
            kind,
            params: given,
        } => {
            let body = json!({ "job": {
                "category": category, "kind": "config", "type": kind, "params": params(given)?,
            }});
            created(&client.post("/prov_mgr/jobs", body)?);
        }
        JobAction::Delete { id } => {
            let answer = client.delete(&format!("/prov_mgr/jobs/{}", seg(id)))?;
            output(api, &answer, |_| println!("job {id} deleted"));
        }
    }
    Ok(())
}

/// `provisiond auto …`.
pub fn auto(args: &ProvArgs<AutoAction>) -> ExitCode {
    finish(auto_inner(args))
}

fn auto_inner(args: &ProvArgs<AutoAction>) -> Result<()> {
    let api = &args.api;
    let client = Client::new(api, args.tenant.as_deref())?;
    let answer = match &args.action {
        AutoAction::Show => client.get("/prov_mgr/auto")?,
        AutoAction::Set { token, generate } => client.put(
            "/prov_mgr/auto",
            json!({ "auto": { "token": token, "generate": generate } }),
        )?,
        AutoAction::Off => client.put("/prov_mgr/auto", json!({ "auto": { "token": null } }))?,
    };
    output(api, &answer, |json| {
        let auto = &json["auto"];
        if auto["enabled"] != json!(true) {
            println!(
                "automatic provisioning is off for tenant {}",
                cell(auto.get("tenant_uuid"))
            );
            return;
        }
        println!(
            "automatic provisioning is on for tenant {} (token {})",
            cell(auto.get("tenant_uuid")),
            cell(auto.get("token"))
        );
        for url in list(auto, "urls") {
            println!("  {}: {}", cell(url.get("category")), cell(url.get("url")));
        }
    });
    Ok(())
}
