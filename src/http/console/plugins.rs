//! Plugins: those in use, those of the repository's index (after an update), install, upgrade
//! and removal; per plugin its vendor packages. Plugins are the server's: the default tenant
//! only, as the API's `pg_mgr`; reading for every role, changing for admins. Long work runs as
//! an operation whose page refreshes itself until it ends (a meta refresh: no JavaScript).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{blocking, see_other, Confirm, ConsoleError, ConsoleState, Form, SignedIn};
use crate::manage::{self, oip::OipState, packages::Mode};
use crate::model::Role;
use crate::plugins::Plugin;

/// The master tenant's sessions only (403 for the others), as `pg_mgr`.
fn master(me: &SignedIn) -> Result<(), ConsoleError> {
    Ok(me.scope.require_master()?)
}

async fn list_page(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    refused: Option<ConsoleError>,
) -> Result<Response, ConsoleError> {
    master(me)?;
    let st = Arc::clone(state);
    let (installed, installable, counts) = blocking(move || {
        let installed = st.api.repo.installed(&st.api.files.plugins());
        let installable = st.api.repo.installable();
        let counts = manage::plugins::device_counts(&st.api.store)?;
        Ok((installed, installable, counts))
    })
    .await?;
    let offered: BTreeMap<&str, &str> = installable
        .iter()
        .map(|p| (p.entry.name.as_str(), p.entry.version.as_str()))
        .collect();
    let installed: Vec<Value> = installed
        .iter()
        .map(|p| {
            let upgrade = match (&p.repository_version, offered.get(p.name.as_str())) {
                (Some(have), Some(offer)) => have != offer,
                _ => false,
            };
            json!({ "name": p.name, "version": p.version, "origin": p.origin.as_str(),
                "description": p.description, "vendor": p.vendor,
                "devices": counts.get(&p.name).copied().unwrap_or(0),
                "repository_version": p.repository_version,
                "upgrade": upgrade, "removable": p.repository_version.is_some() })
        })
        .collect();
    let installable: Vec<Value> = installable
        .iter()
        .map(|p| {
            json!({ "name": p.entry.name, "version": p.entry.version,
                "description": p.entry.description, "size": p.entry.size,
                "installed": p.installed,
                "upgrade": p.installed.as_ref().is_some_and(|v| *v != p.entry.version) })
        })
        .collect();
    state.render_refused(
        "plugins.html",
        me,
        json!({ "installed": installed, "installable": installable }),
        refused,
    )
}

pub(super) async fn list(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    list_page(&state, &me, None).await
}

/// The page that follows operation `op`, coming back to `back`.
fn operation_url(op: u64, back: &str) -> String {
    format!(
        "/console/operations/{op}?back={}",
        super::devices::seg(back)
    )
}

/// `POST /console/plugins`: fetches the repository's index (admin).
pub(super) async fn update(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Result<Response, ConsoleError> {
    master(&form.me)?;
    form.me.require(Role::Admin)?;
    let api = &state.api;
    let op = manage::plugins::start_update(&api.repo, &api.store, &api.oips);
    Ok(see_other(&operation_url(op.id(), "/console/plugins")))
}

/// `POST /console/plugins/{name}/{install|upgrade|remove}` (admin). Removal asks first, and
/// again with the device count (and `force`) when devices use the plugin.
pub(super) async fn action(
    State(state): State<Arc<ConsoleState>>,
    Path((name, action)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    master(&form.me)?;
    form.me.require(Role::Admin)?;
    let st = Arc::clone(&state);
    let started = match action.as_str() {
        "install" | "upgrade" => {
            let upgrade = action == "upgrade";
            let plugin = name.clone();
            blocking(move || {
                let api = &st.api;
                Ok(manage::plugins::start_install(
                    &api.repo,
                    &api.store,
                    &api.files,
                    &api.plugin_roots,
                    &api.oips,
                    &plugin,
                    upgrade,
                )?)
            })
            .await
        }
        "remove" => return remove(&state, &name, form).await,
        _ => return Err(ConsoleError::not_found()),
    };
    match started {
        Ok(op) => Ok(see_other(&operation_url(op.id(), "/console/plugins"))),
        Err(e) if e.status.is_client_error() => list_page(&state, &form.me, Some(e)).await,
        Err(e) => Err(e),
    }
}

async fn remove(
    state: &Arc<ConsoleState>,
    name: &str,
    form: Form,
) -> Result<Response, ConsoleError> {
    if !form.confirmed() {
        let st = Arc::clone(state);
        let counts = blocking(move || Ok(manage::plugins::device_counts(&st.api.store)?)).await?;
        let devices = counts.get(name).copied().unwrap_or(0);
        let text = if devices > 0 {
            format!("{devices} device(s) use this plugin: they get no files of it once it is removed (a built-in plugin of the same name takes over, if there is one). Tick \"remove anyway\" to do it.")
        } else {
            "No device uses it. A built-in plugin of the same name, if there is one, takes over."
                .to_owned()
        };
        let ask = Confirm {
            title: format!("Remove plugin {name}?"),
            text,
            action: format!("/console/plugins/{}/remove", super::devices::seg(name)),
            force: devices > 0,
            button: "Yes, remove it",
            cancel: "/console/plugins".into(),
        };
        return state.confirm(&form.me, ask);
    }
    let force = form.get("force") == Some("on");
    let api = &state.api;
    let removed = api
        .repo
        .uninstall(&api.store, &api.files, &api.plugin_roots, name, force)
        .await
        .map_err(ConsoleError::from);
    match removed {
        Ok(()) => Ok(see_other("/console/plugins")),
        Err(e) if e.status.is_client_error() => list_page(state, &form.me, Some(e)).await,
        Err(e) => Err(e),
    }
}

fn plugin_of(state: &ConsoleState, name: &str) -> Result<Arc<Plugin>, ConsoleError> {
    state
        .api
        .files
        .plugins()
        .get(name)
        .cloned()
        .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, format!("No plugin {name:?}.")))
}

async fn plugin_page(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    name: &str,
    refused: Option<ConsoleError>,
) -> Result<Response, ConsoleError> {
    master(me)?;
    let plugin = plugin_of(state, name)?;
    let declared = manage::packages::installable(&plugin);
    let installed = match &state.api.packages {
        Some(service) => {
            let (service, name) = (Arc::clone(service), name.to_owned());
            Some(blocking(move || Ok(manage::packages::installed(&service, &name))).await?)
        }
        None => None,
    };
    let have = |id: &str| {
        installed
            .as_ref()
            .and_then(|i| i.get(id))
            .and_then(|p| p["version"].as_str())
            .map(str::to_owned)
    };
    let mut packages: Vec<Value> = declared
        .iter()
        .map(|(id, p)| {
            let current = have(id);
            let upgrade = current
                .as_deref()
                .is_some_and(|v| Some(v) != p["version"].as_str());
            json!({ "id": id, "version": p["version"], "description": p["description"],
                "size": p["dsize"], "licence_url": web_link(&p["licence_url"]),
                "licence_required": p["licence_acceptance_required"],
                "installed": current, "upgrade": upgrade, "declared": true })
        })
        .collect();
    // Installed packages that the plugin no longer declares can still be removed.
    for (id, p) in installed.iter().flatten() {
        if !declared.contains_key(id) {
            packages.push(json!({ "id": id, "version": Value::Null,
                "description": p["description"], "installed": p["version"],
                "upgrade": false, "declared": false }));
        }
    }
    state.render_refused(
        "plugin.html",
        me,
        json!({ "plugin": { "name": plugin.name, "version": plugin.version,
                "vendor": plugin.vendor, "models": plugin.models,
                "description": plugin.description, "origin": plugin.origin.as_str() },
            "packages": packages, "service": installed.is_some() }),
        refused,
    )
}

/// `GET /console/plugins/{name}`: one plugin and its packages.
pub(super) async fn show(
    State(state): State<Arc<ConsoleState>>,
    Path(name): Path<String>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    plugin_page(&state, &me, &name, None).await
}

/// `POST /console/plugins/{name}/packages/{id}/{install|upgrade|uninstall}` (admin).
/// Installing a package under a licence that must be accepted needs `accept_licence`; removal
/// asks first.
pub(super) async fn package_action(
    State(state): State<Arc<ConsoleState>>,
    Path((name, id, action)): Path<(String, String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    master(&form.me)?;
    form.me.require(Role::Admin)?;
    let plugin = plugin_of(&state, &name)?;
    let service = state.api.packages.clone().ok_or_else(|| {
        ConsoleError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Vendor packages are not available on this server.",
        )
    })?;
    let back = format!("/console/plugins/{}", super::devices::seg(&name));
    let done: Result<Response, ConsoleError> = match action.as_str() {
        "install" | "upgrade" => {
            let mode = if action == "install" {
                Mode::Install
            } else {
                Mode::Upgrade
            };
            let accept = form.get(manage::packages::ACCEPT_FIELD) == Some("on");
            manage::packages::start(
                &service,
                &state.api.store,
                &state.api.oips,
                plugin,
                &id,
                accept,
                mode,
            )
            .map(|op| see_other(&operation_url(op.id(), &back)))
            .map_err(ConsoleError::from)
        }
        "uninstall" => {
            if !form.confirmed() {
                let ask = Confirm {
                    title: format!("Uninstall package {id} of {name}?"),
                    text: "Its files are removed: phones no longer get them.".into(),
                    action: format!("{back}/packages/{}/uninstall", super::devices::seg(&id)),
                    force: false,
                    button: "Yes, uninstall it",
                    cancel: back,
                };
                return state.confirm(&form.me, ask);
            }
            manage::packages::uninstall(&service, &name, &id)
                .await
                .map(|removed| {
                    tracing::info!(plugin = %name, package = %removed.id, "package uninstalled through the console");
                    see_other(&back)
                })
                .map_err(ConsoleError::from)
        }
        _ => return Err(ConsoleError::not_found()),
    };
    match done {
        Err(e) if e.status.is_client_error() => plugin_page(&state, &form.me, &name, Some(e)).await,
        other => other,
    }
}

#[derive(serde::Deserialize)]
pub(super) struct Back {
    #[serde(default)]
    back: Option<String>,
}

/// `GET /console/operations/{op}`: an operation's state; refreshes itself while it runs.
pub(super) async fn operation(
    State(state): State<Arc<ConsoleState>>,
    Path(op): Path<String>,
    Query(query): Query<Back>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    master(&me)?;
    let oip = op
        .parse::<u64>()
        .ok()
        .and_then(|n| state.api.oips.get(n))
        .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, "No such operation."))?;
    // Only a page of the plugins: never a link elsewhere.
    let back = query
        .back
        .filter(|b| {
            (b == "/console/plugins" || b.starts_with("/console/plugins/"))
                && !b.contains("//")
                && !b.contains('\\')
        })
        .unwrap_or_else(|| "/console/plugins".to_owned());
    let running = matches!(oip.state, OipState::Waiting | OipState::Progress);
    let subs: Vec<Value> = oip
        .subs
        .iter()
        .map(|s| json!({ "label": s.label, "state": s.state.as_str(), "current": s.current, "end": s.end }))
        .collect();
    state.render(
        "operation.html",
        Some(&me),
        json!({ "id": op, "label": oip.label, "state": oip.state.as_str(), "running": running,
            "current": oip.current, "end": oip.end, "error": oip.error, "subs": subs,
            "status": oip.status(), "back": back }),
    )
}

/// A link from package metadata, kept only when it parses as an http or https URL: a
/// `javascript:` or `data:` URL in an `href` would run in the console's origin.
fn web_link(value: &Value) -> Option<String> {
    let url = url::Url::parse(value.as_str()?).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_links_reach_an_href() {
        let link = |s: &str| web_link(&Value::String(s.into()));
        assert_eq!(
            link("https://example.com/eula"),
            Some("https://example.com/eula".into())
        );
        assert!(link("http://example.com/").is_some());
        assert_eq!(link("javascript:alert(1)"), None);
        assert_eq!(link("data:text/html,<b>x</b>"), None);
        assert_eq!(link("/relative"), None);
        assert_eq!(web_link(&Value::Null), None);
    }
}
