//! The `restore_tenant` job: restore a backup into a fresh database, check it, and swap it in
//! (in place) or make it a new tenant's (copy).
//!
//! In place (the tenant is `restoring` meanwhile, so nothing writes to it):
//! 1. the object's size and SHA-256 must be what the catalog recorded, before anything is made;
//!    then the current database is backed up (`pre_restore`, see `super::backup::before`);
//! 2. a fresh database (PostgreSQL: a new database owned by the tenant's login; SQLite: a new
//!    file) named for this job receives the decrypted backup (`pg_restore
//!    --single-transaction` as the tenant's login, or a file renamed into place when complete);
//! 3. the fresh database must open and hold the tenant schema at the backup's version;
//! 4. one catalog write swaps it in: the tenant's `db_name`, its status back to what it was,
//!    an epoch bump (the app closes pools of the old database), the audit record, and a
//!    `drop_database` job that drops the previous database after the deletion grace.
//!
//! Any failure before 4 drops the fresh database and leaves the tenant's own untouched; when
//! the job gives up, its status returns to what it was (`jobs::record_failure`). A re-run
//! (crash, lost lease) starts again from 1 with the same fresh name, dropping what an earlier
//! attempt left there: before the swap it is nobody's database.
//!
//! As a copy, the job provisions a new tenant (status `provisioning`, no domains) the same way,
//! with the backup in place of the tenant migrations, and activates it at the backup's schema
//! version.

use serde::{Deserialize, Serialize};
use sqlx::{Connection, Executor};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::backups::{Backup, BackupKind, BackupStatus};
use tenantgate_catalog::store::jobs::{Job, NewJob};
use tenantgate_catalog::store::tenant_state;
use tenantgate_catalog::store::tenants::{self, TenantPatch};
use tenantgate_catalog::tenant_db::{self, Credentials, TenantDbError};
use tenantgate_catalog::{Shard, Tenant};
use tenantgate_config::db_url::Engine;
use tenantgate_contract::TenantStatus;
use uuid::Uuid;

use super::provision::{admin_connection, ident};
use super::{kind, succeed};
use crate::backup::store::Store;
use crate::backup::stream::{self, Digest256};
use crate::backup::{tenant as db, BackupError};
use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// How a backup is restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RestoreMode {
    /// Replace the tenant's database.
    InPlace,
    /// Make a new tenant from the backup.
    Copy,
}

/// What the API recorded when it started the restore.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RestorePayload {
    pub(crate) backup_id: Uuid,
    pub(crate) mode: RestoreMode,
    /// The database the backup is restored into (in place: a new name, swapped in at the end;
    /// copy: the new tenant's database).
    pub(crate) database: String,
    /// In place: the status the tenant returns to (`active` or `suspended`).
    #[serde(default)]
    pub(crate) resume: Option<TenantStatus>,
}

/// The name of the fresh database a restore in place of `tenant_id` by job `job_id` writes:
/// the tenant's base name plus a suffix from the job id, unique per restore and stable across
/// the job's attempts. 48 characters, within PostgreSQL's 63.
pub(crate) fn fresh_database(tenant_id: Uuid, job_id: Uuid) -> String {
    let job = job_id.simple().to_string();
    format!(
        "{}_r{}",
        tenant_db::db_name(tenant_id),
        &job[job.len() - 12..]
    )
}

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let payload: RestorePayload = serde_json::from_value(job.payload.clone())
        .map_err(|e| AdminError::Job(format!("bad restore job payload: {e}")))?;
    let tenant_id = job
        .tenant_id
        .ok_or_else(|| AdminError::Job("restore job without a tenant".into()))?;
    let waiting_in = waiting_status(payload.mode);
    let tenant = state.catalog.tenant(&tenant_id.to_string()).await?;
    let Some(tenant) = tenant.filter(|t| t.status == waiting_in) else {
        // Deleted (or otherwise moved on) meanwhile: nothing to restore into.
        return finish(state, worker, job, None).await.map(drop);
    };
    let backup = state
        .catalog
        .backup(payload.backup_id)
        .await?
        .filter(|b| b.status == BackupStatus::Completed)
        .ok_or_else(|| BackupError::Refused("the backup is not a completed backup".into()))?;
    let (Some(location), Some(sha256), Some(size), Some(version)) = (
        backup.location.clone(),
        backup.sha256.clone(),
        backup.size_bytes,
        backup.schema_version,
    ) else {
        return Err(BackupError::Refused("the backup's record is incomplete".into()).into());
    };
    let expected = Digest256 { size, sha256 };
    let store = Store::open(&state.config.backups)?;
    let identities = stream::identities(state.config.backups.identity_file.as_deref())?;

    // 1. The object is the one recorded, before anything is created.
    stream::verify(&store, &location, &expected).await?;
    // In place, the database about to be replaced is backed up first (`pre_restore`), so the
    // restore itself can be undone. Nothing writes to it meanwhile: the tenant is restoring.
    if payload.mode == RestoreMode::InPlace {
        super::backup::before(state, job, &tenant, BackupKind::PreRestore).await?;
    }

    let shard = state
        .catalog
        .shard(&tenant.shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    // 2 and 3: restore into the fresh database and check it; drop it again on failure.
    let restored = match Engine::of_url(&shard.database_url)? {
        Engine::Postgres => {
            let login = match payload.mode {
                RestoreMode::InPlace => {
                    let sealed = tenant
                        .db_credentials
                        .as_deref()
                        .ok_or(TenantDbError::NoCredentials)?;
                    Credentials::open(sealed, &state.config.security.credential_key, tenant.id)?
                }
                // A new tenant: its login, made as provisioning makes it (password sealed
                // first; the role and an empty database made only when missing).
                RestoreMode::Copy => {
                    let login = super::provision::login(state, &tenant).await?;
                    super::provision::hold_lease(state, worker, job).await?;
                    super::provision::create_postgres(&shard, &tenant.db_name, &login).await?;
                    login
                }
            };
            fresh_postgres(&shard, &payload.database, &login.user).await?;
            let target = db::PgTarget::new(&shard.database_url, &payload.database, &login)?;
            let result = async {
                db::restore_postgres(&store, &location, identities, &expected, &target).await?;
                db::check_restored(target.url(), version).await
            }
            .await;
            if result.is_err() {
                if let Err(e) = drop_postgres(&shard, &payload.database).await {
                    tracing::warn!(error = %e, "could not drop the database of a failed restore; the next attempt replaces it");
                }
            }
            result
        }
        Engine::Sqlite => {
            let file = tenant_db::sqlite_file(&shard.database_url, &payload.database);
            db::remove_sqlite(&file)?;
            let result = async {
                db::restore_sqlite(&store, &location, identities, &expected, &file).await?;
                db::check_restored(&format!("sqlite://{}", file.display()), version).await
            }
            .await;
            if result.is_err() {
                if let Err(e) = db::remove_sqlite(&file) {
                    tracing::warn!(error = %e, "could not remove the file of a failed restore");
                }
            }
            result
        }
    };
    restored?;
    // The restored database records the epoch of the backup's day: it gets the epoch the swap
    // (or the activation) gives the tenant, before the swap; `finish` swaps only if the
    // catalog still counts from the same epoch.
    super::epoch::record(&shard, &payload.database, tenant.epoch + 1).await?;

    // 4. Swap it in (or activate the copy).
    let swapped = finish(
        state,
        worker,
        job,
        Some((tenant, &shard, &backup, &payload, version)),
    )
    .await?;
    if !swapped && payload.mode == RestoreMode::InPlace {
        // The tenant moved on meanwhile (deleted): the fresh database is nobody's.
        discard(&shard, &payload.database).await;
    }
    Ok(())
}

/// The status a tenant waits in while a restore of `mode` runs.
fn waiting_status(mode: RestoreMode) -> TenantStatus {
    match mode {
        RestoreMode::InPlace => TenantStatus::Restoring,
        RestoreMode::Copy => TenantStatus::Provisioning,
    }
}

/// Complete the job and, when given and the tenant still waits for it, swap the restored
/// database in (or activate the copy). Returns whether it did.
async fn finish(
    state: &AdminState,
    worker: &str,
    job: &Job,
    restored: Option<(Tenant, &Shard, &Backup, &RestorePayload, i64)>,
) -> Result<bool, AdminError> {
    let mut w = Write::begin(state).await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    let mut swapped = false;
    if let Some((tenant, shard, backup, payload, version)) = restored {
        let current = tenant_state::status(w.conn(), tenant.id).await?;
        if current == Some(waiting_status(payload.mode))
            && tenant_state::epoch(w.conn(), tenant.id).await? != Some(tenant.epoch)
        {
            // The restored database records `tenant.epoch + 1`; the next attempt records afresh.
            return Err(AdminError::Job(
                "the tenant's epoch changed during the restore".into(),
            ));
        }
        match payload.mode {
            RestoreMode::InPlace if current == Some(TenantStatus::Restoring) => {
                swapped = true;
                let resume = payload.resume.unwrap_or(TenantStatus::Active);
                let patch = TenantPatch {
                    db_name: Some(payload.database.clone()),
                    status: Some(resume),
                    schema_version: Some(version),
                    last_error: Some(None),
                    bump_epoch: true,
                    ..TenantPatch::default()
                };
                tenants::update(w.conn(), tenant.id, &patch).await?;
                w.tenant_change(tenant.id, &[]).await?;
                let now = tenantgate_contract::time::now_ms();
                let drop_at = now + state.config.admin.deletion_grace.as_millis() as i64;
                let drop_job = Uuid::now_v7();
                w.job(&NewJob {
                    id: drop_job,
                    kind: kind::DROP_DATABASE,
                    tenant_id: Some(tenant.id),
                    payload: serde_json::json!({ "shard": shard.name, "database": tenant.db_name }),
                    max_attempts: i64::from(state.config.admin.job_max_attempts),
                    run_at: drop_at,
                })
                .await?;
                w.audit(NewAudit {
                    actor: "worker",
                    action: "tenant.restore_complete",
                    target: &format!("tenant:{}", tenant.slug),
                    tenant_id: Some(tenant.id),
                    before: Some(serde_json::json!({
                        "status": "restoring",
                        "database": tenant.db_name,
                        "schema_version": tenant.schema_version,
                    })),
                    after: Some(serde_json::json!({
                        "status": resume,
                        "database": payload.database,
                        "schema_version": version,
                        "backup": backup.id,
                        "previous_database_dropped_at": tenantgate_contract::time::rfc3339(drop_at),
                        "drop_job": drop_job,
                    })),
                })
                .await?;
            }
            RestoreMode::Copy if current == Some(TenantStatus::Provisioning) => {
                swapped = true;
                let patch = TenantPatch {
                    status: Some(TenantStatus::Active),
                    schema_version: Some(version),
                    last_error: Some(None),
                    bump_epoch: true,
                    ..TenantPatch::default()
                };
                tenants::update(w.conn(), tenant.id, &patch).await?;
                w.tenant_change(tenant.id, &[]).await?;
                w.audit(NewAudit {
                    actor: "worker",
                    action: "tenant.restore_copy_complete",
                    target: &format!("tenant:{}", tenant.slug),
                    tenant_id: Some(tenant.id),
                    before: Some(serde_json::json!({ "status": "provisioning" })),
                    after: Some(serde_json::json!({
                        "status": "active",
                        "schema_version": version,
                        "backup": backup.id,
                        "source_tenant": backup.tenant_id,
                    })),
                })
                .await?;
                let mut after = tenant.clone();
                after.status = TenantStatus::Active;
                after.schema_version = version;
                after.epoch += 1;
                w.event("tenant.activated", &after).await?;
            }
            _ => {}
        }
    }
    w.commit().await?;
    Ok(swapped)
}

/// Create `database` on the shard's server, empty and owned by `owner`, replacing what an
/// earlier attempt left under that name. Only the owner may connect (as at provisioning).
async fn fresh_postgres(shard: &Shard, database: &str, owner: &str) -> Result<(), AdminError> {
    let mut conn = admin_connection(shard).await?;
    let (name, role) = (ident(database), ident(owner));
    let result = async {
        conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await?;
        conn.execute(format!("CREATE DATABASE {name} OWNER {role}").as_str())
            .await?;
        conn.execute(format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC").as_str())
            .await?;
        conn.execute(format!("GRANT CONNECT, TEMPORARY ON DATABASE {name} TO {role}").as_str())
            .await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    let _ = conn.close().await;
    Ok(result?)
}

/// Drop `database` on the shard's server (gone already is fine).
pub(crate) async fn drop_postgres(shard: &Shard, database: &str) -> Result<(), AdminError> {
    let mut conn = admin_connection(shard).await?;
    let result = conn
        .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(database)).as_str())
        .await;
    let _ = conn.close().await;
    result?;
    Ok(())
}

/// Drop the login `role` on `shard`'s server unless it still owns something there (then it is
/// kept, and logged): the old server's login of a moved tenant.
pub(crate) async fn drop_login(shard: &Shard, role: &str) -> Result<(), AdminError> {
    let mut conn = admin_connection(shard).await?;
    let result = conn
        .execute(format!("DROP ROLE IF EXISTS {}", ident(role)).as_str())
        .await;
    let _ = conn.close().await;
    match result {
        Ok(_) => Ok(()),
        // 2BP01: the role still owns objects (another database of the tenant).
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("2BP01") => {
            tracing::info!(role, "kept a login that still owns objects");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Remove a restored database nobody uses (best effort: logged when it fails).
async fn discard(shard: &Shard, database: &str) {
    let result = match Engine::of_url(&shard.database_url) {
        Ok(Engine::Postgres) => drop_postgres(shard, database).await,
        Ok(Engine::Sqlite) => {
            db::remove_sqlite(&tenant_db::sqlite_file(&shard.database_url, database))
                .map_err(AdminError::from)
        }
        Err(e) => Err(e.into()),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, database, "could not remove the database of an abandoned restore");
    }
}
