//! Body and query extractors checked against the route's OpenAPI schema.
//!
//! A body or query is first checked against the schema the route table documents for it
//! ([`tenantgate_openapi::Checker`]), then deserialised: whatever the document allows is read,
//! whatever it forbids is refused the same way everywhere (400 when the body is not JSON, 422
//! naming each invalid field). axum's own `Json` and `Query` would answer in plain text instead.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::AdminError;
use crate::state::AdminState;

/// A JSON request body of type `T`, checked against the route's body schema.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AdminState> for ApiJson<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &AdminState) -> Result<Self, AdminError> {
        Ok(ApiJson(state.api.read_json(req).await?))
    }
}

/// Query parameters of type `T`, checked against the route's parameters.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequestParts<AdminState> for ApiQuery<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, AdminError> {
        Ok(ApiQuery(state.api.read_query(parts)?))
    }
}
