//! Command-line interface (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::DEFAULT_CONFIG_PATH;

/// provisiond: phone provisioning daemon (DHCP, HTTP/TFTP config server, wazo-provd REST API).
#[derive(Debug, Parser)]
#[command(name = "provisiond", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(ConfigArgs),
    /// Parse and validate the configuration; print every problem with its file and key path.
    CheckConfig(CheckArgs),
    /// List and inspect the vendor plugins (built-in and admin).
    Plugin(PluginArgs),
    /// Measure identification + rendering speed and print the figures.
    Bench(BenchArgs),
    /// Devices, through the running daemon's local admin socket.
    Device(DeviceArgs),
    /// Provisioning configs, through the running daemon's local admin socket.
    Config(ConfigObjArgs),
    /// Tenants and their provisioning keys, through the running daemon's local admin socket.
    Tenant(TenantArgs),
    /// REST API tokens, through the running daemon's local admin socket.
    Token(TokenArgs),
    /// Web console users, through the running daemon's local admin socket.
    User(UserArgs),
    /// Provisioning categories of a tenant, through the running daemon's local admin socket.
    Category(ProvArgs<CategoryAction>),
    /// Provisioning codes: issue, list, revoke, redeem for a phone.
    Code(ProvArgs<CodeAction>),
    /// Rollouts: one 7-day code per user, exported as CSV.
    Rollout(ProvArgs<RolloutAction>),
    /// Jobs that update a category's phones (firmware, config) at their next fetch.
    Job(ProvArgs<JobAction>),
    /// Automatic provisioning: the tenant's token and the URLs to roll out.
    Auto(ProvArgs<AutoAction>),
    /// The store itself, with the daemon stopped: check (and repair) its indexes.
    Store(StoreArgs),
    /// Tell the daemon about a DHCP lease event (run by ISC dhcpd, dnsmasq or Kea hooks).
    #[command(
        override_usage = "provisiond dhcp-notify [FLAGS] commit IP MAC [OPTION]...\n       \
                          provisiond dhcp-notify [FLAGS] release|expiry IP [MAC]\n       \
                          provisiond dhcp-notify [FLAGS] add|old|del MAC IP [HOSTNAME]   (dnsmasq)\n       \
                          provisiond dhcp-notify leases4_committed|lease4_release|lease4_expire   (Kea)",
        long_about = "Tell the daemon about a DHCP lease event: one datagram to its [dhcpinfo] \
                      socket (docs/dhcpinfo.md). Takes dxtorc's arguments, so an ISC dhcpd hook \
                      only changes its program: `execute(\"/usr/bin/provisiond\", \
                      \"dhcp-notify\", \"commit\", ...)`. An OPTION is a \
                      3-digit decimal code then the value's bytes in hex, dotted or not \
                      (`06079.65.61.6c.69.6e.6b` is option 60 \"yealink\"); empty ones are dropped. \
                      dnsmasq's `dhcp-script` and Kea's run_script arguments and environment are \
                      understood too (and `provisiond add|old|del|init|tftp ...` or \
                      `provisiond <Kea hook point>` run this command directly, so that those \
                      servers can name /usr/bin/provisiond itself). Never blocks for more than \
                      50 ms and always exits 0: problems are one line on stderr."
    )]
    DhcpNotify(DhcpNotifyArgs),
    /// Print the configuration that makes ISC dhcpd, Kea or dnsmasq hand phones the same
    /// per-vendor options (66, 160, 150…) as the built-in DHCP server.
    DhcpSnippet(DhcpSnippetArgs),
    /// Build a plugin repository: key pairs, plugin archives, the signed index.
    Repo(RepoArgs),
    /// Print the man page (provisiond.8, roff) on standard output.
    Man,
    /// Print a shell completion script on standard output.
    Completions {
        /// Shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// Arguments of `dhcp-notify`.
#[derive(Debug, Clone, Args)]
pub struct DhcpNotifyArgs {
    /// Configuration sources (for `[dhcpinfo] socket`).
    #[command(flatten)]
    pub source: ConfigArgs,
    /// The daemon's dhcpinfo socket, instead of `[dhcpinfo] socket` of the configuration
    /// (found like the other commands find theirs: --config, the default file, else the
    /// embedded development default's provisiond-data/dhcpinfo.sock).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Vendor class identifier (option 60) as text, e.g. "yealink".
    #[arg(long, value_name = "TEXT")]
    pub vendor_class: Option<String>,
    /// User class (option 77) as text.
    #[arg(long, value_name = "TEXT")]
    pub user_class: Option<String>,
    /// Any option as text, e.g. `--option 60=yealink`; repeat the flag. Named options win
    /// over positional ones with the same code.
    #[arg(long = "option", value_name = "CODE=TEXT")]
    pub options: Vec<String>,
    /// `commit IP MAC [OPTION]...`, `release|expiry IP [MAC]`, dnsmasq's
    /// `add|old|del MAC IP [HOSTNAME]` or a Kea hook point name.
    #[arg(value_name = "ARG")]
    pub args: Vec<String>,
}

/// Arguments of `dhcp-snippet`.
#[derive(Debug, Clone, Args)]
pub struct DhcpSnippetArgs {
    /// Configuration sources (plugins, `[general] base_url`, `http_auth_strategy`).
    #[command(flatten)]
    pub source: ConfigArgs,
    /// The DHCP server to write for.
    #[arg(long, value_enum)]
    pub format: crate::dhcp::snippet::Format,
    /// Provisioning URL phones are given, instead of `[general] base_url`.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<url::Url>,
    /// Provisioning key of the tenant whose phones this server serves (required when
    /// `http_auth_strategy = "url_key"`; see `provisiond tenant list`).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Address for `{server_ip}` and `{tftp_server}` (TFTP options 66/150/159), instead of
    /// the base URL's host.
    #[arg(long, value_name = "IPV4")]
    pub server_ip: Option<std::net::Ipv4Addr>,
}

/// Arguments of `plugin`.
#[derive(Debug, Clone, Args)]
pub struct PluginArgs {
    /// What to show.
    #[command(subcommand)]
    pub action: PluginAction,
    /// Configuration sources (for the plugin directories).
    #[command(flatten)]
    pub source: ConfigArgs,
    /// The daemon's admin socket (update, search, install, upgrade, remove), instead of the
    /// configuration's `[api] socket`.
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
}

/// `plugin` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum PluginAction {
    /// One line per plugin, then the plugins that failed to load.
    List,
    /// Everything about one plugin: models, rules, routes, DHCP options.
    Show {
        /// Plugin name.
        name: String,
    },
    /// Fetch the plugin repository's index from `plugin_server` (through the daemon).
    Update,
    /// The plugins the repository offers, whose name or description contains TEXT.
    Search {
        /// Text to look for (none: every plugin).
        text: Option<String>,
    },
    /// Install a plugin from the repository; waits for the download to finish.
    Install {
        /// Plugin name.
        name: String,
    },
    /// Upgrade an installed plugin to the repository's version.
    Upgrade {
        /// Plugin name.
        name: String,
    },
    /// Remove a plugin installed from the repository.
    Remove {
        /// Plugin name.
        name: String,
        /// Remove it even though devices use it.
        #[arg(long)]
        force: bool,
    },
    /// A plugin's vendor packages (firmware, language files), through the running daemon's
    /// local admin socket: lists them, or installs, upgrades or removes one.
    Packages(PackagesArgs),
}

/// Arguments of `repo`.
#[derive(Debug, Clone, Args)]
pub struct RepoArgs {
    /// What to build.
    #[command(subcommand)]
    pub action: RepoAction,
}

/// `repo` subcommands (docs/plugin-repository.md).
#[derive(Debug, Clone, Subcommand)]
pub enum RepoAction {
    /// A new signing key pair: PREFIX.key (secret, keep it off the servers) and PREFIX.pub
    /// (for /etc/provisiond/trusted-keys/).
    Keygen {
        /// Path of the files without extension.
        prefix: PathBuf,
    },
    /// Check a plugin directory and write its archive NAME-VERSION.tar.gz into --out.
    Pack {
        /// The plugin directory (holding plugin.toml).
        plugin_dir: PathBuf,
        /// Where to write the archive.
        #[arg(long, value_name = "DIR", default_value = ".")]
        out: PathBuf,
    },
    /// Check the archives of DIR and write DIR/index.json, signed with --sign.
    Index {
        /// The repository directory (the archives).
        dir: PathBuf,
        /// Secret key (unencrypted minisign) that signs the index.
        #[arg(long, value_name = "KEY")]
        sign: Option<PathBuf>,
    },
    /// Check DIR as the daemon would: the index's signature with the public KEY, then every
    /// archive's size, hash and content.
    Verify {
        /// The repository directory.
        dir: PathBuf,
        /// Public key (minisign .pub).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
    },
    /// Sign FILE (an index edited by hand) as FILE.minisig.
    Sign {
        /// The file to sign.
        file: PathBuf,
        /// Secret key (unencrypted minisign).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
    },
}

/// Arguments of `plugin packages`.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("change").args(["install", "upgrade", "remove"]))]
pub struct PackagesArgs {
    /// Plugin name.
    pub plugin: String,
    /// Install this package (downloaded by the daemon); waits for the end of the operation.
    #[arg(long, value_name = "PACKAGE")]
    pub install: Option<String>,
    /// Upgrade this installed package to the version the plugin declares.
    #[arg(long, value_name = "PACKAGE")]
    pub upgrade: Option<String>,
    /// Remove this installed package: its files are no longer served.
    #[arg(long, value_name = "PACKAGE")]
    pub remove: Option<String>,
    /// Accept the package's licence (required when the plugin says so).
    #[arg(long)]
    pub accept_licence: bool,
    /// The daemon's admin socket: `plugin --socket PATH`, set by the dispatch.
    #[arg(skip)]
    pub socket: Option<PathBuf>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchKind,
}

/// Benchmarks.
#[derive(Debug, Clone, Subcommand)]
pub enum BenchKind {
    /// Identification + rendering per second, in process, one thread.
    Render(RenderBenchArgs),
    /// HTTP load against a running server: distinct phones fetching their MAC file.
    Http(HttpBenchArgs),
    /// TFTP load against a running server: concurrent transfers of one file.
    Tftp(TftpBenchArgs),
    /// DHCP load against a running server: distinct clients doing DORA through a relay address.
    Dhcp(DhcpBenchArgs),
    /// Boot storm against a running server: phones at once, each a DORA then its first fetch.
    Storm(StormBenchArgs),
    /// The store at scale, in process: N devices created from several threads, then lookups,
    /// sorted pages, a full streamed listing (with peak RSS) and the count through the REST API
    /// over HTTP on 127.0.0.1.
    Store(StoreBenchArgs),
    /// Start-up time and idle RSS of `serve` on a store of N devices and N leases.
    Startup(StartupBenchArgs),
}

/// Arguments of `bench store`.
#[derive(Debug, Clone, Args)]
pub struct StoreBenchArgs {
    /// Devices to create.
    #[arg(long, default_value_t = 10_000)]
    pub devices: u64,
    /// Tenants, in two levels under the default tenant; devices are spread over all of them.
    #[arg(long, default_value_t = 1000)]
    pub tenants: usize,
    /// Store directory, kept afterwards (a store filled by an earlier run with the same
    /// `--devices` and `--tenants` is measured again without filling it); default: a
    /// temporary directory, removed afterwards.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Threads creating devices at once.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Requests per lookup kind (p50/p99).
    #[arg(long, default_value_t = 1000)]
    pub lookups: usize,
    /// Also write one DHCP lease per phone with an address of its own (256 per flush).
    #[arg(long)]
    pub leases: bool,
    /// Random device ids (as UUIDv4: devices created before ids were time-ordered, or whose
    /// id a client chose) instead of time-ordered ones, as provisiond makes them now.
    #[arg(long)]
    pub random_ids: bool,
    /// The store's block cache in MiB, as `[general] store_cache_mib` sets it for the daemon.
    #[arg(long, default_value_t = crate::store::DEFAULT_CACHE_MIB)]
    pub cache_mib: u32,
}

/// Arguments of `bench startup`.
#[derive(Debug, Clone, Args)]
pub struct StartupBenchArgs {
    /// Devices to create, spread over `--tenants` tenants.
    #[arg(long, default_value_t = 100_000)]
    pub devices: u32,
    /// Leases to write (addresses 10.0.0.1 upwards, the first ones held by the devices).
    #[arg(long, default_value_t = 100_000)]
    pub leases: u32,
    /// Tenants, children of the default tenant, each with one config its devices use.
    #[arg(long, default_value_t = 1_000)]
    pub tenants: u32,
    /// Data directory kept after the run; when it already holds a store, the fill is skipped
    /// and that store is measured as it is (default: a temporary directory, removed).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Also run the DHCP server (loopback, a free port, a pool over the leases' addresses).
    #[arg(long)]
    pub dhcp: bool,
    /// Threads creating devices (each creation is its own flushed write; concurrent flushes
    /// share their fsync).
    #[arg(long, default_value_t = 64)]
    pub threads: usize,
    /// The store's block cache in MiB, for the opens here and `serve`'s `[general] store_cache_mib`.
    #[arg(long, default_value_t = crate::store::DEFAULT_CACHE_MIB)]
    pub cache_mib: u32,
}

/// Arguments of `bench render`.
#[derive(Debug, Clone, Args)]
pub struct RenderBenchArgs {
    /// Configuration sources (for the plugin directories).
    #[command(flatten)]
    pub source: ConfigArgs,
    /// Requests per measurement.
    #[arg(long, default_value_t = 200_000)]
    pub iterations: u32,
    /// Only this plugin.
    #[arg(long)]
    pub plugin: Option<String>,
}

/// Arguments of `bench http`.
#[derive(Debug, Clone, Args)]
pub struct HttpBenchArgs {
    /// Server address (loopback or a test namespace only).
    #[arg(long, default_value = "127.0.0.1:8667")]
    pub target: std::net::SocketAddr,
    /// Distinct phones (Yealink MACs 80:5e:c0:…), each fetching `/<mac>.cfg`.
    #[arg(long, default_value_t = 10_000)]
    pub devices: u32,
    /// Requests measured after the warm-up pass (one request per phone).
    #[arg(long, default_value_t = 100_000)]
    pub requests: u32,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Path prefix before the file name (e.g. `/device/provisioning/KEY`).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Save each phone's file here during the warm-up (to serve the same bytes with nginx).
    #[arg(long)]
    pub save: Option<PathBuf>,
    /// Skip the warm-up pass.
    #[arg(long)]
    pub no_warmup: bool,
}

/// Arguments of `bench tftp`.
#[derive(Debug, Clone, Args)]
pub struct TftpBenchArgs {
    /// Server address (loopback or a test namespace only).
    #[arg(long, default_value = "127.0.0.1:6969")]
    pub target: std::net::SocketAddr,
    /// File to fetch.
    #[arg(long)]
    pub file: String,
    /// Transfers in flight.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// Transfers in all.
    #[arg(long, default_value_t = 300)]
    pub transfers: usize,
    /// Block size to negotiate (RFC 2348).
    #[arg(long, default_value_t = 1428)]
    pub blksize: u16,
}

/// Arguments of `bench dhcp`.
#[derive(Debug, Clone, Args)]
pub struct DhcpBenchArgs {
    /// Server address (loopback or a test namespace only).
    #[arg(long, default_value = "127.0.0.1:6767")]
    pub target: std::net::SocketAddr,
    /// Local address (default: the target's loopback address, else 0.0.0.0, any port). Off
    /// port 67 provisiond answers the sender; a server on port 67 answers `giaddr:67`.
    #[arg(long)]
    pub bind: Option<std::net::SocketAddr>,
    /// Relay address put in every request (`giaddr`): an address of the pool's subnet.
    #[arg(long, default_value = "10.214.0.1")]
    pub giaddr: std::net::Ipv4Addr,
    /// Select the pool with this address in option 82's link-selection sub-option (RFC 3527)
    /// instead of `giaddr`.
    #[arg(long, value_name = "IP")]
    pub link_selection: Option<std::net::Ipv4Addr>,
    /// Distinct clients (MACs 02:d7:…), one DORA each.
    #[arg(long, default_value_t = 50_000)]
    pub clients: u32,
    /// Exchanges in flight.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Retransmit a message unanswered after this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Transmissions of one message, and NAKs, before its client gives up.
    #[arg(long, default_value_t = 4)]
    pub tries: u32,
    /// Vendor class (option 60) of every client, e.g. `yealink` (none by default, like perfdhcp).
    #[arg(long)]
    pub vendor_class: Option<String>,
}
/// Arguments of `bench storm`.
#[derive(Debug, Clone, Args)]
pub struct StormBenchArgs {
    /// DHCP server (loopback or a test namespace only); off port 67 it answers the sender.
    #[arg(long, default_value = "127.0.0.1:6767")]
    pub dhcp: std::net::SocketAddr,
    /// HTTP provisioning server (loopback or a test namespace only).
    #[arg(long, default_value = "127.0.0.1:8667")]
    pub http: std::net::SocketAddr,
    /// Phones booting (Yealink MACs 80:5e:c0:<run>:…).
    #[arg(long, default_value_t = 1000)]
    pub phones: u32,
    /// Which phones: the same run is the same MACs (run it again for a reboot of known phones).
    #[arg(long, default_value_t = 0)]
    pub run: u8,
    /// Relay address put in every request (`giaddr`): an address of the pool's subnet. On a
    /// loopback pool (127.64.0.0/16) each phone fetches from its leased address.
    #[arg(long, default_value = "127.64.0.1")]
    pub giaddr: std::net::Ipv4Addr,
    /// Phones booting at the same time (default: all of them).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Retransmit a DHCP message unanswered after this many milliseconds, doubling each
    /// time (RFC 2131's 4 s, as phones do).
    #[arg(long, default_value_t = 4000)]
    pub timeout_ms: u64,
    /// Transmissions of one DHCP message, and NAKs, before a phone gives up.
    #[arg(long, default_value_t = 4)]
    pub tries: u32,
    /// Path prefix before the file name (e.g. `/device/provisioning/KEY`).
    #[arg(long, default_value = "")]
    pub prefix: String,
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Main configuration file; FILE's directory's conf.d/*.toml are merged over it.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// File looked for when --config is not given; without it, the embedded development
    /// default is used.
    #[arg(long, value_name = "FILE", env = "PROVISIOND_CONFIG", default_value = DEFAULT_CONFIG_PATH, global = true)]
    pub default_config: PathBuf,
}

/// Arguments of `store`.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: StoreAction,
    /// Configuration sources (for `[general] data_dir`).
    #[command(flatten)]
    pub source: ConfigArgs,
}

/// `store` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum StoreAction {
    /// Compare every index and count with the records; exit 1 if one differs.
    Check {
        /// Rebuild every index and count from the records when one differs.
        #[arg(long)]
        repair: bool,
    },
}

/// Arguments of `check-config`.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Configuration sources.
    #[command(flatten)]
    pub source: ConfigArgs,
    /// Print the effective merged configuration (TOML) when it is valid.
    #[arg(long)]
    pub print: bool,
}

/// How the admin commands reach the daemon: its local admin socket (`[api] socket`), where
/// root, provisiond's user and members of group `provisiond` need no token.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Configuration sources (for `[api] socket`).
    #[command(flatten)]
    pub source: ConfigArgs,
    /// The daemon's admin socket, instead of the configuration's `[api] socket`.
    #[arg(long, value_name = "PATH", global = true)]
    pub socket: Option<PathBuf>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Arguments of `device`.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: DeviceAction,
    /// Socket, configuration and output.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Act for this tenant (`Wazo-Tenant`) instead of the default tenant.
    #[arg(long, value_name = "TENANT", global = true)]
    pub tenant: Option<String>,
}

/// Device fields set by `device add` and `device edit`.
#[derive(Debug, Clone, Default, Args)]
pub struct DeviceFields {
    /// IP address (an empty value clears it).
    #[arg(long)]
    pub ip: Option<String>,
    /// Plugin name (an empty value clears it).
    #[arg(long)]
    pub plugin: Option<String>,
    /// Provisioning config id (an empty value clears it). Not `--config`: that one names the
    /// daemon's configuration file.
    #[arg(long, value_name = "CONFIG")]
    pub config_id: Option<String>,
    /// Free text (an empty value clears it).
    #[arg(long)]
    pub description: Option<String>,
}

/// `device` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum DeviceAction {
    /// One line per device.
    List {
        /// Every tenant's devices (the default tenant only).
        #[arg(long)]
        all: bool,
    },
    /// Every field of one device.
    Show {
        /// Device id.
        id: String,
    },
    /// Create a device; prints its id.
    Add {
        /// MAC address.
        #[arg(long)]
        mac: String,
        /// Other fields.
        #[command(flatten)]
        fields: DeviceFields,
    },
    /// Change the given fields of a device; the others keep their values.
    Edit {
        /// Device id.
        id: String,
        /// MAC address.
        #[arg(long)]
        mac: Option<String>,
        /// Fields to change.
        #[command(flatten)]
        fields: DeviceFields,
    },
    /// Delete a device.
    Delete {
        /// Device id.
        id: String,
    },
    /// Back to autoprov in its tenant, so that the phone shows the code form again; resynced.
    Reset {
        /// Device id.
        id: String,
    },
    /// The device's own admin password (web interface of the phone).
    Password {
        /// Device id.
        id: String,
    },
}

/// Arguments of `config`.
#[derive(Debug, Clone, Args)]
pub struct ConfigObjArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: ConfigAction,
    /// Socket, configuration and output.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Act for this tenant (`Wazo-Tenant`) instead of the default tenant.
    #[arg(long, value_name = "TENANT", global = true)]
    pub tenant: Option<String>,
}

/// `config` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ConfigAction {
    /// One line per config.
    List {
        /// Every tenant's configs (the default tenant only).
        #[arg(long)]
        all: bool,
    },
    /// Every field of one config, its raw config flattened to dotted keys.
    Show {
        /// Config id.
        id: String,
    },
    /// The raw config that devices of this config get: base, then the parents, then it.
    Raw {
        /// Config id.
        id: String,
    },
    /// Create a config; prints its id.
    Add {
        /// Config id (generated when not given).
        #[arg(long)]
        id: Option<String>,
        /// Parent config ids, most general first (repeat the option).
        #[arg(long = "parent", value_name = "ID")]
        parents: Vec<String>,
        /// The raw config: a JSON object.
        #[arg(long, value_name = "JSON", conflicts_with = "raw_file")]
        raw_json: Option<String>,
        /// The raw config from a file holding a JSON object (`-` reads standard input).
        #[arg(long, value_name = "FILE")]
        raw_file: Option<PathBuf>,
    },
    /// Delete a config (refused while other configs name it as a parent).
    Delete {
        /// Config id.
        id: String,
    },
}

/// Arguments of `tenant`.
#[derive(Debug, Clone, Args)]
pub struct TenantArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: TenantAction,
    /// Socket, configuration and output.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Act for this tenant (`Wazo-Tenant`) instead of the default tenant.
    #[arg(long, value_name = "TENANT", global = true)]
    pub tenant: Option<String>,
}

/// `tenant` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TenantAction {
    /// One line per tenant.
    List,
    /// Every field of one tenant.
    Show {
        /// Tenant id.
        id: String,
    },
    /// Create a tenant below another (`add` is an alias).
    #[command(visible_alias = "add")]
    Create {
        /// Tenant id.
        id: String,
        /// Display name (the id when not given).
        #[arg(long)]
        name: Option<String>,
        /// The tenant above it (the tenant acted for when not given: the default tenant, or
        /// `--tenant`).
        #[arg(long, value_name = "TENANT")]
        parent: Option<String>,
    },
    /// Delete a tenant.
    Delete {
        /// Tenant id.
        id: String,
    },
    /// Set the tenant's provisioning key (`url_key` strategy: 8 to 256 of A-Z a-z 0-9 - $ ~ .).
    SetKey {
        /// Tenant id.
        id: String,
        /// The key.
        key: String,
    },
    /// Remove the tenant's provisioning key.
    ClearKey {
        /// Tenant id.
        id: String,
    },
}

/// Arguments of `user`.
#[derive(Debug, Clone, Args)]
pub struct UserArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: UserAction,
    /// Socket, configuration and output.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `user` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum UserAction {
    /// Create a console user; the password is asked for (or read from --password-file).
    Create {
        /// Sign-in name.
        name: String,
        /// Tenant whose subtree the user sees.
        #[arg(long)]
        tenant: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// Read the password from this file (`-` for standard input), first line.
        #[arg(long, value_name = "FILE")]
        password_file: Option<std::path::PathBuf>,
    },
    /// One line per user (never the passwords).
    List,
    /// Delete a user (their console sessions end).
    Delete {
        /// Sign-in name.
        name: String,
    },
}

/// Arguments of `token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: TokenAction,
    /// Socket, configuration and output.
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `token` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum TokenAction {
    /// Create a token and print its secret (shown this once only).
    Create {
        /// Tenant the token acts for.
        #[arg(long)]
        tenant: String,
        /// ACL entry (wazo-auth syntax: `provd.dev_mgr.#`); repeat the option. Default `provd.#`.
        #[arg(long = "acl", value_name = "ACL")]
        acl: Vec<String>,
        /// Lifetime in seconds (no expiry when not given).
        #[arg(long, value_name = "SECONDS")]
        expires: Option<u64>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
    },
    /// One line per token (never the secrets).
    List {
        /// Only this tenant's tokens.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Delete a token by its id (or an unambiguous prefix of it).
    Delete {
        /// Token id.
        id: String,
    },
}

/// Arguments of the provisioning commands (`category`, `code`, `rollout`, `job`, `auto`).
#[derive(Debug, Clone, Args)]
pub struct ProvArgs<A: Subcommand> {
    /// What to do.
    #[command(subcommand)]
    pub action: A,
    /// Socket, configuration and output.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Act for this tenant (`Wazo-Tenant`) instead of the default tenant.
    #[arg(long, value_name = "TENANT", global = true)]
    pub tenant: Option<String>,
}

/// `category` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CategoryAction {
    /// One line per category of the tenant.
    List {
        /// Also the categories of the tenants below.
        #[arg(long)]
        recurse: bool,
    },
    /// Every field of one category.
    Show {
        /// Category id or name.
        id: String,
    },
    /// Create a category in the tenant.
    Create {
        /// Name, unique in the tenant (automatic URLs carry it).
        name: String,
        /// Config that the category's devices inherit.
        #[arg(long = "config-id", value_name = "CONFIG")]
        config_id: Option<String>,
        /// Free text.
        #[arg(long)]
        description: Option<String>,
        /// Codes and automatic URLs may name it.
        #[arg(long)]
        provisioning: bool,
        /// Firmware policy entry `MODEL=VERSION:FILE`; repeat the option.
        #[arg(long = "firmware", value_name = "MODEL=VERSION:FILE")]
        firmware: Vec<String>,
    },
    /// Delete a category (refused while live codes name it).
    Delete {
        /// Category id or name.
        id: String,
    },
}

/// `code` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum CodeAction {
    /// Issue a code valid 10 minutes and print it.
    Create {
        /// Provisioning category (id or name).
        #[arg(long)]
        category: String,
        /// Config the phone gets (the user's line).
        #[arg(long = "config-id", value_name = "CONFIG")]
        config_id: Option<String>,
        /// Free text (the user).
        #[arg(long)]
        label: Option<String>,
    },
    /// The live codes of the tenant.
    List {
        /// Also the codes of the tenants below.
        #[arg(long)]
        recurse: bool,
    },
    /// Revoke a live code.
    Revoke {
        /// The 12 digits.
        code: String,
    },
    /// Redeem a code for a phone (an installer's way): by MAC, IP or device id.
    Redeem {
        /// The 12 digits.
        code: String,
        /// The phone's MAC (a new device if unknown).
        #[arg(long, conflicts_with_all = ["ip", "device"])]
        mac: Option<String>,
        /// The phone's IP address.
        #[arg(long, conflicts_with = "device")]
        ip: Option<String>,
        /// The device id.
        #[arg(long)]
        device: Option<String>,
    },
}

/// `rollout` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum RolloutAction {
    /// Create a rollout: one code per entry, valid 7 days.
    Create {
        /// Provisioning category (id or name).
        #[arg(long)]
        category: String,
        /// CSV file of the entries (`label,config`, header optional; `-` for stdin).
        #[arg(long, value_name = "FILE", conflicts_with = "entry")]
        csv: Option<PathBuf>,
        /// One entry `LABEL` or `LABEL=CONFIG`; repeat the option.
        #[arg(long = "entry", value_name = "LABEL[=CONFIG]")]
        entry: Vec<String>,
    },
    /// One line per rollout.
    List,
    /// The entries of one rollout, with their codes and states.
    Show {
        /// Rollout id.
        id: String,
    },
    /// The rollout as CSV (code,label,category,state,device_mac,registered_at).
    Export {
        /// Rollout id.
        id: String,
        /// Write here instead of the standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Delete a rollout and its codes still live.
    Delete {
        /// Rollout id.
        id: String,
    },
}

/// `job` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum JobAction {
    /// One line per job.
    List,
    /// Update Software: the firmware each model of the category should run.
    Firmware {
        /// Category (id or name).
        #[arg(long)]
        category: String,
        /// `MODEL=VERSION:FILE`; repeat the option. None: the category's firmware policy.
        #[arg(long = "version", value_name = "MODEL=VERSION:FILE")]
        versions: Vec<String>,
    },
    /// Update Config: raw-config parameters of one type (locale, timezone, ntp, params), or
    /// new admin passwords for the category's provisioned phones (admin_password_rotation).
    Config {
        /// Category (id or name).
        #[arg(long)]
        category: String,
        /// The type.
        #[arg(long = "type", value_name = "TYPE")]
        kind: String,
        /// `KEY=VALUE` (VALUE as JSON when it parses, else text); repeat the option; none for
        /// admin_password_rotation.
        #[arg(long = "param", value_name = "KEY=VALUE")]
        params: Vec<String>,
    },
    /// Delete a job.
    Delete {
        /// Job id.
        id: String,
    },
}

/// `auto` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum AutoAction {
    /// Whether automatic provisioning is on, and the URL of each provisioning category.
    Show,
    /// Set the tenant's token (`--generate` draws one).
    Set {
        /// The token (8 to 128 printable ASCII characters).
        #[arg(required_unless_present = "generate")]
        token: Option<String>,
        /// Draw a random token.
        #[arg(long, conflicts_with = "token")]
        generate: bool,
    },
    /// Turn automatic provisioning off.
    Off,
}
