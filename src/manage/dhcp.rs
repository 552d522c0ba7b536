//! The DHCP responder's leases, read for people: in pages, or found by MAC or address. Leases
//! are the server's (a pool serves whatever client asks, of any tenant), so only the default
//! tenant reads them, as only it handles the server's plugins.

use std::net::Ipv4Addr;

use super::{ManageError, Result, Scope};
use crate::model::{Lease, Mac};
use crate::store::Store;

/// Leases in one page.
pub const PAGE: usize = 50;

/// One page of leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasePage {
    /// The leases, by address.
    pub leases: Vec<Lease>,
    /// True when leases follow this page.
    pub more: bool,
}

/// The leases matching `query` (a MAC or an IPv4 address; every lease when empty), page
/// `page` (from 0) of [`PAGE`] leases, by address.
pub fn leases(store: &Store, scope: &Scope, query: &str, page: usize) -> Result<LeasePage> {
    scope.require_master()?;
    let query = query.trim();
    if !query.is_empty() {
        // A search names one client or one address: through the store's keys, not a scan.
        let found = if let Ok(ip) = query.parse::<Ipv4Addr>() {
            store.lease(ip)?
        } else if let Ok(mac) = query.parse::<Mac>() {
            store.lease_by_mac(&mac)?
        } else {
            return Err(ManageError::field(
                "q",
                "search by a MAC address (00:11:22:33:44:55) or an IPv4 address",
            ));
        };
        return Ok(LeasePage {
            leases: found.into_iter().collect(),
            more: false,
        });
    }
    let mut leases = store
        .leases_iter()
        .skip(page.saturating_mul(PAGE))
        .take(PAGE + 1)
        .collect::<std::result::Result<Vec<Lease>, _>>()?;
    let more = leases.len() > PAGE;
    leases.truncate(PAGE);
    Ok(LeasePage { leases, more })
}
