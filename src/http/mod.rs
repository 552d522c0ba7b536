//! HTTP(S) servers: the connection loop with its limits, and the provisioning router.

pub mod api;
mod codeform;
pub mod console;
pub mod provisioning;
mod server;

pub use server::{
    load_tls, plain_refusal, serve, serve_unix, HttpLimits, LocalPolicy, Refusal, TlsError,
};
