//! The `prune_backups` job: delete a tenant's backups that retention no longer keeps, or (after
//! a purge and `backups.deleted_retention_days`) all of them.
//!
//! - Retention (queued after every completed backup of the tenant): the completed backups
//!   other than `pre_delete` ones are chosen from by the tenant's policy
//!   (`settings.backup_retention`, else `[backups]`'s keep_daily/weekly/monthly; see
//!   [`crate::backup::retention`]). A failed backup older than the newest completed one is
//!   pruned too. Queued and running backups are never touched, nor one that a queued or
//!   running restore reads.
//! - Erasure (queued by the purge, to run `deleted_retention_days` later): if the tenant is still
//!   deleted, every backup of it that is not queued or running goes (GDPR).
//!
//! For each backup: the object is deleted first (missing is fine), then the row, with an audit
//! record, in one catalog write. A crash in between leaves a row whose object is gone, which the
//! next pass deletes again; never an object the catalog has forgotten.

use std::collections::BTreeSet;

use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::backups::{self, Backup, BackupKind, BackupStatus};
use tenantgate_catalog::store::jobs::{self as store, Job, NewJob};
use tenantgate_contract::{TenantSettings, TenantStatus};
use uuid::Uuid;

use super::restore::RestorePayload;
use super::{kind, succeed};
use crate::backup::store::Store;
use crate::backup::{retention, BackupError};
use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// What the job prunes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PruneMode {
    /// What the tenant's retention policy does not keep.
    Retention,
    /// Every backup of a purged tenant.
    Erase,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PrunePayload {
    pub(crate) mode: PruneMode,
}

/// Queue a retention pass over `tenant_id`'s backups in `w`, unless one is queued already.
pub(crate) async fn enqueue_retention(
    w: &mut Write<'_>,
    state: &AdminState,
    tenant_id: Uuid,
) -> Result<(), AdminError> {
    let pending = store::pending_for_tenant(w.conn(), tenant_id, kind::PRUNE_BACKUPS).await?;
    if pending.is_some_and(|j| j.status == store::JobStatus::Queued) {
        return Ok(());
    }
    enqueue(
        w,
        state,
        tenant_id,
        PruneMode::Retention,
        tenantgate_contract::time::now_ms(),
    )
    .await
}

/// Queue the erasure of a purged tenant's backups at `run_at` in `w`.
pub(crate) async fn enqueue_erase(
    w: &mut Write<'_>,
    state: &AdminState,
    tenant_id: Uuid,
    run_at: i64,
) -> Result<(), AdminError> {
    enqueue(w, state, tenant_id, PruneMode::Erase, run_at).await
}

async fn enqueue(
    w: &mut Write<'_>,
    state: &AdminState,
    tenant_id: Uuid,
    mode: PruneMode,
    run_at: i64,
) -> Result<(), AdminError> {
    w.job(&NewJob {
        id: Uuid::now_v7(),
        kind: kind::PRUNE_BACKUPS,
        tenant_id: Some(tenant_id),
        payload: serde_json::to_value(PrunePayload { mode }).expect("payload serialises"),
        max_attempts: i64::from(state.config.admin.job_max_attempts),
        run_at,
    })
    .await
}

/// The backups of one tenant that `mode` deletes at `now_ms`, given its settings; never one in
/// `in_use` (a queued or running restore reads it).
pub(crate) fn doomed(
    state: &AdminState,
    mode: PruneMode,
    settings: &TenantSettings,
    all: &[Backup],
    in_use: &BTreeSet<Uuid>,
    now_ms: i64,
) -> Vec<Backup> {
    let settled = |b: &&Backup| {
        matches!(b.status, BackupStatus::Completed | BackupStatus::Failed)
            && !in_use.contains(&b.id)
    };
    match mode {
        PruneMode::Erase => all.iter().filter(settled).cloned().collect(),
        PruneMode::Retention => {
            let policy = settings
                .backup_retention
                .unwrap_or(state.config.backups.retention);
            let candidates: Vec<(Uuid, i64)> = all
                .iter()
                .filter(|b| b.status == BackupStatus::Completed && b.kind != BackupKind::PreDelete)
                .map(|b| (b.id, b.created_at))
                .collect();
            let kept: BTreeSet<Uuid> = retention::keep(policy, &candidates, now_ms);
            let newest_completed = candidates.iter().map(|(_, at)| *at).max();
            all.iter()
                .filter(settled)
                .filter(|b| match b.status {
                    BackupStatus::Completed => {
                        b.kind != BackupKind::PreDelete && !kept.contains(&b.id)
                    }
                    BackupStatus::Failed => newest_completed.is_some_and(|n| b.created_at < n),
                    _ => false,
                })
                .cloned()
                .collect()
        }
    }
}

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let payload: PrunePayload = serde_json::from_value(job.payload.clone())
        .map_err(|e| AdminError::Job(format!("bad prune job payload: {e}")))?;
    let tenant_id = job
        .tenant_id
        .ok_or_else(|| AdminError::Job("prune job without a tenant".into()))?;
    let tenant = state.catalog.tenant(&tenant_id.to_string()).await?;
    let go_on = match (&tenant, payload.mode) {
        (None, _) => false,
        // Erasure is for purged tenants only (not undeleted meanwhile).
        (Some(t), PruneMode::Erase) => t.status == TenantStatus::Deleted,
        // A deleted tenant's backups wait for their erasure instead.
        (Some(t), PruneMode::Retention) => t.status != TenantStatus::Deleted,
    };
    let mut pruned = 0usize;
    if let (true, Some(tenant)) = (go_on, &tenant) {
        let settings = TenantSettings::read_stored(&tenant.settings);
        let all = state.catalog.all_backups_of_tenant(tenant_id).await?;
        // Backups a restore is about to read stay (a restore as copy runs under the new
        // tenant's id, so every pending restore is looked at).
        let in_use: BTreeSet<Uuid> = state
            .catalog
            .pending_jobs_of_kind(kind::RESTORE)
            .await?
            .iter()
            .filter_map(|j| serde_json::from_value::<RestorePayload>(j.payload.clone()).ok())
            .map(|p| p.backup_id)
            .collect();
        let now = tenantgate_contract::time::now_ms();
        let doomed = doomed(state, payload.mode, &settings, &all, &in_use, now);
        if !doomed.is_empty() {
            let store = Store::open(&state.config.backups)?;
            let action = match payload.mode {
                PruneMode::Retention => "backup.prune",
                PruneMode::Erase => "backup.erase",
            };
            for backup in doomed {
                // A failed backup may have left an object under its key without recording it.
                let location = backup
                    .location
                    .clone()
                    .unwrap_or_else(|| store.key(tenant_id, backup.id));
                match store.objects.delete(&Store::path(&location)?).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(BackupError::Store(e).into()),
                }
                let mut w = Write::begin(state).await?;
                if backups::delete(w.conn(), backup.id).await? {
                    pruned += 1;
                    w.audit(NewAudit {
                        actor: "worker",
                        action,
                        target: &format!("tenant:{}", tenant.slug),
                        tenant_id: Some(tenant_id),
                        before: Some(serde_json::json!({
                            "backup": backup.id,
                            "kind": backup.kind,
                            "status": backup.status,
                            "created_at": tenantgate_contract::time::rfc3339(backup.created_at),
                            "location": location,
                        })),
                        after: None,
                    })
                    .await?;
                }
                w.commit().await?;
            }
        }
    }
    let mut w = Write::begin(state).await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    w.commit().await?;
    if pruned > 0 {
        tracing::info!(tenant = %tenant_id, pruned, mode = ?payload.mode, "backups pruned");
    }
    Ok(())
}
