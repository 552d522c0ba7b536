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
