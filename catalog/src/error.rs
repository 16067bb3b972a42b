//! The catalog's typed error.

use thiserror::Error;

/// What can go wrong when talking to the catalog.
///
/// Components map these to their own errors (and to HTTP in one place); the `Database` variant
/// carries the driver error for logs only and must never be shown to a client.
#[derive(Debug, Error)]
pub enum CatalogError {
    /// The catalog database failed or is unreachable.
    #[error("catalog database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying the catalog migrations failed.
    #[error("catalog migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The named object does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique key is taken (slug, domain, shard name, ...).
    #[error("{0}")]
    Conflict(String),
    /// A stored value could not be understood; the catalog holds data this version cannot read.
    #[error("corrupt catalog value in {column}: {detail}")]
    Corrupt {
        column: &'static str,
        detail: String,
    },
    /// The catalog did not answer within the caller's deadline (a slow or partitioned
    /// catalog; see `catalog.query_timeout_ms`).
    #[error("catalog did not answer in time")]
    Timeout,
    /// A database URL is not one tenantgate supports, or not complete.
    #[error("database url {0}")]
    Url(#[from] tenantgate_config::db_url::UrlError),
}

impl CatalogError {
    /// True when the failure is the database itself (unreachable, timed out), as opposed to a
    /// problem with the request. The edge uses this to decide whether to serve stale routes.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            CatalogError::Timeout
                | CatalogError::Database(
                    sqlx::Error::Io(_)
                        | sqlx::Error::PoolTimedOut
                        | sqlx::Error::PoolClosed
                        | sqlx::Error::WorkerCrashed
                        | sqlx::Error::Tls(_)
                        | sqlx::Error::Protocol(_)
                )
        )
    }

    /// True when the database reported a unique-key violation.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            CatalogError::Conflict(_) => true,
            CatalogError::Database(sqlx::Error::Database(db)) => db.is_unique_violation(),
            _ => false,
        }
    }
}

pub(crate) fn corrupt(column: &'static str, detail: impl ToString) -> CatalogError {
    CatalogError::Corrupt {
        column,
        detail: detail.to_string(),
    }
}
