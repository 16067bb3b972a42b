//! Admin tokens for the CLI: `tenantgate token create|list|revoke`. The same store functions
//! and audit records as the API (`GET /v1/tokens`, `DELETE /v1/tokens/{id}`), actor `cli`.

use std::sync::Arc;
use std::time::Duration;

use tenantgate_catalog::store::audit::{self, NewAudit};
use tenantgate_catalog::store::tokens;
use tenantgate_catalog::{Catalog, TokenScope};
use tenantgate_config::Config;
use uuid::Uuid;

pub use crate::api::admin_tokens::TokenView;
use crate::error::AdminError;
use crate::state::AdminState;
use crate::CLI_ACTOR;

/// Create an admin token with `scope` named `name`, expiring after `ttl` when given, and
/// restricted to the tenants `tenants` (ids or slugs) when that is not empty; returns the token,
/// which is stored only as its hash and cannot be shown again. The token and its audit record
/// (which names the token, never its value) commit together. An unknown tenant is an error
/// naming it, never a token that silently reaches less than asked.
pub async fn create(
    catalog: &Catalog,
    scope: TokenScope,
    name: &str,
    ttl: Option<Duration>,
    tenants: &[String],
) -> Result<String, AdminError> {
    let mut reach = Vec::with_capacity(tenants.len());
    for t in tenants {
        let tenant = catalog
            .tenant(t)
            .await?
            .ok_or_else(|| AdminError::BadRequest(format!("--tenant {t}: no such tenant")))?;
        if !reach.contains(&tenant.id) {
            reach.push(tenant.id);
        }
    }
    let reach = (!tenants.is_empty()).then_some(reach);
    let token = tenantgate_contract::crypto::random_token("tga_");
    let expires_at = ttl.map(|ttl| {
        tenantgate_contract::time::now_ms()
            .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
    });
    let mut tx = catalog.begin_write().await?;
    let id = tokens::insert_admin_token(&mut tx, name, &token, scope, expires_at, reach.as_deref())
        .await?;
    audit::append(
        &mut tx,
        &NewAudit {
            actor: CLI_ACTOR,
            action: "admin_token.create",
            target: &format!("admin_token:{name}:{id}"),
            tenant_id: None,
            before: None,
            after: Some(serde_json::json!({
                "name": name,
                "scope": scope.as_str(),
                "expires_at": expires_at.map(tenantgate_contract::time::rfc3339),
                "tenants": reach,
            })),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(token)
}

/// Every admin token, oldest first, revoked and expired ones included.
pub async fn list(catalog: &Catalog) -> Result<Vec<TokenView>, AdminError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = catalog.admin_tokens(after, 500).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        all.extend(page.iter().map(TokenView::from));
    }
    Ok(all)
}

/// Revoke token `id`; it answers 401 from its next request on.
pub async fn revoke(config: &Config, catalog: &Catalog, id: Uuid) -> Result<TokenView, AdminError> {
    let state = AdminState::new(Arc::new(config.clone()), catalog.clone());
    crate::api::admin_tokens::revoke(&state, CLI_ACTOR, id).await
}
