//! Tenant users and permissions, stored in each tenant's own database.
//!
//! A user has one role (`owner`, `member`, `viewer`, or any row of the tenant's `roles` table);
//! a role has a JSON list of permissions. Users present a bearer token (`Authorization: Bearer`)
//! or, in browsers, the session cookie set by `POST /login` (a session id, see
//! [`crate::sessions`]); tokens and session ids are stored as SHA-256 hashes (`user_tokens`,
//! `sessions`) with an expiry.
//!
//! In a handler, take a [`Credential`] argument (extracting it touches no database: no token
//! means 401 at once) and open the database through it:
//!
//! ```no_run
//! use tenantgate_app::{AppError, Credential, Permission, TenantContext};
//!
//! async fn rename_all(ctx: TenantContext, cred: Credential) -> Result<(), AppError> {
//!     let (user, mut db) = cred.write(&ctx, Permission::ItemsWrite).await?; // 401 / 403 here
//!     sqlx::query("UPDATE items SET created_by = $1")
//!         .bind(&user.id)
//!         .execute(&mut *db)
//!         .await?;
//!     Ok(())
//! }
//! ```

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use sqlx::Row;
use tenantgate_contract::crypto::hash_token;

use crate::context::TenantContext;
use crate::cookies;
use crate::error::AppError;
use crate::pools::{DbRole, TenantDb};

/// Name of the HttpOnly session cookie set by `POST /login`.
pub const SESSION_COOKIE: &str = "tg_session";

/// A permission a role may grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// `items:read`: list and read items, see the dashboard.
    ItemsRead,
    /// `items:write`: create, change and delete items.
    ItemsWrite,
    /// `export`: download all of the tenant's data.
    Export,
    /// `users:manage`: manage the tenant's users.
    UsersManage,
}

impl Permission {
    pub const ALL: [Permission; 4] = [
        Permission::ItemsRead,
        Permission::ItemsWrite,
        Permission::Export,
        Permission::UsersManage,
    ];

    /// The name stored in role permission lists.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ItemsRead => "items:read",
            Permission::ItemsWrite => "items:write",
            Permission::Export => "export",
            Permission::UsersManage => "users:manage",
        }
    }

    /// The permission named `name`, if it is one of ours.
    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signed-in tenant user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub role: String,
    pub permissions: Vec<Permission>,
}

impl User {
    /// Whether the user's role grants `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }

    /// `Ok` when the user may, else [`AppError::Forbidden`] (403).
    pub fn require(&self, permission: Permission) -> Result<(), AppError> {
        if self.can(permission) {
            Ok(())
        } else {
            Err(AppError::Forbidden(permission))
        }
    }
}

/// The credential a request presents: `Authorization: Bearer <token>`, else the session
/// cookie.
///
/// An axum extractor; a request with neither is refused with 401 `unauthenticated` before any
/// database is opened. The secret itself is never logged (`Debug` hides it).
#[derive(Clone)]
pub struct Credential {
    secret: Secret,
}

#[derive(Clone)]
enum Secret {
    /// A user token minted by the admin API.
    Bearer(String),
    /// The id of a session opened by `POST /login`.
    Session(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(***)")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Credential {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        Credential::from_headers(&parts.headers).ok_or(AppError::Unauthenticated)
    }
}

impl Credential {
    /// The bearer token, else the session cookie, of a request; `None` when it has neither.
    pub fn from_headers(headers: &HeaderMap) -> Option<Credential> {
        let bearer = headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty());
        if let Some(token) = bearer {
            return Some(Credential::from_token(token));
        }
        cookies::read(headers, SESSION_COOKIE)
            .filter(|id| !id.is_empty())
            .map(|id| Credential {
                secret: Secret::Session(id.to_string()),
            })
    }

    /// A credential from a raw token (the login form).
    pub fn from_token(token: &str) -> Credential {
        Credential {
            secret: Secret::Bearer(token.trim().to_string()),
        }
    }

    /// The user of this token or session in `db`. 401 when it is unknown or expired.
    pub async fn authenticate(&self, db: &mut TenantDb) -> Result<User, AppError> {
        // Both yield the user, the role's permissions and the expiry of the credential.
        let (sql, secret) = match &self.secret {
            Secret::Bearer(token) => (
                "SELECT u.id, u.email, u.role, r.permissions, t.expires_at
                 FROM user_tokens t
                 JOIN users u ON u.id = t.user_id
                 JOIN roles r ON r.name = u.role
                 WHERE t.token_hash = $1",
                token,
            ),
            Secret::Session(id) => (
                "SELECT u.id, u.email, u.role, r.permissions, s.expires_at
                 FROM sessions s
                 JOIN users u ON u.id = s.user_id
                 JOIN roles r ON r.name = u.role
                 WHERE s.id_hash = $1",
                id,
            ),
        };
        let row = sqlx::query(sql)
            .bind(hash_token(secret))
            .fetch_optional(&mut **db)
            .await?;
        let Some(row) = row else {
            return Err(AppError::Unauthenticated);
        };
        let expires_at: Option<i64> = row.try_get("expires_at")?;
        if expires_at.is_some_and(|at| at <= tenantgate_contract::time::now_ms()) {
            return Err(AppError::Unauthenticated);
        }
        let permissions: Vec<String> =
            serde_json::from_str(&row.try_get::<String, _>("permissions")?).unwrap_or_default();
        Ok(User {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            role: row.try_get("role")?,
            permissions: permissions
                .iter()
                .filter_map(|p| Permission::parse(p))
                .collect(),
        })
    }

    /// Authenticate on the primary and require `permission`: the user and the primary
    /// connection, for handlers that write. A bad credential counts against the tenant's and
    /// the client's failed-login budgets; when they are spent this is 429 before any database
    /// is opened ([`crate::login`]).
    pub async fn write(
        &self,
        ctx: &TenantContext,
        permission: Permission,
    ) -> Result<(User, TenantDb), AppError> {
        let attempt = ctx.login_attempt()?;
        let mut db = ctx.db().await?;
        let user = attempt.settle(self.authenticate(&mut db).await)?;
        user.require(permission)?;
        Ok((user, db))
    }

    /// Authenticate and require `permission` on a read connection (a replica when there is
    /// one). A token not yet replicated — or a replica that cannot answer yet, like a tenant
    /// database whose schema is still replicating — is looked up again on the primary, so a
    /// freshly minted token works at once.
    pub async fn read(
        &self,
        ctx: &TenantContext,
        permission: Permission,
    ) -> Result<(User, TenantDb), AppError> {
        let attempt = ctx.login_attempt()?;
        let mut db = ctx.read_db().await?;
        let user = match self.authenticate(&mut db).await {
            Err(AppError::Unauthenticated | AppError::Database(_))
                if db.role() == DbRole::Replica =>
            {
                drop(db);
                db = ctx.db().await?;
                self.authenticate(&mut db).await
            }
            other => other,
        };
        let user = attempt.settle(user)?;
        user.require(permission)?;
        Ok((user, db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_names_round_trip() {
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
        }
        assert_eq!(Permission::parse("items:delete"), None);
    }
}
