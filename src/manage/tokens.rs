//! API tokens: the server's credentials, listed, made and removed by the default (master)
//! tenant only. A token is stored as the SHA-256 of its secret; the secret is shown once, to
//! its creator.

use sha2::{Digest, Sha256};

use super::{ManageError, Result, Scope};
use crate::http::api::fields::MAX_DESCRIPTION_CHARS;
use crate::model::{self, Token};

/// Most ACL entries of one token.
pub const MAX_ACLS: usize = 256;
/// Longest ACL entry.
pub const MAX_ACL_CHARS: usize = 256;
/// Characters of a token's secret.
const SECRET_CHARS: usize = 40;
/// Characters of the hash shown as a token's id: enough to delete it, useless to sign in.
pub const ID_CHARS: usize = 16;

/// Hex SHA-256 of a token secret: the form tokens are stored and looked up in.
pub fn hash_token(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A token's id: the start of its hash.
pub fn id(token: &Token) -> &str {
    &token.hash[..ID_CHARS.min(token.hash.len())]
}

/// Every token (master tenant only), by hash.
pub fn list(store: &crate::store::Store, scope: &Scope) -> Result<Vec<Token>> {
    scope.require_master()?;
    Ok(store.tokens()?)
}

/// What a client writes of a new token.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    /// The tenant it acts for.
    pub tenant: String,
    /// Its access rules; everything of provisiond (`provd.#`) when absent.
    pub acl: Option<Vec<String>>,
    /// Lifetime in seconds; never expires when absent.
    pub expires_in: Option<u64>,
    /// Free text.
    pub description: Option<String>,
}

/// Checks `new`, makes a token of it and stores it; the token and its secret, which is not
/// kept anywhere.
pub fn create(
    store: &crate::store::Store,
    scope: &Scope,
    new: NewToken,
) -> Result<(Token, String)> {
    scope.require_master()?;
    model::validate_id(&new.tenant)
        .map_err(|e| ManageError::field("token.tenant", e.to_string()))?;
    let acl = new.acl.unwrap_or_else(|| vec!["provd.#".to_owned()]);
    if acl.len() > MAX_ACLS {
        return Err(ManageError::field(
            "token.acl",
            format!("at most {MAX_ACLS} entries"),
        ));
    }
    for (i, entry) in acl.iter().enumerate() {
        if entry.chars().count() > MAX_ACL_CHARS {
            return Err(ManageError::field(
                format!("token.acl[{i}]"),
                format!("at most {MAX_ACL_CHARS} characters"),
            ));
        }
        if entry.is_empty() || entry.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ManageError::field(
                format!("token.acl[{i}]"),
                "entries are dot-separated words, * and #",
            ));
        }
    }
    if let Some(description) = &new.description {
        if description.chars().count() > MAX_DESCRIPTION_CHARS
            || description.chars().any(char::is_control)
        {
            return Err(ManageError::field(
                "token.description",
                format!("at most {MAX_DESCRIPTION_CHARS} characters, no control characters"),
            ));
        }
    }
    store
        .tenant(&new.tenant)?
        .ok_or_else(|| ManageError::field("token.tenant", format!("no tenant {:?}", new.tenant)))?;
    let secret = crate::ident::random_password(SECRET_CHARS)
        .map_err(|e| ManageError::Internal(e.to_string()))?;
    let now = model::now();
    let token = Token {
        hash: hash_token(&secret),
        tenant: new.tenant,
        acl,
        created: now,
        expires: new.expires_in.map(|s| now.saturating_add(s)),
        description: new.description,
    };
    store.create_token(&token)?;
    tracing::info!(tenant = %token.tenant, id = id(&token), "API token created");
    Ok((token, secret))
}

/// Deletes the token whose hash starts with `id` (master tenant only); a prefix that several
/// tokens share is refused.
pub fn delete(store: &crate::store::Store, scope: &Scope, id: &str) -> Result<Token> {
    scope.require_master()?;
    let matching: Vec<Token> = store
        .tokens()?
        .into_iter()
        .filter(|t| !id.is_empty() && t.hash.starts_with(id))
        .collect();
    match matching.as_slice() {
        [one] => {
            let gone = store.delete_token(&one.hash)?;
            tracing::info!(tenant = %gone.tenant, id = self::id(&gone), "API token deleted");
            Ok(gone)
        }
        [] => Err(ManageError::NotFound(format!("no token {id:?}"))),
        _ => Err(ManageError::field("id", "ambiguous: give more characters")),
    }
}
