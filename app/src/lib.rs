//! The tenantgate app tier: verified tenant context, per-tenant pools, RBAC, sample resources.
//!
//! (Skeleton: being built under issue 5.)

use std::sync::Arc;

use tenantgate_catalog::config::Config;
use tenantgate_catalog::Catalog;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The app tier's typed error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("catalog: {0}")]
    Catalog(#[from] tenantgate_catalog::CatalogError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Serve the app for shard `config.app.shard` on `listener` until `shutdown`.
pub async fn serve(
    config: Arc<Config>,
    catalog: Catalog,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let _ = (config, catalog, listener);
    shutdown.cancelled().await;
    Ok(())
}
