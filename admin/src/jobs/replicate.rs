//! PostgreSQL logical replication of one tenant database from its server (the source) to
//! another server (the target): the steps a cross-server move takes, each idempotent.
//!
//! - The target gets the tenant's login (the same sealed credentials) and an empty database,
//!   and the tenant migrations up to the source's schema version, run as the tenant's login (so
//!   the tenant owns what they create, as at provisioning).
//! - The source gets a publication of its tables (schema `public`, except sqlx's migration
//!   table, which the migrations filled on both sides, and `tenantgate_epoch`, which each copy
//!   records for itself: see [`super::epoch`]) plus a one-row marker table; the target
//!   subscribes to it with `copy_data`, which copies every table, then streams every later
//!   commit in commit order.
//! - Catching up is proven with the marker: a token written on the source is visible on the
//!   target only once every transaction committed before it has been applied there. Comparing
//!   WAL positions would not do: the source's WAL position moves with every database of the
//!   server, and a slot's confirmed position advances only when the subscriber reports.
//! - Freezing makes the source read-only for new sessions (`default_transaction_read_only`) and
//!   ends the tenant's sessions; the tenant login cannot undo it (it may not ALTER DATABASE
//!   settings of the server, and the app never sets the option).
//!
//! Administrative sessions open the tenant database as the shard's administrative user (which
//! must be a superuser, or own the database and hold REPLICATION: see the README), switch
//! `default_transaction_read_only` off for themselves, and never log their statements.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor, Row};
use tenantgate_catalog::tenant_db::{self, Credentials};
use tenantgate_catalog::Shard;

use super::provision::{admin_connection, create_postgres, ident};
use crate::error::AdminError;

/// The marker table on both sides; dropped when the move is over.
const MARKER: &str = "tenantgate_move_marker";
/// The publication in the source tenant database.
const PUBLICATION: &str = "tenantgate_move";

/// The subscription (and the source's replication slot) of a tenant database. Slot names are
/// unique per server, so they carry the database's (unique) name.
fn subscription(db: &str) -> String {
    format!("tenantgate_move_{db}")
}

/// An administrative session in database `db` of `shard`'s server, writable even when the
/// database is frozen.
pub(super) async fn open(shard: &Shard, db: &str) -> Result<PgConnection, AdminError> {
    let url = tenant_db::postgres_url(&shard.database_url, db, None)?;
    let options = PgConnectOptions::from_str(&url)?.disable_statement_logging();
    let mut conn = PgConnection::connect_with(&options).await?;
    conn.execute("SET default_transaction_read_only = off")
        .await?;
    Ok(conn)
}

/// Run `f` on an administrative session in `db`, closing it afterwards.
async fn with_db<T>(
    shard: &Shard,
    db: &str,
    f: impl for<'c> FnOnce(
        &'c mut PgConnection,
    ) -> futures::future::BoxFuture<'c, Result<T, sqlx::Error>>,
) -> Result<T, AdminError> {
    let mut conn = open(shard, db).await?;
    let result = f(&mut conn).await;
    let _ = conn.close().await;
    Ok(result?)
}

/// Refuse a source server that cannot publish (`wal_level` below `logical`).
pub(crate) async fn check_source(source: &Shard) -> Result<(), AdminError> {
    let mut conn = admin_connection(source).await?;
    let level: String = sqlx::query_scalar("SELECT current_setting('wal_level')")
        .fetch_one(&mut conn)
        .await?;
    let _ = conn.close().await;
    if level != "logical" {
        return Err(AdminError::Job(format!(
            "the source server has wal_level = {level}; moving to another server needs wal_level = logical"
        )));
    }
    Ok(())
}

/// Create the tenant's login and a fresh, empty database on the target (an older copy there,
/// left by an earlier move away from that server, is dropped first), then the schema.
pub(crate) async fn prepare_target(
    target: &Shard,
    db: &str,
    login: &Credentials,
    migrations: &std::path::Path,
    schema_version: i64,
) -> Result<(), AdminError> {
    drop_subscription(target, db).await?;
    super::restore::drop_postgres(target, db).await?;
    create_postgres(target, db, login).await?;
    let mut migrator =
        tenant_db::migrator(migrations, tenantgate_config::db_url::Engine::Postgres).await?;
    // Only the migrations the source has: the copy must have the source's schema, and a newer
    // migration is applied to the tenant by the fleet migration after the move. (sqlx exposes
    // a migrator's list as a field only; the version is pinned in Cargo.lock.)
    let wanted: Vec<_> = migrator
        .iter()
        .filter(|m| m.version <= schema_version)
        .cloned()
        .collect();
    migrator.migrations = std::borrow::Cow::Owned(wanted);
    let url = tenant_db::postgres_url(&target.database_url, db, Some(login))?;
    let pool = tenantgate_catalog::db::connect(&url, 1).await?;
    let migrated = migrator.run(&pool).await;
    pool.close().await;
    migrated.map_err(tenant_db::TenantDbError::from)?;
    Ok(())
}

/// Create the marker table and the publication on the source, and the marker table and the
/// subscription on the target. The subscription starts copying at once.
pub(crate) async fn subscribe(source: &Shard, target: &Shard, db: &str) -> Result<(), AdminError> {
    let marker = format!(
        "CREATE TABLE IF NOT EXISTS public.{MARKER} (id integer PRIMARY KEY, token text NOT NULL)"
    );
    let marker_sql = marker.clone();
    let tables = with_db(source, db, move |c| {
        Box::pin(async move {
            c.execute(marker_sql.as_str()).await?;
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables
                 WHERE schemaname = 'public'
                   AND tablename NOT IN ('_sqlx_migrations', 'tenantgate_epoch')
                 ORDER BY tablename",
            )
            .fetch_all(&mut *c)
            .await?;
            let exists = sqlx::query("SELECT 1 FROM pg_publication WHERE pubname = $1")
                .bind(PUBLICATION)
                .fetch_optional(&mut *c)
                .await?
                .is_some();
            if exists {
                c.execute(format!("DROP PUBLICATION {PUBLICATION}").as_str())
                    .await?;
            }
            let list = tables
                .iter()
                .map(|t| format!("public.{}", ident(t)))
                .collect::<Vec<_>>()
                .join(", ");
            c.execute(format!("CREATE PUBLICATION {PUBLICATION} FOR TABLE {list}").as_str())
                .await?;
            Ok(tables)
        })
    })
    .await?;
    let source_url = tenant_db::postgres_url(&source.database_url, db, None)?;
    let name = subscription(db);
    with_db(target, db, move |c| {
        Box::pin(async move {
            c.execute(marker.as_str()).await?;
            let exists = sqlx::query("SELECT 1 FROM pg_subscription WHERE subname = $1")
                .bind(&name)
                .fetch_optional(&mut *c)
                .await?
                .is_some();
            if !exists {
                // The copy fills the tables: empty them of what the migrations seeded (the source
                // has those rows too, possibly changed).
                let list = tables
                    .iter()
                    .map(|t| format!("public.{}", ident(t)))
                    .collect::<Vec<_>>()
                    .join(", ");
                c.execute(format!("TRUNCATE {list}").as_str()).await?;
                // The connection string holds the source's administrative login; only
                // superusers can read pg_subscription.subconninfo.
                c.execute(
                    format!(
                        "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {PUBLICATION} \
                         WITH (copy_data = true)",
                        ident(&name),
                        literal(&source_url)
                    )
                    .as_str(),
                )
                .await?;
            }
            Ok(())
        })
    })
    .await
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Whether the initial copy of every table has finished (tables `ready` or `synchronised`).
pub(crate) async fn synced(target: &Shard, db: &str) -> Result<bool, AdminError> {
    let name = subscription(db);
    with_db(target, db, move |c| {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT COUNT(*), COUNT(*) FILTER (WHERE r.srsubstate NOT IN ('r', 's'))
                 FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
                 WHERE s.subname = $1",
            )
            .bind(&name)
            .fetch_one(&mut *c)
            .await?;
            let (all, pending): (i64, i64) = (row.get(0), row.get(1));
            Ok(all > 0 && pending == 0)
        })
    })
    .await
}

/// Rows in the target's tables (the statistics' estimate, cheap at any size).
pub(crate) async fn rows_on_target(target: &Shard, db: &str) -> Result<i64, AdminError> {
    with_db(target, db, |c| {
        Box::pin(async move {
            sqlx::query_scalar(
                "SELECT COALESCE(SUM(n_live_tup), 0)::bigint FROM pg_stat_user_tables
                 WHERE relname NOT IN ('_sqlx_migrations', 'tenantgate_move_marker')",
            )
            .fetch_one(&mut *c)
            .await
        })
    })
    .await
}

/// WAL bytes the source's slot has not had confirmed by the target (`None` without a slot).
/// Informational: the position is the server's, so other databases' writes count too.
pub(crate) async fn lag_bytes(source: &Shard, db: &str) -> Result<Option<i64>, AdminError> {
    let mut conn = admin_connection(source).await?;
    let lag = sqlx::query_scalar::<_, Option<i64>>(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
         FROM pg_replication_slots WHERE slot_name = $1",
    )
    .bind(subscription(db))
    .fetch_optional(&mut conn)
    .await;
    let _ = conn.close().await;
    Ok(lag?.flatten())
}

/// Write a fresh token into the source's marker table; returns it with the source's WAL
/// position after the write.
pub(crate) async fn mark(source: &Shard, db: &str) -> Result<(String, String), AdminError> {
    let token = uuid::Uuid::new_v4().simple().to_string();
    let written = token.clone();
    let lsn = with_db(source, db, move |c| {
        Box::pin(async move {
            c.execute(
                sqlx::query(&format!(
                    "INSERT INTO public.{MARKER} (id, token) VALUES (1, $1)
                     ON CONFLICT (id) DO UPDATE SET token = EXCLUDED.token"
                ))
                .bind(&written),
            )
            .await?;
            sqlx::query_scalar::<_, String>("SELECT pg_current_wal_lsn()::text")
                .fetch_one(&mut *c)
                .await
        })
    })
    .await?;
    Ok((token, lsn))
}

/// Poll the target's marker every 10 ms until it holds `token` (every source commit before the
/// token's is applied), or fail after `timeout`.
pub(crate) async fn wait_for_mark(
    target: &Shard,
    db: &str,
    token: &str,
    timeout: Duration,
) -> Result<(), AdminError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut conn = open(target, db).await?;
    let sql = format!("SELECT token FROM public.{MARKER} WHERE id = 1");
    let result = loop {
        let seen: Result<Option<String>, _> =
            sqlx::query_scalar(&sql).fetch_optional(&mut conn).await;
        match seen {
            Ok(Some(t)) if t == token => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(AdminError::from(e)),
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(AdminError::Job(format!(
                "the target did not apply the source's changes within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let _ = conn.close().await;
    result
}

/// Sessions of the tenant's login in its database on `shard` that are inside a statement or a
/// transaction (requests in flight).
pub(crate) async fn busy_sessions(shard: &Shard, db: &str) -> Result<i64, AdminError> {
    let mut conn = admin_connection(shard).await?;
    let n = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity
         WHERE datname = $1 AND usename = $1 AND state IS DISTINCT FROM 'idle'",
    )
    .bind(db)
    .fetch_one(&mut conn)
    .await;
    let _ = conn.close().await;
    Ok(n?)
}

/// Make the tenant database on `shard` read-only for new sessions and end the tenant login's
/// sessions there (the app's pools reconnect, read-only). `false` undoes the setting.
pub(crate) async fn set_read_only(
    shard: &Shard,
    db: &str,
    read_only: bool,
) -> Result<(), AdminError> {
    let mut conn = admin_connection(shard).await?;
    let result = async {
        let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(db)
            .fetch_optional(&mut conn)
            .await?
            .is_some();
        if !exists {
            return Ok(());
        }
        let setting = if read_only {
            format!(
                "ALTER DATABASE {} SET default_transaction_read_only = on",
                ident(db)
            )
        } else {
            format!(
                "ALTER DATABASE {} RESET default_transaction_read_only",
                ident(db)
            )
        };
        conn.execute(setting.as_str()).await?;
        if read_only {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND usename = $1 AND pid <> pg_backend_pid()",
            )
            .bind(db)
            .execute(&mut conn)
            .await?;
        }
        Ok::<_, sqlx::Error>(())
    }
    .await;
    let _ = conn.close().await;
    Ok(result?)
}

/// Set every sequence of the target to the source's value (logical replication carries rows,
/// not sequences). Run while the source is frozen.
pub(crate) async fn sync_sequences(
    source: &Shard,
    target: &Shard,
    db: &str,
) -> Result<usize, AdminError> {
    let values: Vec<(String, String, i64)> = with_db(source, db, |c| {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT schemaname::text, sequencename::text, last_value FROM pg_sequences
                 WHERE last_value IS NOT NULL
                   AND schemaname NOT IN ('pg_catalog', 'information_schema')",
            )
            .fetch_all(&mut *c)
            .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    })
    .await?;
    let n = values.len();
    if n > 0 {
        with_db(target, db, move |c| {
            Box::pin(async move {
                for (schema, name, value) in &values {
                    // A sequence the migrations did not create (none on the target) is skipped.
                    sqlx::query(
                        "SELECT setval(r, $3, true)
                         FROM (SELECT to_regclass(format('%I.%I', $1::text, $2::text)) AS r) s
                         WHERE r IS NOT NULL",
                    )
                    .bind(schema)
                    .bind(name)
                    .bind(value)
                    .execute(&mut *c)
                    .await?;
                }
                Ok(())
            })
        })
        .await?;
    }
    Ok(n)
}

/// Drop the target's subscription if it exists (which drops the source's slot through it);
/// when the source cannot be reached, the slot is detached first so the drop succeeds.
pub(crate) async fn drop_subscription(target: &Shard, db: &str) -> Result<(), AdminError> {
    let mut admin = admin_connection(target).await?;
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(db)
        .fetch_optional(&mut admin)
        .await;
    let _ = admin.close().await;
    if exists?.is_none() {
        return Ok(());
    }
    let name = subscription(db);
    with_db(target, db, move |c| {
        Box::pin(async move {
            let exists = sqlx::query("SELECT 1 FROM pg_subscription WHERE subname = $1")
                .bind(&name)
                .fetch_optional(&mut *c)
                .await?
                .is_some();
            if !exists {
                return Ok(());
            }
            let sub = ident(&name);
            if c.execute(format!("DROP SUBSCRIPTION {sub}").as_str())
                .await
                .is_err()
            {
                c.execute(format!("ALTER SUBSCRIPTION {sub} DISABLE").as_str())
                    .await?;
                c.execute(format!("ALTER SUBSCRIPTION {sub} SET (slot_name = NONE)").as_str())
                    .await?;
                c.execute(format!("DROP SUBSCRIPTION {sub}").as_str())
                    .await?;
            }
            Ok(())
        })
    })
    .await
}

/// Remove what the move added to the source tenant database (publication, marker table, a
/// slot left behind by a subscription dropped without its source). The database itself stays.
pub(crate) async fn clean_source(source: &Shard, db: &str) -> Result<(), AdminError> {
    let mut admin = admin_connection(source).await?;
    let result = async {
        sqlx::query(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
             WHERE slot_name = $1 AND NOT active",
        )
        .bind(subscription(db))
        .execute(&mut admin)
        .await?;
        sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(db)
            .fetch_optional(&mut admin)
            .await
    }
    .await;
    let _ = admin.close().await;
    if result?.is_none() {
        return Ok(());
    }
    with_db(source, db, |c| {
        Box::pin(async move {
            c.execute(format!("DROP PUBLICATION IF EXISTS {PUBLICATION}").as_str())
                .await?;
            c.execute(format!("DROP TABLE IF EXISTS public.{MARKER}").as_str())
                .await?;
            Ok(())
        })
    })
    .await
}

/// Drop the marker table on the target (after the subscription is gone).
pub(crate) async fn clean_target(target: &Shard, db: &str) -> Result<(), AdminError> {
    with_db(target, db, |c| {
        Box::pin(async move {
            c.execute(format!("DROP TABLE IF EXISTS public.{MARKER}").as_str())
                .await?;
            Ok(())
        })
    })
    .await
}
