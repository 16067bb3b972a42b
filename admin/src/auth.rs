//! Bearer-token authentication and scope checks.
//!
//! A token is either the configured bootstrap token (write scope, compared in constant time) or
//! one whose SHA-256 hash is in `admin_tokens`. Handlers take [`Reader`] or [`Writer`] as an
//! argument; the extractor answers 429 (over the admin rate limit of the client address or of
//! the token, see [`crate::limits`]), 401 (no, unknown, revoked or expired token) or 403 (read
//! token on a write route) before the handler runs.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use tenantgate_catalog::TokenScope;
use tenantgate_contract::crypto::{constant_time_eq, hash_token};

use crate::error::AdminError;
use crate::limits::Key;
use crate::state::AdminState;

/// Who made a request, as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Actor {
    /// `token:<name>:<id>` or `bootstrap`.
    pub(crate) name: String,
    pub(crate) scope: TokenScope,
    /// Whose rate limit the request counts against.
    key: Key,
}

/// A request with a token of at least read scope.
pub(crate) struct Reader(#[allow(dead_code)] pub(crate) Actor);

/// A request with a write-scoped token.
pub(crate) struct Writer(pub(crate) Actor);

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
    parts: &Parts,
    state: &AdminState,
    scope: TokenScope,
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
    Ok(actor)
}

impl FromRequestParts<AdminState> for Reader {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, AdminError> {
        require(parts, state, TokenScope::Read).await.map(Reader)
    }
}

impl FromRequestParts<AdminState> for Writer {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, AdminError> {
        require(parts, state, TokenScope::Write).await.map(Writer)
    }
}
