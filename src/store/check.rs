//! `provisiond store check [--repair]`: do the derived trees match their records?
//!
//! Each derived tree is compared with what its records imply through an order-independent
//! digest (the number of entries and the wrapping sum of a hash of each key and value), read
//! in one pass over the records and one over the tree: memory stays small whatever the number
//! of devices, except for the per-key link counts of the shared indexes (one number per IP
//! address, config or parent). A mismatch names the tree; `--repair` rebuilds every derived
//! tree from the records, as a schema migration does. The identification histories are
//! checked too: one per existing device, at most [`super::HISTORY_LEN`] entries.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use super::{decode, devices, index, link_key, Result, Store};
use crate::model::{Config, Device, Tenant};

/// What the check found in one derived tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeCheck {
    /// The tree's name.
    pub tree: &'static str,
    /// Entries its records imply.
    pub expected: u64,
    /// Entries it holds.
    pub found: u64,
    /// Whether the entries are exactly the implied ones.
    pub consistent: bool,
}

#[derive(Default, PartialEq, Eq)]
struct Digest {
    entries: u64,
    sum: u64,
}

impl Digest {
    fn add(&mut self, key: &[u8], value: &[u8]) {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        value.hash(&mut hasher);
        self.entries += 1;
        self.sum = self.sum.wrapping_add(hasher.finish());
    }

    /// A shared index: one link per (key, id) and the number of links under each key.
    fn add_links(&mut self, links: BTreeMap<Vec<u8>, Vec<String>>) {
        for (key, ids) in links {
            for id in &ids {
                self.add(&link_key(&key, id), &[]);
            }
            self.add(&key, &(ids.len() as u64).to_be_bytes());
        }
    }

    fn of_tree(tree: &super::kv::Tree) -> Result<Digest> {
        let mut digest = Digest::default();
        for item in tree.iter() {
            let (key, value) = item?;
            digest.add(&key, &value);
        }
        Ok(digest)
    }
}

impl Store {
    /// Compares every derived tree with its records (the lease → MAC index excepted: it is
    /// checked against the leases at an open that finds no mark that it was, which this
    /// command's own open may be).
    pub fn check_indexes(&self) -> Result<Vec<TreeCheck>> {
        let mut mac = Digest::default();
        let mut dev = Digest::default();
        let mut ip: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
        let mut cfg_devices: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
        let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        for item in self.devices.iter() {
            let (key, value) = item?;
            let device: Device = decode("devices", &key, &value)?;
            if let Some(m) = &device.mac {
                mac.add(&devices::mac_key(m), device.id.as_bytes());
            }
            if let Some(addr) = &device.ip {
                ip.entry(devices::ip_key(addr))
                    .or_default()
                    .push(device.id.clone());
            }
            if let Some(config) = &device.config {
                cfg_devices
                    .entry(config.clone().into_bytes())
                    .or_default()
                    .push(device.id.clone());
            }
            for key in index::keys_of(&device) {
                dev.add(&key, &[]);
            }
            for key in index::count_keys(&device) {
                *counts.entry(key).or_default() += 1;
            }
        }
        let mut ip_digest = Digest::default();
        ip_digest.add_links(ip);
        let mut cfg_devices_digest = Digest::default();
        cfg_devices_digest.add_links(cfg_devices);
        let mut counts_digest = Digest::default();
        for (key, n) in counts {
            counts_digest.add(&key, &n.to_be_bytes());
        }
        let mut children: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
        for item in self.configs.iter() {
            let (key, value) = item?;
            let config: Config = decode("configs", &key, &value)?;
            for parent in config.parent_ids {
                children
                    .entry(parent.into_bytes())
                    .or_default()
                    .push(config.id.clone());
            }
        }
        let mut children_digest = Digest::default();
        children_digest.add_links(children);
        let mut keys = Digest::default();
        for item in self.tenants.iter() {
            let (key, value) = item?;
            let tenant: Tenant = decode("tenants", &key, &value)?;
            if let Some(k) = &tenant.provisioning_key {
                keys.add(k.as_bytes(), tenant.id.as_bytes());
            }
        }
        let report =
            |tree: &'static str, expected: Digest, actual: &super::kv::Tree| -> Result<TreeCheck> {
                let found = Digest::of_tree(actual)?;
                Ok(TreeCheck {
                    tree,
                    expected: expected.entries,
                    found: found.entries,
                    consistent: found == expected,
                })
            };
        // Histories are records, not derived: each must belong to a device and be bounded.
        let (histories, right) = self.check_history()?;
        let history = TreeCheck {
            tree: "dev_history",
            expected: right,
            found: histories,
            consistent: right == histories,
        };
        Ok(vec![
            report("idx_mac", mac, &self.idx_mac)?,
            report("idx_ip", ip_digest, &self.idx_ip)?,
            report("idx_cfg_devices", cfg_devices_digest, &self.idx_cfg_devices)?,
            report("idx_dev", dev, &self.idx_dev)?,
            report("counts", counts_digest, &self.counts)?,
            report("cfg_children", children_digest, &self.cfg_children)?,
            report("idx_tenant_key", keys, &self.idx_tenant_key)?,
            history,
        ])
    }

    /// Rebuilds every derived tree from the records, drops the histories of devices that
    /// are gone (and those that do not decode), and flushes. Returns the index entries that
    /// differed from the records (written or removed).
    pub fn repair_indexes(&self) -> Result<u64> {
        let rewritten = super::schema::rebuild_all_indexes(self)?;
        self.prune_history()?;
        self.flush()?;
        Ok(rewritten)
    }
}
