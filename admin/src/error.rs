//! The admin component's one error type, and its one mapping to HTTP.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tenantgate_catalog::tenant_db::TenantDbError;
use tenantgate_catalog::CatalogError;

use crate::backup::BackupError;

/// One invalid field of a request: its JSON path (`domains[1]`, `rate_limit.rps`) and why.
pub use tenantgate_openapi::FieldError;
use tenantgate_openapi::Rejection;

/// Everything that can go wrong in the admin API, its worker and its CLI helpers.
///
/// [`IntoResponse`] below is the only place these become HTTP statuses. Variants that wrap
/// infrastructure errors (catalog, tenant database, I/O) answer a generic 500 and are logged in
/// detail on the server; their text never reaches a client.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No bearer token, or one that is not known.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// A known token without the scope the route needs.
    #[error("this token may not {0}")]
    Forbidden(&'static str),
    /// A tenant-restricted token asked for a fleet-wide route, or for a tenant (or an object of
    /// a tenant) it is not restricted to. Also the answer for a tenant that does not exist, so a
    /// restricted token learns nothing about tenants outside its reach.
    #[error("outside this token's tenants: {0}")]
    OutsideScope(&'static str),
    /// The token or the client address is over the admin rate limit; retry after that many
    /// seconds.
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    /// The body is not JSON (or not of the right content type).
    #[error("{0}")]
    BadRequest(String),
    /// Fields failed validation.
    #[error("request failed validation")]
    Invalid(Vec<FieldError>),
    /// The named object does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A unique name is taken or the object is in a state that forbids the request.
    #[error("{0}")]
    Conflict(String),
    /// The catalog failed.
    #[error("catalog: {0}")]
    Catalog(#[from] CatalogError),
    /// A tenant database (or its shard's server) failed.
    #[error("tenant database: {0}")]
    TenantDb(#[from] TenantDbError),
    /// A database of a shard's server failed.
    #[error("shard database: {0}")]
    Shard(#[from] sqlx::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// An uploaded certificate cannot be used (the message never quotes the key).
    #[error(transparent)]
    Certificate(#[from] tenantgate_contract::tls::CertError),
    /// Taking, storing or restoring a backup failed.
    #[error(transparent)]
    Backup(#[from] crate::backup::BackupError),
    /// Obtaining a certificate by ACME failed (worker only; recorded on the job and the
    /// host's certificate).
    #[error(transparent)]
    Acme(#[from] crate::acme::AcmeError),
    /// A job could not run as recorded (bad payload, lost lease, waiting on another job).
    /// Raised by the worker only; recorded on the job, never an HTTP answer of its own.
    #[error("{0}")]
    Job(String),
}

/// A shard URL read from the catalog that does not parse: the catalog holds bad data (request
/// URLs are validated field by field before they are stored).
impl From<tenantgate_config::db_url::UrlError> for AdminError {
    fn from(e: tenantgate_config::db_url::UrlError) -> AdminError {
        AdminError::Catalog(CatalogError::from(e))
    }
}

impl From<Rejection> for AdminError {
    fn from(r: Rejection) -> AdminError {
        match r {
            Rejection::BadRequest(message) => AdminError::BadRequest(message),
            Rejection::Invalid(fields) => AdminError::Invalid(fields),
        }
    }
}

impl AdminError {
    /// True when retrying cannot help: a job fails at once instead of after every attempt.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(self, AdminError::Backup(e) if e.is_permanent())
    }

    /// A validation error about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> AdminError {
        AdminError::Invalid(vec![FieldError::new(field, message)])
    }

    /// The HTTP status and machine-readable code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            AdminError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            AdminError::OutsideScope(_) => (StatusCode::FORBIDDEN, "outside_scope"),
            AdminError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            AdminError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            AdminError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            AdminError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AdminError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            AdminError::Backup(BackupError::NotConfigured(_)) => {
                (StatusCode::CONFLICT, "backups_not_configured")
            }
            AdminError::Certificate(e) if e.is_malformed() => (StatusCode::BAD_REQUEST, e.code()),
            AdminError::Certificate(e) => (StatusCode::UNPROCESSABLE_ENTITY, e.code()),
            AdminError::Catalog(CatalogError::NotFound(_)) => (StatusCode::NOT_FOUND, "not_found"),
            AdminError::Catalog(e) if e.is_unique_violation() => (StatusCode::CONFLICT, "conflict"),
            AdminError::Catalog(e) if e.is_unavailable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "catalog_unavailable")
            }
            AdminError::Catalog(_)
            | AdminError::TenantDb(_)
            | AdminError::Shard(_)
            | AdminError::Io(_)
            | AdminError::Backup(_)
            | AdminError::Acme(_)
            | AdminError::Job(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The message a client may see.
    fn public_message(&self) -> String {
        match self {
            AdminError::Catalog(CatalogError::NotFound(what)) => format!("{what} not found"),
            AdminError::Catalog(CatalogError::Conflict(what)) => what.clone(),
            AdminError::Catalog(e) if e.is_unique_violation() => "already exists".into(),
            AdminError::Catalog(e) if e.is_unavailable() => "the catalog is unavailable".into(),
            AdminError::Backup(e @ BackupError::NotConfigured(_)) => e.to_string(),
            AdminError::Catalog(_)
            | AdminError::Backup(_)
            | AdminError::TenantDb(_)
            | AdminError::Shard(_)
            | AdminError::Io(_)
            | AdminError::Acme(_)
            | AdminError::Job(_) => "internal error".into(),
            other => other.to_string(),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    fields: &'a [FieldError],
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            // The detail (driver errors, SQL states) stays in the server log.
            tracing::error!(error = %self, "admin request failed");
        }
        let fields = match &self {
            AdminError::Invalid(fields) => fields.as_slice(),
            _ => &[],
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.public_message(),
                fields,
            },
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let AdminError::RateLimited(secs) = self {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        response
    }
}
