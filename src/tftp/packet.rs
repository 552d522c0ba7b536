//! Wire format: parsing what clients send, building what the server sends (RFC 1350, 2347),
//! and the netascii encoding.

pub(super) const RRQ: u16 = 1;
pub(super) const WRQ: u16 = 2;
pub(super) const DATA: u16 = 3;
pub(super) const ACK: u16 = 4;
pub(super) const ERROR: u16 = 5;
pub(super) const OACK: u16 = 6;

/// Longest error message put on the wire: some embedded clients read into 512+4 byte buffers.
const MAX_ERROR_MESSAGE: usize = 200;

/// TFTP error codes the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: see the message.
    NotDefined = 0,
    /// 1.
    FileNotFound = 1,
    /// 2.
    AccessViolation = 2,
    /// 4.
    IllegalOperation = 4,
    /// 5.
    UnknownTid = 5,
}

/// Transfer mode of a read request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes as they are.
    Octet,
    /// LF → CR LF, CR → CR NUL.
    Netascii,
}

/// A read request as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    /// File name, not yet cleaned.
    pub filename: String,
    /// Transfer mode.
    pub mode: Mode,
    /// Options (RFC 2347) in the client's order and spelling; not yet validated.
    pub options: Vec<(String, String)>,
}

/// A datagram received on the listening port.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// RRQ.
    Read(ReadRequest),
    /// WRQ, however malformed: it is refused anyway.
    Write,
    /// ERROR: never answered, so that two confused peers cannot ping-pong errors.
    Error,
    /// DATA, ACK or OACK: belong to a transfer port, not here.
    Misdirected(u16),
}

/// Why a request could not be understood; the text goes back to the client in an ERROR 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// A datagram received on a transfer port.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// ACK of a block (its wire number).
    Ack(u16),
    /// The client gives up.
    Error {
        /// Error code.
        code: u16,
        /// Message, lossily decoded.
        message: String,
    },
    /// Anything else (another opcode, a runt).
    Other,
}

fn opcode(packet: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.first()?, *packet.get(1)?]))
}

/// Splits NUL-terminated strings off the front of a packet body.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn next_field(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == 0)?;
        let (field, rest) = self.rest.split_at(end);
        self.rest = &rest[1..];
        Some(field)
    }
}

/// Parses a datagram that arrived on the listening port.
pub fn parse_request(packet: &[u8]) -> Result<Request, Malformed> {
    let op = opcode(packet).ok_or(Malformed("packet too short"))?;
    match op {
        RRQ => parse_rrq(&packet[2..]).map(Request::Read),
        WRQ => Ok(Request::Write),
        ERROR => Ok(Request::Error),
        DATA | ACK | OACK => Ok(Request::Misdirected(op)),
        _ => Err(Malformed("unknown opcode")),
    }
}

fn parse_rrq(body: &[u8]) -> Result<ReadRequest, Malformed> {
    let mut fields = Fields { rest: body };
    let filename = fields
        .next_field()
        .ok_or(Malformed("file name not NUL-terminated"))?;
    let filename = std::str::from_utf8(filename)
        .map_err(|_| Malformed("file name is not UTF-8"))?
        .to_owned();
    let mode = fields
        .next_field()
        .ok_or(Malformed("mode not NUL-terminated"))?;
    let mode = if mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else {
        return Err(Malformed("unsupported transfer mode"));
    };
    let mut options = Vec::new();
    // Options are read leniently: a bad option costs the client that option, not the file.
    while let Some(name) = fields.next_field() {
        if name.is_empty() {
            // Some boot ROMs pad their requests with NULs.
            continue;
        }
        let Some(value) = fields.next_field() else {
            tracing::debug!("ignoring option without a value");
            break;
        };
        match (std::str::from_utf8(name), std::str::from_utf8(value)) {
            (Ok(name), Ok(value)) => options.push((name.to_owned(), value.to_owned())),
            _ => tracing::debug!("ignoring option that is not UTF-8"),
        }
    }
    if !fields.rest.is_empty() {
        tracing::debug!("ignoring unterminated bytes after the options");
    }
    Ok(ReadRequest {
        filename,
        mode,
        options,
    })
}

/// Parses a datagram that arrived on a transfer port.
pub fn parse_reply(packet: &[u8]) -> Reply {
    match opcode(packet) {
        Some(ACK) if packet.len() >= 4 => Reply::Ack(u16::from_be_bytes([packet[2], packet[3]])),
        Some(ERROR) if packet.len() >= 4 => {
            let text = &packet[4..];
            let text = text
                .iter()
                .position(|&b| b == 0)
                .map_or(text, |end| &text[..end]);
            let message: String = String::from_utf8_lossy(text)
                .chars()
                .take(MAX_ERROR_MESSAGE)
                .collect();
            Reply::Error {
                code: u16::from_be_bytes([packet[2], packet[3]]),
                message,
            }
        }
        _ => Reply::Other,
    }
}

/// Builds an ERROR packet; the message is reduced to short printable ASCII (netascii).
pub fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut packet = Vec::with_capacity(5 + message.len().min(MAX_ERROR_MESSAGE));
    packet.extend_from_slice(&ERROR.to_be_bytes());
    packet.extend_from_slice(&(code as u16).to_be_bytes());
    packet.extend(message.chars().take(MAX_ERROR_MESSAGE).map(|c| {
        if c.is_ascii_graphic() || c == ' ' {
            c as u8
        } else {
            b'?'
        }
    }));
    packet.push(0);
    packet
}

/// Builds an OACK packet.
pub fn encode_oack(options: &[(String, String)]) -> Vec<u8> {
    let mut packet = OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        packet.extend_from_slice(name.as_bytes());
        packet.push(0);
        packet.extend_from_slice(value.as_bytes());
        packet.push(0);
    }
    packet
}

/// Builds a DATA packet into `packet`, reusing its allocation.
pub(super) fn encode_data(packet: &mut Vec<u8>, block: u16, payload: &[u8]) {
    packet.clear();
    packet.extend_from_slice(&DATA.to_be_bytes());
    packet.extend_from_slice(&block.to_be_bytes());
    packet.extend_from_slice(payload);
}

/// Encodes bytes as netascii: LF → CR LF, CR → CR NUL, everything else unchanged.
pub(super) fn netascii(data: &[u8]) -> Vec<u8> {
    let extra = data.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    let mut out = Vec::with_capacity(data.len() + extra);
    for &byte in data {
        match byte {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            _ => out.push(byte),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrq_with_options_and_padding() {
        let packet = b"\x00\x01/a.cfg\x00NetASCII\x00blksize\x001428\x00tsize\x000\x00\x00\x00";
        let Ok(Request::Read(request)) = parse_request(packet) else {
            panic!("not parsed");
        };
        assert_eq!(request.filename, "/a.cfg");
        assert_eq!(request.mode, Mode::Netascii);
        assert_eq!(
            request.options,
            vec![
                ("blksize".to_owned(), "1428".to_owned()),
                ("tsize".to_owned(), "0".to_owned())
            ]
        );
    }

    #[test]
    fn malformed_requests() {
        for (packet, why) in [
            (&b"\x00"[..], "packet too short"),
            (b"\x00\x09x\x00octet\x00", "unknown opcode"),
            (b"\x00\x01name", "file name not NUL-terminated"),
            (b"\x00\x01name\x00octet", "mode not NUL-terminated"),
            (b"\x00\x01name\x00mail\x00", "unsupported transfer mode"),
            (b"\x00\x01\xff\xfe\x00octet\x00", "file name is not UTF-8"),
        ] {
            assert_eq!(parse_request(packet), Err(Malformed(why)), "{packet:?}");
        }
        assert_eq!(parse_request(b"\x00\x02"), Ok(Request::Write));
        assert_eq!(
            parse_request(b"\x00\x04\x00\x01"),
            Ok(Request::Misdirected(ACK))
        );
    }

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b"\x00\x04\xff\xff"), Reply::Ack(65535));
        assert_eq!(parse_reply(b"\x00\x04\x00"), Reply::Other);
        assert_eq!(
            parse_reply(b"\x00\x05\x00\x08no\x00"),
            Reply::Error {
                code: 8,
                message: "no".into()
            }
        );
    }

    #[test]
    fn error_message_is_netascii() {
        assert_eq!(
            encode_error(ErrorCode::NotDefined, "bad\0\u{e9}"),
            b"\x00\x05\x00\x00bad??\x00"
        );
    }

    #[test]
    fn netascii_encoding() {
        assert_eq!(netascii(b"a\nb\r\nc\rd"), b"a\r\nb\r\0\r\nc\r\0d");
    }
}
