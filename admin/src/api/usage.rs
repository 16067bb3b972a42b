//! `GET /v1/tenants/{id}/usage?from=&to=&step=`: a tenant's requests, errors, 429s and response
//! bytes over time, as the edges counted them (`tenant_usage`).

use axum::extract::{Path, State};
use axum::Json;
use tenantgate_catalog::store::usage::{UsageQuery, UsageSeries};

use crate::auth::TenantReader;
use crate::error::AdminError;
use crate::extract::ApiQuery;
use crate::state::AdminState;

pub(crate) async fn handler(
    State(state): State<AdminState>,
    _: TenantReader,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageSeries>, AdminError> {
    let window = q
        .window(tenantgate_contract::time::now_ms())
        .map_err(|(field, message)| AdminError::field(field, message))?;
    let tenant = super::tenants::find_any(&state, &id).await?;
    Ok(Json(state.catalog.usage_series(tenant.id, window).await?))
}
