//! `GET /v1/audit?tenant=&limit=&before=`: the catalog's audit log, newest first; and
//! `GET /v1/tenants/{id}/audit`: the audit trail inside a tenant's own database.

use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::AuditEntry;
use tenantgate_catalog::tenant_audit;
use tenantgate_catalog::tenant_db::TenantDbTarget;
use tenantgate_contract::TenantStatus;

use crate::auth::{ScopedReader, TenantReader};
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

/// Query of `GET /v1/tenants/{id}/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantAuditQuery {
    /// Page size, default 100.
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    limit: Option<i64>,
    /// Only records older than this id (the `next_cursor` of the previous page).
    #[param(minimum = 1, nullable = false)]
    cursor: Option<i64>,
}

/// A page of a tenant's own audit trail, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct TenantAuditPage {
    entries: Vec<tenant_audit::Entry>,
    next_cursor: Option<i64>,
}

/// `GET /v1/tenants/{id}/audit`: the trail the tenant's database keeps (its users' sign-ins and
/// changes, and operators' token mints), read from the tenant's primary like the token mint
/// writes it. Only tenants that have a database to read (active or suspended) have one.
pub(crate) async fn tenant_handler(
    State(state): State<AdminState>,
    _: TenantReader,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<TenantAuditQuery>,
) -> Result<Json<TenantAuditPage>, AdminError> {
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let tenant = super::tenants::find(&state, &id).await?;
    if !matches!(
        tenant.status,
        TenantStatus::Active | TenantStatus::Suspended
    ) {
        return Err(AdminError::Conflict(format!(
            "the tenant is {}; its audit trail can be read while it is active or suspended",
            tenant.status
        )));
    }
    let shard = state
        .catalog
        .shard(&tenant.shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let target = TenantDbTarget::resolve(&shard, &tenant, &state.config.security.credential_key)?;
    let pool = tenantgate_catalog::db::connect(&target.primary, 1).await?;
    let result = async {
        let mut conn = pool.acquire().await?;
        tenant_audit::list(&mut conn, q.cursor, limit).await
    }
    .await;
    pool.close().await;
    let (entries, next_cursor) = result?;
    Ok(Json(TenantAuditPage {
        entries,
        next_cursor,
    }))
}
