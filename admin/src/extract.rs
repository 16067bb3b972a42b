//! Body and query extractors whose rejections are our JSON errors.
//!
//! axum's own `Json` and `Query` answer with plain-text bodies; these parse the same inputs and
//! report the failing field (`rate_limit.rps`) as a 422 validation error, or a 400 when the body
//! is not JSON at all.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::error::AdminError;

/// A JSON request body of type `T` (whose serde derive should deny unknown fields).
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AdminError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AdminError> {
        let is_json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
            });
        if !is_json {
            return Err(AdminError::BadRequest(
                "expected a body with content-type application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| AdminError::BadRequest(format!("could not read the body: {e}")))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parse `bytes` as a `T`: syntax errors are 400, shape errors (unknown or missing fields,
/// wrong types) are 422 naming the field.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut de) {
        Ok(value) => {
            de.end()
                .map_err(|e| AdminError::BadRequest(format!("invalid JSON: {e}")))?;
            Ok(value)
        }
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                return Err(AdminError::BadRequest(format!("invalid JSON: {inner}")));
            }
            let field = if path == "." {
                "body".to_string()
            } else {
                path
            };
            Err(AdminError::field(field, strip_position(&inner.to_string())))
        }
    }
}

/// serde_json appends " at line 1 column 42" to messages; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Query parameters of type `T`; a bad parameter is a 422 naming it.
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AdminError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| AdminError::field("query", e.body_text()))
    }
}
