//! Resynchronisation state per device (tree `sync_state`, device id → [`SyncState`]).
//!
//! Kept beside the device record, not in it: recording a NOTIFY must not bump the device's
//! revision (an API client that read the device would then fail its PUT with a conflict)
//! nor move the render cache's inputs.

use super::kv::Transactional;
use serde::{Deserialize, Serialize};

use super::{encode, finish, Result, Store};
use crate::model::UnixTime;

/// Why a device is resynchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A provisioning code was redeemed for it.
    Redeemed,
    /// A job (firmware or config) of its tenant and category was created.
    Job,
    /// A config of its chain was changed: it is told only if its rendered files changed.
    ConfigChanged,
    /// It was returned to autoprov.
    Reset,
    /// An administrator asked for it (`POST /dev_mgr/synchronize`).
    Manual,
}

impl Reason {
    /// True when the phone is told even if its rendered files are the ones it last got.
    pub fn forces(self) -> bool {
        self != Reason::ConfigChanged
    }

    /// The name shown in the API and the logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Redeemed => "redeemed",
            Reason::Job => "job",
            Reason::ConfigChanged => "config_changed",
            Reason::Reset => "reset",
            Reason::Manual => "manual",
        }
    }
}

/// How the last resynchronisation of a device ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// The phone accepted the NOTIFY (2xx).
    Ok,
    /// The phone refused it, did not answer, or refused our credentials.
    Failed,
    /// Nothing could be sent (no address, no `sync_event`, no plugin…).
    Skipped,
    /// A config changed but the device's rendered files did not: nothing was sent.
    Unchanged,
}

impl SyncStatus {
    /// The name shown in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Ok => "ok",
            SyncStatus::Failed => "failed",
            SyncStatus::Skipped => "skipped",
            SyncStatus::Unchanged => "unchanged",
        }
    }
}

/// The outcome of the last resynchronisation of a device (`last_sync` in the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastSync {
    /// How it ended.
    pub state: SyncStatus,
    /// When it ended.
    pub at: UnixTime,
    /// What happened, in words (the phone's answer, the error).
    pub detail: String,
    /// Why it was started.
    pub reason: Reason,
}

/// What the store keeps per device about its resynchronisations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncState {
    /// The last one.
    pub last: LastSync,
    /// Digest of the device's rendered files when a phone last accepted a NOTIFY: a config
    /// change that leaves it equal is not worth a NOTIFY.
    #[serde(default)]
    pub files_digest: Option<String>,
}

impl Store {
    /// The resynchronisation state of device `id`, if it was ever resynchronised.
    pub fn sync_state(&self, id: &str) -> Result<Option<SyncState>> {
        self.get(&self.sync_state, "sync_state", id.as_bytes())
    }

    /// Records the resynchronisation state of device `id`; `false` (nothing written) when
    /// the device no longer exists, so that a NOTIFY finishing after a deletion leaves no
    /// orphan. Not flushed on its own: losing it in a crash costs one more NOTIFY later.
    pub fn set_sync_state(&self, id: &str, state: &SyncState) -> Result<bool> {
        let value = encode(state);
        finish(
            (&self.devices, &self.sync_state).transaction(|(devices, states)| {
                if devices.get(id.as_bytes())?.is_none() {
                    return Ok(false);
                }
                states.insert(id.as_bytes(), value.as_slice())?;
                Ok(true)
            }),
        )
    }

    /// Forgets the resynchronisation state of device `id` (after its deletion).
    pub(super) fn forget_sync_state(&self, id: &str) -> Result<()> {
        self.sync_state.remove(id.as_bytes())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Device;

    fn state(status: SyncStatus) -> SyncState {
        SyncState {
            last: LastSync {
                state: status,
                at: 1_700_000_000,
                detail: "d".into(),
                reason: Reason::Manual,
            },
            files_digest: Some("ab".into()),
        }
    }

    #[test]
    fn a_sync_state_leaves_the_device_revision_and_dies_with_the_device() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.ensure_defaults("master").unwrap();
        let device = store
            .create_device(&Device::new(String::from("d1"), "master"))
            .unwrap();
        assert_eq!(store.sync_state("d1").unwrap(), None);
        assert!(store.set_sync_state("d1", &state(SyncStatus::Ok)).unwrap());
        assert!(store
            .set_sync_state("d1", &state(SyncStatus::Failed))
            .unwrap());
        assert_eq!(
            store.sync_state("d1").unwrap(),
            Some(state(SyncStatus::Failed))
        );
        assert_eq!(
            store.device("d1").unwrap().unwrap().revision,
            device.revision
        );
        store.delete_device("d1").unwrap();
        assert_eq!(store.sync_state("d1").unwrap(), None);
        // A NOTIFY that ends after the deletion leaves nothing behind.
        assert!(!store.set_sync_state("d1", &state(SyncStatus::Ok)).unwrap());
        assert_eq!(store.sync_state("d1").unwrap(), None);
    }
}
