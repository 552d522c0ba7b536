//! `provisiond dhcp-snippet`: the per-vendor options of the plugins as configuration for a
//! foreign DHCP server (ISC dhcpd, Kea, dnsmasq), so that it hands phones the same options as
//! the built-in responder. Clients are matched by the first bytes of option 60, taken from the
//! literal prefixes of each plugin's vendor-class rule; a rule without one is named in a
//! comment for the admin to translate by hand.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::Look;
use url::Url;

use crate::files::UrlKey;
use crate::plugins::{Plugin, PluginSet};

use super::provision::{fill_option, provisioning_url, VendorOption};

/// The foreign server to write for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// ISC dhcpd (`include` it in dhcpd.conf).
    Isc,
    /// Kea DHCPv4 (merge the `client-classes` list into `Dhcp4`).
    Kea,
    /// dnsmasq (`conf-file=` it, or drop it in /etc/dnsmasq.d).
    Dnsmasq,
}

/// What the options are filled with.
#[derive(Debug, Clone)]
pub struct Params {
    /// `[general] base_url`, or the pool's, or `--base-url`.
    pub base_url: Option<Url>,
    /// The key for `{provisioning_url}` under the `url_key` strategy.
    pub key: UrlKey,
    /// `{server_ip}` and `{tftp_server}`.
    pub server_ip: Option<Ipv4Addr>,
}

/// Most option 60 prefixes written for one plugin; past it the rule is left to the admin.
const MAX_PREFIXES: usize = 8;

/// One plugin's share of the snippet.
struct VendorClass {
    name: String,
    /// Option 60 starts with one of these.
    prefixes: Vec<Vec<u8>>,
    options: Vec<VendorOption>,
    /// Why something of the plugin could not be written.
    notes: Vec<String>,
}

/// The option 60 prefixes that `pattern` requires, or why there are none. A
/// case-insensitive run of letters gives its lower case, Capitalized and UPPER spellings.
pub fn vendor_class_prefixes(pattern: &str) -> Result<Vec<Vec<u8>>, String> {
    // ASCII case folding: Unicode's would add the Kelvin sign to `(?i)k`, a third spelling.
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .map_err(|e| format!("rule '{pattern}' does not parse: {e}"))?;
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return Err(format!("rule '{pattern}' is not anchored with ^"));
    }
    // Classes of two are a letter in both cases; wider ones (digits…) end the prefix.
    let seq = Extractor::new()
        .kind(ExtractKind::Prefix)
        .limit_class(2)
        .limit_total(4096)
        .extract(&hir);
    let Some(literals) = seq.literals() else {
        return Err(format!("rule '{pattern}' has no fixed first bytes"));
    };
    let mut groups: Vec<(Vec<u8>, Vec<Vec<u8>>)> = Vec::new();
    for literal in literals {
        let bytes = literal.as_bytes().to_vec();
        let lower = bytes.to_ascii_lowercase();
        match groups.iter_mut().find(|(key, _)| *key == lower) {
            Some((_, members)) => members.push(bytes),
            None => groups.push((lower, vec![bytes])),
        }
    }
    let mut prefixes: Vec<Vec<u8>> = Vec::new();
    for (lower, members) in groups {
        if members.len() <= 3 {
            prefixes.extend(members);
            continue;
        }
        let mut capitalized = lower.clone();
        if let Some(first) = capitalized.first_mut() {
            first.make_ascii_uppercase();
        }
        prefixes.extend([lower.clone(), capitalized, lower.to_ascii_uppercase()]);
    }
    prefixes.sort();
    prefixes.dedup();
    // A prefix that another one starts with adds nothing.
    let all = prefixes.clone();
    prefixes.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q)));
    if prefixes.iter().any(Vec::is_empty) || prefixes.is_empty() {
        return Err(format!("rule '{pattern}' has no fixed first bytes"));
    }
    if prefixes.len() > MAX_PREFIXES {
        return Err(format!(
            "rule '{pattern}' has {} possible first bytes (more than {MAX_PREFIXES})",
            prefixes.len()
        ));
    }
    Ok(prefixes)
}

fn vendor_class(plugin: &Plugin, params: &Params) -> VendorClass {
    let mut notes = Vec::new();
    let mut prefixes = Vec::new();
    for pattern in plugin.dhcp_vendor_patterns() {
        match vendor_class_prefixes(pattern) {
            Ok(found) => prefixes.extend(found),
            Err(why) => notes.push(format!("option 60 {why}: match it by hand")),
        }
    }
    prefixes.sort();
    prefixes.dedup();
    let needs_ip = |v: &str| v.contains("{server_ip}") || v.contains("{tftp_server}");
    let mut options = Vec::new();
    for spec in &plugin.dhcp_options {
        if needs_ip(&spec.value) && params.server_ip.is_none() {
            notes.push(format!(
                "option {} needs the server's address: give --server-ip",
                spec.code
            ));
            continue;
        }
        if spec.value.contains("{provisioning_url}") && params.base_url.is_none() {
            notes.push(format!(
                "option {} needs the provisioning URL: set [general] base_url or give --base-url",
                spec.code
            ));
            continue;
        }
        if spec.value.contains("{provisioning_url}") && params.key == UrlKey::Missing {
            notes.push(format!(
                "option {} needs the tenant's provisioning key: give --key",
                spec.code
            ));
            continue;
        }
        let url = params
            .base_url
            .as_ref()
            .and_then(|base| provisioning_url(base, &params.key));
        options.extend(fill_option(
            &plugin.name,
            spec,
            url.as_deref(),
            params.server_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        ));
    }
    VendorClass {
        name: plugin.name.clone(),
        prefixes,
        options,
        notes,
    }
}

/// A snippet and what it lacks.
#[derive(Debug, Clone)]
pub struct Snippet {
    /// The configuration text (the problems are comments in it too).
    pub text: String,
    /// `plugin: problem` for everything that could not be written.
    pub problems: Vec<String>,
}

/// The snippet for every plugin that declares DHCP options.
pub fn render(plugins: &PluginSet, params: &Params, format: Format) -> Snippet {
    let mut classes: Vec<VendorClass> = plugins
        .iter()
        .filter(|p| !p.dhcp_options.is_empty())
        .map(|p| vendor_class(p, params))
        .collect();
    if format == Format::Dnsmasq {
        // dnsmasq compares option 60 as text, reads `,` as a separator, `"` as a quote and
        // ` #` as a comment, and trims spaces.
        for class in &mut classes {
            let mut kept = Vec::new();
            for prefix in class.prefixes.drain(..) {
                let trimmed = prefix.trim_ascii().to_vec();
                if printable(&trimmed)
                    && !trimmed.is_empty()
                    && !trimmed.iter().any(|b| matches!(b, b',' | b'"' | b'#'))
                {
                    kept.push(trimmed);
                } else {
                    class.notes.push(format!(
                        "option 60 prefix {} is not plain text: dnsmasq cannot match it",
                        hex(&prefix, ":")
                    ));
                }
            }
            kept.dedup();
            class.prefixes = kept;
        }
    }
    for class in &mut classes {
        if class.prefixes.is_empty() || class.options.is_empty() {
            class.notes.push("nothing written for this plugin".into());
        }
    }
    let text = match format {
        Format::Isc => isc(&classes),
        Format::Kea => kea(&classes),
        Format::Dnsmasq => dnsmasq(&classes),
    };
    let problems = classes
        .iter()
        .flat_map(|c| {
            c.notes
                .iter()
                .map(move |n| format!("{}: {}", c.name, one_line(n)))
        })
        .collect();
    Snippet { text, problems }
}

fn printable(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| (0x20..0x7f).contains(b))
}

fn hex(bytes: &[u8], separator: &str) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(separator)
}

fn notes(out: &mut String, comment: &str, class: &VendorClass) {
    for note in &class.notes {
        let _ = writeln!(out, "{comment} {}: {}", class.name, one_line(note));
    }
}

const HEADER: &str = "DHCP options of provisiond's plugins, from `provisiond dhcp-snippet`.";

/// A quoted dhcpd string: `"` and `\` escaped, every other byte outside printable ASCII as
/// an octal escape (dhcpd's lexer reads `\ooo`).
fn isc_string(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "\\{b:03o}");
            }
        }
    }
    out.push('"');
    out
}

/// A prefix for `match if`: a quoted string when it is text, else colon-separated hex (a
/// string could not carry the NUL bytes of a binary prefix).
fn isc_text(bytes: &[u8]) -> String {
    if printable(bytes) {
        isc_string(bytes)
    } else {
        hex(bytes, ":")
    }
}

/// One line of comment text: control characters (a newline in a plugin's regex) escaped, so
/// that nothing a plugin writes can end the comment and become configuration.
fn one_line(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn isc(classes: &[VendorClass]) -> String {
    let mut out = format!(
        "# {HEADER}\n# include \"/etc/dhcp/provisiond.conf\"; at the top of dhcpd.conf. Phones are\n\
         # matched by the first bytes of option 60; options marked `always` are added to the\n\
         # client's parameter request list so that dhcpd sends them unasked.\n"
    );
    let mut codes: Vec<u8> = classes
        .iter()
        .flat_map(|c| c.options.iter().map(|o| o.code))
        .filter(|code| !matches!(code, 43 | 66 | 67))
        .collect();
    codes.sort_unstable();
    codes.dedup();
    for code in codes {
        let kind = if code == 150 {
            "array of ip-address"
        } else {
            "string"
        };
        let _ = writeln!(out, "option provisiond-{code} code {code} = {kind};");
    }
    for class in classes {
        out.push('\n');
        notes(&mut out, "#", class);
        if class.prefixes.is_empty() || class.options.is_empty() {
            continue;
        }
        let tests: Vec<String> = class
            .prefixes
            .iter()
            .map(|p| {
                format!(
                    "substring(option vendor-class-identifier, 0, {}) = {}",
                    p.len(),
                    isc_text(p)
                )
            })
            .collect();
        let _ = writeln!(out, "class \"provisiond-{}\" {{", class.name);
        let _ = writeln!(out, "    match if {};", tests.join("\n        or "));
        let always: Vec<String> = class
            .options
            .iter()
            .filter(|o| o.always)
            .map(|o| format!("{:02x}", o.code))
            .collect();
        if !always.is_empty() {
            let _ = writeln!(
                out,
                "    option dhcp-parameter-request-list = concat(option dhcp-parameter-request-list, {});",
                always.join(":")
            );
        }
        for option in &class.options {
            let line = match option.code {
                66 => format!("option tftp-server-name {}", isc_string(&option.value)),
                67 => format!("option bootfile-name {}", isc_string(&option.value)),
                43 => format!(
                    "option vendor-encapsulated-options {}",
                    hex(&option.value, ":")
                ),
                150 => format!(
                    "option provisiond-150 {}",
                    option
                        .value
                        .chunks(4)
                        .filter(|c| c.len() == 4)
                        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]).to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                code => format!("option provisiond-{code} {}", isc_string(&option.value)),
            };
            let _ = writeln!(out, "    {line};");
        }
        out.push_str("}\n");
    }
    out
}

fn kea_literal(bytes: &[u8]) -> String {
    if printable(bytes) && !bytes.contains(&b'\'') {
        format!("'{}'", String::from_utf8_lossy(bytes))
    } else {
        format!("0x{}", hex(bytes, ""))
    }
}

fn kea(classes: &[VendorClass]) -> String {
    let mut comments = Vec::new();
    let mut list = Vec::new();
    for class in classes {
        comments.extend(
            class
                .notes
                .iter()
                .map(|n| format!("{}: {}", class.name, one_line(n))),
        );
        if class.prefixes.is_empty() || class.options.is_empty() {
            continue;
        }
        let test = class
            .prefixes
            .iter()
            .map(|p| {
                format!(
                    "substring(option[60].hex, 0, {}) == {}",
                    p.len(),
                    kea_literal(p)
                )
            })
            .collect::<Vec<_>>()
            .join(" or ");
        // Raw bytes (csv-format off): no option definition is needed for 159/160/150.
        let options: Vec<serde_json::Value> = class
            .options
            .iter()
            .map(|o| {
                serde_json::json!({
                    "code": o.code,
                    "space": "dhcp4",
                    "csv-format": false,
                    "data": hex(&o.value, "").to_uppercase(),
                    "always-send": o.always,
                })
            })
            .collect();
        list.push(serde_json::json!({
            "name": format!("provisiond-{}", class.name),
            "test": test,
            "option-data": options,
        }));
    }
    let body = serde_json::json!({ "client-classes": list });
    let mut out = format!(
        "// {HEADER}\n// Merge \"client-classes\" into the \"Dhcp4\" object of kea-dhcp4.conf (Kea \
         accepts\n// these comments). Phones are matched by the first bytes of option 60.\n"
    );
    for c in comments {
        let _ = writeln!(out, "// {c}");
    }
    out.push_str(&serde_json::to_string_pretty(&body).unwrap_or_default());
    out.push('\n');
    out
}

fn dnsmasq(classes: &[VendorClass]) -> String {
    let mut out = format!(
        "# {HEADER}\n# conf-file= it from dnsmasq.conf. dnsmasq matches option 60 by substring, not by\n\
         # prefix; options marked `always` use dhcp-option-force.\n"
    );
    for class in classes {
        out.push('\n');
        notes(&mut out, "#", class);
        if class.prefixes.is_empty() || class.options.is_empty() {
            continue;
        }
        let tag = format!("provisiond-{}", class.name);
        for prefix in &class.prefixes {
            let _ = writeln!(
                out,
                "dhcp-vendorclass=set:{tag},{}",
                String::from_utf8_lossy(prefix)
            );
        }
        for option in &class.options {
            let verb = if option.always {
                "dhcp-option-force"
            } else {
                "dhcp-option"
            };
            let value = match option.code {
                150 => option
                    .value
                    .chunks(4)
                    .filter(|c| c.len() == 4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]).to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                _ if printable(&option.value) => {
                    let text = String::from_utf8_lossy(&option.value)
                        .replace('\\', "\\\\")
                        .replace('"', "\\\"");
                    format!("\"{text}\"")
                }
                _ => hex(&option.value, ":"),
            };
            let _ = writeln!(out, "{verb}=tag:{tag},{},{value}", option.code);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(prefixes: Vec<Vec<u8>>) -> Vec<String> {
        prefixes
            .into_iter()
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .collect()
    }

    #[test]
    fn prefixes_come_from_the_anchored_literal_start() {
        assert_eq!(text(vendor_class_prefixes("^snom").unwrap()), ["snom"]);
        assert_eq!(
            text(vendor_class_prefixes("^(?:Cisco-)?CP-[0-9]{4}-3PCC").unwrap()),
            ["CP-", "Cisco-CP-"]
        );
        assert_eq!(
            text(vendor_class_prefixes("^(?i:yealink)(?:$|[^A-Za-z0-9])").unwrap()),
            ["YEALINK", "Yealink", "yealink"]
        );
        assert_eq!(
            vendor_class_prefixes(r"(?s)^\x00\x00\x36\x3d(?:.\x01)?").unwrap(),
            [vec![0, 0, 0x36, 0x3d]]
        );
        // Shorter prefixes subsume longer ones.
        assert_eq!(text(vendor_class_prefixes("^(?:ab|abc)").unwrap()), ["ab"]);
    }

    #[test]
    fn rules_without_a_fixed_start_are_refused_with_a_reason() {
        for pattern in ["snom", "^[a-z]+", "^(?:a|.)x", "("] {
            let err = vendor_class_prefixes(pattern).unwrap_err();
            assert!(err.contains(pattern), "{pattern}: {err}");
        }
    }
}
