//! The tenantgate edge: a Pingora proxy that routes each request to its tenant's shard.
//!
//! (Skeleton: being built under issue 3.)

use std::sync::Arc;

use tenantgate_catalog::config::Config;
use tokio_util::sync::CancellationToken;

/// The edge's typed error.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("catalog: {0}")]
    Catalog(#[from] tenantgate_catalog::CatalogError),
    #[error("edge failed to start: {0}")]
    Start(String),
}

/// A running edge inside this process.
pub struct EdgeHandle {
    thread: std::thread::JoinHandle<()>,
}

impl EdgeHandle {
    /// Wait until the edge has stopped (after `shutdown` was cancelled).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Start the edge on its own threads: listens on `config.edge.listen` (proxy) and
/// `config.edge.metrics_listen` (metrics, health), follows the catalog, and stops gracefully when
/// `shutdown` is cancelled.
pub fn start(config: Arc<Config>, shutdown: CancellationToken) -> Result<EdgeHandle, ProxyError> {
    let _ = config;
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(shutdown.cancelled());
    });
    Ok(EdgeHandle { thread })
}
