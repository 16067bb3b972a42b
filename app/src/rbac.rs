//! Tenant users and permissions, stored in each tenant's own database.
//!
//! A user has one role (`owner`, `member`, `viewer`, or any row of the tenant's `roles` table);
//! a role has a JSON document of permissions (`{"items": ["read","write"], "export": ["run"]}`,
//! see [`Permissions`]). A disabled user's tokens and sessions are refused like unknown ones.
//! Users present a bearer token (`Authorization: Bearer`)
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

/// A permission a role may grant: an action on a resource (DESIGN §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// `items:read`: list and read items, see the dashboard.
    ItemsRead,
    /// `items:write`: create, change and delete items.
    ItemsWrite,
    /// `users:manage`: manage the tenant's users, tokens and roles.
    UsersManage,
    /// `export:run`: download all of the tenant's data.
    Export,
    /// `audit:read`: read the tenant's audit trail.
    AuditRead,
}

impl Permission {
    pub const ALL: [Permission; 5] = [
        Permission::ItemsRead,
        Permission::ItemsWrite,
        Permission::UsersManage,
        Permission::Export,
        Permission::AuditRead,
    ];

    /// The resource and the action, as a role's permission document names them.
    pub fn parts(self) -> (&'static str, &'static str) {
        match self {
            Permission::ItemsRead => ("items", "read"),
            Permission::ItemsWrite => ("items", "write"),
            Permission::UsersManage => ("users", "manage"),
            Permission::Export => ("export", "run"),
            Permission::AuditRead => ("audit", "read"),
        }
    }

    /// `resource:action`, as the OpenAPI documents' `x-scope` and error messages name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ItemsRead => "items:read",
            Permission::ItemsWrite => "items:write",
            Permission::UsersManage => "users:manage",
            Permission::Export => "export:run",
            Permission::AuditRead => "audit:read",
        }
    }

    /// The permission named `resource:action` (or `export`, the name before documents), if it
    /// is one of ours.
    pub fn parse(name: &str) -> Option<Permission> {
        if name == "export" {
            return Some(Permission::Export);
        }
        Permission::ALL.into_iter().find(|p| p.as_str() == name)
    }

    /// The permission of `action` on `resource`, if there is one.
    pub fn of(resource: &str, action: &str) -> Option<Permission> {
        Permission::ALL
            .into_iter()
            .find(|p| p.parts() == (resource, action))
    }
}

/// The permissions of a role: stored as a JSON document `{"resource": ["action", ...]}`
/// (`roles.permissions`), shown the same way by `/api/roles`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions(std::collections::BTreeSet<Permission>);

impl Permissions {
    /// The permissions of a stored document. Lists of names (`["items:read","export"]`, the
    /// schema before tenant migration 0005) are read too; unknown names grant nothing.
    pub fn from_stored(text: &str) -> Permissions {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(names)) => Permissions(
                names
                    .iter()
                    .filter_map(|n| Permission::parse(n.as_str()?))
                    .collect(),
            ),
            Ok(serde_json::Value::Object(doc)) => Permissions(
                doc.iter()
                    .flat_map(|(resource, actions)| {
                        actions
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|a| Permission::of(resource, a.as_str()?))
                    })
                    .collect(),
            ),
            _ => Permissions::default(),
        }
    }

    /// The permissions of a document a client sent (its schema already refused unknown
    /// resources and actions).
    pub fn from_document(doc: &PermissionDocument) -> Permissions {
        fn named<'a, A: Copy + Into<&'static str>>(
            resource: &'static str,
            actions: &'a Option<Vec<A>>,
        ) -> impl Iterator<Item = Permission> + 'a {
            actions
                .iter()
                .flatten()
                .filter_map(move |a| Permission::of(resource, (*a).into()))
        }
        named("items", &doc.items)
            .chain(named("users", &doc.users))
            .chain(named("export", &doc.export))
            .chain(named("audit", &doc.audit))
            .collect()
    }

    /// The document: `{"resource": ["action", ...]}`, resources and actions in a fixed order.
    pub fn document(&self) -> serde_json::Value {
        let mut doc = serde_json::Map::new();
        for p in &self.0 {
            let (resource, action) = p.parts();
            doc.entry(resource)
                .or_insert_with(|| serde_json::Value::Array(Vec::new()))
                .as_array_mut()
                .expect("an array")
                .push(action.into());
        }
        serde_json::Value::Object(doc)
    }

    /// Whether `permission` is granted.
    pub fn contains(&self, permission: Permission) -> bool {
        self.0.contains(&permission)
    }

    /// Whether every permission of `other` is granted here too.
    pub fn covers(&self, other: &Permissions) -> bool {
        other.0.is_subset(&self.0)
    }

    /// The permissions, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = Permission> + '_ {
        self.0.iter().copied()
    }
}

/// A role's permissions as clients send them: for each resource, the actions granted on it
/// (DESIGN §9). Anything else is refused by the schema (422).
#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PermissionDocument {
    #[schema(nullable = false)]
    pub items: Option<Vec<ItemsAction>>,
    #[schema(nullable = false)]
    pub users: Option<Vec<UsersAction>>,
    #[schema(nullable = false)]
    pub export: Option<Vec<ExportAction>>,
    #[schema(nullable = false)]
    pub audit: Option<Vec<AuditAction>>,
}

/// Declares a resource's actions: the enum, its names, and their conversion to text.
macro_rules! actions {
    ($(#[$doc:meta])* $name:ident { $($variant:ident = $text:literal),+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),+ }

        impl From<$name> for &'static str {
            fn from(a: $name) -> &'static str {
                match a { $($name::$variant => $text),+ }
            }
        }
    };
}

actions!(
    /// Actions on items.
    ItemsAction { Read = "read", Write = "write" }
);
actions!(
    /// Actions on users, their tokens and roles.
    UsersAction { Manage = "manage" }
);
actions!(
    /// Actions on the export.
    ExportAction { Run = "run" }
);
actions!(
    /// Actions on the audit trail.
    AuditAction { Read = "read" }
);

impl FromIterator<Permission> for Permissions {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        Permissions(iter.into_iter().collect())
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
    pub permissions: Permissions,
}

impl User {
    /// Whether the user's role grants `permission`.
    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(permission)
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
                 WHERE t.token_hash = $1 AND u.disabled_at IS NULL",
                token,
            ),
            Secret::Session(id) => (
                "SELECT u.id, u.email, u.role, r.permissions, s.expires_at
                 FROM sessions s
                 JOIN users u ON u.id = s.user_id
                 JOIN roles r ON r.name = u.role
                 WHERE s.id_hash = $1 AND u.disabled_at IS NULL",
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
        Ok(User {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            role: row.try_get("role")?,
            permissions: Permissions::from_stored(&row.try_get::<String, _>("permissions")?),
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
        assert_eq!(Permission::parse("export"), Some(Permission::Export));
    }

    #[test]
    fn documents_round_trip_and_old_lists_still_read() {
        let doc = serde_json::json!({"items": ["read", "write"], "export": ["run"]});
        let typed: PermissionDocument = serde_json::from_value(doc.clone()).unwrap();
        let p = Permissions::from_document(&typed);
        assert_eq!(p.document(), doc);
        assert_eq!(Permissions::from_stored(&doc.to_string()), p);
        let old = Permissions::from_stored(r#"["items:read","items:write","export","bogus"]"#);
        assert_eq!(old, p);
        for bad in [
            serde_json::json!({"items": ["delete"]}),
            serde_json::json!({"billing": ["read"]}),
        ] {
            assert!(serde_json::from_value::<PermissionDocument>(bad).is_err());
        }
    }
}
