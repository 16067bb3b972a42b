//! `GET /api/usage?from=&to=&step=` (permission `audit:read`): the tenant's own requests,
//! errors, 429s and response bytes over time, as the edges counted them in the catalog.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use tenantgate_catalog::store::usage::{window, UsageSeries};

use crate::context::TenantContext;
use crate::error::AppError;
use crate::items::ApiQuery;
use crate::rbac::{Credential, Permission};
use crate::state::AppState;

/// Query of `GET /api/usage`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    /// Start, inclusive; default 24 hours before `to`. A range of more than 2,000 steps or
    /// 400 days is cut to its most recent part; `from` at or after `to` gives no points.
    #[param(value_type = String, format = DateTime, nullable = false)]
    from: Option<String>,
    /// End, exclusive; default now.
    #[param(value_type = String, format = DateTime, nullable = false)]
    to: Option<String>,
    /// Seconds per point, a whole number of minutes; default 3600.
    #[param(minimum = 60, maximum = 2_592_000, multiple_of = 60, nullable = false)]
    step: Option<i64>,
}

pub(crate) async fn series(
    State(state): State<AppState>,
    ctx: TenantContext,
    cred: Credential,
    ApiQuery(query): ApiQuery<UsageQuery>,
) -> Result<Json<UsageSeries>, AppError> {
    let window = window(
        query.from.as_deref(),
        query.to.as_deref(),
        query.step,
        tenantgate_contract::time::now_ms(),
    )
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
