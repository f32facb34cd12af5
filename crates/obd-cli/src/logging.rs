//! Logging set-up shared by the binaries: `--verbose`, `-q`/`--quiet` (errors only),
//! `--log-format text|json` (one JSON object per line, for CI logs), and colour only on a
//! terminal without `NO_COLOR`. `RUST_LOG` overrides the level.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The logging flags of every binary.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct LogArgs {
    /// show debug log
    #[arg(long, global = true, conflicts_with = "quiet")]
    pub verbose: bool,
    /// print errors only (no progress, no info lines)
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,
    /// log lines as text or as one JSON object per line
    #[arg(long = "log-format", value_enum, global = true, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Progress bars make sense: stderr is a terminal, text logs, not quiet.
    pub fn bars_allowed(&self) -> bool {
        std::io::stderr().is_terminal() && !self.quiet && self.log_format == LogFormat::Text
    }
}

/// Colour codes only on a terminal, and never with `NO_COLOR` set (<https://no-color.org>).
pub fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Logs to stderr as `a` says, above progress bars when there are some.
pub fn init(a: &LogArgs, bars: Option<indicatif::MultiProgress>) {
    let default = if a.quiet {
        "error"
    } else if a.verbose {
        "debug"
    } else {
        "info"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(colour() && a.log_format == LogFormat::Text);
    let _ = match (a.log_format, bars) {
        (LogFormat::Json, _) => b
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .try_init(),
        (LogFormat::Text, Some(mp)) => b.with_writer(crate::progress::AboveBars(mp)).try_init(),
        (LogFormat::Text, None) => b.with_writer(std::io::stderr).try_init(),
    };
}
