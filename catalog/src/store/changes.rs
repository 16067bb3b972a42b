//! The `catalog_changes` feed: append inside a write transaction, read in version order.

use sqlx::types::Json;

use super::driver::{on, CatalogRow, Id, Millis};
use super::{Catalog, Engine, WriteTx, NOTIFY_CHANNEL};
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
pub async fn append(tx: &mut WriteTx, change: &NewChange) -> Result<i64, CatalogError> {
    let version: i64 = on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO catalog_changes (version, kind, tenant_id, shard, hosts, created_at)
             SELECT COALESCE(MAX(version), 0) + 1, $1, $2, $3, $4, $5 FROM catalog_changes
             RETURNING version",
        )
        .bind(change.kind)
        .bind(change.tenant_id.map(Id))
        .bind(change.shard.as_deref())
        .bind(Json(&change.hosts))
        .bind(Millis::now())
        .fetch_one(db)
        .await?
        .get("version")?
    });
    if tx.engine() == Engine::Postgres {
        on!(tx.db(), db => {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(version.to_string())
                .execute(db)
                .await?;
        });
    }
    Ok(version)
}

impl Catalog {
    /// The newest version in the feed (0 when empty).
    pub async fn latest_version(&self) -> Result<i64, CatalogError> {
        on!(self.db(), db => {
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS version FROM catalog_changes")
                .fetch_one(db)
                .await?
                .get("version")
        })
    }

    /// Up to `limit` changes after `version`, oldest first.
    pub async fn changes_since(
        &self,
        version: i64,
        limit: i64,
    ) -> Result<Vec<Change>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT version, kind, tenant_id, shard, hosts FROM catalog_changes
                 WHERE version > $1 ORDER BY version LIMIT $2",
            )
            .bind(version)
            .bind(limit)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| {
                Ok(Change {
                    version: r.get("version")?,
                    kind: r.get("kind")?,
                    tenant_id: r.opt_id("tenant_id")?,
                    shard: r.get("shard")?,
                    hosts: r.json("hosts")?,
                })
            })
            .collect()
        })
    }

    /// Append a change in its own write transaction (for writes that have nothing else to do).
    pub async fn record_change(&self, change: &NewChange) -> Result<i64, CatalogError> {
        let mut tx = self.begin_write().await?;
        let v = append(&mut tx, change).await?;
        tx.commit().await?;
        Ok(v)
    }
}
