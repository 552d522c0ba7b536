//! DHCPv4 messages: a strict parser for what clients and relays send, and the reply encoder.
//!
//! Requests are parsed here rather than with dhcproto's typed decoder: identification needs
//! every option's raw bytes (option 60 of a Polycom is binary), option overload (52) must move
//! the `file` and `sname` fields into the option area, options split in several pieces must be
//! joined (RFC 3396), and any malformed input must be refused as a whole instead of being
//! silently cut short. Replies are encoded with dhcproto.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Flags, HType, Message, Opcode, OptionCode, UnknownOption};
use dhcproto::{Encodable, Encoder};

use crate::model::Mac;

/// BOOTP header (236 bytes) plus the magic cookie.
pub const HEADER_LEN: usize = 240;
/// RFC 1497 magic cookie.
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Smallest reply sent (BOOTP's minimum; some old clients drop shorter ones).
pub const MIN_REPLY_LEN: usize = 300;
/// What a client must accept without option 57 (576 bytes less the IP and UDP headers).
pub const DEFAULT_MAX_REPLY: usize = 576 - 28;
/// Upper bound on a reply whatever option 57 says (an Ethernet frame without fragments).
pub const MAX_REPLY: usize = 1500 - 28;

/// Option codes used by the server.
pub mod code {
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN: u8 = 15;
    pub const NTP: u8 = 42;
    pub const VENDOR_SPECIFIC: u8 = 43;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const MAX_SIZE: u8 = 57;
    pub const RENEWAL: u8 = 58;
    pub const REBINDING: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const USER_CLASS: u8 = 77;
    pub const RELAY_AGENT: u8 = 82;
    pub const SUBNET_SELECTION: u8 = 118;
    /// Link selection sub-option of option 82 (RFC 3527).
    pub const LINK_SELECTION_SUB: u8 = 5;
}

/// DHCP message types (option 53).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    /// 1
    Discover,
    /// 2
    Offer,
    /// 3
    Request,
    /// 4
    Decline,
    /// 5
    Ack,
    /// 6
    Nak,
    /// 7
    Release,
    /// 8
    Inform,
}

impl MsgType {
    fn from_u8(v: u8) -> Option<MsgType> {
        Some(match v {
            1 => MsgType::Discover,
            2 => MsgType::Offer,
            3 => MsgType::Request,
            4 => MsgType::Decline,
            5 => MsgType::Ack,
            6 => MsgType::Nak,
            7 => MsgType::Release,
            8 => MsgType::Inform,
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            MsgType::Discover => 1,
            MsgType::Offer => 2,
            MsgType::Request => 3,
            MsgType::Decline => 4,
            MsgType::Ack => 5,
            MsgType::Nak => 6,
            MsgType::Release => 7,
            MsgType::Inform => 8,
        }
    }
}

/// Why a datagram is not a request this server handles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than the fixed header and cookie.
    #[error("truncated: {0} bytes")]
    Truncated(usize),
    /// `op` is not BOOTREQUEST.
    #[error("not a BOOTREQUEST (op {0})")]
    NotRequest(u8),
    /// Wrong magic cookie (plain BOOTP or garbage).
    #[error("wrong magic cookie")]
    BadCookie,
    /// Not Ethernet with a 6-byte address (or `hlen` > 16).
    #[error("unsupported hardware address (htype {htype}, hlen {hlen})")]
    Hardware {
        /// Hardware type.
        htype: u8,
        /// Address length.
        hlen: u8,
    },
    /// An option runs past the end of its area.
    #[error("option {0} runs past the end of the packet")]
    OptionOverrun(u8),
    /// Option 52 with a value other than 1, 2 or 3.
    #[error("bad option overload value")]
    BadOverload,
    /// An option's joined value is longer than any real client sends.
    #[error("option {0} is oversized")]
    Oversized(u8),
    /// No option 53, or an unknown message type.
    #[error("no valid DHCP message type")]
    NoMessageType,
    /// A message type that clients do not send (OFFER, ACK, NAK).
    #[error("message type {0:?} is not sent by clients")]
    WrongDirection(MsgType),
}

/// A client's (or a relay's) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Message type (option 53).
    pub msg_type: MsgType,
    /// Relay hops.
    pub hops: u8,
    /// Transaction id.
    pub xid: u32,
    /// Seconds since the client started.
    pub secs: u16,
    /// Flags (broadcast bit 0x8000).
    pub flags: u16,
    /// Client address (RENEWING, REBINDING, INFORM, RELEASE).
    pub ciaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address.
    pub mac: Mac,
    /// The 16 bytes of `chaddr` as sent.
    pub chaddr: [u8; 16],
    /// Options in order of first appearance, split options joined (RFC 3396), pads and the
    /// end option removed.
    pub options: Vec<(u8, Vec<u8>)>,
}

/// Largest joined option value accepted (a DHCP packet on Ethernet cannot carry more).
const MAX_OPTION_VALUE: usize = 1024;

fn parse_area(
    area: &[u8],
    options: &mut Vec<(u8, Vec<u8>)>,
    allow_overload: bool,
) -> Result<Option<u8>, ParseError> {
    let mut overload = None;
    let mut i = 0;
    while i < area.len() {
        let c = area[i];
        match c {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let len = *area.get(i + 1).ok_or(ParseError::OptionOverrun(c))? as usize;
        let value = area
            .get(i + 2..i + 2 + len)
            .ok_or(ParseError::OptionOverrun(c))?;
        i += 2 + len;
        if c == code::OVERLOAD {
            // Only the main option area may say that `file`/`sname` hold options; an overload
            // option inside them is ignored (no loop).
            if allow_overload {
                match value {
                    [v @ 1..=3] => overload = Some(*v),
                    _ => return Err(ParseError::BadOverload),
                }
            }
            continue;
        }
        match options.iter_mut().find(|(code, _)| *code == c) {
            Some((_, joined)) => {
                if joined.len() + value.len() > MAX_OPTION_VALUE {
                    return Err(ParseError::Oversized(c));
                }
                joined.extend_from_slice(value);
            }
            None => options.push((c, value.to_vec())),
        }
    }
    Ok(overload)
}

impl Request {
    /// Parses a datagram; anything malformed is an error, never a panic.
    pub fn parse(data: &[u8]) -> Result<Request, ParseError> {
        if data.len() < HEADER_LEN {
            return Err(ParseError::Truncated(data.len()));
        }
        if data[0] != 1 {
            return Err(ParseError::NotRequest(data[0]));
        }
        let (htype, hlen) = (data[1], data[2]);
        if htype != 1 || hlen != 6 {
            return Err(ParseError::Hardware { htype, hlen });
        }
        if data[236..240] != MAGIC {
            return Err(ParseError::BadCookie);
        }
        let u32_at =
            |i: usize| u32::from_be_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let ip_at = |i: usize| Ipv4Addr::from(u32_at(i));
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(&data[28..44]);
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&data[28..34]);

        let mut options = Vec::new();
        let overload = parse_area(&data[HEADER_LEN..], &mut options, true)?;
        // RFC 2131 §4.1: the `file` field is read before `sname`.
        if let Some(o) = overload {
            if o & 1 != 0 {
                parse_area(&data[108..236], &mut options, false)?;
            }
            if o & 2 != 0 {
                parse_area(&data[44..108], &mut options, false)?;
            }
        }
        let msg_type = options
            .iter()
            .find(|(c, _)| *c == code::MESSAGE_TYPE)
            .and_then(|(_, v)| match v.as_slice() {
                [t] => MsgType::from_u8(*t),
                _ => None,
            })
            .ok_or(ParseError::NoMessageType)?;
        if matches!(msg_type, MsgType::Offer | MsgType::Ack | MsgType::Nak) {
            return Err(ParseError::WrongDirection(msg_type));
        }
        Ok(Request {
            msg_type,
            hops: data[3],
            xid: u32_at(4),
            secs: u16::from_be_bytes([data[8], data[9]]),
            flags: u16::from_be_bytes([data[10], data[11]]),
            ciaddr: ip_at(12),
            giaddr: ip_at(24),
            mac: Mac::new(mac),
            chaddr,
            options,
        })
    }

    /// The raw value of an option.
    pub fn option(&self, c: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(code, _)| *code == c)
            .map(|(_, v)| v.as_slice())
    }

    fn ip_option(&self, c: u8) -> Option<Ipv4Addr> {
        match self.option(c)? {
            [a, b, c, d] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => None,
        }
    }

    /// Requested IP address (option 50).
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.ip_option(code::REQUESTED_IP)
    }

    /// Server identifier (option 54).
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.ip_option(code::SERVER_ID)
    }

    /// Subnet selection (option 118, RFC 3011).
    pub fn subnet_selection(&self) -> Option<Ipv4Addr> {
        self.ip_option(code::SUBNET_SELECTION)
    }

    /// Link selection sub-option of the relay agent information (RFC 3527).
    pub fn link_selection(&self) -> Option<Ipv4Addr> {
        let mut rest = self.option(code::RELAY_AGENT)?;
        while let [sub, len, tail @ ..] = rest {
            let len = *len as usize;
            let value = tail.get(..len)?;
            if *sub == code::LINK_SELECTION_SUB {
                if let [a, b, c, d] = value {
                    return Some(Ipv4Addr::new(*a, *b, *c, *d));
                }
            }
            rest = &tail[len..];
        }
        None
    }

    /// Client identifier (option 61), when present and not empty.
    pub fn client_id(&self) -> Option<&[u8]> {
        self.option(code::CLIENT_ID).filter(|v| !v.is_empty())
    }

    /// Parameter request list (option 55).
    pub fn requested_params(&self) -> &[u8] {
        self.option(code::PARAMETER_LIST).unwrap_or(&[])
    }

    /// Largest reply the client accepts, DHCP payload only (option 57 less the IP and UDP
    /// headers; at least 548, at most 1472).
    pub fn max_reply(&self) -> usize {
        match self.option(code::MAX_SIZE) {
            Some([hi, lo]) => (u16::from_be_bytes([*hi, *lo]) as usize)
                .saturating_sub(28)
                .clamp(DEFAULT_MAX_REPLY, MAX_REPLY),
            _ => DEFAULT_MAX_REPLY,
        }
    }

    /// Host name (option 12) as text.
    pub fn hostname(&self) -> Option<String> {
        let v = self.option(code::HOSTNAME)?;
        let text = String::from_utf8_lossy(v);
        let text = text.trim_end_matches('\0').trim();
        (!text.is_empty()).then(|| text.chars().take(255).collect())
    }

    /// True when the broadcast flag is set.
    pub fn broadcast(&self) -> bool {
        self.flags & 0x8000 != 0
    }
}

/// Options of a reply, in the order given; each carries whether it may be left out when the
/// reply would exceed the client's maximum message size.
#[derive(Debug, Clone, Default)]
pub struct ReplyOptions {
    entries: Vec<(u8, Vec<u8>, Importance)>,
}

/// How much an option matters when a reply must shrink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Importance {
    /// Sent although the client did not ask for it: dropped first.
    Unrequested,
    /// Asked for in option 55 (or needed by the vendor): dropped next.
    Requested,
    /// Message type, server id, lease times, subnet mask: never dropped.
    Essential,
}

impl ReplyOptions {
    /// Adds (or replaces) an option.
    pub fn set(&mut self, c: u8, value: Vec<u8>, importance: Importance) {
        self.entries.retain(|(code, _, _)| *code != c);
        self.entries.push((c, value, importance));
    }

    /// Number of options.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no option.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when the option is present.
    pub fn has(&self, c: u8) -> bool {
        self.entries.iter().any(|(code, _, _)| *code == c)
    }

    /// The value of an option.
    pub fn get(&self, c: u8) -> Option<&[u8]> {
        self.entries
            .iter()
            .find(|(code, _, _)| *code == c)
            .map(|(_, v, _)| v.as_slice())
    }
}

/// The fixed fields of a reply.
#[derive(Debug, Clone)]
pub struct ReplyHeader {
    /// Transaction id of the request.
    pub xid: u32,
    /// Flags of the request (the broadcast bit may be added).
    pub flags: u16,
    /// Client address (copied from the request for ACKs of RENEW/INFORM).
    pub ciaddr: Ipv4Addr,
    /// Address given.
    pub yiaddr: Ipv4Addr,
    /// Relay address of the request.
    pub giaddr: Ipv4Addr,
    /// `chaddr` of the request.
    pub chaddr: [u8; 16],
}

/// Encodes a reply no longer than `max_len`: options not asked for go first, then asked-for
/// ones, from the last added; `relay_info` (option 82) is echoed last, unchanged.
pub fn encode_reply(
    header: &ReplyHeader,
    msg_type: MsgType,
    options: &ReplyOptions,
    relay_info: Option<&[u8]>,
    max_len: usize,
) -> Option<Vec<u8>> {
    let mut kept = options.entries.clone();
    loop {
        let bytes = encode_once(header, msg_type, &kept, relay_info)?;
        if bytes.len() <= max_len {
            return Some(bytes);
        }
        // The least important, most recently added option goes.
        let victim = kept
            .iter()
            .enumerate()
            .filter(|(_, (_, _, imp))| *imp != Importance::Essential)
            .min_by_key(|(i, (_, _, imp))| (*imp, std::cmp::Reverse(*i)))
            .map(|(i, _)| i)?;
        kept.remove(victim);
    }
}

fn encode_once(
    header: &ReplyHeader,
    msg_type: MsgType,
    options: &[(u8, Vec<u8>, Importance)],
    relay_info: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let mut msg = Message::default();
    msg.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_xid(header.xid)
        .set_flags(Flags::from(header.flags))
        .set_ciaddr(header.ciaddr)
        .set_yiaddr(header.yiaddr)
        .set_giaddr(header.giaddr)
        .set_chaddr(&header.chaddr[..6]);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(msg_type.to_u8().into()));
    for (c, value, _) in options {
        if *c == code::MESSAGE_TYPE || *c == code::RELAY_AGENT || *c == 0 || *c == 255 {
            continue;
        }
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::from(*c),
            value.clone(),
        )));
    }
    let mut out = Vec::with_capacity(MIN_REPLY_LEN);
    msg.encode(&mut Encoder::new(&mut out)).ok()?;
    // Option 82 must be the last option (RFC 3046 §2.2): written by hand before the end.
    if let Some(info) = relay_info {
        if out.last() != Some(&255) {
            return None;
        }
        out.pop();
        for chunk in info.chunks(255) {
            out.push(code::RELAY_AGENT);
            out.push(chunk.len() as u8);
            out.extend_from_slice(chunk);
        }
        out.push(255);
    }
    if out.len() < MIN_REPLY_LEN {
        out.resize(MIN_REPLY_LEN, 0);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[28..34].copy_from_slice(&[0x80, 0x5e, 0xc0, 1, 2, 3]);
        p[236..240].copy_from_slice(&MAGIC);
        p
    }

    #[test]
    fn parses_options_joins_splits_and_reads_overload() {
        let mut p = base();
        p.extend_from_slice(&[
            53, 1, 1, 60, 3, b'y', b'e', b'a', 0, 60, 4, b'l', b'i', b'n', b'k',
        ]);
        p.extend_from_slice(&[52, 1, 1, 255]);
        // Option 55 carried in `file`.
        p[108..113].copy_from_slice(&[55, 2, 1, 66, 255]);
        let r = Request::parse(&p).unwrap();
        assert_eq!(r.msg_type, MsgType::Discover);
        assert_eq!(r.option(60), Some(&b"yealink"[..]));
        assert_eq!(r.requested_params(), &[1, 66]);
        assert_eq!(r.mac.to_string(), "80:5e:c0:01:02:03");
    }

    #[test]
    fn refuses_malformed_input() {
        assert_eq!(Request::parse(&[1, 2, 3]), Err(ParseError::Truncated(3)));
        let mut p = base();
        p[2] = 17;
        assert!(matches!(
            Request::parse(&p),
            Err(ParseError::Hardware { .. })
        ));
        let mut p = base();
        p[236] = 0;
        assert_eq!(Request::parse(&p), Err(ParseError::BadCookie));
        let mut p = base();
        p.extend_from_slice(&[53, 1, 1, 60, 200, b'x']);
        assert_eq!(Request::parse(&p), Err(ParseError::OptionOverrun(60)));
        let mut p = base();
        p.extend_from_slice(&[60, 1, b'x', 255]);
        assert_eq!(Request::parse(&p), Err(ParseError::NoMessageType));
        let mut p = base();
        p.extend_from_slice(&[53, 1, 2, 255]);
        assert!(matches!(
            Request::parse(&p),
            Err(ParseError::WrongDirection(MsgType::Offer))
        ));
        // An overload inside `file` does not loop back.
        let mut p = base();
        p.extend_from_slice(&[53, 1, 1, 52, 1, 3, 255]);
        p[108..111].copy_from_slice(&[52, 1, 3]);
        assert!(Request::parse(&p).is_ok());
        let mut p = base();
        p.extend_from_slice(&[53, 1, 1, 52, 1, 9, 255]);
        assert_eq!(Request::parse(&p), Err(ParseError::BadOverload));
    }

    #[test]
    fn oversized_joined_options_are_refused() {
        let mut p = base();
        p.extend_from_slice(&[53, 1, 1]);
        for _ in 0..5 {
            p.push(43);
            p.push(255);
            p.extend(std::iter::repeat_n(b'a', 255));
        }
        p.push(255);
        assert_eq!(Request::parse(&p), Err(ParseError::Oversized(43)));
    }

    #[test]
    fn reply_shrinks_to_the_maximum_size_and_keeps_option_82_last() {
        let header = ReplyHeader {
            xid: 7,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::new(10, 0, 0, 5),
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [1; 16],
        };
        let mut options = ReplyOptions::default();
        options.set(54, vec![10, 0, 0, 1], Importance::Essential);
        options.set(66, vec![b'u'; 200], Importance::Requested);
        options.set(160, vec![b'v'; 200], Importance::Unrequested);
        let big = encode_reply(
            &header,
            MsgType::Offer,
            &options,
            Some(&[1, 2, 0xaa, 0xbb]),
            1000,
        )
        .unwrap();
        assert!(big.windows(3).any(|w| w == [160, 200, b'v']));
        let small = encode_reply(
            &header,
            MsgType::Offer,
            &options,
            Some(&[1, 2, 0xaa, 0xbb]),
            548,
        )
        .unwrap();
        assert!(small.len() <= 548);
        assert!(!small.windows(3).any(|w| w == [160, 200, b'v']));
        assert!(small.windows(3).any(|w| w == [66, 200, b'u']));
        let end = small.iter().rposition(|b| *b == 255).unwrap();
        assert_eq!(&small[end - 6..=end], &[82, 4, 1, 2, 0xaa, 0xbb, 255]);
    }
}
