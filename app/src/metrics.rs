//! Prometheus metrics of one app process (DESIGN §8), in a registry of its own (no global
//! registry, so several app instances — and parallel tests — never share series).
//!
//! - `tenantgate_app_requests_total{tenant,code}`: responses by tenant slug (bounded by
//!   `app.tenant_label_limit`, the rest under `_other`; `_none` before a tenant is verified) and
//!   status code.
//! - `tenantgate_app_tenant_pools`: tenant pools that exist now.
//! - `tenantgate_app_db_connections{state}`: tenant database connections open now, `idle` or
//!   `active` (handed out to a request).
//! - `tenantgate_app_db_connection_budget`: the most connections the process may open.
//! - `tenantgate_app_db_connections_reserved`: budget held by existing pools (≤ the budget).
//! - `tenantgate_app_tenant_pools_opened_total`: pools opened since start (cold tenants).
//! - `tenantgate_app_db_acquires_total{role}`: connections handed out, `primary` or `replica`.

use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tenantgate_contract::signing::{HEADER_REQUEST_ID, HEADER_TENANT_ID, HEADER_TENANT_SIGNATURE};

use crate::error::AppError;
use crate::pools::PoolStats;
use crate::state::AppState;

/// Label value for requests refused before a tenant was verified.
pub const NO_TENANT: &str = "_none";

/// The bounded tenant label of a response, left in its extensions by `require_tenant`.
#[derive(Debug, Clone)]
pub(crate) struct TenantLabel(pub(crate) Arc<str>);

/// The verified tenant's slug, set on the response for the request log.
#[derive(Clone)]
pub(crate) struct VerifiedSlug(pub(crate) String);

/// The app's metric families, registered in [`AppMetrics::registry`].
#[derive(Debug, Clone)]
pub struct AppMetrics {
    registry: Registry,
    requests: IntCounterVec,
    pools: IntGauge,
    connections: IntGaugeVec,
    budget: IntGauge,
    reserved: IntGauge,
    pools_opened: IntCounter,
    acquires: IntCounterVec,
    /// Serialises scrapes: counters are advanced to the manager's totals while rendering.
    render_lock: Arc<Mutex<()>>,
}

impl Default for AppMetrics {
    fn default() -> Self {
        AppMetrics::new()
    }
}

impl AppMetrics {
    /// The counters labelled by tenant (for dropping the series of quiet tenants).
    pub(crate) fn tenant_counters(&self) -> [&IntCounterVec; 1] {
        [&self.requests]
    }

    /// Fresh metrics in a fresh registry.
    pub fn new() -> AppMetrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tenantgate_app_requests_total",
                "App responses by tenant and status code",
            ),
            &["tenant", "code"],
        )
        .expect("valid metric");
        let pools = IntGauge::new(
            "tenantgate_app_tenant_pools",
            "Tenant database pools open now",
        )
        .expect("valid metric");
        let connections = IntGaugeVec::new(
            Opts::new(
                "tenantgate_app_db_connections",
                "Tenant database connections open now, by state (idle, active)",
            ),
            &["state"],
        )
        .expect("valid metric");
        let budget = IntGauge::new(
            "tenantgate_app_db_connection_budget",
            "Most tenant database connections this process may open",
        )
        .expect("valid metric");
        let reserved = IntGauge::new(
            "tenantgate_app_db_connections_reserved",
            "Connection budget held by existing tenant pools",
        )
        .expect("valid metric");
        let pools_opened = IntCounter::new(
            "tenantgate_app_tenant_pools_opened_total",
            "Tenant database pools opened since start",
        )
        .expect("valid metric");
        let acquires = IntCounterVec::new(
            Opts::new(
                "tenantgate_app_db_acquires_total",
                "Tenant database connections handed out, by role (primary, replica)",
            ),
            &["role"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(pools.clone()),
            Box::new(connections.clone()),
            Box::new(budget.clone()),
            Box::new(reserved.clone()),
            Box::new(pools_opened.clone()),
            Box::new(acquires.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        AppMetrics {
            registry,
            requests,
            pools,
            connections,
            budget,
            reserved,
            pools_opened,
            acquires,
            render_lock: Arc::new(Mutex::new(())),
        }
    }

    /// The registry, for callers that add their own metrics next to the app's.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Count one response.
    pub fn record_request(&self, tenant: &str, code: u16) {
        self.requests
            .with_label_values(&[tenant, code.to_string().as_str()])
            .inc();
    }

    /// The text exposition, with pool gauges set from `stats` first.
    pub fn render(&self, stats: &PoolStats) -> String {
        let _one_at_a_time = self.render_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.pools.set(stats.pools as i64);
        self.budget.set(i64::from(stats.connection_budget));
        self.reserved.set(i64::from(stats.reserved));
        for (state, value) in [
            ("idle", stats.idle_connections),
            ("active", stats.in_use_connections()),
        ] {
            self.connections
                .with_label_values(&[state])
                .set(i64::from(value));
        }
        // Counters mirror the manager's monotonic totals.
        advance(&self.pools_opened, stats.opened_total);
        advance(
            &self.acquires.with_label_values(&["primary"]),
            stats.acquired_primary,
        );
        advance(
            &self.acquires.with_label_values(&["replica"]),
            stats.acquired_replica,
        );
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("text exposition is UTF-8")
    }
}

fn advance(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// Middleware around the whole app: counts every response by tenant label and code.
pub async fn track_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = req
        .headers()
        .get(HEADER_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    let response = next.run(req).await;
    let tenant = response
        .extensions()
        .get::<TenantLabel>()
        .map(|l| l.0.clone());
    let status = response.status().as_u16();
    state
        .metrics()
        .record_request(tenant.as_deref().unwrap_or(NO_TENANT), status);
    // One line per request with tenant, shard and request id; probes only at debug level.
    let slug = response
        .extensions()
        .get::<VerifiedSlug>()
        .map(|s| s.0.as_str());
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let shard = state.config().app.shard.as_str();
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
        tracing::debug!(target: "tenantgate::app_access", %method, %path, status, duration_ms, "request");
    } else {
        tracing::info!(target: "tenantgate::app_access", tenant = slug.unwrap_or("-"), shard, status,
            duration_ms, request_id = %request_id, %method, %path, "request");
    }
    response
}

/// `GET /metrics`: Prometheus text format, for scrapers that reach the app directly.
///
/// Requests that came through the edge (they carry its tenant headers) get 404: a tenant must
/// not read the shard's metrics, which name other tenants.
pub async fn metrics_handler(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if headers.contains_key(HEADER_TENANT_SIGNATURE) || headers.contains_key(HEADER_TENANT_ID) {
        return AppError::NotFound.into_response();
    }
    let body = state.metrics().render(&state.pools().stats());
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
