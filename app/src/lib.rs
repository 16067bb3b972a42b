//! The tenantgate app tier: a stateless axum app that trusts only what the edge signed, opens
//! the request's tenant database and no other, and holds a bounded number of connections however
//! many tenants its shard has.
//!
//! The crate is also a library for other teams' apps. The pieces:
//!
//! - [`require_tenant`] (middleware) + [`TenantContext`] (extractor): the verified tenant of a
//!   request, with its settings. Requests without a valid signature get 401 and touch no
//!   database.
//! - [`TenantContext::db`] / [`TenantContext::read_db`] → [`TenantDb`]: the tenant's database,
//!   from the [`PoolManager`] (one pool per tenant, bounded budget, LRU/idle eviction, closed
//!   when the tenant is suspended or deleted). The only way to a tenant database is through a
//!   context, so a handler that forgot the tenant does not compile.
//! - [`Credential`] (extractor) + [`Permission`]: RBAC against the tenant database.
//! - [`AppState`]: everything above plus the catalog cache and metrics, as axum state.
//!
//! A handler of your own:
//!
//! ```no_run
//! use axum::{routing::get, Json, Router};
//! use tenantgate_app::{AppError, AppState, Credential, Permission, TenantContext};
//!
//! async fn count(ctx: TenantContext, cred: Credential) -> Result<Json<i64>, AppError> {
//!     let (_user, mut db) = cred.read(&ctx, Permission::ItemsRead).await?;
//!     let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM items").fetch_one(&mut *db).await?;
//!     Ok(Json(n))
//! }
//!
//! fn my_routes(state: AppState) -> Router {
//!     Router::new()
//!         .route("/count", get(count))
//!         .route_layer(axum::middleware::from_fn_with_state(state.clone(), tenantgate_app::require_tenant))
//!         .with_state(state)
//! }
//! ```

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tenantgate_catalog::Catalog;
use tenantgate_config::Config;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

mod api;
pub mod audit;
pub mod context;
pub mod cookies;
pub mod directory;
pub mod error;
pub mod export;
mod fence;
pub mod items;
pub mod login;
pub mod metrics;
pub mod pages;
pub mod pools;
pub mod rbac;
pub mod replay;
pub mod replicas;
pub mod roles;
pub mod sessions;
pub mod state;
pub mod usage;
pub mod users;

pub use context::{require_tenant, TenantContext};
pub use error::{AppError, Unavailable};
pub use metrics::AppMetrics;
pub use pools::{DbRole, PoolManager, PoolOptions, PoolStats, TenantDb};
pub use rbac::{Credential, Permission, User};
pub use state::{AppState, Background};
pub use tenantgate_contract::TenantSettings;

/// How long in-flight requests may finish after shutdown before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1000);

/// Serve the app for shard `config.app.shard` on `listener` until `shutdown` is cancelled.
///
/// Starts the catalog feed follower and the idle-pool reaper, serves, and on shutdown stops
/// accepting, gives in-flight requests up to a second, closes every tenant pool and returns.
/// Errors only when the listener fails.
pub async fn serve(
    config: Arc<Config>,
    catalog: Catalog,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), AppError> {
    let state = AppState::new(config, catalog);
    let tasks = shutdown.child_token();
    let background = state.start(tasks.clone());
    tracing::info!(shard = %state.config().app.shard, addr = ?listener.local_addr().ok(), "app serving");
    let server = axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    let result = tokio::select! {
        r = server.into_future() => r.map_err(AppError::from),
        _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => {
            tracing::warn!("requests still running at the shutdown deadline; cutting them");
            Ok(())
        }
    };
    tasks.cancel();
    state.pools().close_all(Duration::from_millis(500)).await;
    background.join().await;
    result
}

/// The whole app (DESIGN §7): `/healthz` and `/metrics` without a tenant; everything else
/// behind [`require_tenant`].
pub fn router(state: AppState) -> Router {
    let tenant_routes = Router::new()
        .route("/whoami", get(whoami))
        .merge(api::router())
        .route("/dashboard", get(pages::dashboard))
        .route("/login", get(pages::login_page).post(pages::login))
        .route("/logout", post(pages::logout))
        .route_layer(from_fn_with_state(state.clone(), require_tenant));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics_handler))
        .merge(tenant_routes)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(state.clone(), metrics::track_requests))
        .with_state(state)
}

/// A method a route does not take: 405 (axum adds `Allow`), after reading the request body.
/// Answering before the body is read would make hyper close the connection while the edge may
/// still be sending that body, and the edge would answer the client 502 instead of this 405.
async fn method_not_allowed(req: axum::extract::Request) -> Response {
    // Bounded like every body; what does not fit is dropped with the connection.
    let _ = axum::body::to_bytes(req.into_body(), 2 * 1024 * 1024).await;
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        Json(serde_json::json!({
            "error": { "code": "method_not_allowed", "message": "method not allowed on this route" }
        })),
    )
        .into_response()
}

/// `GET /healthz`: the process is up. No tenant, no database.
async fn healthz(State(_): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once the catalog feed has loaded and while the catalog answers, else 503.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready() {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "error": { "code": "not_ready", "message": "the catalog is not loaded or not reachable" }
            })),
        )
            .into_response()
    }
}

/// Body of `GET /whoami`.
#[derive(Debug, Serialize)]
struct WhoAmI<'a> {
    tenant_id: Uuid,
    slug: &'a str,
    shard: &'a str,
    epoch: i64,
    locale: &'a str,
}

/// `GET /whoami`: the verified tenant, from the signed headers and the cached catalog row;
/// opens no tenant database.
async fn whoami(ctx: TenantContext) -> Json<serde_json::Value> {
    Json(serde_json::json!(WhoAmI {
        tenant_id: ctx.tenant_id(),
        slug: ctx.slug(),
        shard: ctx.shard(),
        epoch: ctx.epoch(),
        locale: ctx.settings().locale(),
    }))
}
