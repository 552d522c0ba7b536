//! `/pg_mgr/plugins/{id}/install/…`: a plugin's vendor packages (firmware, language files),
//! wazo-provd's per-plugin install service. Packages are the server's: master tenant only.

use std::sync::Arc;

use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::auth::Caller;
use super::{oip_started, reply, ApiError, ApiResult, ApiState, Body, PathParam};
use crate::manage::packages::{self, Mode, Packages};
use crate::plugins::Plugin;

/// `{"id": …}` of install, upgrade and uninstall; install and upgrade also take
/// `accept_licence` (provisiond's addition: a licence that needs acceptance is accepted).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PackageBody {
    id: String,
    #[serde(default)]
    accept_licence: bool,
}

fn service(state: &ApiState) -> Result<&Arc<Packages>, ApiError> {
    state.packages.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "vendor packages are not available on this server",
        )
    })
}

fn plugin(state: &ApiState, id: &str) -> Result<Arc<Plugin>, ApiError> {
    state
        .files
        .plugins()
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no plugin {id:?}")))
}

/// `GET /pg_mgr/plugins/{id}/install`: the links of the plugin's install service.
pub(super) async fn links(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    OriginalUri(uri): OriginalUri,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.pg_mgr.plugins.{id}.install.read"))?;
    caller.require_master()?;
    plugin(&state, &id)?;
    Ok(super::links(
        uri.path(),
        &[
            ("srv.install.install", "install"),
            ("srv.install.uninstall", "uninstall"),
            ("srv.install.installed", "installed"),
            ("srv.install.installable", "installable"),
            ("srv.install.upgrade", "upgrade"),
        ],
    ))
}

/// `GET /pg_mgr/plugins/{id}/install/installable`: `{"pkgs": {id: {...}}}`.
pub(super) async fn installable(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!(
        "provd.pg_mgr.plugins.{id}.install.installable.read"
    ))?;
    caller.require_master()?;
    let plugin = plugin(&state, &id)?;
    Ok(reply(
        StatusCode::OK,
        json!({ "pkgs": packages::installable(&plugin) }),
    ))
}

/// `GET /pg_mgr/plugins/{id}/install/installed`: `{"pkgs": {id: {...}}}`.
pub(super) async fn installed(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
) -> ApiResult {
    caller.require(&format!("provd.pg_mgr.plugins.{id}.install.installed.read"))?;
    caller.require_master()?;
    let service = service(&state)?;
    let listed = packages::installed(service, &id);
    if listed.is_empty() {
        plugin(&state, &id)?;
    }
    Ok(reply(StatusCode::OK, json!({ "pkgs": listed })))
}

async fn start(state: &ApiState, id: &str, body: PackageBody, mode: Mode) -> ApiResult {
    let service = service(state)?;
    let plugin = plugin(state, id)?;
    let handle = packages::start(
        service,
        &state.store,
        &state.oips,
        plugin,
        &body.id,
        body.accept_licence,
        mode,
    )?;
    Ok(oip_started(&handle))
}

/// `POST /pg_mgr/plugins/{id}/install/install {"id"}`: an operation (201 + `Location`).
pub(super) async fn install(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
    Body(body): Body<PackageBody>,
) -> ApiResult {
    caller.require(&format!("provd.pg_mgr.plugins.{id}.install.install.create"))?;
    caller.require_master()?;
    start(&state, &id, body, Mode::Install).await
}

/// `POST /pg_mgr/plugins/{id}/install/upgrade {"id"}`: an operation (201 + `Location`).
pub(super) async fn upgrade(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
    Body(body): Body<PackageBody>,
) -> ApiResult {
    caller.require(&format!("provd.pg_mgr.plugins.{id}.install.upgrade.create"))?;
    caller.require_master()?;
    start(&state, &id, body, Mode::Upgrade).await
}

/// `POST /pg_mgr/plugins/{id}/install/uninstall {"id"}`: 204 once the files are gone.
pub(super) async fn uninstall(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    PathParam(id): PathParam,
    Body(body): Body<PackageBody>,
) -> ApiResult {
    caller.require(&format!(
        "provd.pg_mgr.plugins.{id}.install.uninstall.create"
    ))?;
    caller.require_master()?;
    let service = service(&state)?;
    let removed = packages::uninstall(service, &id, &body.id).await?;
    tracing::info!(plugin = %id, package = %removed.id, version = %removed.version, "package uninstalled through the API");
    Ok(StatusCode::NO_CONTENT.into_response())
}
