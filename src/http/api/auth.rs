//! Who calls: an API token (`X-Auth-Token`, or `Authorization: Bearer` as Prometheus and most
//! HTTP clients send it) or the local admin socket, and for which tenant.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, ApiState};
use crate::manage::Scope;
use crate::model;

/// Marks requests that came through the local admin socket from an allowed user.
#[derive(Debug, Clone, Copy)]
pub struct LocalAdmin;

/// Longest token secret looked up: longer ones are refused before hashing.
pub const MAX_TOKEN_CHARS: usize = 512;

/// The token secret a request presents: `X-Auth-Token` (wazo's header), `Authorization:
/// Bearer <token>` (RFC 6750), or both carrying the same token. A header that is repeated,
/// not text, empty, over [`MAX_TOKEN_CHARS`] or (for `Authorization`) of another scheme is a
/// 401 naming it: a request whose credentials cannot be read is never taken as anonymous,
/// and two different tokens leave no choice that would not surprise one of their senders.
fn presented_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let malformed = |header: &str, message: &str| {
        ApiError::field(header, message).with_status(StatusCode::UNAUTHORIZED)
    };
    let single = |header: &'static str| -> Result<Option<&str>, ApiError> {
        let mut values = headers.get_all(header).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(malformed(header, "given more than once"));
        }
        value
            .to_str()
            .map(Some)
            .map_err(|_| malformed(header, "not text"))
    };
    let valid = |token: &str| {
        !token.is_empty()
            && token.len() <= MAX_TOKEN_CHARS
            && !token.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    let x_auth = single("X-Auth-Token")?
        .map(|token| {
            if valid(token) {
                Ok(token)
            } else {
                Err(malformed(
                    "X-Auth-Token",
                    &format!("expected a token of 1 to {MAX_TOKEN_CHARS} characters"),
                ))
            }
        })
        .transpose()?;
    let bearer = single("Authorization")?
        .map(|value| {
            // The scheme is case-insensitive (RFC 9110, 11.1); one or more spaces follow it.
            match value.split_once(' ') {
                Some((scheme, token))
                    if scheme.eq_ignore_ascii_case("bearer")
                        && valid(token.trim_start_matches(' ')) =>
                {
                    Ok(token.trim_start_matches(' '))
                }
                _ => Err(malformed(
                    "Authorization",
                    &format!("expected Bearer and a token of 1 to {MAX_TOKEN_CHARS} characters"),
                )),
            }
        })
        .transpose()?;
    match (x_auth, bearer) {
        (Some(x_auth), Some(bearer)) if x_auth != bearer => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "X-Auth-Token and Authorization carry different tokens",
        )),
        (Some(token), _) | (None, Some(token)) => Ok(token),
        (None, None) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing token: send X-Auth-Token or Authorization: Bearer",
        )),
    }
}

pub use crate::manage::tokens::hash_token;

/// The authenticated caller, the tenant it acts for and what it reaches.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Where the caller stands in the tenant tree.
    pub scope: Scope,
    /// True for the local admin socket.
    pub local: bool,
    /// The client's address (loopback for the local admin socket), where its failures at
    /// guessing secrets count.
    pub peer: std::net::IpAddr,
    acl: Vec<String>,
}

/// wazo-auth ACL matching: dot-separated; `*` is one segment, `#` the rest (also none).
pub(crate) fn acl_matches(pattern: &str, required: &str) -> bool {
    let mut want = required.split('.');
    for part in pattern.split('.') {
        match part {
            "#" => return true,
            "*" => {
                if want.next().is_none() {
                    return false;
                }
            }
            literal => {
                if want.next() != Some(literal) {
                    return false;
                }
            }
        }
    }
    want.next().is_none()
}

impl Caller {
    /// Fails with 403 unless one of the caller's ACL entries grants `required`.
    pub fn require(&self, required: &str) -> Result<(), ApiError> {
        if self.local || self.acl.iter().any(|p| acl_matches(p, required)) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the token lacks the ACL {required}"
            )))
        }
    }

    /// Fails with 403 unless the caller acts as the default tenant.
    pub fn require_master(&self) -> Result<(), ApiError> {
        Ok(self.scope.require_master()?)
    }

    /// The tenant the request acts for.
    pub fn tenant(&self) -> &str {
        self.scope.tenant()
    }
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let asked = parts
            .headers
            .get("wazo-tenant")
            .map(|v| {
                v.to_str()
                    .map(str::to_owned)
                    .map_err(|_| ApiError::field("Wazo-Tenant", "not text"))
            })
            .transpose()?;
        if let Some(tenant) = &asked {
            model::validate_id(tenant)
                .map_err(|e| ApiError::field("Wazo-Tenant", e.to_string()))?;
        }
        let (token_tenant, acl, local) = if parts.extensions.get::<LocalAdmin>().is_some() {
            (state.default_tenant.clone(), vec!["#".to_owned()], true)
        } else {
            let hash = hash_token(presented_token(&parts.headers)?);
            let store = state.store.clone();
            let token = super::blocking(move || Ok(store.token(&hash)?)).await?;
            let token = token.ok_or_else(|| refuse_token(parts, state, "invalid token"))?;
            if token.expires.is_some_and(|at| at <= model::now()) {
                return Err(refuse_token(parts, state, "expired token"));
            }
            (token.tenant, token.acl, false)
        };
        let store = state.store.clone();
        let root = state.default_tenant.clone();
        // A token acts for its tenant and, with `Wazo-Tenant`, for any tenant below it.
        let scope = super::blocking(move || {
            Ok(Scope::new(&store, &token_tenant, asked.as_deref(), &root)?)
        })
        .await?;
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map_or(std::net::Ipv4Addr::LOCALHOST.into(), |c| {
                c.0.ip().to_canonical()
            });
        Ok(Caller {
            scope,
            local,
            peer,
            acl,
        })
    }
}

/// The 401 for a token that is not (or no longer) valid, logged within the per-peer limit of
/// [`crate::ratelimit`] (a token guesser would otherwise write one line per guess).
fn refuse_token(parts: &Parts, state: &ApiState, why: &'static str) -> ApiError {
    use crate::ratelimit::{Kind, Source};
    let peer = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let source = peer.map_or(Source::Local("an unknown peer"), |p| p.ip().into());
    if state.files.rejected.admit(Kind::ApiToken, source) {
        match peer {
            Some(peer) => tracing::warn!(%peer, "API request refused: {why}"),
            None => tracing::warn!("API request refused: {why}"),
        }
    }
    ApiError::new(StatusCode::UNAUTHORIZED, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls() {
        assert!(acl_matches("#", "provd.dev_mgr.devices.read"));
        assert!(acl_matches("provd.#", "provd.dev_mgr.devices.read"));
        assert!(acl_matches(
            "provd.dev_mgr.devices.*",
            "provd.dev_mgr.devices.read"
        ));
        assert!(!acl_matches(
            "provd.dev_mgr.devices.*",
            "provd.dev_mgr.devices.abc.read"
        ));
        assert!(acl_matches(
            "provd.dev_mgr.devices.*.read",
            "provd.dev_mgr.devices.abc.read"
        ));
        assert!(!acl_matches(
            "provd.cfg_mgr.#",
            "provd.dev_mgr.devices.read"
        ));
        assert!(!acl_matches("provd.dev_mgr", "provd.dev_mgr.devices.read"));
        assert!(acl_matches("provd.dev_mgr.read", "provd.dev_mgr.read"));
    }

    #[test]
    fn hashes() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
