//! `/v1/jobs/{id}`: a job's state, and retrying a failed job.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::jobs::{self as store, Job, JobStatus};
use tenantgate_catalog::store::tenant_state;
use tenantgate_catalog::store::tenants::{self, TenantPatch};
use tenantgate_contract::time::serde_rfc3339;
use tenantgate_contract::TenantStatus;
use uuid::Uuid;

use crate::auth::{Actor, ScopedReader, ScopedWriter};
use crate::error::AdminError;
use crate::jobs::kind;
use crate::jobs::restore::{RestoreMode, RestorePayload};
use crate::state::AdminState;
use crate::write::Write;

/// A job as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub(crate) struct JobView {
    id: Uuid,
    /// `provision_tenant`, `drop_tenant`, `move_tenant`, `migrate_tenants`, `backup_tenant`,
    /// `restore_tenant`, `drop_database`, `prune_backups`, `data_retention`.
    kind: String,
    tenant_id: Option<Uuid>,
    status: JobStatus,
    attempts: i64,
    max_attempts: i64,
    /// Error of the last failed attempt.
    error: Option<String>,
    /// What a long job reports while it runs: a fleet migration done, total, failed, ...; a move
    /// its `phase` (copy, catch_up, hold, flip, cleanup, done, rolled_back), `rows_copied`,
    /// `lag_bytes`, ...; a free-form object.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Object, nullable = false)]
    progress: Option<serde_json::Value>,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    run_at: i64,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    created_at: i64,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    updated_at: i64,
}

impl From<Job> for JobView {
    fn from(j: Job) -> JobView {
        JobView {
            id: j.id,
            kind: j.kind,
            tenant_id: j.tenant_id,
            status: j.status,
            attempts: j.attempts,
            max_attempts: j.max_attempts,
            error: j.error,
            progress: j.progress,
            run_at: j.run_at,
            created_at: j.created_at,
            updated_at: j.updated_at,
        }
    }
}

/// Job `id` if `actor` reaches it: a job of one of its tenants, or any job for a fleet token.
/// A tenant-restricted token gets 403 for fleet jobs and for jobs that do not exist alike.
async fn find(state: &AdminState, actor: &Actor, id: &str) -> Result<Job, AdminError> {
    let job = match Uuid::parse_str(id) {
        Ok(id) => state.catalog.job(id).await?,
        Err(_) => None,
    };
    actor
        .reach
        .check(job.as_ref().and_then(|j| j.tenant_id), "job")?;
    job.ok_or(AdminError::NotFound("job"))
}

pub(crate) async fn get_handler(
    State(state): State<AdminState>,
    ScopedReader(actor): ScopedReader,
    Path(id): Path<String>,
) -> Result<Json<JobView>, AdminError> {
    let job = find(&state, &actor, &id).await?;
    Ok(Json(job.into()))
}

/// Put a failed job back in the queue with fresh attempts; a failed tenant it provisions (or a
/// failed copy it restores) goes back to `provisioning`; the tenant of a restore in place goes
/// back to `restoring`. 409 unless the job is failed (or its tenant cannot be restored now).
pub(crate) async fn retry_handler(
    State(state): State<AdminState>,
    ScopedWriter(actor): ScopedWriter,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobView>), AdminError> {
    let before = find(&state, &actor, &id).await?;
    let id = before.id;
    // A restore in place that gave up put its tenant back in its status; the retry takes it
    // out of service again, as starting the restore did (else the job would find the tenant
    // not restoring and do nothing).
    let in_place = (before.kind == kind::RESTORE)
        .then(|| serde_json::from_value::<RestorePayload>(before.payload.clone()).ok())
        .flatten()
        .filter(|p| p.mode == RestoreMode::InPlace);
    let mut w = Write::begin(&state).await?;
    if !store::requeue_failed(w.conn(), id).await? {
        return Err(AdminError::Conflict(format!(
            "only a failed job can be retried; this one is {}",
            before.status.as_str()
        )));
    }
    w.wake_worker();
    // A restore as copy provisions its tenant like provisioning does.
    if let (Some(tenant_id), kind::PROVISION | kind::RESTORE) =
        (before.tenant_id, before.kind.as_str())
    {
        if tenant_state::status(w.conn(), tenant_id).await? == Some(TenantStatus::Failed) {
            let patch = TenantPatch {
                status: Some(TenantStatus::Provisioning),
                last_error: Some(None),
                bump_epoch: true,
                ..TenantPatch::default()
            };
            tenants::update(w.conn(), tenant_id, &patch).await?;
            w.tenant_change(tenant_id, &[]).await?;
        }
    }
    if let (Some(mut payload), Some(tenant_id)) = (in_place, before.tenant_id) {
        let current = tenant_state::status(w.conn(), tenant_id).await?;
        match current {
            Some(status @ (TenantStatus::Active | TenantStatus::Suspended)) => {
                payload.resume = Some(status);
                let payload = serde_json::to_value(&payload).expect("payload serialises");
                store::set_payload(w.conn(), id, &payload).await?;
                let patch = TenantPatch {
                    status: Some(TenantStatus::Restoring),
                    last_error: Some(None),
                    bump_epoch: true,
                    ..TenantPatch::default()
                };
                tenants::update(w.conn(), tenant_id, &patch).await?;
                w.tenant_change(tenant_id, &[]).await?;
            }
            Some(TenantStatus::Restoring) => {}
            Some(other) => {
                return Err(AdminError::Conflict(format!(
                    "a tenant in status {other} cannot be restored"
                )))
            }
            None => return Err(AdminError::NotFound("tenant")),
        }
    }
    let after = store::get(w.conn(), id)
        .await?
        .ok_or(AdminError::NotFound("job"))?;
    w.audit(NewAudit {
        actor: &actor.name,
        action: "job.retry",
        target: &format!("job:{id}"),
        tenant_id: before.tenant_id,
        before: Some(serde_json::json!({ "status": before.status, "attempts": before.attempts, "error": before.error })),
        after: Some(serde_json::json!({ "status": after.status, "attempts": after.attempts })),
    })
    .await?;
    w.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(after.into())))
}
