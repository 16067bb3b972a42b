//! Browser sessions: `POST /login` opens one, the session cookie carries its id, `POST /logout`
//! ends it.
//!
//! The cookie holds a fresh random id, never the bearer token: a cookie that leaks (a shared
//! machine, a proxy log) gives a session that ends at logout or expiry, not the token that
//! would outlive both. The tenant database keeps only the id's SHA-256 (table `sessions`),
//! the user, the token it was opened with (removing the token ends its sessions) and the
//! expiry: `[app] session_ttl_secs`, never past the token's own expiry. Every login opens a
//! new session and ends the one the browser brought, so an id planted before the login is
//! worth nothing after it. Expired rows are deleted at the next login of the tenant.

use std::time::Duration;

use sqlx::Row;
use tenantgate_contract::crypto::{hash_token, random_token};

use crate::error::AppError;
use crate::pools::TenantDb;
use crate::rbac::User;

/// A session just opened: the id for the cookie (shown once, never stored) and how long the
/// cookie should live.
pub struct Opened {
    pub id: String,
    pub max_age_secs: i64,
}

/// Open a session for `user`, who just signed in with the token whose hash is `token_hash`,
/// and end `replaced` (the session id the browser sent, if any).
pub async fn open(
    db: &mut TenantDb,
    user: &User,
    token_hash: &str,
    replaced: Option<&str>,
    ttl: Duration,
) -> Result<Opened, AppError> {
    let now = tenantgate_contract::time::now_ms();
    let token_expiry: Option<i64> =
        sqlx::query("SELECT expires_at FROM user_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&mut **db)
            .await?
            .map(|row| row.try_get(0))
            .transpose()?
            .flatten();
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at = token_expiry.map_or(now.saturating_add(ttl_ms), |t| {
        t.min(now.saturating_add(ttl_ms))
    });
    let id = random_token("tgs_");
    sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut **db)
        .await?;
    if let Some(old) = replaced {
        end(db, old).await?;
    }
    sqlx::query(
        "INSERT INTO sessions (id_hash, user_id, token_hash, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(hash_token(&id))
    .bind(&user.id)
    .bind(token_hash)
    .bind(now)
    .bind(expires_at)
    .execute(&mut **db)
    .await?;
    Ok(Opened {
        id,
        max_age_secs: (expires_at - now).div_euclid(1000).max(1),
    })
}

/// End the session with id `id` (nothing when there is none).
pub async fn end(db: &mut TenantDb, id: &str) -> Result<(), AppError> {
    sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
        .bind(hash_token(id))
        .execute(&mut **db)
        .await?;
    Ok(())
}
