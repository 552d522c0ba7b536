//! Typed records kept in the store: devices, provisioning configs, tenants, tokens, leases,
//! and the provisioning records (categories, codes, rollouts, jobs).

mod mac;
mod prov;
mod records;
mod tree;

pub use mac::{Mac, MacParseError};
pub use prov::*;
pub use records::*;
pub use tree::{TenantTree, MAX_TENANT_DEPTH};

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, the time unit of every stored timestamp.
pub type UnixTime = u64;

/// The current time as [`UnixTime`].
pub fn now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A new random record id: 32 lower-case hex digits, the form wazo-provd uses for devices.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A new device id: 32 lower-case hex digits like [`new_id`], but ordered by creation
/// (UUIDv7, RFC 9562: 48 bits of milliseconds, then 74 random bits). Devices are keyed by id in
/// the record tree and at the end of every per-tenant index entry: ids created in a row land
/// next to each other, where random ids would scatter a creation's writes over the whole key
/// space (with sled, that was most of a creation's cost at a million devices:
/// benches/README.md, Store at scale). Not for secrets
/// or for prefixes of ids: the first digits are a clock.
pub fn new_device_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// Longest id, in characters (ids are ASCII).
pub const MAX_ID_CHARS: usize = 64;

/// Why an id supplied from outside (API, CLI, config) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid id {}: use 1 to {MAX_ID_CHARS} characters among A-Z a-z 0-9 _ . -", shown(.0))]
pub struct InvalidId(pub String);

/// The refused id for a message, cut short: it may be as long as a request body.
fn shown(id: &str) -> String {
    if id.chars().count() <= MAX_ID_CHARS + 1 {
        format!("{id:?}")
    } else {
        let head: String = id.chars().take(MAX_ID_CHARS + 1).collect();
        format!("{head:?}…")
    }
}

/// Checks an id that will become a store key and part of URLs and log lines.
pub fn validate_id(id: &str) -> Result<(), InvalidId> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(InvalidId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(new_id().len(), 32);
        let ids: Vec<String> = (0..1000).map(|_| new_device_id()).collect();
        assert!(ids
            .iter()
            .all(|id| id.len() == 32 && validate_id(id).is_ok()));
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "device ids sort in creation order"
        );
        for good in ["base", "autoprov", "a", "x-1_2.3", &"a".repeat(64)] {
            assert!(validate_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", "a\0", &"a".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        let long = "a".repeat(10_000);
        let message = validate_id(&long).unwrap_err().to_string();
        assert!(
            message.len() < 200,
            "a refused id is not echoed whole: {message}"
        );
    }
}
