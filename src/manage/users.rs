//! Console users: created in a tenant of the caller's subtree with a role, their passwords
//! kept as argon2id hashes; and the check of a sign-in, limited per user and per address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};

use super::{ManageError, Result, Scope};
use crate::model::{self, ConsoleUser, Role};
use crate::store::{Store, StoreError};

/// Longest user name.
pub const MAX_NAME_CHARS: usize = 64;
/// Shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password hashed (longer ones are refused before argon2 spends time on them).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// Checks a user name: 1 to 64 letters, digits, `.`, `_`, `-`, `@`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(ManageError::field(
            "name",
            format!("1 to {MAX_NAME_CHARS} letters, digits, '.', '_', '-' or '@'"),
        ))
    }
}

/// 16 random bytes from the OS, as argon2's salt.
fn fresh_salt() -> Result<SaltString> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)
        .map_err(|e| ManageError::Internal(format!("no random salt: {e}")))?;
    SaltString::encode_b64(&bytes)
        .map_err(|e| ManageError::Internal(format!("no random salt: {e}")))
}

/// The argon2id hash of `password` with a fresh salt, in PHC form.
pub fn hash_password(password: &str) -> Result<String> {
    let n = password.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&n) {
        return Err(ManageError::field(
            "password",
            format!("{MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    let salt = fresh_salt()?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ManageError::Internal(format!("cannot hash the password: {e}")))
}

/// Creates the user `name` of `tenant` (the caller's or one below it).
pub fn create(
    store: &Store,
    scope: &Scope,
    name: &str,
    tenant: &str,
    role: Role,
    password: &str,
) -> Result<ConsoleUser> {
    check_name(name)?;
    if !scope.reaches(tenant) {
        return Err(ManageError::field(
            "tenant",
            format!("no tenant {tenant:?} in the caller's reach"),
        ));
    }
    let user = ConsoleUser {
        name: name.to_owned(),
        tenant: tenant.to_owned(),
        role,
        password_hash: hash_password(password)?,
        created: model::now(),
    };
    match store.create_user(&user) {
        Ok(()) => {}
        Err(StoreError::AlreadyExists { .. }) => {
            return Err(ManageError::field(
                "name",
                format!("a user {name:?} already exists"),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user = %user.name, tenant = %user.tenant, role = role.as_str(), "console user created");
    Ok(user)
}

/// The users of the caller's subtree, by name.
pub fn list(store: &Store, scope: &Scope) -> Result<Vec<ConsoleUser>> {
    Ok(store
        .users()?
        .into_iter()
        .filter(|u| scope.reaches(&u.tenant))
        .collect())
}

/// The user `name` of the caller's subtree.
pub fn get(store: &Store, scope: &Scope, name: &str) -> Result<ConsoleUser> {
    match store.user(name)? {
        Some(u) if scope.reaches(&u.tenant) => Ok(u),
        _ => Err(ManageError::NotFound(format!("no user {name:?}"))),
    }
}

/// Deletes the user `name` of the caller's subtree.
pub fn delete(store: &Store, scope: &Scope, name: &str) -> Result<ConsoleUser> {
    get(store, scope, name)?;
    let gone = store.delete_user(name)?;
    tracing::info!(user = %gone.name, tenant = %gone.tenant, "console user deleted");
    Ok(gone)
}

/// A hash verified when the user does not exist, so that a wrong name costs as long as a
/// wrong password (no probing of names by timing).
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        fresh_salt()
            .ok()
            .and_then(|salt| {
                Argon2::default()
                    .hash_password(b"no such user, no such password", &salt)
                    .ok()
                    .map(|h| h.to_string())
            })
            .unwrap_or_default()
    })
}

/// The user `name` when `password` is theirs; [`ManageError::Unauthorized`] otherwise (one
/// message whether the name or the password is wrong). Spends argon2's time: run it off the
/// async runtime.
pub fn verify(store: &Store, name: &str, password: &str) -> Result<ConsoleUser> {
    let refused = || ManageError::Unauthorized("wrong user name or password".into());
    let user = if check_name(name).is_ok() {
        store.user(name)?
    } else {
        None
    };
    let hash_text = user
        .as_ref()
        .map_or_else(|| decoy_hash().to_owned(), |u| u.password_hash.clone());
    let matches = password.chars().count() <= MAX_PASSWORD_CHARS
        && PasswordHash::new(&hash_text).is_ok_and(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        });
    match user {
        Some(user) if matches => Ok(user),
        _ => Err(refused()),
    }
}

/// Budgets of failed sign-ins: per user name and per address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimits {
    /// Failures one name (or one address) may have in a row.
    pub burst: u32,
    /// One failure more every this long.
    pub refill: Duration,
    /// Names and addresses tracked at once; beyond, the oldest entries are forgotten.
    pub max_tracked: usize,
}

impl Default for SignInLimits {
    fn default() -> SignInLimits {
        SignInLimits {
            burst: 5,
            refill: Duration::from_secs(60),
            max_tracked: 65_536,
        }
    }
}

/// Failed sign-ins per user name and per address (IPv6 per /64): a name or an address out of
/// budget is refused without the password being checked, so that neither many addresses
/// against one user nor one address against many users get more than a few guesses a minute.
pub struct SignInLimiter {
    limits: SignInLimits,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

fn address_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            format!("addr {}", std::net::Ipv6Addr::from(bits))
        }
        v4 => format!("addr {v4}"),
    }
}

impl SignInLimiter {
    /// A limiter with these budgets.
    pub fn new(limits: SignInLimits) -> SignInLimiter {
        SignInLimiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn keys(name: &str, peer: IpAddr) -> [String; 2] {
        [format!("user {name}"), address_key(peer)]
    }

    fn level(&self, entry: (f64, Instant), now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(entry.1).as_secs_f64();
        let rate = 1.0 / self.limits.refill.as_secs_f64().max(1e-9);
        (entry.0 + elapsed * rate).min(f64::from(self.limits.burst))
    }

    /// Fails with [`ManageError::RateLimited`] when the name or the address has no failure
    /// left in its budget.
    pub fn check(&self, name: &str, peer: IpAddr, now: Instant) -> Result<()> {
        let buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for key in Self::keys(name, peer) {
            if let Some(entry) = buckets.get(&key) {
                if self.level(*entry, now) < 1.0 {
                    return Err(ManageError::RateLimited);
                }
            }
        }
        Ok(())
    }

    /// Counts a failed sign-in against the name and the address.
    pub fn failed(&self, name: &str, peer: IpAddr, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= self.limits.max_tracked {
            // Full buckets carry no information: forget them first.
            let burst = f64::from(self.limits.burst);
            buckets.retain(|_, e| self.level(*e, now) < burst);
            if buckets.len() >= self.limits.max_tracked {
                buckets.clear();
            }
        }
        for key in Self::keys(name, peer) {
            let burst = f64::from(self.limits.burst);
            let level = buckets
                .get(&key)
                .map_or(burst, |entry| self.level(*entry, now));
            buckets.insert(key, ((level - 1.0).max(0.0), now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("alice@example.org").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn limiter_per_user_and_address() {
        let limiter = SignInLimiter::new(SignInLimits {
            burst: 2,
            refill: Duration::from_secs(60),
            max_tracked: 100,
        });
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        limiter.failed("alice", a, t0);
        limiter.failed("alice", b, t0);
        // alice's budget is spent, from any address; bob from a third address is fine.
        assert!(limiter
            .check("alice", "10.0.0.3".parse().unwrap(), t0)
            .is_err());
        assert!(limiter
            .check("bob", "10.0.0.3".parse().unwrap(), t0)
            .is_ok());
        limiter.failed("bob", a, t0);
        // Address a has failed twice (alice, bob): carol from it is refused.
        assert!(limiter.check("carol", a, t0).is_err());
        // A minute later one more attempt is allowed.
        assert!(limiter
            .check(
                "alice",
                "10.0.0.3".parse().unwrap(),
                t0 + Duration::from_secs(61)
            )
            .is_ok());
    }

    #[test]
    fn password_hashes_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(hash_password("short").is_err());
    }
}
