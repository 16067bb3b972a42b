//! Unauthenticated operational endpoints: liveness, readiness, metrics.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use crate::state::AdminState;

/// The answer of `/healthz` and `/readyz`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// `ok`, `ready`, or `catalog_unreachable`.
    status: &'static str,
}

/// `GET /healthz`: the process serves requests.
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// `GET /readyz`: 200 when the catalog answers, else 503.
pub(crate) async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if state.catalog.ping().await {
        (StatusCode::OK, Json(Health { status: "ready" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "catalog_unreachable",
            }),
        )
    }
}

/// `GET /metrics`: Prometheus text format.
pub(crate) async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let body = state
        .metrics
        .render(&state.catalog, state.config.backups.schedule.period())
        .await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}
