//! The webhook outbox: events written with the catalog change they announce, delivered later.

use sqlx::{AnyConnection, Row};

use super::Catalog;
use crate::error::CatalogError;

/// One pending delivery of an event to one receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub event: String,
    pub url: String,
    /// The JSON body to send, exactly as signed.
    pub payload: String,
    /// Deliveries tried so far, including the current one.
    pub attempts: i64,
}

/// Queue `payload` for every URL in `urls`, in the caller's transaction.
pub async fn enqueue(
    conn: &mut AnyConnection,
    event: &str,
    urls: &[String],
    payload: &str,
) -> Result<(), CatalogError> {
    let now = tenantgate_contract::time::now_ms();
    for url in urls {
        sqlx::query(
            "INSERT INTO webhook_outbox (event, url, payload, attempts, next_attempt_at, created_at)
             VALUES ($1, $2, $3, 0, $4, $4)",
        )
        .bind(event)
        .bind(url)
        .bind(payload)
        .bind(now)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl Catalog {
    /// Take the next due, undelivered entry, hiding it from other deliverers until
    /// `lease_until` (ms): the claim pushes `next_attempt_at` forward, so an entry whose
    /// deliverer dies is simply tried again later. `None` when nothing is due.
    pub async fn claim_outbox(
        &self,
        lease_until: i64,
    ) -> Result<Option<OutboxEntry>, CatalogError> {
        let now = tenantgate_contract::time::now_ms();
        let lock = match self.engine() {
            tenantgate_config::db_url::Engine::Postgres => "FOR UPDATE SKIP LOCKED",
            tenantgate_config::db_url::Engine::Sqlite => "",
        };
        let row = sqlx::query(&format!(
            "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = $2
             WHERE id = (
                SELECT id FROM webhook_outbox
                WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
                ORDER BY next_attempt_at, id LIMIT 1 {lock})
             RETURNING id, event, url, payload, attempts"
        ))
        .bind(now)
        .bind(lease_until)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            Ok(OutboxEntry {
                id: r.try_get("id")?,
                event: r.try_get("event")?,
                url: r.try_get("url")?,
                payload: r.try_get("payload")?,
                attempts: r.try_get("attempts")?,
            })
        })
        .transpose()
    }

    /// Record the outcome of a delivery: delivered, or failed with `error` and retried at
    /// `retry_at` (ms; `None` gives up).
    pub async fn finish_outbox(
        &self,
        id: i64,
        delivered: bool,
        error: Option<&str>,
        retry_at: Option<i64>,
    ) -> Result<(), CatalogError> {
        let now = tenantgate_contract::time::now_ms();
        sqlx::query(
            "UPDATE webhook_outbox SET
                delivered_at = CASE WHEN $2 = 1 THEN $3 ELSE NULL END,
                failed_at = CASE WHEN $2 = 0 AND $5 IS NULL THEN $3 ELSE NULL END,
                last_error = $4,
                next_attempt_at = COALESCE($5, next_attempt_at)
             WHERE id = $1",
        )
        .bind(id)
        .bind(i64::from(delivered))
        .bind(now)
        .bind(error)
        .bind(retry_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Entries not delivered, pending or given up (for tests and operators):
    /// `(event, url, attempts, last_error)`.
    pub async fn undelivered_webhooks(
        &self,
    ) -> Result<Vec<(String, String, i64, Option<String>)>, CatalogError> {
        let rows = sqlx::query(
            "SELECT event, url, attempts, last_error FROM webhook_outbox
             WHERE delivered_at IS NULL ORDER BY id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)))
            .collect()
    }
}
