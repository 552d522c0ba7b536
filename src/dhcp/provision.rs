//! Provisioning options: the options a vendor's plugin declares (`[dhcp]` in plugin.toml),
//! with their placeholders filled, for the clients of that vendor.

use std::net::Ipv4Addr;
use std::sync::Arc;

use url::Url;

use crate::files::{UrlKey, KEY_PREFIX};
use crate::ident::{DhcpOp, RequestContext};
use crate::plugins::{DhcpOptionSpec, Plugin, PluginSet, RuleSource};

use super::packet::{code, Request};

/// An option's value as text for the rules, as identification reads it: lossy UTF-8, trailing
/// NULs and surrounding whitespace removed (Polycom's binary option 60 is matched as is).
pub fn option_text(value: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(value);
    let text = text.trim_end_matches('\0').trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// The identification request for a client's message (also how phones are told apart in
/// `phones-only` mode).
pub fn context(req: &Request, op: DhcpOp, ip: Ipv4Addr) -> RequestContext {
    RequestContext::Dhcp {
        op,
        ip,
        mac: req.mac,
        options: req.options.clone(),
    }
}

/// True when some plugin's rules identify the client (options 60/77) as a phone.
pub fn is_phone(req: &Request, plugins: &PluginSet) -> bool {
    let ctx = context(req, DhcpOp::Commit, req.ciaddr);
    crate::ident::extract(&ctx, plugins).1.is_some()
}

fn plugin_matches(plugin: &Plugin, vendor_class: Option<&str>, user_class: Option<&str>) -> bool {
    match &plugin.dhcp_vendor_class {
        Some(re) => vendor_class.is_some_and(|t| re.is_match(t)),
        None => {
            vendor_class.is_some_and(|t| plugin.extract(RuleSource::DhcpVendorClass, t).is_some())
                || user_class
                    .is_some_and(|t| plugin.extract(RuleSource::DhcpUserClass, t).is_some())
        }
    }
}

/// The plugin whose DHCP options this client gets: among the plugins with options whose
/// `dhcp.vendor_class` (else whose DHCP identify rules) match, the one identification would
/// choose, else the first by name.
pub fn vendor_plugin(req: &Request, plugins: &PluginSet) -> Option<Arc<Plugin>> {
    let vendor_class = req.option(code::VENDOR_CLASS).and_then(option_text);
    let user_class = req.option(code::USER_CLASS).and_then(option_text);
    if vendor_class.is_none() && user_class.is_none() {
        return None;
    }
    let candidates: Vec<&Arc<Plugin>> = plugins
        .iter()
        .filter(|p| !p.dhcp_options.is_empty())
        .filter(|p| plugin_matches(p, vendor_class.as_deref(), user_class.as_deref()))
        .collect();
    if candidates.len() > 1 {
        let ctx = context(req, DhcpOp::Commit, req.ciaddr);
        if let Some(best) = crate::ident::extract(&ctx, plugins).1 {
            if candidates.iter().any(|p| p.name == best.name) {
                return Some(best);
            }
        }
    }
    candidates.first().map(|p| Arc::clone(p))
}

/// What a request's provisioning options are made from.
pub struct Vendors<'a> {
    /// The plugins, for the vendor and its options.
    pub plugins: &'a PluginSet,
    /// The `url_key` for the pool of this tenant (`None`: the default tenant), asked only
    /// when a vendor option needs the URL.
    pub url_key: &'a dyn Fn(Option<&str>) -> UrlKey,
}

/// The provisioning URL with exactly one trailing `/` (as templates see `server.base_url`),
/// with the tenant's key path under the `url_key` strategy; `None` when that strategy is on
/// and the tenant has no key (no URL would work).
pub fn provisioning_url(base: &Url, key: &UrlKey) -> Option<String> {
    let mut text = base.as_str().trim_end_matches('/').to_owned();
    match key {
        UrlKey::Off => {}
        UrlKey::Key(key) => {
            text.push('/');
            text.push_str(KEY_PREFIX);
            text.push_str(key);
        }
        UrlKey::Missing => return None,
    }
    text.push('/');
    Some(text)
}

/// One option ready to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorOption {
    /// Code.
    pub code: u8,
    /// Encoded value.
    pub value: Vec<u8>,
    /// Sent even when the client did not ask for it.
    pub always: bool,
}

/// Fills a plugin's options. `{provisioning_url}` needs a base URL, and under the `url_key`
/// strategy a tenant key: without them the option is left out (logged). Encoding: 150 is a
/// list of IPv4 addresses, every other option (66, 67, 159, 160, 43…) the text's bytes.
pub fn vendor_options(
    plugin: &Plugin,
    base_url: Option<&Url>,
    key: &UrlKey,
    server_ip: Ipv4Addr,
) -> Vec<VendorOption> {
    let url = base_url.and_then(|base| provisioning_url(base, key));
    let mut out = Vec::new();
    for spec in &plugin.dhcp_options {
        if spec.value.contains("{provisioning_url}") && url.is_none() {
            if base_url.is_none() {
                tracing::debug!(
                    plugin = %plugin.name,
                    code = spec.code,
                    "DHCP option left out: no base URL ([general] base_url or the pool's base_url)"
                );
            } else {
                tracing::warn!(
                    plugin = %plugin.name,
                    code = spec.code,
                    "DHCP option left out: http_auth_strategy is url_key and the tenant has no provisioning key"
                );
            }
            continue;
        }
        if let Some(option) = fill_option(&plugin.name, spec, url.as_deref(), server_ip) {
            out.push(option);
        }
    }
    out
}

/// One option of plugin `plugin` with its placeholders filled (`url`: the provisioning URL,
/// when there is one); `None` when nothing is left to send.
pub fn fill_option(
    plugin: &str,
    spec: &DhcpOptionSpec,
    url: Option<&str>,
    server_ip: Ipv4Addr,
) -> Option<VendorOption> {
    let server = server_ip.to_string();
    let text = spec
        .value
        .replace("{provisioning_url}", url.unwrap_or(""))
        .replace("{server_ip}", &server)
        .replace("{tftp_server}", &server);
    let value = match spec.code {
        150 => {
            let ips: Vec<u8> = text
                .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
                .filter_map(|s| s.parse::<Ipv4Addr>().ok())
                .flat_map(|ip| ip.octets())
                .collect();
            if ips.is_empty() {
                tracing::warn!(plugin, "DHCP option 150 has no IPv4 address: left out");
                return None;
            }
            ips
        }
        _ => text.into_bytes(),
    };
    (!value.is_empty()).then_some(VendorOption {
        code: spec.code,
        value,
        always: spec.always,
    })
}
