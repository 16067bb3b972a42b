//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the route table.

use std::sync::OnceLock;

use axum::Json;
use serde_json::Value;

pub(crate) async fn handler() -> Json<Value> {
    // The table is fixed at build time: generate the document once.
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    Json(DOCUMENT.get_or_init(|| super::api().document()).clone())
}
