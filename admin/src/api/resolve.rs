//! `GET /v1/resolve?host=&path=`: what the edge would do for a request, and why.
//!
//! This mirrors the edge's decision from the catalog (it does not ask a running edge): host
//! normalisation, host + path-prefix matching, the status gate, the effective rate limit and
//! the shard's backends. Backend health is the edge's own knowledge and is not shown.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantgate_contract::host::{self, normalize_host};
use tenantgate_contract::{Admission, RateLimit, Refusal};

use crate::auth::Reader;
use crate::error::AdminError;
use crate::extract::ApiQuery;
use crate::state::AdminState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResolveQuery {
    /// A Host header value (port and case are normalised like the edge does).
    host: String,
    /// Request path, for host + prefix domains. Default `/`.
    #[param(nullable = false)]
    path: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EdgeAnswer {
    /// HTTP status the edge would answer with; 200 means "forwarded to the shard".
    status: u16,
    /// Error code of the edge's JSON body when it answers itself.
    code: Option<&'static str>,
    reason: String,
}

/// The tenant a host resolves to.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ResolvedTenant {
    id: uuid::Uuid,
    slug: String,
    status: tenantgate_contract::TenantStatus,
    epoch: i64,
}

/// The tenant's shard.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ResolvedShard {
    name: String,
    status: tenantgate_catalog::ShardStatus,
}

/// The rate limit the edge applies, and whose it is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct EffectiveLimit {
    rps: u32,
    burst: u32,
    /// `tenant` or `edge default`.
    source: &'static str,
}

/// What the edge would do for a host, and why; parts it did not get to are null.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Resolution {
    /// The normalised host.
    host: Option<String>,
    path_prefix: Option<String>,
    tenant: Option<ResolvedTenant>,
    shard: Option<ResolvedShard>,
    backends: Vec<String>,
    rate_limit: Option<EffectiveLimit>,
    edge: EdgeAnswer,
}

fn answer(status: u16, code: Option<&'static str>, reason: impl Into<String>) -> EdgeAnswer {
    EdgeAnswer {
        status,
        code,
        reason: reason.into(),
    }
}

pub(crate) async fn handler(
    State(state): State<AdminState>,
    _: Reader,
    ApiQuery(q): ApiQuery<ResolveQuery>,
) -> Result<Json<Resolution>, AdminError> {
    let mut out = Resolution {
        host: None,
        path_prefix: None,
        tenant: None,
        shard: None,
        backends: Vec::new(),
        rate_limit: None,
        edge: answer(
            400,
            Some("invalid_host"),
            "the host is not a valid host name",
        ),
    };
    let Ok(host) = normalize_host(&q.host) else {
        return Ok(Json(out));
    };
    out.host = Some(host.to_string());
    let routes = state.catalog.host_routes(&host).await?;
    let path = q.path.as_deref().unwrap_or("/");
    let Some((route, _)) = host::route_for(&routes, path, |r| r.path_prefix.as_deref()) else {
        out.edge = answer(
            404,
            Some("unknown_tenant"),
            "no tenant has this host (and path prefix)",
        );
        return Ok(Json(out));
    };
    out.path_prefix = route.path_prefix.clone();
    out.tenant = Some(ResolvedTenant {
        id: route.tenant_id,
        slug: route.slug.clone(),
        status: route.status,
        epoch: route.epoch,
    });
    let (limit, source): (RateLimit, &str) = match route.rate_limit {
        Some(l) => (l, "tenant"),
        None => (state.config.edge.default_rate_limit, "edge default"),
    };
    out.rate_limit = Some(EffectiveLimit {
        rps: limit.rps,
        burst: limit.burst,
        source,
    });
    let shard = state.catalog.shard(&route.shard).await?;
    if let Some(s) = &shard {
        out.backends = s.app_upstreams.clone();
        out.shard = Some(ResolvedShard {
            name: s.name.clone(),
            status: s.status,
        });
    }
    out.edge = match route.status.admission() {
        Admission::Refuse(r) => answer(r.status(), Some(r.code()), r.message()),
        Admission::Hold => answer(
            200,
            None,
            format!(
            "the tenant is moving: requests are held up to {} ms, then forwarded or answered {} {}",
            state.config.edge.moving_hold.as_millis(),
            Refusal::MovingTimedOut.status(),
            Refusal::MovingTimedOut.code(),
        ),
        ),
        Admission::Serve if out.backends.is_empty() => answer(
            503,
            Some("shard_unavailable"),
            "the tenant's shard has no app backends",
        ),
        Admission::Serve => answer(
            200,
            None,
            format!(
                "forwarded to a healthy backend of shard {} with a signed tenant header{}",
                route.shard,
                if route.path_prefix.is_some() {
                    ", path prefix stripped"
                } else {
                    ""
                }
            ),
        ),
    };
    Ok(Json(out))
}
