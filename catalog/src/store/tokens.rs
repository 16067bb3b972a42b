//! Admin tokens, stored as SHA-256 hashes: creation and the lookup authentication uses.

use sqlx::Row;
use tenantgate_contract::crypto::hash_token;

use super::Catalog;
use crate::error::CatalogError;
use crate::model::TokenScope;

/// An unrevoked admin token, as authentication sees it (the id goes to the audit log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenInfo {
    pub id: String,
    pub name: String,
    pub scope: TokenScope,
}

impl Catalog {
    /// Store a new admin token (its hash) and return its id.
    pub async fn insert_admin_token(
        &self,
        name: &str,
        token: &str,
        scope: TokenScope,
    ) -> Result<uuid::Uuid, CatalogError> {
        let id = uuid::Uuid::now_v7();
        sqlx::query(
            "INSERT INTO admin_tokens (id, name, token_hash, scope, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.to_string())
        .bind(name)
        .bind(hash_token(token))
        .bind(scope.as_str())
        .bind(tenantgate_contract::time::now_ms())
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// The unrevoked admin token whose SHA-256 hash is `token_hash`, if any.
    pub async fn admin_token_info(
        &self,
        token_hash: &str,
    ) -> Result<Option<AdminTokenInfo>, CatalogError> {
        let row = sqlx::query(
            "SELECT id, name, scope FROM admin_tokens WHERE token_hash = $1 AND revoked_at IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await?;
        row.map(|r| {
            let scope: String = r.try_get("scope")?;
            Ok(AdminTokenInfo {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                scope: scope
                    .parse()
                    .map_err(|e| crate::error::corrupt("admin_tokens.scope", e))?,
            })
        })
        .transpose()
    }
}
