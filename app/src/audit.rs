//! `GET /api/audit?limit=&cursor=` (permission `audit:read`): the tenant's own audit trail,
//! newest first, as [`tenantgate_catalog::tenant_audit`] keeps it, and the app's records of
//! sign-ins.

use axum::Json;
use serde::{Deserialize, Serialize};
use tenantgate_catalog::tenant_audit::{self, Actor, Entry, NewEntry};

use crate::context::TenantContext;
use crate::error::AppError;
use crate::items::ApiQuery;
use crate::pools::TenantDb;
use crate::rbac::{Credential, Permission, User};

/// Query of `GET /api/audit`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 100, nullable = false)]
    limit: Option<i64>,
    /// Only records older than this one (the `next_cursor` of the previous page).
    #[param(minimum = 1, nullable = false)]
    cursor: Option<i64>,
}

/// A page of the trail, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<Entry>,
    next_cursor: Option<i64>,
}

pub(crate) async fn list(
    ctx: TenantContext,
    cred: Credential,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, AppError> {
    // The schema bounds `limit`; the clamp only keeps the arithmetic safe.
    let limit = query.limit.unwrap_or(50).clamp(1, 100);
    let (_user, mut db) = cred.read(&ctx, Permission::AuditRead).await?;
    let (entries, next_cursor) = tenant_audit::list(&mut db, query.cursor, limit).await?;
    Ok(Json(AuditPage {
        entries,
        next_cursor,
    }))
}

/// Record a sign-in at `POST /login`: by `user` when it succeeded, anonymous (only the
/// client's address) when the token was unknown.
pub(crate) async fn record_login(
    db: &mut TenantDb,
    ctx: &TenantContext,
    user: Option<&User>,
) -> Result<(), AppError> {
    let entry = match user {
        Some(u) => NewEntry::new(crate::users::actor(u), "login.succeeded")
            .detail(serde_json::json!({ "role": u.role })),
        None => NewEntry::new(Actor::Anonymous, "login.failed"),
    };
    tenant_audit::append(db, &entry.client(ctx.client_address())).await?;
    Ok(())
}
