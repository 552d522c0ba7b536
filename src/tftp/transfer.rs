//! One read transfer on its own UDP port: load the file, negotiate, send windows of DATA,
//! retransmit on timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::limits::Slot;
use super::options::{self, Negotiated};
use super::packet::{self, ErrorCode, Mode, ReadRequest, Reply};
use super::{FileError, FileSource};

/// A transfer without any acknowledged progress for this long is abandoned.
const MAX_STALL: Duration = Duration::from_secs(60);
/// No transfer lasts longer than this (a 256 MiB file at 300 kB/s still fits).
const MAX_TRANSFER_TIME: Duration = Duration::from_secs(15 * 60);

/// Back-off never waits longer than this, unless the base timeout itself is longer: long
/// enough to ride out a congested link, short enough that a vanished phone frees its slot soon.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Back-off stops doubling at this multiple of the base timeout.
const MAX_BACKOFF_FACTOR: u32 = 4;
/// Clients only send ACKs and ERRORs; anything longer is cut, which is harmless.
const RECV_BUFFER: usize = 1024;

/// Everything a transfer needs, handed over by the listener.
pub(super) struct Job {
    /// Port of this transfer (our TID).
    pub socket: UdpSocket,
    /// The client's address and port (its TID).
    pub peer: SocketAddr,
    /// The request, with the cleaned file name.
    pub request: ReadRequest,
    /// Where the file comes from.
    pub source: Arc<dyn FileSource>,
    /// Retransmission timeout when the client asks for none.
    pub default_timeout: Duration,
    /// Retransmissions of one packet before giving up.
    pub retries: u8,
    /// Held until the transfer ends, so the limits count it.
    pub slot: Slot,
}

/// Serves one read request to the end (complete, abandoned or refused).
pub(super) async fn run(job: Job) {
    let Job {
        socket,
        peer,
        request,
        source,
        default_timeout,
        retries,
        slot: _slot,
    } = job;
    let data = match load(source, peer, &request).await {
        Ok(data) => data,
        Err((code, message)) => {
            // The source's access log records refusals (rate-limited per client); a second
            // line per refused request would double what a flood costs.
            tracing::debug!(code = code as u16, "refused: {message}");
            send(&socket, peer, &packet::encode_error(code, &message)).await;
            return;
        }
    };
    let negotiated = options::negotiate(&request.options, data.len() as u64);
    tracing::debug!(
        size = data.len(),
        blksize = negotiated.blksize,
        window = negotiated.window,
        options = ?negotiated.oack,
        "sending"
    );
    let base = negotiated
        .timeout_secs
        .map_or(default_timeout, |secs| Duration::from_secs(secs.into()));
    let cap = base.max((base * MAX_BACKOFF_FACTOR).min(MAX_BACKOFF));
    let mut sender = Sender::new(socket, peer, data, &negotiated);
    let mut timeout = base;
    let mut attempt = 0u8;
    let started = Instant::now();
    let mut progressed = started;
    loop {
        // Whatever the negotiated timers, a transfer that stalls or drags on gives its slot
        // back: a slow or hostile client cannot hold the server's transfer limit.
        if progressed.elapsed() > MAX_STALL || started.elapsed() > MAX_TRANSFER_TIME {
            tracing::warn!(
                acked_blocks = sender.acked,
                "abandoned: stalled or too long"
            );
            return;
        }
        sender.transmit().await;
        match sender.wait(Instant::now() + timeout).await {
            Wait::Progress if sender.complete() => {
                tracing::info!(bytes = sender.data.len(), "sent");
                return;
            }
            Wait::Progress => {
                attempt = 0;
                timeout = base;
                progressed = Instant::now();
            }
            Wait::Timeout if attempt >= retries => {
                tracing::warn!(
                    acked_blocks = sender.acked,
                    "abandoned: no answer after {retries} retransmissions"
                );
                return;
            }
            Wait::Timeout => {
                attempt += 1;
                timeout = (timeout * 2).min(cap);
                tracing::debug!(attempt, next_timeout = ?timeout, "timeout, retransmitting");
            }
            Wait::PeerError { code, message } => {
                tracing::info!(code, "client ended the transfer: {message}");
                return;
            }
            Wait::Failed(e) => {
                tracing::warn!("abandoned: receive failed: {e}");
                return;
            }
        }
    }
}

/// Calls the source on a blocking thread, and encodes netascii there too (it walks the file).
async fn load(
    source: Arc<dyn FileSource>,
    peer: SocketAddr,
    request: &ReadRequest,
) -> Result<Arc<[u8]>, (ErrorCode, String)> {
    let filename = request.filename.clone();
    let mode = request.mode;
    let loaded = tokio::task::spawn_blocking(move || {
        source.read(peer, &filename).map(|data| match mode {
            Mode::Octet => data,
            Mode::Netascii => packet::netascii(&data).into(),
        })
    })
    .await;
    match loaded {
        Ok(Ok(data)) => Ok(data),
        Ok(Err(FileError::NotFound)) => Err((ErrorCode::FileNotFound, "file not found".into())),
        Ok(Err(FileError::AccessViolation)) => {
            Err((ErrorCode::AccessViolation, "access violation".into()))
        }
        Ok(Err(FileError::Other(message))) => Err((ErrorCode::NotDefined, message)),
        Err(e) => {
            tracing::error!("file source failed: {e}");
            Err((ErrorCode::NotDefined, "internal error".into()))
        }
    }
}

/// Sends one datagram; a failure is treated like a lost packet, which the timeout recovers.
async fn send(socket: &UdpSocket, to: SocketAddr, packet: &[u8]) {
    if let Err(e) = socket.send_to(packet, to).await {
        tracing::debug!(%to, "send failed: {e}");
    }
}

/// How waiting for an ACK ended.
enum Wait {
    /// The client acknowledged something new.
    Progress,
    /// Nothing new before the deadline.
    Timeout,
    /// The client sent an ERROR.
    PeerError { code: u16, message: String },
    /// The socket failed.
    Failed(std::io::Error),
}

/// Sending side of the sliding window (RFC 7440; a window of 1 is plain RFC 1350).
///
/// Blocks are counted from 1 in a `u64`; the wire carries that count modulo 65536, so a file
/// of more than 65535 blocks rolls the block number over to 0, as tftp-hpa does (clients that
/// expect 1 after 65535 cannot fetch such files from either server).
struct Sender {
    socket: UdpSocket,
    peer: SocketAddr,
    data: Arc<[u8]>,
    blksize: usize,
    window: u64,
    /// Blocks in the file; the last one is shorter than `blksize`, possibly empty.
    total: u64,
    /// Highest block the client acknowledged (0: none).
    acked: u64,
    /// Highest block sent.
    sent: u64,
    /// OACK still waiting for its ACK 0.
    oack: Option<Vec<u8>>,
    out: Vec<u8>,
    incoming: Vec<u8>,
}

impl Sender {
    fn new(socket: UdpSocket, peer: SocketAddr, data: Arc<[u8]>, n: &Negotiated) -> Sender {
        let blksize = n.blksize;
        Sender {
            socket,
            peer,
            total: (data.len() / blksize) as u64 + 1,
            data,
            blksize,
            window: u64::from(n.window),
            acked: 0,
            sent: 0,
            oack: (!n.oack.is_empty()).then(|| packet::encode_oack(&n.oack)),
            out: Vec::with_capacity(4 + blksize),
            incoming: vec![0; RECV_BUFFER],
        }
    }

    fn complete(&self) -> bool {
        self.oack.is_none() && self.acked == self.total
    }

    /// Sends the OACK, or the window that follows the last acknowledged block.
    async fn transmit(&mut self) {
        if let Some(oack) = &self.oack {
            send(&self.socket, self.peer, oack).await;
            return;
        }
        let last = self.total.min(self.acked + self.window);
        for block in self.acked + 1..=last {
            // Block counts stay far below usize::MAX: they come from a slice length.
            let start = (block - 1) as usize * self.blksize;
            let end = self.data.len().min(start + self.blksize);
            // Truncation to 16 bits is the wire's rollover.
            packet::encode_data(&mut self.out, block as u16, &self.data[start..end]);
            send(&self.socket, self.peer, &self.out).await;
        }
        self.sent = last;
    }

    /// Waits until the client acknowledges something new, or the deadline.
    ///
    /// Duplicate and stale ACKs are dropped without sending anything: answering them is what
    /// makes the Sorcerer's Apprentice bug (RFC 1123 §4.2.3.1) double every packet. Only the
    /// timeout retransmits. Packets from strangers don't move the deadline either.
    async fn wait(&mut self, deadline: Instant) -> Wait {
        loop {
            let received =
                tokio::time::timeout_at(deadline, self.socket.recv_from(&mut self.incoming)).await;
            let (len, from) = match received {
                Err(_) => return Wait::Timeout,
                Ok(Ok(received)) => received,
                // ICMP errors reported on the socket: the timeout decides, not one error.
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    tracing::debug!("receive: {e}");
                    continue;
                }
                Ok(Err(e)) => return Wait::Failed(e),
            };
            let packet = &self.incoming[..len];
            if from != self.peer {
                self.stranger(from, packet).await;
                continue;
            }
            match packet::parse_reply(packet) {
                Reply::Ack(block) => {
                    if self.on_ack(block) {
                        return Wait::Progress;
                    }
                }
                Reply::Error { code, message } => return Wait::PeerError { code, message },
                Reply::Other => tracing::debug!(len, "ignoring unexpected packet from the client"),
            }
        }
    }

    /// Applies an ACK; true when it acknowledges blocks not acknowledged before.
    fn on_ack(&mut self, block: u16) -> bool {
        if self.oack.is_some() {
            if block == 0 {
                self.oack = None;
                return true;
            }
            tracing::debug!(block, "ignoring ACK while waiting for the ACK of the OACK");
            return false;
        }
        // The window never exceeds 65535 blocks, so the distance on the 16-bit wire is exact.
        let ahead = u64::from(block.wrapping_sub(self.acked as u16));
        if ahead >= 1 && ahead <= self.sent - self.acked {
            self.acked += ahead;
            true
        } else {
            tracing::trace!(block, "ignoring duplicate or stale ACK");
            false
        }
    }

    /// RFC 1350 §4: tell the stranger, keep the transfer going.
    async fn stranger(&self, from: SocketAddr, packet: &[u8]) {
        tracing::debug!(%from, "packet from an unknown transfer ID");
        if matches!(packet::parse_reply(packet), Reply::Error { .. }) {
            return;
        }
        let error = packet::encode_error(ErrorCode::UnknownTid, "unknown transfer ID");
        send(&self.socket, from, &error).await;
    }
}
