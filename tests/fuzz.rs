//! Fuzzing of every parser a stranger can reach (docs/fuzzing.md): DHCP requests, TFTP packets
//! and options, dhcpinfo datagrams, `provisiond dhcp-notify` arguments, the REST API's list
//! query, identification by User-Agent and path with the built-in plugins, and plugin
//! manifests.
//!
//! Every target replays `tests/fuzz-corpus/<target>/`, then runs `FUZZ_ITERS` mutated inputs
//! (a small default for `cargo test`); `FUZZ_SEED` replays a run. Beyond "no panic, no hang,
//! bounded allocation", each target checks invariants: what is parsed re-encodes to the same
//! value, negotiated values stay in range, the daemon reads what `dhcp-notify` sends as the
//! same event, a selector agrees with its own variants, and a MAC found by identification is
//! one the input carried.

#[path = "fuzz/engine.rs"]
mod engine;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Component, Path};

use arbitrary::Unstructured;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use engine::{accepted, fuzz, sig, CountingAlloc, Outcome, Target};
use provisiond::dhcp::packet::{Request as DhcpRequest, HEADER_LEN, MAGIC};
use provisiond::dhcpinfo::notify::{encode_option, named_options, normalize_mac, plan};
use provisiond::dhcpinfo::{datagram, parse_datagram, parse_option, Event, MAX_DATAGRAM};
use provisiond::http::api::query::ListQuery;
use provisiond::ident::{extract, DhcpOp, RequestContext};
use provisiond::model::Mac;
use provisiond::plugins::fuzz_api::ManifestChecker;
use provisiond::plugins::{safe_relative, Origin, Plugin, PluginSet, RuleSource, MAX_PATH_LEN};
use provisiond::sync::digest::{self, Credentials};
use provisiond::sync::sip::fuzz_api as sip;
use provisiond::tftp::fuzz_api as tftp;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn plugins_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins")
}

/// A MAC's hex digits are somewhere in `text` (separators `:` and `-` ignored, any case).
fn carries_mac(text: &str, mac: &Mac) -> bool {
    let bare: String = text
        .chars()
        .filter(|c| !matches!(c, ':' | '-'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    bare.contains(&mac.to_bare())
}

// ---------------------------------------------------------------------------------------------
// DHCP requests

/// The request as a client would send it again: the fixed header, every option in order (long
/// values split in 255-byte pieces, RFC 3396), no overload.
fn encode_dhcp(req: &DhcpRequest) -> Vec<u8> {
    let mut p = vec![0u8; HEADER_LEN];
    p[0] = 1;
    p[1] = 1;
    p[2] = 6;
    p[3] = req.hops;
    p[4..8].copy_from_slice(&req.xid.to_be_bytes());
    p[8..10].copy_from_slice(&req.secs.to_be_bytes());
    p[10..12].copy_from_slice(&req.flags.to_be_bytes());
    p[12..16].copy_from_slice(&req.ciaddr.octets());
    p[24..28].copy_from_slice(&req.giaddr.octets());
    p[28..44].copy_from_slice(&req.chaddr);
    p[236..240].copy_from_slice(&MAGIC);
    for (code, value) in &req.options {
        if value.is_empty() {
            p.extend_from_slice(&[*code, 0]);
        }
        for piece in value.chunks(255) {
            p.extend_from_slice(&[*code, piece.len() as u8]);
            p.extend_from_slice(piece);
        }
    }
    p.push(255);
    p
}

fn dhcp_request(data: &[u8]) -> Outcome {
    let req = match DhcpRequest::parse(data) {
        Ok(req) => req,
        Err(e) => return Ok(sig(("error", format!("{e:?}")))),
    };
    accepted();
    for (i, (code, value)) in req.options.iter().enumerate() {
        if matches!(code, 0 | 52 | 255) || value.len() > 1024 {
            return Err(format!("option {code} kept ({} bytes)", value.len()));
        }
        if req.options[..i].iter().any(|(c, _)| c == code) {
            return Err(format!("option {code} listed twice"));
        }
    }
    if req.mac.octets() != req.chaddr[..6] {
        return Err("mac is not the start of chaddr".into());
    }
    if !(548..=1472).contains(&req.max_reply()) {
        return Err(format!("max_reply {}", req.max_reply()));
    }
    if req.hostname().is_some_and(|h| h.chars().count() > 255) {
        return Err("hostname over 255 characters".into());
    }
    let _ = (
        req.requested_ip(),
        req.server_id(),
        req.subnet_selection(),
        req.link_selection(),
        req.client_id(),
        req.requested_params(),
        req.broadcast(),
    );
    let again = DhcpRequest::parse(&encode_dhcp(&req));
    if again.as_ref() != Ok(&req) {
        return Err(format!("re-encoded {req:?} parses as {again:?}"));
    }
    let codes: Vec<u8> = req.options.iter().map(|(c, _)| *c).collect();
    Ok(sig((format!("{:?}", req.msg_type), codes)))
}

#[test]
fn dhcp_request_fuzz() {
    const DICT: &[&[u8]] = &[
        &[53, 1, 1],
        &[53, 1, 3],
        &[52, 1, 1],
        &[52, 1, 3],
        &[255],
        &[0, 0, 0],
        &[82, 6, 5, 4, 10, 0, 0, 1],
        &[118, 4, 10, 0, 0, 1],
        &[57, 2, 5, 220],
        &[55, 4, 1, 3, 6, 66],
        b"<\x07yealink",
        &MAGIC,
    ];
    fuzz(
        &Target {
            name: "dhcp_request",
            max_len: 1500,
            dict: DICT,
            default_iters: 40_000,
        },
        &dhcp_request,
    );
}

// ---------------------------------------------------------------------------------------------
// TFTP

fn encode_rrq(filename: &str, mode: tftp::Mode, options: &[(String, String)]) -> Vec<u8> {
    let mut p = vec![0, 1];
    p.extend_from_slice(filename.as_bytes());
    p.push(0);
    p.extend_from_slice(match mode {
        tftp::Mode::Octet => &b"octet"[..],
        tftp::Mode::Netascii => &b"netascii"[..],
    });
    p.push(0);
    for (name, value) in options {
        p.extend_from_slice(name.as_bytes());
        p.push(0);
        p.extend_from_slice(value.as_bytes());
        p.push(0);
    }
    p
}

/// Negotiates `requested` for a file of `size` bytes and checks the answer: values in range,
/// only requested options acknowledged, once each, in the client's order and spelling, and an
/// OACK packet that carries exactly them.
fn check_negotiated(requested: &[(String, String)], size: u64) -> Result<(), String> {
    let n = tftp::negotiate(requested, size);
    if n.blksize != tftp::DEFAULT_BLKSIZE && !(8..=tftp::MAX_BLKSIZE).contains(&n.blksize) {
        return Err(format!("blksize {}", n.blksize));
    }
    if n.window == 0 {
        return Err("windowsize 0".into());
    }
    if n.timeout_secs
        .is_some_and(|t| !(1..=tftp::MAX_CLIENT_TIMEOUT).contains(&t))
    {
        return Err(format!("timeout {:?}", n.timeout_secs));
    }
    let mut acked: Vec<String> = Vec::new();
    let mut last = None;
    for (name, value) in &n.oack {
        let lower = name.to_ascii_lowercase();
        if acked.contains(&lower) {
            return Err(format!("{name} acknowledged twice"));
        }
        let first = requested
            .iter()
            .position(|(r, _)| r.eq_ignore_ascii_case(name));
        if first.is_none() || requested[first.unwrap_or(0)].0 != *name {
            return Err(format!("{name:?} acknowledged but not requested so"));
        }
        if first <= last {
            return Err(format!("{name} acknowledged out of order"));
        }
        last = first;
        let want = match lower.as_str() {
            "tsize" => size.to_string(),
            "blksize" => n.blksize.to_string(),
            "windowsize" => n.window.to_string(),
            "timeout" => n.timeout_secs.map(|t| t.to_string()).unwrap_or_default(),
            _ => return Err(format!("unknown option {name:?} acknowledged")),
        };
        if *value != want {
            return Err(format!(
                "{name} acknowledged as {value:?}, runs with {want}"
            ));
        }
        acked.push(lower);
    }
    let has = |o: &str| acked.iter().any(|a| a == o);
    if (!has("blksize") && n.blksize != tftp::DEFAULT_BLKSIZE)
        || (!has("windowsize") && n.window != 1)
        || (!has("timeout") && n.timeout_secs.is_some())
    {
        return Err(format!("runs with {n:?} without acknowledging it"));
    }
    let travels = n
        .oack
        .iter()
        .all(|(k, v)| !k.contains('\0') && !v.contains('\0'));
    if travels {
        let packet = tftp::encode_oack(&n.oack);
        let mut fields: Vec<&[u8]> = packet[2..].split(|&b| b == 0).collect();
        // The last NUL terminates the last field.
        fields.pop();
        let expected: Vec<&[u8]> = n
            .oack
            .iter()
            .flat_map(|(k, v)| [k.as_bytes(), v.as_bytes()])
            .collect();
        if packet[..2] != [0, 6] || fields != expected {
            return Err(format!("OACK {packet:?} for {:?}", n.oack));
        }
    }
    Ok(())
}

fn tftp_request(data: &[u8]) -> Outcome {
    let reply = match tftp::parse_reply(data) {
        tftp::Reply::Ack(_) => 1,
        tftp::Reply::Error { message, .. } => {
            if message.chars().count() > 200 {
                return Err("ERROR message over 200 characters kept".into());
            }
            2
        }
        tftp::Reply::Other => 3,
    };
    // What the server sends back parses as what it meant (the message made printable ASCII).
    let text = String::from_utf8_lossy(data);
    let sent = tftp::encode_error(tftp::ErrorCode::IllegalOperation, &text);
    let shown: String = text
        .chars()
        .take(200)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    let read = tftp::parse_reply(&sent);
    if read
        != (tftp::Reply::Error {
            code: 4,
            message: shown,
        })
    {
        return Err(format!("ERROR packet {sent:?} reads as {read:?}"));
    }
    let request = match tftp::parse_request(data) {
        Ok(tftp::Request::Read(request)) => request,
        Ok(other) => return Ok(sig((reply, format!("{other:?}")))),
        Err(tftp::Malformed(why)) => return Ok(sig((reply, why))),
    };
    accepted();
    if request.filename.contains('\0')
        || request
            .options
            .iter()
            .any(|(k, v)| k.is_empty() || k.contains('\0') || v.contains('\0'))
    {
        return Err(format!("impossible fields in {request:?}"));
    }
    let packet = encode_rrq(&request.filename, request.mode, &request.options);
    let again = tftp::parse_request(&packet);
    if again != Ok(tftp::Request::Read(request.clone())) {
        return Err(format!("{request:?} re-encoded reads as {again:?}"));
    }
    for size in [0, 1, 512, 33_553_920, u64::MAX, data.len() as u64] {
        check_negotiated(&request.options, size)?;
    }
    let names: Vec<String> = request
        .options
        .iter()
        .take(6)
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    Ok(sig((reply, request.mode == tftp::Mode::Octet, names)))
}

#[test]
fn tftp_request_fuzz() {
    const DICT: &[&[u8]] = &[
        b"\0",
        b"\x00\x01",
        b"\x00\x05",
        b"octet\0",
        b"netascii\0",
        b"blksize\0",
        b"tsize\0",
        b"timeout\0",
        b"windowsize\0",
        b"1428\0",
        b"65464\0",
        b"65465\0",
        b"0\0",
        b"18446744073709551616\0",
    ];
    fuzz(
        &Target {
            name: "tftp_request",
            max_len: 2048,
            dict: DICT,
            default_iters: 40_000,
        },
        &tftp_request,
    );
}

const TFTP_NAMES: &[&str] = &[
    "blksize",
    "BLKSIZE",
    "BlkSize",
    "timeout",
    "TIMEOUT",
    "tsize",
    "TSize",
    "windowsize",
    "WINDOWSIZE",
    "multicast",
    "rollover",
    "blksize2",
    "",
];
const TFTP_VALUES: &[&str] = &[
    "0",
    "1",
    "7",
    "8",
    "10",
    "11",
    "255",
    "256",
    "512",
    "1428",
    "65464",
    "65465",
    "65535",
    "65536",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    " 8",
    "8 ",
    "+8",
    "-1",
    "0x10",
    "1e3",
    "",
    "enable",
];

fn gen_tftp_options(u: &mut Unstructured) -> arbitrary::Result<(Vec<(String, String)>, u64)> {
    let size = match u.int_in_range(0..=2)? {
        0 => u.arbitrary()?,
        1 => *u.choose(&[0, 1, 511, 512, 513, 33_553_920, 33_554_432, u64::MAX])?,
        _ => u.int_in_range(0..=100_000)?,
    };
    let count = u.int_in_range(0..=12)?;
    let mut options = Vec::with_capacity(count);
    for _ in 0..count {
        let name = if u.ratio(7, 8)? {
            u.choose(TFTP_NAMES)?.to_string()
        } else {
            u.arbitrary()?
        };
        let value = if u.ratio(7, 8)? {
            u.choose(TFTP_VALUES)?.to_string()
        } else {
            u.arbitrary()?
        };
        options.push((name, value));
    }
    Ok((options, size))
}

fn tftp_options(data: &[u8]) -> Outcome {
    let Ok((options, size)) = gen_tftp_options(&mut Unstructured::new(data)) else {
        return Ok(sig("short"));
    };
    if !options.is_empty() {
        accepted();
    }
    check_negotiated(&options, size)?;
    // Options that can travel in a read request come out of the parser as they went in.
    let travels = options
        .iter()
        .all(|(k, v)| !k.is_empty() && !k.contains('\0') && !v.contains('\0'));
    if travels {
        let packet = encode_rrq("f.cfg", tftp::Mode::Octet, &options);
        match tftp::parse_request(&packet) {
            Ok(tftp::Request::Read(r)) if r.options == options => {}
            other => return Err(format!("{options:?} in a request read as {other:?}")),
        }
    }
    let n = tftp::negotiate(&options, size);
    Ok(sig((n.blksize, n.window, n.timeout_secs, n.oack.len())))
}

#[test]
fn tftp_options_fuzz() {
    fuzz(
        &Target {
            name: "tftp_options",
            max_len: 512,
            dict: &[],
            default_iters: 40_000,
        },
        &tftp_options,
    );
}

// ---------------------------------------------------------------------------------------------
// dhcpinfo datagrams

fn op_name(op: DhcpOp) -> &'static str {
    match op {
        DhcpOp::Commit => "commit",
        DhcpOp::Release => "release",
        DhcpOp::Expiry => "expiry",
    }
}

fn dhcpinfo_datagram(data: &[u8]) -> Outcome {
    for line in String::from_utf8_lossy(data).lines().take(64) {
        if let Ok((code, value)) = parse_option(line) {
            if code == 0 || code == 255 || value.len() > 255 {
                return Err(format!("{line:?} accepted as option {code}"));
            }
            if parse_option(&encode_option(code, &value)) != Ok((code, value.clone())) {
                return Err(format!(
                    "option {code} {value:?} does not survive re-encoding"
                ));
            }
        }
    }
    let event = match parse_datagram(data) {
        Ok(event) => event,
        Err(e) => return Ok(sig(("error", std::mem::discriminant(&e)))),
    };
    accepted();
    match &event {
        Event::Gone(ip) => {
            for op in ["release", "expiry"] {
                let again = parse_datagram(&datagram(op, &ip.to_string(), None, &[]));
                if again.as_ref() != Ok(&event) {
                    return Err(format!("{event:?} re-encoded reads as {again:?}"));
                }
            }
            Ok(sig("gone"))
        }
        Event::Lease(RequestContext::Dhcp {
            op,
            ip,
            mac,
            options,
        }) => {
            if options.len() > 255 || (*op != DhcpOp::Commit && !options.is_empty()) {
                return Err(format!("{event:?}"));
            }
            let texts: Vec<String> = options.iter().map(|(c, v)| encode_option(*c, v)).collect();
            let again = datagram(
                op_name(*op),
                &ip.to_string(),
                Some(&mac.to_string()),
                &texts,
            );
            // Dotted hex is longer than undotted: a datagram at the limit may not fit again.
            if again.len() <= MAX_DATAGRAM {
                let read = parse_datagram(&again);
                if read.as_ref() != Ok(&event) {
                    return Err(format!("{event:?} re-encoded reads as {read:?}"));
                }
            }
            Ok(sig(("lease", op_name(*op), options.len().min(4))))
        }
        Event::Lease(other) => Err(format!("lease event of another transport: {other:?}")),
    }
}

#[test]
fn dhcpinfo_datagram_fuzz() {
    const DICT: &[&[u8]] = &[
        b"commit\n",
        b"release\n",
        b"expiry\n",
        b"\n",
        b"\r\n",
        b"060",
        b"077",
        b"255",
        b".",
        b"ff",
        b"00:15:65:aa:bb:cc",
        b"0:15:65:a:b:c",
        b"10.0.0.5",
    ];
    fuzz(
        &Target {
            name: "dhcpinfo_datagram",
            max_len: 2100,
            dict: DICT,
            default_iters: 40_000,
        },
        &dhcpinfo_datagram,
    );
}

// ---------------------------------------------------------------------------------------------
// dhcp-notify

/// One `provisiond dhcp-notify` call: positional arguments, the named flags and the
/// environment.
#[derive(Debug, Default)]
struct NotifyCall {
    args: Vec<String>,
    vendor_class: Option<String>,
    user_class: Option<String>,
    options: Vec<String>,
    env: Vec<(String, Vec<u8>)>,
}

/// Plans the call and checks every event it would send: well formed, and read by the daemon
/// as the same event.
fn check_notify(call: &NotifyCall) -> Outcome {
    let named = match named_options(
        call.vendor_class.as_deref(),
        call.user_class.as_deref(),
        &call.options,
    ) {
        Ok(named) => named,
        Err(_) => return Ok(sig("named options refused")),
    };
    for (i, (code, value)) in named.iter().enumerate() {
        if !(1..=254).contains(code) || value.is_empty() || value.len() > 255 {
            return Err(format!("named option {code} of {} bytes", value.len()));
        }
        if named[..i].iter().any(|(c, _)| c == code) {
            return Err(format!("named option {code} twice"));
        }
    }
    let env = |name: &str| {
        call.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let planned = match plan(&call.args, &named, &env) {
        Ok(planned) => planned,
        Err(_) => return Ok(sig(("refused", call.args.first().map(|a| a.len().min(20))))),
    };
    if !planned.notices.is_empty() {
        accepted();
    }
    for notice in &planned.notices {
        if !["commit", "release", "expiry"].contains(&notice.op) {
            return Err(format!("op {:?}", notice.op));
        }
        if notice.op == "commit" && notice.mac.is_none() {
            return Err(format!("commit without a MAC: {notice:?}"));
        }
        let mac = match &notice.mac {
            Some(text) => {
                if normalize_mac(text).as_deref() != Some(text.as_str()) {
                    return Err(format!("MAC {text:?} is not in canonical form"));
                }
                Some(
                    text.parse::<Mac>()
                        .map_err(|e| format!("MAC {text:?} sent but not a MAC: {e}"))?,
                )
            }
            None => None,
        };
        if notice
            .options
            .iter()
            .any(|(c, v)| !(1..=254).contains(c) || v.len() > 255)
        {
            return Err(format!("bad option in {notice:?}"));
        }
        let (dgram, note) = notice.sent_datagram();
        if dgram.len() > MAX_DATAGRAM {
            return Err(format!("sends {} bytes", dgram.len()));
        }
        let mut options = notice.options.clone();
        if note.is_some() {
            let kept = match parse_datagram(&dgram) {
                Ok(Event::Lease(RequestContext::Dhcp { options, .. })) => options.len(),
                other => return Err(format!("cut down event reads as {other:?}")),
            };
            if kept >= options.len() {
                return Err(format!("a note but all {kept} options kept"));
            }
            // What goes is the last options, never the event.
            options.truncate(kept);
        }
        let op = match notice.op {
            "commit" => DhcpOp::Commit,
            "release" => DhcpOp::Release,
            _ => DhcpOp::Expiry,
        };
        let expected = match mac {
            Some(mac) => Event::Lease(RequestContext::Dhcp {
                op,
                ip: notice.ip,
                mac,
                options: if op == DhcpOp::Commit {
                    options
                } else {
                    Vec::new()
                },
            }),
            None => Event::Gone(notice.ip),
        };
        let read = parse_datagram(&dgram);
        if read.as_ref() != Ok(&expected) {
            return Err(format!(
                "sends {:?}, which the daemon reads as {read:?}",
                String::from_utf8_lossy(&dgram)
            ));
        }
    }
    Ok(sig((
        format!("{:?}", planned.style),
        planned.notices.len().min(3),
        planned.warnings.len().min(3),
    )))
}

/// A call written one item a line: `env NAME=VALUE`, `--vendor-class TEXT`, `--user-class
/// TEXT`, `--option CODE=TEXT`, anything else a positional argument.
fn dhcp_notify(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let mut call = NotifyCall::default();
    for line in text.split('\n') {
        if let Some(rest) = line.strip_prefix("env ") {
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            call.env.push((k.to_owned(), v.as_bytes().to_vec()));
        } else if let Some(v) = line.strip_prefix("--vendor-class ") {
            call.vendor_class = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("--user-class ") {
            call.user_class = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("--option ") {
            call.options.push(v.to_owned());
        } else {
            call.args.push(line.to_owned());
        }
    }
    check_notify(&call)
}

#[test]
fn dhcp_notify_fuzz() {
    const DICT: &[&[u8]] = &[
        b"\n",
        b"commit\n",
        b"release\n",
        b"add\n",
        b"del\n",
        b"leases4_committed\n",
        b"lease4_release\n",
        b"env DNSMASQ_VENDOR_CLASS=",
        b"env DNSMASQ_USER_CLASS0=",
        b"env DNSMASQ_REQUESTED_OPTIONS=",
        b"env LEASES4_SIZE=",
        b"env LEASES4_AT0_ADDRESS=",
        b"env LEASES4_AT0_HWADDR=",
        b"env LEASE4_ADDRESS=",
        b"env LEASE4_HWADDR=",
        b"--option ",
        b"--vendor-class ",
        b"060",
        b"80:5e:c0:aa:bb:cc",
        b"10.0.0.5",
        b"2001:db8::7",
    ];
    fuzz(
        &Target {
            name: "dhcp_notify",
            max_len: 4096,
            dict: DICT,
            default_iters: 30_000,
        },
        &dhcp_notify,
    );
}

const FIRST_ARGS: &[&str] = &[
    "commit",
    "release",
    "expiry",
    "add",
    "old",
    "del",
    "init",
    "tftp",
    "arp",
    "arp-add",
    "arp-del",
    "relay-snoop",
    "leases4_committed",
    "lease4_release",
    "lease4_expire",
    "lease4_renew",
    "leases6_committed",
    "lease4_",
    "renew",
    "",
];

fn gen_text(u: &mut Unstructured, pool: &[&str]) -> arbitrary::Result<String> {
    if u.ratio(3, 4)? {
        Ok(u.choose(pool)?.to_string())
    } else {
        u.arbitrary()
    }
}

fn gen_ip(u: &mut Unstructured) -> arbitrary::Result<String> {
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 => Ipv4Addr::from(u.arbitrary::<u32>()?).to_string(),
        2 => gen_text(
            u,
            &[
                "10.0.0",
                "10.0.0.256",
                "010.0.0.1",
                " 10.0.0.1",
                "fe80::1",
                "2001:db8::7",
                "::ffff:10.0.0.1",
                "",
            ],
        )?,
        _ => u.arbitrary()?,
    })
}

fn gen_mac(u: &mut Unstructured) -> arbitrary::Result<String> {
    let b: [u8; 6] = u.arbitrary()?;
    let groups =
        |f: &dyn Fn(u8) -> String, sep: &str| b.iter().map(|x| f(*x)).collect::<Vec<_>>().join(sep);
    Ok(match u.int_in_range(0..=7)? {
        0 => groups(&|x| format!("{x:02x}"), ":"),
        1 => groups(&|x| format!("{x:02X}"), "-"),
        2 => groups(&|x| format!("{x:02x}"), ""),
        3 => groups(&|x| format!("{x:x}"), ":"),
        4 => groups(&|x| format!("{x:02x}"), ":")[..14].to_owned(),
        5 => format!("06-{}", groups(&|x| format!("{x:02x}"), ":")),
        6 => format!(" {} ", groups(&|x| format!("{x:02x}"), ":")),
        _ => u.arbitrary()?,
    })
}

fn gen_option_arg(u: &mut Unstructured) -> arbitrary::Result<String> {
    let code: u8 = u.arbitrary()?;
    let most = if u.ratio(1, 8)? { 300 } else { 12 };
    let len = u.int_in_range(0..=most)?;
    let value = u.bytes(len)?.to_vec();
    Ok(match u.int_in_range(0..=3)? {
        0 | 1 => encode_option(code, &value),
        2 => {
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            format!("{code:03}{hex}")
        }
        _ => u.arbitrary()?,
    })
}

fn gen_notify(u: &mut Unstructured) -> arbitrary::Result<NotifyCall> {
    let mut call = NotifyCall::default();
    let first = if u.ratio(15, 16)? {
        u.choose(FIRST_ARGS)?.to_string()
    } else {
        u.arbitrary()?
    };
    call.args.push(first.clone());
    // Mostly the arguments each caller really passes, in its order, so that planning gets
    // past the first checks; otherwise anything.
    if u.ratio(3, 4)? {
        match first.as_str() {
            "commit" | "release" | "expiry" => {
                call.args.push(gen_ip(u)?);
                call.args.push(gen_mac(u)?);
                for _ in 0..u.int_in_range(0..=4)? {
                    call.args.push(gen_option_arg(u)?);
                }
            }
            "add" | "old" | "del" => {
                call.args.push(gen_mac(u)?);
                call.args.push(gen_ip(u)?);
                if u.ratio(1, 2)? {
                    call.args.push(gen_text(u, &["phone-1", ""])?);
                }
            }
            _ => {}
        }
    } else {
        for _ in 0..u.int_in_range(0..=6)? {
            call.args.push(match u.int_in_range(0..=5)? {
                0 => gen_ip(u)?,
                1 => gen_mac(u)?,
                2 => gen_option_arg(u)?,
                3 => gen_text(u, &["phone-1", "", "SEP001565AABBCC"])?,
                _ => u.arbitrary()?,
            });
        }
    }
    if first.starts_with("lease") && u.ratio(3, 4)? {
        // A consistent Kea lease list.
        let list = if first == "leases4_committed" && u.ratio(1, 2)? {
            "DELETED_LEASES4".to_owned()
        } else if first == "leases4_committed" {
            "LEASES4".to_owned()
        } else {
            String::new()
        };
        if list.is_empty() {
            call.env
                .push(("LEASE4_ADDRESS".into(), gen_ip(u)?.into_bytes()));
            call.env
                .push(("LEASE4_HWADDR".into(), gen_mac(u)?.into_bytes()));
        } else {
            let size = u.int_in_range(0..=4)?;
            call.env
                .push((format!("{list}_SIZE"), size.to_string().into_bytes()));
            for at in 0..size {
                call.env
                    .push((format!("{list}_AT{at}_ADDRESS"), gen_ip(u)?.into_bytes()));
                call.env
                    .push((format!("{list}_AT{at}_HWADDR"), gen_mac(u)?.into_bytes()));
            }
        }
    }
    if u.ratio(1, 16)? {
        // Many options at once: the daemon takes at most 255 in one event.
        for i in 0..u.int_in_range(200..=300)? {
            call.args.push(format!("{:03}", 1 + i % 254));
        }
    }
    if u.ratio(1, 4)? {
        call.vendor_class = Some(gen_text(u, &["yealink", "", "Fanvil X4"])?);
    }
    if u.ratio(1, 8)? {
        call.user_class = Some(u.arbitrary()?);
    }
    for _ in 0..u.int_in_range(0..=3)? {
        let code = gen_text(u, &["60", "12", "77", "0", "254", "255", "-1", " 60", "x"])?;
        let text = if u.ratio(1, 8)? {
            "x".repeat(u.int_in_range(250..=260)?)
        } else {
            u.arbitrary()?
        };
        call.options.push(format!("{code}={text}"));
    }
    for _ in 0..u.int_in_range(0..=8)? {
        let list = if u.ratio(1, 2)? {
            "LEASES4"
        } else {
            "DELETED_LEASES4"
        };
        let at = u.int_in_range(0..=70)?;
        let (name, value) = match u.int_in_range(0..=9)? {
            0 => ("DNSMASQ_VENDOR_CLASS".to_owned(), {
                let n = u.int_in_range(0..=300)?;
                u.bytes(n)?.to_vec()
            }),
            1 => (
                format!("DNSMASQ_USER_CLASS{}", u.int_in_range(0..=17)?),
                u.arbitrary::<Vec<u8>>()?,
            ),
            2 => (
                "DNSMASQ_REQUESTED_OPTIONS".to_owned(),
                gen_text(u, &["1,3,6,66,160", "", ",", "1,x", "300", " 1 , 2 "])?.into_bytes(),
            ),
            3 => ("LEASE4_ADDRESS".to_owned(), gen_ip(u)?.into_bytes()),
            4 => ("LEASE4_HWADDR".to_owned(), gen_mac(u)?.into_bytes()),
            5 => (
                format!("{list}_SIZE"),
                gen_text(u, &["0", "1", "2", "64", "65", "100000", "-1", "x"])?.into_bytes(),
            ),
            6 | 7 => (format!("{list}_AT{at}_ADDRESS"), gen_ip(u)?.into_bytes()),
            _ => (format!("{list}_AT{at}_HWADDR"), gen_mac(u)?.into_bytes()),
        };
        call.env.push((name, value));
    }
    Ok(call)
}

fn dhcp_notify_grammar(data: &[u8]) -> Outcome {
    match gen_notify(&mut Unstructured::new(data)) {
        Ok(call) => check_notify(&call),
        Err(_) => Ok(sig("short")),
    }
}

#[test]
fn dhcp_notify_grammar_fuzz() {
    fuzz(
        &Target {
            name: "dhcp_notify_grammar",
            max_len: 2048,
            dict: &[],
            default_iters: 20_000,
        },
        &dhcp_notify_grammar,
    );
}

// ---------------------------------------------------------------------------------------------
// The REST API's list query

/// Documents like the API's (devices and configs), with the number kinds that compare
/// differently (u64 beyond i64, i64 beyond f64 precision, -0.0).
fn fixed_documents() -> Vec<Value> {
    vec![
        json!({"id": "d1", "mac": "00:11:22:33:44:55", "ip": "10.34.1.110", "vendor": "Yealink",
               "model": "T54W", "version": "96.86.0.70", "plugin": "yealink", "configured": true,
               "config": "autoprov", "tenant_uuid": "master", "port": 5060, "n": 10,
               "parent_ids": ["base", "defaultconfigdevice"],
               "raw_config": {"sip_lines": {"1": {"username": "alice"}, "2": {"username": "bob"}},
                              "funckeys": [{"type": "blf", "value": "1001"},
                                           {"type": "speeddial", "value": "1002"}]},
               "nested": [[1, 2], [{"k": 2}]], "deep": [{"a": [{"b": "y"}]}]}),
        json!({"id": "d2", "mac": null, "n": 9.5, "t": "y", "port": "5060"}),
        json!({"id": "d3", "n": u64::MAX, "t": "x", "ip": "10.0.0.1"}),
        json!({"id": "d4", "n": -9_007_199_254_740_993_i64, "x": {"": {"": 1}}, "e": ""}),
        json!({"id": "d5", "n": 9_007_199_254_740_992.0_f64, "s": "\u{e9}\u{0}\"", "arr": []}),
        json!({"id": "d6"}),
        json!({"id": "d7", "n": -0.0, "mac": "AA:BB:CC:DD:EE:FF", "configured": false,
               "raw_config": {"sip_lines": {"1": {"username": "alice"}}}}),
    ]
}

fn is_operator_object(value: &Value) -> bool {
    matches!(value, Value::Object(map) if map.keys().any(|k| k.starts_with('$')))
}

/// The fixed documents plus documents made of the selector's own values, so that equality and
/// comparisons have something to hit.
fn documents(selector: Option<&Map<String, Value>>) -> Vec<Value> {
    let mut docs = fixed_documents();
    if let Some(selector) = selector {
        let mut own = selector.clone();
        own.insert("id".into(), json!("self"));
        docs.push(Value::Object(own));
        for (i, (key, value)) in selector.iter().take(8).enumerate() {
            docs.push(json!({"id": format!("k{i}"), key.as_str(): value}));
            if let Value::Object(ops) = value {
                for (j, operand) in ops.values().take(4).enumerate() {
                    docs.push(json!({"id": format!("k{i}o{j}"), key.as_str(): operand}));
                    if let Value::Array(items) = operand {
                        if let Some(item) = items.first() {
                            docs.push(json!({"id": format!("k{i}o{j}e"), key.as_str(): item}));
                        }
                    }
                }
            }
        }
    }
    docs
}

fn selector_query(selector: Map<String, Value>) -> ListQuery {
    ListQuery {
        selector: Some(selector),
        ..ListQuery::default()
    }
}

fn one(key: &str, value: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert(key.to_owned(), value);
    map
}

fn ids(docs: &[Value]) -> Vec<String> {
    docs.iter().map(|d| d["id"].to_string()).collect()
}

/// Parses the query pairs and checks the result against itself: the selector read back from
/// its own JSON (as `q` and as `q64`) is the same; a selector is the AND of its keys; `$ne`,
/// `$in`, `$nin` and `$exists` agree with their plain counterparts; a plain selector matches
/// itself as a document; `apply` is filter, sort (a stable permutation, idempotent), skip,
/// limit and projection.
fn check_query(pairs: &[(String, String)]) -> Outcome {
    let query = match ListQuery::parse(pairs) {
        Ok(query) => query,
        Err(e) => return Ok(sig(("refused", e.param))),
    };
    if query.selector.is_some() {
        accepted();
    }
    if let Some(selector) = &query.selector {
        let text = serde_json::to_string(selector).map_err(|e| e.to_string())?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(&text);
        for pair in [("q", text), ("q64", encoded)] {
            let again = ListQuery::parse(&[(pair.0.to_owned(), pair.1)]);
            if again.as_ref().map(|q| q.selector.as_ref()) != Ok(Some(selector)) {
                return Err(format!(
                    "{selector:?} written as {} reads as {again:?}",
                    pair.0
                ));
            }
        }
    }
    let docs = documents(query.selector.as_ref());
    let matched: Vec<bool> = docs
        .iter()
        .map(|d| query.matches(d))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("a parsed selector fails to match: {e}"))?;
    if let Some(selector) = &query.selector {
        let holds = |map: Map<String, Value>, doc: &Value| {
            selector_query(map)
                .matches(doc)
                .map_err(|e| format!("variant refused: {e}"))
        };
        for (doc, &all) in docs.iter().zip(&matched) {
            let mut every = true;
            for (key, value) in selector.iter().take(8) {
                let plain = holds(one(key, value.clone()), doc)?;
                every &= plain;
                if is_operator_object(value) {
                    if let Some(Value::Bool(wanted)) = value.get("$exists") {
                        let flipped = holds(one(key, json!({"$exists": !wanted})), doc)?;
                        let alone = holds(one(key, json!({"$exists": wanted})), doc)?;
                        if flipped == alone {
                            return Err(format!("$exists true and false agree on {key:?}"));
                        }
                    }
                    if let Some(list @ Value::Array(_)) = value.get("$in") {
                        let inside = holds(one(key, json!({"$in": list})), doc)?;
                        let outside = holds(one(key, json!({"$nin": list})), doc)?;
                        if inside == outside {
                            return Err(format!("$in and $nin {list} agree on {key:?}"));
                        }
                    }
                    continue;
                }
                let ne = holds(one(key, json!({"$ne": value})), doc)?;
                let within = holds(one(key, json!({"$in": [value]})), doc)?;
                if ne == plain || within != plain {
                    return Err(format!(
                        "{key:?}: {value} gives {plain}, $ne {ne}, $in {within} on {doc}"
                    ));
                }
            }
            if selector.len() <= 8 && every != all {
                return Err(format!("the selector is not the AND of its keys on {doc}"));
            }
        }
        let plain = selector
            .iter()
            .all(|(k, v)| !k.contains('.') && !is_operator_object(v));
        if plain && !holds(selector.clone(), &Value::Object(selector.clone()))? {
            return Err("a plain selector does not match itself".into());
        }
    }
    let out = query
        .apply(docs.clone())
        .map_err(|e| format!("apply refused a parsed query: {e}"))?;
    let filtered: Vec<Value> = docs
        .iter()
        .zip(&matched)
        .filter(|(_, m)| **m)
        .map(|(d, _)| d.clone())
        .collect();
    let expected = filtered
        .len()
        .saturating_sub(query.skip)
        .min(query.limit.unwrap_or(usize::MAX));
    if out.len() != expected {
        return Err(format!("{} documents out, {expected} expected", out.len()));
    }
    let filtered_ids = ids(&filtered);
    if let Some(lost) = ids(&out).iter().find(|id| !filtered_ids.contains(id)) {
        return Err(format!("document {lost} out but not matched"));
    }
    if let Some(key) = &query.sort {
        let sorting = ListQuery {
            sort: Some(key.clone()),
            descending: query.descending,
            ..ListQuery::default()
        };
        let once = sorting.apply(filtered.clone()).map_err(|e| e.to_string())?;
        let twice = sorting.apply(once.clone()).map_err(|e| e.to_string())?;
        let (mut a, mut b) = (ids(&once), filtered_ids.clone());
        a.sort();
        b.sort();
        if a != b || once != twice {
            return Err(format!("sorting on {key:?} is not a stable permutation"));
        }
    } else if query.fields.is_none() {
        let window: Vec<Value> = filtered
            .into_iter()
            .skip(query.skip)
            .take(query.limit.unwrap_or(usize::MAX))
            .collect();
        if out != window {
            return Err("apply is not filter, skip, limit".into());
        }
    }
    Ok(sig((
        matched,
        query.sort.is_some(),
        query.fields.is_some(),
        query.descending,
    )))
}

/// Query pairs one a line, `name=value`.
fn query(data: &[u8]) -> Outcome {
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(String, String)> = text
        .lines()
        .map(|line| {
            let (k, v) = line.split_once('=').unwrap_or((line, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    check_query(&pairs)
}

#[test]
fn query_fuzz() {
    const DICT: &[&[u8]] = &[
        b"\nq=",
        b"\nq64=",
        b"\nfields=",
        b"\nsort=",
        b"\nsort_ord=DESC",
        b"\nskip=1",
        b"\nlimit=2",
        b"$in",
        b"$nin",
        b"$gt",
        b"$le",
        b"$ne",
        b"$contains",
        b"$exists",
        b"\"",
        b"{",
        b"}",
        b"[",
        b"]",
        b"null",
        b"true",
        b"1e308",
        b"-0.0",
        b"18446744073709551615",
        b"9007199254740993",
        b"raw_config.sip_lines.1.username",
    ];
    fuzz(
        &Target {
            name: "query",
            max_len: 2048,
            dict: DICT,
            default_iters: 6_000,
        },
        &query,
    );
}

const KEYS: &[&str] = &[
    "id",
    "mac",
    "ip",
    "n",
    "t",
    "port",
    "configured",
    "parent_ids",
    "raw_config",
    "raw_config.sip_lines.1.username",
    "raw_config.funckeys.value",
    "nested.k",
    "deep.a.b",
    "x..",
    "",
    "$in",
];
const STRINGS: &[&str] = &[
    "",
    "00:11:22:33:44:55",
    "10.34.1.110",
    "alice",
    "base",
    "1001",
    "y",
    "5060",
    "\u{e9}\u{0}\"",
];
const OPERATORS: &[&str] = &[
    "$in",
    "$nin",
    "$contains",
    "$ne",
    "$gt",
    "$ge",
    "$lt",
    "$le",
    "$exists",
    "$gte",
    "plain",
];

fn gen_number(u: &mut Unstructured) -> arbitrary::Result<Value> {
    Ok(match u.int_in_range(0..=4)? {
        0 => json!(u.int_in_range(-3..=12)?),
        1 => json!(u.arbitrary::<i64>()?),
        2 => json!(u.arbitrary::<u64>()?),
        3 => json!(*u.choose(&[
            0.5,
            -0.0,
            9.5,
            5060.0,
            1e308,
            -1e308,
            9_007_199_254_740_992.0,
            18_446_744_073_709_551_616.0,
            f64::MIN_POSITIVE,
        ])?),
        _ => {
            let f: f64 = u.arbitrary()?;
            if f.is_finite() {
                json!(f)
            } else {
                json!(0)
            }
        }
    })
}

fn gen_value(u: &mut Unstructured, depth: u32) -> arbitrary::Result<Value> {
    let top = if depth == 0 { 4 } else { 6 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => gen_number(u)?,
        3 | 4 => Value::String(gen_text(u, STRINGS)?),
        5 => {
            let n = u.int_in_range(0..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| gen_value(u, depth - 1))
                    .collect::<Result<_, _>>()?,
            )
        }
        _ => {
            let mut map = Map::new();
            for _ in 0..u.int_in_range(0..=4)? {
                map.insert(gen_text(u, KEYS)?, gen_value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

fn gen_query(u: &mut Unstructured) -> arbitrary::Result<Vec<(String, String)>> {
    let mut selector = Map::new();
    for _ in 0..u.int_in_range(0..=5)? {
        let key = gen_text(u, KEYS)?;
        let value = if u.ratio(1, 2)? {
            gen_value(u, 3)?
        } else {
            let mut ops = Map::new();
            for _ in 0..u.int_in_range(1..=3)? {
                let op = *u.choose(OPERATORS)?;
                let operand = match op {
                    "$in" | "$nin" if u.ratio(7, 8)? => {
                        gen_value(u, 2).map(|v| if v.is_array() { v } else { json!([v]) })?
                    }
                    "$exists" if u.ratio(7, 8)? => Value::Bool(u.arbitrary()?),
                    "$gt" | "$ge" | "$lt" | "$le" if u.ratio(7, 8)? => {
                        if u.ratio(1, 2)? {
                            gen_number(u)?
                        } else {
                            Value::String(gen_text(u, STRINGS)?)
                        }
                    }
                    _ => gen_value(u, 2)?,
                };
                ops.insert(op.to_owned(), operand);
            }
            Value::Object(ops)
        };
        selector.insert(key, value);
    }
    let text = serde_json::to_string(&selector).unwrap_or_default();
    let mut pairs = vec![if u.ratio(1, 4)? {
        (
            "q64".to_owned(),
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&text),
        )
    } else {
        ("q".to_owned(), text)
    }];
    if u.ratio(1, 2)? {
        pairs.push(("sort".into(), gen_text(u, KEYS)?));
    }
    if u.ratio(1, 4)? {
        pairs.push(("sort_ord".into(), gen_text(u, &["DESC", "asc", "x"])?));
    }
    if u.ratio(1, 4)? {
        pairs.push(("skip".into(), u.int_in_range(0..=10)?.to_string()));
    }
    if u.ratio(1, 4)? {
        pairs.push(("limit".into(), u.int_in_range(0..=10)?.to_string()));
    }
    if u.ratio(1, 4)? {
        let fields: Vec<String> = (0..u.int_in_range(0..=3)?)
            .map(|_| gen_text(u, KEYS))
            .collect::<Result<_, _>>()?;
        pairs.push(("fields".into(), fields.join(",")));
    }
    Ok(pairs)
}

fn query_grammar(data: &[u8]) -> Outcome {
    match gen_query(&mut Unstructured::new(data)) {
        Ok(pairs) => check_query(&pairs),
        Err(_) => Ok(sig("short")),
    }
}

#[test]
fn query_grammar_fuzz() {
    fuzz(
        &Target {
            name: "query_grammar",
            max_len: 1024,
            dict: &[],
            default_iters: 4_000,
        },
        &query_grammar,
    );
}

// ---------------------------------------------------------------------------------------------
// Identification with the built-in plugins

/// A route's answer stays inside the plugin's `static/` and names only a MAC the path has.
fn check_resolve(plugin: &Plugin, path: &str) -> Result<(), String> {
    let Some(resolved) = plugin.resolve(path) else {
        return Ok(());
    };
    if let Some(mac) = resolved.mac {
        if !carries_mac(path, &mac) {
            return Err(format!("{}: route of {path:?} names {mac}", plugin.name));
        }
    }
    if let provisiond::plugins::Target::Static(file) = &resolved.target {
        // A directory plugin's file is under `<dir>/static`; an embedded plugin's is the
        // relative path inside its embedded `static/`.
        let rest = match &plugin.dir {
            Some(dir) => file.strip_prefix(dir.join("static")).ok(),
            None => Some(file.as_path()),
        };
        let inside =
            rest.is_some_and(|rest| rest.components().all(|c| matches!(c, Component::Normal(_))));
        if !inside {
            return Err(format!(
                "{}: {path:?} serves {}",
                plugin.name,
                file.display()
            ));
        }
    }
    if resolved.content_type.is_empty() || resolved.content_type.chars().any(char::is_control) {
        return Err(format!("content type {:?}", resolved.content_type));
    }
    Ok(())
}

/// The input is a User-Agent, a newline, then a path (both the whole input without newline);
/// it is identified as an HTTP request, a TFTP request and DHCP options 60 and 77.
fn ident(plugins: &PluginSet, data: &[u8]) -> Outcome {
    let (ua_bytes, path_bytes) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let ua = String::from_utf8_lossy(ua_bytes).into_owned();
    let path = String::from_utf8_lossy(path_bytes).into_owned();
    let src = IpAddr::from([10, 0, 0, 9]);
    let lease_mac = Mac::new([0x02, 0, 0, 0, 0, 0x01]);
    let contexts = [
        RequestContext::Http {
            src,
            path: path.clone(),
            user_agent: Some(ua.clone()),
        },
        RequestContext::Tftp {
            src,
            filename: path.clone(),
        },
        RequestContext::Dhcp {
            op: DhcpOp::Commit,
            ip: Ipv4Addr::new(10, 0, 0, 9),
            mac: lease_mac,
            options: vec![(60, ua_bytes.to_vec()), (77, path_bytes.to_vec())],
        },
    ];
    let mut outcome = Vec::new();
    let mut recognised = false;
    for ctx in &contexts {
        let (info, plugin) = extract(ctx, plugins);
        if info.ip != Some(src) {
            return Err(format!("ip {:?} for {ctx:?}", info.ip));
        }
        let mac_ok = match (ctx, info.mac) {
            (RequestContext::Dhcp { .. }, mac) => mac == Some(lease_mac),
            (_, Some(mac)) => carries_mac(&format!("{ua}\n{path}"), &mac),
            (_, None) => true,
        };
        if !mac_ok {
            return Err(format!("{ctx:?} identified as MAC {:?}", info.mac));
        }
        if let Some(p) = &plugin {
            if !plugins
                .get(&p.name)
                .is_some_and(|q| std::sync::Arc::ptr_eq(p, q))
            {
                return Err(format!("plugin {} is not loaded", p.name));
            }
        }
        recognised |= plugin.is_some();
        outcome.push((
            plugin.map(|p| p.name.clone()),
            info.mac.is_some(),
            info.model.is_some(),
            info.version.is_some(),
        ));
    }
    if recognised {
        accepted();
    }
    for plugin in plugins.iter() {
        check_resolve(plugin, &path)?;
    }
    if let Some(relative) = safe_relative(&path) {
        if path.len() > MAX_PATH_LEN
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Err(format!("{path:?} taken as safe"));
        }
    }
    Ok(sig(outcome))
}

#[test]
fn ident_fuzz() {
    let plugins = PluginSet::load(&[(plugins_dir(), Origin::Builtin)]);
    assert!(plugins.errors.is_empty(), "{:?}", plugins.errors);
    const DICT: &[&[u8]] = &[
        b"\n",
        b"Yealink SIP-",
        b"Fanvil ",
        b"Mozilla/4.0 (compatible; snom",
        b"-SIP ",
        b"Grandstream Model HW ",
        b" DevId ",
        b"Cisco-CP-",
        b"-3PCC/",
        b"FileTransport Poly",
        b"-UA/",
        b" (SN:",
        b"001565aabbcc",
        b"00:15:65:aa:bb:cc",
        b"000413922D24",
        b"0c383e07e16c",
        b".cfg",
        b".xml",
        b".htm",
        b"/",
        b"../",
        b"\x00\x00\x36\x3d",
    ];
    fuzz(
        &Target {
            name: "ident",
            max_len: 1024,
            dict: DICT,
            default_iters: 3_000,
        },
        &|data| ident(&plugins, data),
    );
}

// ---------------------------------------------------------------------------------------------
// Plugin manifests

/// Loads the text as the `plugin.toml` of the built-in plugin directory it names (so that its
/// templates exist), and checks what loaded: the name is the directory's, and its rules and
/// routes behave on the text's own lines.
fn manifest(checkers: &[(String, ManifestChecker)], data: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(sig("not UTF-8"));
    };
    let (name, checker) = checkers
        .iter()
        .find(|(name, _)| text.contains(&format!("\"{name}\"")))
        .unwrap_or(&checkers[0]);
    let plugin = match checker.load(text) {
        Ok(plugin) => plugin,
        Err(e) => {
            if e.message.is_empty() {
                return Err(format!("error without a message: {e:?}"));
            }
            let field: String = e.field.chars().filter(|c| !c.is_ascii_digit()).collect();
            return Ok(sig(("refused", field)));
        }
    };
    accepted();
    if plugin.name != *name || plugin.vendor.trim().is_empty() {
        return Err(format!("loaded as {} from {name}", plugin.name));
    }
    let probes = text.lines().take(16).chain([
        "Yealink SIP-T54W 96.86.0.70 80:5e:c0:11:22:33",
        "001565aabbcc.cfg",
        "SEP001565AABBCC.cnf.xml",
        "fw/x.rom",
    ]);
    for probe in probes {
        for source in [
            RuleSource::UserAgent,
            RuleSource::DhcpVendorClass,
            RuleSource::DhcpUserClass,
            RuleSource::Filename,
        ] {
            if let Some(mac) = plugin.extract(source, probe).and_then(|e| e.mac) {
                if !carries_mac(probe, &mac) {
                    return Err(format!("rule of {source:?} finds {mac} in {probe:?}"));
                }
            }
        }
        check_resolve(&plugin, probe)?;
    }
    let _ = plugin.dhcp_vendor_patterns();
    Ok(sig((
        "loaded",
        plugin.rules().count(),
        plugin.routes().count(),
        plugin.dhcp_options.len(),
    )))
}

#[test]
fn manifest_fuzz() {
    let mut checkers = Vec::new();
    let mut dirs: Vec<_> = std::fs::read_dir(plugins_dir())
        .expect("plugins/")
        .map(|e| e.expect("plugins/ entry").path())
        .filter(|p| p.join("plugin.toml").is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let name = dir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let checker = ManifestChecker::new(&dir).unwrap_or_else(|e| panic!("{e}"));
        checkers.push((name, checker));
    }
    const DICT: &[&[u8]] = &[
        b"\n[[identify]]\n",
        b"\n[[files]]\n",
        b"\n[dhcp]\n",
        b"\n[[dhcp.options]]\n",
        b"source = \"user_agent\"\n",
        b"source = \"filename\"\n",
        b"pattern = '",
        b"path = \"{mac}.cfg\"\n",
        b"template = \"",
        b"static = true\n",
        b"{mac}",
        b"{MAC}",
        b"*",
        b"(?P<mac>",
        b"(?P<serial>",
        b"code = 66\n",
        b"value = \"{provisioning_url}\"\n",
        b"score = ",
        b"'''",
        b"\"\"\"",
        b"content_type = \"",
        b"vendor_class = '",
    ];
    fuzz(
        &Target {
            name: "manifest",
            max_len: 8192,
            dict: DICT,
            default_iters: 1_500,
        },
        &|data| manifest(&checkers, data),
    );
}

/// A phone's answer to our NOTIFY (`sync::sip`'s parser), then the Digest challenge chosen
/// among its headers and our answer to it.
fn sip_response(data: &[u8]) -> Outcome {
    let Some((code, reason, challenges)) = sip::response(data, "c0ffee", 1) else {
        return Ok(0);
    };
    if !(100..700).contains(&code) {
        return Err(format!("status {code} accepted"));
    }
    if reason.chars().count() > 100 || reason.chars().any(char::is_control) {
        return Err(format!("reason {reason:?} kept as sent"));
    }
    if !matches!(code, 401 | 407) && !challenges.is_empty() {
        return Err(format!("challenges kept for a {code}"));
    }
    let challenge = match digest::choose(&challenges) {
        Ok(c) => c,
        Err(e) => {
            return Ok(sig((
                code,
                format!("{e:?}").split('(').next().map(str::to_owned),
            )))
        }
    };
    let credentials = Credentials {
        username: "auth1001".into(),
        password: "pw-1001".into(),
    };
    let answer = digest::authorization(
        &challenge,
        &credentials,
        "NOTIFY",
        "sip:10.0.0.5:5060",
        "0a4f113b",
    )
    .map_err(|e| format!("no answer to a chosen challenge: {e}"))?;
    // It goes into a header line of ours: an ASCII control character (CR, LF, NUL…) would
    // end or forge the line; a tab is allowed in a quoted string.
    if answer
        .bytes()
        .any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(format!("control character in our answer {answer:?}"));
    }
    // Our answer reads back, through the same grammar, as the challenge it answers.
    let back = digest::choose(&[answer.as_str()]).map_err(|e| format!("{answer:?}: {e}"))?;
    if back != challenge {
        return Err(format!("{answer:?} reads as {back:?}, not {challenge:?}"));
    }
    Ok(sig((
        code,
        format!("{:?}/{:?}", challenge.algorithm, challenge.qop),
    )))
}

#[test]
fn sip_response_fuzz() {
    const DICT: &[&[u8]] = &[
        b"SIP/2.0 ",
        b"401 Unauthorized\r\n",
        b"407 Proxy Authentication Required\r\n",
        b"200 OK\r\n",
        b"\r\n",
        b"Call-ID: c0ffee@provisiond\r\n",
        b"CSeq: 1 NOTIFY\r\n",
        b"WWW-Authenticate: ",
        b"Proxy-Authenticate: ",
        b"Digest ",
        b"realm=\"",
        b"nonce=\"",
        b"opaque=\"",
        b"algorithm=",
        b"SHA-256-sess",
        b"MD5",
        b"qop=\"auth,auth-int\"",
        b"\\\"",
        b", ",
        b"\r\n ",
    ];
    fuzz(
        &Target {
            name: "sip_response",
            max_len: 2048,
            dict: DICT,
            default_iters: 40_000,
        },
        &sip_response,
    );
}
