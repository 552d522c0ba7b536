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
}

/// Where the configuration comes from.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Main configuration file; FILE's directory's conf.d/*.toml are merged over it.
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// File looked for when --config is not given; without it, the embedded development
    /// default is used.
    #[arg(long, value_name = "FILE", env = "PROVISIOND_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
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
