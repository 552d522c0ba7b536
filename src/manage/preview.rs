//! What a device's files look like, for people: its config chain and each template file of
//! its plugin rendered through the renderer the provisioning servers use, with its secrets
//! masked.
//!
//! The masking rule does not trust templates to mark secrets: every value that the device's
//! merged raw config (or its extra keys) holds under a key naming a password, a secret, a
//! token or a PIN, the device's own admin password and its tenant's provisioning key are
//! secrets; each is replaced wherever it appears in a file, also in the escaped forms that
//! templates write (HTML/XML entities, percent-encoding, JSON string escapes).

use serde_json::Value;

use crate::files::FileService;
use crate::model::{Config, Device, RawConfig};
use crate::plugins::{merged_raw_config, Resolved, Target};

/// What replaces a secret in a preview.
pub const MASK: &str = "••••••••";

/// Largest part of a file a preview shows.
const MAX_PREVIEW_BYTES: usize = 256 * 1024;

/// One file of a device, as a preview shows it.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The file's name, as the phone asks for it (`*` left where the route has one).
    pub name: String,
    /// The plugin's template behind it.
    pub template: String,
    /// Its content type.
    pub content_type: String,
    /// The text with the secrets masked, or why it could not be rendered.
    pub text: Result<String, String>,
    /// Whether the text was cut at [`MAX_PREVIEW_BYTES`].
    pub truncated: bool,
}

/// The configs whose raw configs make `device`'s files, most general first, as the renderer
/// merges them (job layers are named `job:<id>`); empty with the reason when none can be
/// read (no config, a missing one).
pub fn config_chain(files: &FileService, device: &Device) -> Result<Vec<Config>, String> {
    files
        .renderer()
        .config_chain(device)
        .map_err(|e| e.to_string())
}

/// Whether a raw-config key names a secret.
fn secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token", "credential"]
        .iter()
        .any(|w| key.contains(w))
        || key
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|part| matches!(part, "pin" | "pwd" | "pass" | "psk"))
}

/// Collects the values under secret keys, at any depth.
fn collect(value: &Value, under_secret: bool, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                collect(v, under_secret || secret_key(key), out);
            }
        }
        Value::Array(items) => {
            for v in items {
                collect(v, under_secret, out);
            }
        }
        Value::String(s) if under_secret => out.push(s.clone()),
        Value::Number(n) if under_secret => out.push(n.to_string()),
        _ => {}
    }
}

/// The secrets of `device` whose files merge `raw`: see the module's rule.
pub fn secrets(device: &Device, raw: &RawConfig, url_key: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    collect(&Value::Object(raw.clone()), false, &mut out);
    for (key, value) in &device.extra {
        collect(value, secret_key(key), &mut out);
    }
    out.extend(device.admin_password.clone());
    out.extend(url_key.map(str::to_owned));
    out.retain(|s| !s.is_empty());
    out
}

/// The forms in which a template may write `secret`.
fn forms(secret: &str) -> Vec<String> {
    let entities = |apos: &str| {
        secret
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', apos)
    };
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json
        .strip_prefix('"')
        .and_then(|j| j.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned();
    let mut all = vec![
        secret.to_owned(),
        entities("&#39;"),
        entities("&#x27;"),
        entities("&apos;"),
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        json,
    ];
    all.retain(|f| !f.is_empty());
    all.sort();
    all.dedup();
    all
}

/// `text` with every form of every secret replaced by [`MASK`], longest first (so that a
/// secret containing another is masked whole).
pub fn mask(text: &str, secrets: &[String]) -> String {
    let mut all: Vec<String> = secrets.iter().flat_map(|s| forms(s)).collect();
    all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    all.dedup();
    let mut out = text.to_owned();
    for form in all {
        if out.contains(&form) {
            out = out.replace(&form, MASK);
        }
    }
    out
}

/// The file name a route pattern gives for `device` (`{mac}`/`{MAC}` filled in).
fn file_name(pattern: &str, device: &Device) -> String {
    let Some(mac) = device.mac else {
        return pattern.to_owned();
    };
    let hex: String = mac.octets().iter().map(|b| format!("{b:02x}")).collect();
    pattern
        .replace("{mac}", &hex)
        .replace("{MAC}", &hex.to_ascii_uppercase())
}

/// Each template file of `device`'s plugin, rendered as the provisioning servers render it
/// for the device, secrets masked. Empty when the device has no (loaded) plugin.
pub fn previews(files: &FileService, device: &Device) -> Vec<Preview> {
    let plugins = files.plugins();
    let Some(plugin) = device.plugin.as_deref().and_then(|p| plugins.get(p)) else {
        return Vec::new();
    };
    let store = files.store();
    let chain = files.renderer().config_chain(device).unwrap_or_default();
    let raw = merged_raw_config(chain.iter().map(|c| &c.raw_config));
    // The tenant's key is masked whatever the strategy: it opens every file of the tenant.
    let url_key = store
        .tenant(&device.tenant)
        .ok()
        .flatten()
        .and_then(|t| t.provisioning_key);
    let secrets = secrets(device, &raw, url_key.as_deref());
    plugin
        .template_routes()
        .map(|(pattern, template, content_type)| {
            let resolved = Resolved {
                target: Target::Template(template.to_owned()),
                mac: device.mac,
                content_type: content_type.to_owned(),
            };
            let rendered = files.renderer().render(plugin, device, &resolved);
            let (text, truncated) = match rendered {
                Ok(r) => {
                    let cut = r.body.len() > MAX_PREVIEW_BYTES;
                    let body = &r.body[..r.body.len().min(MAX_PREVIEW_BYTES)];
                    (Ok(mask(&String::from_utf8_lossy(body), &secrets)), cut)
                }
                // An error may quote a value: it is masked too.
                Err(e) => (Err(mask(&e.to_string(), &secrets)), false),
            };
            Preview {
                name: file_name(pattern, device),
                template: template.to_owned(),
                content_type: content_type.to_owned(),
                text,
                truncated,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for key in [
            "password",
            "admin_password",
            "X_sip_secret",
            "voicemail_pin",
            "auth-token",
            "wifi_psk",
            "Passwd",
        ] {
            assert!(secret_key(key), "{key}");
        }
        for key in [
            "username",
            "display_name",
            "ping_interval",
            "spin",
            "passive",
        ] {
            assert!(!secret_key(key), "{key}");
        }
    }

    #[test]
    fn every_form_is_masked() {
        let secrets = vec!["p&ss<w>'\"d é".to_owned(), "abc".to_owned()];
        let text = "raw p&ss<w>'\"d é; xml p&amp;ss&lt;w&gt;&apos;&quot;d é; \
                    url p%26ss%3Cw%3E%27%22d%20%C3%A9; form p%26ss%3Cw%3E%27%22d+%C3%A9; \
                    json p&ss<w>'\\\"d é; short abc";
        let masked = mask(text, &secrets);
        assert!(!masked.contains("ss<w"), "{masked}");
        assert!(!masked.contains("ss&lt;w"), "{masked}");
        assert!(!masked.contains("ss%3Cw"), "{masked}");
        assert!(!masked.contains("abc"), "{masked}");
        assert_eq!(masked.matches(MASK).count(), 6, "{masked}");
    }

    #[test]
    fn secrets_come_from_keys_extra_and_the_device() {
        let mut device = Device::new("d", "t");
        device.admin_password = Some("adminpw".into());
        device
            .extra
            .insert("X_secret".into(), Value::String("extra-secret".into()));
        let raw: RawConfig = serde_json::from_value(serde_json::json!({
            "sip_lines": {"1": {"username": "alice", "password": "linepw"}},
            "X_pins": {"voicemail_pin": 4321},
            "display_name": "Alice"
        }))
        .unwrap();
        let mut found = secrets(&device, &raw, Some("tenantkey"));
        found.sort();
        assert_eq!(
            found,
            ["4321", "adminpw", "extra-secret", "linepw", "tenantkey"]
        );
    }
}
