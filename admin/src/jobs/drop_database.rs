//! The `drop_database` job: drop a tenant database that a restore in place replaced, once the
//! deletion grace has passed (until then an operator can still reach the previous data).
//!
//! It drops only the database it names (never a login), and never one that a tenant in the
//! catalog uses as its database now. Idempotent: a database already gone is fine.

use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::jobs::Job;
use tenantgate_catalog::tenant_db;
use tenantgate_config::db_url::Engine;

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
}

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let payload: DropDatabasePayload = serde_json::from_value(job.payload.clone())
        .map_err(|e| AdminError::Job(format!("bad drop_database job payload: {e}")))?;
    let in_use = state.catalog.database_in_use(&payload.database).await?;
    let shard = state.catalog.shard(&payload.shard).await?;
    let dropped = match (&shard, in_use) {
        (Some(shard), false) => {
            match Engine::of_url(&shard.database_url)? {
                Engine::Postgres => {
                    super::restore::drop_postgres(shard, &payload.database).await?;
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
