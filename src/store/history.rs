//! Identification history per device (tree `dev_history`, device id → the last
//! [`HISTORY_LEN`] [`Identification`]s, oldest first, as one JSON array).
//!
//! One key per device, written in the transaction of the device write that changed its facts
//! (never for a `last_seen` alone), removed in the transaction that deletes the device: a
//! phone that polls costs nothing here, and the history never outlives its device.

use serde::{Deserialize, Serialize};

use super::kv::TransactionalTree;
use super::{encode, Result, Store, TxResult};
use crate::model::{Device, UnixTime};

/// Entries kept per device; older ones are dropped.
pub const HISTORY_LEN: usize = 20;

/// The transport a device was identified through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// A lease of the built-in DHCP responder.
    Dhcp,
    /// A lease event of a foreign DHCP server (`provisiond dhcp-notify`, the API).
    Dhcpinfo,
    /// An HTTP(S) request for a file.
    Http,
    /// A TFTP read request.
    Tftp,
}

impl Via {
    /// The name pages show.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Dhcp => "dhcp",
            Via::Dhcpinfo => "dhcpinfo",
            Via::Http => "http",
            Via::Tftp => "tftp",
        }
    }
}

/// One identified fact that changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactChange {
    /// The device field (`mac`, `ip`, `vendor`, `model`, `version`, `sn`, `plugin`).
    pub field: String,
    /// Its value before; `None` when it had none.
    pub from: Option<String>,
    /// Its value after.
    pub to: Option<String>,
}

/// An identification that changed a device's facts (or created the device).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identification {
    /// When.
    pub at: UnixTime,
    /// Through which transport.
    pub via: Via,
    /// The device's address after it.
    pub ip: Option<String>,
    /// True for the request that created the device.
    #[serde(default)]
    pub created: bool,
    /// What changed.
    pub changes: Vec<FactChange>,
}

/// The identified facts of a device, by field name.
fn facts(device: &Device) -> [(&'static str, Option<String>); 7] {
    [
        ("mac", device.mac.map(|m| m.to_string())),
        ("ip", device.ip.map(|i| i.to_string())),
        ("vendor", device.vendor.clone()),
        ("model", device.model.clone()),
        ("version", device.version.clone()),
        ("sn", device.sn.clone()),
        ("plugin", device.plugin.clone()),
    ]
}

/// The facts that differ between `old` (`None`: a creation) and `new`.
pub(super) fn changes(old: Option<&Device>, new: &Device) -> Vec<FactChange> {
    let before = old.map(facts);
    facts(new)
        .into_iter()
        .enumerate()
        .filter_map(|(n, (field, to))| {
            let from = before.as_ref().and_then(|b| b[n].1.clone());
            (from != to).then(|| FactChange {
                field: field.to_owned(),
                from,
                to,
            })
        })
        .collect()
}

/// Appends `entry` to the history of device `id` inside a transaction, dropping the oldest
/// entries beyond [`HISTORY_LEN`].
pub(super) fn append(tree: &TransactionalTree, id: &str, entry: Identification) -> TxResult<()> {
    // A history that no longer decodes starts again: it must never stop identification.
    let mut list: Vec<Identification> = tree
        .get(id.as_bytes())?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    list.push(entry);
    if list.len() > HISTORY_LEN {
        let excess = list.len() - HISTORY_LEN;
        list.drain(..excess);
    }
    tree.insert(id.as_bytes(), encode(&list))?;
    Ok(())
}

/// Notes an identification through `via` at `at` in the history of `new`, inside the
/// transaction that wrote it: `old` is the record before (`None` when this request created
/// the device). An update that changed no identified fact adds nothing.
pub(super) fn note(
    tree: &TransactionalTree,
    old: Option<&Device>,
    new: &Device,
    via: Via,
    at: UnixTime,
) -> TxResult<()> {
    let created = old.is_none();
    let changes = changes(old, new);
    if !created && changes.is_empty() {
        return Ok(());
    }
    let entry = Identification {
        at,
        via,
        ip: new.ip.map(|ip| ip.to_string()),
        created,
        changes,
    };
    append(tree, &new.id, entry)
}

impl Store {
    /// The identification history of device `id`, oldest first (empty when none).
    pub fn device_history(&self, id: &str) -> Result<Vec<Identification>> {
        Ok(self
            .get(&self.dev_history, "dev_history", id.as_bytes())?
            .unwrap_or_default())
    }

    /// Histories whose device is gone, that do not decode, or that are longer than
    /// [`HISTORY_LEN`]: (histories found, histories that are right).
    pub(super) fn check_history(&self) -> Result<(u64, u64)> {
        let (mut found, mut right) = (0, 0);
        for item in self.dev_history.iter() {
            let (key, value) = item?;
            found += 1;
            let fits = serde_json::from_slice::<Vec<Identification>>(&value)
                .is_ok_and(|list| !list.is_empty() && list.len() <= HISTORY_LEN);
            if fits && self.devices.contains_key(&key)? {
                right += 1;
            }
        }
        Ok((found, right))
    }

    /// Removes the histories [`Store::check_history`] finds wrong (`store check --repair`).
    pub(super) fn prune_history(&self) -> Result<()> {
        for item in self.dev_history.iter() {
            let (key, value) = item?;
            let list = serde_json::from_slice::<Vec<Identification>>(&value).ok();
            let device = self.devices.contains_key(&key)?;
            match list {
                Some(mut list) if device && !list.is_empty() => {
                    if list.len() > HISTORY_LEN {
                        let excess = list.len() - HISTORY_LEN;
                        list.drain(..excess);
                        self.dev_history.insert(&key, encode(&list))?;
                    }
                }
                _ => {
                    self.dev_history.remove(&key)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Device, Mac};

    #[test]
    fn bounded_removed_with_the_device_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut device = Device::new("d1", "master");
        device.mac = Some("00:15:65:00:00:01".parse::<Mac>().unwrap());
        let mut stored = store
            .create_device_identified(&device, Via::Dhcp, 1)
            .unwrap();
        // Only a change of facts is recorded: a last_seen alone is not.
        stored.last_seen = Some(5);
        stored = store
            .update_device_identified(&stored, Via::Http, 5)
            .unwrap();
        assert_eq!(store.device_history("d1").unwrap().len(), 1);
        for n in 0..30 {
            stored.version = Some(format!("1.{n}"));
            stored = store
                .update_device_identified(&stored, Via::Tftp, 10 + n)
                .unwrap();
        }
        let history = store.device_history("d1").unwrap();
        assert_eq!(history.len(), HISTORY_LEN);
        let last = history.last().unwrap();
        assert_eq!((last.at, last.via), (39, Via::Tftp));
        assert_eq!(
            last.changes,
            [FactChange {
                field: "version".into(),
                from: Some("1.28".into()),
                to: Some("1.29".into())
            }]
        );
        assert!(store.check_indexes().unwrap().iter().all(|c| c.consistent));
        // An orphan (left by a hand-edited store) is found and repaired away.
        store.dev_history.insert("ghost", b"[]").unwrap();
        let found = store.check_indexes().unwrap();
        assert!(found
            .iter()
            .any(|c| c.tree == "dev_history" && !c.consistent));
        store.repair_indexes().unwrap();
        assert!(store.check_indexes().unwrap().iter().all(|c| c.consistent));
        store.delete_device("d1").unwrap();
        assert!(store.device_history("d1").unwrap().is_empty());
        assert_eq!(store.dev_history.count().unwrap(), 0);
    }
}
