//! Automatic provisioning: the tenant's token (generated or turned off by admins), and the
//! URL of each provisioning category with its DHCP option 66 and 160 settings.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde_json::json;

use super::{blocking, see_other, ConsoleError, ConsoleState, Form, SignedIn};
use crate::manage;
use crate::model::Role;

pub(super) async fn show(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(&state);
    let scope = me.scope.clone();
    let tenant_id = me.session.tenant.clone();
    let (tenant, categories) = blocking(move || {
        let tenant = manage::tenants::get(&st.api.store, &scope, &tenant_id)?;
        let categories = manage::categories::list(&st.api.store, &scope, false)?;
        Ok((tenant, categories))
    })
    .await?;
    let urls = manage::auto::urls(state.api.base_url.as_ref(), &tenant, &categories);
    state.render(
        "auto.html",
        Some(&me),
        json!({ "enabled": tenant.auto_token.is_some(), "token": tenant.auto_token,
            "urls": urls, "base_url_set": state.api.base_url.is_some() }),
    )
}

pub(super) async fn update(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Admin)?;
    let generate = match form.get("action") {
        Some("generate") => true,
        Some("disable") => false,
        _ => {
            return Err(ConsoleError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "Unknown action: generate or disable.",
            ))
        }
    };
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    blocking(move || {
        let token = if generate {
            Some(manage::auto::random_token()?)
        } else {
            None
        };
        manage::auto::set_token(&st.api.store, &scope, token)?;
        Ok(())
    })
    .await?;
    Ok(see_other("/console/auto"))
}
