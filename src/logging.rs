//! Log output: human-readable by default, JSON with `--log-format json`. Pingora's and sqlx's
//! `log` records are bridged into `tracing` so none are lost.
//!
//! Lines go to stderr through a background writer (tracing-appender), so a slow terminal or
//! pipe never blocks a request; if the writer falls behind, lines are dropped, not requests.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Install the subscriber. Keep the returned guard alive until exit: dropping it flushes the
/// lines still queued.
pub(crate) fn init(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let filter = EnvFilter::try_from_env("TENANTGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,pingora_core=warn,pingora_proxy=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    guard
}
