//! provisiond: a phone provisioning daemon (DHCP, HTTP/TFTP config server, REST API).
//!
//! The binary in `main.rs` is a thin CLI over this library; see `docs/architecture.md`.

pub mod admin;
pub mod admin_client;
pub mod bench;
pub mod cli;
pub mod codeform;
pub mod config;
pub mod daemon;
pub mod dhcp;
pub mod dhcpinfo;
pub mod docgen;
pub mod events;
pub mod files;
pub mod http;
pub mod ident;
pub mod logging;
pub mod manage;
pub mod memory;
pub mod model;
pub mod plugins;
pub mod ratelimit;
pub mod store;
pub mod sync;
pub mod systemd;
pub mod tftp;
