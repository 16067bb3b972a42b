//! Pending ACME HTTP-01 challenges (`acme_challenges`): written by whoever runs an ACME order,
//! answered by the edge at `/.well-known/acme-challenge/{token}`.
//!
//! Writers announce each change with a feed entry of kind [`CHANGE_KIND`]; edges then reload the
//! live challenges (a handful at any time), so the answer never needs a catalog query.

use super::changes::{self, NewChange};
use super::driver::{on, CatalogRow, Millis};
use super::{Catalog, WriteTx};
use crate::error::CatalogError;

/// The feed kind of a change to `acme_challenges`.
pub const CHANGE_KIND: &str = "acme_challenge";

/// Record (or replace) the challenge `token` for `host` until `expires_at_ms`, with its feed
/// entry, in the caller's write transaction.
pub async fn put_challenge(
    tx: &mut WriteTx,
    token: &str,
    key_authorization: &str,
    host: &str,
    expires_at_ms: i64,
) -> Result<(), CatalogError> {
    on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO acme_challenges (token, key_authorization, host, expires_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (token) DO UPDATE SET key_authorization = excluded.key_authorization,
                host = excluded.host, expires_at = excluded.expires_at",
        )
        .bind(token)
        .bind(key_authorization)
        .bind(host)
        .bind(Millis(expires_at_ms))
        .execute(db)
        .await?;
    });
    announce(tx).await
}

/// Remove challenge `token` (validated or abandoned) and expired ones, with the feed entry, in
/// the caller's write transaction.
pub async fn delete_challenge(tx: &mut WriteTx, token: &str) -> Result<(), CatalogError> {
    on!(tx.db(), db => {
        sqlx::query("DELETE FROM acme_challenges WHERE token = $1 OR expires_at < $2")
            .bind(token)
            .bind(Millis::now())
            .execute(db)
            .await?;
    });
    announce(tx).await
}

async fn announce(tx: &mut WriteTx) -> Result<(), CatalogError> {
    changes::append(
        tx,
        &NewChange {
            kind: CHANGE_KIND,
            ..NewChange::default()
        },
    )
    .await
    .map(drop)
}

impl Catalog {
    /// The challenges not yet expired: `(token, key authorization)`.
    pub async fn live_challenges(&self) -> Result<Vec<(String, String)>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT token, key_authorization FROM acme_challenges WHERE expires_at > $1",
            )
            .bind(Millis::now())
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| Ok((r.get("token")?, r.get("key_authorization")?)))
            .collect()
        })
    }
}
