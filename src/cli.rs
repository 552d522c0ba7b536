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
