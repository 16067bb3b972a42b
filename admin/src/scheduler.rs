//! The backup scheduler: every [`TICK`], queue the scheduled backups that are due
//! ([`crate::backup::schedule`] decides; the catalog remembers what was taken).
//!
//! It runs next to the job worker in every admin process. Nothing is kept in memory between
//! ticks: due-ness comes from the catalog's newest scheduled backup of each tenant, and a
//! scheduled backup is unique per tenant and slot, so processes that tick at once, or one that
//! restarts, neither skip nor repeat a slot.

use std::time::Duration;

use tenantgate_catalog::store::backups::BackupKind;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::backup::schedule;
use crate::error::AdminError;
use crate::state::AdminState;

/// How often the scheduler looks for due backups: well inside the window in which a tenant's
/// first scheduled backup may start (a 24th of the period, 150 s on an hourly schedule).
const TICK: Duration = Duration::from_secs(30);

/// Tick until `shutdown`; returns at once when `[backups] schedule = "off"`.
pub(crate) async fn run(state: AdminState, shutdown: CancellationToken) {
    if state.config.backups.schedule.period().is_none() {
        return;
    }
    loop {
        match tick(&state, tenantgate_contract::time::now_ms()).await {
            Ok(queued) if !queued.is_empty() => {
                tracing::info!(queued = queued.len(), "scheduled backups queued");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the backup schedule could not run; it retries at the next tick")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// Queue every scheduled backup due at `now_ms`; returns (backup id, job id) of each queued.
/// Nothing when the schedule is off or no `backups.recipient` is set (warned about when the
/// configuration is loaded).
pub(crate) async fn tick(state: &AdminState, now_ms: i64) -> Result<Vec<(Uuid, Uuid)>, AdminError> {
    let Some(period) = state.config.backups.schedule.period() else {
        return Ok(Vec::new());
    };
    if state.config.backups.recipient.is_none() {
        return Ok(Vec::new());
    }
    let period_ms = i64::try_from(period.as_millis()).expect("a period fits in i64 ms");
    let mut queued = Vec::new();
    for candidate in state.catalog.backup_schedule_candidates().await? {
        let Some(slot) = schedule::due(
            candidate.tenant_id,
            period_ms,
            now_ms,
            candidate.last_scheduled,
        ) else {
            continue;
        };
        let Some(tenant) = state
            .catalog
            .tenant(&candidate.tenant_id.to_string())
            .await?
        else {
            continue;
        };
        match crate::api::backups::queue(state, "scheduler", &tenant, BackupKind::Scheduled, slot)
            .await
        {
            Ok(Some((backup, job))) => queued.push((backup.id, job)),
            // Taken by another admin process meanwhile.
            Ok(None) => {}
            // The tenant changed status meanwhile (moving, restoring, deleted): it is due
            // again at the next tick if it still should be.
            Err(AdminError::Conflict(_) | AdminError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(queued)
}
