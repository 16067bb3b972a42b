//! Tenant databases: where each tenant's own database lives, how to reach it, how to migrate it.
//!
//! On a PostgreSQL shard every tenant has a database and a login of its own on the shard's
//! server; the login's password is sealed in the catalog. On a SQLite shard every tenant is one
//! file in the shard's directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Row};
use thiserror::Error;
use uuid::Uuid;

use crate::crypto::CredentialKey;
use crate::model::{Shard, Tenant};
use crate::store::{sqlite_path, Backend};

#[derive(Debug, Error)]
pub enum TenantDbError {
    #[error("shard database url is invalid")]
    BadShardUrl,
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

/// `url` (a PostgreSQL server URL) pointed at `database`, optionally with another login.
pub fn postgres_url(
    url: &str,
    database: &str,
    login: Option<&Credentials>,
) -> Result<String, TenantDbError> {
    let mut parsed = url::Url::parse(url).map_err(|_| TenantDbError::BadShardUrl)?;
    parsed.set_path(&format!("/{database}"));
    if let Some(c) = login {
        parsed
            .set_username(&c.user)
            .map_err(|_| TenantDbError::BadShardUrl)?;
        parsed
            .set_password(Some(&c.password))
            .map_err(|_| TenantDbError::BadShardUrl)?;
    }
    Ok(parsed.to_string())
}

/// How to reach a tenant's database: URLs for the primary and the replicas, with the tenant's
/// own login. Contains secrets: never log it.
#[derive(Clone)]
pub struct TenantDbTarget {
    pub backend: Backend,
    pub primary: String,
    pub replicas: Vec<String>,
}

impl std::fmt::Debug for TenantDbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDbTarget")
            .field("backend", &self.backend)
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
        let backend = Backend::of_url(&shard.database_url)?;
        match backend {
            Backend::Sqlite => Ok(TenantDbTarget {
                backend,
                primary: format!(
                    "sqlite://{}",
                    sqlite_file(&shard.database_url, &tenant.db_name).display()
                ),
                replicas: Vec::new(),
            }),
            Backend::Postgres => {
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
                    backend,
                    primary,
                    replicas,
                })
            }
        }
    }
}

/// The tenant migrations for `backend` under `dir` (`dir/postgres` or `dir/sqlite`), read now.
pub async fn migrator(dir: &Path, backend: Backend) -> Result<Migrator, TenantDbError> {
    let path = dir.join(backend.dir_name());
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
    fn postgres_urls_swap_database_and_login() {
        let login = Credentials {
            user: "t_1".into(),
            password: "p@ss/word".into(),
        };
        let url = postgres_url(
            "postgres://postgres@127.0.0.1:5432/postgres",
            "t_1",
            Some(&login),
        )
        .unwrap();
        assert_eq!(url, "postgres://t_1:p%40ss%2Fword@127.0.0.1:5432/t_1");
        let url = postgres_url(
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
            "x",
            None,
        )
        .unwrap();
        assert_eq!(url, "postgres://postgres@127.0.0.1:5432/x?sslmode=disable");
    }

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
