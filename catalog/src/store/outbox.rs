//! The webhook outbox: events written with the catalog change they announce, delivered later.

use super::driver::{on, CatalogRow, Millis};
use super::{Catalog, WriteTx};
use crate::error::CatalogError;

/// One pending delivery of an event to one receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub event: String,
    pub url: String,
    /// The JSON body to send, exactly as signed. Stored as TEXT on both backends: `jsonb` would
    /// normalise key order and whitespace, and the bytes sent must be the bytes signed.
    pub payload: String,
    /// Deliveries tried so far, including the current one.
    pub attempts: i64,
}

/// Queue `payload` for every URL in `urls`, in the caller's transaction.
pub async fn enqueue(
    tx: &mut WriteTx,
    event: &str,
    urls: &[String],
    payload: &str,
) -> Result<(), CatalogError> {
    let now = Millis::now();
    for url in urls {
        on!(tx.db(), db => {
            sqlx::query(
                "INSERT INTO webhook_outbox (event, url, payload, attempts, next_attempt_at,
                    created_at)
                 VALUES ($1, $2, $3, 0, $4, $4)",
            )
            .bind(event)
            .bind(url)
            .bind(payload)
            .bind(now)
            .execute(db)
            .await?;
        });
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
        let lock = match self.engine() {
            tenantgate_config::db_url::Engine::Postgres => "FOR UPDATE SKIP LOCKED",
            tenantgate_config::db_url::Engine::Sqlite => "",
        };
        let sql = format!(
            "UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt_at = $2
             WHERE id = (
                SELECT id FROM webhook_outbox
                WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
                ORDER BY next_attempt_at, id LIMIT 1 {lock})
             RETURNING id, event, url, payload, attempts"
        );
        on!(self.db(), db => {
            sqlx::query(&sql)
                .bind(Millis::now())
                .bind(Millis(lease_until))
                .fetch_optional(db)
                .await?
                .map(|r| {
                    Ok(OutboxEntry {
                        id: r.get("id")?,
                        event: r.get("event")?,
                        url: r.get("url")?,
                        payload: r.get("payload")?,
                        attempts: r.get("attempts")?,
                    })
                })
                .transpose()
        })
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
        on!(self.db(), db => {
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
            .bind(Millis::now())
            .bind(error)
            .bind(retry_at.map(Millis))
            .execute(db)
            .await?;
        });
        Ok(())
    }

    /// Entries not delivered, pending or given up (for tests and operators):
    /// `(event, url, attempts, last_error)`.
    pub async fn undelivered_webhooks(
        &self,
    ) -> Result<Vec<(String, String, i64, Option<String>)>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT event, url, attempts, last_error FROM webhook_outbox
                 WHERE delivered_at IS NULL ORDER BY id",
            )
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.get("event")?,
                    r.get("url")?,
                    r.get("attempts")?,
                    r.get("last_error")?,
                ))
            })
            .collect()
        })
    }
}
