//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the route table.

use std::sync::OnceLock;

use axum::Json;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

/// The document, as its schema in the document itself names it.
pub(crate) struct Document;

impl PartialSchema for Document {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some("an OpenAPI 3.1 document"))
            .into()
    }
}

impl ToSchema for Document {
    fn name() -> std::borrow::Cow<'static, str> {
        "OpenApiDocument".into()
    }
}

pub(crate) async fn handler() -> Json<Value> {
    // The table is fixed at build time: generate the document once.
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    Json(DOCUMENT.get_or_init(|| super::api().document()).clone())
}
