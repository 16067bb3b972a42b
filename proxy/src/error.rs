//! The edge's errors: [`EdgeError`] for starting and running the edge, and [`Reject`] for the
//! answers the edge gives itself instead of proxying. Every rejection is mapped to its HTTP
//! status, error code and message here and nowhere else (DESIGN §5); the answers to a tenant's
//! status come from the tenant contract, which the admin API and the app use too.

use std::net::SocketAddr;

use tenantgate_contract::Refusal;

/// Why the edge could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The catalog could not be opened.
    #[error("catalog: {0}")]
    Catalog(#[from] tenantgate_catalog::CatalogError),
    /// A listening address is taken or not ours to bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The pid file (`--pid-file`) cannot be written, or names no running edge to upgrade from.
    #[error("pid file {path}: {message}")]
    PidFile {
        path: std::path::PathBuf,
        message: String,
    },
    /// Anything else that keeps the edge from starting (runtime creation, thread spawn, ...).
    #[error("edge failed to start: {0}")]
    Start(String),
}

/// A request the edge answers itself, with a JSON error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Host header missing, empty, duplicated or not a valid host name.
    InvalidHost,
    /// No tenant has this host (or host + path prefix).
    UnknownTenant,
    /// The tenant's status refuses the request; the answer is the contract's
    /// ([`TenantStatus::admission`](tenantgate_contract::TenantStatus::admission)).
    Tenant(Refusal),
    /// The tenant is over its rate limit.
    RateLimited,
    /// The tenant is over its cap on concurrent requests.
    TooManyInFlight,
    /// No backend of the tenant's shard is healthy.
    ShardUnavailable,
    /// The host is not cached and the catalog cannot be asked (down, or miss budget spent).
    CatalogUnavailable,
    /// Request line, path or headers the edge refuses to forward.
    MalformedRequest,
    /// Request headers larger than `edge.max_header_bytes`, or too many of them.
    HeadersTooLarge,
    /// A request target longer than [`crate::headers::MAX_URI_BYTES`].
    UriTooLong,
    /// The request body did not arrive within `edge.body_timeout_ms`.
    BodyTimeout,
    /// The backend failed after the connection was made, or answered garbage.
    BadGateway,
}

impl Reject {
    /// Every rejection, for metrics that start each reason at 0.
    pub fn all() -> impl Iterator<Item = Reject> {
        [
            Reject::InvalidHost,
            Reject::UnknownTenant,
            Reject::RateLimited,
            Reject::TooManyInFlight,
            Reject::ShardUnavailable,
            Reject::CatalogUnavailable,
            Reject::MalformedRequest,
            Reject::HeadersTooLarge,
            Reject::UriTooLong,
            Reject::BodyTimeout,
            Reject::BadGateway,
        ]
        .into_iter()
        .chain(Refusal::ALL.map(Reject::Tenant))
    }

    /// HTTP status of the answer.
    pub fn status(self) -> u16 {
        match self {
            Reject::InvalidHost | Reject::MalformedRequest => 400,
            Reject::UnknownTenant => 404,
            Reject::Tenant(r) => r.status(),
            Reject::RateLimited | Reject::TooManyInFlight => 429,
            Reject::HeadersTooLarge => 431,
            Reject::UriTooLong => 414,
            Reject::BodyTimeout => 408,
            Reject::BadGateway => 502,
            Reject::ShardUnavailable | Reject::CatalogUnavailable => 503,
        }
    }

    /// The stable `error.code` of the JSON body; also the `reason` label of rejection metrics.
    pub fn code(self) -> &'static str {
        match self {
            Reject::InvalidHost => "invalid_host",
            Reject::UnknownTenant => "unknown_tenant",
            Reject::Tenant(r) => r.code(),
            Reject::RateLimited => "rate_limited",
            Reject::TooManyInFlight => "too_many_in_flight",
            Reject::ShardUnavailable => "shard_unavailable",
            Reject::CatalogUnavailable => "catalog_unavailable",
            Reject::MalformedRequest => "malformed_request",
            Reject::HeadersTooLarge => "headers_too_large",
            Reject::UriTooLong => "uri_too_long",
            Reject::BodyTimeout => "body_timeout",
            Reject::BadGateway => "bad_gateway",
        }
    }

    /// Human-readable message; never contains request data or internal detail.
    pub fn message(self) -> &'static str {
        match self {
            Reject::InvalidHost => "the Host header is missing or invalid",
            Reject::UnknownTenant => "no tenant is served at this address",
            Reject::Tenant(r) => r.message(),
            Reject::RateLimited => "too many requests for this tenant",
            Reject::TooManyInFlight => "too many concurrent requests for this tenant",
            Reject::ShardUnavailable => "no healthy backend is available for this tenant",
            Reject::CatalogUnavailable => "tenant routing is temporarily unavailable",
            Reject::MalformedRequest => "the request is malformed",
            Reject::HeadersTooLarge => "the request headers are too large",
            Reject::UriTooLong => "the request target is too long",
            Reject::BodyTimeout => "the request body did not arrive in time",
            Reject::BadGateway => "the backend failed to answer",
        }
    }

    /// Seconds for a `Retry-After` header, for answers that invite a retry.
    pub fn retry_after_secs(self) -> Option<u64> {
        match self {
            Reject::Tenant(r) => r.retry_after_secs(),
            Reject::ShardUnavailable | Reject::CatalogUnavailable => Some(1),
            Reject::TooManyInFlight => Some(1),
            _ => None,
        }
    }

    /// Whether the connection is closed after the answer: after a malformed request the
    /// framing of anything that follows on the connection cannot be trusted.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            Reject::InvalidHost
                | Reject::MalformedRequest
                | Reject::HeadersTooLarge
                | Reject::UriTooLong
                | Reject::BodyTimeout
        )
    }

    /// The JSON body `{"error":{"code":"…","message":"…"}}`.
    pub fn body(self) -> String {
        serde_json::json!({"error": {"code": self.code(), "message": self.message()}}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_the_contract() {
        let body: serde_json::Value =
            serde_json::from_str(&Reject::Tenant(Refusal::Suspended).body()).unwrap();
        assert_eq!(body["error"]["code"], "tenant_suspended");
        assert!(body["error"]["message"].is_string());
        assert_eq!(Reject::UnknownTenant.status(), 404);
        let codes: std::collections::HashSet<&str> = Reject::all().map(Reject::code).collect();
        assert_eq!(codes.len(), Reject::all().count(), "codes are distinct");
        assert_eq!(Reject::Tenant(Refusal::Deleted).status(), 410);
        assert_eq!(Reject::HeadersTooLarge.status(), 431);
        assert_eq!(
            Reject::Tenant(Refusal::Provisioning).retry_after_secs(),
            Some(5)
        );
    }
}
