//! Boot storm: N phones powered on at once, each doing what a Yealink does at boot: a full
//! DORA through a relay (option 60 `yealink`, asking for option 66), then one HTTP fetch of its
//! MAC file with its User-Agent, from its leased address when that address is on loopback.
//!
//! One UDP socket for every phone (replies dispatched by transaction id), retransmission as a
//! client does (RFC 2131 4.1: after `timeout_ms`, 4 s by default, doubling each time; `tries`
//! transmissions at most; a NAK restarts with a DISCOVER); one TCP connection per fetch. A phone is configured when its fetch is answered 200; a 404 is a
//! refusal (a real phone then boots unconfigured until its next provisioning interval). The
//! same `--run` is the same phones: run it twice for the known phones rebooting (power cut).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use dhcproto::v4::{DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, UdpSocket};
use tokio::sync::mpsc;

use super::{check_target, percentiles};
use crate::cli::StormBenchArgs;
use crate::model::Mac;

/// Largest answer read from a fetch; a MAC file is a few KiB.
const MAX_ANSWER: u64 = 1 << 20;
/// A fetch unanswered this long counts as failed (the daemon's own request timeout is 30 s).
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// What a reply says, as far as a phone cares.
#[derive(Debug, Clone, Copy)]
struct Reply {
    chaddr: [u8; 6],
    kind: Option<MessageType>,
    yiaddr: Ipv4Addr,
    server: Option<Ipv4Addr>,
}

/// Phones waiting for replies, by transaction id.
type Waiting = Arc<Mutex<HashMap<u32, mpsc::UnboundedSender<Reply>>>>;

/// How one phone's boot went.
#[derive(Debug, Default)]
struct Boot {
    /// First DISCOVER to ACK.
    dhcp: Option<Duration>,
    /// ACK to the fetch's answer.
    fetch: Option<Duration>,
    /// First DISCOVER to a 200, and when that was after the storm began.
    configured: Option<(Duration, Duration)>,
    /// The fetch's status when not 200.
    refused: Option<u16>,
    /// The fetch failed (connection, timeout, unreadable answer).
    fetch_error: bool,
    retransmissions: u32,
    naks: u32,
}

/// The MAC of phone `i` of run `run`: `80:5e:c0:<run>:<i>` (a Yealink OUI, so that the
/// file name and the User-Agent identify it).
fn phone_mac(run: u8, i: u32) -> [u8; 6] {
    let b = i.to_be_bytes();
    [0x80, 0x5e, 0xc0, run, b[2], b[3]]
}

fn request(kind: MessageType, xid: u32, mac: &[u8; 6], giaddr: Ipv4Addr) -> Message {
    let unspecified = Ipv4Addr::UNSPECIFIED;
    let mut msg = Message::new(unspecified, unspecified, unspecified, giaddr, mac);
    msg.set_xid(xid).set_hops(1);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ClassIdentifier(b"yealink".to_vec()));
    opts.insert(DhcpOption::ParameterRequestList(
        [1u8, 3, 6, 15, 42, 51, 54, 58, 59, 66]
            .into_iter()
            .map(OptionCode::from)
            .collect(),
    ));
    msg
}

fn decode(datagram: &[u8]) -> Option<(u32, Reply)> {
    let msg = Message::decode(&mut Decoder::new(datagram)).ok()?;
    let chaddr = msg.chaddr().get(..6)?.try_into().ok()?;
    let server = match msg.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    };
    Some((
        msg.xid(),
        Reply {
            chaddr,
            kind: msg.opts().msg_type(),
            yiaddr: msg.yiaddr(),
            server,
        },
    ))
}

/// Hands every reply to the phone waiting for its xid.
async fn dispatch(socket: Arc<UdpSocket>, waiting: Waiting) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, _)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Some((xid, reply)) = decode(&buf[..n]) else {
            continue;
        };
        let to = waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&xid)
            .cloned();
        if let Some(to) = to {
            let _ = to.send(reply);
        }
    }
}

struct Phone<'a> {
    args: &'a StormBenchArgs,
    socket: &'a UdpSocket,
    mac: [u8; 6],
    xid: u32,
    replies: mpsc::UnboundedReceiver<Reply>,
    boot: Boot,
}

impl Phone<'_> {
    /// Sends `msg` until a reply of one of `kinds` for this phone comes; `None` after `tries`.
    async fn ask(&mut self, msg: &Message, kinds: &[MessageType]) -> anyhow::Result<Option<Reply>> {
        let mut bytes = Vec::with_capacity(300);
        msg.encode(&mut Encoder::new(&mut bytes))?;
        let mut wait = Duration::from_millis(self.args.timeout_ms.max(1));
        for attempt in 0..self.args.tries.max(1) {
            if attempt > 0 {
                self.boot.retransmissions += 1;
                // RFC 2131 4.1: the delay doubles with each retransmission.
                wait *= 2;
            }
            // A full socket buffer is a lost datagram: the timer resends it.
            let _ = self.socket.send_to(&bytes, self.args.dhcp).await;
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, self.replies.recv()).await {
                    Ok(Some(reply)) => {
                        let wanted = reply.kind.is_some_and(|k| kinds.contains(&k));
                        if reply.chaddr == self.mac && wanted {
                            return Ok(Some(reply));
                        }
                    }
                    Ok(None) => return Ok(None),
                    Err(_elapsed) => break,
                }
            }
        }
        Ok(None)
    }

    /// DISCOVER, OFFER, REQUEST, ACK; the leased address.
    async fn dora(&mut self) -> anyhow::Result<Option<Ipv4Addr>> {
        let giaddr = self.args.giaddr;
        for _ in 0..self.args.tries.max(1) {
            let discover = request(MessageType::Discover, self.xid, &self.mac, giaddr);
            let Some(offer) = self.ask(&discover, &[MessageType::Offer]).await? else {
                return Ok(None);
            };
            let mut select = request(MessageType::Request, self.xid, &self.mac, giaddr);
            select
                .opts_mut()
                .insert(DhcpOption::RequestedIpAddress(offer.yiaddr));
            if let Some(server) = offer.server {
                select
                    .opts_mut()
                    .insert(DhcpOption::ServerIdentifier(server));
            }
            let answer = self
                .ask(&select, &[MessageType::Ack, MessageType::Nak])
                .await?;
            match answer {
                Some(ack) if ack.kind == Some(MessageType::Ack) => return Ok(Some(ack.yiaddr)),
                Some(_) => self.boot.naks += 1,
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// The MAC file with the phone's User-Agent, from `from` when it is a loopback address;
    /// the status.
    async fn fetch(&self, from: Ipv4Addr) -> anyhow::Result<u16> {
        let socket = match self.args.http {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if from.is_loopback() && self.args.http.is_ipv4() {
            socket.bind(SocketAddr::from((from, 0)))?;
        }
        let mac = Mac::new(self.mac);
        let mut stream = socket.connect(self.args.http).await?;
        let head = format!(
            "GET {}/{}.cfg HTTP/1.1\r\nHost: {}\r\nUser-Agent: Yealink SIP-T54W 96.86.0.70 {mac}\r\nConnection: close\r\n\r\n",
            self.args.prefix,
            mac.to_bare(),
            self.args.http
        );
        stream.write_all(head.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(MAX_ANSWER).read_to_end(&mut answer).await?;
        let status = answer
            .split(|&b| b == b' ')
            .nth(1)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse().ok())
            .context("no status line in the answer")?;
        Ok(status)
    }

    async fn power_on(mut self, storm: Instant) -> anyhow::Result<Boot> {
        let t0 = Instant::now();
        let Some(leased) = self.dora().await? else {
            return Ok(self.boot);
        };
        let acked = Instant::now();
        self.boot.dhcp = Some(acked - t0);
        match tokio::time::timeout(FETCH_TIMEOUT, self.fetch(leased)).await {
            Ok(Ok(200)) => {
                let now = Instant::now();
                self.boot.fetch = Some(now - acked);
                self.boot.configured = Some((now - t0, now - storm));
            }
            Ok(Ok(status)) => {
                self.boot.fetch = Some(acked.elapsed());
                self.boot.refused = Some(status);
            }
            Ok(Err(_)) | Err(_) => self.boot.fetch_error = true,
        }
        Ok(self.boot)
    }
}

fn xid_base() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Boots `phones` phones at once (or `concurrency` at a time) and prints the figures.
pub async fn run(args: &StormBenchArgs) -> anyhow::Result<()> {
    check_target(&args.dhcp)?;
    check_target(&args.http)?;
    anyhow::ensure!(
        (1..=65_536).contains(&args.phones),
        "--phones: 1 to 65,536 (the MACs of a run are 80:5e:c0:<run>:<2 bytes>)"
    );
    let bind: SocketAddr = match args.dhcp.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => (ip, 0).into(),
        _ => (Ipv4Addr::UNSPECIFIED, 0).into(),
    };
    let std_socket = std::net::UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    // Room for the replies of a whole storm.
    let _ = socket2::SockRef::from(&std_socket).set_recv_buffer_size(8 << 20);
    std_socket.set_nonblocking(true)?;
    let socket = Arc::new(UdpSocket::from_std(std_socket)?);
    let waiting: Waiting = Arc::default();
    let dispatcher = tokio::spawn(dispatch(Arc::clone(&socket), Arc::clone(&waiting)));
    let concurrency = args.concurrency.unwrap_or(args.phones as usize).max(1);
    println!(
        "dhcp {}  http {}  phones {} (run {})  at once {}  giaddr {}  timeout {} ms x {}",
        args.dhcp,
        args.http,
        args.phones,
        args.run,
        concurrency,
        args.giaddr,
        args.timeout_ms,
        args.tries
    );
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let base = xid_base();
    let args = Arc::new(args.clone());
    let storm = Instant::now();
    let mut phones = tokio::task::JoinSet::new();
    for i in 0..args.phones {
        let (socket, waiting, gate, args) = (
            Arc::clone(&socket),
            Arc::clone(&waiting),
            Arc::clone(&gate),
            Arc::clone(&args),
        );
        phones.spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let xid = base.wrapping_add(i);
            let (to, replies) = mpsc::unbounded_channel();
            waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(xid, to);
            let phone = Phone {
                args: &args,
                socket: &socket,
                mac: phone_mac(args.run, i),
                xid,
                replies,
                boot: Boot::default(),
            };
            let boot = phone.power_on(storm).await;
            waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&xid);
            boot
        });
    }
    let mut boots = Vec::with_capacity(args.phones as usize);
    while let Some(done) = phones.join_next().await {
        boots.push(done.context("phone task")??);
    }
    dispatcher.abort();
    report(&boots);
    Ok(())
}

fn report(boots: &[Boot]) {
    let mut per_phone: Vec<Duration> = boots
        .iter()
        .filter_map(|b| b.configured.map(|c| c.0))
        .collect();
    let all_done = boots.iter().filter_map(|b| b.configured.map(|c| c.1)).max();
    let mut dhcp: Vec<Duration> = boots.iter().filter_map(|b| b.dhcp).collect();
    let mut fetch: Vec<Duration> = boots.iter().filter_map(|b| b.fetch).collect();
    let configured = per_phone.len();
    let refused = boots.iter().filter(|b| b.refused.is_some()).count();
    let no_lease = boots.iter().filter(|b| b.dhcp.is_none()).count();
    let fetch_errors = boots.iter().filter(|b| b.fetch_error).count();
    let (p50, p99) = percentiles(&mut per_phone);
    let (d50, d99) = percentiles(&mut dhcp);
    let (f50, f99) = percentiles(&mut fetch);
    let everyone = if configured == boots.len() {
        "all configured"
    } else {
        "last configured"
    };
    println!(
        "storm    {configured} configured of {}  refused {refused}  no lease {no_lease}  fetch errors {fetch_errors}",
        boots.len()
    );
    println!(
        "         {everyone} in {:.3} s  per phone p50 {:.1} ms  p99 {:.1} ms",
        all_done.unwrap_or_default().as_secs_f64(),
        ms(p50),
        ms(p99)
    );
    println!(
        "         DORA p50 {:.1} ms  p99 {:.1} ms  fetch p50 {:.1} ms  p99 {:.1} ms  retransmissions {}  naks {}",
        ms(d50),
        ms(d99),
        ms(f50),
        ms(f99),
        boots.iter().map(|b| u64::from(b.retransmissions)).sum::<u64>(),
        boots.iter().map(|b| u64::from(b.naks)).sum::<u64>()
    );
    let mut statuses: Vec<u16> = boots.iter().filter_map(|b| b.refused).collect();
    statuses.sort_unstable();
    statuses.dedup();
    if !statuses.is_empty() {
        println!("         refusal statuses {statuses:?}");
    }
}
