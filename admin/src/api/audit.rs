//! `GET /v1/audit?tenant=&limit=&before=`: the audit log, newest first.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::AuditEntry;

use crate::auth::Reader;
use crate::error::AdminError;
use crate::extract::ApiQuery;
use crate::state::AdminState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Tenant id or slug.
    tenant: Option<String>,
    limit: Option<i64>,
    /// Only records older than this id (the `next_cursor` of the previous page).
    cursor: Option<i64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AuditPage {
    entries: Vec<AuditEntry>,
    next_cursor: Option<i64>,
}

const MAX_PAGE: i64 = 1000;

pub(crate) async fn list_handler(
    State(state): State<AdminState>,
    _: Reader,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, AdminError> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AdminError::field(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    let tenant_id = match &q.tenant {
        Some(t) => Some(super::tenants::find(&state, t).await?.id),
        None => None,
    };
    let mut entries = state
        .catalog
        .audit_log(tenant_id, q.cursor, limit + 1)
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
