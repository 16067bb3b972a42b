//! Usage per tenant per minute: requests, errors, 429s and response bytes, counted by the edges
//! in memory and added here in batches (never on a request's path).

use uuid::Uuid;

use super::driver::{on, CatalogRow, Id, Millis};
use super::Catalog;
use crate::error::CatalogError;

/// Counts of one tenant over some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct UsageCounts {
    /// Requests answered for the tenant (refused ones included).
    pub requests: i64,
    /// Requests answered with a 5xx.
    pub errors: i64,
    /// Requests refused with 429 by the tenant's rate limit.
    pub rate_limited: i64,
    /// Response body bytes sent to clients.
    pub bytes: i64,
}

impl UsageCounts {
    /// Nothing counted.
    pub fn is_zero(&self) -> bool {
        *self == UsageCounts::default()
    }

    /// Add `other` to these counts.
    pub fn add(&mut self, other: &UsageCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.rate_limited += other.rate_limited;
        self.bytes += other.bytes;
    }
}

/// Milliseconds in one usage row.
pub const MINUTE_MS: i64 = 60_000;

impl Catalog {
    /// Add each tenant's `counts` to its row for the minute holding `at_ms`, in one
    /// transaction. Rows are only incremented, so several edges can add to the same minute.
    /// A tenant deleted meanwhile is skipped.
    pub async fn add_usage(
        &self,
        at_ms: i64,
        counts: &[(Uuid, UsageCounts)],
    ) -> Result<(), CatalogError> {
        let minute = Millis(at_ms - at_ms.rem_euclid(MINUTE_MS));
        on!(self.db(), db => {
            let mut tx = db.begin().await?;
            for (tenant, c) in counts {
                sqlx::query(
                    "INSERT INTO tenant_usage (tenant_id, minute, requests, errors, rate_limited, bytes)
                     SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM tenants WHERE id = $1)
                     ON CONFLICT (tenant_id, minute) DO UPDATE SET
                         requests = tenant_usage.requests + excluded.requests,
                         errors = tenant_usage.errors + excluded.errors,
                         rate_limited = tenant_usage.rate_limited + excluded.rate_limited,
                         bytes = tenant_usage.bytes + excluded.bytes",
                )
                .bind(Id(*tenant))
                .bind(minute)
                .bind(c.requests)
                .bind(c.errors)
                .bind(c.rate_limited)
                .bind(c.bytes)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// A tenant's usage from `from_ms` (inclusive) to `to_ms` (exclusive), summed into buckets of
    /// `step_ms` aligned to the epoch: `(bucket start, counts)` for every bucket in the range, in
    /// order, empty buckets included (so a chart needs no gap filling).
    pub async fn usage(
        &self,
        tenant: Uuid,
        from_ms: i64,
        to_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<(i64, UsageCounts)>, CatalogError> {
        assert!(
            step_ms >= MINUTE_MS && step_ms % MINUTE_MS == 0,
            "whole minutes"
        );
        let first = from_ms - from_ms.rem_euclid(step_ms);
        let mut buckets: Vec<(i64, UsageCounts)> = (0..)
            .map(|i| first + i * step_ms)
            .take_while(|start| *start < to_ms)
            .map(|start| (start, UsageCounts::default()))
            .collect();
        let rows: Vec<(i64, UsageCounts)> = on!(self.db(), db => {
            sqlx::query(
                "SELECT minute, requests, errors, rate_limited, bytes FROM tenant_usage
                 WHERE tenant_id = $1 AND minute >= $2 AND minute < $3 ORDER BY minute",
            )
            .bind(Id(tenant))
            .bind(Millis(first))
            .bind(Millis(to_ms))
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.millis("minute")?,
                    UsageCounts {
                        requests: r.get("requests")?,
                        errors: r.get("errors")?,
                        rate_limited: r.get("rate_limited")?,
                        bytes: r.get("bytes")?,
                    },
                ))
            })
            .collect::<Result<_, CatalogError>>()?
        });
        for (minute, counts) in rows {
            let i = ((minute - first) / step_ms) as usize;
            if let Some((_, bucket)) = buckets.get_mut(i) {
                bucket.add(&counts);
            }
        }
        Ok(buckets)
    }

    /// Delete usage rows older than `before_ms`; returns how many.
    pub async fn prune_usage(&self, before_ms: i64) -> Result<u64, CatalogError> {
        on!(self.db(), db => {
            Ok(sqlx::query("DELETE FROM tenant_usage WHERE minute < $1")
                .bind(Millis(before_ms))
                .execute(db)
                .await?
                .rows_affected())
        })
    }
}

/// Most points one usage answer holds.
pub const MAX_POINTS: i64 = 2000;
/// Longest range one usage answer covers, in milliseconds (400 days).
pub const MAX_RANGE_MS: i64 = 400 * 86_400_000;

/// The range and step of a usage query (`from`, `to` RFC 3339; `step` in seconds), checked the
/// same way for operators (admin API) and tenants (app): defaults to the 24 hours before now in
/// steps of an hour. A range longer than [`MAX_POINTS`] steps or [`MAX_RANGE_MS`] is cut to its
/// most recent part; `from` at or after `to` gives no points. The error names the field at fault
/// and why.
pub fn window(
    from: Option<&str>,
    to: Option<&str>,
    step_secs: Option<i64>,
    now_ms: i64,
) -> Result<UsageWindow, (&'static str, String)> {
    use tenantgate_contract::time::parse_rfc3339;
    let instant = |name: &'static str, text: Option<&str>| match text {
        Some(t) => parse_rfc3339(t)
            .map(Some)
            .ok_or((name, "must be an RFC 3339 date-time".to_string())),
        None => Ok(None),
    };
    let to = instant("to", to)?.unwrap_or(now_ms);
    let from = instant("from", from)?.unwrap_or(to - 86_400_000);
    let step_ms = step_secs.unwrap_or(3600).saturating_mul(1000);
    if step_ms < MINUTE_MS || step_ms % MINUTE_MS != 0 {
        return Err((
            "step",
            "must be a whole number of minutes, in seconds".into(),
        ));
    }
    // An empty or reversed range is simply empty; a range longer than the answer may hold is
    // cut to its most recent part (documented on the query parameters).
    let to = to.max(from);
    let from = from
        .max(to - MAX_RANGE_MS)
        .max(to - (MAX_POINTS - 1) * step_ms);
    Ok(UsageWindow { from, to, step_ms })
}

/// Query of the usage routes, the operators' (`GET /v1/tenants/{id}/usage`) and the tenant's own
/// (`GET /api/usage`).
#[derive(Debug, Default, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// Start, inclusive; default 24 hours before `to`. A range of more than 2,000 steps or
    /// 400 days is cut to its most recent part; `from` at or after `to` gives no points.
    #[cfg_attr(
        feature = "openapi",
        param(value_type = String, format = DateTime, required = false, nullable = false)
    )]
    pub from: Option<String>,
    /// End, exclusive; default now.
    #[cfg_attr(
        feature = "openapi",
        param(value_type = String, format = DateTime, required = false, nullable = false)
    )]
    pub to: Option<String>,
    /// Seconds per point, a whole number of minutes; default 3600.
    #[cfg_attr(
        feature = "openapi",
        param(minimum = 60, maximum = 2_592_000, multiple_of = 60, nullable = false)
    )]
    pub step: Option<i64>,
}

impl UsageQuery {
    /// The checked window of this query at `now_ms` (see [`window`]).
    pub fn window(&self, now_ms: i64) -> Result<UsageWindow, (&'static str, String)> {
        window(self.from.as_deref(), self.to.as_deref(), self.step, now_ms)
    }
}

/// A checked usage query: see [`window`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageWindow {
    pub from: i64,
    pub to: i64,
    pub step_ms: i64,
}

/// Usage in one step, as the APIs show it.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsagePoint {
    /// Start of the step.
    #[serde(with = "tenantgate_contract::time::serde_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub ts: i64,
    /// Requests answered (refused ones included).
    pub requests: i64,
    /// Answers with a 5xx status.
    pub errors: i64,
    /// Requests refused by the tenant's rate limit (429).
    pub rate_limited: i64,
    /// Response body bytes sent.
    pub bytes: i64,
}

/// A tenant's usage over a window, as the APIs show it.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageSeries {
    /// Seconds per point.
    pub step: i64,
    /// One point per step from `from` to `to`, empty steps included, oldest first.
    pub usage: Vec<UsagePoint>,
}

impl Catalog {
    /// A tenant's usage over `window`, as the APIs show it.
    pub async fn usage_series(
        &self,
        tenant: Uuid,
        window: UsageWindow,
    ) -> Result<UsageSeries, CatalogError> {
        let usage = self
            .usage(tenant, window.from, window.to, window.step_ms)
            .await?
            .into_iter()
            .map(|(ts, c)| UsagePoint {
                ts,
                requests: c.requests,
                errors: c.errors,
                rate_limited: c.rate_limited,
                bytes: c.bytes,
            })
            .collect();
        Ok(UsageSeries {
            step: window.step_ms / 1000,
            usage,
        })
    }
}
