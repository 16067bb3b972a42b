//! Admin token lookup for authentication, with the token's id for the audit log.

use sqlx::Row;

use super::Catalog;
use crate::error::CatalogError;
use crate::model::TokenScope;

/// An unrevoked admin token, as authentication sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTokenInfo {
    pub id: String,
    pub name: String,
    pub scope: TokenScope,
}

impl Catalog {
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
