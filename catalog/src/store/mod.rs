//! The catalog store: one interface over PostgreSQL and SQLite.
//!
//! Each backend keeps its own column types: on PostgreSQL ids are `uuid`, instants `timestamptz`
//! and JSON `jsonb`; on SQLite they are TEXT, INTEGER milliseconds and TEXT. The model sees one
//! shape (`Uuid`, `i64` milliseconds, `serde_json::Value`) either way. Each query is still written
//! once and run on the native sqlx driver of the backend (`driver.rs` says how); the code
//! branches on [`Engine`] only where the dialects differ (job claiming, NOTIFY).
//!
//! Writes go through [`Catalog::begin_write`], which serialises catalog writers (one row lock on
//! `catalog_lock`, taken first so SQLite never has to upgrade a read lock) so that
//! `catalog_changes` versions are contiguous and in commit order. Readers of the feed can then
//! treat any hole as a gap that needs a full resync.

pub mod acme;
pub mod audit;
pub mod backups;
pub mod certificates;
pub mod changes;
mod driver;
pub mod jobs;
pub mod on_demand;
pub mod outbox;
pub mod scheduler;
pub mod shards;
pub mod tenant_state;
pub mod tenants;
pub mod tokens;
pub mod usage;

pub use changes::NewChange;
pub use driver::{CatalogPool, WriteTx};
pub use tenants::{NewTenant, TenantFilter, TenantPatch};

use sqlx::{PgPool, Postgres, Sqlite, SqlitePool};
use tenantgate_config::db_url::Engine;

use crate::db::PoolOptions;
use crate::error::CatalogError;
use driver::{on, Native};

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Channel on which PostgreSQL announces new catalog versions.
pub const NOTIFY_CHANNEL: &str = "tenantgate_catalog";

/// A handle on the catalog database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    pool: CatalogPool,
    url: String,
}

impl Catalog {
    /// Connect to the catalog at `url` (does not migrate).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Catalog, CatalogError> {
        let options = PoolOptions::new(max_connections);
        let pool = match Engine::of_url(url)? {
            Engine::Postgres => {
                CatalogPool::Postgres(crate::db::open::<Postgres>(url, options).await?)
            }
            Engine::Sqlite => CatalogPool::Sqlite(crate::db::open::<Sqlite>(url, options).await?),
        };
        Ok(Catalog {
            pool,
            url: url.to_string(),
        })
    }

    /// Connect and bring the schema up to date.
    pub async fn connect_and_migrate(
        url: &str,
        max_connections: u32,
    ) -> Result<Catalog, CatalogError> {
        let catalog = Catalog::connect(url, max_connections).await?;
        catalog.migrate().await?;
        Ok(catalog)
    }

    /// Apply the embedded catalog migrations of this backend.
    pub async fn migrate(&self) -> Result<(), CatalogError> {
        match &self.pool {
            CatalogPool::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await?,
            CatalogPool::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await?,
        }
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        match self.pool {
            CatalogPool::Postgres(_) => Engine::Postgres,
            CatalogPool::Sqlite(_) => Engine::Sqlite,
        }
    }

    /// The catalog's pool, for SQL the store does not offer (see [`CatalogPool`]).
    pub fn pool(&self) -> &CatalogPool {
        &self.pool
    }

    /// The pool, for `on!`.
    pub(crate) fn db(&self) -> Native<&PgPool, &SqlitePool> {
        match &self.pool {
            CatalogPool::Postgres(pool) => Native::Postgres(pool),
            CatalogPool::Sqlite(pool) => Native::Sqlite(pool),
        }
    }

    /// The URL this catalog was opened with (contains credentials: never log it unredacted).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Start a catalog write. Writers are serialised (see the module docs); commit promptly.
    pub async fn begin_write(&self) -> Result<WriteTx, CatalogError> {
        let mut tx = match &self.pool {
            CatalogPool::Postgres(pool) => WriteTx::postgres(pool.begin().await?),
            CatalogPool::Sqlite(pool) => WriteTx::sqlite(pool.begin().await?),
        };
        on!(tx.db(), db => {
            sqlx::query("UPDATE catalog_lock SET writes = writes + 1 WHERE id = 1")
                .execute(db)
                .await?;
        });
        Ok(tx)
    }

    /// True when a trivial query succeeds.
    pub async fn ping(&self) -> bool {
        on!(self.db(), db => sqlx::query("SELECT 1").execute(db).await.is_ok())
    }

    pub async fn close(&self) {
        on!(self.db(), db => db.close().await)
    }
}
