//! The tenantgate admin API and provisioning worker.
//!
//! (Skeleton: being built under issue 4.)

use std::sync::Arc;

use tenantgate_catalog::config::Config;
use tenantgate_catalog::Catalog;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The admin component's typed error.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("catalog: {0}")]
    Catalog(#[from] tenantgate_catalog::CatalogError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Serve the admin API on `listener` and run the provisioning worker until `shutdown`.
pub async fn serve(
    config: Arc<Config>,
    catalog: Catalog,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    let _ = (config, catalog, listener);
    shutdown.cancelled().await;
    Ok(())
}
