//! `GET /v1/tenants/{id}/usage?from=&to=&step=`: a tenant's requests, errors, 429s and response
//! bytes over time, as the edges counted them (`tenant_usage`).

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::usage::{UsageCounts, MINUTE_MS};
use tenantgate_contract::time::{now_ms, parse_rfc3339, serde_rfc3339};

use crate::auth::Reader;
use crate::error::AdminError;
use crate::extract::ApiQuery;
use crate::state::AdminState;

/// Most points one answer holds.
const MAX_POINTS: i64 = 2000;
/// Longest range one answer covers.
const MAX_RANGE_MS: i64 = 400 * 86_400_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    /// Start (RFC 3339), inclusive; default 24 hours before `to`.
    #[param(nullable = false)]
    from: Option<String>,
    /// End (RFC 3339), exclusive; default now.
    #[param(nullable = false)]
    to: Option<String>,
    /// Seconds per point, a whole number of minutes; default 3600.
    #[param(minimum = 60, maximum = 2_592_000, nullable = false)]
    step: Option<i64>,
}

/// Usage in one step.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UsagePoint {
    /// Start of the step.
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    ts: i64,
    /// Requests answered (refused ones included).
    requests: i64,
    /// Answers with a 5xx status.
    errors: i64,
    /// Requests refused by the tenant's rate limit (429).
    rate_limited: i64,
    /// Response body bytes sent.
    bytes: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UsageSeries {
    /// Seconds per point.
    step: i64,
    /// One point per step from `from` to `to`, empty steps included, oldest first.
    usage: Vec<UsagePoint>,
}

/// The range and step of `q`, checked.
fn range(q: &UsageQuery) -> Result<(i64, i64, i64), AdminError> {
    let instant = |name: &str, text: &Option<String>| match text {
        Some(t) => parse_rfc3339(t)
            .map(Some)
            .ok_or_else(|| AdminError::field(name, "must be an RFC 3339 date-time")),
        None => Ok(None),
    };
    let to = instant("to", &q.to)?.unwrap_or_else(now_ms);
    let from = instant("from", &q.from)?.unwrap_or(to - 86_400_000);
    let step_ms = q.step.unwrap_or(3600) * 1000;
    if step_ms < MINUTE_MS || step_ms % MINUTE_MS != 0 {
        return Err(AdminError::field(
            "step",
            "must be a whole number of minutes, in seconds",
        ));
    }
    if from >= to {
        return Err(AdminError::field("from", "must be before `to`"));
    }
    if to - from > MAX_RANGE_MS || (to - from) / step_ms >= MAX_POINTS {
        return Err(AdminError::field(
            "step",
            format!("the range holds more than {MAX_POINTS} steps or 400 days; use a larger step"),
        ));
    }
    Ok((from, to, step_ms))
}

pub(crate) async fn handler(
    State(state): State<AdminState>,
    _: Reader,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageSeries>, AdminError> {
    let (from, to, step_ms) = range(&q)?;
    let tenant = super::tenants::find_any(&state, &id).await?;
    let usage = state
        .catalog
        .usage(tenant.id, from, to, step_ms)
        .await?
        .into_iter()
        .map(|(ts, c): (i64, UsageCounts)| UsagePoint {
            ts,
            requests: c.requests,
            errors: c.errors,
            rate_limited: c.rate_limited,
            bytes: c.bytes,
        })
        .collect();
    Ok(Json(UsageSeries {
        step: step_ms / 1000,
        usage,
    }))
}
