//! DHCP load: distinct clients each doing a full DORA (DISCOVER, OFFER, REQUEST, ACK) through a
//! simulated relay agent. Every request carries `giaddr`, which selects the pool unless option
//! 82's link-selection sub-option (`--link-selection`) does; off port 67 provisiond answers the
//! sender's address and port, on port 67 a server answers `giaddr:67` (bind the generator
//! there with `--bind`).
//!
//! One thread and one socket: `concurrency` exchanges in flight, replies matched to their
//! client by transaction id (`xid` = a random base + the client's index), a message without an
//! answer retransmitted after `timeout_ms`, `tries` times at most; a NAK restarts the exchange
//! with a DISCOVER (as a client does; dnsmasq, which holds no offers, NAKs concurrent clients
//! offered the same address), `tries` times at most.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use dhcproto::v4::relay::{RelayAgentInformation, RelayInfo};
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::{check_target, percentiles};
use crate::cli::DhcpBenchArgs;

/// The MAC of client `i`: locally administered, unicast.
fn mac(i: usize) -> [u8; 6] {
    let b = (i as u32).to_be_bytes();
    [0x02, 0xd7, b[0], b[1], b[2], b[3]]
}

/// Where a client is in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Discovering,
    Requesting,
    Done,
    Failed,
}

#[derive(Debug, Clone, Copy)]
struct Client {
    phase: Phase,
    /// First DISCOVER sent.
    started: Option<Instant>,
    /// Transmissions of the current message.
    tries: u32,
    /// Transmissions in all: a timer is stale when this changed since it was set.
    sends: u32,
    /// NAKs received; each one restarts the exchange with a DISCOVER, as a client does.
    naks: u32,
    /// What the REQUEST asks for (option 50) and whom (option 54).
    offered: Ipv4Addr,
    server: Option<Ipv4Addr>,
}

/// A message to send for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outgoing {
    client: usize,
    xid: u32,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Discover,
    Request {
        requested: Ipv4Addr,
        server: Option<Ipv4Addr>,
    },
}

/// What a reply says, as far as the generator cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reply {
    xid: u32,
    chaddr: [u8; 6],
    kind: Option<MessageType>,
    yiaddr: Ipv4Addr,
    server: Option<Ipv4Addr>,
}

#[derive(Debug, Default)]
struct Stats {
    offers: u64,
    acks: u64,
    naks: u64,
    /// Messages left unanswered for `timeout` (each one retransmitted or given up).
    timeouts: u64,
    /// Clients that gave up after `tries` transmissions.
    given_up: u64,
    /// Clients that gave up after `tries` NAKs.
    nak_failed: u64,
    /// Replies matching no waiting exchange: late duplicates after a retransmission, other
    /// xids, wrong chaddr or message type.
    stray: u64,
    /// Datagrams that are not decodable DHCP messages.
    undecodable: u64,
    send_errors: u64,
    /// First DISCOVER to ACK, per completed client.
    latencies: Vec<Duration>,
}

/// The exchanges of every client: pure state, fed with the current time.
struct Exchanges {
    xid_base: u32,
    clients: Vec<Client>,
    /// Next client to start.
    next: usize,
    in_flight: usize,
    concurrency: usize,
    timeout: Duration,
    tries: u32,
    /// (deadline, client, its `sends` then); the timeout is constant, so deadlines are in order.
    timers: VecDeque<(Instant, usize, u32)>,
    stats: Stats,
}

impl Exchanges {
    fn new(
        clients: usize,
        concurrency: usize,
        timeout: Duration,
        tries: u32,
        xid_base: u32,
    ) -> Self {
        let idle = Client {
            phase: Phase::Waiting,
            started: None,
            tries: 0,
            sends: 0,
            naks: 0,
            offered: Ipv4Addr::UNSPECIFIED,
            server: None,
        };
        Exchanges {
            xid_base,
            clients: vec![idle; clients],
            next: 0,
            in_flight: 0,
            concurrency: concurrency.max(1),
            timeout,
            tries: tries.max(1),
            timers: VecDeque::new(),
            stats: Stats {
                latencies: Vec::with_capacity(clients),
                ..Stats::default()
            },
        }
    }

    fn xid(&self, client: usize) -> u32 {
        self.xid_base.wrapping_add(client as u32)
    }

    /// The client a transaction id belongs to.
    fn client_of(&self, xid: u32) -> Option<usize> {
        let i = xid.wrapping_sub(self.xid_base) as usize;
        (i < self.clients.len()).then_some(i)
    }

    fn finished(&self) -> bool {
        self.next == self.clients.len() && self.in_flight == 0
    }

    /// The current message of `client`, with its retransmission timer armed.
    fn transmit(&mut self, client: usize, now: Instant) -> Outgoing {
        let c = &mut self.clients[client];
        c.tries += 1;
        c.sends += 1;
        self.timers.push_back((now + self.timeout, client, c.sends));
        let kind = match c.phase {
            Phase::Requesting => Kind::Request {
                requested: c.offered,
                server: c.server,
            },
            _ => Kind::Discover,
        };
        Outgoing {
            client,
            xid: self.xid(client),
            kind,
        }
    }

    /// The next new client's DISCOVER, while fewer than `concurrency` are in flight.
    fn start(&mut self, now: Instant) -> Option<Outgoing> {
        if self.in_flight >= self.concurrency || self.next >= self.clients.len() {
            return None;
        }
        let client = self.next;
        self.next += 1;
        self.in_flight += 1;
        let c = &mut self.clients[client];
        c.phase = Phase::Discovering;
        c.started = Some(now);
        Some(self.transmit(client, now))
    }

    fn finish(&mut self, client: usize, phase: Phase) {
        self.clients[client].phase = phase;
        self.in_flight -= 1;
    }

    /// Applies a reply; returns the REQUEST that answers an OFFER.
    fn on_reply(&mut self, reply: &Reply, now: Instant) -> Option<Outgoing> {
        let Some(client) = self
            .client_of(reply.xid)
            .filter(|&i| reply.chaddr == mac(i))
        else {
            self.stats.stray += 1;
            return None;
        };
        match (self.clients[client].phase, reply.kind) {
            (Phase::Discovering, Some(MessageType::Offer)) => {
                self.stats.offers += 1;
                let c = &mut self.clients[client];
                c.phase = Phase::Requesting;
                c.tries = 0;
                c.offered = reply.yiaddr;
                c.server = reply.server;
                Some(self.transmit(client, now))
            }
            (Phase::Requesting, Some(MessageType::Ack)) => {
                self.stats.acks += 1;
                if let Some(started) = self.clients[client].started {
                    self.stats
                        .latencies
                        .push(now.saturating_duration_since(started));
                }
                self.finish(client, Phase::Done);
                None
            }
            (Phase::Requesting, Some(MessageType::Nak)) => {
                self.stats.naks += 1;
                let c = &mut self.clients[client];
                c.naks += 1;
                if c.naks >= self.tries {
                    self.stats.nak_failed += 1;
                    self.finish(client, Phase::Failed);
                    return None;
                }
                c.phase = Phase::Discovering;
                c.tries = 0;
                Some(self.transmit(client, now))
            }
            _ => {
                self.stats.stray += 1;
                None
            }
        }
    }

    /// When the oldest live timer fires.
    fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&(deadline, client, sends)) = self.timers.front() {
            if self.live(client, sends) {
                return Some(deadline);
            }
            self.timers.pop_front();
        }
        None
    }

    fn live(&self, client: usize, sends: u32) -> bool {
        let c = &self.clients[client];
        c.sends == sends && matches!(c.phase, Phase::Discovering | Phase::Requesting)
    }

    /// Retransmits what timed out by `now`; clients out of tries give up.
    fn on_timeouts(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut out = Vec::new();
        while let Some(&(deadline, client, sends)) = self.timers.front() {
            if deadline > now {
                break;
            }
            self.timers.pop_front();
            if !self.live(client, sends) {
                continue;
            }
            self.stats.timeouts += 1;
            if self.clients[client].tries >= self.tries {
                self.stats.given_up += 1;
                self.finish(client, Phase::Failed);
            } else {
                out.push(self.transmit(client, now));
            }
        }
        out
    }
}

/// How every request is relayed and what it says besides its exchange.
#[derive(Debug, Clone)]
struct Relay {
    giaddr: Ipv4Addr,
    /// Option 82 with the link-selection sub-option (RFC 3527).
    link: Option<Ipv4Addr>,
    /// Option 60.
    vendor: Option<String>,
}

/// The datagram of `out`: a request relayed by `relay.giaddr` (hops 1).
fn encode(out: &Outgoing, relay: &Relay) -> anyhow::Result<Vec<u8>> {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new(
        unspecified,
        unspecified,
        unspecified,
        relay.giaddr,
        &mac(out.client),
    );
    msg.set_xid(out.xid).set_hops(1);
    let opts = msg.opts_mut();
    match out.kind {
        Kind::Discover => {
            opts.insert(DhcpOption::MessageType(MessageType::Discover));
        }
        Kind::Request { requested, server } => {
            opts.insert(DhcpOption::MessageType(MessageType::Request));
            opts.insert(DhcpOption::RequestedIpAddress(requested));
            if let Some(server) = server {
                opts.insert(DhcpOption::ServerIdentifier(server));
            }
        }
    }
    opts.insert(DhcpOption::ParameterRequestList(
        [1u8, 3, 6, 15, 42, 51, 54, 58, 59, 66]
            .into_iter()
            .map(OptionCode::from)
            .collect(),
    ));
    if let Some(class) = &relay.vendor {
        opts.insert(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()));
    }
    if let Some(link) = relay.link {
        let mut info = RelayAgentInformation::default();
        info.insert(RelayInfo::LinkSelection(link));
        opts.insert(DhcpOption::RelayAgentInformation(info));
    }
    let mut buf = Vec::with_capacity(300);
    msg.encode(&mut Encoder::new(&mut buf))?;
    Ok(buf)
}

/// What the generator needs of a server's datagram; `None` when it is not a DHCP message.
fn decode(datagram: &[u8]) -> Option<Reply> {
    let msg = Message::decode(&mut Decoder::new(datagram)).ok()?;
    let chaddr = msg.chaddr().get(..6)?.try_into().ok()?;
    let server = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    Some(Reply {
        xid: msg.xid(),
        chaddr,
        kind: msg.opts().msg_type(),
        yiaddr: msg.yiaddr(),
        server,
    })
}

fn xid_base() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

/// Runs the DORA of `clients` clients, `concurrency` at a time, and prints the figures.
pub fn run(args: &DhcpBenchArgs) -> anyhow::Result<()> {
    check_target(&args.target)?;
    let bind = args.bind.unwrap_or_else(|| match args.target {
        SocketAddr::V4(t) if t.ip().is_loopback() => SocketAddr::from((*t.ip(), 0)),
        _ => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
    });
    let socket = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    // Room for the replies of a whole window.
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
    println!(
        "target {}  clients {}  in flight {}  giaddr {}{}  timeout {} ms x {}",
        args.target,
        args.clients,
        args.concurrency,
        args.giaddr,
        args.link_selection
            .map(|l| format!("  link-selection {l}"))
            .unwrap_or_default(),
        args.timeout_ms,
        args.tries
    );
    let mut ex = Exchanges::new(
        args.clients as usize,
        args.concurrency,
        Duration::from_millis(args.timeout_ms.max(1)),
        args.tries,
        xid_base(),
    );
    let relay = Relay {
        giaddr: args.giaddr,
        link: args.link_selection,
        vendor: args.vendor_class.clone(),
    };
    let send = |out: &Outgoing, stats: &mut Stats| -> anyhow::Result<()> {
        let datagram = encode(out, &relay)?;
        if socket.send_to(&datagram, args.target).is_err() {
            // Counted; the retransmission timer is armed all the same.
            stats.send_errors += 1;
        }
        Ok(())
    };
    let mut buf = [0u8; 2048];
    let started = Instant::now();
    let mut last_ack = started;
    while !ex.finished() {
        let now = Instant::now();
        while let Some(out) = ex.start(now) {
            send(&out, &mut ex.stats)?;
        }
        let wait = ex.next_deadline().map_or(Duration::from_millis(100), |d| {
            d.saturating_duration_since(now)
        });
        socket.set_read_timeout(Some(wait.max(Duration::from_micros(100))))?;
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => match decode(&buf[..n]) {
                Some(reply) => {
                    let acks = ex.stats.acks;
                    let now = Instant::now();
                    if let Some(out) = ex.on_reply(&reply, now) {
                        send(&out, &mut ex.stats)?;
                    }
                    if ex.stats.acks > acks {
                        last_ack = now;
                    }
                }
                None => ex.stats.undecodable += 1,
            },
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e).context("receive"),
        }
        for out in ex.on_timeouts(Instant::now()) {
            send(&out, &mut ex.stats)?;
        }
    }
    report(&mut ex.stats, last_ack.duration_since(started));
    Ok(())
}

fn report(stats: &mut Stats, elapsed: Duration) {
    let (p50, p99) = percentiles(&mut stats.latencies);
    let done = stats.latencies.len();
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9);
    println!(
        "dora     {done:>8} done {:>6} failed {rate:>10.0} DORA/s  p50 {:>8.3} ms  p99 {:>8.3} ms",
        stats.nak_failed + stats.given_up,
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
    );
    println!(
        "replies  offers {}  acks {}  naks {} (gave up {})  timeouts {} (gave up {})  stray {}  undecodable {}  send errors {}",
        stats.offers,
        stats.acks,
        stats.naks,
        stats.nak_failed,
        stats.timeouts,
        stats.given_up,
        stats.stray,
        stats.undecodable,
        stats.send_errors
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 1);

    fn reply(ex: &Exchanges, client: usize, kind: MessageType, yiaddr: [u8; 4]) -> Reply {
        Reply {
            xid: ex.xid(client),
            chaddr: mac(client),
            kind: Some(kind),
            yiaddr: yiaddr.into(),
            server: Some(SERVER),
        }
    }

    #[test]
    fn dora_matched_by_xid_across_the_wrap() {
        let t0 = Instant::now();
        let mut ex = Exchanges::new(3, 2, Duration::from_secs(1), 3, u32::MAX - 1);
        let a = ex.start(t0).unwrap();
        let b = ex.start(t0).unwrap();
        assert_eq!(ex.start(t0), None, "two in flight at most");
        assert_eq!((a.xid, b.xid), (u32::MAX - 1, u32::MAX));
        assert_eq!(ex.client_of(0), Some(2), "client 2's xid wrapped to 0");
        assert_eq!(ex.client_of(1), None);
        assert_eq!(ex.client_of(u32::MAX - 2), None);

        // A reply with client 0's xid but client 1's MAC is not client 0's.
        let mut wrong = reply(&ex, 0, MessageType::Offer, [10, 214, 0, 10]);
        wrong.chaddr = mac(1);
        assert_eq!(ex.on_reply(&wrong, t0), None);
        assert_eq!(ex.stats.stray, 1);

        let request = ex.on_reply(&reply(&ex, 1, MessageType::Offer, [10, 214, 0, 11]), t0);
        assert_eq!(
            request.map(|o| o.kind),
            Some(Kind::Request {
                requested: Ipv4Addr::new(10, 214, 0, 11),
                server: Some(SERVER)
            })
        );
        // A duplicate OFFER (the DISCOVER was retransmitted) changes nothing.
        assert_eq!(
            ex.on_reply(&reply(&ex, 1, MessageType::Offer, [10, 214, 0, 11]), t0),
            None
        );
        let t1 = t0 + Duration::from_millis(7);
        ex.on_reply(&reply(&ex, 1, MessageType::Ack, [10, 214, 0, 11]), t1);
        assert_eq!(ex.stats.latencies, vec![Duration::from_millis(7)]);
        assert_eq!((ex.stats.offers, ex.stats.acks, ex.stats.stray), (1, 1, 2));
        // The freed slot goes to the third client.
        assert_eq!(ex.start(t1).map(|o| (o.client, o.xid)), Some((2, 0)));
    }

    #[test]
    fn retransmits_then_gives_up_and_ignores_stale_timers() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut ex = Exchanges::new(2, 2, second, 2, 7);
        ex.start(t0).unwrap();
        ex.start(t0).unwrap();
        // Client 1 is offered at once: its DISCOVER timer is stale, its REQUEST timer is live.
        let t_offer = t0 + Duration::from_millis(500);
        ex.on_reply(
            &reply(&ex, 1, MessageType::Offer, [10, 214, 0, 12]),
            t_offer,
        );
        assert_eq!(ex.next_deadline(), Some(t0 + second));
        assert!(ex.on_timeouts(t0 + second / 2).is_empty());

        let again = ex.on_timeouts(t0 + second);
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].client, again[0].kind), (0, Kind::Discover));
        assert_eq!(ex.stats.timeouts, 1);

        let again = ex.on_timeouts(t_offer + second);
        assert_eq!(again.len(), 1);
        assert!(matches!(again[0].kind, Kind::Request { .. }));

        // Second transmissions unanswered: both clients give up (2 tries).
        assert!(ex.on_timeouts(t0 + 3 * second).is_empty());
        assert_eq!((ex.stats.timeouts, ex.stats.given_up), (4, 2));
        assert!(ex.finished());
        assert_eq!(ex.next_deadline(), None);
    }

    #[test]
    fn nak_restarts_the_exchange_until_tries_are_spent() {
        let t0 = Instant::now();
        let mut ex = Exchanges::new(1, 1, Duration::from_secs(1), 2, 0);
        ex.start(t0).unwrap();
        ex.on_reply(&reply(&ex, 0, MessageType::Offer, [10, 214, 0, 10]), t0);
        let again = ex.on_reply(&reply(&ex, 0, MessageType::Nak, [0, 0, 0, 0]), t0);
        assert_eq!(again.map(|o| o.kind), Some(Kind::Discover));
        ex.on_reply(&reply(&ex, 0, MessageType::Offer, [10, 214, 0, 11]), t0);
        assert_eq!(
            ex.on_reply(&reply(&ex, 0, MessageType::Nak, [0, 0, 0, 0]), t0),
            None
        );
        assert_eq!((ex.stats.naks, ex.stats.nak_failed), (2, 1));
        assert!(ex.finished());
        assert!(ex.on_timeouts(t0 + Duration::from_secs(5)).is_empty());
    }

    #[test]
    fn packets_round_trip_through_dhcproto() {
        let out = Outgoing {
            client: 0x01020304,
            xid: 42,
            kind: Kind::Request {
                requested: Ipv4Addr::new(10, 214, 3, 4),
                server: Some(SERVER),
            },
        };
        let relay = Relay {
            giaddr: Ipv4Addr::new(10, 213, 40, 2),
            link: Some(Ipv4Addr::new(10, 214, 0, 1)),
            vendor: Some("yealink".into()),
        };
        let bytes = encode(&out, &relay).unwrap();
        let msg = Message::decode(&mut Decoder::new(&bytes)).unwrap();
        assert_eq!(msg.giaddr(), Ipv4Addr::new(10, 213, 40, 2));
        assert_eq!(msg.hops(), 1);
        let Some(DhcpOption::RelayAgentInformation(info)) =
            msg.opts().get(OptionCode::RelayAgentInformation)
        else {
            panic!("no option 82");
        };
        assert_eq!(
            info.get(dhcproto::v4::relay::RelayCode::LinkSelection),
            Some(&RelayInfo::LinkSelection(Ipv4Addr::new(10, 214, 0, 1)))
        );
        assert_eq!(msg.chaddr(), &[0x02, 0xd7, 1, 2, 3, 4]);
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(
            msg.opts().get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(
                10, 214, 3, 4
            )))
        );
        let parsed = decode(&bytes).unwrap();
        assert_eq!((parsed.xid, parsed.server), (42, Some(SERVER)));
    }
}
