//! `GET /v1/tokens` and `DELETE /v1/tokens/{id}`: list admin tokens (never their secrets) and
//! revoke one. A revoked token answers 401 from its next request on, in every admin process:
//! authentication checks `revoked_at` on each request.
//!
//! The bootstrap token comes from the configuration, has no row, and is changed there.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::tokens::{self, AdminToken};
use tenantgate_catalog::TokenScope;
use tenantgate_contract::time::rfc3339;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Reader, Writer};
use crate::error::AdminError;
use crate::extract::ApiQuery;
use crate::state::AdminState;
use crate::write::Write;

/// Largest page of `GET /v1/tokens`; a `limit` outside 1 to this is a 400 (`bad_request`), as
/// it was before the document was generated: the parameter's schema has these bounds, and the
/// handler turns the schema's refusal of `limit` alone into that 400.
pub(crate) const MAX_PAGE: i64 = 500;
const DEFAULT_PAGE: i64 = 100;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Page size, default 100 (outside 1 to 500: 400).
    #[param(minimum = 1, maximum = 500, nullable = false)]
    limit: Option<i64>,
    /// The `next_cursor` of the previous page (a token id).
    #[param(nullable = false)]
    cursor: Option<Uuid>,
}

/// An admin token as the API shows it. Times are RFC 3339.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AdminToken)]
pub struct TokenView {
    id: Uuid,
    name: String,
    scope: TokenScope,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    last_used_at: Option<String>,
    #[schema(format = DateTime)]
    expires_at: Option<String>,
    #[schema(format = DateTime)]
    revoked_at: Option<String>,
    /// The tenants (ids) a tenant-restricted token is limited to; `null` for a token that
    /// reaches the whole fleet.
    tenants: Option<Vec<Uuid>>,
}

impl From<&AdminToken> for TokenView {
    fn from(t: &AdminToken) -> TokenView {
        TokenView {
            id: t.id,
            name: t.name.clone(),
            scope: t.scope,
            created_at: rfc3339(t.created_at),
            last_used_at: t.last_used_at.map(rfc3339),
            expires_at: t.expires_at.map(rfc3339),
            revoked_at: t.revoked_at.map(rfc3339),
            tenants: t.tenants.clone(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(as = AdminTokenPage)]
pub(crate) struct TokenPage {
    tokens: Vec<TokenView>,
    next_cursor: Option<Uuid>,
}

pub(crate) async fn list_handler(
    State(state): State<AdminState>,
    _: Reader,
    query: Result<ApiQuery<ListQuery>, AdminError>,
) -> Result<Json<TokenPage>, AdminError> {
    let ApiQuery(q) = query.map_err(|e| match e {
        AdminError::Invalid(fields) if fields.iter().all(|f| f.field == "limit") => {
            AdminError::BadRequest(format!("limit must be between 1 and {MAX_PAGE}"))
        }
        e => e,
    })?;
    // The schema bounds `limit`; the clamp only keeps the arithmetic below safe.
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    let mut page = state.catalog.admin_tokens(q.cursor, limit + 1).await?;
    let next_cursor = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(|t| t.id)
    } else {
        None
    };
    Ok(Json(TokenPage {
        tokens: page.iter().map(TokenView::from).collect(),
        next_cursor,
    }))
}

pub(crate) async fn revoke_handler(
    State(state): State<AdminState>,
    Writer(actor): Writer,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, AdminError> {
    let id = Uuid::parse_str(&id).map_err(|_| AdminError::NotFound("token"))?;
    revoke(&state, &actor.name, id).await.map(Json)
}

/// Revoke admin token `id` as `actor`, audited in the same transaction. Revoking a revoked
/// token changes nothing and is not audited again.
pub(crate) async fn revoke(
    state: &AdminState,
    actor: &str,
    id: Uuid,
) -> Result<TokenView, AdminError> {
    let mut write = Write::begin(state).await?;
    let before = tokens::admin_token(write.conn(), id)
        .await?
        .ok_or(AdminError::NotFound("token"))?;
    let after = tokens::revoke_admin_token(write.conn(), id)
        .await?
        .ok_or(AdminError::NotFound("token"))?;
    if before.revoked_at.is_none() {
        write
            .audit(NewAudit {
                actor,
                action: "admin_token.revoke",
                target: &format!("admin_token:{}:{}", after.name, after.id),
                tenant_id: None,
                before: Some(json!({ "revoked_at": null })),
                after: Some(json!({ "revoked_at": after.revoked_at.map(rfc3339) })),
            })
            .await?;
    }
    write.commit().await?;
    Ok(TokenView::from(&after))
}
