//! Tenants: the session's subtree, a child tenant made under one of them, deletion after a
//! confirmation page (refused, with the store's reason, while the tenant has devices, configs
//! or children), and each tenant's provisioning key (`url_key`). Reading for every role (keys
//! themselves for admins only: they open the tenant's files), changes for admins, through
//! `manage::tenants` as the API's `/tenants` and `/configure/provisioning_key`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{json, Value};

use super::{blocking, see_other, Confirm, ConsoleError, ConsoleState, Form, SignedIn};
use crate::manage::{self, tenants::NewTenant, Scope};
use crate::model::{self, Role};

/// Characters of a generated provisioning key.
const GENERATED_KEY_CHARS: usize = 32;

/// What the create form had, shown again when it is refused.
#[derive(Default)]
struct Typed {
    id: String,
    name: String,
    parent: String,
}

async fn page(
    state: &Arc<ConsoleState>,
    me: &SignedIn,
    typed: Typed,
    refused: Option<ConsoleError>,
) -> Result<Response, ConsoleError> {
    let st = Arc::clone(state);
    let scope = me.scope.clone();
    let tenants = blocking(move || Ok(manage::tenants::list(&st.api.store, &scope)?)).await?;
    let admin = me.session.role >= Role::Admin;
    let items: Vec<Value> = tenants
        .iter()
        .map(|t| {
            // Indented by depth below the session's tenant, so that the list reads as a tree.
            let depth = me
                .scope
                .tree()
                .ancestors(&t.id)
                .len()
                .saturating_sub(me.scope.tree().ancestors(me.scope.tenant()).len());
            json!({ "id": t.id, "name": t.name, "parent": t.parent, "depth": depth,
                "default_config": t.default_config, "has_key": t.provisioning_key.is_some(),
                "key": if admin { t.provisioning_key.clone() } else { None },
                "own": t.id == me.scope.home() })
        })
        .collect();
    let parent = if typed.parent.is_empty() {
        me.scope.tenant().to_owned()
    } else {
        typed.parent
    };
    state.render_refused(
        "tenants.html",
        me,
        json!({ "tenants": items,
            "typed": { "id": typed.id, "name": typed.name, "parent": parent } }),
        refused,
    )
}

pub(super) async fn list(
    State(state): State<Arc<ConsoleState>>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    page(&state, &me, Typed::default(), None).await
}

/// `POST /console/tenants`: a tenant below one of the subtree (admin).
pub(super) async fn create(
    State(state): State<Arc<ConsoleState>>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Admin)?;
    let typed = Typed {
        id: form.get("id").unwrap_or("").to_owned(),
        name: form.get("name").unwrap_or("").to_owned(),
        parent: form.get("parent").unwrap_or("").to_owned(),
    };
    let id = if typed.id.is_empty() {
        model::new_id()
    } else {
        typed.id.clone()
    };
    let new = NewTenant {
        id,
        name: Some(typed.name.clone()).filter(|n| !n.is_empty()),
        parent: Some(typed.parent.clone()).filter(|p| !p.is_empty()),
        default_config: None,
    };
    let st = Arc::clone(&state);
    let scope = form.me.scope.clone();
    let created = blocking(move || Ok(manage::tenants::create(&st.api.store, &scope, new)?)).await;
    match created {
        Ok(_) => Ok(see_other("/console/tenants")),
        Err(e) if e.status.is_client_error() => page(&state, &form.me, typed, Some(e)).await,
        Err(e) => Err(e),
    }
}

/// `POST /console/tenants/{id}/{delete|key}` (admin): deletion after a confirmation page; the
/// provisioning key set, generated or removed.
pub(super) async fn action(
    State(state): State<Arc<ConsoleState>>,
    Path((id, action)): Path<(String, String)>,
    form: Form,
) -> Result<Response, ConsoleError> {
    form.me.require(Role::Admin)?;
    let st = Arc::clone(&state);
    let done = match action.as_str() {
        "delete" => {
            if !form.confirmed() {
                // Nothing is said of a tenant outside the subtree, not even that it exists.
                let (st, scope, tenant) = (Arc::clone(&state), form.me.scope.clone(), id.clone());
                blocking(move || Ok(manage::tenants::get(&st.api.store, &scope, &tenant)?)).await?;
                let ask = Confirm::delete(
                    format!("Delete tenant {id}?"),
                    "A tenant is deleted only once it has no devices, configs, categories, rollouts nor tenants below it; its users and tokens stop working.",
                    format!("/console/tenants/{}/delete", super::devices::seg(&id)),
                    "/console/tenants",
                );
                return state.confirm(&form.me, ask);
            }
            let scope = form.me.scope.clone();
            blocking(move || {
                manage::tenants::delete(&st.api.store, &scope, &id)?;
                Ok(())
            })
            .await
        }
        "key" => {
            let key = match form.get("do") {
                Some("clear") => None,
                Some("generate") => Some(
                    crate::ident::random_password(GENERATED_KEY_CHARS)
                        .map_err(ConsoleError::internal)?,
                ),
                _ => Some(form.get("key").unwrap_or("").to_owned()),
            };
            let session = &form.me;
            let (home, root) = (
                session.scope.home().to_owned(),
                session.scope.root().to_owned(),
            );
            blocking(move || {
                // The tenant's own scope, as the API's Wazo-Tenant header makes it: outside
                // the subtree, the same refusal whether the tenant exists or not.
                let scope = Scope::new(&st.api.store, &home, Some(&id), &root)
                    .map_err(|_| manage::ManageError::NotFound(format!("no tenant {id:?}")))?;
                manage::tenants::set_provisioning_key(&st.api.store, &scope, key)?;
                Ok(())
            })
            .await
        }
        _ => return Err(ConsoleError::not_found()),
    };
    match done {
        Ok(()) => Ok(see_other("/console/tenants")),
        Err(e) if e.status.is_client_error() => {
            page(&state, &form.me, Typed::default(), Some(e)).await
        }
        Err(e) => Err(e),
    }
}
