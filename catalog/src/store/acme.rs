//! Pending ACME HTTP-01 challenges (`acme_challenges`): written by whoever runs an ACME order,
//! answered by the edge at `/.well-known/acme-challenge/{token}`.
//!
//! Writers announce each change with a feed entry of kind [`CHANGE_KIND`]; edges then reload the
//! live challenges (a handful at any time), so the answer never needs a catalog query.

use super::changes::{self, NewChange};
use super::driver::{on, CatalogRow, Millis};
use super::{Catalog, WriteTx};
use crate::error::CatalogError;

/// The path prefix of HTTP-01 challenge URLs (RFC 8555 §8.3), followed by the token.
pub const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

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

/// The ACME account kept for one CA directory (`acme_accounts`).
#[derive(Clone)]
pub struct StoredAccount {
    /// The account's URL at the CA (its id).
    pub account_url: String,
    /// The account credentials (JSON, with the private key) sealed under
    /// [`account_context`].
    pub credentials_sealed: String,
}

impl std::fmt::Debug for StoredAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredAccount")
            .field("account_url", &self.account_url)
            .finish_non_exhaustive()
    }
}

/// The sealing context of an account's credentials: binds them to their directory URL, so
/// credentials copied to another directory's row do not open.
pub fn account_context(directory_url: &str) -> Vec<u8> {
    format!("acme-account:{directory_url}").into_bytes()
}

/// Keep `account` for `directory_url` unless one is kept already (another admin process made
/// its own at the same time); true when this one was stored. In the caller's write
/// transaction, so the caller can re-read the winner before committing.
pub async fn put_account_if_absent(
    tx: &mut WriteTx,
    directory_url: &str,
    account: &StoredAccount,
) -> Result<bool, CatalogError> {
    let inserted = on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO acme_accounts (directory_url, account_url, credentials_sealed, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (directory_url) DO NOTHING",
        )
        .bind(directory_url)
        .bind(&account.account_url)
        .bind(&account.credentials_sealed)
        .bind(Millis::now())
        .execute(db)
        .await?
        .rows_affected()
    });
    Ok(inserted == 1)
}

impl Catalog {
    /// The account kept for `directory_url`, if any.
    pub async fn acme_account(
        &self,
        directory_url: &str,
    ) -> Result<Option<StoredAccount>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT account_url, credentials_sealed FROM acme_accounts
                 WHERE directory_url = $1",
            )
            .bind(directory_url)
            .fetch_optional(db)
            .await?
            .map(|r| {
                Ok(StoredAccount {
                    account_url: r.get("account_url")?,
                    credentials_sealed: r.get("credentials_sealed")?,
                })
            })
            .transpose()
        })
    }
}
