use std::process::ExitCode;

use clap::Parser;

use provisiond::cli::{Cli, Command};
use provisiond::dhcpinfo::notify;
use provisiond::{admin, admin_client, bench, config, daemon, docgen};

fn main() -> ExitCode {
    provisiond::memory::tune_allocator();
    // dnsmasq (`dhcp-script=/usr/bin/provisiond`) and Kea's run_script hook (`"name":
    // "/usr/bin/provisiond"`) run the binary itself with their own first argument: a dnsmasq
    // action or a Kea hook point name, which no subcommand may be called.
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .and_then(|first| first.to_str())
        .is_some_and(notify::is_hook_action)
    {
        return notify::run_hook(&argv[1..]);
    }
    let cli = Cli::parse_from(argv);
    match cli.command {
        Command::Serve(args) => daemon::serve(&args),
        Command::CheckConfig(args) => check_config(&args),
        Command::Plugin(args) => admin::plugin(&args),
        Command::Repo(args) => admin::repo(&args),
        Command::Bench(args) => bench::run(&args.what),
        Command::Device(args) => admin_client::device(&args),
        Command::Config(args) => admin_client::config(&args),
        Command::Tenant(args) => admin_client::tenant(&args),
        Command::Category(args) => admin_client::category(&args),
        Command::Code(args) => admin_client::code(&args),
        Command::Rollout(args) => admin_client::rollout(&args),
        Command::Job(args) => admin_client::job(&args),
        Command::Auto(args) => admin_client::auto(&args),
        Command::Token(args) => admin_client::token(&args),
        Command::User(args) => admin_client::user(&args),
        Command::Store(args) => admin::store(&args),
        Command::DhcpNotify(args) => notify::run(&args),
        Command::DhcpSnippet(args) => admin::dhcp_snippet(&args),
        Command::Man => docgen::man(),
        Command::Completions { shell } => docgen::completions(shell),
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
