//! `GET /v1/tenants/{id}/usage?from=&to=&step=`: a tenant's requests, errors, 429s and response
//! bytes over time, as the edges counted them (`tenant_usage`).

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use tenantgate_catalog::store::usage::{window, UsageSeries};

use crate::auth::TenantReader;
use crate::error::AdminError;
use crate::extract::ApiQuery;
use crate::state::AdminState;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
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

pub(crate) async fn handler(
    State(state): State<AdminState>,
    _: TenantReader,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<UsageSeries>, AdminError> {
    let window = window(
        q.from.as_deref(),
        q.to.as_deref(),
        q.step,
        tenantgate_contract::time::now_ms(),
    )
    .map_err(|(field, message)| AdminError::field(field, message))?;
    let tenant = super::tenants::find_any(&state, &id).await?;
    Ok(Json(state.catalog.usage_series(tenant.id, window).await?))
}
