//! The domain rules of devices, configs and tenants, in one place: the REST handlers, the
//! admin socket (the same handlers over a UNIX socket) and the web console call these
//! functions and only parse, authorize and shape around them.
//!
//! Tenants form a tree (wazo-auth's model) whose root is the default tenant. A caller acts for
//! one tenant (its [`Scope`]) and reaches that tenant's subtree; configs of the tenants above
//! it are shared with it read-only (the root's configs with everybody, as wazo-provd's configs
//! are global).

pub mod auto;
pub mod categories;
pub mod codes;
pub mod configs;
pub mod devices;
pub mod dhcp;
pub mod guard;
pub mod jobs;
pub mod oip;
pub mod packages;
pub mod plugins;
pub mod preview;
pub mod rollouts;
pub mod tenants;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use crate::model::TenantTree;
use crate::store::{Store, StoreError};

/// Why a domain operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// No such object, or one the caller may not know of (another tenant's).
    #[error("{0}")]
    NotFound(String),
    /// The caller may see the object but not do this to it.
    #[error("{0}")]
    Forbidden(String),
    /// The credential is not valid for the tenant asked for.
    #[error("{0}")]
    Unauthorized(String),
    /// A field of the written object is wrong.
    #[error("{field}: {message}")]
    Field {
        /// The offending field, as the client wrote it (`config`, `tenant.parent`…).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The object kept changing under concurrent writers.
    #[error("the {0} kept changing; try again")]
    Busy(&'static str),
    /// The caller failed too often lately at guessing a secret; it is not looked at.
    #[error("too many failed attempts; try again later")]
    RateLimited,
    /// The request names several objects where one is needed (devices behind one address).
    #[error("{message}")]
    Ambiguous {
        /// What is ambiguous.
        message: String,
        /// The candidates' ids.
        ids: Vec<String>,
    },
    /// Something on this machine failed (the OS random source…).
    #[error("{0}")]
    Internal(String),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ManageError {
    /// A refusal naming the offending field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> ManageError {
        ManageError::Field {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Result of a domain operation.
pub type Result<T, E = ManageError> = std::result::Result<T, E>;

/// Who acts, in the tenant tree: the tenant a request acts for and what it reaches.
#[derive(Debug, Clone)]
pub struct Scope {
    tenant: String,
    home: String,
    root: String,
    tree: Arc<TenantTree>,
}

impl Scope {
    /// The scope of a credential of tenant `home` acting for `asked` (or for `home`): `asked`
    /// must be `home` or below it. A tenant outside that reach, unknown ones included, is
    /// [`ManageError::Unauthorized`] (wazo-provd answers 401: the token is not valid there).
    pub fn new(store: &Store, home: &str, asked: Option<&str>, root: &str) -> Result<Scope> {
        let tree = store.tenant_tree()?;
        let tenant = asked.unwrap_or(home);
        if !tree.within(tenant, home) {
            // One message whether the tenant exists or not: no probing of other tenants' ids.
            return Err(ManageError::Unauthorized(if asked.is_some() {
                format!("no tenant {tenant:?} in this token's reach")
            } else {
                format!("the token's tenant {home:?} no longer exists")
            }));
        }
        Ok(Scope {
            tenant: tenant.to_owned(),
            home: home.to_owned(),
            root: root.to_owned(),
            tree,
        })
    }

    /// The tenant the request acts for.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The tenant of the credential (the acting tenant is it or one of its descendants).
    pub fn home(&self) -> &str {
        &self.home
    }

    /// The default tenant, root of the tree.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The tenant tree as of the request.
    pub fn tree(&self) -> &TenantTree {
        &self.tree
    }

    /// True when the acting tenant is the root.
    pub fn is_root(&self) -> bool {
        self.tenant == self.root
    }

    /// Refuses (403) unless the acting tenant is the root: the server's own things (plugins,
    /// tokens, DHCP leases) are the default tenant's to handle.
    pub fn require_master(&self) -> Result<()> {
        if self.is_root() {
            Ok(())
        } else {
            Err(ManageError::Forbidden(
                "only the default tenant may do this".into(),
            ))
        }
    }

    /// True when `tenant` is the acting tenant or below it: its objects are the caller's to
    /// read and change.
    pub fn reaches(&self, tenant: &str) -> bool {
        self.tree.within(tenant, &self.tenant)
    }

    /// True when `tenant` is above the acting tenant: its configs are shared with the caller,
    /// read-only.
    pub fn inherits(&self, tenant: &str) -> bool {
        inherits(&self.tree, &self.tenant, tenant)
    }

    /// True when a listing shows objects of `tenant`: the acting tenant's, and with `recurse`
    /// those of its whole subtree.
    pub fn lists(&self, tenant: &str, recurse: bool) -> bool {
        tenant == self.tenant || (recurse && self.reaches(tenant))
    }
}

/// True when `owner` is strictly above `tenant` in `tree`.
fn inherits(tree: &TenantTree, tenant: &str, owner: &str) -> bool {
    tree.ancestors(tenant).iter().any(|a| a == owner)
}

/// True when objects of `tenant` may use a config of `owner`: their own tenant's or one above.
pub fn may_use(tree: &TenantTree, tenant: &str, owner: &str) -> bool {
    tenant == owner || inherits(tree, tenant, owner)
}

/// Read-modify-write against optimistic concurrency: `attempt` answers `Ok(None)` when the
/// store saw a concurrent write (a revision conflict) and is run again, a bounded number of
/// times. The error type is the caller's, so that a caller's own check (a request body read
/// once the object is known to exist) fails with the caller's error.
pub fn retry_on_conflict<T, E: From<ManageError>>(
    kind: &'static str,
    mut attempt: impl FnMut() -> std::result::Result<Option<T>, E>,
) -> std::result::Result<T, E> {
    for _ in 0..8 {
        if let Some(done) = attempt()? {
            return Ok(done);
        }
    }
    Err(ManageError::Busy(kind).into())
}

/// `Ok(None)` for a revision conflict (try again), the error otherwise.
pub fn conflict_or<T>(result: std::result::Result<T, StoreError>) -> Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(StoreError::Conflict { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
