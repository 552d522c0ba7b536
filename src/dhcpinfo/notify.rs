//! `provisiond dhcp-notify`: the client side, run by a foreign DHCP server on each lease event
//! (the dxtorc role). It turns the server's arguments and environment into datagrams in
//! dxtora's format and sends them to the daemon's `[dhcpinfo] socket` (docs/dhcpinfo.md).
//!
//! Three callers are understood, told apart by the first argument:
//! - ISC dhcpd's `execute()` with dxtorc's arguments: `commit IP MAC [OPTION…]`,
//!   `release|expiry IP [MAC]`;
//! - dnsmasq's `dhcp-script`: `add|old|del MAC IP [HOSTNAME]` plus `DNSMASQ_*` variables
//!   (`init`, `tftp`, `arp*` and `relay-snoop` are ignored);
//! - Kea's `libdhcp_run_script.so`: the hook point's name (`leases4_committed`,
//!   `lease4_release`, `lease4_expire`; others ignored) plus `LEASE4_*`/`LEASES4_AT<i>_*`
//!   variables.
//!
//! It must never hold the DHCP server up: no async runtime, one unbound datagram socket with a
//! 50 ms send timeout, and exit status 0 whatever happens (problems are one line on stderr,
//! which the DHCP servers log).

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::{datagram, parse_option, MAX_DATAGRAM, MAX_OPTIONS};
use crate::cli::DhcpNotifyArgs;
use crate::ident::DhcpOption;

/// `[dhcpinfo] socket` of the packaged configuration: used when the configuration does not
/// load (a hook must still try to deliver; the daemon that runs was started before the edit).
pub const PACKAGED_SOCKET: &str = "/run/provisiond/dhcpinfo.sock";

/// Longest wait for room in the daemon's socket buffer, per datagram.
pub const SEND_TIMEOUT: Duration = Duration::from_millis(50);

/// Leases of one Kea `leases4_committed` call that are forwarded (each list).
pub const MAX_KEA_LEASES: usize = 64;

/// dnsmasq script actions that carry a DHCP lease.
const DNSMASQ_LEASE_ACTIONS: [&str; 3] = ["add", "old", "del"];
/// dnsmasq script actions without a lease to forward.
const DNSMASQ_OTHER_ACTIONS: [&str; 6] =
    ["init", "tftp", "arp", "arp-add", "arp-del", "relay-snoop"];

/// Who called, as told by the first argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// dxtorc's arguments (ISC dhcpd `execute()`).
    Dxtorc,
    /// dnsmasq `dhcp-script`.
    Dnsmasq,
    /// Kea `libdhcp_run_script.so`.
    Kea,
}

/// The style of a first argument; `None` when it is none of the three.
pub fn style_of(first: &str) -> Option<Style> {
    if matches!(first, "commit" | "release" | "expiry") {
        Some(Style::Dxtorc)
    } else if DNSMASQ_LEASE_ACTIONS.contains(&first) || DNSMASQ_OTHER_ACTIONS.contains(&first) {
        Some(Style::Dnsmasq)
    } else if is_kea_hook(first) {
        Some(Style::Kea)
    } else {
        None
    }
}

/// True when `provisiond` itself is run as a dnsmasq `dhcp-script` or a Kea `run_script`
/// target: its first argument is a dnsmasq action or a Kea hook point name. Both servers take
/// a bare program path, so `main` routes these to [`run_hook`] before parsing subcommands.
pub fn is_hook_action(first: &str) -> bool {
    matches!(style_of(first), Some(Style::Dnsmasq | Style::Kea))
}

fn is_kea_hook(arg: &str) -> bool {
    ["lease4_", "leases4_", "lease6_", "leases6_"]
        .iter()
        .filter_map(|prefix| arg.strip_prefix(prefix))
        .any(|rest| !rest.is_empty() && rest.bytes().all(|c| c.is_ascii_lowercase() || c == b'_'))
}

/// One lease event, checked, ready to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// `commit`, `release` or `expiry`.
    pub op: &'static str,
    /// Leased address.
    pub ip: Ipv4Addr,
    /// Client MAC, `aa:bb:cc:dd:ee:ff` (always for commit; release/expiry when known).
    pub mac: Option<String>,
    /// Options (commit only).
    pub options: Vec<DhcpOption>,
}

impl Notice {
    /// The datagram (dxtora's format; see [`super::parse_datagram`]).
    pub fn datagram(&self) -> Vec<u8> {
        let options: Vec<String> = self
            .options
            .iter()
            .map(|(code, value)| encode_option(*code, value))
            .collect();
        datagram(self.op, &self.ip.to_string(), self.mac.as_deref(), &options)
    }

    /// The datagram as sent, within what the daemon accepts (at most [`MAX_DATAGRAM`] bytes
    /// and [`MAX_OPTIONS`] options): options are dropped from the end until it fits, since the
    /// lease event matters more than its last options; the note says so.
    pub fn sent_datagram(&self) -> (Vec<u8>, Option<String>) {
        let mut notice = self.clone();
        notice.options.truncate(MAX_OPTIONS);
        let mut dgram = notice.datagram();
        while dgram.len() > MAX_DATAGRAM && notice.options.pop().is_some() {
            dgram = notice.datagram();
        }
        let note = (notice.options.len() < self.options.len()).then(|| {
            format!(
                "the event for {} was over {MAX_DATAGRAM} bytes or {MAX_OPTIONS} options: \
                 options dropped down to {}",
                self.ip,
                notice.options.len()
            )
        });
        (dgram, note)
    }
}

/// What one call asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Who called.
    pub style: Style,
    /// Events to send, in order; empty for actions that are ignored.
    pub notices: Vec<Notice>,
    /// Problems that did not stop the call (each printed on stderr).
    pub warnings: Vec<String>,
}

/// An option as dxtorc writes it: 3-digit decimal code, then the value's bytes in two-digit
/// hex joined by dots (`060` + `79.65.61.6c.69.6e.6b`).
pub fn encode_option(code: u8, value: &[u8]) -> String {
    let mut out = format!("{code:03}");
    for (i, byte) in value.iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A MAC as `aa:bb:cc:dd:ee:ff` from six 1–2 digit hex groups separated by `:` or `-` (ISC's
/// `binary-to-ascii(16, 8, ":", …)` drops leading zeros: `0:15:65:a:b:c`) or 12 hex digits.
pub fn normalize_mac(text: &str) -> Option<String> {
    let groups: Vec<&str> = if text.contains(':') {
        text.split(':').collect()
    } else if text.contains('-') {
        text.split('-').collect()
    } else if text.len() == 12 {
        (0..6)
            .map(|i| text.get(i * 2..i * 2 + 2))
            .collect::<Option<_>>()?
    } else {
        return None;
    };
    if groups.len() != 6 {
        return None;
    }
    let bytes = groups
        .iter()
        .map(|g| {
            if g.is_empty() || g.len() > 2 || !g.bytes().all(|c| c.is_ascii_hexdigit()) {
                None
            } else {
                u8::from_str_radix(g, 16).ok()
            }
        })
        .collect::<Option<Vec<u8>>>()?;
    Some(
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// The options given by the named flags, in this order: `--vendor-class` (60),
/// `--user-class` (77), then each `--option CODE=TEXT`. Empty texts are dropped, like empty
/// dxtorc arguments.
pub fn named_options(
    vendor_class: Option<&str>,
    user_class: Option<&str>,
    options: &[String],
) -> Result<Vec<DhcpOption>, String> {
    let mut out: Vec<DhcpOption> = Vec::new();
    let mut push = |code: u8, text: &str, what: &str| -> Result<(), String> {
        if text.len() > 255 {
            return Err(format!("{what}: a DHCP option holds at most 255 bytes"));
        }
        if !text.is_empty() {
            out.retain(|(c, _)| *c != code);
            out.push((code, text.as_bytes().to_vec()));
        }
        Ok(())
    };
    if let Some(text) = vendor_class {
        push(60, text, "--vendor-class")?;
    }
    if let Some(text) = user_class {
        push(77, text, "--user-class")?;
    }
    for given in options {
        let (code, text) = given
            .split_once('=')
            .ok_or_else(|| format!("--option {given:?}: expected CODE=TEXT, e.g. 60=yealink"))?;
        let code: u8 = code
            .trim()
            .parse()
            .ok()
            .filter(|c| (1..=254).contains(c))
            .ok_or_else(|| format!("--option {given:?}: the code must be a number in 1..254"))?;
        push(code, text, "--option")?;
    }
    Ok(out)
}

/// Named options first (they win over positional or environment options of the same code,
/// which are dropped), then the others.
fn merge(named: &[DhcpOption], others: Vec<DhcpOption>) -> Vec<DhcpOption> {
    let mut out = named.to_vec();
    out.extend(
        others
            .into_iter()
            .filter(|(code, _)| !named.iter().any(|(c, _)| c == code)),
    );
    out
}

fn ipv4(text: &str, what: &str) -> Result<Ipv4Addr, String> {
    text.parse()
        .map_err(|_| format!("{what}: {:?} is not an IPv4 address", clip(text)))
}

fn clip(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Reads the caller's arguments (without the program name or subcommand) and environment.
/// `named` are the flags' options (see [`named_options`]); `env` looks a variable up, as bytes.
pub fn plan(
    args: &[String],
    named: &[DhcpOption],
    env: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Plan, String> {
    let first = args.first().ok_or(
        "no arguments: expected `commit IP MAC [OPTION…]` or `release|expiry IP [MAC]` \
         (or a dnsmasq action or a Kea hook point)",
    )?;
    match style_of(first) {
        Some(Style::Dxtorc) => dxtorc(args, named),
        Some(Style::Dnsmasq) => dnsmasq(args, named, env),
        Some(Style::Kea) => kea(first, env),
        None => Err(format!(
            "op: {:?} is not commit, release or expiry (nor a dnsmasq action or a Kea hook point)",
            clip(first)
        )),
    }
}

/// `commit IP MAC [OPTION…]` or `release|expiry IP [MAC]` (dxtorc ignores what follows the IP
/// of a release; a MAC there is our extension and is forwarded when valid).
fn dxtorc(args: &[String], named: &[DhcpOption]) -> Result<Plan, String> {
    let mut warnings = Vec::new();
    let op: &'static str = match args[0].as_str() {
        "commit" => "commit",
        "release" => "release",
        _ => "expiry",
    };
    let ip = ipv4(args.get(1).ok_or("ip is required")?, "ip")?;
    let notice = if op == "commit" {
        let mac_text = args.get(2).ok_or("mac is required for commit")?;
        let mac = normalize_mac(mac_text)
            .ok_or_else(|| format!("mac: {:?} is not a MAC address", clip(mac_text)))?;
        let mut options = Vec::new();
        for (index, text) in args[3..].iter().enumerate() {
            if text.is_empty() {
                continue;
            }
            options.push(
                parse_option(text)
                    .map_err(|e| format!("option {} ({:?}): {e}", index + 1, clip(text)))?,
            );
        }
        Notice {
            op,
            ip,
            mac: Some(mac),
            options: merge(named, options),
        }
    } else {
        let mac = match args.get(2).filter(|m| !m.is_empty()) {
            Some(text) => {
                let mac = normalize_mac(text);
                if mac.is_none() {
                    warnings.push(format!(
                        "mac: {:?} is not a MAC address; {op} sent by IP only",
                        clip(text)
                    ));
                }
                mac
            }
            None => None,
        };
        Notice {
            op,
            ip,
            mac,
            options: Vec::new(),
        }
    };
    Ok(Plan {
        style: Style::Dxtorc,
        notices: vec![notice],
        warnings,
    })
}

/// dnsmasq: `add|old|del MAC IP [HOSTNAME]`; add and old are commits with the options found
/// in `DNSMASQ_VENDOR_CLASS` (60), `DNSMASQ_USER_CLASS0…` (77, the first non-empty one) and
/// `DNSMASQ_REQUESTED_OPTIONS` (55); del is a release carrying the MAC.
fn dnsmasq(
    args: &[String],
    named: &[DhcpOption],
    env: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Result<Plan, String> {
    let action = args[0].as_str();
    let mut plan = Plan {
        style: Style::Dnsmasq,
        notices: Vec::new(),
        warnings: Vec::new(),
    };
    if !DNSMASQ_LEASE_ACTIONS.contains(&action) {
        return Ok(plan);
    }
    let mac_text = args.get(1).map(String::as_str).unwrap_or("");
    let ip_text = args
        .get(2)
        .ok_or_else(|| format!("dnsmasq {action}: the IP address is missing"))?;
    // DHCPv6 leases (a DUID in place of the MAC) are not phones' provisioning leases.
    if matches!(ip_text.parse::<IpAddr>(), Ok(IpAddr::V6(_))) {
        return Ok(plan);
    }
    let ip = ipv4(ip_text, "ip")?;
    let mac = normalize_mac(mac_text);
    if action == "del" {
        if mac.is_none() && !mac_text.is_empty() {
            plan.warnings.push(format!(
                "mac: {:?} is not an Ethernet MAC address; release sent by IP only",
                clip(mac_text)
            ));
        }
        plan.notices.push(Notice {
            op: "release",
            ip,
            mac,
            options: Vec::new(),
        });
        return Ok(plan);
    }
    let mac =
        mac.ok_or_else(|| format!("mac: {:?} is not an Ethernet MAC address", clip(mac_text)))?;
    let mut options: Vec<DhcpOption> = Vec::new();
    let text_option = |value: Vec<u8>| {
        let mut value = value;
        value.truncate(255);
        value
    };
    if let Some(value) = env("DNSMASQ_VENDOR_CLASS").filter(|v| !v.is_empty()) {
        options.push((60, text_option(value)));
    }
    if let Some(value) = (0..16)
        .map_while(|i| env(&format!("DNSMASQ_USER_CLASS{i}")))
        .find(|v| !v.is_empty())
    {
        options.push((77, text_option(value)));
    }
    if let Some(list) = env("DNSMASQ_REQUESTED_OPTIONS") {
        let codes: Option<Vec<u8>> = String::from_utf8_lossy(&list)
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<u8>().ok())
            .collect();
        match codes {
            Some(codes) if !codes.is_empty() => {
                options.push((55, codes.into_iter().take(255).collect()))
            }
            Some(_) => {}
            None => plan.warnings.push(format!(
                "DNSMASQ_REQUESTED_OPTIONS {:?} is not a list of option codes; ignored",
                clip(&String::from_utf8_lossy(&list))
            )),
        }
    }
    plan.notices.push(Notice {
        op: "commit",
        ip,
        mac: Some(mac),
        options: merge(named, options),
    });
    Ok(plan)
}

/// Kea `run_script`: the hook point names the event, the lease is in the environment
/// (`LEASE4_ADDRESS`, `LEASE4_HWADDR`; `LEASES4_SIZE` and `LEASES4_AT<i>_ADDRESS|HWADDR`,
/// `DELETED_LEASES4_SIZE` and `DELETED_LEASES4_AT<i>_*` for `leases4_committed`).
fn kea(hook: &str, env: &dyn Fn(&str) -> Option<Vec<u8>>) -> Result<Plan, String> {
    let text = |name: &str| {
        env(name)
            .map(|v| String::from_utf8_lossy(&v).trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let mut plan = Plan {
        style: Style::Kea,
        notices: Vec::new(),
        warnings: Vec::new(),
    };
    match hook {
        "leases4_committed" => {
            for (list, op) in [("LEASES4", "commit"), ("DELETED_LEASES4", "release")] {
                let size = text(&format!("{list}_SIZE"))
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or(0);
                if size > MAX_KEA_LEASES {
                    plan.warnings.push(format!(
                        "{list}_SIZE {size}: only the first {MAX_KEA_LEASES} leases are sent"
                    ));
                }
                for i in 0..size.min(MAX_KEA_LEASES) {
                    let prefix = format!("{list}_AT{i}");
                    match kea_lease(op, &prefix, &text) {
                        Ok(notice) => plan.notices.push(notice),
                        Err(e) => plan.warnings.push(e),
                    }
                }
            }
        }
        "lease4_release" => plan.notices.push(kea_lease("release", "LEASE4", &text)?),
        "lease4_expire" => plan.notices.push(kea_lease("expiry", "LEASE4", &text)?),
        _ => {}
    }
    Ok(plan)
}

fn kea_lease(
    op: &'static str,
    prefix: &str,
    text: &dyn Fn(&str) -> Option<String>,
) -> Result<Notice, String> {
    let address_var = format!("{prefix}_ADDRESS");
    let ip = ipv4(
        &text(&address_var).ok_or_else(|| format!("{address_var} is not set"))?,
        &address_var,
    )?;
    let hwaddr_var = format!("{prefix}_HWADDR");
    let hwaddr = text(&hwaddr_var);
    let mac = hwaddr.as_deref().and_then(normalize_mac);
    if op == "commit" && mac.is_none() {
        return Err(format!(
            "{hwaddr_var}: {:?} is not an Ethernet MAC address; lease of {ip} not sent",
            clip(hwaddr.as_deref().unwrap_or(""))
        ));
    }
    Ok(Notice {
        op,
        ip,
        mac,
        options: Vec::new(),
    })
}

/// Where to send, and a note for stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The socket; `None` when the configuration disables dhcpinfo.
    pub socket: Option<PathBuf>,
    /// Why the configuration was not used, or why nothing is sent.
    pub note: Option<String>,
}

/// The socket: `--socket` when given; else `[dhcpinfo] socket` of the configuration found
/// as every other command finds it (the `--config` file, else the default file when it
/// exists, with their conf.d, else the embedded development default, whose socket is
/// `provisiond-data/dhcpinfo.sock` in the working directory, beside the admin socket that
/// `provisiond device list` finds). A configuration that does not load falls back to
/// [`PACKAGED_SOCKET`] with a note.
pub fn target(explicit: Option<&Path>, config: Option<&Path>, default_config: &Path) -> Target {
    if let Some(path) = explicit {
        return Target {
            socket: Some(path.to_path_buf()),
            note: None,
        };
    }
    match crate::config::load(config, default_config) {
        Ok(loaded) if !loaded.settings.dhcpinfo.enabled => Target {
            socket: None,
            note: Some(format!(
                "[dhcpinfo] enabled = false in {}: event not sent",
                loaded
                    .sources
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        },
        Ok(loaded) => Target {
            socket: Some(loaded.settings.dhcpinfo.socket),
            note: None,
        },
        Err(errors) => Target {
            socket: Some(PACKAGED_SOCKET.into()),
            note: Some(format!(
                "configuration not usable ({}); sending to {PACKAGED_SOCKET}",
                errors
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("invalid")
                    .trim()
            )),
        },
    }
}

/// Sends each datagram on one unbound socket, waiting at most [`SEND_TIMEOUT`] for room.
pub fn send(socket: &Path, datagrams: &[Vec<u8>]) -> Result<(), String> {
    let sender = UnixDatagram::unbound().map_err(|e| format!("cannot open a socket: {e}"))?;
    sender
        .set_write_timeout(Some(SEND_TIMEOUT))
        .map_err(|e| format!("cannot set the send timeout: {e}"))?;
    for (i, dgram) in datagrams.iter().enumerate() {
        if let Err(e) = sender.send_to(dgram, socket) {
            use std::io::ErrorKind::*;
            // A relative socket is taken from the working directory, which the DHCP server
            // chose: say which one.
            let shown = match std::env::current_dir() {
                Ok(cwd) if socket.is_relative() => {
                    format!("{} (in {})", socket.display(), cwd.display())
                }
                _ => socket.display().to_string(),
            };
            let why = match e.kind() {
                NotFound => format!(
                    "no socket at {shown}: is provisiond running, and is this its [dhcpinfo] \
                     socket? (--socket PATH or --config FILE)"
                ),
                ConnectionRefused => format!("nobody listens on {shown}: is provisiond running?"),
                PermissionDenied => format!(
                    "permission denied on {shown}: add this DHCP server's user to the group \
                     named by [dhcpinfo] group"
                ),
                WouldBlock | TimedOut => format!(
                    "{shown} did not take the event within {} ms (provisiond overloaded?)",
                    SEND_TIMEOUT.as_millis()
                ),
                _ => format!("cannot send to {shown}: {e}"),
            };
            let lost = datagrams.len() - i;
            return Err(if lost > 1 {
                format!("{why}; {lost} events lost")
            } else {
                format!("{why}; event lost")
            });
        }
    }
    Ok(())
}

fn report(message: &str) {
    eprintln!("provisiond dhcp-notify: {message}");
}

fn process_env(name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    std::env::var_os(name).map(OsStringExt::into_vec)
}

/// `provisiond dhcp-notify …`. Always exits 0: a DHCP server hook must not fail the lease.
pub fn run(args: &DhcpNotifyArgs) -> ExitCode {
    match named_options(
        args.vendor_class.as_deref(),
        args.user_class.as_deref(),
        &args.options,
    ) {
        Ok(named) => notify(
            &args.args,
            &named,
            args.socket.as_deref(),
            args.source.config.as_deref(),
            &args.source.default_config,
        ),
        Err(e) => report(&format!("{e}; nothing sent")),
    }
    ExitCode::SUCCESS
}

/// `provisiond add|old|del …` (dnsmasq) or `provisiond <hook point>` (Kea): `argv` without
/// the program name. The configuration is the default file (`PROVISIOND_CONFIG` or
/// /etc/provisiond/provisiond.toml). Always exits 0.
pub fn run_hook(argv: &[std::ffi::OsString]) -> ExitCode {
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let default_config = std::env::var_os("PROVISIOND_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_PATH));
    notify(&args, &[], None, None, &default_config);
    ExitCode::SUCCESS
}

fn notify(
    args: &[String],
    named: &[DhcpOption],
    socket: Option<&Path>,
    config: Option<&Path>,
    default_config: &Path,
) {
    let plan = match plan(args, named, &process_env) {
        Ok(plan) => plan,
        Err(e) => return report(&format!("{e}; nothing sent")),
    };
    for warning in &plan.warnings {
        report(warning);
    }
    if plan.notices.is_empty() {
        return;
    }
    let mut datagrams = Vec::with_capacity(plan.notices.len());
    for notice in &plan.notices {
        let (dgram, note) = notice.sent_datagram();
        if let Some(note) = note {
            report(&note);
        }
        datagrams.push(dgram);
    }
    let target = target(socket, config, default_config);
    if let Some(note) = &target.note {
        report(note);
    }
    if let Some(socket) = target.socket {
        if let Err(e) = send(&socket, &datagrams) {
            report(&e);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::dhcpinfo::{parse_datagram, Event};
    use crate::ident::{DhcpOp, RequestContext};

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn no_env(_: &str) -> Option<Vec<u8>> {
        None
    }

    fn with_env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<Vec<u8>> {
        let map: HashMap<String, Vec<u8>> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        move |name: &str| map.get(name).cloned()
    }

    const YEALINK_HEX: &str = "06079.65.61.6c.69.6e.6b";

    #[test]
    fn styles() {
        for (arg, style) in [
            ("commit", Some(Style::Dxtorc)),
            ("release", Some(Style::Dxtorc)),
            ("expiry", Some(Style::Dxtorc)),
            ("add", Some(Style::Dnsmasq)),
            ("old", Some(Style::Dnsmasq)),
            ("del", Some(Style::Dnsmasq)),
            ("init", Some(Style::Dnsmasq)),
            ("tftp", Some(Style::Dnsmasq)),
            ("leases4_committed", Some(Style::Kea)),
            ("lease4_release", Some(Style::Kea)),
            ("lease4_expire", Some(Style::Kea)),
            ("lease6_rebind", Some(Style::Kea)),
            ("lease4_", None),
            ("lease4_X", None),
            ("serve", None),
            ("device", None),
            ("renew", None),
            ("", None),
        ] {
            assert_eq!(style_of(arg), style, "{arg}");
        }
        assert!(is_hook_action("add"));
        assert!(is_hook_action("leases4_committed"));
        assert!(
            !is_hook_action("commit"),
            "dxtorc style needs the subcommand"
        );
        assert!(!is_hook_action("dhcp-notify"));
    }

    #[test]
    fn option_encoding() {
        assert_eq!(encode_option(60, b"yealink"), YEALINK_HEX);
        assert_eq!(encode_option(7, &[0x0a, 0xff]), "0070a.ff");
        assert_eq!(encode_option(12, b""), "012");
        for (code, value) in [
            (60u8, b"Aas".to_vec()),
            (77, vec![0, 1, 255]),
            (254, vec![]),
        ] {
            assert_eq!(
                parse_option(&encode_option(code, &value)),
                Ok((code, value))
            );
        }
    }

    #[test]
    fn macs() {
        for (given, want) in [
            ("80:5e:c0:aa:bb:cc", Some("80:5e:c0:aa:bb:cc")),
            ("80:5E:C0:AA:BB:CC", Some("80:5e:c0:aa:bb:cc")),
            ("0:15:65:a:b:c", Some("00:15:65:0a:0b:0c")),
            ("00-15-65-aa-bb-cc", Some("00:15:65:aa:bb:cc")),
            ("001565aabbcc", Some("00:15:65:aa:bb:cc")),
            ("", None),
            ("nope", None),
            ("00:15:65:aa:bb", None),
            ("00:15:65:aa:bb:cc:dd", None),
            ("06-01:23:45:67:89:ab", None),
            ("00:15:65:aa:bb:ccc", None),
            ("00:15:65:aa:bb:", None),
            ("0015656aabbz", None),
            ("+0:15:65:aa:bb:cc", None),
            ("0:1:2:3:4:55", Some("00:01:02:03:04:55")),
            ("00:15-65:aa:bb:cc", None),
        ] {
            assert_eq!(normalize_mac(given).as_deref(), want, "{given:?}");
        }
    }

    #[test]
    fn dxtorc_commit() {
        let plan = super::plan(
            &args(&["commit", "10.0.0.5", "80:5e:c0:aa:bb:cc", YEALINK_HEX, ""]),
            &[],
            &no_env,
        )
        .unwrap();
        assert_eq!(plan.style, Style::Dxtorc);
        assert!(plan.warnings.is_empty());
        assert_eq!(plan.notices.len(), 1);
        let dgram = plan.notices[0].datagram();
        assert_eq!(
            dgram,
            format!("commit\n10.0.0.5\n80:5e:c0:aa:bb:cc\n{YEALINK_HEX}\n").as_bytes()
        );
        match parse_datagram(&dgram).unwrap() {
            Event::Lease(RequestContext::Dhcp {
                op: DhcpOp::Commit,
                options,
                ..
            }) => assert_eq!(options, vec![(60, b"yealink".to_vec())]),
            other => panic!("{other:?}"),
        }
        // ISC's undotted hex and unpadded MAC: accepted, sent in the canonical form.
        let plan = plan_ok(&["commit", "10.0.0.6", "0:15:65:a:b:c", "0607965616c696e6b"]);
        assert_eq!(plan.notices[0].mac.as_deref(), Some("00:15:65:0a:0b:0c"));
        assert_eq!(plan.notices[0].options, vec![(60, b"yealink".to_vec())]);
        // No option at all.
        let plan = plan_ok(&["commit", "10.0.0.6", "00:15:65:aa:bb:cc"]);
        assert!(plan.notices[0].options.is_empty());
    }

    fn plan_ok(list: &[&str]) -> Plan {
        plan(&args(list), &[], &no_env).unwrap_or_else(|e| panic!("{list:?}: {e}"))
    }

    #[test]
    fn events_sent_fit_the_daemon() {
        // Found by tests/fuzz.rs: 300 option arguments made an event the daemon refused whole
        // (it takes at most 255 options), so the lease was lost.
        let mut list = vec!["commit", "10.0.0.5", "80:5e:c0:aa:bb:cc"];
        let codes: Vec<String> = (0..300).map(|i| format!("{:03}", 1 + i % 254)).collect();
        list.extend(codes.iter().map(String::as_str));
        let plan = plan_ok(&list);
        let (dgram, note) = plan.notices[0].sent_datagram();
        assert!(note.unwrap().contains("dropped down to 255"));
        match parse_datagram(&dgram).unwrap() {
            Event::Lease(RequestContext::Dhcp { options, .. }) => assert_eq!(options.len(), 255),
            other => panic!("{other:?}"),
        }
        // Too many bytes: options go from the end until the datagram fits.
        let long = format!("043{}", ".ab".repeat(255).trim_start_matches('.'));
        let plan = plan_ok(&[
            "commit",
            "10.0.0.5",
            "80:5e:c0:aa:bb:cc",
            YEALINK_HEX,
            &long,
            &long,
            &long,
        ]);
        let (dgram, note) = plan.notices[0].sent_datagram();
        assert!(dgram.len() <= MAX_DATAGRAM);
        assert!(note.unwrap().contains("dropped down to 3"));
        match parse_datagram(&dgram).unwrap() {
            Event::Lease(RequestContext::Dhcp { options, .. }) => {
                assert_eq!(options.len(), 3);
                assert_eq!(options[0], (60, b"yealink".to_vec()));
            }
            other => panic!("{other:?}"),
        }
        // An event that fits goes as it is.
        let plan = plan_ok(&["commit", "10.0.0.5", "80:5e:c0:aa:bb:cc", YEALINK_HEX]);
        assert_eq!(
            plan.notices[0].sent_datagram(),
            (plan.notices[0].datagram(), None)
        );
    }

    #[test]
    fn dxtorc_release_expiry() {
        let plan = plan_ok(&["release", "10.0.0.5"]);
        assert_eq!(plan.notices[0].datagram(), b"release\n10.0.0.5\n");
        assert_eq!(
            parse_datagram(&plan.notices[0].datagram()).unwrap(),
            Event::Gone("10.0.0.5".parse().unwrap())
        );
        let plan = plan_ok(&["expiry", "10.0.0.5", "80:5e:c0:aa:bb:cc"]);
        assert_eq!(
            plan.notices[0].datagram(),
            b"expiry\n10.0.0.5\n80:5e:c0:aa:bb:cc\n"
        );
        // dxtorc ignores what follows a release's IP; a non-MAC there is a warning only.
        let plan = plan_ok(&["release", "10.0.0.5", "nope", "060aa"]);
        assert_eq!(plan.notices[0].mac, None);
        assert_eq!(plan.warnings.len(), 1);
        let plan = plan_ok(&["release", "10.0.0.5", ""]);
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn dxtorc_invalid() {
        for (bad, fragment) in [
            (&[][..], "no arguments"),
            (&["renew", "10.0.0.5"][..], "op"),
            (&["commit"][..], "ip is required"),
            (&["commit", "10.0.0.5"][..], "mac is required"),
            (&["commit", "10.0.0.300", "80:5e:c0:aa:bb:cc"][..], "ip"),
            (&["commit", "fe80::1", "80:5e:c0:aa:bb:cc"][..], "ip"),
            (&["commit", "10.0.0.5", "nope"][..], "mac"),
            (
                &["commit", "10.0.0.5", "80:5e:c0:aa:bb:cc", "06x"][..],
                "option 1",
            ),
            (
                &["commit", "10.0.0.5", "80:5e:c0:aa:bb:cc", "", "060zz"][..],
                "option 2",
            ),
            (
                &["commit", "10.0.0.5", "80:5e:c0:aa:bb:cc", "255"][..],
                "option 1",
            ),
            (&["release"][..], "ip is required"),
            (&["expiry", "nope"][..], "ip"),
        ] {
            let e = plan(&args(bad), &[], &no_env).unwrap_err();
            assert!(e.contains(fragment), "{bad:?}: {e}");
        }
    }

    #[test]
    fn named_flags() {
        let named = named_options(
            Some("yealink"),
            Some("office"),
            &args(&["12=phone-1", "60=Yealink SIP-T46S"]),
        )
        .unwrap();
        // --option 60 replaces --vendor-class.
        assert_eq!(
            named,
            vec![
                (77, b"office".to_vec()),
                (12, b"phone-1".to_vec()),
                (60, b"Yealink SIP-T46S".to_vec()),
            ]
        );
        // Named options win over positional ones of the same code.
        let plan = super::plan(
            &args(&[
                "commit",
                "10.0.0.5",
                "80:5e:c0:aa:bb:cc",
                "060616263",
                "0070a",
            ]),
            &named,
            &no_env,
        )
        .unwrap();
        assert_eq!(
            plan.notices[0].options,
            vec![
                (77, b"office".to_vec()),
                (12, b"phone-1".to_vec()),
                (60, b"Yealink SIP-T46S".to_vec()),
                (7, vec![0x0a]),
            ]
        );
        assert_eq!(named_options(Some(""), None, &[]).unwrap(), vec![]);
        for bad in ["60", "0=x", "255=x", "x=y", "-1=x", "256=x"] {
            assert!(named_options(None, None, &args(&[bad])).is_err(), "{bad}");
        }
        assert!(named_options(Some(&"a".repeat(256)), None, &[]).is_err());
    }

    #[test]
    fn dnsmasq_style() {
        let env = with_env(&[
            ("DNSMASQ_VENDOR_CLASS", "yealink"),
            ("DNSMASQ_USER_CLASS0", ""),
            ("DNSMASQ_USER_CLASS1", "office"),
            ("DNSMASQ_REQUESTED_OPTIONS", "1,3,6,66,160"),
        ]);
        let plan = super::plan(
            &args(&["add", "80:5e:c0:aa:bb:cc", "10.0.0.7", "phone"]),
            &[],
            &env,
        )
        .unwrap();
        assert_eq!(plan.style, Style::Dnsmasq);
        assert_eq!(
            plan.notices,
            vec![Notice {
                op: "commit",
                ip: "10.0.0.7".parse().unwrap(),
                mac: Some("80:5e:c0:aa:bb:cc".into()),
                options: vec![
                    (60, b"yealink".to_vec()),
                    (77, b"office".to_vec()),
                    (55, vec![1, 3, 6, 66, 160]),
                ],
            }]
        );
        assert!(parse_datagram(&plan.notices[0].datagram()).is_ok());
        // old is a commit too; no hostname, no environment.
        let plan = super::plan(
            &args(&["old", "80:5e:c0:aa:bb:cc", "10.0.0.7"]),
            &[],
            &no_env,
        )
        .unwrap();
        assert_eq!(plan.notices[0].op, "commit");
        assert!(plan.notices[0].options.is_empty());
        // del: a release carrying the MAC.
        let plan = super::plan(
            &args(&["del", "80:5e:c0:aa:bb:cc", "10.0.0.7", "phone"]),
            &[],
            &env,
        )
        .unwrap();
        assert_eq!(
            plan.notices[0].datagram(),
            b"release\n10.0.0.7\n80:5e:c0:aa:bb:cc\n"
        );
        // Named flags win over the environment.
        let named = named_options(Some("snom"), None, &[]).unwrap();
        let plan = super::plan(
            &args(&["add", "80:5e:c0:aa:bb:cc", "10.0.0.7"]),
            &named,
            &env,
        )
        .unwrap();
        assert_eq!(plan.notices[0].options[0], (60, b"snom".to_vec()));
        assert_eq!(plan.notices[0].options.len(), 3);
        // A bad requested-options list is only a warning.
        let env = with_env(&[("DNSMASQ_REQUESTED_OPTIONS", "1,x,300")]);
        let plan =
            super::plan(&args(&["add", "80:5e:c0:aa:bb:cc", "10.0.0.7"]), &[], &env).unwrap();
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.notices[0].options.is_empty());
    }

    #[test]
    fn dnsmasq_ignored_and_invalid() {
        for ignored in [
            &["init"][..],
            &["tftp", "1024", "10.0.0.7", "/srv/tftp/x.cfg"][..],
            &["arp-add", "80:5e:c0:aa:bb:cc", "10.0.0.7"][..],
            &["add", "00:01:00:01:2a:bc", "2001:db8::7", "phone"][..],
        ] {
            let plan = super::plan(&args(ignored), &[], &no_env).unwrap();
            assert!(plan.notices.is_empty(), "{ignored:?}");
            assert!(plan.warnings.is_empty(), "{ignored:?}");
        }
        for (bad, fragment) in [
            (&["add", "80:5e:c0:aa:bb:cc"][..], "IP address is missing"),
            (&["add", "06-01:23:45:67:89:ab", "10.0.0.7"][..], "mac"),
            (&["add", "80:5e:c0:aa:bb:cc", "10.0.0"][..], "ip"),
        ] {
            let e = plan(&args(bad), &[], &no_env).unwrap_err();
            assert!(e.contains(fragment), "{bad:?}: {e}");
        }
        // del without a usable MAC is still a release by IP.
        let plan = super::plan(
            &args(&["del", "06-01:23:45:67:89:ab", "10.0.0.7"]),
            &[],
            &no_env,
        )
        .unwrap();
        assert_eq!(plan.notices[0].datagram(), b"release\n10.0.0.7\n");
        assert_eq!(plan.warnings.len(), 1);
    }

    #[test]
    fn kea_style() {
        let env = with_env(&[
            ("QUERY4_TYPE", "DHCPREQUEST"),
            ("LEASES4_SIZE", "2"),
            ("LEASES4_AT0_ADDRESS", "10.0.0.8"),
            ("LEASES4_AT0_HWADDR", "80:5e:c0:00:00:02"),
            ("LEASES4_AT0_HWADDR_TYPE", "1"),
            ("LEASES4_AT1_ADDRESS", "10.0.0.9"),
            ("LEASES4_AT1_HWADDR", ""),
            ("DELETED_LEASES4_SIZE", "1"),
            ("DELETED_LEASES4_AT0_ADDRESS", "10.0.0.3"),
            ("DELETED_LEASES4_AT0_HWADDR", "80:5e:c0:00:00:02"),
        ]);
        let plan = super::plan(&args(&["leases4_committed"]), &[], &env).unwrap();
        assert_eq!(plan.style, Style::Kea);
        let dgrams: Vec<Vec<u8>> = plan.notices.iter().map(Notice::datagram).collect();
        assert_eq!(
            dgrams,
            vec![
                b"commit\n10.0.0.8\n80:5e:c0:00:00:02\n".to_vec(),
                b"release\n10.0.0.3\n80:5e:c0:00:00:02\n".to_vec(),
            ]
        );
        // The lease without a MAC is skipped with a warning.
        assert_eq!(plan.warnings.len(), 1, "{:?}", plan.warnings);
        assert!(plan.warnings[0].contains("10.0.0.9"));

        let env = with_env(&[
            ("LEASE4_ADDRESS", "10.0.0.8"),
            ("LEASE4_HWADDR", "80:5e:c0:00:00:02"),
        ]);
        let plan = super::plan(&args(&["lease4_expire"]), &[], &env).unwrap();
        assert_eq!(
            plan.notices[0].datagram(),
            b"expiry\n10.0.0.8\n80:5e:c0:00:00:02\n"
        );
        let plan = super::plan(&args(&["lease4_release"]), &[], &env).unwrap();
        assert_eq!(plan.notices[0].op, "release");
        // No hardware address: release by IP.
        let env = with_env(&[("LEASE4_ADDRESS", "10.0.0.8"), ("LEASE4_HWADDR", "")]);
        let plan = super::plan(&args(&["lease4_release"]), &[], &env).unwrap();
        assert_eq!(plan.notices[0].datagram(), b"release\n10.0.0.8\n");
        // Other hook points, and a committed call without leases, send nothing.
        for hook in [
            "lease4_renew",
            "lease4_decline",
            "lease4_recover",
            "leases6_committed",
        ] {
            let plan = super::plan(&args(&[hook]), &[], &env).unwrap();
            assert!(plan.notices.is_empty(), "{hook}");
        }
        let plan = super::plan(&args(&["leases4_committed"]), &[], &no_env).unwrap();
        assert!(plan.notices.is_empty());
        assert!(plan.warnings.is_empty());
        // Missing or bad address on release/expire: an error.
        assert!(plan_err(&["lease4_expire"], &no_env).contains("LEASE4_ADDRESS"));
        let env = with_env(&[("LEASE4_ADDRESS", "10.0.0")]);
        assert!(plan_err(&["lease4_release"], &env).contains("LEASE4_ADDRESS"));
        // A huge LEASES4_SIZE is capped.
        let env = with_env(&[("LEASES4_SIZE", "100000")]);
        let plan = super::plan(&args(&["leases4_committed"]), &[], &env).unwrap();
        assert!(plan.notices.is_empty());
        assert_eq!(plan.warnings.len(), 1 + MAX_KEA_LEASES);
    }

    fn plan_err(list: &[&str], env: &dyn Fn(&str) -> Option<Vec<u8>>) -> String {
        plan(&args(list), &[], env).unwrap_err()
    }

    #[test]
    fn targets() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("absent.toml");
        let given = dir.path().join("given.sock");
        assert_eq!(
            target(Some(&given), None, &absent).socket,
            Some(given.clone())
        );
        // No configuration file: the embedded development default's, as for `device list`.
        assert_eq!(
            target(None, None, &absent),
            Target {
                socket: Some("provisiond-data/dhcpinfo.sock".into()),
                note: None
            }
        );
        let file = dir.path().join("provisiond.toml");
        std::fs::write(&file, "[dhcpinfo]\nsocket = \"/tmp/x/dhcpinfo.sock\"\n").unwrap();
        assert_eq!(
            target(None, Some(&file), &absent).socket,
            Some(PathBuf::from("/tmp/x/dhcpinfo.sock"))
        );
        // The default file when it exists.
        assert_eq!(
            target(None, None, &file).socket,
            Some(PathBuf::from("/tmp/x/dhcpinfo.sock"))
        );
        std::fs::write(&file, "[dhcpinfo]\nenabled = false\n").unwrap();
        let t = target(None, Some(&file), &absent);
        assert_eq!(t.socket, None);
        assert!(t.note.unwrap().contains("enabled = false"));
        std::fs::write(&file, "[dhcpinfo]\nsokcet = 1\n").unwrap();
        let t = target(None, Some(&file), &absent);
        assert_eq!(t.socket, Some(PathBuf::from(PACKAGED_SOCKET)));
        assert!(t.note.is_some());
    }

    #[test]
    fn sending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let e = send(&path, &[b"x".to_vec()]).unwrap_err();
        assert!(e.contains("no socket"), "{e}");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send(&path, &[b"one".to_vec(), b"two".to_vec()]).unwrap();
        let mut buf = [0u8; 16];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"one");
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"two");
        // A receiver that never reads: the send gives up after the timeout.
        let filler = UnixDatagram::unbound().unwrap();
        filler.set_nonblocking(true).unwrap();
        while filler.send_to(&[0u8; 512], &path).is_ok() {}
        let started = std::time::Instant::now();
        let e = send(&path, &[b"late".to_vec()]).unwrap_err();
        assert!(e.contains("did not take the event"), "{e}");
        assert!(started.elapsed() >= SEND_TIMEOUT / 2);
        drop(receiver);
        let e = send(&path, &[b"x".to_vec(), b"y".to_vec()]).unwrap_err();
        assert!(
            e.contains("nobody listens") && e.contains("2 events lost"),
            "{e}"
        );
    }
}
