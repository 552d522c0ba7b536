//! Devices and their MAC (unique), IP and config (shared) indexes.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::kv::Transactional;

use super::kv::{TransactionalTree, Tree};

use super::{
    abort, converge, encode, finish, history, index, link_entries, multi_add, multi_remove,
    next_revision, tx_get, Result, Store, StoreError, TxResult,
};
use crate::model::{validate_id, Device, Mac};

const KIND: &str = "device";

pub(super) fn mac_key(mac: &Mac) -> Vec<u8> {
    mac.octets().to_vec()
}

pub(super) fn ip_key(ip: &IpAddr) -> Vec<u8> {
    ip.to_string().into_bytes()
}

impl Store {
    /// The trees that every device write changes together: the records and their indexes.
    #[allow(clippy::type_complexity)]
    fn device_trees(&self) -> (&Tree, &Tree, &Tree, &Tree, &Tree, &Tree) {
        (
            &self.devices,
            &self.idx_mac,
            &self.idx_ip,
            &self.idx_cfg_devices,
            &self.idx_dev,
            &self.counts,
        )
    }

    /// [`Store::device_trees`] and the devices' identification histories.
    #[allow(clippy::type_complexity)]
    fn device_trees_with_history(&self) -> (&Tree, &Tree, &Tree, &Tree, &Tree, &Tree, &Tree) {
        let t = self.device_trees();
        (t.0, t.1, t.2, t.3, t.4, t.5, &self.dev_history)
    }

    /// Stores a new device (revision 1); its MAC must not belong to another device.
    pub fn create_device(&self, device: &Device) -> Result<Device> {
        self.create_device_noted(device, None)
    }

    /// [`Store::create_device`] for a phone identified through `via` at `at`: its history
    /// starts with this identification.
    pub fn create_device_identified(
        &self,
        device: &Device,
        via: history::Via,
        at: crate::model::UnixTime,
    ) -> Result<Device> {
        self.create_device_noted(device, Some((via, at)))
    }

    fn create_device_noted(
        &self,
        device: &Device,
        note: Option<(history::Via, crate::model::UnixTime)>,
    ) -> Result<Device> {
        validate_id(&device.id)?;
        let mut new = device.clone();
        new.revision = 1;
        let stored = finish(self.device_trees_with_history().transaction(
            |(devices, idx_mac, idx_ip, idx_cfg, idx_dev, counts, dev_history)| {
                if devices.get(new.id.as_bytes())?.is_some() {
                    return Err(abort(StoreError::AlreadyExists {
                        kind: KIND,
                        id: new.id.clone(),
                    }));
                }
                devices.insert(new.id.as_bytes(), encode(&new))?;
                if let Some(mac) = &new.mac {
                    claim_mac(idx_mac, mac, &new.id)?;
                }
                if let Some(ip) = &new.ip {
                    multi_add(idx_ip, "idx_ip", &ip_key(ip), &new.id)?;
                }
                if let Some(config) = &new.config {
                    multi_add(idx_cfg, "idx_cfg_devices", config.as_bytes(), &new.id)?;
                }
                index::reindex(idx_dev, counts, None, Some(&new))?;
                if let Some((via, at)) = note {
                    history::note(dev_history, None, &new, via, at)?;
                }
                Ok(new.clone())
            },
        ))?;
        self.flush()?;
        Ok(stored)
    }

    /// Replaces a device; `device.revision` must be the stored one. Returns the stored record.
    /// A device may change tenant only while it is in the default tenant.
    pub fn update_device(&self, device: &Device) -> Result<Device> {
        let default_tenant = self.default_tenant()?;
        let trees = self.device_trees();
        let stored = finish(trees.transaction(
            |(devices, idx_mac, idx_ip, idx_cfg, idx_dev, counts)| {
                let trees = DeviceTx {
                    devices,
                    idx_mac,
                    idx_ip,
                    idx_cfg,
                    idx_dev,
                    counts,
                };
                trees.update(device, default_tenant.as_deref())
            },
        ))?;
        self.flush()?;
        Ok(stored)
    }

    /// [`Store::update_device`] after an identification through `via` at `at`: when the
    /// identified facts changed (not for `last_seen` alone), the change joins the device's
    /// history in the same transaction.
    pub fn update_device_identified(
        &self,
        device: &Device,
        via: history::Via,
        at: crate::model::UnixTime,
    ) -> Result<Device> {
        let default_tenant = self.default_tenant()?;
        let stored = finish(self.device_trees_with_history().transaction(
            |(devices, idx_mac, idx_ip, idx_cfg, idx_dev, counts, dev_history)| {
                let trees = DeviceTx {
                    devices,
                    idx_mac,
                    idx_ip,
                    idx_cfg,
                    idx_dev,
                    counts,
                };
                let (old, new) = trees.replace(device, default_tenant.as_deref())?;
                history::note(dev_history, Some(&old), &new, via, at)?;
                Ok(new)
            },
        ))?;
        self.flush()?;
        Ok(stored)
    }

    /// Deletes a device and its index entries; returns what was deleted.
    pub fn delete_device(&self, id: &str) -> Result<Device> {
        let old = finish(self.device_trees_with_history().transaction(
            |(devices, idx_mac, idx_ip, idx_cfg, idx_dev, counts, dev_history)| {
                let old: Device = tx_get(devices, "devices", id.as_bytes())?.ok_or_else(|| {
                    abort(StoreError::NotFound {
                        kind: KIND,
                        id: id.to_owned(),
                    })
                })?;
                devices.remove(id.as_bytes())?;
                dev_history.remove(id.as_bytes())?;
                if let Some(mac) = &old.mac {
                    idx_mac.remove(mac_key(mac))?;
                }
                if let Some(ip) = &old.ip {
                    multi_remove(idx_ip, "idx_ip", &ip_key(ip), id)?;
                }
                if let Some(config) = &old.config {
                    multi_remove(idx_cfg, "idx_cfg_devices", config.as_bytes(), id)?;
                }
                index::reindex(idx_dev, counts, Some(&old), None)?;
                Ok(old)
            },
        ))?;
        // Outside the transaction, which every device write pays for: a state left by a
        // crash in between names an id that no device has.
        self.forget_sync_state(id)?;
        self.flush()?;
        Ok(old)
    }

    /// The device with this id.
    pub fn device(&self, id: &str) -> Result<Option<Device>> {
        self.get(&self.devices, "devices", id.as_bytes())
    }

    /// The device with this MAC address.
    pub fn device_by_mac(&self, mac: &Mac) -> Result<Option<Device>> {
        match self.idx_mac.get(mac_key(mac))? {
            Some(id) => self.get(&self.devices, "devices", &id),
            None => Ok(None),
        }
    }

    /// The devices last seen at this IP address (several behind NAT), by id.
    pub fn devices_by_ip(&self, ip: &IpAddr) -> Result<Vec<Device>> {
        self.devices_at_ip(ip, usize::MAX)
    }

    /// At most `limit` of the devices last seen at this IP address, by id.
    pub fn devices_at_ip(&self, ip: &IpAddr, limit: usize) -> Result<Vec<Device>> {
        let mut found = Vec::new();
        for id in self.multi_list(&self.idx_ip, &ip_key(ip), limit)? {
            found.extend(self.device(&id)?);
        }
        Ok(found)
    }

    /// Every device, by id.
    pub fn devices(&self) -> Result<Vec<Device>> {
        self.list(&self.devices, "devices")
    }

    /// Ids of the devices whose config is `config`, sorted, from the index.
    pub fn config_device_ids(&self, config: &str) -> Result<Vec<String>> {
        self.multi_list(&self.idx_cfg_devices, config.as_bytes(), usize::MAX)
    }

    /// Number of devices whose config is `config`, from the index (no scan).
    pub fn config_device_count(&self, config: &str) -> Result<u64> {
        match self.idx_cfg_devices.get(config.as_bytes())? {
            Some(bytes) => super::decode_count("idx_cfg_devices", config.as_bytes(), &bytes),
            None => Ok(0),
        }
    }
}

fn claim_mac(idx_mac: &TransactionalTree, mac: &Mac, id: &str) -> super::TxResult<()> {
    if let Some(owner) = idx_mac.get(mac_key(mac))? {
        if owner.as_ref() != id.as_bytes() {
            return Err(abort(StoreError::Taken {
                what: format!("MAC {mac}"),
                kind: KIND,
                owner: String::from_utf8_lossy(&owner).into_owned(),
            }));
        }
    }
    idx_mac.insert(mac_key(mac), id.as_bytes())?;
    Ok(())
}

/// Rebuilds the device indexes from the device records (schema migrations, `store check
/// --repair`): for each tree, and for each kind of entry of `idx_dev`, one pass over the
/// records gathers the entries they imply and [`converge`] brings the tree to them. Memory
/// holds one kind of entry at a time (about 150 bytes a device), not every index at once.
pub(super) fn rebuild_indexes(store: &Store) -> Result<u64> {
    let mut writes = 0;
    let each_device = |f: &mut dyn FnMut(Device)| -> Result<()> {
        for item in store.devices.iter() {
            let (key, value) = item?;
            f(super::decode("devices", &key, &value)?);
        }
        Ok(())
    };
    let mut macs = Vec::new();
    let mut counts: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    each_device(&mut |device| {
        for key in index::count_keys(&device) {
            *counts.entry(key).or_default() += 1;
        }
        if let Some(mac) = &device.mac {
            macs.push((mac_key(mac), device.id.into_bytes()));
        }
    })?;
    writes += converge(&store.idx_mac, &[], None, macs)?;
    let counts = counts
        .into_iter()
        .map(|(key, n)| (key, n.to_be_bytes().to_vec()))
        .collect();
    writes += converge(&store.counts, &[], None, counts)?;
    type LinkOf = fn(&Device) -> Option<Vec<u8>>;
    let links: [(&Tree, LinkOf); 2] = [
        (&store.idx_ip, |d| d.ip.as_ref().map(ip_key)),
        (&store.idx_cfg_devices, |d| {
            d.config.clone().map(String::into_bytes)
        }),
    ];
    for (tree, link_of) in links {
        let mut pairs = Vec::new();
        each_device(&mut |device| {
            if let Some(link) = link_of(&device) {
                pairs.push((link, device.id));
            }
        })?;
        writes += converge(tree, &[], None, link_entries(pairs))?;
    }
    // Each kind of entry is the range of keys from its tag to the next one's; the first range
    // starts at the tree's beginning and the last runs to its end, so that a key of no kind
    // is removed too.
    let tags = index::tags();
    for (i, &tag) in tags.iter().enumerate() {
        let from = if i == 0 { Vec::new() } else { vec![tag] };
        let to = tags.get(i + 1).map(|&next| [next]);
        let mut keys = Vec::new();
        each_device(&mut |device| {
            keys.extend(
                index::keys_of(&device)
                    .into_iter()
                    .filter(|key| key.first() == Some(&tag))
                    .map(|key| (key, Vec::new())),
            );
        })?;
        writes += converge(&store.idx_dev, &from, to.as_ref().map(|t| &t[..]), keys)?;
    }
    Ok(writes)
}

/// The device trees inside one transaction, for writes that change devices together with
/// other records (a redeemed code).
pub(super) struct DeviceTx<'a, 't> {
    pub devices: &'a TransactionalTree<'t>,
    pub idx_mac: &'a TransactionalTree<'t>,
    pub idx_ip: &'a TransactionalTree<'t>,
    pub idx_cfg: &'a TransactionalTree<'t>,
    pub idx_dev: &'a TransactionalTree<'t>,
    pub counts: &'a TransactionalTree<'t>,
}

impl DeviceTx<'_, '_> {
    /// Replaces a device and its index entries; see [`Store::update_device`].
    pub fn update(&self, device: &Device, default_tenant: Option<&str>) -> TxResult<Device> {
        Ok(self.replace(device, default_tenant)?.1)
    }

    /// [`DeviceTx::update`], returning the record it replaced beside the new one.
    pub fn replace(
        &self,
        device: &Device,
        default_tenant: Option<&str>,
    ) -> TxResult<(Device, Device)> {
        let old: Device =
            tx_get(self.devices, "devices", device.id.as_bytes())?.ok_or_else(|| {
                abort(StoreError::NotFound {
                    kind: KIND,
                    id: device.id.clone(),
                })
            })?;
        let mut new = device.clone();
        new.revision =
            next_revision(KIND, &device.id, device.revision, old.revision).map_err(abort)?;
        if old.tenant != new.tenant && Some(old.tenant.as_str()) != default_tenant {
            return Err(abort(StoreError::TenantLocked {
                device: old.id.clone(),
                tenant: old.tenant.clone(),
            }));
        }
        self.devices.insert(new.id.as_bytes(), encode(&new))?;
        if old.mac != new.mac {
            if let Some(mac) = &old.mac {
                self.idx_mac.remove(mac_key(mac))?;
            }
            if let Some(mac) = &new.mac {
                claim_mac(self.idx_mac, mac, &new.id)?;
            }
        }
        if old.ip != new.ip {
            if let Some(ip) = &old.ip {
                multi_remove(self.idx_ip, "idx_ip", &ip_key(ip), &new.id)?;
            }
            if let Some(ip) = &new.ip {
                multi_add(self.idx_ip, "idx_ip", &ip_key(ip), &new.id)?;
            }
        }
        if old.config != new.config {
            if let Some(config) = &old.config {
                multi_remove(self.idx_cfg, "idx_cfg_devices", config.as_bytes(), &new.id)?;
            }
            if let Some(config) = &new.config {
                multi_add(self.idx_cfg, "idx_cfg_devices", config.as_bytes(), &new.id)?;
            }
        }
        index::reindex(self.idx_dev, self.counts, Some(&old), Some(&new))?;
        Ok((old, new))
    }
}
