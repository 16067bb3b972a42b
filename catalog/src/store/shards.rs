//! Shards: app pools and the database servers tenant databases live on.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use super::changes::{self, NewChange};
use super::{json_col, Catalog};
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

fn from_row(r: &AnyRow) -> Result<Shard, CatalogError> {
    let status: String = r.try_get("status")?;
    Ok(Shard {
        name: r.try_get("name")?,
        status: status
            .parse()
            .map_err(|e| crate::error::corrupt("shards.status", e))?,
        app_upstreams: json_col(
            &r.try_get::<String, _>("app_upstreams")?,
            "shards.app_upstreams",
        )?,
        database_url: r.try_get("database_url")?,
        replicas: json_col(&r.try_get::<String, _>("replicas")?, "shards.replicas")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Insert a shard in the caller's write transaction. A taken name is a conflict.
pub async fn insert(conn: &mut AnyConnection, shard: &NewShard) -> Result<(), CatalogError> {
    let now = tenantgate_contract::time::now_ms();
    let result = sqlx::query(
        "INSERT INTO shards (name, status, app_upstreams, database_url, replicas, created_at, updated_at)
         VALUES ($1, 'active', $2, $3, $4, $5, $5)",
    )
    .bind(&shard.name)
    .bind(serde_json::to_string(&shard.app_upstreams).expect("serialise"))
    .bind(&shard.database_url)
    .bind(serde_json::to_string(&shard.replicas).expect("serialise"))
    .bind(now)
    .execute(&mut *conn)
    .await;
    match result.map_err(CatalogError::from) {
        Err(e) if e.is_unique_violation() => Err(CatalogError::Conflict(format!(
            "shard {} already exists",
            shard.name
        ))),
        other => other.map(|_| ()),
    }
}

/// Change a shard's status and/or upstreams in the caller's write transaction.
pub async fn update(
    conn: &mut AnyConnection,
    name: &str,
    status: Option<ShardStatus>,
    app_upstreams: Option<&[String]>,
    replicas: Option<&[String]>,
) -> Result<(), CatalogError> {
    let result = sqlx::query(
        "UPDATE shards SET status = COALESCE($2, status),
                app_upstreams = COALESCE($3, app_upstreams),
                replicas = COALESCE($4, replicas),
                updated_at = $5
         WHERE name = $1",
    )
    .bind(name)
    .bind(status.map(|s| s.as_str()))
    .bind(app_upstreams.map(|u| serde_json::to_string(u).expect("serialise")))
    .bind(replicas.map(|u| serde_json::to_string(u).expect("serialise")))
    .bind(tenantgate_contract::time::now_ms())
    .execute(&mut *conn)
    .await?;
    if result.rows_affected() == 0 {
        return Err(CatalogError::NotFound("shard"));
    }
    Ok(())
}

impl Catalog {
    /// All shards, by name.
    pub async fn shards(&self) -> Result<Vec<Shard>, CatalogError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM shards ORDER BY name"))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// One shard by name.
    pub async fn shard(&self, name: &str) -> Result<Option<Shard>, CatalogError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM shards WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(from_row).transpose()
    }

    /// Create a shard and announce it on the feed.
    pub async fn create_shard(&self, shard: &NewShard) -> Result<(), CatalogError> {
        let mut tx = self.begin_write().await?;
        insert(&mut tx, shard).await?;
        changes::append(&mut tx, self.engine(), &shard_change(&shard.name)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Tenants per shard (all statuses but deleted), for placement.
    pub async fn tenant_counts(&self) -> Result<Vec<(String, i64)>, CatalogError> {
        let rows = sqlx::query(
            "SELECT s.name, COUNT(t.id) FROM shards s
             LEFT JOIN tenants t ON t.shard = s.name AND t.status <> 'deleted'
             GROUP BY s.name ORDER BY s.name",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
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
