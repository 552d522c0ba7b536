//! What a device's files look like, for people: its config chain and each template file of
//! its plugin rendered through the renderer the provisioning servers use, with its secrets
//! masked.
//!
//! The masking rule does not trust templates to mark secrets: every value that the device's
//! merged raw config holds under a key naming a password, a secret, a token, a key or a PIN
//! (see [`secret_key`]), the device's own admin password and its tenant's provisioning key
//! are secrets. Guessing how a template escapes a value is a losing game (each filter has its
//! own set of characters it leaves alone), and a short secret such as a PIN `1` cannot be
//! searched for in the text; so the renderer gets a placeholder in place of each secret
//! instead, made of ASCII letters and digits only (digits only for a number) with a random
//! part drawn for this render, which every escaping leaves as it is; the placeholders are then
//! replaced by [`MASK`] in the rendered text, before it is cut to [`MAX_PREVIEW_BYTES`].

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use serde_json::Value;

use crate::files::FileService;
use crate::model::{Config, Device};
use crate::plugins::{Resolved, Target};

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

/// The words of a raw-config key, lowercased: split at every character that is not a letter
/// or a digit and where camelCase starts a word (`adminPin`, `APIKey`).
fn words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut out = Vec::new();
    let mut word = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1).copied();
        let starts_word = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_uppercase() && next.is_some_and(char::is_lowercase))
            });
        if starts_word && !word.is_empty() {
            out.push(std::mem::take(&mut word));
        }
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// What comes before `key` in a name that ends with it and is no secret (a phone's keys).
const KEY_NOT_SECRET: &[&str] = &[
    "line",
    "func",
    "fn",
    "function",
    "soft",
    "hot",
    "speed",
    "speeddial",
    "prog",
    "programmable",
    "sort",
    "dss",
    "blf",
    "feature",
    "memory",
    "exp",
    "expansion",
    "side",
    "top",
    "quick",
    "short",
    "shortcut",
    "dial",
    "menu",
    "nav",
    "navigation",
    "context",
    "virtual",
    "ext",
    "extension",
    "hard",
    "fixed",
];

/// What comes before `key` in a run-together name that names a secret (`apikey`).
const KEY_SECRET: &[&str] = &[
    "api",
    "wifi",
    "wlan",
    "wpa",
    "wep",
    "private",
    "secret",
    "access",
    "auth",
    "encryption",
    "crypt",
    "license",
    "licence",
    "provisioning",
    "shared",
    "preshared",
    "session",
    "signing",
    "ssh",
    "tls",
    "ssl",
    "aes",
    "hmac",
    "master",
    "device",
    "tenant",
    "url",
    "user",
    "admin",
];

/// Whether a raw-config key names a secret: a word containing `password`, `passwd`,
/// `passphrase`, `passcode`, `secret`, `token`, `credential` or `pwd`; a word `pass`, `pin`,
/// `psk`, `puk`, `pw` or `ha1` (trailing digits aside) or run together with what precedes it
/// (`userpin`, `sippass`, `wpapsk`, `sipha1`); a word `key` not after a phone's key kind
/// (`line_key`, `softkey` are none), or run together after a secret's kind (`apikey`).
pub fn secret_key(key: &str) -> bool {
    let words = words(key);
    words.iter().enumerate().any(|(i, w)| {
        let bare = w.trim_end_matches(|c: char| c.is_ascii_digit());
        let contains = [
            "password",
            "passwd",
            "passphrase",
            "passcode",
            "secret",
            "token",
            "credential",
            "pwd",
        ]
        .iter()
        .any(|s| w.contains(s));
        let exact = matches!(bare, "pass" | "pin" | "psk" | "puk" | "pw" | "pincode");
        let joined = (bare.ends_with("pin") && !bare.ends_with("spin"))
            || (bare.ends_with("pass") && !matches!(bare, "bypass" | "compass" | "encompass"))
            || bare.ends_with("psk")
            || bare.ends_with("pincode")
            || (w.contains("ha1") && !w.contains("sha1"));
        let key = match bare.strip_suffix("key") {
            Some("") => i == 0 || !KEY_NOT_SECRET.contains(&words[i - 1].as_str()),
            Some(before) => KEY_SECRET.contains(&before),
            None => false,
        };
        contains || exact || joined || key
    })
}

/// The placeholders of one render, each standing for one secret.
struct Placeholders {
    /// Random per render, so that no config value holds a placeholder by chance.
    nonce: String,
    /// The placeholders given out for text values, uppercase.
    texts: Vec<String>,
    /// The placeholders given out for numbers.
    numbers: Vec<u64>,
    /// Where random numbers come from when the system's source fails.
    fallback: RandomState,
    /// Random numbers drawn, to vary the fallback's.
    drawn: u64,
}

impl Placeholders {
    fn new() -> Placeholders {
        let mut placeholders = Placeholders {
            nonce: String::new(),
            texts: Vec::new(),
            numbers: Vec::new(),
            fallback: RandomState::new(),
            drawn: 0,
        };
        const DIGITS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let nonce = (0..3)
            .map(|_| placeholders.random())
            .flat_map(|n| n.to_le_bytes())
            .map(|b| char::from(DIGITS[usize::from(b) % DIGITS.len()]))
            .collect();
        placeholders.nonce = nonce;
        placeholders
    }

    fn random(&mut self) -> u64 {
        self.drawn += 1;
        let mut bytes = [0u8; 8];
        match getrandom::fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => {
                let mut h = self.fallback.build_hasher();
                h.write_u64(self.drawn);
                h.finish()
            }
        }
    }

    /// A placeholder for a text secret: ASCII letters and digits, ended by `ZZ` so that no
    /// placeholder is the start of another.
    fn text(&mut self) -> String {
        let placeholder = format!("ZZPVMASK{}N{}ZZ", self.nonce, self.texts.len());
        self.texts.push(placeholder.clone());
        placeholder
    }

    /// A placeholder for a numeric secret, a number still (a template may do sums with it):
    /// 18 random digits.
    fn number(&mut self) -> u64 {
        loop {
            let n = 100_000_000_000_000_000 + self.random() % 900_000_000_000_000_000;
            if !self.numbers.contains(&n) {
                self.numbers.push(n);
                return n;
            }
        }
    }

    /// Replaces every secret of `value`, at any depth, that is under a secret key (or all of
    /// them when `under_secret`); empty texts stay empty, for `{% if %}` to see them as they are.
    fn substitute(&mut self, value: &mut Value, under_secret: bool) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    self.substitute(v, under_secret || secret_key(key));
                }
            }
            Value::Array(items) => {
                for v in items {
                    self.substitute(v, under_secret);
                }
            }
            Value::String(s) if under_secret && !s.is_empty() => *s = self.text(),
            Value::Number(_) if under_secret => *value = Value::from(self.number()),
            _ => {}
        }
    }

    /// `text` with every placeholder replaced by [`MASK`]; the text ones in any case, for a
    /// template may change it (`lower`).
    fn unmask(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for placeholder in &self.texts {
            out = replace_ascii_case_insensitive(&out, placeholder, MASK);
        }
        for n in &self.numbers {
            let n = n.to_string();
            if out.contains(&n) {
                out = out.replace(&n, MASK);
            }
        }
        out
    }
}

/// `text` with every match of the ASCII `needle`, in any case, replaced by `with`.
fn replace_ascii_case_insensitive(text: &str, needle: &str, with: &str) -> String {
    // ASCII lowercasing keeps every byte where it is, so offsets carry over.
    let lower = text.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find(&needle) {
        out.push_str(&text[at..at + found]);
        out.push_str(with);
        at += found + needle.len();
    }
    out.push_str(&text[at..]);
    out
}

/// The forms in which a template may write `secret` that is not substituted (the tenant's
/// provisioning key, which a raw config may quote in a URL by hand).
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
    // RFC 3986's unreserved characters stay, as the `percent` filter leaves them.
    let unreserved: String = secret
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let mut all = vec![
        secret.to_owned(),
        entities("&#39;"),
        entities("&#x27;"),
        entities("&apos;"),
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
        unreserved,
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        json,
    ];
    all.retain(|f| !f.is_empty());
    all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    all.dedup();
    all
}

/// `text` with every form of `secret` replaced by [`MASK`].
fn mask_forms(text: &str, secret: &str) -> String {
    let mut out = text.to_owned();
    for form in forms(secret) {
        if out.contains(&form) {
            out = out.replace(&form, MASK);
        }
    }
    out
}

/// The rendered `body` as a preview shows it: placeholders and `url_key` masked, then cut at
/// [`MAX_PREVIEW_BYTES`] on a character boundary (masking first, so that no secret is cut in
/// two with its start left showing); and whether it was cut.
fn mask_and_cut(body: &[u8], placeholders: &Placeholders, url_key: Option<&str>) -> (String, bool) {
    let mut text = placeholders.unmask(&String::from_utf8_lossy(body));
    if let Some(key) = url_key {
        text = mask_forms(&text, key);
    }
    if text.len() <= MAX_PREVIEW_BYTES {
        return (text, false);
    }
    let mut cut = MAX_PREVIEW_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    (text, true)
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
    // The tenant's key is masked whatever the strategy: it opens every file of the tenant.
    let url_key = files
        .store()
        .tenant(&device.tenant)
        .ok()
        .flatten()
        .and_then(|t| t.provisioning_key)
        .filter(|k| !k.is_empty());
    plugin
        .template_routes()
        .map(|(pattern, template, content_type)| {
            let resolved = Resolved {
                target: Target::Template(template.to_owned()),
                mac: device.mac,
                content_type: content_type.to_owned(),
            };
            let mut placeholders = Placeholders::new();
            let rendered = files
                .renderer()
                .render_edited(plugin, device, &resolved, |inputs| {
                    let mut raw = Value::Object(std::mem::take(&mut inputs.raw));
                    placeholders.substitute(&mut raw, false);
                    if let Value::Object(raw) = raw {
                        inputs.raw = raw;
                    }
                    if let Some(pw) = inputs.device.admin_password.as_mut() {
                        if !pw.is_empty() {
                            *pw = placeholders.text();
                        }
                    }
                    if let Some(key) = inputs.url_key.as_mut() {
                        *key = placeholders.text();
                    }
                });
            let (text, truncated) = match rendered {
                Ok(r) => {
                    let (text, cut) = mask_and_cut(&r.body, &placeholders, url_key.as_deref());
                    (Ok(text), cut)
                }
                // An error may quote a value: it is masked too.
                Err(e) => {
                    let (text, _) =
                        mask_and_cut(e.to_string().as_bytes(), &placeholders, url_key.as_deref());
                    (Err(text), false)
                }
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
            "passphrase",
            "wifi_passphrase",
            "passcode",
            "api_key",
            "apiKey",
            "APIKey",
            "X_apikey",
            "wifi_key",
            "private_key",
            "privateKey",
            "key",
            "ha1",
            "sip_ha1",
            "adminPin",
            "AdminPIN",
            "userpin",
            "userpwd",
            "sippass",
            "wpapsk",
            "pin1",
            "lock_pin_code",
            "adminPassword",
        ] {
            assert!(secret_key(key), "{key}");
        }
        for key in [
            "username",
            "display_name",
            "ping_interval",
            "spin",
            "passive",
            "bypass",
            "funckeys",
            "line_key",
            "lineKey",
            "linekey",
            "softkey_1",
            "hotkey",
            "keyboard",
            "keys",
            "sha1",
            "mapping",
            "sip_port",
            "registrar_ip",
        ] {
            assert!(!secret_key(key), "{key}");
        }
    }

    #[test]
    fn words_split_at_separators_and_camel_case() {
        assert_eq!(words("adminPin"), ["admin", "pin"]);
        assert_eq!(words("APIKey"), ["api", "key"]);
        assert_eq!(words("X_sip-ha1.v2"), ["x", "sip", "ha1", "v2"]);
        assert_eq!(words("pin1Code"), ["pin1", "code"]);
    }

    #[test]
    fn secrets_become_placeholders_that_escaping_leaves_alone() {
        let mut placeholders = Placeholders::new();
        let mut raw = serde_json::json!({
            "admin_password": "Pass.word!&%<",
            "sip_lines": {"1": {"username": "1", "password": "1"}},
            "X_pins": {"voicemail_pin": 4321},
            "X_apiKey": ["k1", 7],
            "user_password": "",
            "display_name": "Alice",
            "pin_enabled": true
        });
        placeholders.substitute(&mut raw, false);
        let text = |v: &Value| v.as_str().unwrap().to_owned();
        let admin = text(&raw["admin_password"]);
        let line = text(&raw["sip_lines"]["1"]["password"]);
        assert_ne!(admin, line, "one placeholder per secret");
        for p in [&admin, &line] {
            assert!(p.bytes().all(|b| b.is_ascii_alphanumeric()), "{p}");
        }
        assert_eq!(raw["sip_lines"]["1"]["username"], "1");
        assert_eq!(raw["user_password"], "", "empty stays empty");
        assert_eq!(raw["display_name"], "Alice");
        assert_eq!(raw["pin_enabled"], true);
        let pin = raw["X_pins"]["voicemail_pin"]
            .as_u64()
            .expect("a number still");
        assert_ne!(pin, 4321);
        assert!(raw["X_apiKey"][0].is_string() && raw["X_apiKey"][1].is_u64());

        // As templates write them: percent-encoded, lowercased, in markup, as numbers.
        let rendered = format!(
            "user 1 pwd {line} admin {} lower {} pin {pin} line 1 {admin}&amp;",
            percent_encoding::utf8_percent_encode(&admin, percent_encoding::NON_ALPHANUMERIC),
            admin.to_lowercase(),
        );
        assert_eq!(
            placeholders.unmask(&rendered),
            format!("user 1 pwd {MASK} admin {MASK} lower {MASK} pin {MASK} line 1 {MASK}&amp;")
        );
    }

    #[test]
    fn masking_comes_before_the_cut() {
        let mut placeholders = Placeholders::new();
        let secret = placeholders.text();
        let key = "tenant.key~9-$x";
        for (straddling, note) in [(secret.as_str(), "placeholder"), (key, "key")] {
            let mut body = "a".repeat(MAX_PREVIEW_BYTES - 4);
            body.push_str(straddling);
            body.push_str(" tail");
            let (text, cut) = mask_and_cut(body.as_bytes(), &placeholders, Some(key));
            assert!(cut, "{note}");
            assert!(text.len() <= MAX_PREVIEW_BYTES, "{note}");
            let end = &text[MAX_PREVIEW_BYTES - 8..];
            assert!(end.starts_with("aaaa"), "{note}: {end}");
            assert!(!end.contains(&straddling[..4]), "{note}: {end}");
            // The mask itself is cut on a character boundary (it is not ASCII).
            assert!(end.ends_with('•'), "{note}: {end}");
        }
        let (text, cut) = mask_and_cut(b"short", &placeholders, None);
        assert_eq!((text.as_str(), cut), ("short", false));
    }

    #[test]
    fn the_tenant_key_is_masked_in_every_form() {
        let placeholders = Placeholders::new();
        let key = "Ab.c~d-e$f";
        let text = "raw Ab.c~d-e$f; percent Ab.c~d-e%24f; strict Ab%2Ec%7Ed%2De%24f; \
                    form Ab.c%7Ed-e%24f";
        let (masked, _) = mask_and_cut(text.as_bytes(), &placeholders, Some(key));
        assert!(!masked.contains("Ab"), "{masked}");
        assert_eq!(masked.matches(MASK).count(), 4, "{masked}");
    }
}
