//! Resynchronisation of phones by SIP NOTIFY: an out-of-dialog NOTIFY (RFC 3265/6665)
//! carrying the device's plugin event (`check-sync` for most vendors) makes the phone fetch
//! its files again.
//!
//! - [`sip`]: one NOTIFY over UDP, retransmitted on RFC 3261's timer E, a Digest challenge
//!   (401/407) answered once with the device's SIP line 1 credentials;
//! - [`digest`]: the challenges' grammar and the Digest answer (MD5, SHA-256, their -sess);
//! - [`queue`]: [`SyncQueue`], which every resync goes through (coalesced, bounded, rate
//!   limited) and which records each device's outcome (`last_sync`) in the store.

pub mod digest;
pub mod queue;
pub mod sip;

use std::net::SocketAddr;

pub use crate::store::{LastSync, Reason, SyncState, SyncStatus};
pub use digest::{Credentials, DigestError};
pub use queue::{target, Queued, SyncCounters, SyncQueue};
pub use sip::notify;

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
    /// The phone asked for credentials and the device's config has none.
    #[error("{target} answered {code} (authentication required) and SIP line 1 of the device's config has no username and password")]
    NoCredentials {
        /// The phone.
        target: SocketAddr,
        /// 401 or 407.
        code: u16,
    },
    /// The phone's challenge cannot be answered.
    #[error("{target}: {source}")]
    Challenge {
        /// The phone.
        target: SocketAddr,
        /// What is wrong with it.
        source: DigestError,
    },
    /// The phone challenged our answer to its challenge again.
    #[error("{target}: credentials refused (answered {code} again to the Digest answer with SIP line 1's credentials)")]
    CredentialsRefused {
        /// The phone.
        target: SocketAddr,
        /// 401 or 407.
        code: u16,
    },
}
