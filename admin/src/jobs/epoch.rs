//! The route epoch a tenant database records (`tenantgate_epoch`, tenant migration 0003): the
//! catalog epoch that made that copy the tenant's current one. The app refuses a request signed
//! with an older epoch than the copy it would use (503 `tenant_moved`), so an edge (or app)
//! with a stale cache cannot use an old copy after a move (see the app's `fence` module).
//!
//! Only these administrative sessions write it: provisioning and restore write the epoch the
//! tenant gets when it is activated or swapped in, moves write the new epoch into the target
//! before the flip and into the old copy when it is frozen. Every write sets the value (it does
//! not compare), so a resumed job simply writes again; a rolled-back move writes the catalog's
//! epoch back into the source.
//!
//! What guards the table: on PostgreSQL the tenant's login owns its database and so the table,
//! so the guard is that the app never writes it (no tenant-facing route names it) and that a
//! frozen old copy is read-only for the tenant login's sessions; on SQLite the app's file
//! access is the same as ours. It is a fence against stale routing, not against a hostile
//! tenant login.

use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Executor};
use tenantgate_catalog::{tenant_db, Shard};
use tenantgate_config::db_url::Engine;

use crate::error::AdminError;

/// Set tenant database `db` on `shard` to record `epoch`. Returns `false` (and writes nothing)
/// when the database does not exist (a copy already dropped) or its schema predates the epoch
/// table: such a copy is not fenced until a later move or restore writes it.
pub(crate) async fn record(shard: &Shard, db: &str, epoch: i64) -> Result<bool, AdminError> {
    const UPSERT: &str = "INSERT INTO tenantgate_epoch (id, epoch) VALUES (1, $1)
                          ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch";
    let written = match Engine::of_url(&shard.database_url)? {
        Engine::Postgres => {
            // An administrative session, writable even when the copy is frozen.
            let mut conn = match super::replicate::open(shard, db).await {
                Ok(conn) => conn,
                Err(AdminError::Shard(sqlx::Error::Database(e)))
                    if e.code().as_deref() == Some("3D000") =>
                {
                    return Ok(false);
                }
                Err(e) => return Err(e),
            };
            let result = async {
                let exists: bool =
                    sqlx::query_scalar("SELECT to_regclass('public.tenantgate_epoch') IS NOT NULL")
                        .fetch_one(&mut conn)
                        .await?;
                if exists {
                    sqlx::query(UPSERT).bind(epoch).execute(&mut conn).await?;
                }
                Ok::<_, sqlx::Error>(exists)
            }
            .await;
            let _ = conn.close().await;
            result?
        }
        Engine::Sqlite => {
            let file = tenant_db::sqlite_file(&shard.database_url, db);
            if !file.exists() {
                return Ok(false);
            }
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", file.display()))?
                .create_if_missing(false)
                .busy_timeout(std::time::Duration::from_secs(5))
                .disable_statement_logging();
            let mut conn = options.connect().await?;
            let result = async {
                let exists = sqlx::query(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tenantgate_epoch'",
                )
                .fetch_optional(&mut conn)
                .await?
                .is_some();
                if exists {
                    conn.execute(sqlx::query(UPSERT).bind(epoch)).await?;
                }
                Ok::<_, sqlx::Error>(exists)
            }
            .await;
            let _ = conn.close().await;
            result?
        }
    };
    if !written {
        tracing::info!(
            database = db,
            "tenant schema has no epoch table yet; epoch not recorded"
        );
    }
    Ok(written)
}
