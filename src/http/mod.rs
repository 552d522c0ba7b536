//! HTTP(S) servers: the connection loop with its limits, and the provisioning router.

pub mod provisioning;
mod server;

pub use server::{load_tls, serve, HttpLimits, TlsError};
