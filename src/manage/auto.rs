//! Automatic provisioning (seed 004): a tenant sets a security token; a phone whose
//! provisioning URL is `/auto/<tenant>/<token>/<category>/…` joins that tenant and
//! provisioning category at its first fetch, without a code, unless its MAC belongs to
//! another tenant.

use std::net::IpAddr;
use std::time::Instant;

use super::codes::{check_hijack, provision};
use super::guard::{Secret, SecretGuard};
use super::{conflict_or, retry_on_conflict, tenants, ManageError, Result, Scope};
use crate::model::{Category, Device, Provisioned, ProvisionedBy, Tenant, UnixTime};
use crate::store::Store;

/// Characters of a token, printable ASCII without space (seed 004's example has a `#`).
pub const TOKEN_CHARS: std::ops::RangeInclusive<usize> = 8..=128;

/// The path prefix of automatic-provisioning URLs on the provisioning server.
pub const PREFIX: &str = "auto";

/// What an automatic URL names, once its token is checked.
#[derive(Debug, Clone)]
pub struct AutoTarget {
    /// The tenant.
    pub tenant: String,
    /// Its provisioning category.
    pub category: Category,
}

/// Checks a token an admin sets.
pub fn check_token(token: &str) -> Result<()> {
    if !TOKEN_CHARS.contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ManageError::field(
            "token",
            format!(
                "{} to {} printable ASCII characters, no space",
                TOKEN_CHARS.start(),
                TOKEN_CHARS.end()
            ),
        ));
    }
    Ok(())
}

/// Sets (or, with `None`, turns off) the acting tenant's automatic-provisioning token.
pub fn set_token(store: &Store, scope: &Scope, token: Option<String>) -> Result<Tenant> {
    if let Some(token) = &token {
        check_token(token)?;
    }
    let saved = retry_on_conflict("tenant", || {
        let mut tenant = tenants::get(store, scope, scope.tenant())?;
        tenant.auto_token = token.clone();
        conflict_or(store.update_tenant(&tenant))
    })?;
    tracing::info!(tenant = %saved.id, on = saved.auto_token.is_some(), "automatic provisioning token changed");
    Ok(saved)
}

/// A random token of 24 characters (what `generate` sets).
pub fn random_token() -> Result<String> {
    crate::ident::random_password(24).map_err(|e| ManageError::Internal(e.to_string()))
}

/// The path of the tenant's automatic URL for `category`, each value percent-encoded (the
/// seed's example: a space as `%20`, `#` as `%23`), with a trailing `/`.
pub fn path(tenant: &str, token: &str, category: &str) -> String {
    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    format!(
        "/{PREFIX}/{}/{}/{}/",
        enc(tenant),
        enc(token),
        enc(category)
    )
}

/// One provisioning category's automatic URL, and the DHCP settings that hand it to phones.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AutoUrl {
    /// The category's name.
    pub category: String,
    /// The URL's path on the provisioning server.
    pub path: String,
    /// The whole URL (just the path when no `base_url` is set).
    pub url: String,
    /// ISC dhcpd's setting of option 66.
    pub dhcp_option_66: String,
    /// ISC dhcpd's setting of option 160.
    pub dhcp_option_160: String,
}

/// The tenant's automatic URLs, one per provisioning category of `categories`; none while
/// it has no token. `base_url` is `[general] base_url`.
pub fn urls(base_url: Option<&url::Url>, tenant: &Tenant, categories: &[Category]) -> Vec<AutoUrl> {
    let Some(token) = &tenant.auto_token else {
        return Vec::new();
    };
    let base = base_url
        .map(|u| u.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default();
    categories
        .iter()
        .filter(|c| c.provisioning)
        .map(|c| {
            let path = path(&tenant.id, token, &c.name);
            let url = format!("{base}{path}");
            AutoUrl {
                category: c.name.clone(),
                // Option 66 is a server name or URL, 160 (Polycom, Yealink) a URL; both as
                // ISC dhcpd would set them for one class of phones.
                dhcp_option_66: format!("option tftp-server-name \"{url}\";"),
                dhcp_option_160: format!(
                    "option option-160 code 160 = text; option option-160 \"{url}\";"
                ),
                path,
                url,
            }
        })
        .collect()
}

fn equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Checks an automatic URL's values (decoded): the tenant exists with this token, and the
/// category is one of its provisioning categories. Anything wrong is one answer, and costs
/// `source` a failure (see [`SecretGuard`]).
pub fn check_url(
    store: &Store,
    guard: &SecretGuard,
    tenant: &str,
    token: &str,
    category: &str,
    source: IpAddr,
) -> Result<AutoTarget> {
    let now = Instant::now();
    if guard.attempt(Secret::AutoToken, source, now).is_err() {
        return Err(ManageError::RateLimited);
    }
    let found = store
        .tenant(tenant)?
        .filter(|t| t.auto_token.as_deref().is_some_and(|t| equal(t, token)))
        .map(|t| store.category_by_name(&t.id, category))
        .transpose()?
        .flatten()
        .filter(|c| c.provisioning);
    match found {
        Some(category) => {
            guard.succeeded(Secret::AutoToken, source, now);
            Ok(AutoTarget {
                tenant: category.tenant.clone(),
                category,
            })
        }
        None => {
            guard.failed(Secret::AutoToken);
            Err(ManageError::NotFound("no such automatic URL".into()))
        }
    }
}

/// Provisions `device` (just identified) for `target`: a device of the root joins the tenant
/// and category; a device of the tenant is provisioned if it is in autoprov and left as it
/// is otherwise; a device of another tenant is refused (anti-hijack).
pub fn assign(
    store: &Store,
    target: &AutoTarget,
    device: &Device,
    now: UnixTime,
) -> Result<Device> {
    let root = store.default_tenant()?.unwrap_or_default();
    let mut current = device.clone();
    for _ in 0..8 {
        // A phone of the tenant that has its own config is left alone; one still (or again,
        // after a reset) in autoprov is provisioned like a new one.
        let autoprov = current
            .config
            .as_deref()
            .is_none_or(|c| c == crate::store::AUTOPROV_CONFIG);
        if current.tenant == target.tenant && !autoprov {
            return Ok(current);
        }
        check_hijack(&current, &root, &target.tenant, "automatic provisioning")?;
        let provisioned = Provisioned {
            by: ProvisionedBy::Auto,
            at: now,
            code_tail: None,
        };
        let new = provision(&current, &target.category, None, provisioned)?;
        match conflict_or(store.update_device(&new))? {
            Some(written) => {
                tracing::info!(device = %written.id, tenant = %written.tenant, category = %target.category.name, "device provisioned by its automatic URL");
                return Ok(written);
            }
            None => {
                current = store
                    .device(&device.id)?
                    .ok_or_else(|| ManageError::NotFound(format!("no device {:?}", device.id)))?;
            }
        }
    }
    Err(ManageError::Busy("device"))
}
