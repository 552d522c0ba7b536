//! Provisioning codes: issued for a tenant's provisioning category, redeemed once by a phone
//! (its XML-browser form), a PBX (by the phone's IP or device id) or an installer (CLI,
//! console). One implementation of the redemption serves the three.

use std::net::IpAddr;
use std::time::Instant;

use super::guard::{Secret, SecretGuard};
use super::{categories, may_use, ManageError, Result, Scope};
use crate::events::{CodeUsed, Events, What};
use crate::model::{
    code_tail, Category, Code, Device, Mac, Provisioned, ProvisionedBy, UnixTime, CODE_DIGITS,
    CODE_TTL_SECS,
};
use crate::store::{Store, StoreError, BASE_CONFIG};

/// The one answer to a code that is wrong, expired, used or not the caller's: no hint of
/// which.
pub const NOT_ACCEPTED: &str = "code not accepted";

/// Devices listed at most when several share the address a redemption names.
const MAX_CANDIDATES: usize = 20;

/// Draws attempted when a drawn code is already live (chance 10^-7 each with 100k live).
const MAX_DRAWS: usize = 16;

/// 12 random digits from the OS CSPRNG, every value equally likely.
pub fn draw() -> Result<String> {
    const SPACE: u64 = 1_000_000_000_000;
    // The largest multiple of SPACE that fits: values above it are drawn again, so that the
    // modulo keeps every code equally likely.
    const LIMIT: u64 = u64::MAX - u64::MAX % SPACE;
    loop {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|e| ManageError::Internal(format!("random: {e}")))?;
        let value = u64::from_le_bytes(bytes);
        if value < LIMIT {
            return Ok(format!("{:0width$}", value % SPACE, width = CODE_DIGITS));
        }
    }
}

/// True for 12 ASCII digits.
pub fn well_formed(code: &str) -> bool {
    code.len() == CODE_DIGITS && code.bytes().all(|b| b.is_ascii_digit())
}

/// What a client asks for when issuing a code.
#[derive(Debug, Clone, Default)]
pub struct NewCode {
    /// Category, by id or by name in the acting tenant; must be a provisioning category.
    pub category: String,
    /// Config the phone will get (the user's line).
    pub config: Option<String>,
    /// Free text (the user).
    pub label: Option<String>,
}

/// The provisioning category `name_or_id` of the caller, checked for codes.
pub fn provisioning_category(store: &Store, scope: &Scope, name_or_id: &str) -> Result<Category> {
    let category = categories::find(store, scope, name_or_id)
        .map_err(|_| ManageError::field("category", format!("no category {name_or_id:?}")))?;
    if !category.provisioning {
        return Err(ManageError::field(
            "category",
            format!(
                "category {:?} is not a provisioning category",
                category.name
            ),
        ));
    }
    Ok(category)
}

/// Checks that devices of `category`'s tenant may use the config `id`.
pub fn check_config(store: &Store, scope: &Scope, category: &Category, id: &str) -> Result<()> {
    let usable = store
        .config(id)?
        .filter(|c| scope.reaches(&c.tenant) || scope.inherits(&c.tenant))
        .is_some_and(|c| may_use(scope.tree(), &category.tenant, &c.tenant));
    if usable {
        Ok(())
    } else {
        Err(ManageError::field(
            "config",
            format!(
                "no config {id:?} that devices of tenant {:?} may use",
                category.tenant
            ),
        ))
    }
}

/// Checks a label (a user's name).
pub fn check_label(field: &str, label: &str) -> Result<()> {
    if label.chars().count() > 256 || label.chars().any(char::is_control) {
        return Err(ManageError::field(
            field,
            "at most 256 characters, no control characters",
        ));
    }
    Ok(())
}

/// Issues a code valid 10 minutes for a provisioning category of the caller's subtree.
pub fn create(store: &Store, scope: &Scope, new: NewCode, now: UnixTime) -> Result<Code> {
    let category = provisioning_category(store, scope, &new.category)?;
    if let Some(config) = &new.config {
        check_config(store, scope, &category, config)?;
    }
    if let Some(label) = &new.label {
        check_label("label", label)?;
    }
    for _ in 0..MAX_DRAWS {
        let code = Code {
            code: draw()?,
            tenant: category.tenant.clone(),
            category: category.id.clone(),
            config: new.config.clone(),
            label: new.label.clone(),
            rollout: None,
            created: now,
            expires: now + CODE_TTL_SECS,
        };
        match store.create_code(&code) {
            Ok(()) => {
                tracing::info!(code = %code.tail(), tenant = %code.tenant, category = %category.name, "provisioning code issued");
                return Ok(code);
            }
            Err(StoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ManageError::Internal(
        "no free provisioning code found; too many live codes".into(),
    ))
}

/// The live codes of the acting tenant (or its subtree with `recurse`), oldest first.
pub fn list(store: &Store, scope: &Scope, recurse: bool, now: UnixTime) -> Result<Vec<Code>> {
    let mut found: Vec<Code> = store
        .codes()?
        .into_iter()
        .filter(|c| now < c.expires && scope.lists(&c.tenant, recurse))
        .collect();
    found.sort_by(|a, b| (a.created, &a.code).cmp(&(b.created, &b.code)));
    Ok(found)
}

/// The live code `code` of the caller's subtree.
pub fn get(store: &Store, scope: &Scope, code: &str, now: UnixTime) -> Result<Code> {
    match store.code(code)? {
        Some(c) if now < c.expires && scope.reaches(&c.tenant) => Ok(c),
        _ => Err(ManageError::NotFound(format!(
            "no live code {}",
            code_tail(code)
        ))),
    }
}

/// Revokes the live code `code` of the caller's subtree.
pub fn revoke(
    store: &Store,
    events: &Events,
    scope: &Scope,
    code: &str,
    now: UnixTime,
) -> Result<Code> {
    get(store, scope, code, now)?;
    let gone = store.revoke_code(code)?;
    tracing::info!(code = %gone.tail(), tenant = %gone.tenant, "provisioning code revoked");
    tell(store, events, &gone, "revoked", None, now);
    Ok(gone)
}

/// Publishes that `code` became `state` (with the device that redeemed it), naming its
/// rollout entry so that a page showing the rollout can update that row.
fn tell(
    store: &Store,
    events: &Events,
    code: &Code,
    state: &'static str,
    device: Option<&Device>,
    now: UnixTime,
) {
    // The entry's index, read after the write; a failed read only costs the page its row.
    let entry = code.rollout.as_deref().and_then(|id| {
        let rollout = store.rollout(id).ok()??;
        rollout.entries.iter().position(|e| e.code == code.code)
    });
    events.publish_at(
        code.tenant.clone(),
        What::Code(CodeUsed {
            code_tail: code.tail(),
            category: code.category.clone(),
            rollout: code.rollout.clone(),
            entry,
            state,
            device: device.map(|d| d.id.clone()),
            device_mac: device.and_then(|d| d.mac).map(|m| m.to_string()),
        }),
        now,
    );
}

/// Deletes the codes expired at `now`.
pub fn sweep(store: &Store, now: UnixTime) -> Result<usize> {
    let swept = store.sweep_codes(now)?;
    if !swept.is_empty() {
        tracing::info!(count = swept.len(), "expired provisioning codes deleted");
    }
    Ok(swept.len())
}

/// The phone a redemption is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedeemTarget {
    /// By MAC (the phone's own form, an installer); an unknown MAC becomes a new device.
    Mac(Mac),
    /// By address (a PBX's dialplan); one device must be there.
    Ip(IpAddr),
    /// By device id.
    Device(String),
}

/// One redemption.
#[derive(Debug, Clone)]
pub struct RedeemRequest {
    /// The digits entered.
    pub code: String,
    /// The phone.
    pub target: RedeemTarget,
    /// Where the attempt comes from (its failures count there).
    pub source: IpAddr,
}

/// A redemption done.
#[derive(Debug, Clone)]
pub struct Redeemed {
    /// The device as written.
    pub device: Device,
    /// The tenant it joined.
    pub tenant: String,
    /// The category (id) it joined.
    pub category: Option<String>,
}

/// Counts redemptions and automatic assignments refused because the MAC belongs to another
/// tenant (seed 004's "Known issues"), for /metrics.
pub static HIJACKS_REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Refuses to move a device that left the root to another tenant: logged with both tenants,
/// counted.
pub fn check_hijack(device: &Device, root: &str, tenant: &str, how: &str) -> Result<()> {
    if device.tenant == root || device.tenant == tenant {
        return Ok(());
    }
    HIJACKS_REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::warn!(
        device = %device.id,
        mac = %device.mac.map(|m| m.to_string()).unwrap_or_default(),
        owner = %device.tenant,
        claimed_by = %tenant,
        "{how} refused: the device belongs to another tenant; nothing changed"
    );
    Err(ManageError::Forbidden(
        "this phone belongs to another tenant; delete it there first".into(),
    ))
}

/// The device as provisioning makes it: in `category`'s tenant and category, with `config`
/// (else the category's, else `base`), configured, and a fresh random admin password.
pub fn provision(
    device: &Device,
    category: &Category,
    config: Option<&str>,
    provisioned: Provisioned,
) -> Result<Device> {
    let mut new = device.clone();
    new.tenant = category.tenant.clone();
    new.category = Some(category.id.clone());
    new.config = Some(
        config
            .map(str::to_owned)
            .or_else(|| category.config.clone())
            .unwrap_or_else(|| BASE_CONFIG.to_owned()),
    );
    new.configured = true;
    new.is_new = false;
    new.admin_password = Some(
        crate::ident::random_password(crate::ident::ADMIN_PASSWORD_LEN)
            .map_err(|e| ManageError::Internal(e.to_string()))?,
    );
    new.provisioned = Some(provisioned);
    Ok(new)
}

/// Redeems a code: the phone joins the code's tenant and category with its config, is marked
/// configured and gets a fresh admin password; the code is consumed. With `scope` (an API
/// caller), the code and the device must be in the caller's reach. A wrong, expired, used or
/// unreachable code is one answer, [`NOT_ACCEPTED`], and costs `req.source` a failure (see
/// [`SecretGuard`]); a right code that cannot be used (another tenant's phone, no device at
/// the address) costs nothing.
pub fn redeem(
    store: &Store,
    guard: &SecretGuard,
    events: &Events,
    scope: Option<&Scope>,
    req: &RedeemRequest,
    now: UnixTime,
) -> Result<Redeemed> {
    let started = Instant::now();
    if guard.attempt(Secret::Code, req.source, started).is_err() {
        return Err(ManageError::RateLimited);
    }
    let result = redeem_unguarded(store, scope, req, now);
    match &result {
        Ok((done, used)) => {
            guard.succeeded(Secret::Code, req.source, started);
            tell(store, events, used, "registered", Some(&done.device), now);
            tracing::info!(
                code = %code_tail(&req.code),
                device = %done.device.id,
                tenant = %done.tenant,
                source = %req.source,
                "provisioning code redeemed"
            );
        }
        Err(ManageError::NotFound(message)) if message == NOT_ACCEPTED => {
            guard.failed(Secret::Code);
            tracing::info!(code = %code_tail(&req.code), source = %req.source, "provisioning code refused: {message}");
        }
        Err(e) => {
            // The code was right (the phone was not, or we failed): no guess was wrong.
            guard.succeeded(Secret::Code, req.source, started);
            tracing::info!(code = %code_tail(&req.code), source = %req.source, "provisioning code not redeemed: {e}");
        }
    }
    result.map(|(done, _)| done)
}

fn redeem_unguarded(
    store: &Store,
    scope: Option<&Scope>,
    req: &RedeemRequest,
    now: UnixTime,
) -> Result<(Redeemed, Code)> {
    let refused = || ManageError::NotFound(NOT_ACCEPTED.into());
    if !well_formed(&req.code) {
        return Err(refused());
    }
    let code = store
        .code(&req.code)?
        .filter(|c| now < c.expires)
        .filter(|c| scope.is_none_or(|s| s.reaches(&c.tenant)))
        .ok_or_else(refused)?;
    let root = store.default_tenant()?.unwrap_or_default();
    let category = store
        .category(&code.category)?
        .filter(|c| c.tenant == code.tenant)
        .ok_or_else(|| {
            tracing::warn!(code = %code.tail(), category = %code.category, "a live code names a category that no longer exists");
            refused()
        })?;
    if let Some(config) = &code.config {
        if store.config(config)?.is_none() {
            return Err(ManageError::field(
                "config",
                format!("the code's config {config:?} no longer exists"),
            ));
        }
    }
    let reachable = |d: &Device| scope.is_none_or(|s| s.reaches(&d.tenant) || d.tenant == root);
    for _ in 0..8 {
        let device = match &req.target {
            RedeemTarget::Device(id) => store
                .device(id)?
                .filter(reachable)
                .ok_or_else(|| ManageError::NotFound(format!("no device {id:?}")))?,
            RedeemTarget::Ip(ip) => {
                let mut found = store.devices_at_ip(&ip.to_canonical(), MAX_CANDIDATES)?;
                found.retain(reachable);
                match found.len() {
                    0 => return Err(ManageError::NotFound(format!("no device at {ip}"))),
                    1 => found.remove(0),
                    _ => {
                        return Err(ManageError::Ambiguous {
                            message: format!(
                                "{} devices at {ip}; redeem by device id",
                                found.len()
                            ),
                            ids: found.into_iter().map(|d| d.id).collect(),
                        })
                    }
                }
            }
            RedeemTarget::Mac(mac) => match store.device_by_mac(mac)? {
                Some(d) if reachable(&d) => d,
                Some(_) => return Err(ManageError::NotFound(format!("no device {mac}"))),
                None => {
                    let mut new = Device::new(crate::model::new_device_id(), root.clone());
                    new.mac = Some(*mac);
                    match store.create_device(&new) {
                        Ok(created) => created,
                        // Created meanwhile (the phone's own fetch): read it again.
                        Err(StoreError::AlreadyExists { .. } | StoreError::Taken { .. }) => {
                            continue
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            },
        };
        check_hijack(&device, &root, &code.tenant, "code redemption")?;
        let provisioned = Provisioned {
            by: ProvisionedBy::Code,
            at: now,
            code_tail: Some(code.tail()),
        };
        let new = provision(&device, &category, code.config.as_deref(), provisioned)?;
        match store.redeem_code(&code.code, &new, now) {
            Ok((written, used)) => {
                return Ok((
                    Redeemed {
                        tenant: written.tenant.clone(),
                        category: written.category.clone(),
                        device: written,
                    },
                    used,
                ))
            }
            Err(StoreError::Conflict { .. }) => continue,
            // Used or expired by a concurrent redemption or the sweeper.
            Err(StoreError::NotFound { kind: "code", .. }) => return Err(refused()),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ManageError::Busy("device"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_codes_are_twelve_digits() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let code = draw().unwrap();
            assert!(well_formed(&code), "{code}");
            seen.insert(code);
        }
        assert_eq!(seen.len(), 1000);
        for bad in [
            "",
            "12345678901",
            "1234567890123",
            "12345678901a",
            "１２３４５６７８９０１２",
        ] {
            assert!(!well_formed(bad), "{bad}");
        }
    }
}
