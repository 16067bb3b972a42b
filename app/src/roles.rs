//! The tenant's roles (permission `users:manage`, DESIGN §9).
//!
//! ```text
//! GET    /api/roles                          {"roles":[{name, permissions, builtin}]}
//! POST   /api/roles {name, permissions}      201 role
//! PATCH  /api/roles/{name} {permissions}     role
//! DELETE /api/roles/{name}                   204
//! ```
//!
//! `permissions` is a document `{"resource": ["action", ...]}` ([`PermissionDocument`]); its
//! schema refuses unknown resources and actions (422). The built-in roles `owner`, `member` and
//! `viewer` can be neither changed nor removed (409): the owner must keep every permission so
//! that a tenant can always manage itself, and member and viewer mean the same in every tenant.
//! A role still given to a user cannot be removed (409). As with users, a manager can create or
//! change only roles whose permissions are all their own (403).

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Connection, Row};
use tenantgate_catalog::tenant_audit::{self, NewEntry};

use crate::context::TenantContext;
use crate::error::AppError;
use crate::items::ApiJson;
use crate::rbac::{Credential, Permission, PermissionDocument, Permissions};
use crate::users::{actor, may_handle};

/// The roles of every tenant, fixed.
pub const BUILTIN: [&str; 3] = ["owner", "member", "viewer"];

/// A role as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RoleView {
    pub name: String,
    #[schema(value_type = PermissionDocument)]
    pub permissions: serde_json::Value,
    /// `owner`, `member` and `viewer`: cannot be changed or removed.
    pub builtin: bool,
}

/// Every role of the tenant.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RoleList {
    roles: Vec<RoleView>,
}

/// Body of `POST /api/roles`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewRole {
    /// Lower-case letters, digits, `-` and `_`, starting with a letter.
    #[schema(pattern = "^[a-z][a-z0-9_-]{0,63}$", max_length = 64)]
    name: String,
    permissions: PermissionDocument,
}

/// Body of `PATCH /api/roles/{name}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RolePatch {
    /// The role's permissions, replacing the old ones.
    permissions: PermissionDocument,
}

fn view(name: String, permissions: &Permissions) -> RoleView {
    RoleView {
        builtin: BUILTIN.contains(&name.as_str()),
        name,
        permissions: permissions.document(),
    }
}

/// The permissions of role `name`, `None` when the tenant has no such role.
pub async fn permissions_of(
    db: &mut AnyConnection,
    name: &str,
) -> Result<Option<Permissions>, sqlx::Error> {
    let text: Option<String> = sqlx::query_scalar("SELECT permissions FROM roles WHERE name = $1")
        .bind(name)
        .fetch_optional(&mut *db)
        .await?;
    Ok(text.as_deref().map(Permissions::from_stored))
}

/// Every role, by name (the list and the export).
pub async fn all(db: &mut AnyConnection) -> Result<Vec<RoleView>, sqlx::Error> {
    let rows = sqlx::query("SELECT name, permissions FROM roles ORDER BY name")
        .fetch_all(&mut *db)
        .await?;
    rows.iter()
        .map(|r| {
            let text: String = r.try_get("permissions")?;
            Ok(view(r.try_get("name")?, &Permissions::from_stored(&text)))
        })
        .collect()
}

fn not_builtin(name: &str) -> Result<(), AppError> {
    if BUILTIN.contains(&name) {
        return Err(AppError::Conflict(format!(
            "{name} is a built-in role and cannot be changed or removed"
        )));
    }
    Ok(())
}

pub(crate) async fn list(ctx: TenantContext, cred: Credential) -> Result<Json<RoleList>, AppError> {
    let (_user, mut db) = cred.read(&ctx, Permission::UsersManage).await?;
    Ok(Json(RoleList {
        roles: all(&mut db).await?,
    }))
}

pub(crate) async fn create(
    ctx: TenantContext,
    cred: Credential,
    ApiJson(input): ApiJson<NewRole>,
) -> Result<Response, AppError> {
    let (manager, mut db) = cred.write(&ctx, Permission::UsersManage).await?;
    let permissions = Permissions::from_document(&input.permissions);
    may_handle(&manager, &permissions)?;
    let mut tx = db.begin().await?;
    if permissions_of(&mut tx, &input.name).await?.is_some() {
        return Err(AppError::Conflict(format!(
            "a role named {} exists",
            input.name
        )));
    }
    let document = permissions.document();
    sqlx::query("INSERT INTO roles (name, permissions) VALUES ($1, $2)")
        .bind(&input.name)
        .bind(document.to_string())
        .execute(&mut *tx)
        .await?;
    let entry = NewEntry::new(actor(&manager), "role.created")
        .subject(&input.name, None)
        .detail(serde_json::json!({ "permissions": document }))
        .client(ctx.client_address());
    tenant_audit::append(&mut tx, &entry).await?;
    tx.commit().await?;
    let role = view(input.name, &permissions);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/roles/{}", role.name))],
        Json(role),
    )
        .into_response())
}

pub(crate) async fn patch(
    ctx: TenantContext,
    cred: Credential,
    Path(name): Path<String>,
    ApiJson(input): ApiJson<RolePatch>,
) -> Result<Json<RoleView>, AppError> {
    let (manager, mut db) = cred.write(&ctx, Permission::UsersManage).await?;
    let mut tx = db.begin().await?;
    let before = permissions_of(&mut tx, &name)
        .await?
        .ok_or(AppError::NotFound)?;
    not_builtin(&name)?;
    let after = Permissions::from_document(&input.permissions);
    // Both: no taking away what one could not give, no giving what one lacks.
    may_handle(&manager, &before)?;
    may_handle(&manager, &after)?;
    sqlx::query("UPDATE roles SET permissions = $2 WHERE name = $1")
        .bind(&name)
        .bind(after.document().to_string())
        .execute(&mut *tx)
        .await?;
    let entry = NewEntry::new(actor(&manager), "role.updated")
        .subject(&name, None)
        .detail(serde_json::json!({ "from": before.document(), "to": after.document() }))
        .client(ctx.client_address());
    tenant_audit::append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(Json(view(name, &after)))
}

pub(crate) async fn remove(
    ctx: TenantContext,
    cred: Credential,
    Path(name): Path<String>,
) -> Result<StatusCode, AppError> {
    let (manager, mut db) = cred.write(&ctx, Permission::UsersManage).await?;
    let mut tx = db.begin().await?;
    let before = permissions_of(&mut tx, &name)
        .await?
        .ok_or(AppError::NotFound)?;
    not_builtin(&name)?;
    may_handle(&manager, &before)?;
    let holders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE role = $1")
        .bind(&name)
        .fetch_one(&mut *tx)
        .await?;
    if holders > 0 {
        return Err(AppError::Conflict(format!(
            "{holders} user(s) have role {name}; give them another role first"
        )));
    }
    sqlx::query("DELETE FROM roles WHERE name = $1")
        .bind(&name)
        .execute(&mut *tx)
        .await?;
    let entry = NewEntry::new(actor(&manager), "role.deleted")
        .subject(&name, None)
        .detail(serde_json::json!({ "permissions": before.document() }))
        .client(ctx.client_address());
    tenant_audit::append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
