//! Test support (feature `test-support`): isolated PostgreSQL databases and SQLite files.
//!
//! Tests that need PostgreSQL read `TENANTGATE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), create a uniquely named database and drop it,
//! with every tenant database its catalog names, when the handle is dropped. When PostgreSQL is
//! unreachable they fail with a message saying how to start it; they never skip.

use std::path::PathBuf;

use futures::StreamExt;
use sqlx::{Connection, Executor, Row};

/// Environment variable naming the PostgreSQL server tests may use.
pub const ENV: &str = "TENANTGATE_TEST_DATABASE_URL";
const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server URL tests use (an administrative database on it).
pub fn server_url() -> String {
    std::env::var(ENV).unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// A fresh PostgreSQL database, dropped (with the tenant databases and logins its catalog lists)
/// when this handle is dropped.
pub struct PgTestDb {
    pub name: String,
    pub url: String,
    server: String,
}

impl PgTestDb {
    /// Create a uniquely named database on the test server.
    pub async fn create() -> PgTestDb {
        let server = server_url();
        let name = format!("tg_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not reachable at {server} ({e}). Start it (on Debian: \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`) or \
                 point {ENV} at a server where the user may create databases."
                )
            });
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        let url = crate::tenant_db::postgres_url(&server, &name, None).expect("server url parses");
        PgTestDb { name, url, server }
    }
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let (name, url, server) = (self.name.clone(), self.url.clone(), self.server.clone());
        // Drop runs inside the test's runtime; do the async cleanup on a thread of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut tenant_dbs = Vec::new();
                if let Ok(mut conn) = sqlx::PgConnection::connect(&url).await {
                    if let Ok(rows) = sqlx::query("SELECT db_name FROM tenants")
                        .fetch_all(&mut conn)
                        .await
                    {
                        tenant_dbs = rows
                            .iter()
                            .filter_map(|r| r.try_get::<String, _>(0).ok())
                            .collect();
                    }
                    let _ = conn.close().await;
                }
                // Drop the databases a few at a time: one by one dominates the suite's run time.
                let drops = tenant_dbs.iter().chain(std::iter::once(&name)).map(|db| {
                    let server = server.clone();
                    async move {
                        if let Ok(mut conn) = sqlx::PgConnection::connect(&server).await {
                            let drop_db = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
                            let _ = conn.execute(drop_db.as_str()).await;
                            let _ = conn
                                .execute(format!("DROP ROLE IF EXISTS {db}").as_str())
                                .await;
                            let _ = conn.close().await;
                        }
                    }
                });
                futures::stream::iter(drops)
                    .buffer_unordered(8)
                    .collect::<Vec<()>>()
                    .await;
            });
        });
        let _ = cleanup.join();
    }
}

/// A catalog location for a test on either backend.
pub enum TestCatalog {
    Postgres(PgTestDb),
    Sqlite { dir: tempfile::TempDir },
}

impl TestCatalog {
    pub async fn postgres() -> TestCatalog {
        TestCatalog::Postgres(PgTestDb::create().await)
    }

    pub fn sqlite() -> TestCatalog {
        TestCatalog::Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// The catalog URL.
    pub fn url(&self) -> String {
        match self {
            TestCatalog::Postgres(db) => db.url.clone(),
            TestCatalog::Sqlite { dir } => {
                format!("sqlite://{}", dir.path().join("catalog.db").display())
            }
        }
    }

    /// A `database_url` for a shard on the same backend: the test server, or a folder.
    pub fn shard_database_url(&self, shard: &str) -> String {
        match self {
            TestCatalog::Postgres(_) => server_url(),
            TestCatalog::Sqlite { dir } => {
                format!("sqlite://{}", self::shard_dir(dir.path(), shard).display())
            }
        }
    }

    pub fn engine(&self) -> tenantgate_config::db_url::Engine {
        match self {
            TestCatalog::Postgres(_) => tenantgate_config::db_url::Engine::Postgres,
            TestCatalog::Sqlite { .. } => tenantgate_config::db_url::Engine::Sqlite,
        }
    }

    /// Connect and migrate.
    pub async fn connect(&self) -> crate::Catalog {
        crate::Catalog::connect_and_migrate(&self.url(), 4)
            .await
            .expect("connect test catalog")
    }
}

fn shard_dir(root: &std::path::Path, shard: &str) -> PathBuf {
    root.join("shards").join(shard)
}

/// The repository's own `tenant_migrations` folder.
pub fn tenant_migrations_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tenant_migrations")
}

/// Poll `check` every 20 ms until it returns `Some`, or panic after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
