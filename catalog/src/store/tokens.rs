//! Admin tokens, stored as SHA-256 hashes: creation and the lookup authentication uses.

use tenantgate_contract::crypto::hash_token;

use super::driver::{on, CatalogRow, Id, Millis};
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
        on!(self.db(), db => {
            sqlx::query(
                "INSERT INTO admin_tokens (id, name, token_hash, scope, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(Id(id))
            .bind(name)
            .bind(hash_token(token))
            .bind(scope.as_str())
            .bind(Millis::now())
            .execute(db)
            .await?;
        });
        Ok(id)
    }

    /// The unrevoked admin token whose SHA-256 hash is `token_hash`, if any.
    pub async fn admin_token_info(
        &self,
        token_hash: &str,
    ) -> Result<Option<AdminTokenInfo>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT id, name, scope FROM admin_tokens
                 WHERE token_hash = $1 AND revoked_at IS NULL",
            )
            .bind(token_hash)
            .fetch_optional(db)
            .await?
            .map(|r| {
                let scope: String = r.get("scope")?;
                Ok(AdminTokenInfo {
                    id: r.id("id")?.to_string(),
                    name: r.get("name")?,
                    scope: scope
                        .parse()
                        .map_err(|e| crate::error::corrupt("admin_tokens.scope", e))?,
                })
            })
            .transpose()
        })
    }
}
