//! The `catalog_changes` feed: append inside a write transaction, read in version order.

use sqlx::{AnyConnection, Row};

use super::{json_col, uuid_col, Catalog, Engine, NOTIFY_CHANNEL};
use crate::error::CatalogError;
use crate::model::Change;

/// What a write changed, for the feed.
#[derive(Debug, Clone, Default)]
pub struct NewChange {
    pub kind: &'static str,
    pub tenant_id: Option<uuid::Uuid>,
    pub shard: Option<String>,
    pub hosts: Vec<String>,
}

/// Append a change in the caller's write transaction; returns its version.
///
/// The caller holds the catalog write lock ([`Catalog::begin_write`]), so `MAX(version) + 1` is
/// race-free and versions commit in order. On PostgreSQL a NOTIFY is queued; it is delivered
/// only if and when the transaction commits.
pub async fn append(
    conn: &mut AnyConnection,
    backend: Engine,
    change: &NewChange,
) -> Result<i64, CatalogError> {
    let row = sqlx::query(
        "INSERT INTO catalog_changes (version, kind, tenant_id, shard, hosts, created_at)
         SELECT COALESCE(MAX(version), 0) + 1, $1, $2, $3, $4, $5 FROM catalog_changes
         RETURNING version",
    )
    .bind(change.kind)
    .bind(change.tenant_id.map(|id| id.to_string()))
    .bind(change.shard.clone())
    .bind(serde_json::to_string(&change.hosts).expect("hosts serialise"))
    .bind(tenantgate_contract::time::now_ms())
    .fetch_one(&mut *conn)
    .await?;
    let version: i64 = row.try_get(0)?;
    if backend == Engine::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(NOTIFY_CHANNEL)
            .bind(version.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(version)
}

impl Catalog {
    /// The newest version in the feed (0 when empty).
    pub async fn latest_version(&self) -> Result<i64, CatalogError> {
        let row = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM catalog_changes")
            .fetch_one(self.pool())
            .await?;
        Ok(row.try_get(0)?)
    }

    /// Up to `limit` changes after `version`, oldest first.
    pub async fn changes_since(
        &self,
        version: i64,
        limit: i64,
    ) -> Result<Vec<Change>, CatalogError> {
        let rows = sqlx::query(
            "SELECT version, kind, tenant_id, shard, hosts FROM catalog_changes
             WHERE version > $1 ORDER BY version LIMIT $2",
        )
        .bind(version)
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Change {
                    version: r.try_get("version")?,
                    kind: r.try_get("kind")?,
                    tenant_id: r
                        .try_get::<Option<String>, _>("tenant_id")?
                        .map(|t| uuid_col(&t, "catalog_changes.tenant_id"))
                        .transpose()?,
                    shard: r.try_get("shard")?,
                    hosts: json_col(&r.try_get::<String, _>("hosts")?, "catalog_changes.hosts")?,
                })
            })
            .collect()
    }

    /// Append a change in its own write transaction (for writes that have nothing else to do).
    pub async fn record_change(&self, change: &NewChange) -> Result<i64, CatalogError> {
        let mut tx = self.begin_write().await?;
        let v = append(&mut tx, self.engine(), change).await?;
        tx.commit().await?;
        Ok(v)
    }
}
