//! The `drop_tenant` job: after the deletion grace (or at once with `purge`), drop a deleted
//! tenant's database and login (PostgreSQL) or remove its file (SQLite), then free its domains.
//!
//! First, when backups are configured and the tenant's database was ever migrated, it takes a
//! `pre_delete` backup and waits for it: if the backup fails, the job fails (and retries) and
//! nothing is dropped. After the drop it queues the erasure of all the tenant's backups
//! `backups.deleted_retention_days` later ([`super::prune`]).
//!
//! Idempotent: `DROP … IF EXISTS` and missing files are fine. It never runs while a
//! provisioning job of the same tenant is still pending, which could otherwise recreate what
//! was just dropped.

use sqlx::{Connection, Executor};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::backups::BackupKind;
use tenantgate_catalog::store::jobs::{self as store, Job};
use tenantgate_catalog::store::tenant_state;
use tenantgate_catalog::store::tenants::{self, TenantPatch};
use tenantgate_catalog::tenant_db;
use tenantgate_config::db_url::Engine;
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::TenantStatus;
use uuid::Uuid;

use super::provision::{admin_connection, ident};
use super::{kind, succeed};
use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let tenant_id = job
        .tenant_id
        .ok_or_else(|| AdminError::Job("drop job without a tenant".into()))?;
    let Some(tenant) = state.catalog.tenant(&tenant_id.to_string()).await? else {
        return complete(state, worker, job, None).await;
    };
    if tenant.status != TenantStatus::Deleted {
        // Undeleted in between (not offered by the API today): keep everything.
        return complete(state, worker, job, None).await;
    }
    let provisioning = state
        .catalog
        .jobs_of_tenant(tenant_id)
        .await?
        .into_iter()
        .any(|j| {
            j.kind == kind::PROVISION
                && matches!(
                    j.status,
                    store::JobStatus::Queued | store::JobStatus::Running
                )
        });
    if provisioning {
        return Err(AdminError::Job(
            "waiting for the tenant's provisioning job to stop".into(),
        ));
    }
    // A database that was never migrated holds nothing to keep (and may not exist at all).
    let pre_delete = if tenant.schema_version > 0 {
        super::backup::before(state, job, &tenant, BackupKind::PreDelete).await?
    } else {
        None
    };
    let shard = state
        .catalog
        .shard(&tenant.shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    match Engine::of_url(&shard.database_url)? {
        Engine::Postgres => {
            let mut conn = admin_connection(&shard).await?;
            // The login is named for the tenant id; after a restore in place the database has
            // another name, and a replaced one may still wait for its own drop. Every database
            // the login owns goes, then the login.
            let role = tenant_db::db_name(tenant.id);
            let result = async {
                let owned: Vec<String> = sqlx::query_scalar(
                    "SELECT d.datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
                     WHERE r.rolname = $1",
                )
                .bind(&role)
                .fetch_all(&mut conn)
                .await?;
                for name in owned.iter().chain(std::iter::once(&tenant.db_name)) {
                    let name = ident(name);
                    conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                        .await?;
                }
                conn.execute(format!("DROP ROLE IF EXISTS {}", ident(&role)).as_str())
                    .await?;
                Ok::<_, sqlx::Error>(())
            }
            .await;
            let _ = conn.close().await;
            result?;
        }
        Engine::Sqlite => {
            let file = tenant_db::sqlite_file(&shard.database_url, &tenant.db_name);
            for suffix in ["", "-wal", "-shm", "-journal"] {
                let mut path = file.clone().into_os_string();
                path.push(suffix);
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    complete(state, worker, job, Some((tenant, pre_delete))).await
}

/// Complete the job; after a drop, forget the login and free the tenant's domains.
async fn complete(
    state: &AdminState,
    worker: &str,
    job: &Job,
    dropped: Option<(tenantgate_catalog::Tenant, Option<Uuid>)>,
) -> Result<(), AdminError> {
    let mut w = Write::begin(state).await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    if let Some((tenant, pre_delete)) = dropped {
        if tenant_state::status(w.conn(), tenant.id).await? == Some(TenantStatus::Deleted) {
            let hosts: Vec<String> = tenants::hosts_of(w.conn(), tenant.id).await?;
            for domain in &tenant.domains {
                if let Ok(spec) = DomainSpec::parse(domain) {
                    // Already gone is fine: the goal is that none is left.
                    match tenants::delete_domain(w.conn(), tenant.id, &spec).await {
                        Ok(()) | Err(tenantgate_catalog::CatalogError::NotFound(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            let patch = TenantPatch {
                db_credentials: Some(None),
                ..TenantPatch::default()
            };
            tenants::update(w.conn(), tenant.id, &patch).await?;
            w.tenant_change(tenant.id, &hosts).await?;
            w.audit(NewAudit {
                actor: "worker",
                action: "tenant.drop_database",
                target: &format!("tenant:{}", tenant.slug),
                tenant_id: Some(tenant.id),
                before: Some(
                    serde_json::json!({ "database": tenant.db_name, "domains": tenant.domains }),
                ),
                after: Some(serde_json::json!({
                    "database": null,
                    "domains": [],
                    "pre_delete_backup": pre_delete,
                })),
            })
            .await?;
            // GDPR: the backups go too, after their retention.
            let erase_at = tenantgate_contract::time::now_ms()
                + i64::try_from(state.config.backups.deleted_retention.as_millis())
                    .unwrap_or(i64::MAX / 2);
            super::prune::enqueue_erase(&mut w, state, tenant.id, erase_at).await?;
        }
    }
    w.commit().await
}
