//! The catalog store: one interface over PostgreSQL and SQLite.
//!
//! Both backends run the same SQL through sqlx's `Any` driver: identifiers are text UUIDs,
//! instants are integer milliseconds, JSON is text. Where the dialects differ (job claiming,
//! NOTIFY) the code branches on [`Backend`].
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

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor, Transaction};

use crate::error::CatalogError;

pub use changes::NewChange;
pub use tenants::{NewTenant, TenantFilter, TenantPatch};

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Channel on which PostgreSQL announces new catalog versions.
pub const NOTIFY_CHANNEL: &str = "tenantgate_catalog";

/// Which database the catalog (or a shard) lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// The backend a URL names.
    pub fn of_url(url: &str) -> Result<Backend, CatalogError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(CatalogError::UnsupportedUrl(redact_url(url)))
        }
    }

    /// Folder name under `migrations/` and `tenant_migrations/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// `url` with any password replaced by `***`, for logs and API output.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

/// The path of a `sqlite:` URL (`sqlite://data/x.db`, `sqlite:data/x.db`, `sqlite:///abs/x.db`).
pub fn sqlite_path(url: &str) -> &str {
    let rest = url.strip_prefix("sqlite:").unwrap_or(url);
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    rest.split('?').next().unwrap_or(rest)
}

/// Open a pool on a PostgreSQL or SQLite URL through the `Any` driver.
///
/// SQLite files (and their folder) are created when missing and put in WAL mode, so readers never
/// block the writer.
pub async fn connect_any(url: &str, max_connections: u32) -> Result<AnyPool, CatalogError> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of_url(url)?;
    let url = match backend {
        Backend::Postgres => url.to_string(),
        Backend::Sqlite => {
            let path = sqlite_path(url);
            if let Some(parent) = Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| CatalogError::Database(sqlx::Error::Io(e)))?;
                }
            }
            format!("sqlite://{path}?mode=rwc")
        }
    };
    let options = AnyConnectOptions::from_str(&url)?.disable_statement_logging();
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;")
                        .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// A handle on the catalog database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Catalog {
    pool: AnyPool,
    backend: Backend,
    url: String,
}

impl Catalog {
    /// Connect to the catalog at `url` (does not migrate).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Catalog, CatalogError> {
        let backend = Backend::of_url(url)?;
        let pool = connect_any(url, max_connections).await?;
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
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:p@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://data/x"), "sqlite://data/x");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(sqlite_path("sqlite://data/x.db"), "data/x.db");
        assert_eq!(sqlite_path("sqlite:data/x.db"), "data/x.db");
        assert_eq!(sqlite_path("sqlite:///abs/x.db?mode=rwc"), "/abs/x.db");
    }
}
