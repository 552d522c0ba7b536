//! `provisiond man` and `provisiond completions SHELL`: the man page (provisiond.8) and the
//! shell completions, generated from the clap definitions so that they never drift from the
//! CLI. `packaging/build-deb` installs their output.

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_mangen::roff::{bold, italic, roman, Roff};

use crate::cli::Cli;

/// Writes provisiond.8 (roff) to `out`.
pub fn write_man(out: &mut dyn Write) -> std::io::Result<()> {
    let cmd = Cli::command().long_about(DESCRIPTION);
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(format!("provisiond {}", env!("CARGO_PKG_VERSION")));
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    let mut extra = Roff::new();
    commands_section(&mut extra, &cmd);
    extra.control("SH", ["FILES"]);
    for (file, what) in [
        (
            "/etc/provisiond/provisiond.toml",
            "The configuration (conffile): every key commented with its default.",
        ),
        (
            "/etc/provisiond/conf.d/*.toml",
            "Drop-in files merged over it in name order; later files win key by key.",
        ),
        (
            "/var/lib/provisiond/",
            "The store (db/) and the administrator's plugins (plugins/).",
        ),
        ("/usr/share/provisiond/plugins/", "Built-in vendor plugins."),
        (
            "/run/provisiond/api.sock",
            "Local admin socket used by the device, config, tenant and token commands.",
        ),
        (
            "/usr/share/doc/provisiond/examples/",
            "Hooks for ISC dhcpd, Kea and dnsmasq.",
        ),
    ] {
        extra
            .control("TP", [])
            .text([bold(file)])
            .text([roman(what)]);
    }
    extra.control("SH", ["SIGNALS"]);
    for (signal, what) in [
        (
            "SIGHUP",
            "Reload the configuration; a broken file is reported and the running configuration kept.",
        ),
        (
            "SIGTERM, SIGINT",
            "Finish in-flight requests, flush the store and exit 0.",
        ),
    ] {
        extra
            .control("TP", [])
            .text([bold(signal)])
            .text([roman(what)]);
    }
    extra.control("SH", ["ENVIRONMENT"]);
    for (var, what) in [
        (
            "PROVISIOND_CONFIG",
            "The configuration file looked for when --config is not given.",
        ),
        (
            "RUST_LOG",
            "Log filter; overrides [log] level.",
        ),
        (
            "NOTIFY_SOCKET, WATCHDOG_USEC",
            "Set by systemd (Type=notify): provisiond reports READY=1 once every socket is bound, RELOADING=1, STOPPING=1, and pings the watchdog.",
        ),
        (
            "JOURNAL_STREAM",
            "Set by systemd: logs go to journald with structured fields (DEVICE, DEVICE_MAC, TENANT, PLUGIN, PEER, STATUS).",
        ),
    ] {
        extra
            .control("TP", [])
            .text([bold(var)])
            .text([roman(what)]);
    }
    extra
        .control("SH", ["EXIT STATUS"])
        .text([roman(
            "0 on success (serve: after a clean shutdown); 1 on an invalid configuration or any other failure.",
        )])
        .control("SH", ["SEE ALSO"])
        .text([
            bold("systemctl"),
            roman("(1), "),
            bold("journalctl"),
            roman("(1), /usr/share/doc/provisiond/README.md"),
        ]);
    extra.to_writer(out)?;
    man.render_version_section(out)?;
    Ok(())
}

const DESCRIPTION: &str = "provisiond takes desk phones from factory reset to configured: it \
identifies each phone from its DHCP options, User-Agent or requested file name, keeps devices, \
configs and tenants in its store, and serves every phone its rendered files over HTTP(S) and \
TFTP. Its REST API is wazo-provd's. Under systemd (provisiond.service) it runs as user \
provisiond, tells systemd when it is ready, and drops every capability once its sockets are \
bound.";

/// One entry per command: its usage, what it does, and its arguments.
fn commands_section(roff: &mut Roff, cmd: &clap::Command) {
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut sub = sub
            .clone()
            .bin_name(format!("provisiond {}", sub.get_name()));
        let usage = sub.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        roff.control("TP", [])
            .text([bold(usage.lines().next().unwrap_or(usage))]);
        if let Some(about) = sub.get_about() {
            roff.text([roman(about.to_string())]);
        }
        let nested: Vec<&str> = sub
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
            .map(|s| s.get_name())
            .collect();
        if !nested.is_empty() {
            roff.control("br", [])
                .text([roman(format!("Commands: {}.", nested.join(", ")))]);
        }
        let args: Vec<&clap::Arg> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
            .collect();
        if args.is_empty() {
            continue;
        }
        roff.control("RS", []);
        for arg in args {
            let name = match (arg.get_short(), arg.get_long()) {
                (Some(s), Some(l)) => format!("-{s}, --{l}"),
                (None, Some(l)) => format!("--{l}"),
                (Some(s), None) => format!("-{s}"),
                (None, None) => arg.get_id().to_string().to_uppercase(),
            };
            let value = if arg.get_action().takes_values() && arg.get_long().is_some() {
                arg.get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| format!(" {v}"))
                    .unwrap_or_else(|| format!(" {}", arg.get_id().as_str().to_uppercase()))
            } else {
                String::new()
            };
            roff.control("TP", [])
                .text([bold(name), italic(value)])
                .text([roman(
                    arg.get_help().map(|h| h.to_string()).unwrap_or_default(),
                )]);
        }
        roff.control("RE", []);
    }
    roff.control("TP", [])
        .text([bold("provisiond help"), italic(" COMMAND")])
        .text([roman(
            "The same, and the options of nested commands, on the terminal.",
        )]);
}

/// Writes the completion script for `shell` to `out`.
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn Write) {
    clap_complete::generate(shell, &mut Cli::command(), "provisiond", out);
}

/// `provisiond man`.
pub fn man() -> ExitCode {
    let mut out = std::io::stdout().lock();
    match write_man(&mut out).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provisiond: cannot write the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `provisiond completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut out = std::io::stdout().lock();
    write_completions(shell, &mut out);
    match out.flush() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provisiond: cannot write the completions: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_page_names_every_command_and_the_files() {
        let mut page = Vec::new();
        write_man(&mut page).unwrap();
        let page = String::from_utf8(page).unwrap();
        assert!(page.starts_with(".ie"), "{page}");
        assert!(page.contains(".TH provisiond 8"), "{page}");
        for name in [
            "serve",
            "check\\-config",
            "plugin",
            "device",
            "/etc/provisiond/conf.d/*.toml",
            "SIGHUP",
        ] {
            assert!(page.contains(name), "{name} missing:\n{page}");
        }
    }

    #[test]
    fn completions_cover_the_subcommands() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh] {
            let mut script = Vec::new();
            write_completions(shell, &mut script);
            let script = String::from_utf8(script).unwrap();
            assert!(
                script.contains("check-config") && script.contains("serve"),
                "{script}"
            );
        }
    }
}
