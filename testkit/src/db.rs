//! Isolated databases: a fresh PostgreSQL database or SQLite directory per test, for the catalog
//! and for the tenant databases of its shards.
//!
//! Tests that need PostgreSQL read `TENANTGATE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`), create a uniquely named database and drop it,
//! with every tenant database its catalog names, when the handle is dropped. When PostgreSQL is
//! unreachable they fail with a message saying how to start it; they never skip.

use std::path::PathBuf;

use futures::StreamExt;
use sqlx::{Connection, Executor, Row};
use tenantgate_catalog::Catalog;
use tenantgate_config::db_url::Engine;

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
    /// The database's name (`tg_test_<uuid>`).
    pub name: String,
    /// A URL of the database on the test server.
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
        let url = tenantgate_catalog::tenant_db::postgres_url(&server, &name, None)
            .expect("server url parses");
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
                    // A tenant's login is named for its id (`t_<id>`) and owns its
                    // databases (after a restore in place, under other names too).
                    if let Ok(rows) =
                        sqlx::query("SELECT 't_' || replace(id::text, '-', '') FROM tenants")
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
                            let owned: Vec<String> = sqlx::query_scalar(
                                "SELECT d.datname FROM pg_database d
                                 JOIN pg_roles r ON r.oid = d.datdba WHERE r.rolname = $1",
                            )
                            .bind(db)
                            .fetch_all(&mut conn)
                            .await
                            .unwrap_or_default();
                            for db in owned.iter().chain(std::iter::once(db)) {
                                drop_subscriptions(&server, db).await;
                                let drop_db = format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)");
                                let _ = conn.execute(drop_db.as_str()).await;
                            }
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

/// Drop the subscriptions in database `db` (a move interrupted by a failed test leaves one, and
/// a database with a subscription cannot be dropped), detaching them from their slots first.
async fn drop_subscriptions(server: &str, db: &str) {
    let Ok(url) = tenantgate_catalog::tenant_db::postgres_url(server, db, None) else {
        return;
    };
    let Ok(mut conn) = sqlx::PgConnection::connect(&url).await else {
        return;
    };
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT subname::text FROM pg_subscription
         WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap_or_default();
    for name in names {
        for sql in [
            format!("ALTER SUBSCRIPTION \"{name}\" DISABLE"),
            format!("ALTER SUBSCRIPTION \"{name}\" SET (slot_name = NONE)"),
            format!("DROP SUBSCRIPTION \"{name}\""),
        ] {
            let _ = conn.execute(sql.as_str()).await;
        }
    }
    let _ = conn.close().await;
}

/// A catalog location for a test on either backend; its shards' tenant databases go on the same
/// backend ([`TestCatalog::shard_database_url`]). Everything is removed when it is dropped.
pub enum TestCatalog {
    /// A fresh database on the test server; shards put their tenant databases on that server.
    Postgres(PgTestDb),
    /// A temporary directory holding `catalog.db` and one folder per shard.
    Sqlite {
        /// The directory, deleted on drop.
        dir: tempfile::TempDir,
    },
}

impl TestCatalog {
    /// A catalog in a fresh PostgreSQL database.
    pub async fn postgres() -> TestCatalog {
        TestCatalog::Postgres(PgTestDb::create().await)
    }

    /// A catalog in a fresh temporary directory.
    pub fn sqlite() -> TestCatalog {
        TestCatalog::Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A catalog on `engine`: [`TestCatalog::postgres`] or [`TestCatalog::sqlite`].
    pub async fn on(engine: Engine) -> TestCatalog {
        match engine {
            Engine::Postgres => TestCatalog::postgres().await,
            Engine::Sqlite => TestCatalog::sqlite(),
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

    /// The backend this catalog is on.
    pub fn engine(&self) -> Engine {
        match self {
            TestCatalog::Postgres(_) => Engine::Postgres,
            TestCatalog::Sqlite { .. } => Engine::Sqlite,
        }
    }

    /// Connect (a pool of 4) and migrate the catalog schema.
    pub async fn connect(&self) -> Catalog {
        Catalog::connect_and_migrate(&self.url(), 4)
            .await
            .expect("connect test catalog")
    }
}

fn shard_dir(root: &std::path::Path, shard: &str) -> PathBuf {
    root.join("shards").join(shard)
}

/// The repository's own `tenant_migrations` folder.
pub fn tenant_migrations_dir() -> PathBuf {
    crate::repository_root().join("tenant_migrations")
}

/// The version of the repository's newest tenant migration: the `schema_version` of a freshly
/// provisioned tenant. Tests derive it from here instead of writing a number that the next
/// migration would make wrong.
pub fn latest_tenant_migration() -> i64 {
    std::fs::read_dir(tenant_migrations_dir().join("postgres"))
        .expect("tenant_migrations/postgres")
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .split('_')
                .next()?
                .parse()
                .ok()
        })
        .max()
        .expect("at least one tenant migration")
}
