//! `POST /v1/tenants/{id}/tokens`: mint a tenant user token (shown once).
//!
//! The user lives in the tenant's own database (`users`, `user_tokens` from the tenant
//! migrations); it is created with the given role if missing. For an existing user the role
//! must be the user's own: a role belongs to the user, not to a token, so minting with another
//! role would silently change what every existing token of that user may do (a `viewer` mint
//! would downgrade an owner's tokens, an `owner` mint upgrade a viewer's). That is 409
//! `conflict` naming the user's role; change a user's role deliberately instead. Only the
//! token's SHA-256 hash is stored, as the app tier expects.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::tenant_audit::{self, Actor, NewEntry};
use tenantgate_catalog::tenant_db::TenantDbTarget;
use tenantgate_catalog::tenant_tokens;
use tenantgate_contract::TenantStatus;

use crate::auth::TenantWriter;
use crate::error::AdminError;
use crate::extract::ApiJson;
use crate::state::AdminState;
use crate::write::Write;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MintToken {
    /// The user's email address (stored lower-case).
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// A role of the tenant (`owner`, `member`, `viewer` or one of its own).
    #[schema(min_length = 1, max_length = 64, example = "owner")]
    role: String,
    /// Lifetime in seconds, at most a year; without it the token does not expire.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31_536_000)]
    ttl_secs: Option<u64>,
}

/// The minted token; `token` is shown only in this answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MintedToken {
    token: String,
    role: String,
    /// RFC 3339, or null for a token without expiry.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// What the tenant database transaction did.
enum Minted {
    /// A token (the secret) for this user id.
    For(String, String),
    /// Nothing: the tenant has no such role.
    UnknownRole,
    /// Nothing: the user exists with this other role.
    RoleDiffers(String),
}

pub(crate) async fn handler(
    State(state): State<AdminState>,
    TenantWriter(actor): TenantWriter,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MintToken>,
) -> Result<(StatusCode, Json<MintedToken>), AdminError> {
    // The schema checked the address (`format: email`), the role's length and the lifetime.
    let email = req.email.to_lowercase();
    let tenant = super::tenants::find(&state, &id).await?;
    if !matches!(
        tenant.status,
        TenantStatus::Active | TenantStatus::Suspended
    ) {
        return Err(AdminError::Conflict(format!(
            "the tenant is {}; tokens can be minted for active or suspended tenants",
            tenant.status
        )));
    }
    let shard = state
        .catalog
        .shard(&tenant.shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let target = TenantDbTarget::resolve(&shard, &tenant, &state.config.security.credential_key)?;
    let now = tenantgate_contract::time::now_ms();
    let expires_at = req.ttl_secs.map(|t| now + (t as i64) * 1000);

    let pool = tenantgate_catalog::db::connect(&target.primary, 1).await?;
    let result = async {
        let mut tx = pool.begin().await?;
        let role_known = sqlx::query("SELECT 1 FROM roles WHERE name = $1")
            .bind(&req.role)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !role_known {
            return Ok(Minted::UnknownRole);
        }
        let existing = sqlx::query("SELECT id, role FROM users WHERE email = $1")
            .bind(&email)
            .fetch_optional(&mut *tx)
            .await?;
        let user_id: String = match existing {
            Some(row) => {
                let role: String = row.try_get(1)?;
                if role != req.role {
                    return Ok(Minted::RoleDiffers(role));
                }
                row.try_get(0)?
            }
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                sqlx::query(
                    "INSERT INTO users (id, email, role, created_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&id)
                .bind(&email)
                .bind(&req.role)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                id
            }
        };
        let minted = tenant_tokens::mint(&mut tx, &user_id, expires_at).await?;
        // The tenant's own trail records it too, with the change (the catalog's below).
        tenant_audit::append(
            &mut tx,
            &NewEntry::new(Actor::Admin(&actor.name), "token.minted")
                .subject(&user_id, Some(&email))
                .detail(serde_json::json!({ "token_id": minted.id, "role": req.role })),
        )
        .await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(Minted::For(user_id, minted.token))
    }
    .await;
    pool.close().await;
    let (user_id, token) = match result? {
        Minted::For(user_id, token) => (user_id, token),
        Minted::UnknownRole => return Err(AdminError::NotFound("role")),
        Minted::RoleDiffers(role) => {
            return Err(AdminError::Conflict(format!(
                "{email} already has role {role}; a token gets its user's role, and minting \
                 with another would change the user's existing tokens"
            )))
        }
    };
    let expires_text = expires_at.map(tenantgate_contract::time::rfc3339);
    let mut w = Write::begin(&state).await?;
    w.audit(NewAudit {
        actor: &actor.name,
        action: "tenant.token_mint",
        target: &format!("tenant:{}", tenant.slug),
        tenant_id: Some(tenant.id),
        before: None,
        after: Some(serde_json::json!({
            "user_id": user_id, "email": email, "role": req.role, "expires_at": expires_text,
        })),
    })
    .await?;
    w.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(MintedToken {
            token,
            role: req.role,
            expires_at: expires_text,
        }),
    ))
}
