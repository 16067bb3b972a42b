//! Tenant databases: where each tenant's own database lives, how to reach it, how to migrate it.
//!
//! On a PostgreSQL shard every tenant has a database and a login of its own on the shard's
//! server; the login's password is sealed in the catalog. On a SQLite shard every tenant is one
//! file in the shard's directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};
use tenantgate_config::db_url::{self, sqlite_path, Engine, UrlError};
use tenantgate_contract::crypto::CredentialKey;
use thiserror::Error;
use uuid::Uuid;

use crate::model::{Shard, Tenant};

#[derive(Debug, Error)]
pub enum TenantDbError {
    #[error("shard database url {0}")]
    Url(#[from] UrlError),
    #[error("tenant has no stored database credentials")]
    NoCredentials,
    #[error("tenant database credentials do not open with the configured credential key")]
    Credentials,
    #[error("tenant migrations could not be read from {path}: {source}")]
    Migrations {
        path: PathBuf,
        source: sqlx::migrate::MigrateError,
    },
    #[error(transparent)]
    Catalog(#[from] crate::CatalogError),
    #[error("tenant database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("tenant migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A tenant's database login (PostgreSQL), sealed in `tenants.db_credentials`.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"***")
            .finish()
    }
}

impl Credentials {
    /// Seal for storage, bound to the tenant id.
    pub fn seal(&self, key: &CredentialKey, tenant_id: Uuid) -> String {
        let plain = serde_json::to_vec(self).expect("credentials serialise");
        key.seal(&plain, tenant_id.as_bytes())
    }

    /// Open what [`Credentials::seal`] made.
    pub fn open(sealed: &str, key: &CredentialKey, tenant_id: Uuid) -> Result<Self, TenantDbError> {
        let plain = key
            .open(sealed, tenant_id.as_bytes())
            .map_err(|_| TenantDbError::Credentials)?;
        serde_json::from_slice(&plain).map_err(|_| TenantDbError::Credentials)
    }
}

/// The database (and login) name of a tenant: stable, unique, a valid identifier everywhere.
pub fn db_name(tenant_id: Uuid) -> String {
    format!("t_{}", tenant_id.simple())
}

/// The file of a tenant on a SQLite shard.
pub fn sqlite_file(shard_url: &str, db_name: &str) -> PathBuf {
    Path::new(sqlite_path(shard_url)).join(format!("{db_name}.db"))
}

/// `url` (a PostgreSQL server URL) pointed at `database`, optionally with the tenant's login.
pub fn postgres_url(
    url: &str,
    database: &str,
    login: Option<&Credentials>,
) -> Result<String, TenantDbError> {
    let login = login.map(|c| (c.user.as_str(), c.password.as_str()));
    Ok(db_url::postgres_url(url, database, login)?)
}

/// How to reach a tenant's database: URLs for the primary and the replicas, with the tenant's
/// own login. Contains secrets: never log it.
#[derive(Clone)]
pub struct TenantDbTarget {
    pub engine: Engine,
    pub primary: String,
    pub replicas: Vec<String>,
}

impl std::fmt::Debug for TenantDbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDbTarget")
            .field("engine", &self.engine)
            .field("replicas", &self.replicas.len())
            .finish_non_exhaustive()
    }
}

impl TenantDbTarget {
    /// Where `tenant` lives on `shard`, opening its sealed login with `key`.
    pub fn resolve(
        shard: &Shard,
        tenant: &Tenant,
        key: &CredentialKey,
    ) -> Result<TenantDbTarget, TenantDbError> {
        let engine = Engine::of_url(&shard.database_url)?;
        match engine {
            Engine::Sqlite => Ok(TenantDbTarget {
                engine,
                primary: format!(
                    "sqlite://{}",
                    sqlite_file(&shard.database_url, &tenant.db_name).display()
                ),
                replicas: Vec::new(),
            }),
            Engine::Postgres => {
                let sealed = tenant
                    .db_credentials
                    .as_deref()
                    .ok_or(TenantDbError::NoCredentials)?;
                let login = Credentials::open(sealed, key, tenant.id)?;
                let primary = postgres_url(&shard.database_url, &tenant.db_name, Some(&login))?;
                let replicas = shard
                    .replicas
                    .iter()
                    .map(|r| postgres_url(r, &tenant.db_name, Some(&login)))
                    .collect::<Result<_, _>>()?;
                Ok(TenantDbTarget {
                    engine,
                    primary,
                    replicas,
                })
            }
        }
    }
}

/// The tenant migrations for `engine` under `dir` (`dir/postgres` or `dir/sqlite`), read now.
pub async fn migrator(dir: &Path, engine: Engine) -> Result<Migrator, TenantDbError> {
    let path = dir.join(engine.dir_name());
    Migrator::new(path.clone())
        .await
        .map_err(|source| TenantDbError::Migrations { path, source })
}

/// The highest migration version applied to a tenant database (0 when none).
pub async fn schema_version(pool: &AnyPool) -> Result<i64, TenantDbError> {
    let exists = sqlx::query(
        "SELECT version FROM _sqlx_migrations WHERE success = TRUE ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await;
    match exists {
        Ok(Some(row)) => Ok(row.try_get(0)?),
        Ok(None) => Ok(0),
        // No migrations table yet.
        Err(sqlx::Error::Database(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// The newest version among `migrator`'s migrations.
pub fn latest_version(migrator: &Migrator) -> i64 {
    migrator.iter().map(|m| m.version).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_seal_and_hide_password() {
        let key = CredentialKey::from_bytes(&[1; 32]).unwrap();
        let id = Uuid::from_u128(9);
        let c = Credentials {
            user: "u".into(),
            password: "secret".into(),
        };
        let sealed = c.seal(&key, id);
        assert!(!format!("{c:?}").contains("secret"));
        assert_eq!(
            Credentials::open(&sealed, &key, id).unwrap().password,
            "secret"
        );
        assert!(Credentials::open(&sealed, &key, Uuid::from_u128(10)).is_err());
    }
}
