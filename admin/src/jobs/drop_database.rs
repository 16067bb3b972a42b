//! The `drop_database` job: drop a tenant database that a restore in place replaced, or the old
//! copy a cross-server move left behind, once the deletion grace has passed (until then an
//! operator can still reach the previous data).
//!
//! It drops only the database it names, and never one that a tenant in the catalog uses now:
//! one of its name on a shard of the same server (a moved tenant's database keeps its name).
//! After a move it also drops the tenant's login on the old server (`drop_login`), when that
//! login owns nothing else there. Idempotent: a database already gone is fine.

use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::jobs::Job;
use tenantgate_catalog::tenant_db;
use tenantgate_config::db_url::{self, Engine};

use super::succeed;
use crate::backup::tenant::remove_sqlite;
use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// Which database to drop.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct DropDatabasePayload {
    pub(crate) shard: String,
    pub(crate) database: String,
    /// Also drop the login of the same name (the old server of a moved tenant).
    #[serde(default)]
    pub(crate) drop_login: bool,
}

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let payload: DropDatabasePayload = serde_json::from_value(job.payload.clone())
        .map_err(|e| AdminError::Job(format!("bad drop_database job payload: {e}")))?;
    let shard = state.catalog.shard(&payload.shard).await?;
    let mut in_use = false;
    if let Some(shard) = &shard {
        let server = db_url::server_of(&shard.database_url);
        for name in state
            .catalog
            .shards_using_database(&payload.database)
            .await?
        {
            let user = state.catalog.shard(&name).await?;
            // A user on an unknown shard counts as on this server: never drop on a doubt.
            in_use |= user.is_none_or(|u| db_url::server_of(&u.database_url) == server);
        }
    }
    let dropped = match (&shard, in_use) {
        (Some(shard), false) => {
            match Engine::of_url(&shard.database_url)? {
                Engine::Postgres => {
                    super::restore::drop_postgres(shard, &payload.database).await?;
                    if payload.drop_login {
                        super::restore::drop_login(shard, &payload.database).await?;
                    }
                }
                Engine::Sqlite => remove_sqlite(&tenant_db::sqlite_file(
                    &shard.database_url,
                    &payload.database,
                ))?,
            }
            true
        }
        // In use again (cannot happen through the API) or the shard is gone: keep it.
        _ => false,
    };
    let mut w = Write::begin(state).await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    if dropped {
        w.audit(NewAudit {
            actor: "worker",
            action: "tenant.drop_previous_database",
            target: &format!("database:{}", payload.database),
            tenant_id: job.tenant_id,
            before: Some(
                serde_json::json!({ "shard": payload.shard, "database": payload.database }),
            ),
            after: None,
        })
        .await?;
    }
    w.commit().await
}
