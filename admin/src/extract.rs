//! Body and query extractors checked against the route's OpenAPI schema.
//!
//! A body or query is first checked against the schema the route table documents for it
//! ([`tenantgate_openapi::Checker`]), then deserialised: whatever the document allows is read,
//! whatever it forbids is refused the same way everywhere (400 when the body is not JSON, 422
//! naming each invalid field). axum's own `Json` and `Query` would answer in plain text instead.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::AdminError;
use crate::state::AdminState;

/// A JSON request body of type `T`, checked against the route's body schema.
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequest<AdminState> for ApiJson<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &AdminState) -> Result<Self, AdminError> {
        let (parts, body) = req.into_parts();
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| AdminError::BadRequest(format!("could not read the body: {e}")))?;
        let value = state.api.body(&parts, &bytes)?;
        Ok(ApiJson(tenantgate_openapi::decode(value, "body")?))
    }
}

/// Query parameters of type `T`, checked against the route's parameters.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<T: DeserializeOwned> FromRequestParts<AdminState> for ApiQuery<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, AdminError> {
        let value = state.api.query(parts)?;
        Ok(ApiQuery(tenantgate_openapi::decode(value, "query")?))
    }
}
