//! The scheduler: every [`TICK`], queue what is due: the scheduled backups
//! ([`crate::backup::schedule`] decides; the catalog remembers what was taken) and each
//! tenant's daily data-retention pass ([`crate::jobs::data_retention`], for tenants with
//! `settings.data_retention_days`), and the renewal of ACME certificates past two thirds of
//! their lifetime ([`crate::jobs::certificate::queue_renewals`]).
//!
//! It runs next to the job worker in every admin process. Nothing is kept in memory between
//! ticks: due-ness comes from the catalog (a tenant's newest scheduled backup, and the latest
//! data-retention job, both recorded for their slot; a certificate's pending renewal job), and
//! a tick runs only while holding the catalog's scheduler lock
//! ([`tenantgate_catalog::Catalog::lock_scheduler`]): ticks of several processes run one after
//! another, each seeing what the previous one queued. So each backup slot, each day's
//! data-retention pass and each renewal is queued by exactly one process, and one that
//! restarts neither skips nor repeats them (a scheduled backup is also unique per tenant and
//! slot in the catalog).

use std::time::Duration;

use tenantgate_catalog::store::backups::BackupKind;
use tenantgate_catalog::store::jobs::NewJob;
use tenantgate_contract::TenantSettings;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backup::schedule;
use crate::error::AdminError;
use crate::jobs::kind;
use crate::state::AdminState;
use crate::write::Write;

/// How often the scheduler looks for due work: well inside the window in which a tenant's
/// first scheduled backup may start (a 24th of the period, 150 s on an hourly schedule).
const TICK: Duration = Duration::from_secs(30);

/// Data retention runs once a day per tenant, at the tenant's daily slot.
const DAY_MS: i64 = 86_400_000;

/// What one tick queued.
#[derive(Debug, Default)]
pub struct Scheduled {
    /// (backup id, job id) of each scheduled backup queued.
    pub backups: Vec<(Uuid, Uuid)>,
    /// The data-retention jobs queued.
    pub data_retention: Vec<Uuid>,
    /// The certificate renewals queued.
    pub certificates: Vec<Uuid>,
}

/// Tick until `shutdown`.
pub(crate) async fn run(state: AdminState, shutdown: CancellationToken) {
    loop {
        match tick(&state, tenantgate_contract::time::now_ms()).await {
            Ok(s)
                if !s.backups.is_empty()
                    || !s.data_retention.is_empty()
                    || !s.certificates.is_empty() =>
            {
                tracing::info!(
                    backups = s.backups.len(),
                    data_retention = s.data_retention.len(),
                    certificates = s.certificates.len(),
                    "scheduled work queued"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the scheduler could not run; it retries at the next tick")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Queue everything due at `now_ms`, after any tick of another admin process that is running
/// (see the module docs). Scheduled backups only with a schedule and a `backups.recipient` (a
/// schedule without one is warned about when the configuration loads).
pub(crate) async fn tick(state: &AdminState, now_ms: i64) -> Result<Scheduled, AdminError> {
    let lock = state.catalog.lock_scheduler().await?;
    // Reading what is due and queueing it both happen under the lock: a process that takes it
    // next sees every job this one queued.
    let scheduled = queue_due(state, now_ms).await;
    lock.release().await;
    scheduled
}

async fn queue_due(state: &AdminState, now_ms: i64) -> Result<Scheduled, AdminError> {
    let backup_period = state
        .config
        .backups
        .schedule
        .period()
        .filter(|_| state.config.backups.recipient.is_some())
        .map(|p| i64::try_from(p.as_millis()).expect("a period fits in i64 ms"));
    let mut scheduled = Scheduled::default();
    for candidate in state
        .catalog
        .schedule_candidates(kind::DATA_RETENTION)
        .await?
    {
        let id = candidate.tenant_id;
        if let Some(period_ms) = backup_period {
            if let Some(slot) = schedule::due(id, period_ms, now_ms, candidate.last_scheduled) {
                if let Some(queued) = queue_backup(state, id, slot).await? {
                    scheduled.backups.push(queued);
                }
            }
        }
        let settings = TenantSettings::read_stored(&candidate.settings);
        if settings.data_retention_days.is_some() {
            // Recorded with its slot as run_at: one pass per tenant and day.
            let slot = schedule::slot_start(id, DAY_MS, now_ms);
            if candidate.last_job_run_at.is_none_or(|last| last < slot) {
                scheduled
                    .data_retention
                    .push(queue_data_retention(state, id, slot).await?);
            }
        }
    }
    scheduled.certificates = crate::jobs::certificate::queue_renewals(state, now_ms).await?;
    Ok(scheduled)
}

async fn queue_backup(
    state: &AdminState,
    tenant_id: Uuid,
    slot: i64,
) -> Result<Option<(Uuid, Uuid)>, AdminError> {
    let Some(tenant) = state.catalog.tenant(&tenant_id.to_string()).await? else {
        return Ok(None);
    };
    match crate::api::backups::queue(state, "scheduler", &tenant, BackupKind::Scheduled, slot).await
    {
        Ok(queued) => Ok(queued.map(|(backup, job)| (backup.id, job))),
        // The tenant changed status meanwhile (moving, restoring, deleted): it is due again at
        // the next tick if it still should be.
        Err(AdminError::Conflict(_) | AdminError::NotFound(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

async fn queue_data_retention(
    state: &AdminState,
    tenant_id: Uuid,
    slot: i64,
) -> Result<Uuid, AdminError> {
    let id = Uuid::now_v7();
    let mut w = Write::begin(state).await?;
    w.job(&NewJob {
        id,
        kind: kind::DATA_RETENTION,
        tenant_id: Some(tenant_id),
        payload: serde_json::json!({}),
        max_attempts: i64::from(state.config.admin.job_max_attempts),
        run_at: slot,
    })
    .await?;
    w.commit().await?;
    Ok(id)
}
