//! Tenants, tokens, provisioning codes, leases, and the records every store starts with.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::kv::Transactional;
use super::kv::TransactionalTree;

use super::{
    abort, decode, encode, finish, next_revision, tx_get, Result, Store, StoreError, TxResult,
};
use crate::model::{
    validate_id, Code, Config, Lease, LeaseView, Mac, RawConfig, Tenant, TenantTree, Token,
    MAX_TENANT_DEPTH,
};

const DEFAULT_TENANT_KEY: &[u8] = b"default_tenant";
/// Key in `meta` of the secret that signs the code form's per-device URLs.
const CODE_FORM_SECRET: &[u8] = b"code_form_secret";
/// Length of that secret, in bytes.
pub const CODE_FORM_SECRET_LEN: usize = 32;
/// Key in `meta` present while the lease MAC index agrees with the leases on disk.
const LEASE_INDEX_SETTLED: &[u8] = b"lease_index_settled";

/// Id of the config every other config inherits from.
pub const BASE_CONFIG: &str = "base";
/// Id of the config given to autocreated devices.
pub const AUTOPROV_CONFIG: &str = "autoprov";
/// Role of the configs that `POST /cfg_mgr/autocreate` copies (wazo-provd's name).
pub const AUTOCREATE_ROLE: &str = "autocreate";

fn claim_key(idx: &TransactionalTree, key: &Option<String>, tenant: &str) -> TxResult<()> {
    let Some(key) = key else { return Ok(()) };
    if let Some(owner) = idx.get(key.as_bytes())? {
        if owner.as_ref() != tenant.as_bytes() {
            return Err(abort(StoreError::Taken {
                what: "provisioning key".to_owned(),
                kind: "tenant",
                owner: String::from_utf8_lossy(&owner).into_owned(),
            }));
        }
    }
    idx.insert(key.as_bytes(), tenant.as_bytes())?;
    Ok(())
}

impl Store {
    /// Creates the default tenant and the built-in configs `base` and `autoprov` when missing,
    /// and makes the default tenant the root of the tenant tree: every other tenant without a
    /// parent (all of them in a store made before tenants had parents) becomes its child.
    pub fn ensure_defaults(&self, default_tenant: &str) -> Result<()> {
        validate_id(default_tenant)?;
        self.meta
            .insert(DEFAULT_TENANT_KEY, default_tenant.as_bytes())?;
        // Not one transaction, but every step is idempotent and the
        // whole runs again at the next start if this one is interrupted.
        let mut adopted = 0usize;
        for mut tenant in self.tenants()? {
            let parent = (tenant.id != default_tenant)
                .then(|| tenant.parent.clone().unwrap_or(default_tenant.to_owned()));
            if tenant.parent != parent {
                adopted += usize::from(parent.is_some());
                tenant.parent = parent;
                tenant.revision += 1;
                self.tenants.insert(tenant.id.as_bytes(), encode(&tenant))?;
            }
        }
        if self.tenants.get(default_tenant.as_bytes())?.is_none() {
            let mut tenant = Tenant::new(default_tenant, None);
            tenant.revision = 1;
            self.tenants
                .insert(default_tenant.as_bytes(), encode(&tenant))?;
        }
        self.tenants_changed();
        if adopted > 0 {
            tracing::info!(
                tenants = adopted,
                root = default_tenant,
                "tenants without a parent are now children of the default tenant"
            );
        }
        finish(
            (&self.configs, &self.cfg_children).transaction(|(configs, children)| {
                let builtin = |id: &str, parents: &[&str], role: Option<&str>| Config {
                    id: id.to_owned(),
                    parent_ids: parents.iter().map(|p| p.to_string()).collect(),
                    raw_config: RawConfig::new(),
                    tenant: default_tenant.to_owned(),
                    deletable: false,
                    transient: false,
                    role: role.map(str::to_owned),
                    extra: Default::default(),
                    generation: super::generation(),
                    revision: 1,
                };
                if configs.get(BASE_CONFIG)?.is_none() {
                    configs.insert(BASE_CONFIG, encode(&builtin(BASE_CONFIG, &[], None)))?;
                }
                if configs.get(AUTOPROV_CONFIG)?.is_none() {
                    configs.insert(
                        AUTOPROV_CONFIG,
                        // wazo-provd's `autoprov` is the template of
                        // `POST /cfg_mgr/autocreate` (its role says so); a store made
                        // before this keeps its `autoprov` as the admin left it.
                        encode(&builtin(
                            AUTOPROV_CONFIG,
                            &[BASE_CONFIG],
                            Some(AUTOCREATE_ROLE),
                        )),
                    )?;
                    super::multi_add(
                        children,
                        "cfg_children",
                        BASE_CONFIG.as_bytes(),
                        AUTOPROV_CONFIG,
                    )?;
                }
                Ok(())
            }),
        )?;
        self.flush()
    }

    /// The tenant new devices join, as recorded by [`Store::ensure_defaults`].
    pub fn default_tenant(&self) -> Result<Option<String>> {
        Ok(self
            .meta
            .get(DEFAULT_TENANT_KEY)?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// The secret that signs the code form's per-device URLs ([`crate::codeform`]): 32 bytes
    /// from the OS random source, created on first use and kept in `meta`, so that URLs
    /// already written into phones' files stay valid across restarts. Two first callers at
    /// once agree on one secret (the second one's candidate loses the compare-and-swap).
    pub fn code_form_secret(&self) -> Result<[u8; CODE_FORM_SECRET_LEN]> {
        let stored = |bytes: &[u8]| -> Result<[u8; CODE_FORM_SECRET_LEN]> {
            bytes.try_into().map_err(|_| {
                StoreError::Invalid(format!(
                    "meta key code_form_secret holds {} bytes, not {CODE_FORM_SECRET_LEN}",
                    bytes.len()
                ))
            })
        };
        if let Some(bytes) = self.meta.get(CODE_FORM_SECRET)? {
            return stored(&bytes);
        }
        let mut candidate = [0u8; CODE_FORM_SECRET_LEN];
        getrandom::fill(&mut candidate).map_err(|e| StoreError::Random(e.to_string()))?;
        match self.meta.compare_and_swap(
            CODE_FORM_SECRET,
            None as Option<&[u8]>,
            Some(&candidate[..]),
        )? {
            Ok(()) => {
                self.flush()?;
                Ok(candidate)
            }
            Err(lost) => match lost.current {
                // The winner may not have flushed yet; this caller hands the secret out too.
                Some(current) => {
                    self.flush()?;
                    stored(&current)
                }
                None => Err(StoreError::Invalid(
                    "meta key code_form_secret vanished while it was created".to_owned(),
                )),
            },
        }
    }

    /// A global setting (REST `/configure` parameters such as `locale` or `NAT`).
    pub fn param(&self, name: &str) -> Result<Option<serde_json::Value>> {
        self.get(&self.meta, "meta", format!("param.{name}").as_bytes())
    }

    /// Sets or (with `None`) clears a global setting.
    pub fn set_param(&self, name: &str, value: Option<&serde_json::Value>) -> Result<()> {
        let key = format!("param.{name}");
        match value {
            Some(v) => self.meta.insert(key.as_bytes(), encode(v))?,
            None => drop(self.meta.remove(key.as_bytes())?),
        }
        self.flush()
    }

    /// Deletes a tenant that has no child tenant and owns no device and no config; returns it.
    pub fn delete_tenant(&self, id: &str) -> Result<Tenant> {
        if self.default_tenant()?.as_deref() == Some(id) {
            return Err(StoreError::NotDeletable {
                kind: "tenant",
                id: id.to_owned(),
            });
        }
        let _writing = self.tenant_writes();
        let children = self.tenant_tree()?.children(id).len();
        let devices = self.tenant_device_count(id)?;
        let configs = self
            .configs()?
            .into_iter()
            .filter(|c| c.tenant == id)
            .count();
        if children > 0 || devices > 0 || configs > 0 {
            return Err(StoreError::InUse {
                kind: "tenant",
                id: id.to_owned(),
                users: format!(
                    "{children} child tenant(s), {devices} device(s) and {configs} config(s)"
                ),
            });
        }
        let old = finish(
            (&self.tenants, &self.idx_tenant_key).transaction(|(tenants, keys)| {
                let old: Tenant = tx_get(tenants, "tenants", id.as_bytes())?.ok_or_else(|| {
                    abort(StoreError::NotFound {
                        kind: "tenant",
                        id: id.to_owned(),
                    })
                })?;
                tenants.remove(id.as_bytes())?;
                if let Some(key) = &old.provisioning_key {
                    keys.remove(key.as_bytes())?;
                }
                Ok(old)
            }),
        )?;
        self.tenants_changed();
        // Its tokens would otherwise authenticate for a tenant that no longer exists (and
        // again if the id were reused).
        for token in self.tokens()?.into_iter().filter(|t| t.tenant == id) {
            self.tokens.remove(token.hash.as_bytes())?;
        }
        // Its console users likewise.
        for user in self.users()?.into_iter().filter(|u| u.tenant == id) {
            self.users.remove(user.name.as_bytes())?;
        }
        self.flush()?;
        Ok(old)
    }

    /// Stores a new tenant under an existing parent (every tenant but the default one has
    /// one), at most [`MAX_TENANT_DEPTH`] levels deep; its provisioning key, if any, must be
    /// unused.
    pub fn create_tenant(&self, tenant: &Tenant) -> Result<Tenant> {
        validate_id(&tenant.id)?;
        let mut new = tenant.clone();
        new.revision = 1;
        let _writing = self.tenant_writes();
        let Some(parent) = &new.parent else {
            return Err(StoreError::Invalid(format!(
                "tenant {:?} needs a parent tenant",
                new.id
            )));
        };
        let tree = self.tenant_tree()?;
        if !tree.contains(parent) {
            return Err(StoreError::InvalidReference(format!(
                "parent tenant {parent:?} does not exist"
            )));
        }
        if tree.depth(parent) + 1 > MAX_TENANT_DEPTH {
            return Err(StoreError::Invalid(format!(
                "tenant {:?} would be deeper than {MAX_TENANT_DEPTH} levels",
                new.id
            )));
        }
        let stored = finish((&self.tenants, &self.idx_tenant_key).transaction(
            |(tenants, keys)| {
                if tenants.get(new.id.as_bytes())?.is_some() {
                    return Err(abort(StoreError::AlreadyExists {
                        kind: "tenant",
                        id: new.id.clone(),
                    }));
                }
                tenants.insert(new.id.as_bytes(), encode(&new))?;
                claim_key(keys, &new.provisioning_key, &new.id)?;
                Ok(new.clone())
            },
        ))?;
        self.tenants_changed();
        self.flush()?;
        Ok(stored)
    }

    /// Replaces a tenant; `tenant.revision` must be the stored one.
    pub fn update_tenant(&self, tenant: &Tenant) -> Result<Tenant> {
        let stored = finish((&self.tenants, &self.idx_tenant_key).transaction(
            |(tenants, keys)| {
                let old: Tenant =
                    tx_get(tenants, "tenants", tenant.id.as_bytes())?.ok_or_else(|| {
                        abort(StoreError::NotFound {
                            kind: "tenant",
                            id: tenant.id.clone(),
                        })
                    })?;
                let mut new = tenant.clone();
                new.revision = next_revision("tenant", &tenant.id, tenant.revision, old.revision)
                    .map_err(abort)?;
                // A tenant never moves: its devices' tenant rules and its tokens' reach were
                // granted where it stands.
                if new.parent != old.parent {
                    return Err(abort(StoreError::Invalid(format!(
                        "the parent of tenant {:?} cannot change",
                        new.id
                    ))));
                }
                tenants.insert(new.id.as_bytes(), encode(&new))?;
                if old.provisioning_key != new.provisioning_key {
                    if let Some(key) = &old.provisioning_key {
                        keys.remove(key.as_bytes())?;
                    }
                    claim_key(keys, &new.provisioning_key, &new.id)?;
                }
                Ok(new)
            },
        ))?;
        self.tenants_changed();
        self.flush()?;
        Ok(stored)
    }

    /// The tenant tree, as of the last tenant write (kept in memory between writes).
    pub fn tenant_tree(&self) -> Result<Arc<TenantTree>> {
        let cache = &self.tenant_tree;
        let version = cache.version.load(Ordering::Acquire);
        if let Some((at, tree)) = &*cache.tree.lock().unwrap_or_else(|e| e.into_inner()) {
            if *at == version {
                return Ok(Arc::clone(tree));
            }
        }
        let tree = Arc::new(TenantTree::new(&self.tenants()?));
        // Kept only if no tenant write happened while it was read.
        if cache.version.load(Ordering::Acquire) == version {
            *cache.tree.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((version, Arc::clone(&tree)));
        }
        Ok(tree)
    }

    /// Drops the cached tenant tree after a tenant write.
    fn tenants_changed(&self) {
        self.tenant_tree.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Serialises the tenant writes that check the tree before they write (a child created
    /// under a tenant being deleted would be left without a parent).
    fn tenant_writes(&self) -> std::sync::MutexGuard<'_, ()> {
        self.tenant_tree
            .writing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The default configs that apply to devices of `tenant`, most general first: those of
    /// the tenants above it, from the root down, then its own.
    pub fn default_configs(&self, tenant: &str) -> Result<Vec<String>> {
        let tree = self.tenant_tree()?;
        let mut line = tree.ancestors(tenant);
        line.reverse();
        line.push(tenant.to_owned());
        let mut out = Vec::new();
        for id in line {
            if let Some(config) = self.tenant(&id)?.and_then(|t| t.default_config) {
                if !out.contains(&config) {
                    out.push(config);
                }
            }
        }
        Ok(out)
    }

    /// The tenant with this id.
    pub fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        self.get(&self.tenants, "tenants", id.as_bytes())
    }

    /// The tenant whose provisioning key this is.
    pub fn tenant_by_key(&self, key: &str) -> Result<Option<Tenant>> {
        match self.idx_tenant_key.get(key.as_bytes())? {
            Some(id) => self.get(&self.tenants, "tenants", &id),
            None => Ok(None),
        }
    }

    /// Every tenant, by id.
    pub fn tenants(&self) -> Result<Vec<Tenant>> {
        self.list(&self.tenants, "tenants")
    }

    /// Stores a new API token under its hash.
    pub fn create_token(&self, token: &Token) -> Result<()> {
        let inserted = self.tokens.compare_and_swap(
            token.hash.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(token)),
        )?;
        if inserted.is_err() {
            return Err(StoreError::AlreadyExists {
                kind: "token",
                id: token.hash.clone(),
            });
        }
        self.flush()
    }

    /// The token with this hash.
    pub fn token(&self, hash: &str) -> Result<Option<Token>> {
        self.get(&self.tokens, "tokens", hash.as_bytes())
    }

    /// Every token, by hash.
    pub fn tokens(&self) -> Result<Vec<Token>> {
        self.list(&self.tokens, "tokens")
    }

    /// Deletes a token; returns it.
    pub fn delete_token(&self, hash: &str) -> Result<Token> {
        self.remove_one(&self.tokens, "tokens", "token", hash)
    }

    /// Stores a new provisioning code.
    pub fn create_code(&self, code: &Code) -> Result<()> {
        let inserted = self.codes.compare_and_swap(
            code.code.as_bytes(),
            None as Option<&[u8]>,
            Some(encode(code)),
        )?;
        if inserted.is_err() {
            return Err(StoreError::AlreadyExists {
                kind: "code",
                id: code.code.clone(),
            });
        }
        self.flush()
    }

    /// Replaces an existing provisioning code (state change, device assignment).
    pub fn update_code(&self, code: &Code) -> Result<()> {
        finish(self.codes.transaction(|codes| {
            if codes.get(code.code.as_bytes())?.is_none() {
                return Err(abort(StoreError::NotFound {
                    kind: "code",
                    id: code.code.clone(),
                }));
            }
            codes.insert(code.code.as_bytes(), encode(code))?;
            Ok(())
        }))?;
        self.flush()
    }

    /// The provisioning code with these digits.
    pub fn code(&self, code: &str) -> Result<Option<Code>> {
        self.get(&self.codes, "codes", code.as_bytes())
    }

    /// Every provisioning code.
    pub fn codes(&self) -> Result<Vec<Code>> {
        self.list(&self.codes, "codes")
    }

    /// Deletes a provisioning code; returns it.
    pub fn delete_code(&self, code: &str) -> Result<Code> {
        self.remove_one(&self.codes, "codes", "code", code)
    }

    /// Creates or replaces the lease of `lease.ip`; the MAC index then points at this lease.
    pub fn put_lease(&self, lease: &Lease) -> Result<()> {
        self.put_lease_unflushed(lease)?;
        self.flush()
    }

    /// [`Store::put_lease`] without the flush, for group commit: the caller flushes once for
    /// a batch and acts on none of its writes (no DHCPACK leaves) before that flush succeeded.
    /// The lease and its MAC's index entry are one transaction (with sled they were two plain
    /// writes, a transaction costing eight times as much; with fjall one transaction is
    /// cheaper than the separate writes), so a stop never leaves the index behind. The
    /// index's check ([`Store::check_lease_index`]) stays for indexes that an older
    /// provisiond left behind.
    pub fn put_lease_unflushed(&self, lease: &Lease) -> Result<()> {
        let _writing = self.lease_write_permit();
        let key = lease.ip.octets();
        let value = encode(lease);
        finish(
            (&self.leases, &self.idx_lease_mac).transaction(|(leases, by_mac)| {
                if let Some(old) = leases.replace(key, &value)? {
                    // A record that does not decode aborts the write and is left as it is.
                    let old: Lease = decode("leases", &key, &old).map_err(abort)?;
                    // The old MAC's entry goes only while it still points at this address.
                    if old.mac != lease.mac
                        && by_mac.get(old.mac.octets())?.as_deref() == Some(&key[..])
                    {
                        by_mac.remove(old.mac.octets())?;
                    }
                }
                by_mac.insert(lease.mac.octets(), key)?;
                Ok(())
            }),
        )
    }

    /// Permission to write a lease: held while writing, it keeps the index's check from
    /// deciding a repair between a lease write's read and its commit.
    fn lease_write_permit(&self) -> std::sync::RwLockReadGuard<'_, LeaseIndexState> {
        self.lease_index.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The last flush of a clean stop: everything written so far reaches the disk, and the
    /// in-memory tables are written out, so that the next open has no journal to replay. The
    /// store stays usable.
    pub fn shutdown(&self) -> Result<()> {
        self.flush()?;
        // After the flush: a failure here costs the next open a longer replay, nothing else.
        if let Err(e) = self.db.settle() {
            tracing::warn!(error = %e, "the store's tables could not be written out at stop");
        }
        Ok(())
    }

    /// Checks the lease MAC index against the leases when the store was opened without the
    /// mark that it was checked, repairs it and writes the mark; does nothing otherwise.
    /// Lease writes may go on meanwhile: each repair is decided again, under the lease-write
    /// lock, from what the store holds then, and a MAC that a write pointed at a lease as
    /// recent as the one the pass saw is left alone. Returns the number of index entries it
    /// changed.
    pub fn check_lease_index(&self) -> Result<u64> {
        if *self.lease_index.read().unwrap_or_else(|e| e.into_inner()) != LeaseIndexState::Unchecked
        {
            return Ok(0);
        }
        let started = std::time::Instant::now();
        let repaired = repair_lease_index(self)?;
        let mut state = self.lease_index.write().unwrap_or_else(|e| e.into_inner());
        // A new store has no mark either: nothing to say then.
        if !self.leases.is_empty()? {
            tracing::info!(
                repaired,
                seconds = started.elapsed().as_secs_f64(),
                "lease MAC index checked against the leases (the store had no mark that it was)"
            );
        }
        // Lease writes keep the index right (one transaction each), so the mark stays through
        // every later stop, clean or not. It must not reach the disk before the repairs.
        self.db.flush()?;
        self.meta.insert(LEASE_INDEX_SETTLED, [])?;
        self.db.flush()?;
        *state = LeaseIndexState::Settled;
        // A pass kept for a check that did its own is not needed any more.
        *self.lease_pass.lock().unwrap_or_else(|e| e.into_inner()) = None;
        // The pass's map of every MAC is gone: its memory goes back to the system.
        crate::memory::release_freed();
        Ok(repaired)
    }

    /// The lease of this address.
    pub fn lease(&self, ip: Ipv4Addr) -> Result<Option<Lease>> {
        self.get(&self.leases, "leases", &ip.octets())
    }

    /// The lease of this client.
    pub fn lease_by_mac(&self, mac: &Mac) -> Result<Option<Lease>> {
        match self.idx_lease_mac.get(mac.octets())? {
            Some(ip) => Ok(self
                .get::<Lease>(&self.leases, "leases", &ip)?
                .filter(|lease| lease.mac == *mac)),
            None => Ok(None),
        }
    }

    /// Every lease, by address.
    pub fn leases(&self) -> Result<Vec<Lease>> {
        self.list(&self.leases, "leases")
    }

    /// Calls `each` with every lease, by address, read in place ([`LeaseView`]); stops at the
    /// first error, its own or the store's. While the lease MAC index waits for its check
    /// ([`Store::check_lease_index`]), a whole pass also keeps what the check needs of each
    /// lease (24 bytes), so that the check does not read every lease again: the daemon runs it
    /// right after the DHCP engine's load, which is such a pass.
    pub fn for_each_lease_view(
        &self,
        mut each: impl FnMut(LeaseView<'_>) -> Result<()>,
    ) -> Result<()> {
        let unchecked = || {
            *self.lease_index.read().unwrap_or_else(|e| e.into_inner())
                == LeaseIndexState::Unchecked
        };
        if !unchecked() {
            return self.lease_views(each);
        }
        let mut seen = Vec::new();
        self.lease_views(|lease| {
            seen.push(seen_of(&lease));
            each(lease)
        })?;
        // Under the index's lock, so that a check that has ended cannot be handed a pass
        // after it (its clean-up of the kept pass runs under the same lock).
        let state = self.lease_index.read().unwrap_or_else(|e| e.into_inner());
        if *state == LeaseIndexState::Unchecked {
            *self.lease_pass.lock().unwrap_or_else(|e| e.into_inner()) = Some(seen);
        }
        Ok(())
    }

    fn lease_views(&self, mut each: impl FnMut(LeaseView<'_>) -> Result<()>) -> Result<()> {
        for item in self.leases.iter() {
            let (key, value) = item?;
            each(decode("leases", &key, &value)?)?;
        }
        Ok(())
    }

    /// Every lease, by address, decoded one at a time.
    pub fn leases_iter(&self) -> impl Iterator<Item = Result<Lease>> {
        self.leases.iter().map(|item| {
            let (key, value) = item?;
            decode("leases", &key, &value)
        })
    }

    /// Deletes the lease of an address; returns it.
    pub fn delete_lease(&self, ip: Ipv4Addr) -> Result<Lease> {
        let old = finish(
            (&self.leases, &self.idx_lease_mac).transaction(|(leases, by_mac)| {
                let old: Lease = tx_get(leases, "leases", &ip.octets())?.ok_or_else(|| {
                    abort(StoreError::NotFound {
                        kind: "lease",
                        id: ip.to_string(),
                    })
                })?;
                leases.remove(ip.octets())?;
                unlink_lease_mac(by_mac, &old)?;
                Ok(old)
            }),
        )?;
        self.flush()?;
        Ok(old)
    }

    /// Opaque per-plugin state (installed version, options), JSON.
    pub fn plugin_state(&self, plugin: &str) -> Result<Option<serde_json::Value>> {
        self.get(&self.plugins_state, "plugins_state", plugin.as_bytes())
    }

    /// Replaces a plugin's state.
    pub fn set_plugin_state(&self, plugin: &str, state: &serde_json::Value) -> Result<()> {
        validate_id(plugin)?;
        self.plugins_state
            .insert(plugin.as_bytes(), encode(state))?;
        self.flush()
    }

    pub(super) fn remove_one<T: serde::de::DeserializeOwned>(
        &self,
        tree: &super::kv::Tree,
        name: &'static str,
        kind: &'static str,
        key: &str,
    ) -> Result<T> {
        // Decoded before removal: a corrupt record is reported and left for inspection.
        let old = finish(tree.transaction(|tx| {
            let old: T = tx_get(tx, name, key.as_bytes())?.ok_or_else(|| {
                abort(StoreError::NotFound {
                    kind,
                    id: key.to_owned(),
                })
            })?;
            tx.remove(key.as_bytes())?;
            Ok(old)
        }))?;
        self.flush()?;
        Ok(old)
    }
}

fn unlink_lease_mac(by_mac: &TransactionalTree, lease: &Lease) -> TxResult<()> {
    if let Some(ip) = by_mac.get(lease.mac.octets())? {
        if ip.as_ref() == lease.ip.octets() {
            by_mac.remove(lease.mac.octets())?;
        }
    }
    Ok(())
}

/// Rebuilds the tenant-key and lease-MAC indexes from their records.
pub(super) fn rebuild_indexes(store: &Store) -> Result<u64> {
    let keys = store
        .tenants()?
        .into_iter()
        .filter_map(|t| Some((t.provisioning_key?.into_bytes(), t.id.into_bytes())))
        .collect();
    Ok(super::converge(&store.idx_tenant_key, &[], None, keys)? + repair_lease_index(store)?)
}

/// What the lease MAC index's check needs of a lease: its MAC, its start and its address
/// (sorted in this order, a MAC's latest lease is the last of its run).
pub(super) type LeaseSeen = (Mac, crate::model::UnixTime, [u8; 4]);

fn seen_of(lease: &LeaseView<'_>) -> LeaseSeen {
    (lease.mac, lease.starts, lease.ip.octets())
}

/// Where the lease MAC index stands against the leases on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum LeaseIndexState {
    /// Not known yet: the store opened without the settled mark and
    /// [`Store::check_lease_index`] has not finished.
    #[default]
    Unchecked,
    /// `meta` holds the settled mark: the index agrees with the leases.
    Settled,
}

/// At open: the lease MAC index is taken as it is when `meta` holds its settled mark, and is
/// checked against the leases otherwise ([`Store::check_lease_index`], one pass over them),
/// after which the mark is written. A lease write is one transaction with its index entry, so
/// a checked index stays right through any stop. The mark is missing from a new store and
/// from one that a provisiond before 2026-12 left after an unclean stop: its lease writes were
/// two plain writes, and a stop between them left the index behind.
pub(super) fn read_lease_index_mark(store: &Store) -> Result<()> {
    let mut state = store.lease_index.write().unwrap_or_else(|e| e.into_inner());
    *state = if store.meta.get(LEASE_INDEX_SETTLED)?.is_some() {
        LeaseIndexState::Settled
    } else {
        LeaseIndexState::Unchecked
    };
    Ok(())
}

/// A MAC whose index entry disagreed with the pass over the leases, and the MAC's most recent
/// lease that the pass saw (start, address); `None`: it saw none.
struct Disagreement {
    mac: Mac,
    wanted: Option<(crate::model::UnixTime, [u8; 4])>,
}

/// Makes the lease-MAC index what the leases say (as after normal writes, a MAC points at its
/// most recent lease) and returns the number of entries it changed. Only those are written:
/// after a crash the index is right but for the writes in flight.
pub(super) fn repair_lease_index(store: &Store) -> Result<u64> {
    let mut changed = 0;
    for found in lease_index_disagreements(store)? {
        if repair_one(store, &found)? {
            changed += 1;
        }
    }
    Ok(changed)
}

/// One pass over the leases and the index: the MACs whose entry is not their latest lease.
/// The leases are sorted by MAC and merged with the index (sorted by MAC too): at a million
/// leases a hash map of them cost more time and twice the memory.
fn lease_index_disagreements(store: &Store) -> Result<Vec<Disagreement>> {
    // A pass that `for_each_lease_view` kept is as good as one made now: the repairs are
    // decided again from what the store holds when they are made.
    let kept = store
        .lease_pass
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    let mut seen = match kept {
        Some(seen) => seen,
        None => {
            let mut seen = Vec::new();
            store.lease_views(|lease| {
                seen.push(seen_of(&lease));
                Ok(())
            })?;
            seen
        }
    };
    // A MAC's latest lease is the last of its run (ties: the higher address).
    seen.sort_unstable();
    let mut latest = seen
        .chunk_by(|a, b| a.0 == b.0)
        .filter_map(|run| run.last())
        .map(|&(mac, starts, ip)| (mac, (starts, ip)))
        .peekable();
    let mut disagreements = Vec::new();
    for item in store.idx_lease_mac.iter() {
        let (mac, ip) = item?;
        let Ok(octets) = <[u8; 6]>::try_from(mac.as_ref()) else {
            // Not a MAC: no lease write makes such a key and no read can reach it.
            store.idx_lease_mac.remove(mac)?;
            continue;
        };
        let mac = Mac::new(octets);
        // Leased MACs below this entry have none.
        while let Some((leased, wanted)) = latest.next_if(|(m, _)| *m < mac) {
            disagreements.push(Disagreement {
                mac: leased,
                wanted: Some(wanted),
            });
        }
        let wanted = latest.next_if(|(m, _)| *m == mac).map(|(_, wanted)| wanted);
        if wanted.is_none_or(|(_, want)| want[..] != ip[..]) {
            disagreements.push(Disagreement { mac, wanted });
        }
    }
    disagreements.extend(latest.map(|(mac, wanted)| Disagreement {
        mac,
        wanted: Some(wanted),
    }));
    Ok(disagreements)
}

/// Repairs one MAC's entry, deciding again from what the store holds now: a lease write may
/// have come since the pass read the leases. No lease write runs meanwhile.
fn repair_one(store: &Store, found: &Disagreement) -> Result<bool> {
    let _no_writes = store.lease_index.write().unwrap_or_else(|e| e.into_inner());
    let key = found.mac.octets();
    let lease_at = |ip: &[u8]| store.get::<Lease>(&store.leases, "leases", ip);
    let current = match store.idx_lease_mac.get(key)? {
        Some(ip) => lease_at(&ip)?.filter(|lease| lease.mac == found.mac),
        None => None,
    };
    match found.wanted {
        Some((starts, want)) => {
            if current.is_some_and(|lease| lease.ip.octets() == want || lease.starts >= starts) {
                return Ok(false);
            }
            // The lease the pass saw may have gone to another client since: its write then
            // pointed both MACs where they belong.
            if lease_at(&want)?.is_none_or(|lease| lease.mac != found.mac) {
                return Ok(false);
            }
            store.idx_lease_mac.insert(key, want)?;
        }
        None => {
            if current.is_some() {
                return Ok(false);
            }
            if store.idx_lease_mac.remove(key)?.is_none() {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LeaseState;

    fn lease(ip: [u8; 4], mac: u8, starts: crate::model::UnixTime) -> Lease {
        Lease {
            ip: Ipv4Addr::from(ip),
            mac: Mac::new([2, 0, 0, 0, 0, mac]),
            client_id: None,
            hostname: None,
            starts,
            ends: starts + 3600,
            state: LeaseState::Bound,
        }
    }

    #[test]
    fn the_check_keeps_the_lease_writes_that_came_after_its_pass() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b, c) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]);
        // What a crash leaves: MAC 1's lease at a with no index entry, MAC 2 with none at all
        // but an entry pointing at MAC 3's lease, and MAC 4's entry lost.
        store.put_lease(&lease(a, 1, 100)).unwrap();
        store.put_lease(&lease(b, 3, 100)).unwrap();
        store.put_lease(&lease(c, 4, 100)).unwrap();
        let key = |mac: u8| Mac::new([2, 0, 0, 0, 0, mac]).octets();
        store.idx_lease_mac.remove(key(1)).unwrap();
        store.idx_lease_mac.insert(key(2), b).unwrap();
        store.idx_lease_mac.remove(key(4)).unwrap();
        let found = lease_index_disagreements(&store).unwrap();
        assert_eq!(found.len(), 3, "MACs 1, 2 and 4 disagree");

        // Lease writes between the pass and its repairs: MAC 1 moves on, MAC 2 gets a lease.
        let moved = lease([10, 0, 0, 4], 1, 200);
        let arrived = lease([10, 0, 0, 5], 2, 200);
        store.put_lease(&moved).unwrap();
        store.put_lease(&arrived).unwrap();
        let repaired = found
            .iter()
            .filter(|f| repair_one(&store, f).unwrap())
            .count();

        assert_eq!(repaired, 1, "only MAC 4 needed the repair");
        let by_mac = |mac: u8| store.lease_by_mac(&Mac::new([2, 0, 0, 0, 0, mac])).unwrap();
        assert_eq!(by_mac(1), Some(moved), "a newer write was undone");
        assert_eq!(by_mac(2), Some(arrived), "a newer write was removed");
        assert_eq!(by_mac(4), Some(lease(c, 4, 100)));
    }

    #[test]
    fn the_check_uses_the_pass_the_engine_made_and_keeps_the_writes_since() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, c) = ([10, 0, 0, 1], [10, 0, 0, 3]);
        store.put_lease(&lease(a, 1, 100)).unwrap();
        store.put_lease(&lease(c, 4, 100)).unwrap();
        let key = |mac: u8| Mac::new([2, 0, 0, 0, 0, mac]).octets();
        // A crash: MAC 4's entry lost, the index not checked yet.
        store.idx_lease_mac.remove(key(4)).unwrap();
        *store.lease_index.write().unwrap() = LeaseIndexState::Unchecked;

        // The DHCP engine's load, then lease writes before the check: MAC 1 moves on, MAC 2
        // arrives.
        let mut engine_saw = 0;
        store
            .for_each_lease_view(|_| {
                engine_saw += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(engine_saw, 2);
        assert!(
            store.lease_pass.lock().unwrap().is_some(),
            "the pass was not kept for the check"
        );
        let moved = lease([10, 0, 0, 4], 1, 200);
        let arrived = lease([10, 0, 0, 5], 2, 200);
        store.put_lease(&moved).unwrap();
        store.put_lease(&arrived).unwrap();

        assert_eq!(
            store.check_lease_index().unwrap(),
            1,
            "only MAC 4 is repaired"
        );
        assert!(
            store.lease_pass.lock().unwrap().is_none(),
            "the pass is kept"
        );
        let by_mac = |mac: u8| store.lease_by_mac(&Mac::new([2, 0, 0, 0, 0, mac])).unwrap();
        assert_eq!(by_mac(1), Some(moved), "a newer write was undone");
        assert_eq!(by_mac(2), Some(arrived), "a newer write was removed");
        assert_eq!(by_mac(4), Some(lease(c, 4, 100)));

        // Once the index is settled, a pass keeps nothing.
        store.for_each_lease_view(|_| Ok(())).unwrap();
        assert!(store.lease_pass.lock().unwrap().is_none());
    }
}
