//! DHCP lease facts from a foreign DHCP server, in the dxtorc/dxtora format: option strings
//! such as `"06041.61.73"` (three decimal digits of option code, then the value's bytes in hex
//! joined by dots, or not joined at all), one datagram per lease event on a UNIX socket
//! (docs/dhcpinfo.md).

mod listener;
pub mod notify;

pub use listener::{bind, serve};

use std::net::Ipv4Addr;

use crate::ident::{DhcpOp, DhcpOption, RequestContext};
use crate::model::Mac;

/// Why lease facts are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhcpInfoError {
    /// `op` is not commit, release or expiry.
    #[error("op: {0:?} is not commit, release or expiry")]
    Op(String),
    /// Not an IPv4 address.
    #[error("ip: {0:?} is not an IPv4 address")]
    Ip(String),
    /// Not a MAC address.
    #[error("mac: {0}")]
    Mac(String),
    /// A malformed option string.
    #[error("options[{index}]: {message}")]
    Option {
        /// Position in the list.
        index: usize,
        /// What is wrong.
        message: String,
    },
    /// A required field is missing.
    #[error("{0} is required")]
    Missing(&'static str),
}

/// Options accepted in one message; a DHCP packet cannot carry more.
pub const MAX_OPTIONS: usize = 255;

/// Parses one dxtorc option string.
pub fn parse_option(text: &str) -> Result<DhcpOption, String> {
    let code = text.get(..3).ok_or("shorter than a 3-digit option code")?;
    if !code.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!("{code:?} is not a 3-digit option code"));
    }
    let code: u16 = code.parse().map_err(|_| "bad option code".to_owned())?;
    if code == 0 || code > 254 {
        return Err(format!("option code {code} is out of 1..254"));
    }
    let rest = &text[3..];
    let value = if rest.is_empty() {
        Vec::new()
    } else if !rest.contains('.') {
        // Some published dhcpd hooks join the bytes with "": undotted hex, two digits a byte.
        if rest.len() % 2 != 0 || !rest.is_ascii() {
            return Err(format!("{rest:?} is not hex bytes"));
        }
        (0..rest.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&rest[i..i + 2], 16)
                    .map_err(|_| format!("{:?} is not a hex byte", &rest[i..i + 2]))
            })
            .collect::<Result<Vec<u8>, String>>()?
    } else {
        rest.split('.')
            .map(|byte| {
                if byte.is_empty() || byte.len() > 2 {
                    return Err(format!("{byte:?} is not a hex byte"));
                }
                u8::from_str_radix(byte, 16).map_err(|_| format!("{byte:?} is not a hex byte"))
            })
            .collect::<Result<Vec<u8>, String>>()?
    };
    if value.len() > 255 {
        return Err("a DHCP option holds at most 255 bytes".into());
    }
    Ok((code as u8, value))
}

/// ISC dhcpd's `binary-to-ascii(16, 8, ":", …)` (dxtorc's hook) drops leading zeros
/// (`0:15:65:a:b:c`): pad each group back to two digits.
fn pad_mac(mac: &str) -> String {
    let groups: Vec<&str> = mac.split(':').collect();
    if groups.len() == 6 && groups.iter().all(|g| (1..=2).contains(&g.len())) {
        groups
            .iter()
            .map(|g| format!("{g:0>2}"))
            .collect::<Vec<_>>()
            .join(":")
    } else {
        mac.to_owned()
    }
}

/// Builds the identification request of a lease event from its text fields.
pub fn to_request(
    op: &str,
    ip: &str,
    mac: Option<&str>,
    options: &[String],
) -> Result<RequestContext, DhcpInfoError> {
    let op = match op {
        "commit" => DhcpOp::Commit,
        "release" => DhcpOp::Release,
        "expiry" => DhcpOp::Expiry,
        other => return Err(DhcpInfoError::Op(other.chars().take(32).collect())),
    };
    let ip: Ipv4Addr = ip
        .parse()
        .map_err(|_| DhcpInfoError::Ip(ip.chars().take(64).collect()))?;
    let mac: Mac = pad_mac(mac.ok_or(DhcpInfoError::Missing("mac"))?)
        .parse()
        .map_err(|e: crate::model::MacParseError| DhcpInfoError::Mac(e.to_string()))?;
    if options.len() > MAX_OPTIONS {
        return Err(DhcpInfoError::Option {
            index: MAX_OPTIONS,
            message: format!("more than {MAX_OPTIONS} options"),
        });
    }
    let options = options
        .iter()
        .enumerate()
        .map(|(index, text)| {
            parse_option(text).map_err(|message| DhcpInfoError::Option { index, message })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RequestContext::Dhcp {
        op,
        ip,
        mac,
        options,
    })
}

/// Largest datagram accepted (dxtora's limit).
pub const MAX_DATAGRAM: usize = 2048;

/// Lease events counted by outcome, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams read from the socket.
    pub received: std::sync::atomic::AtomicU64,
    /// Events applied to the store.
    pub accepted: std::sync::atomic::AtomicU64,
    /// Dropped: larger than [`MAX_DATAGRAM`].
    pub oversize: std::sync::atomic::AtomicU64,
    /// Dropped: not a valid event.
    pub malformed: std::sync::atomic::AtomicU64,
    /// Dropped: the queue to identification was full (a flood).
    pub queue_full: std::sync::atomic::AtomicU64,
    /// Dropped: identification failed (store error).
    pub failed: std::sync::atomic::AtomicU64,
}

/// One lease event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A lease was granted or renewed (identification request).
    Lease(RequestContext),
    /// A lease ended and the sender did not give the MAC (dxtorc's `release|expiry IP`).
    Gone(Ipv4Addr),
}

/// Parses one datagram: UTF-8 lines `op`, `ip`, then for `commit` the MAC and one option per
/// line (dxtora's format); `release`/`expiry` may carry the MAC as a third line.
pub fn parse_datagram(bytes: &[u8]) -> Result<Event, DhcpInfoError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(DhcpInfoError::Missing("a datagram of at most 2048 bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| DhcpInfoError::Op("<not UTF-8>".into()))?;
    let mut lines = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.is_empty());
    let op = lines.next().ok_or(DhcpInfoError::Missing("op"))?;
    let ip = lines.next().ok_or(DhcpInfoError::Missing("ip"))?;
    let rest: Vec<String> = lines.map(str::to_owned).collect();
    match op {
        "commit" => {
            let (mac, options) = rest.split_first().ok_or(DhcpInfoError::Missing("mac"))?;
            to_request(op, ip, Some(mac), options).map(Event::Lease)
        }
        "release" | "expiry" => match rest.first() {
            Some(mac) => to_request(op, ip, Some(mac), &[]).map(Event::Lease),
            None => ip
                .parse()
                .map(Event::Gone)
                .map_err(|_| DhcpInfoError::Ip(ip.chars().take(64).collect())),
        },
        other => Err(DhcpInfoError::Op(other.chars().take(32).collect())),
    }
}

/// The datagram of an event, as `provisiond dhcp-notify` (and dxtorc) send it.
pub fn datagram(op: &str, ip: &str, mac: Option<&str>, options: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for field in [Some(op), Some(ip), mac]
        .into_iter()
        .flatten()
        .chain(options.iter().map(String::as_str))
    {
        if !field.is_empty() {
            out.push_str(field);
            out.push('\n');
        }
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_strings() {
        assert_eq!(parse_option("06041.61.73"), Ok((60, b"Aas".to_vec())));
        assert_eq!(parse_option("012"), Ok((12, vec![])));
        assert_eq!(parse_option("0770a.ff"), Ok((77, vec![0x0a, 0xff])));
        for bad in [
            "",
            "06",
            "6x0",
            "000",
            "255",
            "999",
            "060.41",
            "06041..61",
            "060411.2",
            "06041.zz",
            "０６０",
        ] {
            assert!(parse_option(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests() {
        let ctx = to_request(
            "commit",
            "10.0.0.5",
            Some("00:15:65:aa:bb:cc"),
            &["06079.65.61.6c.69.6e.6b".into()],
        )
        .unwrap();
        assert!(
            matches!(ctx, RequestContext::Dhcp { op: DhcpOp::Commit, ref options, .. } if options[0] == (60, b"yealink".to_vec()))
        );
        assert!(matches!(
            to_request("renew", "10.0.0.5", Some("00:15:65:aa:bb:cc"), &[]),
            Err(DhcpInfoError::Op(_))
        ));
        assert!(matches!(
            to_request("commit", "10.0.0.300", Some("00:15:65:aa:bb:cc"), &[]),
            Err(DhcpInfoError::Ip(_))
        ));
        assert!(matches!(
            to_request("commit", "10.0.0.5", Some("nope"), &[]),
            Err(DhcpInfoError::Mac(_))
        ));
        assert!(matches!(
            to_request("commit", "10.0.0.5", None, &[]),
            Err(DhcpInfoError::Missing("mac"))
        ));
        assert!(matches!(
            to_request(
                "commit",
                "10.0.0.5",
                Some("00:15:65:aa:bb:cc"),
                &["06x".into()]
            ),
            Err(DhcpInfoError::Option { index: 0, .. })
        ));
    }

    #[test]
    fn datagrams() {
        let d = datagram(
            "commit",
            "10.0.0.5",
            Some("00:15:65:aa:bb:cc"),
            &["06079.65.61.6c.69.6e.6b".into(), String::new()],
        );
        assert_eq!(
            d,
            b"commit\n10.0.0.5\n00:15:65:aa:bb:cc\n06079.65.61.6c.69.6e.6b\n"
        );
        match parse_datagram(&d).unwrap() {
            Event::Lease(RequestContext::Dhcp {
                op: DhcpOp::Commit,
                options,
                ..
            }) => assert_eq!(options, vec![(60, b"yealink".to_vec())]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_datagram(b"expiry\n10.0.0.5\n").unwrap(),
            Event::Gone("10.0.0.5".parse().unwrap())
        );
        assert!(matches!(
            parse_datagram(b"release\n10.0.0.5\n00:15:65:aa:bb:cc\n").unwrap(),
            Event::Lease(RequestContext::Dhcp {
                op: DhcpOp::Release,
                ..
            })
        ));
        // dxtorc's MACs without leading zeros, as ISC's binary-to-ascii writes them.
        match parse_datagram(b"commit\n10.0.0.5\n0:15:65:a:b:c\n").unwrap() {
            Event::Lease(RequestContext::Dhcp { mac, .. }) => {
                assert_eq!(mac.to_string(), "00:15:65:0a:0b:0c")
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            &b""[..],
            b"commit\n",
            b"commit\n10.0.0.5\n",
            b"renew\n10.0.0.5\n",
            b"expiry\nnope\n",
            b"commit\n10.0.0.5\nzz\n",
            b"\xff\xfe",
            &[b'a'; 3000][..],
        ] {
            assert!(parse_datagram(bad).is_err(), "{bad:?}");
        }
    }
}
