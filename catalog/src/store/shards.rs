//! Shards: app pools and the database servers tenant databases live on.

use sqlx::types::Json;

use super::changes::{self, NewChange};
use super::driver::{on, CatalogRow, Millis};
use super::{Catalog, WriteTx};
use crate::error::CatalogError;
use crate::model::{Shard, ShardStatus};

/// A shard to create.
#[derive(Debug, Clone)]
pub struct NewShard {
    pub name: String,
    pub app_upstreams: Vec<String>,
    pub database_url: String,
    pub replicas: Vec<String>,
}

const COLUMNS: &str = "name, status, app_upstreams, database_url, replicas, created_at, updated_at";

fn from_row(r: &impl CatalogRow) -> Result<Shard, CatalogError> {
    let status: String = r.get("status")?;
    Ok(Shard {
        name: r.get("name")?,
        status: status
            .parse()
            .map_err(|e| crate::error::corrupt("shards.status", e))?,
        app_upstreams: r.json("app_upstreams")?,
        database_url: r.get("database_url")?,
        replicas: r.json("replicas")?,
        created_at: r.millis("created_at")?,
        updated_at: r.millis("updated_at")?,
    })
}

/// Insert a shard in the caller's write transaction. A taken name is a conflict.
pub async fn insert(tx: &mut WriteTx, shard: &NewShard) -> Result<(), CatalogError> {
    let result = on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO shards (name, status, app_upstreams, database_url, replicas, created_at,
                updated_at)
             VALUES ($1, 'active', $2, $3, $4, $5, $5)",
        )
        .bind(&shard.name)
        .bind(Json(&shard.app_upstreams))
        .bind(&shard.database_url)
        .bind(Json(&shard.replicas))
        .bind(Millis::now())
        .execute(db)
        .await
        .map(drop)
    });
    match result.map_err(CatalogError::from) {
        Err(e) if e.is_unique_violation() => Err(CatalogError::Conflict(format!(
            "shard {} already exists",
            shard.name
        ))),
        other => other,
    }
}

/// Change a shard's status and/or upstreams in the caller's write transaction.
pub async fn update(
    tx: &mut WriteTx,
    name: &str,
    status: Option<ShardStatus>,
    app_upstreams: Option<&[String]>,
    replicas: Option<&[String]>,
) -> Result<(), CatalogError> {
    let updated = on!(tx.db(), db => {
        sqlx::query(
            "UPDATE shards SET status = COALESCE($2, status),
                    app_upstreams = COALESCE($3, app_upstreams),
                    replicas = COALESCE($4, replicas),
                    updated_at = $5
             WHERE name = $1",
        )
        .bind(name)
        .bind(status.map(|s| s.as_str()))
        .bind(app_upstreams.map(Json))
        .bind(replicas.map(Json))
        .bind(Millis::now())
        .execute(db)
        .await?
        .rows_affected()
    });
    if updated == 0 {
        return Err(CatalogError::NotFound("shard"));
    }
    Ok(())
}

impl Catalog {
    /// All shards, by name.
    pub async fn shards(&self) -> Result<Vec<Shard>, CatalogError> {
        let sql = format!("SELECT {COLUMNS} FROM shards ORDER BY name");
        on!(self.db(), db => {
            sqlx::query(&sql)
                .fetch_all(db)
                .await?
                .iter()
                .map(from_row)
                .collect()
        })
    }

    /// One shard by name.
    pub async fn shard(&self, name: &str) -> Result<Option<Shard>, CatalogError> {
        let sql = format!("SELECT {COLUMNS} FROM shards WHERE name = $1");
        on!(self.db(), db => {
            sqlx::query(&sql)
                .bind(name)
                .fetch_optional(db)
                .await?
                .as_ref()
                .map(from_row)
                .transpose()
        })
    }

    /// Create a shard and announce it on the feed.
    pub async fn create_shard(&self, shard: &NewShard) -> Result<(), CatalogError> {
        let mut tx = self.begin_write().await?;
        insert(&mut tx, shard).await?;
        changes::append(&mut tx, &shard_change(&shard.name)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tenants per shard (all statuses but deleted), for placement.
    pub async fn tenant_counts(&self) -> Result<Vec<(String, i64)>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT s.name, COUNT(t.id) AS n FROM shards s
                 LEFT JOIN tenants t ON t.shard = s.name AND t.status <> 'deleted'
                 GROUP BY s.name ORDER BY s.name",
            )
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| Ok((r.get("name")?, r.get("n")?)))
            .collect()
        })
    }
}

/// The feed entry for a change to shard `name`.
pub fn shard_change(name: &str) -> NewChange {
    NewChange {
        kind: "shard",
        shard: Some(name.to_string()),
        ..NewChange::default()
    }
}
