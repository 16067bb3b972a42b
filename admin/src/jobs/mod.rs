//! The provisioning worker: claims jobs from the catalog's `jobs` table and runs them.
//!
//! Jobs survive crashes because their state is in the catalog: a job is claimed with a lease
//! (renewed while it runs); a worker that dies stops renewing, and once the lease runs out
//! another worker claims the job again. Every step of every job is idempotent (it checks what
//! exists before creating it), so running a job twice, or resuming one half done, ends in the
//! same state as running it once. A job's final catalog write and its completion commit in one
//! transaction, conditional on this worker still holding the lease.

pub(crate) mod backup;
pub(crate) mod certificate;
pub(crate) mod data_retention;
pub(crate) mod drop;
pub(crate) mod drop_database;
mod epoch;
pub(crate) mod migrate;
pub(crate) mod provision;
pub(crate) mod prune;
pub(crate) mod relocate;
mod replicate;
pub(crate) mod restore;
mod scram;
mod stall;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::backups;
use tenantgate_catalog::store::jobs::{self as store, Job, JobStatus};
use tenantgate_catalog::store::tenant_state;
use tenantgate_catalog::store::tenants::{self, TenantPatch};
use tenantgate_contract::TenantStatus;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// Job kinds.
pub(crate) mod kind {
    /// Create a tenant's database and login, migrate it, mark the tenant active.
    pub(crate) const PROVISION: &str = "provision_tenant";
    /// Drop a deleted tenant's database and login, free its domains.
    pub(crate) const DROP: &str = "drop_tenant";
    /// Move a tenant to another shard online: copy, catch up, hold, flip (see `relocate`).
    pub(crate) const MOVE: &str = "move_tenant";
    /// Apply pending tenant migrations to many tenants (`POST /v1/migrations`).
    pub(crate) const MIGRATE: &str = "migrate_tenants";
    /// Dump, encrypt and store a backup of a tenant database.
    pub(crate) const BACKUP: &str = "backup_tenant";
    /// Restore a backup in place of a tenant's database, or as a new tenant.
    pub(crate) const RESTORE: &str = "restore_tenant";
    /// Drop a tenant database that a restore in place replaced, after the deletion grace.
    pub(crate) const DROP_DATABASE: &str = "drop_database";
    /// Delete the backups a tenant's retention no longer keeps, or a purged tenant's backups.
    pub(crate) const PRUNE_BACKUPS: &str = "prune_backups";
    /// Delete a tenant's app rows older than its `settings.data_retention_days`.
    pub(crate) const DATA_RETENTION: &str = "data_retention";
    /// Obtain or renew a host's certificate by ACME.
    pub(crate) const ISSUE_CERTIFICATE: &str =
        tenantgate_catalog::store::certificates::ISSUE_JOB_KIND;
}

/// How often the worker looks for due jobs when nothing woke it. Short, because `dev` and the
/// tests wait for tenants to become active and jobs may be enqueued by another process.
const POLL: Duration = Duration::from_millis(200);
/// Delay before the first retry; doubled per attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The delay before retrying after failed attempt number `attempt` (1-based).
pub(crate) fn backoff(attempt: i64) -> Duration {
    let exp = u32::try_from(attempt.clamp(1, 20) - 1).unwrap_or(0);
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(exp))
        .min(MAX_BACKOFF)
}

/// Run the worker until `shutdown`. Returns promptly after cancellation: running jobs are
/// stopped and handed back to the queue (their steps are idempotent, so stopping anywhere is
/// safe).
pub(crate) async fn run(state: AdminState, shutdown: CancellationToken) {
    let worker = format!("worker-{}", uuid::Uuid::new_v4().simple());
    let slots = Arc::new(Semaphore::new(state.config.admin.job_concurrency));
    let mut running = JoinSet::new();
    // The scheduler only queues jobs; it runs wherever jobs run.
    let scheduler = tokio::spawn(crate::scheduler::run(state.clone(), shutdown.clone()));
    tracing::info!(%worker, "provisioning worker started");
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("semaphore never closed"),
        };
        while running.try_join_next().is_some() {}
        let lease_until = now_plus(state.config.admin.job_lease);
        match state.catalog.claim_job(&worker, lease_until).await {
            Ok(Some(job)) => {
                let (state, worker, stop) = (state.clone(), worker.clone(), shutdown.clone());
                running.spawn(async move {
                    run_job(&state, &worker, job, stop).await;
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = state.jobs_wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            Err(e) => {
                drop(permit);
                tracing::warn!(error = %e, "claiming a job failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    // Running jobs saw the same cancellation and release their jobs; wait briefly for that.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while running.join_next().await.is_some() {}
    })
    .await;
    running.abort_all();
    scheduler.abort();
    tracing::info!(%worker, "provisioning worker stopped");
}

fn now_plus(d: Duration) -> i64 {
    tenantgate_contract::time::now_ms() + d.as_millis() as i64
}

/// Run one claimed job while renewing its lease; record the result.
async fn run_job(state: &AdminState, worker: &str, job: Job, shutdown: CancellationToken) {
    let started = Instant::now();
    let lease = state.config.admin.job_lease;
    let renew = async {
        loop {
            tokio::time::sleep(lease / 3).await;
            match state
                .catalog
                .renew_job_lease(job.id, worker, now_plus(lease))
                .await
            {
                Ok(true) => {}
                Ok(false) => return,
                // A renewal that fails transiently is retried at the next tick; the lease is
                // long enough to survive a couple of missed renewals.
                Err(e) => tracing::warn!(job = %job.id, error = %e, "renewing a job lease failed"),
            }
        }
    };
    let result = tokio::select! {
        r = execute(state, worker, &job) => r,
        _ = renew => {
            tracing::warn!(job = %job.id, "lost the lease of a running job; another worker owns it now");
            return;
        }
        _ = shutdown.cancelled() => {
            if let Err(e) = state.catalog.release_job(job.id, worker).await {
                tracing::warn!(job = %job.id, error = %e, "could not release a job at shutdown; it is retried when its lease ends");
            }
            return;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    if job.kind == kind::BACKUP {
        let result = match &result {
            Ok(()) => "completed",
            Err(e) if job.attempts >= job.max_attempts || e.is_permanent() => "failed",
            Err(_) => "retry",
        };
        state.metrics.backup_finished(result, seconds);
    }
    match result {
        Ok(()) => {
            state.metrics.job_finished(&job.kind, "succeeded", seconds);
            tracing::info!(job = %job.id, kind = %job.kind, seconds, "job succeeded");
        }
        Err(error) => {
            // A permanent error (a backup that does not match the catalog) fails at once.
            let final_attempt = job.attempts >= job.max_attempts || error.is_permanent();
            let result = if final_attempt { "failed" } else { "retry" };
            state.metrics.job_finished(&job.kind, result, seconds);
            tracing::warn!(job = %job.id, kind = %job.kind, attempt = job.attempts, %error, "job attempt failed");
            if let Err(e) = record_failure(state, worker, &job, &error, final_attempt).await {
                tracing::error!(job = %job.id, error = %e, "could not record a job failure; it is retried when its lease ends");
            }
        }
    }
}

/// The message stored for a failed attempt: the error's text, which for database errors
/// carries the server's message but never a URL or password.
pub(crate) fn describe(error: &AdminError) -> String {
    match error {
        AdminError::TenantDb(e) => e.to_string(),
        AdminError::Shard(e) => format!("shard database: {e}"),
        AdminError::Backup(e) => e.to_string(),
        other => other.to_string(),
    }
}

/// Record a failed attempt: re-queue with backoff, or (final attempt) fail the job and, for
/// provisioning, the tenant, with the error visible on both.
async fn record_failure(
    state: &AdminState,
    worker: &str,
    job: &Job,
    error: &AdminError,
    final_attempt: bool,
) -> Result<(), AdminError> {
    let message = describe(error);
    // Read before the write lock is taken: a pool read while holding it could wait on a
    // connection that another writer holds while waiting for the lock.
    let tenant = match job.tenant_id {
        Some(id) => state.catalog.tenant(&id.to_string()).await?,
        None => None,
    };
    let mut w = Write::begin(state).await?;
    let (status, retry_at) = if final_attempt {
        (JobStatus::Failed, None)
    } else {
        (JobStatus::Queued, Some(now_plus(backoff(job.attempts))))
    };
    if !store::finish(w.conn(), job.id, worker, status, Some(&message), retry_at).await? {
        return Ok(()); // Lost the lease meanwhile: the new owner records the outcome.
    }
    if job.kind == kind::BACKUP {
        if let Ok(p) = serde_json::from_value::<backup::BackupPayload>(job.payload.clone()) {
            backups::record_error(w.conn(), p.backup_id, &message, final_attempt).await?;
        }
    }
    if job.kind == kind::ISSUE_CERTIFICATE && final_attempt {
        certificate::record_failed(&mut w, job, &message).await?;
    }
    let restore = (job.kind == kind::RESTORE)
        .then(|| serde_json::from_value::<restore::RestorePayload>(job.payload.clone()).ok())
        .flatten();
    if let Some(tenant_id) = job.tenant_id {
        let current = tenant_state::status(w.conn(), tenant_id).await?;
        // A restore as a copy provisions its new tenant: when it gives up, the tenant failed.
        let provisions = job.kind == kind::PROVISION
            || restore
                .as_ref()
                .is_some_and(|p| p.mode == restore::RestoreMode::Copy);
        let fail_tenant =
            final_attempt && provisions && current == Some(TenantStatus::Provisioning);
        // A move or a restore in place that gives up leaves the tenant as it was, in its
        // previous status (a restore's fresh database was dropped by the failing attempt).
        let resume = match serde_json::from_value::<relocate::MovePayload>(job.payload.clone()) {
            Ok(p)
                if final_attempt
                    && job.kind == kind::MOVE
                    && current == Some(TenantStatus::Moving) =>
            {
                Some(p.resume)
            }
            _ => restore
                .as_ref()
                .filter(|_| final_attempt && current == Some(TenantStatus::Restoring))
                .map(|p| p.resume.unwrap_or(TenantStatus::Active)),
        };
        if current.is_some() {
            let status = if fail_tenant {
                Some(TenantStatus::Failed)
            } else {
                resume
            };
            let patch = TenantPatch {
                status,
                last_error: Some(Some(format!("{}: {message}", job.kind))),
                bump_epoch: status.is_some(),
                ..TenantPatch::default()
            };
            tenants::update(w.conn(), tenant_id, &patch).await?;
            w.tenant_change(tenant_id, &[]).await?;
        }
        if let (Some(p), Some(resumed)) = (&restore, resume) {
            w.audit(NewAudit {
                actor: "worker",
                action: "tenant.restore_failed",
                target: &format!("job:{}", job.id),
                tenant_id: Some(tenant_id),
                before: Some(serde_json::json!({ "status": "restoring", "backup": p.backup_id })),
                after: Some(serde_json::json!({ "status": resumed, "error": message })),
            })
            .await?;
        }
        if fail_tenant {
            w.audit(NewAudit {
                actor: "worker",
                action: "tenant.provision_failed",
                target: &format!("job:{}", job.id),
                tenant_id: Some(tenant_id),
                before: None,
                after: Some(serde_json::json!({ "status": "failed", "error": message })),
            })
            .await?;
            if let Some(mut tenant) = tenant {
                tenant.status = TenantStatus::Failed;
                tenant.last_error = Some(message.clone());
                w.event("tenant.failed", &tenant).await?;
            }
        }
    }
    w.commit().await
}

/// Do a job's work. On success the job's completion has been committed.
async fn execute(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    match job.kind.as_str() {
        kind::PROVISION => provision::run(state, worker, job).await,
        kind::DROP => drop::run(state, worker, job).await,
        kind::MOVE => relocate::run(state, worker, job).await,
        kind::MIGRATE => migrate::run(state, worker, job).await,
        kind::BACKUP => backup::run(state, worker, job).await,
        kind::RESTORE => restore::run(state, worker, job).await,
        kind::DROP_DATABASE => drop_database::run(state, worker, job).await,
        kind::PRUNE_BACKUPS => prune::run(state, worker, job).await,
        kind::DATA_RETENTION => data_retention::run(state, worker, job).await,
        kind::ISSUE_CERTIFICATE => certificate::run(state, worker, job).await,
        other => Err(AdminError::Job(format!("unknown job kind {other:?}"))),
    }
}

/// Mark `job` succeeded inside `w`. False (and the caller must not commit) when this worker no
/// longer holds the job.
pub(crate) async fn succeed(
    w: &mut Write<'_>,
    job: &Job,
    worker: &str,
) -> Result<bool, AdminError> {
    Ok(store::finish(w.conn(), job.id, worker, JobStatus::Succeeded, None, None).await?)
}
