//! One out-of-dialog SIP NOTIFY over UDP (RFC 3265/6665): sent to the phone's address,
//! retransmitted on RFC 3261's timer E (0.5 s doubling, at most 4 s apart) until a final
//! response or the timeout; a 401/407 Digest challenge is answered once with the device's
//! credentials, in a second transaction (new branch, CSeq 2, same Call-ID and From tag).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::digest::{self, Credentials};
use super::SyncError;

/// Largest SIP response read; longer ones are cut (only the start line and headers matter).
const RECV_BUFFER: usize = 4096;
/// RFC 3261 T1 and T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// Header lines of a response read at most.
const MAX_HEADER_LINES: usize = 128;

/// Sends one NOTIFY with `event` to `target` and waits for its final response: `Ok` with the
/// 2xx code, else why not. A Digest challenge is answered once with `credentials`; each of
/// the two transactions gets `timeout`.
pub async fn notify(
    target: SocketAddr,
    event: &str,
    timeout: Duration,
    credentials: Option<&Credentials>,
) -> Result<u16, SyncError> {
    let bind: SocketAddr = match target.ip() {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).await?;
    // Connected: the kernel picks our source address (for Via and Contact) and drops
    // datagrams from anyone but the phone.
    socket.connect(target).await?;
    let local = socket.local_addr()?;
    let dialog = Dialog::new();
    let first = Request {
        target,
        local,
        event,
        dialog: &dialog,
        branch: new_branch(),
        cseq: 1,
        authorization: None,
    };
    let answer = exchange(&socket, &first, timeout).await?;
    let challenged = match answer.code {
        200..=299 => return Ok(answer.code),
        401 | 407 if !answer.challenges.is_empty() => answer,
        code => {
            return Err(SyncError::Refused {
                target,
                code,
                reason: answer.reason,
            })
        }
    };
    let code = challenged.code;
    let credentials = credentials.ok_or(SyncError::NoCredentials { target, code })?;
    let challenge = digest::choose(&challenged.challenges)
        .map_err(|source| SyncError::Challenge { target, source })?;
    let value = digest::authorization(
        &challenge,
        credentials,
        "NOTIFY",
        &request_uri(target),
        &crate::model::new_id()[..16],
    )
    .map_err(|source| SyncError::Challenge { target, source })?;
    let header = if code == 407 {
        "Proxy-Authorization"
    } else {
        "Authorization"
    };
    let second = Request {
        branch: new_branch(),
        cseq: 2,
        authorization: Some((header, value)),
        ..first
    };
    let answer = exchange(&socket, &second, timeout).await?;
    match answer.code {
        200..=299 => Ok(answer.code),
        401 | 407 => Err(SyncError::CredentialsRefused {
            target,
            code: answer.code,
        }),
        code => Err(SyncError::Refused {
            target,
            code,
            reason: answer.reason,
        }),
    }
}

/// One transaction: sends `request` on timer E until a final response to it or `timeout`.
async fn exchange(
    socket: &UdpSocket,
    request: &Request<'_>,
    timeout: Duration,
) -> Result<Response, SyncError> {
    let target = request.target;
    let text = request.to_string();
    let deadline = Instant::now() + timeout;
    let mut interval = T1;
    let mut next_send = Instant::now();
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(SyncError::Timeout(target, timeout.as_secs()));
        }
        if now >= next_send {
            match socket.send(text.as_bytes()).await {
                // An ICMP port unreachable from an earlier send: the phone may be booting.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                other => {
                    other?;
                }
            }
            next_send = now + interval;
            interval = (interval * 2).min(T2);
        }
        let wait = next_send.min(deadline) - now;
        let received = match tokio::time::timeout(wait, socket.recv(&mut buf)).await {
            Err(_elapsed) => continue,
            // ICMP port unreachable on a connected socket: nothing listens; retransmissions
            // may still find a phone that is booting.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(n)) => n,
        };
        let Some(response) = parse_response(&buf[..received], request.dialog, request.cseq) else {
            tracing::debug!(%target, "SIP datagram that answers no NOTIFY of ours ignored");
            continue;
        };
        if response.code >= 200 {
            return Ok(response);
        }
    }
}

/// What both requests of one NOTIFY share.
struct Dialog {
    tag: String,
    call_id: String,
}

impl Dialog {
    /// Fresh random tokens, cut from random record ids (UUID v4 hex).
    fn new() -> Dialog {
        Dialog {
            tag: crate::model::new_id()[..8].to_owned(),
            call_id: crate::model::new_id(),
        }
    }
}

/// A branch unique per transaction (RFC 3261's magic cookie first).
fn new_branch() -> String {
    format!("z9hG4bK{}", &crate::model::new_id()[..16])
}

/// `host` or `[host]` for a SIP URI.
fn uri_host(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

/// The Request-URI of a NOTIFY to `target` (also the digest's `uri`).
fn request_uri(target: SocketAddr) -> String {
    format!("sip:{}:{}", uri_host(target), target.port())
}

/// One NOTIFY request.
#[derive(Clone)]
struct Request<'a> {
    target: SocketAddr,
    local: SocketAddr,
    event: &'a str,
    dialog: &'a Dialog,
    branch: String,
    cseq: u32,
    /// Header name and value answering a challenge.
    authorization: Option<(&'static str, String)>,
}

impl std::fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let to = request_uri(self.target);
        let me = format!("{}:{}", uri_host(self.local), self.local.port());
        write!(
            f,
            "NOTIFY {to} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {me};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:provisiond@{me}>;tag={tag}\r\n\
             To: <{to}>\r\n\
             Call-ID: {call_id}@provisiond\r\n\
             CSeq: {cseq} NOTIFY\r\n\
             Contact: <sip:provisiond@{me}>\r\n\
             Event: {event}\r\n\
             Subscription-State: terminated;reason=noresource\r\n",
            branch = self.branch,
            tag = self.dialog.tag,
            call_id = self.dialog.call_id,
            cseq = self.cseq,
            event = self.event,
        )?;
        if let Some((name, value)) = &self.authorization {
            write!(f, "{name}: {value}\r\n")?;
        }
        write!(
            f,
            "User-Agent: provisiond/{}\r\nContent-Length: 0\r\n\r\n",
            env!("CARGO_PKG_VERSION")
        )
    }
}

/// A final or provisional response to one of our requests.
#[derive(Debug)]
struct Response {
    code: u16,
    reason: String,
    /// Values of `WWW-Authenticate` (401) or `Proxy-Authenticate` (407) headers.
    challenges: Vec<String>,
}

/// The response to our request `cseq` of `dialog` (same Call-ID, CSeq `<cseq> NOTIFY`);
/// `None` for anything else.
fn parse_response(data: &[u8], dialog: &Dialog, cseq: u32) -> Option<Response> {
    // Lossy: a Latin-1 byte in a Server header must not hide a 200 OK.
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split("\r\n");
    let start = lines.next()?;
    let rest = start
        .get(..8)
        .filter(|version| version.eq_ignore_ascii_case("SIP/2.0 "))
        .and_then(|_| start.get(8..))?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    let code: u16 = code.parse().ok().filter(|c| (100..700).contains(c))?;
    // Header lines, folded continuations (leading space or tab) joined to their header.
    let mut headers: Vec<String> = Vec::new();
    for line in lines.take_while(|l| !l.is_empty()).take(MAX_HEADER_LINES) {
        match headers.last_mut() {
            Some(last) if line.starts_with([' ', '\t']) => {
                last.push(' ');
                last.push_str(line.trim());
            }
            _ => headers.push(line.to_owned()),
        }
    }
    let wanted_challenge = match code {
        401 => "www-authenticate",
        407 => "proxy-authenticate",
        _ => "",
    };
    let call_id = format!("{}@provisiond", dialog.call_id);
    let mut call_id_ok = false;
    let mut cseq_ok = false;
    let mut challenges = Vec::new();
    for header in &headers {
        let Some((name, value)) = header.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "call-id" | "i" => call_id_ok = value == call_id,
            "cseq" => {
                let mut parts = value.split_whitespace();
                cseq_ok = parts.next().and_then(|n| n.parse::<u32>().ok()) == Some(cseq)
                    && parts
                        .next()
                        .is_some_and(|m| m.eq_ignore_ascii_case("NOTIFY"));
            }
            // A header with no name must not pass for the challenge header of a code that
            // has none (found by tests/fuzz.rs: `: x` in a 200).
            name if !wanted_challenge.is_empty() && name == wanted_challenge => {
                challenges.push(value.to_owned())
            }
            _ => {}
        }
    }
    (call_id_ok && cseq_ok).then(|| Response {
        code,
        // The phone's words reach logs and the API: control characters (a lone LF, terminal
        // escapes) would forge log lines, so they are shown as `?`.
        reason: reason
            .trim()
            .chars()
            .take(100)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect(),
        challenges,
    })
}

/// Entry points for `tests/fuzz.rs`: the response parser with a fixed dialog.
#[doc(hidden)]
pub mod fuzz_api {
    /// What [`super::parse_response`] keeps of `data` for the request `cseq` of the dialog
    /// whose Call-ID is `call_id@provisiond`: (code, reason, challenge header values).
    pub fn response(data: &[u8], call_id: &str, cseq: u32) -> Option<(u16, String, Vec<String>)> {
        let dialog = super::Dialog {
            tag: "fuzz".into(),
            call_id: call_id.to_owned(),
        };
        super::parse_response(data, &dialog, cseq).map(|r| (r.code, r.reason, r.challenges))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_of_a_reason_phrase_never_reach_the_log() {
        let d = dialog();
        let data = b"SIP/2.0 486 Busy\nForged: line\x1b[31m\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n";
        let r = parse_response(data, &d, 1).expect("our response");
        assert_eq!(r.code, 486);
        assert_eq!(r.reason, "Busy?Forged: line?[31m");
    }

    fn dialog() -> Dialog {
        Dialog {
            tag: "t".into(),
            call_id: "c0ffee".into(),
        }
    }

    fn request<'a>(dialog: &'a Dialog, cseq: u32) -> Request<'a> {
        Request {
            target: "10.0.0.5:5060".parse().unwrap(),
            local: "10.0.0.2:40000".parse().unwrap(),
            event: "check-sync;reboot=false",
            dialog,
            branch: "z9hG4bKabc".into(),
            cseq,
            authorization: None,
        }
    }

    #[test]
    fn the_request_names_the_event_and_the_phone() {
        let d = dialog();
        let text = request(&d, 1).to_string();
        assert!(
            text.starts_with("NOTIFY sip:10.0.0.5:5060 SIP/2.0\r\n"),
            "{text}"
        );
        for line in [
            "Via: SIP/2.0/UDP 10.0.0.2:40000;branch=z9hG4bKabc;rport",
            "Event: check-sync;reboot=false",
            "CSeq: 1 NOTIFY",
            "Call-ID: c0ffee@provisiond",
            "Content-Length: 0",
        ] {
            assert!(text.contains(&format!("{line}\r\n")), "{line} in {text}");
        }
        assert!(!text.contains("Authorization"));
        assert!(text.ends_with("\r\n\r\n"));
        let mut second = request(&d, 2);
        second.authorization = Some(("Proxy-Authorization", "Digest x".into()));
        let text = second.to_string();
        assert!(text.contains("\r\nCSeq: 2 NOTIFY\r\n"), "{text}");
        assert!(
            text.contains("\r\nProxy-Authorization: Digest x\r\n"),
            "{text}"
        );
    }

    #[test]
    fn only_responses_to_our_request_count() {
        let d = dialog();
        let status = |data: &[u8], cseq| parse_response(data, &d, cseq).map(|r| r.code);
        let ok = b"SIP/2.0 200 OK\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n";
        assert_eq!(status(ok, 1), Some(200));
        assert_eq!(
            status(ok, 2),
            None,
            "answers the first request, not the second"
        );
        let latin1 = b"sip/2.0 200 OK\r\nServer: T\xe9l\xe9phone\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n";
        assert_eq!(status(latin1, 1), Some(200));
        let compact = b"SIP/2.0 481 Subscription does not exist\r\ni: c0ffee@provisiond\r\ncseq: 1 notify\r\n\r\n";
        let response = parse_response(compact, &d, 1).unwrap();
        assert_eq!(
            (response.code, response.reason.as_str()),
            (481, "Subscription does not exist")
        );
        for other in [
            &b"SIP/2.0 200 OK\r\nCall-ID: other@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n"[..],
            b"SIP/2.0 200 OK\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 OPTIONS\r\n\r\n",
            b"NOTIFY sip:x SIP/2.0\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n",
            b"SIP/2.0 99 Odd\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n",
            b"SIP/2.0 200 OK\r\nCall-ID: c0ffee@provisiond\r\nCSeq: x NOTIFY\r\n\r\n",
            b"\xff\xfe",
            b"",
        ] {
            assert!(status(other, 1).is_none(), "{other:?}");
        }
    }

    #[test]
    fn challenges_are_read_from_the_header_of_the_status_folded_or_not() {
        let d = dialog();
        let text = b"SIP/2.0 401 Unauthorized\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 NOTIFY\r\n\
WWW-Authenticate: Digest realm=\"a\",\r\n  nonce=\"n1\"\r\nwww-authenticate: Digest realm=\"b\", nonce=\"n2\"\r\n\
Proxy-Authenticate: Digest realm=\"p\", nonce=\"n3\"\r\n\r\n";
        let response = parse_response(text, &d, 1).unwrap();
        assert_eq!(
            response.challenges,
            [
                "Digest realm=\"a\", nonce=\"n1\"",
                "Digest realm=\"b\", nonce=\"n2\""
            ]
        );
        let text = b"SIP/2.0 407 Proxy Authentication Required\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 2 NOTIFY\r\n\
WWW-Authenticate: Digest realm=\"a\", nonce=\"n1\"\r\nProxy-Authenticate: Digest realm=\"p\", nonce=\"n3\"\r\n\r\n";
        let response = parse_response(text, &d, 2).unwrap();
        assert_eq!(response.challenges, ["Digest realm=\"p\", nonce=\"n3\""]);
    }
}
