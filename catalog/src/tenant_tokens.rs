//! Tenant user tokens (table `user_tokens` of each tenant database): minted by the admin API
//! (`POST /v1/tenants/{id}/tokens`) and by the tenant's own user managers (`POST /api/users`),
//! the same way in both.

use sqlx::AnyConnection;
use tenantgate_contract::crypto::{hash_token, random_token};
use tenantgate_contract::time::now_ms;

/// A token just stored: the secret, shown once and stored only as its SHA-256, and the id that
/// lists and revokes it.
#[derive(Debug)]
pub struct Minted {
    pub token: String,
    pub id: String,
}

/// Store a new token of user `user_id`, expiring at `expires_at` (ms since the Unix epoch;
/// never when `None`).
pub async fn mint(
    db: &mut AnyConnection,
    user_id: &str,
    expires_at: Option<i64>,
) -> Result<Minted, sqlx::Error> {
    let token = random_token("tgu_");
    // Random, not derived from the secret: the id is shown in lists and the audit trail.
    let id = uuid::Uuid::new_v4().simple().to_string();
    sqlx::query(
        "INSERT INTO user_tokens (token_hash, id, user_id, expires_at, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash_token(&token))
    .bind(&id)
    .bind(user_id)
    .bind(expires_at)
    .bind(now_ms())
    .execute(&mut *db)
    .await?;
    Ok(Minted { token, id })
}
