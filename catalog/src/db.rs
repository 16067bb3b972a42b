//! Opening a pool on a database URL: the catalog's, a tenant database's, a shard server's. Every
//! component opens its pools here, so SQLite files get the same settings everywhere.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::{AnyPool, ConnectOptions, Connection, Database, Executor, Pool};
use tenantgate_config::db_url::{sqlite_path, Engine};

use crate::error::CatalogError;

/// How a pool opens and keeps its connections.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Most connections open at once.
    pub max_connections: u32,
    /// Close connections idle this long; `None` keeps them.
    pub idle_timeout: Option<Duration>,
    /// Longest wait for a connection.
    pub acquire_timeout: Duration,
    /// SQLite: create the file (and its folder) when missing. A tenant database that is being
    /// served must already exist: a missing file is a tenant never provisioned here.
    pub create: bool,
    /// SQLite: how long a statement waits for another connection's write lock.
    pub busy_timeout: Duration,
}

impl PoolOptions {
    /// `max_connections` connections kept open, files created when missing, 10 s lock waits.
    pub fn new(max_connections: u32) -> PoolOptions {
        PoolOptions {
            max_connections,
            idle_timeout: None,
            acquire_timeout: Duration::from_secs(5),
            create: true,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// Open a pool on a PostgreSQL or SQLite URL through sqlx's `Any` driver, with
/// [`PoolOptions::new`].
pub async fn connect(url: &str, max_connections: u32) -> Result<AnyPool, CatalogError> {
    connect_with(url, PoolOptions::new(max_connections)).await
}

/// Open a pool on a PostgreSQL or SQLite URL through sqlx's `Any` driver.
///
/// SQLite databases are put in WAL mode, so readers never block the writer.
pub async fn connect_with(url: &str, options: PoolOptions) -> Result<AnyPool, CatalogError> {
    sqlx::any::install_default_drivers();
    open::<sqlx::Any>(url, options).await
}

/// Open a pool of driver `DB` on `url` with `options`: the one place pools are set up, for the
/// `Any` pools of tenant databases and the native pools of the catalog alike, so a SQLite file
/// gets the same pragmas whichever driver opens it.
pub(crate) async fn open<DB>(url: &str, options: PoolOptions) -> Result<Pool<DB>, CatalogError>
where
    DB: Database,
    <DB::Connection as Connection>::Options: FromStr<Err = sqlx::Error>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    let engine = Engine::of_url(url)?;
    let url = match engine {
        Engine::Postgres => url.to_string(),
        Engine::Sqlite if options.create => {
            let path = sqlite_path(url);
            if let Some(parent) = Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| CatalogError::Database(sqlx::Error::Io(e)))?;
                }
            }
            format!("sqlite://{path}?mode=rwc")
        }
        Engine::Sqlite => format!("sqlite://{}?mode=rw", sqlite_path(url)),
    };
    let pragmas = format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
         PRAGMA busy_timeout = {};",
        options.busy_timeout.as_millis()
    );
    let connect =
        <DB::Connection as Connection>::Options::from_str(&url)?.disable_statement_logging();
    let pool = sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(options.max_connections)
        .min_connections(0)
        .idle_timeout(options.idle_timeout)
        .acquire_timeout(options.acquire_timeout)
        .after_connect(move |conn, _| {
            let pragmas = pragmas.clone();
            Box::pin(async move {
                if engine == Engine::Sqlite {
                    conn.execute(pragmas.as_str()).await?;
                }
                Ok(())
            })
        })
        .connect_with(connect)
        .await?;
    Ok(pool)
}
