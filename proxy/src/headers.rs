//! Request checks before routing and the headers sent upstream (DESIGN §5).
//!
//! Inbound: the Host must be present once, request targets must be origin-form paths without
//! `..` segments or encoded slashes, header names must not be underscore spellings of internal
//! headers (some frameworks read `X_Tenant_Id` as `x-tenant-id`), header values must be UTF-8,
//! and all headers together must fit `edge.max_header_bytes`.
//!
//! Upstream: every client-sent `x-tenant-*`, `x-forwarded-*`, `forwarded`, `x-real-ip`,
//! `x-request-id` and hop-by-hop header is removed, then the edge sets its own. Pingora already
//! drops the hop-by-hop headers a client names in `Connection` before this runs, so the headers
//! set here cannot be removed by a client.

use http::header::{HeaderValue, HOST};
use pingora::http::RequestHeader;
use tenantgate_catalog::signing::{
    HEADER_REQUEST_ID, HEADER_TENANT_EPOCH, HEADER_TENANT_ID, HEADER_TENANT_SHARD,
    HEADER_TENANT_SIGNATURE, HEADER_TENANT_SLUG, INTERNAL_PREFIX,
};

use crate::error::Reject;

/// Most request headers accepted, whatever their size.
pub const MAX_HEADERS: usize = 100;
/// Longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 8192;

/// Headers that only the edge may set.
fn is_internal(lower_name: &str) -> bool {
    lower_name.starts_with(INTERNAL_PREFIX)
        || lower_name.starts_with("x-forwarded-")
        || lower_name == "forwarded"
        || lower_name == "x-real-ip"
        || lower_name == HEADER_REQUEST_ID
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) that are never forwarded; `connection` and `upgrade`
/// are left to Pingora, which needs them for WebSocket upgrades.
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "te",
    "trailer",
];

/// Check a request before it is routed. Runs first in `request_filter`.
pub fn check_request(req: &RequestHeader, max_header_bytes: usize) -> Result<(), Reject> {
    if req.headers.len() > MAX_HEADERS {
        return Err(Reject::HeadersTooLarge);
    }
    if req.raw_path().len() > MAX_URI_BYTES {
        return Err(Reject::UriTooLong);
    }
    let mut total = req.raw_path().len() + 16;
    for (name, value) in req.headers.iter() {
        total += name.as_str().len() + value.len() + 4;
        let name = name.as_str();
        if name.contains('_') && is_internal(&name.replace('_', "-")) {
            return Err(Reject::MalformedRequest);
        }
        if std::str::from_utf8(value.as_bytes()).is_err() {
            return Err(Reject::MalformedRequest);
        }
    }
    if total > max_header_bytes {
        return Err(Reject::HeadersTooLarge);
    }
    // The only transfer coding a request may use is one `chunked`; anything else (`chunked,
    // chunked`, a list across lines) is a framing ambiguity between us and the app.
    let mut codings = req.headers.get_all(http::header::TRANSFER_ENCODING).iter();
    if let Some(first) = codings.next() {
        if codings.next().is_some()
            || !first
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked")
        {
            return Err(Reject::MalformedRequest);
        }
    }
    check_path(req.uri.path())?;
    if !req.raw_path_is_utf8() {
        return Err(Reject::MalformedRequest);
    }
    Ok(())
}

/// The path must be absolute, without `.`/`..` segments (plain or percent-encoded), encoded
/// slashes or backslashes: after a prefix is stripped these could address another tenant's
/// path on a shared app.
pub fn check_path(path: &str) -> Result<(), Reject> {
    if !path.starts_with('/') || path.contains('\\') {
        return Err(Reject::MalformedRequest);
    }
    let lower_has = |needle: &str| {
        path.as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
    };
    if path.contains('%') && (lower_has("%2f") || lower_has("%5c") || lower_has("%2e")) {
        return Err(Reject::MalformedRequest);
    }
    if path.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(Reject::MalformedRequest);
    }
    Ok(())
}

/// The one Host of a request: the `Host` header, or the authority of an HTTP/2 request.
pub fn host_of(req: &RequestHeader) -> Result<&str, Reject> {
    let mut hosts = req.headers.get_all(HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) => h.to_str().map_err(|_| Reject::InvalidHost),
        (None, None) => req
            .uri
            .authority()
            .map(|a| a.as_str())
            .ok_or(Reject::InvalidHost),
        _ => Err(Reject::InvalidHost),
    }
}

/// A fresh `x-request-id`: a UUID v7 (milliseconds since the epoch, then 74 random bits from
/// the thread's generator). `Uuid::now_v7` does the same through a shared, locked context and
/// the OS generator, which measured about four times slower on the request path.
pub fn new_request_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let random: [u8; 10] = rand::random();
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The tenant headers of one route, built once when the route is cached: on the request path
/// each is a reference-counted clone, not a copy.
#[derive(Debug, Clone)]
pub struct RouteHeaders {
    pub tenant_id: HeaderValue,
    pub slug: HeaderValue,
    pub shard: HeaderValue,
    pub epoch: HeaderValue,
}

impl RouteHeaders {
    /// The header values of a route. Catalog names are validated ASCII; a value that is not a
    /// valid header value becomes empty, which makes the app refuse the signature (401).
    pub fn new(tenant_id: uuid::Uuid, slug: &str, shard: &str, epoch: i64) -> RouteHeaders {
        let value =
            |text: &str| HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static(""));
        RouteHeaders {
            tenant_id: value(
                tenant_id
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()),
            ),
            slug: value(slug),
            shard: value(shard),
            epoch: value(&epoch.to_string()),
        }
    }
}

/// Everything the edge sets on the upstream request.
pub struct Forwarded<'a> {
    pub route: &'a RouteHeaders,
    pub request_id: &'a str,
    pub signature: &'a str,
    pub client_ip: Option<String>,
    /// The path prefix that matched, when the route is a host + prefix domain.
    pub prefix: Option<&'a str>,
}

/// Strip inbound internal and hop-by-hop headers and set the edge's own. Runs in
/// `upstream_request_filter`.
pub fn rewrite_upstream(up: &mut RequestHeader, fwd: &Forwarded<'_>) -> pingora::Result<()> {
    let forwarded_host = up
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let doomed: Vec<http::HeaderName> = up
        .headers
        .keys()
        .filter(|n| is_internal(n.as_str()) || HOP_BY_HOP.contains(&n.as_str()))
        .cloned()
        .collect();
    for name in &doomed {
        up.remove_header(name);
    }
    if let Some(prefix) = fwd.prefix {
        strip_prefix(up, prefix)?;
        up.insert_header("x-forwarded-prefix", format!("/{prefix}"))?;
    }
    if let Some(ip) = &fwd.client_ip {
        up.insert_header("x-forwarded-for", ip.as_str())?;
    }
    up.insert_header("x-forwarded-proto", "http")?;
    if let Some(host) = forwarded_host {
        up.insert_header("x-forwarded-host", host)?;
    }
    up.insert_header(HEADER_TENANT_ID, fwd.route.tenant_id.clone())?;
    up.insert_header(HEADER_TENANT_SLUG, fwd.route.slug.clone())?;
    up.insert_header(HEADER_TENANT_SHARD, fwd.route.shard.clone())?;
    up.insert_header(HEADER_TENANT_EPOCH, fwd.route.epoch.clone())?;
    up.insert_header(HEADER_REQUEST_ID, fwd.request_id)?;
    up.insert_header(HEADER_TENANT_SIGNATURE, fwd.signature)?;
    Ok(())
}

/// `/acme/items?x` → `/items?x` for prefix `acme`.
fn strip_prefix(up: &mut RequestHeader, prefix: &str) -> pingora::Result<()> {
    let target = up.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let rest = target
        .strip_prefix('/')
        .and_then(|t| t.strip_prefix(prefix))
        .unwrap_or(target);
    let new = if rest.is_empty() {
        "/".to_string()
    } else if rest.starts_with('?') {
        format!("/{rest}")
    } else {
        rest.to_string()
    };
    let uri = new.parse::<http::Uri>().map_err(|_| {
        pingora::Error::explain(
            pingora::ErrorType::InvalidHTTPHeader,
            "bad path after prefix",
        )
    })?;
    up.set_uri(uri);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", path.as_bytes(), None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn rejects_hostile_paths() {
        for bad in [
            "*",
            "/a/../b",
            "/..",
            "/a/%2e%2e/b",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/./x",
        ] {
            assert_eq!(check_path(bad), Err(Reject::MalformedRequest), "{bad}");
        }
        for good in ["/", "/a/b", "/a..b/c", "/a%20b", "/x?y=../z"] {
            assert_eq!(
                check_path(good.split('?').next().unwrap()),
                Ok(()),
                "{good}"
            );
        }
    }

    #[test]
    fn rejects_underscore_internal_headers_and_oversize() {
        let r = request("/", &[("Host", "a"), ("X_Tenant_Id", "x")]);
        assert_eq!(check_request(&r, 4096), Err(Reject::MalformedRequest));
        let r = request("/", &[("Host", "a"), ("X_Custom", "x")]);
        assert_eq!(check_request(&r, 4096), Ok(()));
        let big = "v".repeat(5000);
        let r = request("/", &[("Host", "a"), ("X-Big", &big)]);
        assert_eq!(check_request(&r, 4096), Err(Reject::HeadersTooLarge));
    }

    #[test]
    fn request_ids_are_unique_v7_uuids() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        assert!(parsed.get_timestamp().is_some());
    }

    #[test]
    fn host_must_appear_once() {
        assert_eq!(host_of(&request("/", &[("Host", "a.b")])), Ok("a.b"));
        assert_eq!(host_of(&request("/", &[])), Err(Reject::InvalidHost));
        let two = request("/", &[("Host", "a"), ("Host", "b")]);
        assert_eq!(host_of(&two), Err(Reject::InvalidHost));
    }

    #[test]
    fn rewrites_upstream_headers() {
        let mut r = request(
            "/acme/items?x=1",
            &[
                ("Host", "app.example.com"),
                ("X-Tenant-Id", "evil"),
                ("X-Forwarded-For", "1.2.3.4"),
                ("Forwarded", "for=1.2.3.4"),
                ("X-Real-IP", "1.2.3.4"),
                ("Keep-Alive", "300"),
                ("Accept", "*/*"),
            ],
        );
        let id = uuid::Uuid::from_u128(7);
        let route = RouteHeaders::new(id, "acme", "shard-a", 3);
        let fwd = Forwarded {
            route: &route,
            request_id: "rid",
            signature: "sig",
            client_ip: Some("127.0.0.1".into()),
            prefix: Some("acme"),
        };
        rewrite_upstream(&mut r, &fwd).unwrap();
        let get = |n: &str| r.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            get("x-tenant-id").as_deref(),
            Some("00000000-0000-0000-0000-000000000007")
        );
        assert_eq!(get("x-tenant-slug").as_deref(), Some("acme"));
        assert_eq!(get("x-tenant-shard").as_deref(), Some("shard-a"));
        assert_eq!(get("x-tenant-epoch").as_deref(), Some("3"));
        assert_eq!(r.headers.get_all("x-tenant-id").iter().count(), 1);
        assert_eq!(get("x-forwarded-for").as_deref(), Some("127.0.0.1"));
        assert_eq!(get("x-forwarded-host").as_deref(), Some("app.example.com"));
        assert_eq!(get("x-forwarded-prefix").as_deref(), Some("/acme"));
        assert_eq!(get("forwarded"), None);
        assert_eq!(get("x-real-ip"), None);
        assert_eq!(get("keep-alive"), None);
        assert_eq!(get("accept").as_deref(), Some("*/*"));
        assert_eq!(r.uri.path_and_query().unwrap().as_str(), "/items?x=1");
    }
}
