//! Daemon settings: `/etc/provisiond/provisiond.toml` plus `conf.d/*.toml`, typed and validated.
//!
//! Each file is checked on its own first (so a syntax error or an unknown key names its file
//! and line), then the files are merged in order (tables merged key by key, any other value,
//! arrays included, replaced whole) and the result is validated as a whole. Every error names
//! the file that set the offending key and the key path.

mod load;
mod validate;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::model::Mac;

pub use load::{
    changed_keys, load, ConfigError, ConfigErrors, Loaded, Source, DEFAULT_CONFIG_PATH,
    EMBEDDED_DEV_CONFIG,
};

/// The whole daemon configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Paths, public URL and default tenant.
    pub general: General,
    /// HTTP provisioning server (phones).
    pub http: Http,
    /// HTTPS provisioning server (phones).
    pub https: Https,
    /// REST API (administrators, PBX).
    pub api: Api,
    /// The web console on the API listener.
    pub console: Console,
    /// TFTP provisioning server (phones).
    pub tftp: Tftp,
    /// DHCPv4 responder.
    pub dhcp: Dhcp,
    /// Lease facts from a foreign DHCP server (`provisiond dhcp-notify`).
    pub dhcpinfo: DhcpInfo,
    /// Who may fetch provisioning files.
    pub auth: Auth,
    /// SIP NOTIFY resynchronisation of phones.
    pub sync: Sync,
    /// The plugin repository: trusted keys, limits (docs/plugin-repository.md).
    pub plugins: Plugins,
    /// Logging.
    pub log: Log,
}

/// `[general]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// Directory of the store (`<data_dir>/db`) and of admin plugins (`<data_dir>/plugins`).
    pub data_dir: PathBuf,
    /// URL that phones use to reach this server (`http://10.0.0.2:8667`); put in DHCP options.
    pub base_url: Option<Url>,
    /// Tenant that new devices join.
    pub default_tenant: String,
    /// Directory of the built-in plugins, over the ones compiled into the binary.
    pub plugins_dir: PathBuf,
    /// Unknown phones created per second at most, on average (the bucket's refill), in all.
    pub autocreate_per_second: u32,
    /// Unknown phones created at once at most (the bucket's size): a rollout's burst.
    pub autocreate_burst: u32,
    /// No unknown phone is created once the store holds this many devices.
    pub max_devices: usize,
    /// Memory for the store's block cache, in MiB.
    pub store_cache_mib: u32,
}

impl Default for General {
    fn default() -> Self {
        General {
            data_dir: "/var/lib/provisiond".into(),
            base_url: None,
            default_tenant: "master".into(),
            plugins_dir: "/usr/share/provisiond/plugins".into(),
            autocreate_per_second: crate::ident::DEFAULT_AUTOCREATE_PER_SECOND,
            autocreate_burst: crate::ident::DEFAULT_AUTOCREATE_BURST,
            max_devices: 100_000,
            store_cache_mib: crate::store::DEFAULT_CACHE_MIB,
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http {
    /// Serve phones over HTTP.
    pub enabled: bool,
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Largest request (line + headers) accepted, in bytes.
    pub max_request_bytes: usize,
    /// Time a client gets to send its request and read the answer, in seconds.
    pub request_timeout_secs: u64,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 8667)),
            max_request_bytes: 16 * 1024,
            request_timeout_secs: 30,
        }
    }
}

/// `[https]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Https {
    /// Serve phones over HTTPS too.
    pub enabled: bool,
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: Option<PathBuf>,
    /// PEM private key.
    pub key: Option<PathBuf>,
}

impl Default for Https {
    fn default() -> Self {
        Https {
            enabled: false,
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            cert: None,
            key: None,
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Api {
    /// Serve the REST API over TCP (the UNIX socket is always served).
    pub enabled: bool,
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// UNIX socket used by the admin CLI.
    pub socket: PathBuf,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 8666)),
            socket: "/run/provisiond/api.sock".into(),
            max_body_bytes: 1024 * 1024,
        }
    }
}

/// `[console]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Console {
    /// Serve the web console under `/console/` on the API's TCP listener.
    pub enabled: bool,
    /// A session unused this long ends, in seconds.
    pub idle_timeout_secs: u64,
    /// A session ends this long after sign-in whatever its use, in seconds.
    pub max_session_secs: u64,
    /// Mark the session cookie `Secure`: set it when people reach the console over HTTPS
    /// (through a reverse proxy; the API listener itself speaks plain HTTP).
    pub secure_cookies: bool,
    /// An open live-events stream sends a keep-alive and checks its session's user or token
    /// and tenant this often, in seconds.
    pub live_check_secs: u64,
}

impl Default for Console {
    fn default() -> Self {
        Console {
            enabled: true,
            idle_timeout_secs: 30 * 60,
            max_session_secs: 12 * 3600,
            secure_cookies: false,
            live_check_secs: 15,
        }
    }
}

/// `[tftp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tftp {
    /// Serve phones over TFTP.
    pub enabled: bool,
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Transfers running at once; further requests get an ERROR.
    pub max_transfers: usize,
    /// Transfers running at once for one client address.
    pub max_per_client: usize,
    /// Retransmission timeout when the client asks for none, in seconds (1–255).
    pub timeout_secs: u8,
    /// Retransmissions of one packet before the transfer is abandoned.
    pub retries: u8,
}

impl Default for Tftp {
    fn default() -> Self {
        Tftp {
            enabled: true,
            listen: SocketAddr::from(([0, 0, 0, 0], 69)),
            max_transfers: 256,
            max_per_client: 16,
            timeout_secs: 2,
            retries: 5,
        }
    }
}

/// What the DHCP responder answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DhcpMode {
    /// No DHCP at all (packaged default: never a surprise DHCP server on a LAN).
    #[default]
    Off,
    /// Authoritative for the pools, every client.
    Server,
    /// Only clients identified as phones; silent for the others.
    PhonesOnly,
}

/// `[dhcp]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dhcp {
    /// `off`, `server` or `phones-only`.
    pub mode: DhcpMode,
    /// Interfaces to serve (SO_BINDTODEVICE); empty means all.
    pub interfaces: Vec<String>,
    /// UDP port (67; a high port for tests, where every reply is unicast to the sender).
    pub port: u16,
    /// Server identifier (option 54); defaults to the address of the receiving interface.
    pub server_id: Option<Ipv4Addr>,
    /// How long an offered address stays reserved for the client, in seconds.
    pub offer_hold_secs: u32,
    /// Address pools, one per subnet.
    pub pools: Vec<Pool>,
}

impl Default for Dhcp {
    fn default() -> Self {
        Dhcp {
            mode: DhcpMode::Off,
            interfaces: Vec::new(),
            port: 67,
            server_id: None,
            offer_hold_secs: 30,
            pools: Vec::new(),
        }
    }
}

/// `[[dhcp.pools]]`: one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Subnet in CIDR form, `10.0.0.0/24`.
    pub subnet: Ipv4Net,
    /// Dynamic address ranges, inside the subnet.
    #[serde(default)]
    pub ranges: Vec<Range>,
    /// Default gateway (option 3).
    #[serde(default)]
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Domain name (option 15).
    #[serde(default)]
    pub domain: Option<String>,
    /// NTP servers (option 42).
    #[serde(default)]
    pub ntp: Vec<Ipv4Addr>,
    /// Lease time, in seconds.
    #[serde(default = "default_lease_time")]
    pub lease_time: u32,
    /// T1 (option 58); half the lease time when unset.
    #[serde(default)]
    pub renew_time: Option<u32>,
    /// T2 (option 59); 7/8 of the lease time when unset.
    #[serde(default)]
    pub rebind_time: Option<u32>,
    /// Addresses inside the ranges that are never handed out.
    #[serde(default)]
    pub exclude: Vec<Ipv4Addr>,
    /// Fixed addresses by MAC.
    #[serde(default)]
    pub reservations: Vec<Reservation>,
    /// Provisioning base URL for this subnet, instead of `general.base_url`.
    #[serde(default)]
    pub base_url: Option<Url>,
    /// Tenant whose provisioning key `{provisioning_url}` carries under `url_key` (the
    /// default tenant when unset).
    #[serde(default)]
    pub tenant: Option<String>,
}

fn default_lease_time() -> u32 {
    86_400
}

/// An inclusive address range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// First address.
    pub start: Ipv4Addr,
    /// Last address.
    pub end: Ipv4Addr,
}

/// A fixed address for one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reservation {
    /// Client hardware address.
    pub mac: Mac,
    /// Address it always gets.
    pub ip: Ipv4Addr,
    /// Host name (option 12).
    #[serde(default)]
    pub hostname: Option<String>,
}

/// `[dhcpinfo]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhcpInfo {
    /// Listen for `provisiond dhcp-notify` datagrams.
    pub enabled: bool,
    /// UNIX datagram socket path.
    pub socket: PathBuf,
    /// Group allowed to send (the DHCP server's group); owner only when unset.
    pub group: Option<String>,
}

impl Default for DhcpInfo {
    fn default() -> Self {
        DhcpInfo {
            enabled: true,
            socket: "/run/provisiond/dhcpinfo.sock".into(),
            group: None,
        }
    }
}

/// How phones authenticate their provisioning requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HttpAuthStrategy {
    /// Any phone on the network may fetch files (wazo-provd's default).
    #[default]
    Disabled,
    /// Only `/device/provisioning/<tenant key>/<file>` is served.
    UrlKey,
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// `disabled` or `url_key`.
    pub http_auth_strategy: HttpAuthStrategy,
}

/// `[sync]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sync {
    /// Send SIP NOTIFY to make phones fetch their files again.
    pub enabled: bool,
    /// Time to wait for the phone's answer, in seconds.
    pub timeout_secs: u64,
    /// UDP port of the phones' SIP stack.
    pub sip_port: u16,
    /// Devices waiting for a NOTIFY at most; more are dropped (counted, warned about).
    pub queue_max: usize,
    /// NOTIFYs started per second at most.
    pub rate: u32,
    /// NOTIFYs in flight at most (each waits for its phone's answer).
    pub concurrency: usize,
}

impl Default for Sync {
    fn default() -> Self {
        Sync {
            enabled: true,
            timeout_secs: 5,
            sip_port: 5060,
            queue_max: 100_000,
            rate: 20,
            concurrency: 8,
        }
    }
}

/// `[plugins]`: the plugin repository (`/configure` `plugin_server`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plugins {
    /// Directory of the public keys (minisign `*.pub`) that may sign a repository's index.
    pub trusted_keys_dir: PathBuf,
    /// Plugin servers whose index is used unsigned or wrongly signed (a warning at every use).
    pub allow_unsigned: Vec<Url>,
    /// Largest plugin archive downloaded, in bytes.
    pub max_archive_bytes: u64,
    /// Largest content an archive may unpack to, in bytes.
    pub max_unpacked_bytes: u64,
    /// Time allowed for one download, in seconds.
    pub download_timeout_secs: u64,
}

impl Default for Plugins {
    fn default() -> Self {
        Plugins {
            trusted_keys_dir: "/etc/provisiond/trusted-keys".into(),
            allow_unsigned: Vec::new(),
            max_archive_bytes: 64 << 20,
            max_unpacked_bytes: 256 << 20,
            download_timeout_secs: 300,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// Filter in `RUST_LOG` syntax (`info`, `provisiond::dhcp=debug,info`); `RUST_LOG` wins.
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
        }
    }
}
