//! Edge metrics (DESIGN §8) in a registry owned by one edge instance, and the metrics listener
//! (`/metrics`, `/healthz`, `/readyz`).
//!
//! No process-global registry: two edges in one process (tests) keep separate numbers.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

use crate::error::Reject;
use crate::rate_limit::ClientLimiters;
use crate::resolve::Resolver;
use crate::tls::Certificates;

/// Histogram buckets of request durations, 0.5 ms to 10 s.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Label value for requests that never reached a tenant or a shard.
pub const NONE_LABEL: &str = "_none";

/// The `kind` of a `tenantgate_upstream_errors_total` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connecting failed; the backend is ejected and the request retried once.
    Connect,
    /// The backend failed after the connection was made, or answered garbage.
    Proxy,
    /// An active health check failed.
    HealthCheck,
}

impl UpstreamError {
    pub const ALL: [UpstreamError; 3] = [
        UpstreamError::Connect,
        UpstreamError::Proxy,
        UpstreamError::HealthCheck,
    ];

    pub fn label(self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Proxy => "proxy",
            UpstreamError::HealthCheck => "health_check",
        }
    }
}

/// The result of one route-cache lookup, as counted in `tenantgate_catalog_cache_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Answered from the cache with the catalog reachable.
    Hit,
    /// Not cached: the catalog was asked.
    Miss,
    /// Cached as unknown.
    Negative,
    /// Answered from the cache while the catalog is unreachable.
    Stale,
}

/// The result of an on-demand issuance request, as counted in
/// `tenantgate_edge_on_demand_certificates_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDemandResult {
    /// The catalog queued an issuance job.
    Requested,
    /// Over the per-tenant or global limit, or the edge's queue of requests was full.
    Refused,
}

impl OnDemandResult {
    pub fn label(self) -> &'static str {
        match self {
            OnDemandResult::Requested => "requested",
            OnDemandResult::Refused => "refused",
        }
    }
}

/// A route's own series, looked up on its first request and kept with the cached route: a
/// label lookup hashes every label value and takes a lock, on every request. Only the common
/// case is kept (status 200); other codes take the lookup.
///
/// A cached handle outlives its series when the quiet-tenant sweep removes it; the sweep also
/// drops the cached routes of those tenants, so the next request builds fresh handles.
#[derive(Debug, Default)]
pub struct RouteSeries {
    ok: OnceLock<IntCounter>,
    duration: OnceLock<Histogram>,
}

/// All metrics of one edge.
pub struct EdgeMetrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub rejections: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub catalog_version: IntGauge,
    /// Hosts in the resolver's index of known hosts (-1 before it is loaded).
    pub known_hosts: IntGauge,
    /// Entries in the route cache, negative ones included.
    pub cached_hosts: IntGauge,
    /// Rate limiter states kept, by kind: `tenant` (one per tenant with a cached route) and
    /// `client` (one per tenant and client address, see `edge.per_client_share`).
    pub limiter_states: IntGaugeVec,
    pub upstream_healthy: IntGaugeVec,
    pub upstream_errors: IntCounterVec,
    /// `tenantgate_edge_limits_fallback` and `_total`: Redis-backed limits falling back to
    /// `limit / fleet_size`.
    pub limits_fallback: crate::redis_limits::FallbackMetrics,
    lookups: [IntCounter; 4],
    /// On-demand issuance requests: `[requested, refused]`.
    on_demand: [IntCounter; 2],
    /// `"0"` and `"100"`..=`"599"`, so the `code` label costs no allocation per request.
    codes: Vec<Box<str>>,
}

impl EdgeMetrics {
    /// Count an upstream error of `kind` on `shard`.
    pub fn upstream_error(&self, shard: &str, kind: UpstreamError) {
        self.upstream_errors
            .with_label_values(&[shard, kind.label()])
            .inc();
    }

    /// Create and register every edge metric in a fresh registry.
    pub fn new() -> EdgeMetrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let requests = counter(
            "tenantgate_edge_requests_total",
            "Requests answered by the edge, by tenant, shard and status code.",
            &["tenant", "shard", "code"],
        );
        let rejections = counter(
            "tenantgate_edge_rejections_total",
            "Requests the edge answered itself, by reason.",
            &["reason"],
        );
        // Known label sets start at 0, so a panel or a rate() shows 0 rather than "no data".
        for reject in Reject::all() {
            rejections.with_label_values(&[reject.code()]);
        }
        let rate_limited = counter(
            "tenantgate_edge_rate_limited_total",
            "Requests refused by a tenant's rate limit.",
            &["tenant"],
        );
        let upstream_errors = counter(
            "tenantgate_upstream_errors_total",
            "Failures talking to app backends, by shard and kind (connect, proxy, health_check).",
            &["shard", "kind"],
        );
        let lookups_vec = counter(
            "tenantgate_catalog_cache_lookups_total",
            "Route cache lookups by result (hit, miss, negative, stale).",
            &["result"],
        );
        let lookups =
            ["hit", "miss", "negative", "stale"].map(|r| lookups_vec.with_label_values(&[r]));
        let on_demand_vec = counter(
            "tenantgate_edge_on_demand_certificates_total",
            "On-demand certificate issuance at a TLS handshake for a host without one: \
             requested (job queued) or refused (over a limit, or the edge's queue full).",
            &["result"],
        );
        let on_demand = [OnDemandResult::Requested, OnDemandResult::Refused]
            .map(|r| on_demand_vec.with_label_values(&[r.label()]));
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tenantgate_edge_request_duration_seconds",
                "Time from request start to the end of the response, by shard.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["shard"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(duration.clone()))
            .expect("unique metric");
        let catalog_version = IntGauge::new(
            "tenantgate_catalog_version",
            "Newest catalog change applied by this edge.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(catalog_version.clone()))
            .expect("unique metric");
        let known_hosts = IntGauge::new(
            "tenantgate_catalog_known_hosts",
            "Hosts in the edge's index of hosts the catalog routes (-1 until loaded).",
        )
        .expect("valid metric");
        known_hosts.set(-1);
        registry
            .register(Box::new(known_hosts.clone()))
            .expect("unique metric");
        let cached_hosts = IntGauge::new(
            "tenantgate_catalog_cached_hosts",
            "Entries in the edge's route cache, negative ones included (bounded by \
             catalog.cache_capacity).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(cached_hosts.clone()))
            .expect("unique metric");
        let limiter_states = IntGaugeVec::new(
            Opts::new(
                "tenantgate_edge_limiter_states",
                "Rate limiter states the edge keeps, by kind (tenant, client).",
            ),
            &["kind"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(limiter_states.clone()))
            .expect("unique metric");
        let upstream_healthy = IntGaugeVec::new(
            Opts::new(
                "tenantgate_upstream_healthy",
                "1 when an app backend is taking traffic, 0 when it is ejected.",
            ),
            &["shard", "backend"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(upstream_healthy.clone()))
            .expect("unique metric");
        let limits_fallback = crate::redis_limits::FallbackMetrics {
            active: IntGauge::new(
                "tenantgate_edge_limits_fallback",
                "1 while Redis is unreachable and each tenant is limited to limit / fleet_size \
                 at this edge (limits_backend = \"redis\"); 0 otherwise.",
            )
            .expect("valid metric"),
            entered: IntCounter::new(
                "tenantgate_edge_limits_fallback_total",
                "Times this edge lost Redis and fell back to limit / fleet_size per tenant.",
            )
            .expect("valid metric"),
        };
        registry
            .register(Box::new(limits_fallback.active.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(limits_fallback.entered.clone()))
            .expect("unique metric");
        EdgeMetrics {
            limits_fallback,
            registry,
            requests,
            duration,
            rejections,
            rate_limited,
            catalog_version,
            known_hosts,
            cached_hosts,
            limiter_states,
            upstream_healthy,
            upstream_errors,
            lookups,
            on_demand,
            codes: std::iter::once(0)
                .chain(100..600)
                .map(|c: u16| c.to_string().into())
                .collect(),
        }
    }

    /// The `code` label value of a status (`0` when no response could be sent).
    pub fn code_label(&self, status: u16) -> &str {
        match status {
            100..=599 => &self.codes[usize::from(status) - 99],
            _ => &self.codes[0],
        }
    }

    /// Count one finished request: `tenantgate_edge_requests_total` and its duration.
    /// `route` is `(series, tenant label, shard)` when the request was routed.
    pub fn record(&self, route: Option<(&RouteSeries, &str, &str)>, status: u16, took: Duration) {
        let Some((series, tenant, shard)) = route else {
            let code = self.code_label(status);
            self.requests
                .with_label_values(&[NONE_LABEL, NONE_LABEL, code])
                .inc();
            self.duration
                .with_label_values(&[NONE_LABEL])
                .observe(took.as_secs_f64());
            return;
        };
        if status == 200 {
            series
                .ok
                .get_or_init(|| self.requests.with_label_values(&[tenant, shard, "200"]))
                .inc();
        } else {
            self.requests
                .with_label_values(&[tenant, shard, self.code_label(status)])
                .inc();
        }
        series
            .duration
            .get_or_init(|| self.duration.with_label_values(&[shard]))
            .observe(took.as_secs_f64());
    }

    /// Count one on-demand issuance request that was queued or refused.
    pub fn on_demand(&self, result: OnDemandResult) {
        self.on_demand[result as usize].inc();
    }

    /// Count one cache lookup.
    pub fn lookup(&self, result: Lookup) {
        self.lookups[result as usize].inc();
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("text format is UTF-8")
    }
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        EdgeMetrics::new()
    }
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `listener` until `shutdown`.
///
/// `/readyz` is 200 once the route cache follows the catalog feed, the catalog is reachable (or
/// unreachable for less than `catalog.stale_max`), at least one app backend is healthy (when
/// any is configured) and, with a TLS listener, its certificates have been loaded; 503
/// otherwise.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<EdgeMetrics>,
    resolver: Arc<Resolver>,
    certificates: Option<Arc<Certificates>>,
    clients: Arc<ClientLimiters>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state((metrics, resolver, certificates, clients));
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "edge metrics listener failed");
    }
}

type MetricsState = (
    Arc<EdgeMetrics>,
    Arc<Resolver>,
    Option<Arc<Certificates>>,
    Arc<ClientLimiters>,
);

async fn metrics_page(
    State((metrics, resolver, _, clients)): State<MetricsState>,
) -> impl IntoResponse {
    metrics.catalog_version.set(resolver.applied_version());
    metrics
        .known_hosts
        .set(resolver.known_hosts().map_or(-1, |n| n as i64));
    // Sizes read at scrape time: cheap enough for a scrape, never done per request.
    metrics.cached_hosts.set(resolver.cached_hosts() as i64);
    let limiters = &metrics.limiter_states;
    limiters
        .with_label_values(&["tenant"])
        .set(resolver.tenant_limiters() as i64);
    limiters
        .with_label_values(&["client"])
        .set(clients.tracked() as i64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.encode(),
    )
}

async fn ready(State((_, resolver, certificates, _)): State<MetricsState>) -> impl IntoResponse {
    if resolver.ready() && certificates.is_none_or(|c| c.loaded()) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
