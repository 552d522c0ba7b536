//! Logging: journald when started by systemd, human-readable text on stderr otherwise.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Where log records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The systemd journal, with structured fields.
    Journald,
    /// Text lines on stderr.
    Stderr,
}

/// Controls the installed logger after start-up.
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, Registry>,
    /// True when `RUST_LOG` was set: it then wins over `[log] level`, at start and on reload.
    pub env_override: bool,
    /// Where records go.
    pub output: Output,
}

/// Why the logger could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter does not parse.
    #[error("invalid log filter {filter:?}: {source}")]
    Filter {
        /// The filter text.
        filter: String,
        /// Parser error.
        source: tracing_subscriber::filter::ParseError,
    },
    /// A global logger exists already.
    #[error("cannot install the logger: {0}")]
    Install(String),
}

fn parse(filter: &str) -> Result<EnvFilter, LogError> {
    EnvFilter::try_new(filter).map_err(|source| LogError::Filter {
        filter: filter.to_owned(),
        source,
    })
}

/// Installs the global logger with `level` (RUST_LOG syntax) unless `RUST_LOG` is set.
pub fn init(level: &str) -> Result<LogHandle, LogError> {
    let env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = parse(env.as_deref().unwrap_or(level))?;
    let (filter, handle) = reload::Layer::new(filter);
    // systemd sets JOURNAL_STREAM for services whose stdout/stderr go to the journal.
    let journald = if std::env::var_os("JOURNAL_STREAM").is_some() {
        // Fields keep their own names, upper-cased (DEVICE, DEVICE_MAC, TENANT, PLUGIN, PEER,
        // STATUS…), so that `journalctl DEVICE_MAC=80:5e:c0:11:22:33` finds a phone's lines.
        tracing_journald::layer().ok().map(|layer| {
            layer
                .with_field_prefix(None)
                .with_priority_mappings(syslog_priorities())
        })
    } else {
        None
    };
    let output = if journald.is_some() {
        Output::Journald
    } else {
        Output::Stderr
    };
    let stderr = journald.is_none().then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
    });
    tracing_subscriber::registry()
        .with(filter)
        .with(journald)
        .with(stderr)
        .try_init()
        .map_err(|e| LogError::Install(e.to_string()))?;
    Ok(LogHandle {
        filter: handle,
        env_override: env.is_some(),
        output,
    })
}

/// syslog's meaning of the levels (tracing-journald's default makes INFO a notice): the
/// access log at info is then not in `journalctl -p notice`.
fn syslog_priorities() -> tracing_journald::PriorityMappings {
    use tracing_journald::Priority;
    tracing_journald::PriorityMappings {
        error: Priority::Error,
        warn: Priority::Warning,
        info: Priority::Informational,
        debug: Priority::Debug,
        trace: Priority::Debug,
    }
}

impl LogHandle {
    /// Replaces the filter (ignored while `RUST_LOG` overrides the configuration).
    pub fn set_level(&self, level: &str) -> Result<(), LogError> {
        if self.env_override {
            return Ok(());
        }
        let filter = parse(level)?;
        self.filter
            .reload(filter)
            .map_err(|e| LogError::Install(e.to_string()))
    }
}
