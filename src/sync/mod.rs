//! SIP NOTIFY resynchronisation: tells a phone to fetch its files again with an out-of-dialog
//! NOTIFY (RFC 3265/6665) carrying its plugin's event (`check-sync` for most vendors), sent
//! over UDP to the phone's address and `[sync] sip_port`, retransmitted on RFC 3261's
//! timer E (0.5 s doubling, at most 4 s apart) until a final response or `[sync]
//! timeout_secs`.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

/// Why a phone is resynchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A provisioning code made it somebody's phone.
    Redeemed,
    /// A job or a change of its category.
    Job,
    /// A config of its chain changed.
    ConfigChanged,
    /// Reset to the code form.
    Reset,
    /// An administrator asked.
    Manual,
}

/// Why a phone was not resynchronised.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The socket could not be used.
    #[error("SIP socket: {0}")]
    Io(#[from] std::io::Error),
    /// No final response in time.
    #[error("no answer from {0} within {1} s")]
    Timeout(SocketAddr, u64),
    /// The phone answered with an error status.
    #[error("{target} answered {code} {reason}")]
    Refused {
        /// The phone.
        target: SocketAddr,
        /// SIP status code.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// Largest SIP response read; longer ones are cut (only the start line and headers matter).
const RECV_BUFFER: usize = 4096;
/// RFC 3261 T1 and T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

/// Sends one NOTIFY with `event` to `target` and waits for its final response: `Ok` with the
/// 2xx code, else why not.
pub async fn notify(target: SocketAddr, event: &str, timeout: Duration) -> Result<u16, SyncError> {
    let bind: SocketAddr = match target.ip() {
        IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).await?;
    // Connected: the kernel picks our source address (for Via and Contact) and drops
    // datagrams from anyone but the phone.
    socket.connect(target).await?;
    let local = socket.local_addr()?;
    let tokens = Tokens::new();
    let request = request(target, local, event, &tokens);
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
            match socket.send(request.as_bytes()).await {
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
        let Some(status) = response_status(&buf[..received], &tokens) else {
            tracing::debug!(%target, "SIP datagram that answers no NOTIFY of ours ignored");
            continue;
        };
        match status.code {
            100..=199 => continue,
            200..=299 => return Ok(status.code),
            code => {
                return Err(SyncError::Refused {
                    target,
                    code,
                    reason: status.reason,
                })
            }
        }
    }
}

/// The random parts of one request.
struct Tokens {
    branch: String,
    tag: String,
    call_id: String,
}

impl Tokens {
    /// Fresh random tokens, cut from random record ids (UUID v4 hex).
    fn new() -> Tokens {
        let (branch, tag) = (crate::model::new_id(), crate::model::new_id());
        Tokens {
            // RFC 3261's magic cookie marks a branch as unique per transaction.
            branch: format!("z9hG4bK{}", &branch[..16]),
            tag: tag[..8].to_owned(),
            call_id: crate::model::new_id(),
        }
    }
}

/// `host` or `[host]` for a SIP URI.
fn uri_host(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }
}

fn request(target: SocketAddr, local: SocketAddr, event: &str, t: &Tokens) -> String {
    let to = format!("sip:{}:{}", uri_host(target), target.port());
    let me = format!("{}:{}", uri_host(local), local.port());
    format!(
        "NOTIFY {to} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {me};branch={branch};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:provisiond@{me}>;tag={tag}\r\n\
         To: <{to}>\r\n\
         Call-ID: {call_id}@provisiond\r\n\
         CSeq: 1 NOTIFY\r\n\
         Contact: <sip:provisiond@{me}>\r\n\
         Event: {event}\r\n\
         Subscription-State: terminated;reason=noresource\r\n\
         User-Agent: provisiond/{version}\r\n\
         Content-Length: 0\r\n\r\n",
        branch = t.branch,
        tag = t.tag,
        call_id = t.call_id,
        version = env!("CARGO_PKG_VERSION"),
    )
}

struct Status {
    code: u16,
    reason: String,
}

/// The status of a response to our request (same Call-ID, CSeq `1 NOTIFY`); `None` for
/// anything else.
fn response_status(data: &[u8], t: &Tokens) -> Option<Status> {
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
    let mut call_id_ok = false;
    let mut cseq_ok = false;
    for line in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "call-id" | "i" => call_id_ok = value == format!("{}@provisiond", t.call_id),
            "cseq" => {
                let mut parts = value.split_whitespace();
                cseq_ok = parts.next() == Some("1")
                    && parts
                        .next()
                        .is_some_and(|m| m.eq_ignore_ascii_case("NOTIFY"));
            }
            _ => {}
        }
    }
    (call_id_ok && cseq_ok).then(|| Status {
        code,
        reason: reason.trim().chars().take(100).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        Tokens {
            branch: "z9hG4bKabc".into(),
            tag: "t".into(),
            call_id: "c0ffee".into(),
        }
    }

    #[test]
    fn the_request_names_the_event_and_the_phone() {
        let text = request(
            "10.0.0.5:5060".parse().unwrap(),
            "10.0.0.2:40000".parse().unwrap(),
            "check-sync;reboot=false",
            &tokens(),
        );
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
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn only_responses_to_our_request_count() {
        let t = tokens();
        let ok = b"SIP/2.0 200 OK\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n";
        assert_eq!(response_status(ok, &t).map(|s| s.code), Some(200));
        let latin1 = b"sip/2.0 200 OK\r\nServer: T\xe9l\xe9phone\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n";
        assert_eq!(response_status(latin1, &t).map(|s| s.code), Some(200));
        let compact = b"SIP/2.0 481 Subscription does not exist\r\ni: c0ffee@provisiond\r\ncseq: 1 notify\r\n\r\n";
        let status = response_status(compact, &t).unwrap();
        assert_eq!(
            (status.code, status.reason.as_str()),
            (481, "Subscription does not exist")
        );
        for other in [
            &b"SIP/2.0 200 OK\r\nCall-ID: other@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n"[..],
            b"SIP/2.0 200 OK\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 OPTIONS\r\n\r\n",
            b"NOTIFY sip:x SIP/2.0\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n",
            b"SIP/2.0 99 Odd\r\nCall-ID: c0ffee@provisiond\r\nCSeq: 1 NOTIFY\r\n\r\n",
            b"\xff\xfe",
            b"",
        ] {
            assert!(response_status(other, &t).is_none(), "{other:?}");
        }
    }
}
