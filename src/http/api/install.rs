//! `/pg_mgr/install/…`: the plugin repository (wazo-provd's install service of the plugin
//! manager); the rules are `crate::manage::plugins`. Master tenant only: plugins are the
//! server's.

use std::sync::Arc;

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::Caller;
use super::{reply, ApiResult, ApiState, Body};
use crate::manage;

/// `{"id": …}` of install, upgrade and uninstall; `force` for uninstall (provisiond only).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PackageBody {
    id: String,
    #[serde(default)]
    force: bool,
}

fn master(caller: &Caller, acl: &str) -> ApiResult<()> {
    caller.require(acl)?;
    caller.require_master()?;
    Ok(())
}

/// wazo-provd's capability map: `"<vendor>, <model>, <version>"` to the features (none known).
fn capabilities<'a>(caps: impl Iterator<Item = (&'a str, &'a str, &'a str)>) -> Value {
    Value::Object(
        caps.map(|(vendor, model, version)| (format!("{vendor}, {model}, {version}"), json!({})))
            .collect(),
    )
}

pub(super) async fn links(OriginalUri(uri): OriginalUri, caller: Caller) -> ApiResult {
    master(&caller, "provd.pg_mgr.install.read")?;
    Ok(super::links(
        uri.path(),
        &[
            ("srv.install.install", "install"),
            ("srv.install.uninstall", "uninstall"),
            ("srv.install.installed", "installed"),
            ("srv.install.installable", "installable"),
            ("srv.install.upgrade", "upgrade"),
            ("srv.install.update", "update"),
        ],
    ))
}

pub(super) async fn update(State(state): State<Arc<ApiState>>, caller: Caller) -> ApiResult {
    master(&caller, "provd.pg_mgr.install.update.create")?;
    let op = manage::plugins::start_update(&state.repo, &state.store, &state.oips);
    Ok(super::oip_started(&op))
}

pub(super) async fn installable(State(state): State<Arc<ApiState>>, caller: Caller) -> ApiResult {
    master(&caller, "provd.pg_mgr.install.installable.read")?;
    let list = super::blocking(move || Ok(state.repo.installable())).await?;
    let pkgs: Map<String, Value> = list
        .into_iter()
        .map(|p| {
            let e = p.entry;
            let caps = capabilities(
                e.capabilities
                    .iter()
                    .map(|c| (c.vendor.as_str(), c.model.as_str(), c.version.as_str())),
            );
            let body = json!({
                "version": e.version,
                "description": e.description,
                "capabilities": caps,
                "dsize": e.size,
                "sha256": e.sha256,
                "installed_version": p.installed,
            });
            (e.name, body)
        })
        .collect();
    Ok(reply(StatusCode::OK, json!({ "pkgs": pkgs })))
}

pub(super) async fn installed(State(state): State<Arc<ApiState>>, caller: Caller) -> ApiResult {
    master(&caller, "provd.pg_mgr.install.installed.read")?;
    let list = super::blocking(move || Ok(state.repo.installed(&state.files.plugins()))).await?;
    let pkgs: Map<String, Value> = list
        .into_iter()
        .map(|p| {
            let caps = capabilities(
                p.models
                    .iter()
                    .map(|m| (p.vendor.as_str(), m.as_str(), "*")),
            );
            let body = json!({
                "version": p.version,
                "description": p.description,
                "capabilities": caps,
                "origin": p.origin.as_str(),
                "repository_version": p.repository_version,
            });
            (p.name, body)
        })
        .collect();
    Ok(reply(StatusCode::OK, json!({ "pkgs": pkgs })))
}

async fn install_or_upgrade(state: Arc<ApiState>, name: String, upgrade: bool) -> ApiResult {
    let op = super::blocking(move || {
        Ok(manage::plugins::start_install(
            &state.repo,
            &state.store,
            &state.files,
            &state.plugin_roots,
            &state.oips,
            &name,
            upgrade,
        )?)
    })
    .await?;
    Ok(super::oip_started(&op))
}

pub(super) async fn install(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<PackageBody>,
) -> ApiResult {
    master(&caller, "provd.pg_mgr.install.install.create")?;
    install_or_upgrade(state, body.id, false).await
}

pub(super) async fn upgrade(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<PackageBody>,
) -> ApiResult {
    master(&caller, "provd.pg_mgr.install.upgrade.create")?;
    install_or_upgrade(state, body.id, true).await
}

pub(super) async fn uninstall(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Body(body): Body<PackageBody>,
) -> ApiResult {
    master(&caller, "provd.pg_mgr.install.uninstall.create")?;
    state
        .repo
        .uninstall(
            &state.store,
            &state.files,
            &state.plugin_roots,
            &body.id,
            body.force,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
