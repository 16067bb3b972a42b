//! Admin tokens, stored as SHA-256 hashes: creation, the lookup authentication uses, listing,
//! revocation and the last-used time.
//!
//! A token reaches the whole fleet, or only the tenants listed in its `tenant_ids` (a JSON
//! array of ids, migration 0010); `admin::auth` enforces the restriction.
//!
//! A token is valid while it is neither revoked nor past its `expires_at`. Both are checked by
//! the lookup itself, on every request, so a revocation or an expiry takes effect at once in
//! every admin process.

use tenantgate_contract::crypto::hash_token;
use uuid::Uuid;

use sqlx::types::Json;

use super::driver::{on, CatalogRow, Id, Millis};
use super::{Catalog, WriteTx};
use crate::error::CatalogError;
use crate::model::TokenScope;

/// A valid admin token, as authentication sees it (the id goes to the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenInfo {
    pub id: Uuid,
    pub name: String,
    pub scope: TokenScope,
    /// The tenants the token is restricted to, or `None` for the whole fleet.
    pub tenants: Option<Vec<Uuid>>,
}

/// An admin token as operators list it: never the secret nor its hash.
/// Times are milliseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminToken {
    pub id: Uuid,
    pub name: String,
    pub scope: TokenScope,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// The tenants the token is restricted to, or `None` for the whole fleet.
    pub tenants: Option<Vec<Uuid>>,
}

const COLUMNS: &str =
    "id, name, scope, created_at, last_used_at, expires_at, revoked_at, tenant_ids";

fn row_to_token(r: &impl CatalogRow) -> Result<AdminToken, CatalogError> {
    Ok(AdminToken {
        id: r.id("id")?,
        name: r.get("name")?,
        scope: scope_of(r)?,
        created_at: r.millis("created_at")?,
        last_used_at: r.opt_millis("last_used_at")?,
        expires_at: r.opt_millis("expires_at")?,
        revoked_at: r.opt_millis("revoked_at")?,
        tenants: r.opt_json("tenant_ids")?,
    })
}

fn scope_of(r: &impl CatalogRow) -> Result<TokenScope, CatalogError> {
    let scope: String = r.get("scope")?;
    scope
        .parse()
        .map_err(|e| crate::error::corrupt("admin_tokens.scope", e))
}

impl Catalog {
    /// The valid (unrevoked, unexpired) admin token whose SHA-256 hash is `token_hash`, if any.
    pub async fn admin_token_info(
        &self,
        token_hash: &str,
    ) -> Result<Option<AdminTokenInfo>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT id, name, scope, tenant_ids FROM admin_tokens
                 WHERE token_hash = $1 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(token_hash)
            .bind(Millis::now())
            .fetch_optional(db)
            .await?
            .map(|r| {
                Ok(AdminTokenInfo {
                    id: r.id("id")?,
                    name: r.get("name")?,
                    scope: scope_of(&r)?,
                    tenants: r.opt_json("tenant_ids")?,
                })
            })
            .transpose()
        })
    }

    /// Admin tokens in creation order (ids are UUIDv7), after `after` when given, up to `limit`;
    /// revoked and expired ones included, so operators see what was revoked and when.
    pub async fn admin_tokens(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<AdminToken>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM admin_tokens
                 WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
            ))
            .bind(after.map(Id))
            .bind(limit)
            .fetch_all(db)
            .await?
            .iter()
            .map(row_to_token)
            .collect()
        })
    }

    /// Record that token `id` was used at `at` (milliseconds). Callers throttle this: it is a
    /// write, and authentication must not write once per request.
    pub async fn touch_admin_token(&self, id: Uuid, at: i64) -> Result<(), CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "UPDATE admin_tokens SET last_used_at = $2
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            )
            .bind(Id(id))
            .bind(Millis(at))
            .execute(db)
            .await?;
        });
        Ok(())
    }
}

/// Store a new admin token (its hash) in the caller's write, valid until `expires_at`
/// (milliseconds) when given, restricted to `tenants` when given, and return its id.
pub async fn insert_admin_token(
    tx: &mut WriteTx,
    name: &str,
    token: &str,
    scope: TokenScope,
    expires_at: Option<i64>,
    tenants: Option<&[Uuid]>,
) -> Result<Uuid, CatalogError> {
    let id = Uuid::now_v7();
    on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO admin_tokens (id, name, token_hash, scope, created_at, expires_at, tenant_ids)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Id(id))
        .bind(name)
        .bind(hash_token(token))
        .bind(scope.as_str())
        .bind(Millis::now())
        .bind(expires_at.map(Millis))
        .bind(tenants.map(Json))
        .execute(db)
        .await?;
    });
    Ok(id)
}

/// Token `id` as stored, in the caller's write (for the audit record's before/after).
pub async fn admin_token(tx: &mut WriteTx, id: Uuid) -> Result<Option<AdminToken>, CatalogError> {
    on!(tx.db(), db => {
        sqlx::query(&format!("SELECT {COLUMNS} FROM admin_tokens WHERE id = $1"))
            .bind(Id(id))
            .fetch_optional(db)
            .await?
            .as_ref()
            .map(row_to_token)
            .transpose()
    })
}

/// Revoke token `id` now, in the caller's write. Revoking a revoked token keeps its first
/// revocation time. Returns the token as it is after the write, or `None` if there is no such
/// token.
pub async fn revoke_admin_token(
    tx: &mut WriteTx,
    id: Uuid,
) -> Result<Option<AdminToken>, CatalogError> {
    on!(tx.db(), db => {
        sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(Id(id))
        .bind(Millis::now())
        .execute(&mut *db)
        .await?;
    });
    admin_token(tx, id).await
}
