//! Tenant self-service of users and their tokens (permission `users:manage`, DESIGN §9).
//!
//! ```text
//! GET    /api/users?limit=&cursor=        {"users":[…], "next_cursor": …}
//! POST   /api/users {email, role, ttl_secs?}  201 {user, token, token_id, expires_at}  (token shown once)
//! PATCH  /api/users/{id} {role?, disabled?}   user
//! DELETE /api/users/{id}[?erase=true]     204
//! GET    /api/tokens?limit=&cursor=       {"tokens":[…], "next_cursor": …}  (never a secret)
//! DELETE /api/tokens/{id}                 204
//! ```
//!
//! Rules, checked inside the transaction that makes the change:
//!
//! - **No escalation**: a manager may give, take or touch only roles whose permissions are all
//!   their own (a custom role with `users:manage` cannot make anyone an owner). 403.
//! - **An owner stays**: a change that would leave the tenant without an active owner (demote,
//!   disable, delete or erase the last one) is 409 `conflict`. Every such change first locks
//!   the `owner` role's row, so two managers demoting the last two owners at once are ordered
//!   and the second sees the first's change (PostgreSQL; SQLite has one writer anyway).
//! - A disabled user's tokens and sessions are refused at once (checked on every request,
//!   see [`crate::rbac`]); enabling the user again restores them.
//! - Revoking a token deletes it and the sessions opened with it. The app caches no token
//!   check, so the next request to any app process is refused: revocation takes effect at
//!   once everywhere (on shards with replicas, a read is authenticated on a replica when it
//!   has the row, so there it takes effect within the replica's lag).
//! - **Erasure** (`?erase=true`, GDPR): instead of removing the row, the email is replaced by a
//!   pseudonym, the user is disabled, every token and session is deleted, and the audit trail
//!   names the pseudonym instead of the email ([`tenantgate_catalog::tenant_audit::pseudonymise`]).
//!   Items keep their `created_by` user id, which now leads only to the pseudonym.
//!
//! Every change is recorded in the tenant's audit trail in the same transaction.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};
use tenantgate_catalog::tenant_audit::{self, Actor, NewEntry};
use tenantgate_catalog::tenant_tokens;
use tenantgate_contract::time::{now_ms, rfc3339};
use uuid::Uuid;

use crate::context::TenantContext;
use crate::error::AppError;
use crate::items::{ApiJson, ApiQuery, Cursor, ListQuery};
use crate::rbac::{Credential, Permission, Permissions, User};
use crate::roles;

/// A tenant user as the API shows it (never a token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct UserView {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    pub role: String,
    /// A disabled user's tokens and sessions are refused.
    pub disabled: bool,
    /// The user's personal data was erased; the email is a pseudonym.
    pub erased: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[serde(skip)]
    pub created_ms: i64,
}

/// A page of users, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct UserPage {
    users: Vec<UserView>,
    next_cursor: Option<String>,
}

/// Body of `POST /api/users`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Invite {
    /// The user's email address (stored lower-case).
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// A role of the tenant (`owner`, `member`, `viewer` or one of its own).
    #[schema(min_length = 1, max_length = 64, example = "member")]
    role: String,
    /// Lifetime of the token in seconds, at most a year; without it the token does not expire.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 31_536_000, nullable = false)]
    ttl_secs: Option<u64>,
}

/// Answer of `POST /api/users`: the user and a token for them, shown only here.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Invited {
    user: UserView,
    token: String,
    token_id: String,
    /// RFC 3339, or null for a token without expiry.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

/// Body of `PATCH /api/users/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UserPatch {
    /// The user's new role.
    #[schema(min_length = 1, max_length = 64, nullable = false)]
    role: Option<String>,
    /// Disable (`true`) or enable (`false`) the user.
    #[schema(nullable = false)]
    disabled: Option<bool>,
}

/// Query of `DELETE /api/users/{id}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    /// Erase the user's personal data (GDPR) instead of deleting the user.
    #[param(nullable = false)]
    erase: Option<bool>,
}

/// A token as the API shows it: who it belongs to, never the secret or its hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TokenView {
    pub id: String,
    #[schema(format = Uuid)]
    pub user_id: String,
    pub email: String,
    pub role: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// RFC 3339, or null for a token without expiry.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[serde(skip)]
    created_ms: i64,
}

/// A page of tokens, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TokenPage {
    tokens: Vec<TokenView>,
    next_cursor: Option<String>,
}

const USER_COLUMNS: &str = "id, email, role, disabled_at, erased_at, created_at";

fn user_from_row(r: &AnyRow) -> Result<UserView, sqlx::Error> {
    let created_ms: i64 = r.try_get("created_at")?;
    Ok(UserView {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        role: r.try_get("role")?,
        disabled: r.try_get::<Option<i64>, _>("disabled_at")?.is_some(),
        erased: r.try_get::<Option<i64>, _>("erased_at")?.is_some(),
        created_at: rfc3339(created_ms),
        created_ms,
    })
}

/// Up to `limit` users after `after`, oldest first (the list and the export).
pub async fn page(
    db: &mut AnyConnection,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<UserView>, sqlx::Error> {
    let (at, id) = after.map_or((i64::MIN, ""), |c| (c.created_at, c.id.as_str()));
    let rows = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users
         WHERE created_at > $1 OR (created_at = $1 AND id > $2)
         ORDER BY created_at, id LIMIT $3"
    ))
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(&mut *db)
    .await?;
    rows.iter().map(user_from_row).collect()
}

async fn fetch_user(db: &mut AnyConnection, id: &str) -> Result<Option<UserView>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *db)
        .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// `limit + 1` rows fetched: the page and the cursor after its last row.
fn paged<T>(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Cursor) -> (Vec<T>, Option<String>) {
    let next = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|last| key(last).encode())
    } else {
        None
    };
    (rows, next)
}

/// User ids are UUIDs; anything else cannot exist (404 without a query).
fn user_id(raw: &str) -> Result<String, AppError> {
    Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| AppError::NotFound)
}

/// The audit actor of a signed-in user.
pub(crate) fn actor(user: &User) -> Actor<'_> {
    Actor::User {
        id: &user.id,
        email: &user.email,
    }
}

/// 403 unless `manager` holds every permission of `role` (no escalation): to give, take,
/// create or change it. The first missing permission is named.
pub(crate) fn may_handle(manager: &User, role: &Permissions) -> Result<(), AppError> {
    match role.iter().find(|p| !manager.permissions.contains(*p)) {
        Some(missing) => Err(AppError::Forbidden(missing)),
        None => Ok(()),
    }
}

/// Lock the owner role's row for the rest of the transaction: every change that can remove an
/// owner takes this first, so the count in [`keeps_an_owner`] cannot race another such change.
async fn lock_owners(db: &mut AnyConnection) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE roles SET name = name WHERE name = 'owner'")
        .execute(&mut *db)
        .await?;
    Ok(())
}

/// 409 when the transaction's changes left the tenant without an active owner.
async fn keeps_an_owner(db: &mut AnyConnection) -> Result<(), AppError> {
    let owners: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE role = 'owner' AND disabled_at IS NULL",
    )
    .fetch_one(&mut *db)
    .await?;
    if owners == 0 {
        return Err(AppError::Conflict(
            "the tenant must keep at least one active owner".into(),
        ));
    }
    Ok(())
}

pub(crate) async fn list(
    ctx: TenantContext,
    cred: Credential,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<UserPage>, AppError> {
    let (limit, cursor) = query.parse()?;
    let (_user, mut db) = cred.read(&ctx, Permission::UsersManage).await?;
    let rows = page(&mut db, cursor.as_ref(), limit + 1).await?;
    let (users, next_cursor) = paged(rows, limit, |u| Cursor {
        created_at: u.created_ms,
        id: u.id.clone(),
    });
    Ok(Json(UserPage { users, next_cursor }))
}

pub(crate) async fn invite(
    ctx: TenantContext,
    cred: Credential,
    ApiJson(input): ApiJson<Invite>,
) -> Result<Response, AppError> {
    let (manager, mut db) = cred.write(&ctx, Permission::UsersManage).await?;
    // The schema checked the address's form and the bounds.
    let email = input.email.trim().to_lowercase();
    let now = now_ms();
    let expires_at = input
        .ttl_secs
        .map(|t| now.saturating_add(i64::try_from(t).unwrap_or(i64::MAX).saturating_mul(1000)));
    let mut tx = db.begin().await?;
    let role = roles::permissions_of(&mut tx, &input.role)
        .await?
        .ok_or(AppError::UnknownRole)?;
    may_handle(&manager, &role)?;
    let taken = sqlx::query("SELECT 1 FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await?
        .is_some();
    if taken {
        return Err(AppError::Conflict(format!(
            "a user with email {email} exists"
        )));
    }
    let id = Uuid::now_v7().to_string();
    sqlx::query("INSERT INTO users (id, email, role, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(&email)
        .bind(&input.role)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    let minted = tenant_tokens::mint(&mut tx, &id, expires_at).await?;
    let entry = NewEntry::new(actor(&manager), "user.invited")
        .subject(&id, Some(&email))
        .detail(serde_json::json!({ "role": input.role, "token_id": minted.id }))
        .client(ctx.client_address());
    tenant_audit::append(&mut tx, &entry).await?;
    tx.commit().await?;
    let user = UserView {
        id: id.clone(),
        email,
        role: input.role,
        disabled: false,
        erased: false,
        created_at: rfc3339(now),
        created_ms: now,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/users/{id}"))],
        Json(Invited {
            user,
            token: minted.token,
            token_id: minted.id,
            expires_at: expires_at.map(rfc3339),
        }),
    )
        .into_response())
}

pub(crate) async fn patch(
    ctx: TenantContext,
    cred: Credential,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<UserPatch>,
) -> Result<Json<UserView>, AppError> {
    let (manager, mut db) = cred.write(&ctx, Permission::UsersManage).await?;
    let id = user_id(&id)?;
    let mut tx = db.begin().await?;
    lock_owners(&mut tx).await?;
    let before = fetch_user(&mut tx, &id).await?.ok_or(AppError::NotFound)?;
    let current = roles::permissions_of(&mut tx, &before.role)
        .await?
        .unwrap_or_default();
    may_handle(&manager, &current)?;
    if let Some(role) = input.role.as_deref().filter(|r| *r != before.role) {
        let granted = roles::permissions_of(&mut tx, role)
            .await?
            .ok_or(AppError::UnknownRole)?;
        may_handle(&manager, &granted)?;
        sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
            .bind(&id)
            .bind(role)
            .execute(&mut *tx)
            .await?;
        let entry = NewEntry::new(actor(&manager), "user.role_changed")
            .subject(&id, Some(&before.email))
            .detail(serde_json::json!({ "from": before.role, "to": role }))
            .client(ctx.client_address());
        tenant_audit::append(&mut tx, &entry).await?;
    }
    if let Some(disabled) = input.disabled.filter(|d| *d != before.disabled) {
        if !disabled && before.erased {
            return Err(AppError::Conflict(
                "an erased user cannot be enabled again".into(),
            ));
        }
        sqlx::query("UPDATE users SET disabled_at = $2 WHERE id = $1")
            .bind(&id)
            .bind(disabled.then(now_ms))
            .execute(&mut *tx)
            .await?;
        let action = if disabled {
            "user.disabled"
        } else {
            "user.enabled"
        };
        let entry = NewEntry::new(actor(&manager), action)
            .subject(&id, Some(&before.email))
            .client(ctx.client_address());
        tenant_audit::append(&mut tx, &entry).await?;
    }
    keeps_an_owner(&mut tx).await?;
    let after = fetch_user(&mut tx, &id).await?.ok_or(AppError::NotFound)?;
    tx.commit().await?;
    Ok(Json(after))
}

pub(crate) async fn remove(
    ctx: TenantContext,
    cred: Credential,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<StatusCode, AppError> {
    let (manager, mut db) = cred.write(&ctx, Permission::UsersManage).await?;
    let id = user_id(&id)?;
    let mut tx = db.begin().await?;
    lock_owners(&mut tx).await?;
    let user = fetch_user(&mut tx, &id).await?.ok_or(AppError::NotFound)?;
    let current = roles::permissions_of(&mut tx, &user.role)
        .await?
        .unwrap_or_default();
    may_handle(&manager, &current)?;
    // Explicitly, not by the foreign keys' cascade: erasure keeps the user row.
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    let revoked = sqlx::query("DELETE FROM user_tokens WHERE user_id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if query.erase == Some(true) {
        if user.erased {
            return Err(AppError::Conflict("the user is already erased".into()));
        }
        let pseudonym = format!("erased-{}@erased.invalid", Uuid::new_v4().simple());
        let now = now_ms();
        sqlx::query(
            "UPDATE users SET email = $2, erased_at = $3, disabled_at = COALESCE(disabled_at, $3)
             WHERE id = $1",
        )
        .bind(&id)
        .bind(&pseudonym)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let pseudonymised = tenant_audit::pseudonymise(&mut tx, &id, &pseudonym).await?;
        // Recorded after the pseudonymisation, naming only the pseudonym.
        let entry = NewEntry::new(actor(&manager), "user.erased")
            .subject(&id, Some(&pseudonym))
            .detail(serde_json::json!({
                "tokens_revoked": revoked,
                "audit_entries_pseudonymised": pseudonymised,
            }))
            .client(ctx.client_address());
        tenant_audit::append(&mut tx, &entry).await?;
    } else {
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        let entry = NewEntry::new(actor(&manager), "user.deleted")
            .subject(&id, Some(&user.email))
            .detail(serde_json::json!({ "role": user.role, "tokens_revoked": revoked }))
            .client(ctx.client_address());
        tenant_audit::append(&mut tx, &entry).await?;
    }
    keeps_an_owner(&mut tx).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

const TOKEN_COLUMNS: &str = "t.id, t.user_id, u.email, u.role, t.created_at, t.expires_at";

fn token_from_row(r: &AnyRow) -> Result<TokenView, sqlx::Error> {
    let created_ms: i64 = r.try_get("created_at")?;
    Ok(TokenView {
        id: r.try_get("id")?,
        user_id: r.try_get("user_id")?,
        email: r.try_get("email")?,
        role: r.try_get("role")?,
        created_at: rfc3339(created_ms),
        expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(rfc3339),
        created_ms,
    })
}

pub(crate) async fn list_tokens(
    ctx: TenantContext,
    cred: Credential,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TokenPage>, AppError> {
    let (limit, cursor) = query.parse()?;
    let (_user, mut db) = cred.read(&ctx, Permission::UsersManage).await?;
    let (at, id) = cursor
        .as_ref()
        .map_or((i64::MIN, ""), |c| (c.created_at, c.id.as_str()));
    let rows = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM user_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.created_at > $1 OR (t.created_at = $1 AND t.id > $2)
         ORDER BY t.created_at, t.id LIMIT $3"
    ))
    .bind(at)
    .bind(id)
    .bind(limit + 1)
    .fetch_all(&mut *db)
    .await?;
    let rows = rows
        .iter()
        .map(token_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let (tokens, next_cursor) = paged(rows, limit, |t| Cursor {
        created_at: t.created_ms,
        id: t.id.clone(),
    });
    Ok(Json(TokenPage {
        tokens,
        next_cursor,
    }))
}

pub(crate) async fn revoke_token(
    ctx: TenantContext,
    cred: Credential,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let (manager, mut db) = cred.write(&ctx, Permission::UsersManage).await?;
    let mut tx = db.begin().await?;
    let row = sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS}, t.token_hash FROM user_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.id = $1"
    ))
    .bind(&id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(AppError::NotFound)?;
    let token = token_from_row(&row)?;
    let hash: String = row.try_get("token_hash")?;
    let role = roles::permissions_of(&mut tx, &token.role)
        .await?
        .unwrap_or_default();
    may_handle(&manager, &role)?;
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM user_tokens WHERE token_hash = $1")
        .bind(&hash)
        .execute(&mut *tx)
        .await?;
    let entry = NewEntry::new(actor(&manager), "token.revoked")
        .subject(&token.user_id, Some(&token.email))
        .detail(serde_json::json!({ "token_id": token.id }))
        .client(ctx.client_address());
    tenant_audit::append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
