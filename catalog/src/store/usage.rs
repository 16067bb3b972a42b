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
