//! The app tier's one error type and its one mapping to HTTP.
//!
//! Every handler, extractor and middleware of this crate returns [`AppError`]; `IntoResponse`
//! below is the only place a status code and an error `code` are chosen. Internal failures
//! (database, catalog) become a generic message for the client and a detailed log line.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tenantgate_catalog::tenant_db::TenantDbError;
use tenantgate_catalog::CatalogError;
use tenantgate_contract::Refusal;

use crate::rbac::Permission;

/// Field name → what is wrong with it, for 422 answers.
pub type FieldErrors = BTreeMap<String, String>;

/// What can go wrong in the app tier, from a bad signature to a failed database.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The `x-tenant-signature` header is missing, malformed, expired, signed with an unknown
    /// key or does not match the tenant headers. 401 `invalid_signature`.
    #[error("missing or invalid tenant signature")]
    InvalidSignature,
    /// The signature verified, but its request id was already used within the signature
    /// window: a captured request sent again. 401 `replayed_request`.
    #[error("this signed request was already received")]
    ReplayedRequest,
    /// The request (or the tenant) belongs to another shard than this process serves.
    /// 421 `wrong_shard`.
    #[error("request is for another shard")]
    WrongShard,
    /// The request was signed with an older route epoch than the copy of the tenant database
    /// it would use (as the catalog or the database itself records it): an edge whose cache
    /// predates a move. 503 `tenant_moved`, retryable: the edge routes the retry by the new
    /// epoch once its feed catches up. See [`crate::fence`].
    #[error("the tenant has moved; retry")]
    TenantMoved,
    /// The signed tenant id is not in the catalog. 404 `unknown_tenant`.
    #[error("tenant not found in the catalog")]
    UnknownTenant,
    /// The tenant exists but its status refuses requests: the tenant contract's answer, the
    /// same the edge gives (403 `tenant_suspended`, 410 `tenant_deleted`, ...).
    #[error("{}", .0.message())]
    TenantRefused(Refusal),
    /// No connection to the tenant's database within the acquire timeout (budget exhausted,
    /// database down). 503 `tenant_db_unavailable`.
    #[error("tenant database unavailable: {0}")]
    TenantDbUnavailable(Unavailable),
    /// Opening the tenant database failed (credentials, URL, connect). 503
    /// `tenant_db_unavailable`; the detail is logged only.
    #[error("tenant database: {0}")]
    TenantDb(#[from] TenantDbError),
    /// No usable bearer token or session cookie (missing, unknown, expired). 401 `unauthenticated`.
    #[error("authentication required")]
    Unauthenticated,
    /// A browser posted the login form from another origin (login CSRF). 403 `cross_origin`.
    #[error("sign-in from another site is refused; use this site's login form")]
    CrossOriginLogin,
    /// Too many failed logins from this client address, or at this tenant, within the
    /// window: 429 `login_throttled` with `Retry-After` (the seconds here).
    #[error("too many failed logins; retry later")]
    LoginThrottled(u64),
    /// The user's role lacks a permission. 403 `forbidden`.
    #[error("missing permission {0}")]
    Forbidden(Permission),
    /// The addressed resource does not exist in the tenant's database. 404 `not_found`.
    #[error("not found")]
    NotFound,
    /// A user was to be given a role the tenant does not have. 404 `not_found` (as the admin
    /// API's token mint answers it).
    #[error("no such role")]
    UnknownRole,
    /// The change would break a rule of the tenant's data (its last owner, a built-in role, a
    /// taken email or name). 409 `conflict`.
    #[error("{0}")]
    Conflict(String),
    /// The request body or query failed validation. 422 `validation_failed` with `fields`.
    #[error("validation failed")]
    Validation(FieldErrors),
    /// The request is malformed in a way not tied to one field (bad cursor, bad JSON). 400.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The catalog failed. 503 `catalog_unavailable` when unreachable, else 500.
    #[error("catalog: {0}")]
    Catalog(Arc<CatalogError>),
    /// A tenant database query failed. 500 `internal`.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The listener failed (only from [`crate::serve`]).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Why no tenant database connection could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// Every connection of the budget stayed in use for the whole acquire timeout.
    #[error("connection budget exhausted")]
    Budget,
    /// The tenant's pool had no free connection within the acquire timeout.
    #[error("timed out waiting for a connection")]
    Timeout,
    /// The database refused or did not answer (details are logged, not shown).
    #[error("tenant database connection failed")]
    Connect,
    /// A replica was asked for on a shard without replicas.
    #[error("the shard has no replica")]
    NoReplica,
    /// The process is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl AppError {
    /// A 422 for one field.
    pub fn field(name: &'static str, message: impl Into<String>) -> AppError {
        AppError::Validation(BTreeMap::from([(name.to_string(), message.into())]))
    }

    /// The HTTP status and the stable error `code` of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::InvalidSignature => (StatusCode::UNAUTHORIZED, "invalid_signature"),
            AppError::ReplayedRequest => (StatusCode::UNAUTHORIZED, "replayed_request"),
            AppError::WrongShard => (StatusCode::MISDIRECTED_REQUEST, "wrong_shard"),
            AppError::UnknownTenant => (StatusCode::NOT_FOUND, "unknown_tenant"),
            AppError::TenantMoved => (StatusCode::SERVICE_UNAVAILABLE, "tenant_moved"),
            AppError::TenantRefused(r) => (
                StatusCode::from_u16(r.status()).expect("contract statuses are valid"),
                r.code(),
            ),
            AppError::TenantDbUnavailable(_) | AppError::TenantDb(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "tenant_db_unavailable")
            }
            AppError::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AppError::CrossOriginLogin => (StatusCode::FORBIDDEN, "cross_origin"),
            AppError::LoginThrottled(_) => (StatusCode::TOO_MANY_REQUESTS, "login_throttled"),
            AppError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AppError::NotFound | AppError::UnknownRole => (StatusCode::NOT_FOUND, "not_found"),
            AppError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AppError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            AppError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AppError::Catalog(e) if e.is_unavailable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "catalog_unavailable")
            }
            AppError::Catalog(_) | AppError::Database(_) | AppError::Io(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }

    /// The message shown to the client: never driver errors, SQL or secrets.
    fn public_message(&self) -> String {
        match self {
            AppError::TenantDb(_) => "the tenant database is unavailable".into(),
            AppError::Catalog(_) | AppError::Database(_) | AppError::Io(_) => {
                "internal error".into()
            }
            AppError::Forbidden(p) => format!("permission {p} is required"),
            other => other.to_string(),
        }
    }
}

/// A request that breaks the route's documented schema.
impl From<tenantgate_openapi::Rejection> for AppError {
    fn from(r: tenantgate_openapi::Rejection) -> AppError {
        match r {
            tenantgate_openapi::Rejection::BadRequest(message) => AppError::BadRequest(message),
            tenantgate_openapi::Rejection::Invalid(fields) => {
                let mut map = FieldErrors::new();
                for f in fields {
                    // One message per field; the first is enough to fix it.
                    map.entry(f.field).or_insert(f.message);
                }
                AppError::Validation(map)
            }
        }
    }
}

/// The error body of the app, as its OpenAPI document shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = AppErrorBody)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code (`validation_failed`, `forbidden`, `not_found`, ...).
    pub code: String,
    pub message: String,
    /// With `validation_failed`: each invalid field and why.
    #[schema(nullable = false)]
    pub fields: Option<BTreeMap<String, String>>,
}

impl From<CatalogError> for AppError {
    fn from(e: CatalogError) -> Self {
        AppError::Catalog(Arc::new(e))
    }
}

/// A shard URL from the catalog that does not parse: bad catalog data, an internal error.
impl From<tenantgate_config::db_url::UrlError> for AppError {
    fn from(e: tenantgate_config::db_url::UrlError) -> Self {
        AppError::Catalog(Arc::new(CatalogError::from(e)))
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            // The full error (driver detail included) goes to the log of the request span only.
            tracing::error!(error = %self, code, "request failed");
        } else {
            tracing::debug!(error = %self, code, "request refused");
        }
        let mut body = serde_json::json!({
            "error": { "code": code, "message": self.public_message() }
        });
        if let AppError::Validation(fields) = &self {
            body["error"]["fields"] = serde_json::json!(fields);
        }
        let mut response = (status, Json(body)).into_response();
        let retry_after = match &self {
            AppError::TenantRefused(r) => r.retry_after_secs(),
            AppError::LoginThrottled(secs) => Some(*secs),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
