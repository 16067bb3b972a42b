//! Bearer-token authentication and scope checks.
//!
//! A token is either the configured bootstrap token (write scope, compared in constant time) or
//! one whose SHA-256 hash is in `admin_tokens`. Handlers take [`Reader`] or [`Writer`] as an
//! argument; the extractor answers 429 (over the admin rate limit of the client address or of
//! the token, see [`crate::limits`]), 401 (no, unknown, revoked or expired token) or 403 (read
//! token on a write route) before the handler runs.
//!
//! A token may also be restricted to some tenants (`token create --tenant SLUG`). Such a token
//! sees and changes only those tenants; everything else answers 403 `outside_scope`. Which
//! routes it may use is decided by the extractor a handler takes, so a handler cannot forget:
//!
//! - [`Reader`] / [`Writer`]: fleet-wide routes (shards, admin tokens, resolve, fleet
//!   migrations, creating or moving tenants). A restricted token is refused here.
//! - [`TenantReader`] / [`TenantWriter`]: routes whose `{id}` path parameter names a tenant. The
//!   extractor looks that tenant up for a restricted token and refuses it unless it is one of
//!   the token's; a tenant that does not exist is refused the same way, so a restricted token
//!   cannot probe which slugs exist. (Kubernetes RBAC answers 403 before looking, for the same
//!   reason.)
//! - [`ScopedReader`] / [`ScopedWriter`]: routes about objects that belong to a tenant without
//!   naming it in the path (lists, jobs, backups, the audit log). The handler filters or checks
//!   with [`Actor::reach`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use tenantgate_catalog::TokenScope;
use tenantgate_contract::crypto::{constant_time_eq, hash_token};
use uuid::Uuid;

use crate::error::AdminError;
use crate::limits::Key;
use crate::state::AdminState;

/// Who made a request, as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Actor {
    /// `token:<name>:<id>` or `bootstrap`.
    pub(crate) name: String,
    pub(crate) scope: TokenScope,
    /// Which tenants the token reaches.
    pub(crate) reach: Reach,
    /// Whose rate limit the request counts against.
    key: Key,
}

/// Which tenants a token reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Every tenant, and the fleet-wide routes.
    Fleet,
    /// Only these tenants; no fleet-wide route.
    Tenants(Vec<Uuid>),
}

impl Reach {
    /// The tenants a listing must be limited to, or `None` for all.
    pub(crate) fn ids(&self) -> Option<&[Uuid]> {
        match self {
            Reach::Fleet => None,
            Reach::Tenants(ids) => Some(ids),
        }
    }

    /// `Ok` when the token reaches the tenant `tenant` (an object with no tenant, `None`, is a
    /// fleet object); else 403 `outside_scope` naming `what` was refused.
    pub(crate) fn check(&self, tenant: Option<Uuid>, what: &'static str) -> Result<(), AdminError> {
        match (self, tenant) {
            (Reach::Fleet, _) => Ok(()),
            (Reach::Tenants(ids), Some(id)) if ids.contains(&id) => Ok(()),
            (Reach::Tenants(_), _) => Err(AdminError::OutsideScope(what)),
        }
    }
}

/// A request to a fleet-wide route with a token of at least read scope that reaches the fleet.
pub(crate) struct Reader(#[allow(dead_code)] pub(crate) Actor);

/// A request to a fleet-wide route with a write-scoped token that reaches the fleet.
pub(crate) struct Writer(pub(crate) Actor);

/// A request with a token of at least read scope that reaches the tenant named by the route's
/// `{id}`.
pub(crate) struct TenantReader(#[allow(dead_code)] pub(crate) Actor);

/// A request with a write-scoped token that reaches the tenant named by the route's `{id}`.
pub(crate) struct TenantWriter(pub(crate) Actor);

/// A request with a token of at least read scope, restricted or not: the handler limits what
/// it shows to [`Actor::reach`].
pub(crate) struct ScopedReader(pub(crate) Actor);

/// A request with a write-scoped token, restricted or not: the handler checks the object's
/// tenant against [`Actor::reach`].
pub(crate) struct ScopedWriter(pub(crate) Actor);

/// What a route addresses, which decides what a tenant-restricted token may do there.
#[derive(Clone, Copy)]
enum Route {
    Fleet,
    PathTenant,
    Scoped,
}

/// Who holds `token`, or `None` when it is not a valid admin token.
pub(crate) async fn authenticate(
    state: &AdminState,
    token: &str,
) -> Result<Option<Actor>, AdminError> {
    if let Some(bootstrap) = &state.config.admin.bootstrap_token {
        if constant_time_eq(bootstrap.as_bytes(), token.as_bytes()) {
            return Ok(Some(Actor {
                name: "bootstrap".into(),
                scope: TokenScope::Write,
                reach: Reach::Fleet,
                key: Key::Bootstrap,
            }));
        }
    }
    // The lookup is by hash: the database never sees the token, and timing reveals nothing
    // about it beyond its hash's index position.
    let Some(info) = state.catalog.admin_token_info(&hash_token(token)).await? else {
        return Ok(None);
    };
    state.limits.touch(&state.catalog, info.id);
    Ok(Some(Actor {
        name: format!("token:{}:{}", info.name, info.id),
        scope: info.scope,
        reach: info.tenants.map_or(Reach::Fleet, Reach::Tenants),
        key: Key::Token(info.id),
    }))
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn require(
    parts: &mut Parts,
    state: &AdminState,
    scope: TokenScope,
    route: Route,
) -> Result<Actor, AdminError> {
    // In-process callers (tests driving the router) have no address; served requests do.
    if let Some(ConnectInfo(addr)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        state.limits.check(Key::Address(addr.ip()))?;
    }
    let token = bearer(parts).ok_or(AdminError::Unauthorized)?;
    let actor = authenticate(state, token)
        .await?
        .ok_or(AdminError::Unauthorized)?;
    state.limits.check(actor.key.clone())?;
    if !actor.scope.allows(scope) {
        return Err(AdminError::Forbidden("write (read-only token)"));
    }
    if actor.reach == Reach::Fleet {
        return Ok(actor);
    }
    match route {
        Route::Fleet => return Err(AdminError::OutsideScope("fleet-wide route")),
        Route::Scoped => {}
        Route::PathTenant => {
            let params = RawPathParams::from_request_parts(parts, state)
                .await
                .map_err(|_| AdminError::OutsideScope("tenant"))?;
            let id_or_slug = params
                .iter()
                .find_map(|(name, value)| (name == "id").then_some(value))
                .ok_or(AdminError::OutsideScope("tenant"))?;
            // Deleted tenants included: a restricted token may still delete (purge) its own.
            let tenant = state.catalog.tenant(id_or_slug).await?;
            actor.reach.check(tenant.map(|t| t.id), "tenant")?;
        }
    }
    Ok(actor)
}

/// One extractor per (scope, route) pair; each is [`require`] with its arguments.
macro_rules! extractor {
    ($name:ident, $scope:expr, $route:expr) => {
        impl FromRequestParts<AdminState> for $name {
            type Rejection = AdminError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AdminState,
            ) -> Result<Self, AdminError> {
                require(parts, state, $scope, $route).await.map($name)
            }
        }
    };
}

extractor!(Reader, TokenScope::Read, Route::Fleet);
extractor!(Writer, TokenScope::Write, Route::Fleet);
extractor!(TenantReader, TokenScope::Read, Route::PathTenant);
extractor!(TenantWriter, TokenScope::Write, Route::PathTenant);
extractor!(ScopedReader, TokenScope::Read, Route::Scoped);
extractor!(ScopedWriter, TokenScope::Write, Route::Scoped);
