use std::process::ExitCode;

use clap::Parser;

use provisiond::cli::{Cli, Command};
use provisiond::{admin, admin_client, bench, config, daemon};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => daemon::serve(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Plugin(args) => admin::plugin(&args),
        Command::Bench(args) => bench::run(&args.what),
        Command::Device(args) => admin_client::device(&args),
        Command::Config(args) => admin_client::config(&args),
        Command::Tenant(args) => admin_client::tenant(&args),
        Command::Token(args) => admin_client::token(&args),
    }
}

fn check_config(args: &provisiond::cli::CheckArgs) -> ExitCode {
    let source = &args.source;
    match config::load(source.config.as_deref(), &source.default_config) {
        Ok(loaded) => {
            let names: Vec<String> = loaded.sources.iter().map(|s| s.to_string()).collect();
            if args.print {
                match toml::to_string_pretty(&loaded.settings) {
                    Ok(text) => print!("{text}"),
                    Err(e) => {
                        eprintln!("cannot print the configuration: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            eprintln!("configuration OK: {}", names.join(", "));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            let n = errors.0.len();
            eprintln!(
                "configuration invalid: {n} problem{}",
                if n == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}
