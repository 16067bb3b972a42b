//! The tenantgate admin API and provisioning worker.
//!
//! [`serve`] runs three things until shutdown: the axum API (routes in [`api`]), the
//! provisioning worker ([`jobs`]) that turns queued jobs into tenant databases, and the webhook
//! deliverer ([`webhooks`]). All state lives in the catalog, so any number of admin processes
//! may run against one catalog, and a crash loses nothing: jobs and webhook deliveries are
//! leased and picked up again.
//!
//! [`ensure_shard`], [`ensure_tenant`] and [`tokens`] are for the CLI (`tenantgate dev`
//! seeding, `tenantgate token create`).

mod acme;
mod api;
mod auth;
mod backup;
pub mod backups;
mod error;
mod extract;
pub mod fleet;
mod jobs;
mod limits;
mod metrics;
pub mod rebalance;
mod scheduler;
mod state;
pub mod tokens;
pub mod webhooks;
mod write;
pub use backup::tenant::Verified;
pub use backup::BackupError;
pub use error::{AdminError, FieldError};
pub use scheduler::Scheduled;

use std::sync::Arc;
use std::time::Duration;

use state::AdminState;
use tenantgate_catalog::Catalog;
use tenantgate_config::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Actor recorded in the audit log for writes made through the CLI helpers.
const CLI_ACTOR: &str = "cli";

/// How long the HTTP server may take to finish in-flight requests after shutdown.
const DRAIN: Duration = Duration::from_millis(1500);

/// Serve the admin API on `listener` and run the provisioning worker and the webhook deliverer
/// until `shutdown` is cancelled; returns within about 1.5 s after that. Errors only when the
/// listener fails.
pub async fn serve(
    config: Arc<Config>,
    catalog: Catalog,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    let state = AdminState::new(config, catalog);
    // A child token, so that a failing listener stops this component's tasks only.
    let background = shutdown.child_token();
    let worker = tokio::spawn(jobs::run(state.clone(), background.clone()));
    let deliverer = tokio::spawn(webhooks::run(state.clone(), background.clone()));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    let server = std::future::IntoFuture::into_future(
        // With the peer address, for the per-address rate limit (crate::limits).
        axum::serve(
            listener,
            api::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown.clone().cancelled_owned()),
    );
    tokio::pin!(server);
    // Long-lived connections could hold graceful shutdown open; one deadline bounds the
    // server, the worker and the deliverer together.
    let result = tokio::select! {
        r = &mut server => r,
        _ = shutdown.cancelled() => {
            let deadline = tokio::time::Instant::now() + DRAIN;
            let server = tokio::time::timeout_at(deadline, &mut server).await.unwrap_or(Ok(()));
            let _ = tokio::time::timeout_at(deadline, async {
                let _ = worker.await;
                let _ = deliverer.await;
            })
            .await;
            return server.map_err(AdminError::Io);
        }
    };
    // The server stopped on its own (listener failure): stop the rest too.
    background.cancel();
    let _ = tokio::time::timeout(DRAIN, async {
        let _ = worker.await;
        let _ = deliverer.await;
    })
    .await;
    result.map_err(AdminError::Io)
}

/// Build the admin router over `catalog` without a worker, for tests and embedding: the API
/// answers, but queued jobs run only where [`serve`] (or [`run_worker`]) runs.
pub fn router(config: Arc<Config>, catalog: Catalog) -> axum::Router {
    api::router(AdminState::new(config, catalog))
}

/// Run only the provisioning worker until `shutdown` (another process may serve the API).
pub async fn run_worker(config: Arc<Config>, catalog: Catalog, shutdown: CancellationToken) {
    jobs::run(AdminState::new(config, catalog), shutdown).await;
}

/// Queue everything the scheduler finds due at `now_ms` (milliseconds since the Unix epoch):
/// the scheduled backups under `config`'s `[backups] schedule` and the daily data-retention
/// passes, as the scheduler of [`serve`] does every 30 s with the wall clock. For tests that
/// drive the schedules with a simulated clock, and for operators' tools.
pub async fn schedule_tick(
    config: Arc<Config>,
    catalog: Catalog,
    now_ms: i64,
) -> Result<Scheduled, AdminError> {
    scheduler::tick(&AdminState::new(config, catalog), now_ms).await
}

/// Make sure shard `name` exists with these app upstreams: create it (status active) if absent,
/// update its upstreams if they differ, else change nothing. For `tenantgate dev`, which
/// restarts on the same ports. Validation failures are [`AdminError::Invalid`].
pub async fn ensure_shard(
    catalog: &Catalog,
    name: &str,
    app_upstreams: Vec<String>,
    database_url: &str,
) -> Result<(), AdminError> {
    // Shard writes read nothing from the configuration; a default one serves.
    let state = AdminState::new(Arc::new(cli_config()?), catalog.clone());
    match catalog.shard(name).await? {
        None => {
            let request = api::checked(
                &state,
                serde_json::json!({
                    "name": name, "app_upstreams": app_upstreams, "database_url": database_url,
                }),
            )?;
            api::shards::create(&state, CLI_ACTOR, request).await?;
        }
        Some(shard) if shard.app_upstreams != app_upstreams => {
            api::shards::update(&state, CLI_ACTOR, name, None, Some(app_upstreams), None).await?;
        }
        Some(_) => {}
    }
    Ok(())
}

fn cli_config() -> Result<Config, AdminError> {
    Config::try_from(tenantgate_config::RawConfig::default())
        .map_err(|e| AdminError::BadRequest(e.to_string()))
}

/// Create tenant `slug` (status provisioning, with its provisioning job) unless a tenant with
/// that slug exists; then nothing changes. The job runs in whichever process runs [`serve`];
/// poll the catalog until the tenant is `active`. `settings` must pass the API's validation
/// (e.g. `{"locale": "de"}`).
pub async fn ensure_tenant(
    config: &Config,
    catalog: &Catalog,
    slug: &str,
    name: &str,
    domain: &str,
    shard: &str,
    settings: serde_json::Value,
) -> Result<(), AdminError> {
    if catalog.tenant(slug).await?.is_some() {
        return Ok(());
    }
    let state = AdminState::new(Arc::new(config.clone()), catalog.clone());
    let request: api::tenants::CreateTenant = api::checked(
        &state,
        serde_json::json!({
            "slug": slug, "name": name, "domains": [domain], "shard": shard, "settings": settings,
        }),
    )?;
    api::tenants::create(&state, CLI_ACTOR, request).await?;
    Ok(())
}
