//! DHCP: the responder's pools (from `[dhcp]`) and its leases, in pages or found by MAC or
//! address; read-only. When the responder is off the page says so. Leases are the server's:
//! the default tenant only, as `manage::dhcp` decides.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{blocking, ConsoleError, ConsoleState, SignedIn};
use crate::manage;
use crate::model::Lease;

/// Highest page number asked for (from 0); past it the page shown is this one.
const MAX_PAGE: usize = 1_000_000;

#[derive(serde::Deserialize)]
pub(super) struct Search {
    #[serde(default)]
    q: String,
    #[serde(default)]
    page: usize,
}

fn lease_json(l: &Lease) -> Value {
    json!({ "ip": l.ip.to_string(), "mac": l.mac.to_string(), "hostname": l.hostname,
        "state": format!("{:?}", l.state).to_lowercase(),
        "starts": manage::rollouts::rfc3339(l.starts), "ends": manage::rollouts::rfc3339(l.ends) })
}

pub(super) async fn show(
    State(state): State<Arc<ConsoleState>>,
    Query(search): Query<Search>,
    me: SignedIn,
) -> Result<Response, ConsoleError> {
    me.scope.require_master().map_err(ConsoleError::from)?;
    let Some(dhcp) = &state.dhcp else {
        return state.render("dhcp.html", Some(&me), json!({ "on": false }));
    };
    let pools: Vec<Value> = dhcp
        .pools
        .iter()
        .map(|p| {
            let ranges: Vec<String> = p
                .ranges
                .iter()
                .map(|r| format!("{} – {}", r.start, r.end))
                .collect();
            json!({ "subnet": p.subnet.to_string(), "ranges": ranges,
                "router": p.router.map(|r| r.to_string()), "lease_time": p.lease_time,
                "reservations": p.reservations.len(), "tenant": p.tenant,
                "base_url": p.base_url.as_ref().map(|u| u.to_string()) })
        })
        .collect();
    let st = Arc::clone(&state);
    let scope = me.scope.clone();
    // Clamped like the device list's: the next page's number is computed from it.
    let (query, page) = (search.q.trim().to_owned(), search.page.min(MAX_PAGE));
    let q = query.clone();
    let found = blocking(move || Ok(manage::dhcp::leases(&st.api.store, &scope, &q, page)?)).await;
    let (leases, more, error) = match found {
        Ok(p) => (p.leases.iter().map(lease_json).collect(), p.more, None),
        Err(e) if e.status == StatusCode::BAD_REQUEST => (Vec::new(), false, Some(e.message)),
        Err(e) => return Err(e),
    };
    state.render_refused(
        "dhcp.html",
        &me,
        json!({ "on": true, "mode": format!("{:?}", dhcp.mode).to_lowercase(), "pools": pools,
            "leases": leases, "q": query, "page": page, "more": more,
            "prev": page.checked_sub(1), "next": page + 1 }),
        error.map(ConsoleError::bad_request),
    )
}
