//! The catalog store: one interface over PostgreSQL and SQLite.
//!
//! Both backends run the same SQL through sqlx's `Any` driver: identifiers are text UUIDs,
//! instants are integer milliseconds, JSON is text. Where the dialects differ (job claiming,
//! NOTIFY) the code branches on [`Engine`].
//!
//! Writes go through [`Catalog::begin_write`], which serialises catalog writers (one row lock on
//! `catalog_lock`, taken first so SQLite never has to upgrade a read lock) so that
//! `catalog_changes` versions are contiguous and in commit order. Readers of the feed can then
//! treat any hole as a gap that needs a full resync.

pub mod audit;
pub mod changes;
pub mod jobs;
pub mod outbox;
pub mod shards;
pub mod tenant_state;
pub mod tenants;
pub mod tokens;

pub use changes::NewChange;
pub use tenants::{NewTenant, TenantFilter, TenantPatch};

use sqlx::{AnyPool, Transaction};
use tenantgate_config::db_url::Engine;

use crate::error::CatalogError;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Channel on which PostgreSQL announces new catalog versions.
pub const NOTIFY_CHANNEL: &str = "tenantgate_catalog";

/// A handle on the catalog database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    pool: AnyPool,
    backend: Engine,
    url: String,
}

impl Catalog {
    /// Connect to the catalog at `url` (does not migrate).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Catalog, CatalogError> {
        let backend = Engine::of_url(url)?;
        let pool = crate::db::connect(url, max_connections).await?;
        Ok(Catalog {
            pool,
            backend,
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
        let migrator = match self.backend {
            Engine::Postgres => &POSTGRES_MIGRATIONS,
            Engine::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn engine(&self) -> Engine {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The URL this catalog was opened with (contains credentials: never log it unredacted).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Start a catalog write. Writers are serialised (see the module docs); commit promptly.
    pub async fn begin_write(&self) -> Result<Transaction<'static, sqlx::Any>, CatalogError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE catalog_lock SET writes = writes + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// True when a trivial query succeeds.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub(crate) fn uuid_col(text: &str, column: &'static str) -> Result<uuid::Uuid, CatalogError> {
    uuid::Uuid::parse_str(text).map_err(|e| crate::error::corrupt(column, e))
}

pub(crate) fn json_col<T: serde::de::DeserializeOwned>(
    text: &str,
    column: &'static str,
) -> Result<T, CatalogError> {
    serde_json::from_str(text).map_err(|e| crate::error::corrupt(column, e))
}
