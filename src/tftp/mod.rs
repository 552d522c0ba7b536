//! Read-only TFTP server for phones.
//!
//! Protocol: RFC 1350 read requests in `octet` and `netascii` mode, option negotiation
//! (RFC 2347) with `blksize` (RFC 2348, 8–65464), `timeout` and `tsize` (RFC 2349) and
//! `windowsize` (RFC 7440). Write requests are refused with ERROR 2.
//!
//! The listener only parses requests, applies the limits (`max_transfers` in all,
//! `max_per_client` per source IP; over them: ERROR 0 "server busy") and answers what it
//! refuses. Each accepted request gets its own UDP port (same IP as the listener, port 0) and
//! task, which asks the [`FileSource`] on a blocking thread and sends the file.
//!
//! Behaviours worth knowing:
//! - a file of more than 65535 blocks rolls the block number over to 0 after 65535, as
//!   tftp-hpa does;
//! - `tsize` in netascii mode is the size after conversion, i.e. the bytes actually sent;
//! - retransmission happens only on timeout (never on a duplicate ACK: Sorcerer's Apprentice);
//!   the timeout doubles after each retransmission, up to four times the base (at most 60 s
//!   unless the base is longer), and the transfer is abandoned after `retries` of them;
//! - the file name loses one leading `/`; names with a backslash are refused (ERROR 2); the
//!   rest of path safety is the source's job;
//! - malformed requests get ERROR 4, datagrams shorter than an opcode are dropped, ERROR
//!   packets are never answered (two confused peers could otherwise bounce errors forever).

mod limits;
mod options;
mod packet;
mod transfer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::Instrument;

use limits::Limits;
use packet::{ErrorCode, Malformed, Request};

use crate::ratelimit::{Kind, Rejections};

/// The wire parsers and option negotiation, reachable for `tests/fuzz.rs` only; not an API.
#[doc(hidden)]
pub mod fuzz_api {
    pub use super::options::{
        negotiate, Negotiated, DEFAULT_BLKSIZE, MAX_BLKSIZE, MAX_CLIENT_TIMEOUT,
    };
    pub use super::packet::{
        encode_error, encode_oack, parse_reply, parse_request, ErrorCode, Malformed, Mode,
        ReadRequest, Reply, Request,
    };
}

/// Largest datagram accepted on the listening port: any UDP payload, so nothing is cut.
const MAX_REQUEST: usize = 65536;

/// Why a file cannot be served; mapped to TFTP error codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// ERROR 1, file not found.
    NotFound,
    /// ERROR 2, access violation.
    AccessViolation,
    /// ERROR 0 with this message.
    Other(String),
}

/// Supplies files; called on a blocking thread (it may read the store and render templates).
pub trait FileSource: Send + Sync + 'static {
    /// The content of `filename` (one leading `/` removed) for the client at `peer`.
    fn read(&self, peer: SocketAddr, filename: &str) -> Result<Arc<[u8]>, FileError>;
}

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpOptions {
    /// Transfers running at once, all clients together; 0 refuses every request.
    pub max_transfers: usize,
    /// Retransmission timeout when the client asks for none, in seconds (0 is taken as 1).
    pub timeout_secs: u8,
    /// Retransmissions of one packet before the transfer is abandoned.
    pub retries: u8,
    /// Concurrent transfers per client IP; 0 refuses every request.
    pub max_per_client: usize,
}

/// A bound TFTP listener, ready to [`run`](TftpServer::run).
#[derive(Debug)]
pub struct TftpServer {
    socket: UdpSocket,
    options: TftpOptions,
    rejected: Arc<Rejections>,
}

impl TftpServer {
    /// Binds the listening socket.
    pub async fn bind(addr: SocketAddr, options: TftpOptions) -> std::io::Result<TftpServer> {
        let socket = UdpSocket::bind(addr).await?;
        Ok(TftpServer {
            socket,
            options,
            rejected: Arc::default(),
        })
    }

    /// Counts refused requests in `rejected` (the daemon's, shared with the other
    /// transports and `/metrics`) instead of a private one.
    pub fn with_rejections(self, rejected: Arc<Rejections>) -> TftpServer {
        TftpServer { rejected, ..self }
    }

    /// Address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Serves until `shutdown` becomes true; in-flight transfers are abandoned at shutdown.
    ///
    /// A dropped sender counts as shutdown: nobody could stop the server any more.
    pub async fn run(
        self,
        source: Arc<dyn FileSource>,
        mut shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let listener = Listener {
            local: self.socket.local_addr()?,
            socket: self.socket,
            limits: Limits::new(self.options.max_transfers, self.options.max_per_client),
            default_timeout: Duration::from_secs(self.options.timeout_secs.max(1).into()),
            retries: self.options.retries,
            source,
            rejected: self.rejected,
        };
        tracing::info!(listen = %listener.local, "TFTP server ready");
        let mut transfers = JoinSet::new();
        let mut buf = vec![0u8; MAX_REQUEST];
        let result = loop {
            if *shutdown.borrow_and_update() {
                break Ok(());
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break Ok(());
                    }
                }
                Some(finished) = transfers.join_next(), if !transfers.is_empty() => {
                    if let Err(e) = finished {
                        tracing::error!("TFTP transfer task failed: {e}");
                    }
                }
                received = listener.socket.recv_from(&mut buf) => match received {
                    Ok((len, peer)) => listener.on_datagram(&buf[..len], peer, &mut transfers),
                    Err(e) if is_transient(&e) => tracing::debug!("TFTP receive: {e}"),
                    Err(e) => break Err(e),
                },
            }
        };
        if !transfers.is_empty() {
            tracing::info!(
                transfers = transfers.len(),
                "TFTP server stopping, abandoning transfers"
            );
        }
        transfers.shutdown().await;
        result
    }
}

/// Errors a UDP receive can report about an earlier send (ICMP) rather than about itself.
fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::Interrupted
    )
}

/// The listening side: turns requests into transfer tasks or refusals.
struct Listener {
    socket: UdpSocket,
    local: SocketAddr,
    limits: Arc<Limits>,
    default_timeout: Duration,
    retries: u8,
    source: Arc<dyn FileSource>,
    rejected: Arc<Rejections>,
}

impl Listener {
    fn on_datagram(&self, datagram: &[u8], peer: SocketAddr, transfers: &mut JoinSet<()>) {
        if peer.port() == 0 {
            tracing::debug!(%peer, "dropping datagram from port 0: no way to answer");
            return;
        }
        if datagram.len() < 2 {
            tracing::debug!(%peer, len = datagram.len(), "dropping runt datagram");
            return;
        }
        let request = match packet::parse_request(datagram) {
            Ok(Request::Read(request)) => request,
            Ok(Request::Write) => {
                if self.rejected.admit(Kind::TftpMethod, peer.ip()) {
                    tracing::info!(%peer, "refusing write request");
                }
                self.refuse(
                    peer,
                    ErrorCode::AccessViolation,
                    "write not allowed: read-only server",
                );
                return;
            }
            Ok(Request::Error) => {
                tracing::debug!(%peer, "ignoring ERROR sent to the listening port");
                return;
            }
            Ok(Request::Misdirected(opcode)) => {
                tracing::debug!(%peer, opcode, "non-request packet on the listening port");
                self.refuse(peer, ErrorCode::IllegalOperation, "expected a read request");
                return;
            }
            Err(Malformed(why)) => {
                if self.rejected.admit(Kind::TftpMalformed, peer.ip()) {
                    tracing::warn!(%peer, "malformed request: {why}");
                }
                self.refuse(peer, ErrorCode::IllegalOperation, why);
                return;
            }
        };
        let Some(filename) = clean_filename(&request.filename) else {
            if self.rejected.admit(Kind::TftpPath, peer.ip()) {
                tracing::warn!(%peer, file = ?request.filename, "refusing file name");
            }
            self.refuse(peer, ErrorCode::AccessViolation, "illegal file name");
            return;
        };
        let request = packet::ReadRequest {
            filename: filename.to_owned(),
            ..request
        };
        let span = tracing::info_span!("tftp", %peer, file = ?request.filename);
        let _entered = span.enter();
        let Some(slot) = self.limits.acquire(peer.ip()) else {
            if self.rejected.admit(Kind::TftpBusy, peer.ip()) {
                tracing::warn!("refused: too many transfers");
            }
            self.refuse(peer, ErrorCode::NotDefined, "server busy");
            return;
        };
        let socket = match bind_transfer_socket(self.local) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!("cannot open a transfer port: {e}");
                self.refuse(peer, ErrorCode::NotDefined, "cannot start transfer");
                return;
            }
        };
        tracing::debug!(mode = ?request.mode, options = ?request.options, "read request");
        let job = transfer::Job {
            socket,
            peer,
            request,
            source: Arc::clone(&self.source),
            default_timeout: self.default_timeout,
            retries: self.retries,
            slot,
        };
        transfers.spawn(transfer::run(job).instrument(span.clone()));
    }

    /// Answers from the listening port; best effort, since a refused client retries anyway.
    fn refuse(&self, peer: SocketAddr, code: ErrorCode, message: &str) {
        let packet = packet::encode_error(code, message);
        if let Err(e) = self.socket.try_send_to(&packet, peer) {
            tracing::debug!(%peer, "cannot send ERROR: {e}");
        }
    }
}

/// The name handed to the source, or `None` when it is refused.
fn clean_filename(name: &str) -> Option<&str> {
    let name = name.strip_prefix('/').unwrap_or(name);
    (!name.contains(['\0', '\\'])).then_some(name)
}

/// A transfer port on the listener's IP, so that replies leave from the address phones sent to
/// (when the listener is bound to one).
fn bind_transfer_socket(local: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(local.ip(), 0))?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

#[cfg(test)]
mod tests {
    use super::clean_filename;

    #[test]
    fn file_names() {
        assert_eq!(clean_filename("/a/b.cfg"), Some("a/b.cfg"));
        assert_eq!(clean_filename("//x"), Some("/x"));
        assert_eq!(clean_filename("a\\b"), None);
        assert_eq!(clean_filename("a\0b"), None);
        assert_eq!(clean_filename(""), Some(""));
    }
}
