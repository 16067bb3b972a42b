//! Log output: human-readable by default, JSON with `--log-format json`. Pingora's and sqlx's
//! `log` records are bridged into `tracing` so none are lost.

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

pub(crate) fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_env("TENANTGATE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,pingora_core=warn,pingora_proxy=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
