//! On-demand certificate issuance (`acme_on_demand`): an edge that sees a TLS handshake for a
//! host without a certificate asks here for the issuance job, and the catalog decides.
//!
//! The decision is made in one catalog write, under the write lock every writer takes, so the
//! limits hold across every edge and admin process: the host must be owned whole by a tenant
//! that serves traffic, nothing may already cover it (an issued or uploaded certificate, or an
//! issuance job queued or running), and the requests recorded within the window must stay
//! under the per-tenant and the global limit. Only then are the request and the job recorded.
//! A hostile flood of SNI names therefore costs the CA at most the global limit per window.

use tenantgate_config::OnDemandLimits;
use uuid::Uuid;

use super::certificates::{IssuePayload, ISSUE_JOB_KIND};
use super::driver::{on, CatalogRow, Id, Millis};
use super::jobs::{self, NewJob};
use super::WriteTx;
use crate::error::CatalogError;

/// What became of an on-demand request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDemand {
    /// The issuance job was queued (its id).
    Queued(Uuid),
    /// A certificate is issued or uploaded, or issuance is already queued or running.
    Covered,
    /// No tenant serving traffic owns the host whole (unknown, a path-prefix host, a tenant
    /// suspended or deleted): nothing to issue.
    NotEligible,
    /// Over a limit: nothing was recorded.
    Refused(Limit),
}

/// The limit an on-demand request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `acme.on_demand_per_tenant`.
    Tenant,
    /// `acme.on_demand_global`.
    Global,
}

/// Decide and record an on-demand issuance request for `host` (see the module docs) in the
/// caller's write transaction, at `now_ms`. The job gets `max_attempts` attempts.
pub async fn request_issuance(
    tx: &mut WriteTx,
    host: &str,
    limits: &OnDemandLimits,
    max_attempts: i64,
    now_ms: i64,
) -> Result<OnDemand, CatalogError> {
    let owner: Option<Uuid> = on!(tx.db(), db => {
        match sqlx::query(
            "SELECT d.tenant_id FROM tenant_domains d JOIN tenants t ON t.id = d.tenant_id
             WHERE d.host = $1 AND d.path_prefix = ''
             AND t.status IN ('active', 'moving', 'restoring')",
        )
        .bind(host)
        .fetch_optional(db)
        .await?
        {
            Some(r) => Some(r.id("tenant_id")?),
            None => None,
        }
    });
    let Some(tenant_id) = owner else {
        return Ok(OnDemand::NotEligible);
    };
    if covered(tx, tenant_id, host).await? {
        return Ok(OnDemand::Covered);
    }

    let window_ms = i64::try_from(limits.window.as_millis()).unwrap_or(i64::MAX);
    let since = now_ms.saturating_sub(window_ms);
    let (global, tenant): (i64, i64) = on!(tx.db(), db => {
        sqlx::query("DELETE FROM acme_on_demand WHERE requested_at <= $1")
            .bind(Millis(since))
            .execute(&mut *db)
            .await?;
        let r = sqlx::query(
            "SELECT COUNT(*) AS global,
                COALESCE(SUM(CASE WHEN tenant_id = $1 THEN 1 ELSE 0 END), 0) AS tenant
             FROM acme_on_demand",
        )
        .bind(Id(tenant_id))
        .fetch_one(&mut *db)
        .await?;
        (r.get("global")?, r.get("tenant")?)
    });
    if global >= i64::from(limits.global) {
        return Ok(OnDemand::Refused(Limit::Global));
    }
    if tenant >= i64::from(limits.per_tenant) {
        return Ok(OnDemand::Refused(Limit::Tenant));
    }

    on!(tx.db(), db => {
        sqlx::query("INSERT INTO acme_on_demand (host, tenant_id, requested_at) VALUES ($1, $2, $3)")
            .bind(host)
            .bind(Id(tenant_id))
            .bind(Millis(now_ms))
            .execute(db)
            .await?;
    });
    let id = Uuid::now_v7();
    jobs::enqueue(
        tx,
        &NewJob {
            id,
            kind: ISSUE_JOB_KIND,
            tenant_id: Some(tenant_id),
            payload: serde_json::to_value(IssuePayload {
                host: host.to_string(),
                on_demand: true,
            })
            .expect("payload serialises"),
            max_attempts,
            run_at: now_ms,
        },
    )
    .await?;
    Ok(OnDemand::Queued(id))
}

/// Whether `host` of `tenant_id` needs no issuance: a certificate issued or uploaded, or an
/// issuance job for it queued or running.
async fn covered(tx: &mut WriteTx, tenant_id: Uuid, host: &str) -> Result<bool, CatalogError> {
    let certified = on!(tx.db(), db => {
        sqlx::query(
            "SELECT 1 AS one FROM certificates
             WHERE host = $1 AND (status = 'issued' OR source = 'upload')",
        )
        .bind(host)
        .fetch_optional(db)
        .await?
        .is_some()
    });
    if certified {
        return Ok(true);
    }
    // A tenant has a handful of unfinished jobs at most; the payload's host is compared here
    // rather than in SQL, where the two engines read JSON differently.
    let payloads: Vec<serde_json::Value> = on!(tx.db(), db => {
        sqlx::query(
            "SELECT payload FROM jobs WHERE tenant_id = $1 AND kind = $2
             AND status IN ('queued', 'running')",
        )
        .bind(Id(tenant_id))
        .bind(ISSUE_JOB_KIND)
        .fetch_all(db)
        .await?
        .iter()
        .map(|r| r.json("payload"))
        .collect::<Result<_, _>>()?
    });
    Ok(payloads
        .into_iter()
        .any(|p| serde_json::from_value::<IssuePayload>(p).is_ok_and(|p| p.host == host)))
}
