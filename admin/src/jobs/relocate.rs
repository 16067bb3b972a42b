//! The `move_tenant` job: move a tenant (status `moving`) to another shard, then switch its
//! routing and restore its status. It first takes a `pre_move` backup when backups are
//! configured, and goes on only once that completed.
//!
//! - SQLite: the tenant's file is copied with `VACUUM INTO`, a consistent snapshot even while
//!   the source is open; an earlier partial copy is removed first, so a re-run starts clean. The
//!   source file is removed only after the switch has committed.
//! - PostgreSQL: moves are accepted only between shards on the same database server (checked by
//!   the API), where the tenant's database stays where it is and only the routing changes.
//!   Copying to another server would need a dump and restore, which is not implemented.

use serde::Deserialize;
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::backups::BackupKind;
use tenantgate_catalog::store::jobs::Job;
use tenantgate_catalog::store::tenant_state;
use tenantgate_catalog::store::tenants::{self, TenantPatch};
use tenantgate_catalog::tenant_db;
use tenantgate_config::db_url::Engine;
use tenantgate_contract::TenantStatus;

use super::succeed;
use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// What the API recorded when it started the move.
#[derive(Debug, Deserialize)]
pub(crate) struct MovePayload {
    pub(crate) from: String,
    pub(crate) to: String,
    /// Status to restore after the move (`active` or `suspended`).
    pub(crate) resume: TenantStatus,
}

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let payload: MovePayload = serde_json::from_value(job.payload.clone())
        .map_err(|e| AdminError::Job(format!("bad move job payload: {e}")))?;
    let tenant_id = job
        .tenant_id
        .ok_or_else(|| AdminError::Job("move job without a tenant".into()))?;
    let tenant = state.catalog.tenant(&tenant_id.to_string()).await?;
    let Some(tenant) = tenant.filter(|t| t.status == TenantStatus::Moving) else {
        return finish(state, worker, job, None).await.map(|_| ());
    };
    // A backup first (`pre_move`), so a move gone wrong can be undone; the job waits for it.
    super::backup::before(state, job, &tenant, BackupKind::PreMove).await?;
    let from = state
        .catalog
        .shard(&payload.from)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let to = state
        .catalog
        .shard(&payload.to)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let mut copy = None;
    if Engine::of_url(&from.database_url)? == Engine::Sqlite {
        let src = tenant_db::sqlite_file(&from.database_url, &tenant.db_name);
        let dst = tenant_db::sqlite_file(&to.database_url, &tenant.db_name);
        if src != dst {
            if let Some(dir) = dst.parent() {
                std::fs::create_dir_all(dir)?;
            }
            remove_sqlite(&dst)?;
            let pool =
                tenantgate_catalog::db::connect(&format!("sqlite://{}", src.display()), 1).await?;
            let target = dst.display().to_string().replace('\'', "''");
            let copied = sqlx::query(&format!("VACUUM INTO '{target}'"))
                .execute(&pool)
                .await;
            pool.close().await;
            copied?;
            copy = Some((src, dst));
        }
    }
    let switched = finish(state, worker, job, Some((tenant, payload))).await?;
    if let Some((src, dst)) = copy {
        // After the switch the copy is the tenant's database; without it (the tenant was
        // deleted meanwhile) the copy is the leftover.
        let leftover = if switched { src } else { dst };
        if let Err(e) = remove_sqlite(&leftover) {
            tracing::warn!(error = %e, file = %leftover.display(), "could not remove a tenant file left by a move");
        }
    }
    Ok(())
}

fn remove_sqlite(file: &std::path::Path) -> Result<(), std::io::Error> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut path = file.as_os_str().to_owned();
        path.push(suffix);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Complete the job and, when `switch` is given and the tenant is still moving, switch it to
/// the new shard. Returns whether it switched.
async fn finish(
    state: &AdminState,
    worker: &str,
    job: &Job,
    switch: Option<(tenantgate_catalog::Tenant, MovePayload)>,
) -> Result<bool, AdminError> {
    let mut w = Write::begin(state).await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    let mut switched = false;
    if let Some((tenant, payload)) = switch {
        if tenant_state::status(w.conn(), tenant.id).await? == Some(TenantStatus::Moving) {
            switched = true;
            let patch = TenantPatch {
                shard: Some(payload.to.clone()),
                status: Some(payload.resume),
                last_error: Some(None),
                bump_epoch: true,
                ..TenantPatch::default()
            };
            tenants::update(w.conn(), tenant.id, &patch).await?;
            w.tenant_change(tenant.id, &[]).await?;
            w.audit(NewAudit {
                actor: "worker",
                action: "tenant.move_complete",
                target: &format!("tenant:{}", tenant.slug),
                tenant_id: Some(tenant.id),
                before: Some(serde_json::json!({ "shard": payload.from, "status": "moving" })),
                after: Some(serde_json::json!({ "shard": payload.to, "status": payload.resume })),
            })
            .await?;
        }
    }
    w.commit().await?;
    Ok(switched)
}
