//! Durable jobs: the provisioning queue of the admin API.
//!
//! A job is `queued` until a worker claims it, `running` while the worker holds a lease
//! (`lease_until`, renewed while it runs), then `succeeded` or `failed`. A running job whose lease
//! ran out belongs to a dead worker and is claimed again. Every state change after the claim is
//! conditional on `locked_by`, so a worker that lost its lease cannot overwrite the new owner.

use sqlx::types::Json;
use uuid::Uuid;

use super::driver::{on, CatalogRow, Id, Millis};
use super::{Catalog, Engine, WriteTx};
use crate::error::CatalogError;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<JobStatus, CatalogError> {
        Ok(match text {
            "queued" => JobStatus::Queued,
            "running" => JobStatus::Running,
            "succeeded" => JobStatus::Succeeded,
            "failed" => JobStatus::Failed,
            other => return Err(crate::error::corrupt("jobs.status", other)),
        })
    }
}

/// A job row.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub kind: String,
    pub tenant_id: Option<Uuid>,
    pub payload: serde_json::Value,
    pub status: JobStatus,
    /// Claims so far (a claim after a lost lease counts too).
    pub attempts: i64,
    pub max_attempts: i64,
    /// Earliest time (ms) the job may run; pushed out by backoff and by the deletion grace.
    pub run_at: i64,
    pub lease_until: Option<i64>,
    pub locked_by: Option<String>,
    /// Error of the last failed attempt.
    pub error: Option<String>,
    /// What a long job reports about itself while it runs (JSON), e.g. a fleet migration.
    pub progress: Option<serde_json::Value>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub kind: &'static str,
    pub tenant_id: Option<Uuid>,
    pub payload: serde_json::Value,
    pub max_attempts: i64,
    pub run_at: i64,
}

const COLUMNS: &str = "id, kind, tenant_id, payload, status, attempts, max_attempts, run_at, \
    lease_until, locked_by, error, progress, created_at, updated_at";

fn from_row(r: &impl CatalogRow) -> Result<Job, CatalogError> {
    Ok(Job {
        id: r.id("id")?,
        kind: r.get("kind")?,
        tenant_id: r.opt_id("tenant_id")?,
        payload: r.json("payload")?,
        status: JobStatus::parse(&r.get::<String>("status")?)?,
        attempts: r.get("attempts")?,
        max_attempts: r.get("max_attempts")?,
        run_at: r.millis("run_at")?,
        lease_until: r.opt_millis("lease_until")?,
        locked_by: r.get("locked_by")?,
        error: r.get("error")?,
        progress: r.opt_json("progress")?,
        created_at: r.millis("created_at")?,
        updated_at: r.millis("updated_at")?,
    })
}

/// Enqueue a job in the caller's transaction, so it exists if and only if the write commits.
pub async fn enqueue(tx: &mut WriteTx, job: &NewJob) -> Result<(), CatalogError> {
    on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO jobs (id, kind, tenant_id, payload, status, attempts, max_attempts,
                run_at, created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $7, $7)",
        )
        .bind(Id(job.id))
        .bind(job.kind)
        .bind(job.tenant_id.map(Id))
        .bind(Json(&job.payload))
        .bind(job.max_attempts)
        .bind(Millis(job.run_at))
        .bind(Millis::now())
        .execute(db)
        .await?;
    });
    Ok(())
}

/// The newest job of `kind` for a tenant that has not finished (queued or running), if any.
pub async fn pending_for_tenant(
    tx: &mut WriteTx,
    tenant_id: Uuid,
    kind: &str,
) -> Result<Option<Job>, CatalogError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM jobs
         WHERE tenant_id = $1 AND kind = $2 AND status IN ('queued', 'running')
         ORDER BY created_at DESC LIMIT 1"
    );
    on!(tx.db(), db => {
        sqlx::query(&sql)
            .bind(Id(tenant_id))
            .bind(kind)
            .fetch_optional(db)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    })
}

/// Move a queued job's `run_at` (e.g. a purge bringing a scheduled drop forward).
pub async fn reschedule(tx: &mut WriteTx, id: Uuid, run_at: i64) -> Result<(), CatalogError> {
    on!(tx.db(), db => {
        sqlx::query(
            "UPDATE jobs SET run_at = $2, updated_at = $3 WHERE id = $1 AND status = 'queued'",
        )
        .bind(Id(id))
        .bind(Millis(run_at))
        .bind(Millis::now())
        .execute(db)
        .await?;
    });
    Ok(())
}

/// Put a failed job back in the queue with a fresh set of attempts. False when it is not failed.
pub async fn requeue_failed(tx: &mut WriteTx, id: Uuid) -> Result<bool, CatalogError> {
    let updated = on!(tx.db(), db => {
        sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $2, lease_until = NULL,
                locked_by = NULL, updated_at = $2
             WHERE id = $1 AND status = 'failed'",
        )
        .bind(Id(id))
        .bind(Millis::now())
        .execute(db)
        .await?
        .rows_affected()
    });
    Ok(updated == 1)
}

/// Replace a job's payload (a retried job whose circumstances changed). False when no such job.
pub async fn set_payload(
    tx: &mut WriteTx,
    id: Uuid,
    payload: &serde_json::Value,
) -> Result<bool, CatalogError> {
    let updated = on!(tx.db(), db => {
        sqlx::query("UPDATE jobs SET payload = $2, updated_at = $3 WHERE id = $1")
            .bind(Id(id))
            .bind(Json(payload))
            .bind(Millis::now())
            .execute(db)
            .await?
            .rows_affected()
    });
    Ok(updated == 1)
}

/// Read a job in the caller's transaction.
pub async fn get(tx: &mut WriteTx, id: Uuid) -> Result<Option<Job>, CatalogError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
    on!(tx.db(), db => {
        sqlx::query(&sql)
            .bind(Id(id))
            .fetch_optional(db)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    })
}

impl Catalog {
    /// One job by id.
    pub async fn job(&self, id: Uuid) -> Result<Option<Job>, CatalogError> {
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        on!(self.db(), db => {
            sqlx::query(&sql)
                .bind(Id(id))
                .fetch_optional(db)
                .await?
                .as_ref()
                .map(from_row)
                .transpose()
        })
    }

    /// The unfinished (queued or running) jobs of `kind`, of every tenant.
    pub async fn pending_jobs_of_kind(&self, kind: &str) -> Result<Vec<Job>, CatalogError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE kind = $1 AND status IN ('queued', 'running')"
        );
        on!(self.db(), db => {
            sqlx::query(&sql)
                .bind(kind)
                .fetch_all(db)
                .await?
                .iter()
                .map(from_row)
                .collect()
        })
    }

    /// The jobs of a tenant, newest first.
    pub async fn jobs_of_tenant(&self, tenant_id: Uuid) -> Result<Vec<Job>, CatalogError> {
        let sql =
            format!("SELECT {COLUMNS} FROM jobs WHERE tenant_id = $1 ORDER BY created_at DESC, id");
        on!(self.db(), db => {
            sqlx::query(&sql)
                .bind(Id(tenant_id))
                .fetch_all(db)
                .await?
                .iter()
                .map(from_row)
                .collect()
        })
    }

    /// Claim the next runnable job for `worker`, holding it until `lease_until` (ms).
    ///
    /// Runnable means queued and due, or running with an expired lease (its worker died). Safe
    /// under concurrency: PostgreSQL picks the row with `FOR UPDATE SKIP LOCKED`, so concurrent
    /// claimers take different jobs without waiting; on SQLite the single `UPDATE … RETURNING`
    /// runs under the database's one writer lock, so the pick and the claim are one atomic step.
    /// Returns `None` when nothing is runnable.
    pub async fn claim_job(
        &self,
        worker: &str,
        lease_until: i64,
    ) -> Result<Option<Job>, CatalogError> {
        let lock = match self.engine() {
            Engine::Postgres => "FOR UPDATE SKIP LOCKED",
            Engine::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_until = $2,
                locked_by = $3, updated_at = $1
             WHERE id = (
                SELECT id FROM jobs
                WHERE (status = 'queued' AND run_at <= $1)
                   OR (status = 'running' AND lease_until < $1)
                ORDER BY run_at, id LIMIT 1 {lock})
             RETURNING {COLUMNS}"
        );
        on!(self.db(), db => {
            sqlx::query(&sql)
                .bind(Millis::now())
                .bind(Millis(lease_until))
                .bind(worker)
                .fetch_optional(db)
                .await?
                .as_ref()
                .map(from_row)
                .transpose()
        })
    }

    /// Extend the lease of a job `worker` holds. False when the worker no longer holds it.
    pub async fn renew_job_lease(
        &self,
        id: Uuid,
        worker: &str,
        lease_until: i64,
    ) -> Result<bool, CatalogError> {
        let updated = on!(self.db(), db => {
            sqlx::query(
                "UPDATE jobs SET lease_until = $3, updated_at = $4
                 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
            )
            .bind(Id(id))
            .bind(worker)
            .bind(Millis(lease_until))
            .bind(Millis::now())
            .execute(db)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Record the progress of a job `worker` holds. False when the worker no longer holds it.
    pub async fn set_job_progress(
        &self,
        id: Uuid,
        worker: &str,
        progress: &serde_json::Value,
    ) -> Result<bool, CatalogError> {
        let updated = on!(self.db(), db => {
            sqlx::query(SET_PROGRESS)
            .bind(Id(id))
            .bind(worker)
            .bind(Json(progress))
            .bind(Millis::now())
            .execute(db)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Give a job back to the queue without counting the attempt (orderly shutdown).
    pub async fn release_job(&self, id: Uuid, worker: &str) -> Result<(), CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "UPDATE jobs SET status = 'queued', attempts = attempts - 1, lease_until = NULL,
                    locked_by = NULL, updated_at = $3
                 WHERE id = $1 AND locked_by = $2 AND status = 'running'",
            )
            .bind(Id(id))
            .bind(worker)
            .bind(Millis::now())
            .execute(db)
            .await?;
        });
        Ok(())
    }
}

const SET_PROGRESS: &str = "UPDATE jobs SET progress = $3, updated_at = $4
    WHERE id = $1 AND locked_by = $2 AND status = 'running'";

/// [`Catalog::set_job_progress`] in the caller's transaction: the progress commits with the
/// caller's other writes, and only while `worker` holds the job (false otherwise; the caller
/// must then roll back).
pub async fn set_progress(
    tx: &mut WriteTx,
    id: Uuid,
    worker: &str,
    progress: &serde_json::Value,
) -> Result<bool, CatalogError> {
    let updated = on!(tx.db(), db => {
        sqlx::query(SET_PROGRESS)
            .bind(Id(id))
            .bind(worker)
            .bind(Json(progress))
            .bind(Millis::now())
            .execute(db)
            .await?
            .rows_affected()
    });
    Ok(updated == 1)
}

/// Finish a job `worker` holds, in the caller's transaction (so the job's effects on the catalog
/// and its completion commit together). `error` is the last error; `retry_at` re-queues it.
/// False when the worker no longer holds the job (its lease ran out and another took it); the
/// caller must then roll back.
pub async fn finish(
    tx: &mut WriteTx,
    id: Uuid,
    worker: &str,
    status: JobStatus,
    error: Option<&str>,
    retry_at: Option<i64>,
) -> Result<bool, CatalogError> {
    let updated = on!(tx.db(), db => {
        sqlx::query(
            "UPDATE jobs SET status = $3, error = $4, run_at = COALESCE($5, run_at),
                lease_until = NULL,
                locked_by = CASE WHEN $3 = 'queued' THEN NULL ELSE locked_by END,
                updated_at = $6
             WHERE id = $1 AND locked_by = $2 AND status = 'running'",
        )
        .bind(Id(id))
        .bind(worker)
        .bind(status.as_str())
        .bind(error)
        .bind(retry_at.map(Millis))
        .bind(Millis::now())
        .execute(db)
        .await?
        .rows_affected()
    });
    Ok(updated == 1)
}
