//! `GET /api/usage?from=&to=&step=` (permission `audit:read`): the tenant's own requests,
//! errors, 429s and response bytes over time, as the edges counted them in the catalog.

use axum::extract::State;
use axum::Json;
use tenantgate_catalog::store::usage::{UsageQuery, UsageSeries};

use crate::context::TenantContext;
use crate::error::AppError;
use crate::items::ApiQuery;
use crate::rbac::{Credential, Permission};
use crate::state::AppState;

pub(crate) async fn series(
    State(state): State<AppState>,
    ctx: TenantContext,
    cred: Credential,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<UsageSeries>, AppError> {
    let window = query
        .window(tenantgate_contract::time::now_ms())
        .map_err(|(field, message)| AppError::field(field, message))?;
    // The permission check opens the tenant's database: usage is the tenant's own record.
    let (_user, _db) = cred.read(&ctx, Permission::AuditRead).await?;
    let series = state
        .catalog()
        .usage_series(ctx.tenant_id(), window)
        .await
        .map_err(|e| AppError::Catalog(std::sync::Arc::new(e)))?;
    Ok(Json(series))
}
