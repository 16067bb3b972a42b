//! `POST /v1/migrations`: start a fleet migration of tenant databases as a job; its progress is
//! read from `GET /v1/jobs/{id}`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::jobs::NewJob;
use uuid::Uuid;

use crate::auth::Writer;
use crate::error::AdminError;
use crate::extract::ApiJson;
use crate::jobs::{kind, migrate::MigratePayload};
use crate::state::AdminState;
use crate::write::Write;

/// Tenant databases migrated at once per database server unless the request says otherwise.
const DEFAULT_CONCURRENCY: usize = 8;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartMigration {
    /// Slugs or ids; absent or empty means every tenant.
    #[serde(default)]
    #[schema(max_items = 10_000)]
    tenants: Vec<String>,
    /// Databases at once per database server, 1-64, default 8.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64)]
    concurrency: Option<usize>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MigrationJob {
    job_id: Uuid,
}

pub(crate) async fn handler(
    State(state): State<AdminState>,
    Writer(actor): Writer,
    ApiJson(req): ApiJson<StartMigration>,
) -> Result<(StatusCode, Json<MigrationJob>), AdminError> {
    let concurrency = req.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    let mut slugs = Vec::with_capacity(req.tenants.len());
    for t in &req.tenants {
        match state.catalog.tenant(t).await? {
            Some(tenant) => slugs.push(tenant.slug),
            None => return Err(AdminError::NotFound("tenant")),
        }
    }

    let payload = MigratePayload {
        tenants: slugs,
        concurrency,
    };
    let job_id = Uuid::now_v7();
    let mut w = Write::begin(&state).await?;
    w.job(&NewJob {
        id: job_id,
        kind: kind::MIGRATE,
        tenant_id: None,
        payload: serde_json::to_value(&payload).expect("payload serialises"),
        // A failed run is final and visible; re-running it is POST /v1/jobs/{id}/retry.
        max_attempts: 1,
        run_at: tenantgate_contract::time::now_ms(),
    })
    .await?;
    w.audit(NewAudit {
        actor: &actor.name,
        action: "migrations.start",
        target: &format!("job:{job_id}"),
        tenant_id: None,
        before: None,
        after: Some(serde_json::to_value(&payload).expect("payload serialises")),
    })
    .await?;
    w.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(MigrationJob { job_id })))
}
