//! Option negotiation: RFC 2347 (framework), 2348 (blksize), 2349 (timeout, tsize),
//! 7440 (windowsize).

/// Block size without options (RFC 1350).
pub const DEFAULT_BLKSIZE: usize = 512;
/// Smallest block size RFC 2348 allows.
const MIN_BLKSIZE: u64 = 8;
/// Largest block size RFC 2348 allows; 65464 + 4 (TFTP) + 8 (UDP) + 40 (IPv6) still fits the
/// 65535-byte limit of one UDP datagram over IPv4 and IPv6, so no further clamp is needed.
pub const MAX_BLKSIZE: usize = 65464;
/// Longest retransmission timeout a client may ask for, in seconds.
pub const MAX_CLIENT_TIMEOUT: u8 = 10;

/// What the transfer runs with, and the OACK that tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// Payload bytes per DATA packet.
    pub blksize: usize,
    /// DATA packets sent before waiting for an ACK.
    pub window: u16,
    /// Retransmission timeout the client asked for, in seconds.
    pub timeout_secs: Option<u8>,
    /// Accepted options in the client's order and spelling; empty means no OACK.
    pub oack: Vec<(String, String)>,
}

/// Accepts the options the server understands, with values in range, for a file of `size` bytes
/// (as transferred, after any netascii conversion).
///
/// Unknown options and out-of-range values are left out of the OACK, which RFC 2347 reads as
/// "not accepted", rather than failing the transfer with an ERROR 8: a phone that asks for an
/// odd block size still gets its file at 512. A value above a maximum is lowered instead, as
/// RFC 2348 and RFC 7440 allow the server to answer with a smaller value.
pub fn negotiate(requested: &[(String, String)], size: u64) -> Negotiated {
    let mut negotiated = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        window: 1,
        timeout_secs: None,
        oack: Vec::new(),
    };
    let mut seen: Vec<&'static str> = Vec::new();
    for (name, value) in requested {
        let Some(known) = ["blksize", "timeout", "tsize", "windowsize"]
            .into_iter()
            .find(|known| name.eq_ignore_ascii_case(known))
        else {
            tracing::debug!(option = ?name, "ignoring unknown option");
            continue;
        };
        if seen.contains(&known) {
            tracing::debug!(option = ?name, "ignoring repeated option");
            continue;
        }
        seen.push(known);
        if known == "tsize" {
            // In a read request the value means nothing (RFC 2349 has clients send 0), and
            // atftp 0.8 sends "enable": any value asks for the size.
            negotiated.oack.push((name.clone(), size.to_string()));
            continue;
        }
        let Ok(number) = value.trim().parse::<u64>() else {
            tracing::debug!(option = ?name, value = ?value, "ignoring non-numeric option value");
            continue;
        };
        let answer = match known {
            "blksize" if number >= MIN_BLKSIZE => {
                let blksize = usize::try_from(number).map_or(MAX_BLKSIZE, |n| n.min(MAX_BLKSIZE));
                negotiated.blksize = blksize;
                blksize.to_string()
            }
            // RFC 2349 allows up to 255 s; longer than MAX_CLIENT_TIMEOUT would let one client
            // hold a transfer slot for many minutes, so such a request is not acknowledged
            // and the server's own timeout applies.
            "timeout" => match u8::try_from(number) {
                Ok(secs) if (1..=MAX_CLIENT_TIMEOUT).contains(&secs) => {
                    negotiated.timeout_secs = Some(secs);
                    secs.to_string()
                }
                _ => {
                    tracing::debug!(
                        value = number,
                        "ignoring timeout outside 1-{MAX_CLIENT_TIMEOUT}"
                    );
                    continue;
                }
            },
            "windowsize" => match u16::try_from(number) {
                Ok(window) if window >= 1 => {
                    negotiated.window = window;
                    window.to_string()
                }
                _ => {
                    tracing::debug!(value = number, "ignoring windowsize outside 1-65535");
                    continue;
                }
            },
            _ => {
                tracing::debug!(option = ?name, value = number, "ignoring out-of-range option");
                continue;
            }
        };
        negotiated.oack.push((name.clone(), answer));
    }
    negotiated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_requested_means_no_oack() {
        let n = negotiate(&[], 10);
        assert_eq!((n.blksize, n.window, n.timeout_secs), (512, 1, None));
        assert!(n.oack.is_empty());
    }

    #[test]
    fn accepted_options_echo_in_order() {
        let n = negotiate(
            &opts(&[
                ("TSIZE", "0"),
                ("foo", "bar"),
                ("blksize", "1428"),
                ("windowsize", "8"),
                ("timeout", "3"),
            ]),
            1234,
        );
        assert_eq!((n.blksize, n.window, n.timeout_secs), (1428, 8, Some(3)));
        assert_eq!(
            n.oack,
            opts(&[
                ("TSIZE", "1234"),
                ("blksize", "1428"),
                ("windowsize", "8"),
                ("timeout", "3")
            ])
        );
    }

    #[test]
    fn out_of_range_values() {
        let n = negotiate(
            &opts(&[("blksize", "7"), ("timeout", "0"), ("windowsize", "65536")]),
            1,
        );
        assert_eq!((n.blksize, n.window, n.timeout_secs), (512, 1, None));
        assert!(n.oack.is_empty());
        let n = negotiate(&opts(&[("blksize", "99999999999999999999999")]), 1);
        assert!(n.oack.is_empty());
        let n = negotiate(&opts(&[("tsize", "enable")]), 42);
        assert_eq!(n.oack, opts(&[("tsize", "42")]));
        let n = negotiate(&opts(&[("blksize", "70000"), ("blksize", "9")]), 1);
        assert_eq!(n.blksize, MAX_BLKSIZE);
        assert_eq!(n.oack, opts(&[("blksize", "65464")]));
    }

    #[test]
    fn long_client_timeouts_are_not_acknowledged() {
        let n = negotiate(&opts(&[("timeout", "10")]), 100);
        assert_eq!(n.timeout_secs, Some(10));
        let n = negotiate(&opts(&[("timeout", "11")]), 100);
        assert_eq!(n.timeout_secs, None);
        let n = negotiate(&opts(&[("timeout", "255")]), 100);
        assert_eq!(n.timeout_secs, None);
    }
}
