//! The devices' secondary indexes and counts, kept in the same transaction as the records.
//!
//! `idx_dev` holds, for every device, one membership entry `T NUL tenant NUL id` and one entry
//! per indexed field `tag NUL tenant NUL value NUL id` (the value as the API shows it, `""`
//! when the device has none). Keys sort by tenant, then value, then id, so that a tenant's
//! devices with one value, or all of a tenant's devices in the order of a field, are one
//! prefix or range scan: the cost of a listing is the size of its answer, not the number of
//! devices. `counts` holds the number of devices in all, per tenant, per tenant and plugin, and
//! per tenant and [`DeviceState`].
//!
//! Values may contain any character: NUL and 0x01 are escaped (`01 01`, `01 02`), which keeps
//! byte order equal to the order of the unescaped strings, and NUL stays a separator that
//! sorts before every value byte.

use super::kv::TransactionalTree;

use super::{abort, decode_count, Result, Store, StoreError, TxResult};
use crate::model::{Added, Device};

/// A device field with an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    /// `mac`, as `aa:bb:cc:dd:ee:ff`.
    Mac,
    /// `ip`, in its canonical text form.
    Ip,
    /// `plugin`.
    Plugin,
    /// `config`.
    Config,
    /// `vendor`.
    Vendor,
    /// `model`.
    Model,
    /// `version`.
    Version,
    /// `sn`, the serial number.
    Sn,
    /// `added` (`auto`, or nothing for a device made by hand).
    Added,
}

/// Every indexed field.
pub const FIELDS: [Field; 9] = [
    Field::Mac,
    Field::Ip,
    Field::Plugin,
    Field::Config,
    Field::Vendor,
    Field::Model,
    Field::Version,
    Field::Sn,
    Field::Added,
];

const MEMBER: u8 = b'T';

impl Field {
    /// The key of the field in the API's device object.
    pub fn name(self) -> &'static str {
        match self {
            Field::Mac => "mac",
            Field::Ip => "ip",
            Field::Plugin => "plugin",
            Field::Config => "config",
            Field::Vendor => "vendor",
            Field::Model => "model",
            Field::Version => "version",
            Field::Sn => "sn",
            Field::Added => "added",
        }
    }

    /// The field whose API key is `name`.
    pub fn from_name(name: &str) -> Option<Field> {
        FIELDS.into_iter().find(|f| f.name() == name)
    }

    fn tag(self) -> u8 {
        match self {
            Field::Mac => b'm',
            Field::Ip => b'i',
            Field::Plugin => b'p',
            Field::Config => b'c',
            Field::Vendor => b'v',
            Field::Model => b'o',
            Field::Version => b'r',
            Field::Sn => b's',
            Field::Added => b'a',
        }
    }

    /// The device's value as the API shows it; `""` when it has none.
    pub fn value_of(self, device: &Device) -> String {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        match self {
            Field::Mac => device.mac.map(|m| m.to_string()).unwrap_or_default(),
            Field::Ip => device.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            Field::Plugin => text(&device.plugin),
            Field::Config => text(&device.config),
            Field::Vendor => text(&device.vendor),
            Field::Model => text(&device.model),
            Field::Version => text(&device.version),
            Field::Sn => text(&device.sn),
            Field::Added => match device.added {
                Added::Auto => "auto".to_owned(),
                Added::Manual => String::new(),
            },
        }
    }
}

/// Escapes a value so that NUL can separate the parts of a key, keeping the byte order.
fn escape(value: &str, out: &mut Vec<u8>) {
    escape_bytes(value.as_bytes(), out)
}

fn escape_bytes(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        match b {
            0 => out.extend_from_slice(&[1, 1]),
            1 => out.extend_from_slice(&[1, 2]),
            b => out.push(b),
        }
    }
}

/// The inverse of [`escape`].
fn unescape(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut it = bytes.iter();
    while let Some(&b) = it.next() {
        if b == 1 {
            out.push(it.next().map_or(1, |&n| n - 1));
        } else {
            out.push(b);
        }
    }
    out
}

/// `tag NUL tenant NUL` — every key of one tenant's index of one field (or membership).
pub(super) fn tenant_prefix(tag: u8, tenant: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(tenant.len() + 3);
    key.push(tag);
    key.push(0);
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key
}

/// `tag NUL tenant NUL value NUL` — the keys of one value.
fn value_prefix(field: Field, tenant: &str, value: &str) -> Vec<u8> {
    let mut key = tenant_prefix(field.tag(), tenant);
    escape(value, &mut key);
    key.push(0);
    key
}

fn member_key(tenant: &str, id: &str) -> Vec<u8> {
    let mut key = tenant_prefix(MEMBER, tenant);
    key.extend_from_slice(id.as_bytes());
    key
}

fn field_key(field: Field, tenant: &str, value: &str, id: &str) -> Vec<u8> {
    let mut key = value_prefix(field, tenant, value);
    key.extend_from_slice(id.as_bytes());
    key
}

/// Serial numbers are also indexed across tenants (`S NUL sn NUL id`): a lookup by serial
/// over a subtree of many tenants is then one prefix scan, not one per tenant.
const SERIAL: u8 = b'S';

fn serial_prefix(sn: &str) -> Vec<u8> {
    let mut key = vec![SERIAL, 0];
    escape(sn, &mut key);
    key.push(0);
    key
}

/// The first bytes of `idx_dev`'s keys, one per kind of entry, in ascending order.
pub(super) fn tags() -> Vec<u8> {
    let mut tags: Vec<u8> = FIELDS.iter().map(|f| f.tag()).collect();
    tags.extend([MEMBER, SERIAL]);
    tags.sort_unstable();
    tags
}

/// Every `idx_dev` key of a device.
pub(super) fn keys_of(device: &Device) -> Vec<Vec<u8>> {
    let mut keys = vec![member_key(&device.tenant, &device.id)];
    if let Some(sn) = &device.sn {
        let mut key = serial_prefix(sn);
        key.extend_from_slice(device.id.as_bytes());
        keys.push(key);
    }
    for field in FIELDS {
        keys.push(field_key(
            field,
            &device.tenant,
            &field.value_of(device),
            &device.id,
        ));
    }
    keys
}

const ALL: &[u8] = b"all";

fn tenant_count_key(tenant: &str) -> Vec<u8> {
    let mut key = b"T\0".to_vec();
    key.extend_from_slice(tenant.as_bytes());
    key
}

fn plugin_count_key(tenant: &str, plugin: &str) -> Vec<u8> {
    let mut key = b"P\0".to_vec();
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    escape(plugin, &mut key);
    key
}

/// Where a device stands in provisioning, as the counts tell it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// It received its configuration (a code, an automatic URL).
    Configured,
    /// Its config is `autoprov`: it waits for a code.
    Autoprov,
    /// Anything else (a config set by hand, no config).
    NotConfigured,
}

/// Every device state, in the order pages show them.
pub const DEVICE_STATES: [DeviceState; 3] = [
    DeviceState::Configured,
    DeviceState::Autoprov,
    DeviceState::NotConfigured,
];

impl DeviceState {
    /// The state of `device`.
    pub fn of(device: &Device) -> DeviceState {
        if device.configured {
            DeviceState::Configured
        } else if device.config.as_deref() == Some(super::AUTOPROV_CONFIG) {
            DeviceState::Autoprov
        } else {
            DeviceState::NotConfigured
        }
    }

    /// The name pages and metrics show.
    pub fn name(self) -> &'static str {
        match self {
            DeviceState::Configured => "configured",
            DeviceState::Autoprov => "autoprov",
            DeviceState::NotConfigured => "not configured",
        }
    }

    fn tag(self) -> u8 {
        match self {
            DeviceState::Configured => b'c',
            DeviceState::Autoprov => b'a',
            DeviceState::NotConfigured => b'n',
        }
    }
}

fn state_count_key(tenant: &str, state: DeviceState) -> Vec<u8> {
    let mut key = b"C\0".to_vec();
    key.extend_from_slice(tenant.as_bytes());
    key.push(0);
    key.push(state.tag());
    key
}

/// The count keys a device adds 1 to.
pub(super) fn count_keys(device: &Device) -> [Vec<u8>; 4] {
    [
        ALL.to_vec(),
        tenant_count_key(&device.tenant),
        plugin_count_key(&device.tenant, device.plugin.as_deref().unwrap_or("")),
        state_count_key(&device.tenant, DeviceState::of(device)),
    ]
}

fn add_count(counts: &TransactionalTree, key: &[u8], delta: i64) -> TxResult<()> {
    let now = match counts.get(key)? {
        Some(bytes) => decode_count("counts", key, &bytes).map_err(abort)?,
        None => 0,
    };
    let next = now.checked_add_signed(delta).ok_or_else(|| {
        abort(StoreError::Corrupt {
            tree: "counts",
            key: String::from_utf8_lossy(key).into_owned(),
            source: serde::de::Error::custom("a count below zero: run `provisiond store check`"),
        })
    })?;
    if next == 0 {
        counts.remove(key)?;
    } else {
        counts.insert(key, next.to_be_bytes())?;
    }
    Ok(())
}

/// Index entries and counts of a device write, inside its transaction: `old` is the stored
/// record (`None` for a creation), `new` the written one (`None` for a deletion).
pub(super) fn reindex(
    idx: &TransactionalTree,
    counts: &TransactionalTree,
    old: Option<&Device>,
    new: Option<&Device>,
) -> TxResult<()> {
    let old_keys = old.map(keys_of).unwrap_or_default();
    let new_keys = new.map(keys_of).unwrap_or_default();
    for key in old_keys.iter().filter(|k| !new_keys.contains(k)) {
        idx.remove(key.as_slice())?;
    }
    for key in new_keys.iter().filter(|k| !old_keys.contains(k)) {
        idx.insert(key.as_slice(), [])?;
    }
    let old_counts = old.map(count_keys);
    let new_counts = new.map(count_keys);
    for key in old_counts.iter().flatten() {
        if !new_counts.iter().flatten().any(|k| k == key) {
            add_count(counts, key, -1)?;
        }
    }
    for key in new_counts.iter().flatten() {
        if !old_counts.iter().flatten().any(|k| k == key) {
            add_count(counts, key, 1)?;
        }
    }
    Ok(())
}

/// Ids that follow `prefix` in `idx_dev` keys whose last part is the id.
fn ids_after(
    tree: &super::kv::Tree,
    prefix: Vec<u8>,
) -> impl Iterator<Item = Result<String>> + Send + 'static {
    let skip = prefix.len();
    tree.scan_prefix(prefix)
        .keys()
        .map(move |k| Ok(String::from_utf8_lossy(&k?[skip..]).into_owned()))
}

/// Splits a field index key after its `skip`-byte prefix into (value, id).
fn split_ordered(key: &[u8], skip: usize) -> Result<Ordered> {
    let rest = key.get(skip..).unwrap_or_default();
    let Some(sep) = rest.iter().position(|&b| b == 0) else {
        return Err(StoreError::Corrupt {
            tree: "idx_dev",
            key: String::from_utf8_lossy(key).into_owned(),
            source: serde::de::Error::custom("an index key without its id"),
        });
    };
    Ok((
        unescape(&rest[..sep]),
        String::from_utf8_lossy(&rest[sep + 1..]).into_owned(),
    ))
}

/// One entry of a field index in value order: the value (unescaped) and the device id.
pub type Ordered = (Vec<u8>, String);

impl Store {
    /// Ids of `tenant`'s devices, by id.
    pub fn tenant_device_ids(
        &self,
        tenant: &str,
    ) -> impl Iterator<Item = Result<String>> + Send + 'static {
        ids_after(&self.idx_dev, tenant_prefix(MEMBER, tenant))
    }

    /// Ids of `tenant`'s devices whose `field` shows `value` (`""`: none), by id.
    pub fn field_device_ids(
        &self,
        field: Field,
        tenant: &str,
        value: &str,
    ) -> impl Iterator<Item = Result<String>> + Send + 'static {
        ids_after(&self.idx_dev, value_prefix(field, tenant, value))
    }

    /// Ids of the devices of every tenant whose serial number is `sn`, by id.
    pub fn serial_device_ids(&self, sn: &str) -> impl Iterator<Item = Result<String>> + Send {
        ids_after(&self.idx_dev, serial_prefix(sn))
    }

    /// Whether `tenant` has more than `n` devices whose `field` shows `value` (an estimate of a
    /// selector's cost that reads at most `n + 1` keys).
    pub fn field_has_more_than(
        &self,
        field: Field,
        tenant: &str,
        value: &str,
        n: usize,
    ) -> Result<bool> {
        let mut found = 0;
        for key in self
            .idx_dev
            .scan_prefix(value_prefix(field, tenant, value))
            .keys()
        {
            key?;
            found += 1;
            if found > n {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `tenant`'s devices in the order of `field`: ascending values, each value's devices by
    /// id; with `descending`, descending values, each value's devices still by id (the order
    /// of a stable sort on the field). Reads one key per device returned, whatever the size
    /// of a value's group.
    pub fn field_ordered(
        &self,
        field: Field,
        tenant: &str,
        descending: bool,
    ) -> Box<dyn Iterator<Item = Result<Ordered>> + Send> {
        let tree = self.idx_dev.clone();
        let start = tenant_prefix(field.tag(), tenant);
        let skip = start.len();
        let read = move |key: super::kv::KvResult<super::kv::IVec>| -> Result<Ordered> {
            split_ordered(&key?, skip)
        };
        if !descending {
            return Box::new(tree.scan_prefix(start).keys().map(read));
        }
        // Descending: the highest value left, then its group read forwards, and again below.
        let mut upper: Option<Vec<u8>> = None;
        let mut group: Option<Box<dyn Iterator<Item = Result<Ordered>> + Send>> = None;
        Box::new(std::iter::from_fn(move || loop {
            if let Some(item) = group.as_mut().and_then(Iterator::next) {
                return Some(item);
            }
            let last = match &upper {
                None => tree.scan_prefix(&start).keys().next_back(),
                Some(bound) => tree.range(start.clone()..bound.clone()).keys().next_back(),
            };
            let (value, _) = match last?
                .map_err(StoreError::from)
                .and_then(|k| split_ordered(&k, skip))
            {
                Ok(parts) => parts,
                Err(e) => return Some(Err(e)),
            };
            let mut group_prefix = start.clone();
            escape_bytes(&value, &mut group_prefix);
            group_prefix.push(0);
            upper = Some(group_prefix.clone());
            group = Some(Box::new(tree.scan_prefix(group_prefix).keys().map(read)));
        }))
    }

    /// Number of devices, from the counts (no scan).
    pub fn device_count(&self) -> usize {
        self.count(ALL).unwrap_or(0) as usize
    }

    /// Number of `tenant`'s devices, from the counts.
    pub fn tenant_device_count(&self, tenant: &str) -> Result<u64> {
        self.count(&tenant_count_key(tenant))
    }

    /// Devices per (tenant, plugin), `""` for no plugin; one read per pair.
    pub fn plugin_counts(&self) -> Result<Vec<(String, String, u64)>> {
        let mut out = Vec::new();
        for item in self.counts.scan_prefix(b"P\0") {
            let (key, value) = item?;
            let rest = &key[2..];
            let sep = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            let plugin = rest.get(sep + 1..).map(unescape).unwrap_or_default();
            out.push((
                String::from_utf8_lossy(&rest[..sep]).into_owned(),
                String::from_utf8_lossy(&plugin).into_owned(),
                decode_count("counts", &key, &value)?,
            ));
        }
        Ok(out)
    }

    /// `tenant`'s devices per plugin (`""` for none), from the counts: one read per plugin.
    pub fn tenant_plugin_counts(&self, tenant: &str) -> Result<Vec<(String, u64)>> {
        let mut prefix = b"P\0".to_vec();
        prefix.extend_from_slice(tenant.as_bytes());
        prefix.push(0);
        let mut out = Vec::new();
        for item in self.counts.scan_prefix(&prefix) {
            let (key, value) = item?;
            let plugin = unescape(&key[prefix.len()..]);
            out.push((
                String::from_utf8_lossy(&plugin).into_owned(),
                decode_count("counts", &key, &value)?,
            ));
        }
        Ok(out)
    }

    /// `tenant`'s devices in each state, from the counts (three reads).
    pub fn tenant_state_counts(&self, tenant: &str) -> Result<Vec<(DeviceState, u64)>> {
        DEVICE_STATES
            .into_iter()
            .map(|state| Ok((state, self.count(&state_count_key(tenant, state))?)))
            .collect()
    }

    fn count(&self, key: &[u8]) -> Result<u64> {
        match self.counts.get(key)? {
            Some(bytes) => decode_count("counts", key, &bytes),
            None => Ok(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_the_order_and_round_trips() {
        let mut values = vec!["", "a", "a\u{0}", "a\u{1}", "a\u{2}", "ab", "a\u{0}b", "b"];
        values.sort();
        let escaped: Vec<Vec<u8>> = values
            .iter()
            .map(|v| {
                let mut out = Vec::new();
                escape(v, &mut out);
                out.push(0);
                out
            })
            .collect();
        let mut sorted = escaped.clone();
        sorted.sort();
        assert_eq!(escaped, sorted, "the escaped keys sort as the strings");
        for v in values {
            let mut out = Vec::new();
            escape(v, &mut out);
            assert!(!out.contains(&0));
            assert_eq!(unescape(&out), v.as_bytes());
        }
    }
}
