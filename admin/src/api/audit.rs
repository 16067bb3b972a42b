//! `GET /v1/audit?tenant=&limit=&before=`: the audit log, newest first.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::AuditEntry;

use crate::auth::ScopedReader;
use crate::error::AdminError;
use crate::extract::ApiQuery;
use crate::state::AdminState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Tenant id or slug.
    #[param(nullable = false)]
    tenant: Option<String>,
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    limit: Option<i64>,
    /// Only records older than this id (the `next_cursor` of the previous page).
    #[param(nullable = false)]
    cursor: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<AuditEntry>,
    next_cursor: Option<i64>,
}

const MAX_PAGE: i64 = 1000;

pub(crate) async fn list_handler(
    State(state): State<AdminState>,
    ScopedReader(actor): ScopedReader,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, AdminError> {
    // The schema bounds `limit`; the clamp only keeps the arithmetic below safe.
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    // One tenant when asked for (it must be within the token's reach); else all the token
    // reaches, which for a tenant-restricted token leaves out fleet records too.
    let one;
    let tenants = match &q.tenant {
        Some(t) => {
            let tenant = match state.catalog.tenant(t).await? {
                Some(tenant) => tenant,
                None if actor.reach.ids().is_some() => {
                    return Err(AdminError::OutsideScope("tenant"))
                }
                None => return Err(AdminError::NotFound("tenant")),
            };
            actor.reach.check(Some(tenant.id), "tenant")?;
            one = [tenant.id];
            Some(&one[..])
        }
        None => actor.reach.ids(),
    };
    let mut entries = state
        .catalog
        .audit_log(tenants, q.cursor, limit + 1)
        .await?;
    let next_cursor = if entries.len() as i64 > limit {
        entries.truncate(limit as usize);
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage {
        entries,
        next_cursor,
    }))
}
