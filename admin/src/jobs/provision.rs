//! The `provision_tenant` job: create the tenant's database (and, on PostgreSQL, its login), run
//! the tenant migrations, mark the tenant active.
//!
//! Each step looks before it acts, so a re-run after a crash at any point converges:
//! - the login's password is sealed into the catalog *before* the role gets it, so a re-run
//!   always knows the password of a role an earlier run created;
//! - the role and the database are created only when `pg_roles` / `pg_database` lack them;
//! - migrations record what they applied and skip it the next time;
//! - the final catalog write happens only while the tenant is still `provisioning`.
//!
//! The boundaries between these steps are crash-test stall points ([`super::stall`],
//! `TENANTGATE_TEST_PROVISION_STALL`): `sealed` (login sealed in the catalog), `role` (the role
//! exists), `database` (the database exists), `migrated`, `epoch` (the activation epoch recorded
//! in the tenant database; next is the final catalog write). `tests/crash.rs` kills the admin at
//! each of them in turn.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::jobs::Job;
use tenantgate_catalog::store::tenant_state;
use tenantgate_catalog::store::tenants::{self, TenantPatch};
use tenantgate_catalog::tenant_db::{self, Credentials};
use tenantgate_catalog::{Shard, Tenant};
use tenantgate_config::db_url::Engine;
use tenantgate_contract::crypto::random_secret;
use tenantgate_contract::TenantStatus;

use super::{stall, succeed};
use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let tenant_id = job
        .tenant_id
        .ok_or_else(|| AdminError::Job("provisioning job without a tenant".into()))?;
    let tenant = state.catalog.tenant(&tenant_id.to_string()).await?;
    let tenant = match tenant {
        Some(t) if t.status == TenantStatus::Provisioning => t,
        // Deleted (or otherwise moved on) while queued: nothing to create.
        _ => return finish(state, worker, job, None).await,
    };
    let shard = state
        .catalog
        .shard(&tenant.shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let backend = Engine::of_url(&shard.database_url)?;
    let migrator = tenant_db::migrator(&state.config.tenant_migrations.dir, backend).await?;
    let url = match backend {
        Engine::Postgres => {
            let login = login(state, &tenant).await?;
            stall::point(stall::PROVISION, "sealed").await;
            // Only the lease holder may set the role's password: a worker whose lease ran out
            // could otherwise apply a password other than the sealed one.
            hold_lease(state, worker, job).await?;
            create_postgres(&shard, &tenant.db_name, &login).await?;
            stall::point(stall::PROVISION, "database").await;
            tenant_db::postgres_url(&shard.database_url, &tenant.db_name, Some(&login))?
        }
        Engine::Sqlite => {
            let path = tenant_db::sqlite_file(&shard.database_url, &tenant.db_name);
            format!("sqlite://{}", path.display())
        }
    };
    // Migrate as the tenant's own login, so everything it creates belongs to the tenant.
    let pool = tenantgate_catalog::db::connect(&url, 1).await?;
    let migrated = async {
        migrator.run(&pool).await?;
        tenant_db::schema_version(&pool).await
    }
    .await;
    pool.close().await;
    let version = migrated?;
    stall::point(stall::PROVISION, "migrated").await;
    // The epoch activation gives the tenant, recorded before activation (epoch fencing);
    // `finish` activates only if the catalog still counts from the same epoch.
    super::epoch::record(&shard, &tenant.db_name, tenant.epoch + 1).await?;
    stall::point(stall::PROVISION, "epoch").await;
    finish(state, worker, job, Some((tenant, version))).await
}

/// Renew the job's lease now; an error when this worker no longer holds the job.
pub(crate) async fn hold_lease(
    state: &AdminState,
    worker: &str,
    job: &Job,
) -> Result<(), AdminError> {
    let lease_until =
        tenantgate_contract::time::now_ms() + state.config.admin.job_lease.as_millis() as i64;
    if !state
        .catalog
        .renew_job_lease(job.id, worker, lease_until)
        .await?
    {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    Ok(())
}

/// Complete the job and, when `activate` is given and the tenant is still provisioning, mark it
/// active at that schema version.
async fn finish(
    state: &AdminState,
    worker: &str,
    job: &Job,
    activate: Option<(Tenant, i64)>,
) -> Result<(), AdminError> {
    let mut w = Write::begin(state).await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    if let Some((before, version)) = activate {
        if tenant_state::status(w.conn(), before.id).await? == Some(TenantStatus::Provisioning) {
            if tenant_state::epoch(w.conn(), before.id).await? != Some(before.epoch) {
                // The database records `before.epoch + 1`; the next attempt records afresh.
                return Err(AdminError::Job(
                    "the tenant's epoch changed while provisioning".into(),
                ));
            }
            let patch = TenantPatch {
                status: Some(TenantStatus::Active),
                schema_version: Some(version),
                last_error: Some(None),
                migration_error: Some(None),
                bump_epoch: true,
                ..TenantPatch::default()
            };
            tenants::update(w.conn(), before.id, &patch).await?;
            w.tenant_change(before.id, &[]).await?;
            let mut after = before.clone();
            after.status = TenantStatus::Active;
            after.schema_version = version;
            after.last_error = None;
            after.epoch += 1;
            w.audit(NewAudit {
                actor: "worker",
                action: "tenant.activate",
                target: &format!("tenant:{}", before.slug),
                tenant_id: Some(before.id),
                before: Some(serde_json::json!({ "status": before.status, "schema_version": before.schema_version })),
                after: Some(serde_json::json!({ "status": after.status, "schema_version": version })),
            })
            .await?;
            w.event("tenant.activated", &after).await?;
        }
    }
    w.commit().await
}

/// The tenant's database login: the sealed one in the catalog, or a new one sealed into the
/// catalog now (before any role has it, see the module docs).
pub(crate) async fn login(state: &AdminState, tenant: &Tenant) -> Result<Credentials, AdminError> {
    let key = &state.config.security.credential_key;
    if let Some(sealed) = &tenant.db_credentials {
        match Credentials::open(sealed, key, tenant.id) {
            Ok(c) => return Ok(c),
            // Sealed with another key (a dev process without a configured key restarted): the
            // password is unknowable, so a new one replaces it below.
            Err(e) => {
                tracing::warn!(tenant = %tenant.slug, error = %e, "stored tenant login does not open; generating a new one")
            }
        }
    }
    let login = Credentials {
        user: tenant.db_name.clone(),
        password: random_secret(24),
    };
    let mut w = Write::begin(state).await?;
    let patch = TenantPatch {
        db_credentials: Some(Some(login.seal(key, tenant.id))),
        ..TenantPatch::default()
    };
    tenants::update(w.conn(), tenant.id, &patch).await?;
    // Components holding the old login (an app's tenant pool) must learn of the new one.
    w.tenant_change(tenant.id, &[]).await?;
    w.commit().await?;
    Ok(login)
}

/// An administrative connection to a PostgreSQL shard's server (statements never logged: some
/// carry passwords).
pub(crate) async fn admin_connection(shard: &Shard) -> Result<PgConnection, AdminError> {
    let options = PgConnectOptions::from_str(&shard.database_url)?.disable_statement_logging();
    Ok(PgConnection::connect_with(&options).await?)
}

/// `name` as a quoted SQL identifier. Our names are `t_<hex>`, quoting is belt and braces.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// True when the statement ran, false when it failed with SQLSTATE `code`; other errors pass.
fn ignore_code<T>(result: Result<T, sqlx::Error>, code: &str) -> Result<bool, sqlx::Error> {
    match result {
        Ok(_) => Ok(true),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(code) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Create (or bring back in line) the tenant's role and database on a PostgreSQL shard.
///
/// The role may log in and do nothing else server-wide (no superuser, no CREATEDB, no
/// CREATEROLE, no replication); it owns its database, and only it may connect to that database
/// (CONNECT is revoked from PUBLIC).
pub(crate) async fn create_postgres(
    shard: &Shard,
    db: &str,
    login: &Credentials,
) -> Result<(), AdminError> {
    // The SCRAM verifier, not the password: the statement may end up in the server's log.
    // Deriving it is deliberately slow (4096 HMAC rounds), so it runs off the async workers.
    let password = login.password.clone();
    let verifier = tokio::task::spawn_blocking(move || super::scram::verifier(&password))
        .await
        .map_err(|e| AdminError::Job(format!("deriving the login verifier failed: {e}")))?;
    let mut conn = admin_connection(shard).await?;
    let result = async {
        let role = ident(db);
        let attributes = format!(
            "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD {}",
            literal(&verifier)
        );
        let role_exists = sqlx::query("SELECT 1 FROM pg_roles WHERE rolname = $1")
            .bind(db)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        let created = if role_exists {
            false
        } else {
            // A dead worker's CREATE may commit between our look and our create: treat
            // "already exists" (42710) as existing.
            ignore_code(
                conn.execute(format!("CREATE ROLE {role} WITH {attributes}").as_str())
                    .await,
                "42710",
            )?
        };
        if !created {
            // Re-applying the attributes makes the password the sealed one again.
            conn.execute(format!("ALTER ROLE {role} WITH {attributes}").as_str())
                .await?;
        }
        stall::point(stall::PROVISION, "role").await;
        let db_exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(db)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        if !db_exists {
            // As above: 42P04 is "database already exists".
            ignore_code(
                conn.execute(format!("CREATE DATABASE {role} OWNER {role}").as_str())
                    .await,
                "42P04",
            )?;
        }
        conn.execute(format!("REVOKE ALL ON DATABASE {role} FROM PUBLIC").as_str())
            .await?;
        conn.execute(format!("GRANT CONNECT, TEMPORARY ON DATABASE {role} TO {role}").as_str())
            .await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    let _ = conn.close().await;
    Ok(result?)
}
