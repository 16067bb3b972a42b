//! Log output: human-readable by default, JSON with `--log-format json`. Pingora's and sqlx's
//! `log` records are bridged into `tracing` so none are lost, with one change of level: see
//! [`Bridge`].
//!
//! Lines go to stderr through a background writer (tracing-appender), so a slow terminal or
//! pipe never blocks a request; if the writer falls behind, lines are dropped, not requests.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The `log` → `tracing` bridge, demoting Pingora's proxy-layer errors to info.
///
/// Every error-level line `pingora_proxy` 0.9 writes on the HTTP/1 proxy path without asking
/// the edge is about the client: a request header that could not be read (client closed, sent
/// garbage, hit the header deadline) or an answer that could not be written back (client gone).
/// Its failures of the upstream or of the edge itself go through `suppress_error_log`, where
/// the edge logs them at their own level (`tenantgate_edge::phases`). Client mistakes at error
/// level drown real errors (a hostile probe wrote 67 such lines), so they are info here, and
/// hidden by the default filter (`pingora_proxy=warn`). Re-check the call sites on a Pingora
/// upgrade.
struct Bridge(tracing_log::LogTracer);

impl log::Log for Bridge {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() == log::Level::Error && record.target().starts_with("pingora_proxy") {
            let demoted = log::Record::builder()
                .args(*record.args())
                .level(log::Level::Info)
                .target(record.target())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build();
            if self.0.enabled(demoted.metadata()) {
                self.0.log(&demoted);
            }
        } else {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush()
    }
}

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
    let dispatch: tracing::Dispatch = match format {
        LogFormat::Text => builder.finish().into(),
        LogFormat::Json => builder.json().finish().into(),
    };
    // Installed without tracing-log's own bridge (which `try_init` would add), then ours.
    if tracing::dispatcher::set_global_default(dispatch).is_ok() {
        let _ = log::set_boxed_logger(Box::new(Bridge(tracing_log::LogTracer::new())));
        log::set_max_level(log::LevelFilter::Trace);
    }
    guard
}
