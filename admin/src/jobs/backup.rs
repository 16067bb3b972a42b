//! The `backup_tenant` job: dump a tenant database, encrypt it to `backups.recipient` and store
//! it, streaming (see [`crate::backup`]); then record its size, SHA-256 and location.
//!
//! Crash safety: the backup row is `running` while the job works and becomes `completed` only
//! in the transaction that completes the job, while this worker still holds the job's lease. A
//! worker killed mid-backup therefore leaves it `running`; the job is claimed again when the
//! lease runs out and starts over, writing the same object key (an unfinished multipart upload
//! never becomes a visible object, and a finished one is simply replaced).

use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::backups::{self, BackupKind, BackupStatus, NewBackup, Stored};
use tenantgate_catalog::store::jobs::Job;
use tenantgate_catalog::tenant_db::{self, Credentials, TenantDbError};
use tenantgate_catalog::Tenant;
use tenantgate_config::db_url::Engine;
use tenantgate_contract::TenantStatus;
use uuid::Uuid;

use super::succeed;
use crate::backup::store::Store;
use crate::backup::{tenant, BackupError};
use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// What the API recorded when it queued the backup.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct BackupPayload {
    pub(crate) backup_id: Uuid,
}

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let payload: BackupPayload = serde_json::from_value(job.payload.clone())
        .map_err(|e| AdminError::Job(format!("bad backup job payload: {e}")))?;
    let backup = state
        .catalog
        .backup(payload.backup_id)
        .await?
        .ok_or_else(|| AdminError::Job("the job's backup is not in the catalog".into()))?;
    if backup.status == BackupStatus::Completed {
        // Completed by an earlier claim whose completion raced ours: nothing left to do. (A
        // failed backup whose job runs again was retried through the API: it starts over.)
        return complete(state, worker, job, None).await;
    }
    let tenant = state
        .catalog
        .tenant(&backup.tenant_id.to_string())
        .await?
        .ok_or(AdminError::NotFound("tenant"))?;
    // Only a database that is in place and not being replaced can be dumped consistently.
    if !matches!(
        tenant.status,
        TenantStatus::Active | TenantStatus::Suspended
    ) {
        return Err(BackupError::Refused(format!(
            "the tenant is {}; only active or suspended tenants are backed up",
            tenant.status
        ))
        .into());
    }
    let store = Store::open(&state.config.backups)?;
    let key = store.key(tenant.id, backup.id);

    let mut w = Write::begin(state).await?;
    let started = backups::start(w.conn(), backup.id).await?;
    w.commit().await?;
    if !started {
        return complete(state, worker, job, None).await;
    }
    let stored = take(state, &store, &tenant, key).await?;
    complete(
        state,
        worker,
        job,
        Some((tenant.slug, backup.tenant_id, backup.id, stored)),
    )
    .await
}

/// Dump `tenant`'s database as it is now, encrypt it and store it under `key`; what a backup
/// job does, and what a purge, a move and a restore in place do first ([`before`]). The caller
/// makes sure nothing else replaces the database meanwhile.
pub(crate) async fn take(
    state: &AdminState,
    store: &Store,
    tenant: &Tenant,
    key: String,
) -> Result<Stored, AdminError> {
    let recipient = state
        .config
        .backups
        .recipient
        .clone()
        .ok_or(BackupError::NotConfigured("backups.recipient"))?;
    let shard = state
        .catalog
        .shard(&tenant.shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let (digest, schema_version) = match Engine::of_url(&shard.database_url)? {
        Engine::Postgres => {
            let sealed = tenant
                .db_credentials
                .as_deref()
                .ok_or(TenantDbError::NoCredentials)?;
            let login =
                Credentials::open(sealed, &state.config.security.credential_key, tenant.id)?;
            let target = tenant::PgTarget::new(&shard.database_url, &tenant.db_name, &login)?;
            tenant::backup_postgres(store, &key, recipient, &target).await?
        }
        Engine::Sqlite => {
            let file = tenant_db::sqlite_file(&shard.database_url, &tenant.db_name);
            tenant::backup_sqlite(store, &key, recipient, &file).await?
        }
    };
    let stored = Stored {
        size_bytes: digest.size,
        sha256: digest.sha256,
        location: key,
        schema_version,
    };
    tracing::info!(
        tenant = %tenant.slug,
        location = %stored.location,
        bytes = stored.size_bytes,
        "backup stored"
    );
    Ok(stored)
}

/// Complete the job and, when given, the backup with what it stored, in one transaction.
async fn complete(
    state: &AdminState,
    worker: &str,
    job: &Job,
    stored: Option<(String, Uuid, Uuid, Stored)>,
) -> Result<(), AdminError> {
    let mut w = Write::begin(state).await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    if let Some((slug, tenant_id, backup_id, stored)) = stored {
        record_completed(&mut w, state, &slug, tenant_id, backup_id, &stored).await?;
    }
    w.commit().await
}

/// Mark running backup `backup_id` completed with what it stored, audit it, and queue a
/// retention pass over the tenant's backups (unless one is queued already), all in `w`.
async fn record_completed(
    w: &mut Write<'_>,
    state: &AdminState,
    slug: &str,
    tenant_id: Uuid,
    backup_id: Uuid,
    stored: &Stored,
) -> Result<(), AdminError> {
    if !backups::complete(w.conn(), backup_id, stored).await? {
        return Ok(());
    }
    w.audit(NewAudit {
        actor: "worker",
        action: "backup.complete",
        target: &format!("tenant:{slug}"),
        tenant_id: Some(tenant_id),
        before: Some(serde_json::json!({ "backup": backup_id, "status": "running" })),
        after: Some(serde_json::json!({
            "backup": backup_id,
            "status": "completed",
            "size_bytes": stored.size_bytes,
            "sha256": stored.sha256,
            "location": stored.location,
            "schema_version": stored.schema_version,
        })),
    })
    .await?;
    super::prune::enqueue_retention(w, state, tenant_id).await
}

/// Take a backup of `kind` of `tenant` inside job `job` (a purge, a move or a restore in place)
/// before the job changes the database, and wait for it: the job goes on only when this
/// returns `Ok`. Returns the backup's id, or `None` when backups are not configured
/// (`backups.recipient` unset), which the caller records.
///
/// Idempotent per job: the backup is recorded with the job's id, so a later attempt of the same
/// job reuses a completed one and starts an unfinished one over. A failed attempt marks the
/// backup failed with its error (the job's retry starts it again).
pub(crate) async fn before(
    state: &AdminState,
    job: &Job,
    tenant: &Tenant,
    kind: BackupKind,
) -> Result<Option<Uuid>, AdminError> {
    if state.config.backups.recipient.is_none() {
        return Ok(None);
    }
    let earlier = state
        .catalog
        .all_backups_of_tenant(tenant.id)
        .await?
        .into_iter()
        .find(|b| b.kind == kind && b.job_id == Some(job.id));
    if let Some(b) = earlier
        .as_ref()
        .filter(|b| b.status == BackupStatus::Completed)
    {
        return Ok(Some(b.id));
    }
    let store = Store::open(&state.config.backups)?;
    let shard = state
        .catalog
        .shard(&tenant.shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let id = earlier.map_or_else(Uuid::now_v7, |b| b.id);
    let mut w = Write::begin(state).await?;
    if backups::get(w.conn(), id).await?.is_none() {
        backups::insert(
            w.conn(),
            &NewBackup {
                id,
                tenant_id: tenant.id,
                kind,
                format: crate::api::backups::format_of_shard(&shard)?,
                job_id: job.id,
                created_at: tenantgate_contract::time::now_ms(),
            },
        )
        .await?;
        w.audit(NewAudit {
            actor: "worker",
            action: "backup.create",
            target: &format!("tenant:{}", tenant.slug),
            tenant_id: Some(tenant.id),
            before: None,
            after: Some(serde_json::json!({ "backup": id, "kind": kind, "status": "queued", "job": job.id })),
        })
        .await?;
    }
    backups::start(w.conn(), id).await?;
    w.commit().await?;
    let started = std::time::Instant::now();
    let taken = take(state, &store, tenant, store.key(tenant.id, id)).await;
    let seconds = started.elapsed().as_secs_f64();
    let mut w = Write::begin(state).await?;
    match taken {
        Ok(stored) => {
            record_completed(&mut w, state, &tenant.slug, tenant.id, id, &stored).await?;
            w.commit().await?;
            state.metrics.backup_finished("completed", seconds);
            Ok(Some(id))
        }
        Err(e) => {
            backups::record_error(w.conn(), id, &super::describe(&e), true).await?;
            w.commit().await?;
            state.metrics.backup_finished("failed", seconds);
            Err(e)
        }
    }
}
