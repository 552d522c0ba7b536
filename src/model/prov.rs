//! Provisioning records (seed 004's Devices app): categories, provisioning codes, rollouts of
//! codes, and jobs that update a category's devices.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Mac, RawConfig, UnixTime};

/// Digits of a provisioning code.
pub const CODE_DIGITS: usize = 12;

/// Lifetime of a code issued on its own (an installer at a desk), in seconds.
pub const CODE_TTL_SECS: u64 = 10 * 60;

/// Lifetime of the codes of a rollout (printed and handed out), in seconds.
pub const ROLLOUT_TTL_SECS: u64 = 7 * 24 * 3600;

/// A group of a tenant's devices: the config their own configs inherit, the firmware they
/// should run, and whether codes and automatic URLs may name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    /// Store key (random, 32 hex digits).
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Name, unique in the tenant; automatic provisioning URLs carry it.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Config merged below the device's own config for the category's devices.
    #[serde(default)]
    pub config: Option<String>,
    /// Firmware policy: per model, the firmware its phones should run.
    #[serde(default)]
    pub firmware: BTreeMap<String, FirmwareTarget>,
    /// Whether codes and automatic URLs may name this category.
    #[serde(default)]
    pub provisioning: bool,
    /// Incremented by the store on every write.
    #[serde(default)]
    pub revision: u64,
}

/// The firmware one model should run (the `firmware` raw-config parameter of its plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareTarget {
    /// Version string.
    pub version: String,
    /// File under the plugin's static dir, or a URL.
    pub file: String,
}

/// How a device was provisioned without an administrator touching it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provisioned {
    /// `code` or `auto`.
    pub by: ProvisionedBy,
    /// When.
    pub at: UnixTime,
    /// The last 3 digits of the code (never the whole code: it was a secret).
    #[serde(default)]
    pub code_tail: Option<String>,
}

/// The way of [`Provisioned`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvisionedBy {
    /// A provisioning code.
    Code,
    /// An automatic-provisioning URL.
    Auto,
}

/// A live provisioning code: 12 digits that make a phone the phone of a tenant, category
/// and, optionally, config. Deleted when used, revoked or expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Code {
    /// The 12 digits, the store key.
    pub code: String,
    /// Tenant the phone joins.
    pub tenant: String,
    /// Category (id) the phone joins.
    pub category: String,
    /// Config the phone receives (the user's line), if any.
    #[serde(default)]
    pub config: Option<String>,
    /// Free text (the user's name in a rollout).
    #[serde(default)]
    pub label: Option<String>,
    /// Rollout this code belongs to.
    #[serde(default)]
    pub rollout: Option<String>,
    /// Creation time.
    pub created: UnixTime,
    /// First second at which the code is no longer accepted.
    pub expires: UnixTime,
}

impl Code {
    /// The code as logs may show it: only its last 3 digits.
    pub fn tail(&self) -> String {
        code_tail(&self.code)
    }
}

/// `…` and the last 3 characters of a code: what logs and records keep of it.
pub fn code_tail(code: &str) -> String {
    let start = code
        .char_indices()
        .rev()
        .nth(2)
        .map(|(i, _)| i)
        .unwrap_or(0);
    format!("…{}", &code[start..])
}

/// State of one entry of a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// Its code waits for a phone.
    Pending,
    /// A phone used its code.
    Registered,
    /// Its code was not used in time.
    Expired,
    /// Its code was revoked.
    Revoked,
}

/// One line of a rollout: a user (label), the config they get, and their code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutEntry {
    /// The code handed to this user.
    pub code: String,
    /// Free text, usually the user's name.
    #[serde(default)]
    pub label: Option<String>,
    /// Config the phone receives.
    #[serde(default)]
    pub config: Option<String>,
    /// Pending or registered (expired is computed from the rollout's expiry).
    pub state: EntryState,
    /// Device that used the code.
    #[serde(default)]
    pub device: Option<String>,
    /// MAC of that device.
    #[serde(default)]
    pub device_mac: Option<Mac>,
    /// When the code was used.
    #[serde(default)]
    pub registered_at: Option<UnixTime>,
}

/// A batch of codes for one category (seed 004's "Rollout of many phones").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Store key (random, 32 hex digits).
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Category (id) of every code.
    pub category: String,
    /// Creation time.
    pub created: UnixTime,
    /// Expiry of every code.
    pub expires: UnixTime,
    /// The entries, in the order given.
    pub entries: Vec<RolloutEntry>,
    /// Incremented by the store on every write.
    #[serde(default)]
    pub revision: u64,
}

impl Rollout {
    /// The state of entry `i` at `now`: a pending entry past the expiry is expired.
    pub fn state_at(&self, entry: &RolloutEntry, now: UnixTime) -> EntryState {
        if entry.state == EntryState::Pending && now >= self.expires {
            EntryState::Expired
        } else {
            entry.state
        }
    }
}

/// What a job changes on the devices of its tenant and category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobKind {
    /// Update Software: the firmware each model should run (a snapshot taken at creation).
    Firmware {
        /// Per model.
        versions: BTreeMap<String, FirmwareTarget>,
    },
    /// Update Config: raw-config parameters of one type (`locale`, `timezone`, `ntp`,
    /// `params`); the latest job of each type applies.
    Config {
        /// The type.
        #[serde(rename = "type")]
        kind: String,
        /// Raw-config parameters merged over the devices' configs.
        params: RawConfig,
    },
}

/// An update of a category's devices, applied when each device next fetches its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// Store key (random, 32 hex digits).
    pub id: String,
    /// Owning tenant.
    pub tenant: String,
    /// Category (id).
    pub category: String,
    /// Creation time.
    pub created: UnixTime,
    /// Order of creation in the store (later jobs win).
    #[serde(default)]
    pub seq: u64,
    /// What it changes.
    #[serde(flatten)]
    pub kind: JobKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_keep_only_the_tail_of_a_code() {
        assert_eq!(code_tail("123456789012"), "…012");
        assert_eq!(code_tail("12"), "…12");
        assert_eq!(code_tail(""), "…");
    }

    #[test]
    fn a_pending_entry_expires_at_the_exact_second() {
        let entry = RolloutEntry {
            code: "1".into(),
            label: None,
            config: None,
            state: EntryState::Pending,
            device: None,
            device_mac: None,
            registered_at: None,
        };
        let rollout = Rollout {
            id: "r".into(),
            tenant: "t".into(),
            category: "c".into(),
            created: 0,
            expires: 100,
            entries: vec![entry.clone()],
            revision: 0,
        };
        assert_eq!(rollout.state_at(&entry, 99), EntryState::Pending);
        assert_eq!(rollout.state_at(&entry, 100), EntryState::Expired);
        let registered = RolloutEntry {
            state: EntryState::Registered,
            ..entry
        };
        assert_eq!(rollout.state_at(&registered, 100), EntryState::Registered);
    }
}
