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

use std::net::IpAddr;

use http::header::{HeaderName, HeaderValue, HOST};
use pingora::http::{RequestHeader, ResponseHeader};
use tenantgate_contract::host::split_first_segment;
use tenantgate_contract::signing::{
    HEADER_REQUEST_ID, HEADER_TENANT_EPOCH, HEADER_TENANT_ID, HEADER_TENANT_SHARD,
    HEADER_TENANT_SIGNATURE, HEADER_TENANT_SLUG, INTERNAL_PREFIX,
};

use crate::error::Reject;

/// Most request headers the app tier accepts: hyper's default, which axum uses. A request the
/// edge forwards must fit it *with* the headers the edge adds, or the app answers a bare 431 to
/// what the edge accepted.
pub const APP_MAX_HEADERS: usize = 100;
/// Most request headers accepted from a client, whatever their size: the app's limit less
/// the headers the edge adds ([`ADDED_HEADERS`]; the client's `Host` counts on both sides).
pub const MAX_HEADERS: usize = APP_MAX_HEADERS - ADDED_HEADERS;
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
    // One Content-Length, one value: Pingora refuses differing duplicates but forwards equal
    // ones (`5, 5`, or two lines of `5`), which the app may frame differently or refuse with a
    // bare 400. Either is a client we cannot trust with framing.
    let mut lengths = req.headers.get_all(http::header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.next().is_some() || first.as_bytes().contains(&b',') {
            return Err(Reject::MalformedRequest);
        }
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
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Reject::MalformedRequest);
    }
    // One pass over the bytes: this runs on every request.
    let dot_segment = |segment: &[u8]| segment == b"." || segment == b"..";
    let mut segment_start = 1;
    for (i, &b) in bytes.iter().enumerate().skip(1) {
        match b {
            b'\\' => return Err(Reject::MalformedRequest),
            b'%' => {
                let escaped = bytes.get(i + 1..i + 3).unwrap_or_default();
                if [b"2f", b"5c", b"2e"]
                    .iter()
                    .any(|e| escaped.eq_ignore_ascii_case(*e))
                {
                    return Err(Reject::MalformedRequest);
                }
            }
            b'/' => {
                if dot_segment(&bytes[segment_start..i]) {
                    return Err(Reject::MalformedRequest);
                }
                segment_start = i + 1;
            }
            _ => {}
        }
    }
    if dot_segment(&bytes[segment_start..]) {
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

/// A fresh `x-request-id` for a request that arrived at `unix_ms`: a UUID v7 (milliseconds
/// since the epoch, then 74 random bits from the thread's generator). `Uuid::now_v7` does the
/// same through a shared, locked context and the OS generator, which measured about four times
/// slower on the request path.
pub fn new_request_id(unix_ms: i64) -> String {
    let millis = u64::try_from(unix_ms).unwrap_or(0);
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
    /// The header values of a route, slices of one shared buffer (a route is cached per host, so
    /// at 100,000 tenants four separate buffers per route cost about 20 MB more). Catalog names
    /// are validated ASCII; a value that is not a valid header value becomes empty, which makes
    /// the app refuse the signature (401).
    pub fn new(tenant_id: uuid::Uuid, slug: &str, shard: &str, epoch: i64) -> RouteHeaders {
        let mut id = uuid::Uuid::encode_buffer();
        let mut epoch_text = itoa::Buffer::new();
        let parts = [
            tenant_id.hyphenated().encode_lower(&mut id) as &str,
            slug,
            shard,
            epoch_text.format(epoch),
        ];
        let mut joined = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
        let mut ends = [0; 4];
        for (end, part) in ends.iter_mut().zip(parts) {
            joined.extend_from_slice(part.as_bytes());
            *end = joined.len();
        }
        let joined = bytes::Bytes::from(joined);
        let value = |i: usize| {
            let start = if i == 0 { 0 } else { ends[i - 1] };
            HeaderValue::from_maybe_shared(joined.slice(start..ends[i]))
                .unwrap_or(HeaderValue::from_static(""))
        };
        RouteHeaders {
            tenant_id: value(0),
            slug: value(1),
            shard: value(2),
            epoch: value(3),
        }
    }
}

/// Everything the edge sets on the upstream request.
pub struct Forwarded<'a, S> {
    pub route: &'a RouteHeaders,
    pub request_id: &'a str,
    /// Makes `x-tenant-signature` from the method and the target the app will receive (after
    /// prefix stripping), which the signature covers.
    pub sign: S,
    pub client_ip: Option<IpAddr>,
    /// The path prefix that matched, when the route is a host + prefix domain.
    pub prefix: Option<&'a str>,
    /// Whether the client's connection is TLS: `x-forwarded-proto` is `https`, else `http`.
    pub tls: bool,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
const X_TENANT_ID: HeaderName = HeaderName::from_static(HEADER_TENANT_ID);
const X_TENANT_SLUG: HeaderName = HeaderName::from_static(HEADER_TENANT_SLUG);
const X_TENANT_SHARD: HeaderName = HeaderName::from_static(HEADER_TENANT_SHARD);
const X_TENANT_EPOCH: HeaderName = HeaderName::from_static(HEADER_TENANT_EPOCH);
const X_TENANT_SIGNATURE: HeaderName = HeaderName::from_static(HEADER_TENANT_SIGNATURE);
const X_REQUEST_ID: HeaderName = HeaderName::from_static(HEADER_REQUEST_ID);

/// Headers the edge adds to every upstream request (the prefix one only to some):
/// `x-forwarded-for`, `-proto`, `-host`, `-prefix`, `x-tenant-id`, `-slug`, `-shard`, `-epoch`,
/// `-signature` and `x-request-id`.
pub const ADDED_HEADERS: usize = 10;

/// Strip inbound internal and hop-by-hop headers and set the edge's own. Runs in
/// `upstream_request_filter`.
///
/// The request is rebuilt from its parts rather than edited with `insert_header`: Pingora keeps
/// a second map with each header's original spelling, and every `insert_header` parses the name,
/// allocates twice and grows both maps, which made these ten headers the largest single cost of
/// the edge's own work per request. Rebuilt, the header names go upstream in canonical case
/// (standard names title-cased, others lower case) instead of the client's spelling; HTTP header
/// names are case-insensitive.
pub fn rewrite_upstream<S>(up: &mut RequestHeader, fwd: Forwarded<'_, S>) -> pingora::Result<()>
where
    S: FnOnce(&str, &str) -> String,
{
    // An empty request (no allocation) holds the place while the real one is rebuilt.
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts: http::request::Parts = std::mem::replace(up, placeholder).into();
    let headers = &mut parts.headers;
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_internal(n.as_str()) || HOP_BY_HOP.contains(&n.as_str()))
        .cloned()
        .collect();
    for name in &doomed {
        headers.remove(name);
    }
    headers.reserve(ADDED_HEADERS);
    if let Some(prefix) = fwd.prefix {
        parts.uri = strip_prefix(&parts.uri)?;
        headers.insert(X_FORWARDED_PREFIX, header_value(&format!("/{prefix}"))?);
    }
    if let Some(ip) = fwd.client_ip {
        headers.insert(X_FORWARDED_FOR, ip_value(ip));
    }
    let proto = if fwd.tls { "https" } else { "http" };
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = headers.get(HOST).cloned() {
        headers.insert(X_FORWARDED_HOST, host);
    }
    headers.insert(X_TENANT_ID, fwd.route.tenant_id.clone());
    headers.insert(X_TENANT_SLUG, fwd.route.slug.clone());
    headers.insert(X_TENANT_SHARD, fwd.route.shard.clone());
    headers.insert(X_TENANT_EPOCH, fwd.route.epoch.clone());
    headers.insert(X_REQUEST_ID, header_value(fwd.request_id)?);
    // Signed last, over the target as it now stands: what the app will see.
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let signature =
        HeaderValue::try_from((fwd.sign)(parts.method.as_str(), target)).map_err(|_| {
            pingora::Error::explain(pingora::ErrorType::InternalError, "bad signature value")
        })?;
    headers.insert(X_TENANT_SIGNATURE, signature);
    *up = RequestHeader::from(parts);
    Ok(())
}

/// The `Strict-Transport-Security` value for `max_age` seconds.
pub fn hsts_value(max_age: u32) -> HeaderValue {
    HeaderValue::from_str(&format!("max-age={max_age}")).expect("digits are a valid header value")
}

/// Where a plain-HTTP request of an `https_only` tenant is sent: the same host (normalised,
/// so without the plain listener's port) and request target over https.
pub fn https_location(host: &str, req: &RequestHeader) -> pingora::Result<HeaderValue> {
    let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
    header_value(&format!("https://{host}{target}"))
}

/// Requests that stay on plain HTTP even for `https_only` tenants: ACME HTTP-01 challenges,
/// which the CA makes over plain HTTP (RFC 8555 §8.3).
pub fn exempt_from_https_redirect(path: &str) -> bool {
    path.starts_with("/.well-known/acme-challenge/")
}

const STRICT_TRANSPORT_SECURITY: HeaderName = http::header::STRICT_TRANSPORT_SECURITY;

/// Set `x-request-id` (unless empty) on a proxied response, `strict-transport-security` when
/// `hsts` is given (TLS connections of tenants with `hsts_max_age`; the upstream's own value is
/// replaced), and `connection: close` when `close`. The same rebuild as [`rewrite_upstream`],
/// for the same reason; the reason phrase is kept.
pub fn annotate_response(
    resp: &mut ResponseHeader,
    request_id: &str,
    hsts: Option<&HeaderValue>,
    close: bool,
) -> pingora::Result<()> {
    if request_id.is_empty() && !close && hsts.is_none() {
        return Ok(());
    }
    let reason = resp
        .get_reason_phrase()
        .filter(|r| Some(*r) != resp.status.canonical_reason())
        .map(str::to_owned);
    let placeholder = ResponseHeader::from(http::Response::new(()).into_parts().0);
    let mut parts: http::response::Parts = std::mem::replace(resp, placeholder).into();
    if !request_id.is_empty() {
        parts
            .headers
            .insert(X_REQUEST_ID, header_value(request_id)?);
    }
    if let Some(hsts) = hsts {
        parts
            .headers
            .insert(STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    if close {
        parts
            .headers
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    *resp = ResponseHeader::from(parts);
    if reason.is_some() {
        resp.set_reason_phrase(reason.as_deref())?;
    }
    Ok(())
}

fn header_value(text: &str) -> pingora::Result<HeaderValue> {
    HeaderValue::from_str(text)
        .map_err(|_| pingora::Error::explain(pingora::ErrorType::InternalError, "bad header value"))
}

/// An IP address as a header value; IPv4 (the common case) without the formatting machinery.
fn ip_value(ip: IpAddr) -> HeaderValue {
    let IpAddr::V4(v4) = ip else {
        return HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid value");
    };
    let mut text = [0u8; 15];
    let mut len = 0;
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        let mut buf = itoa::Buffer::new();
        let digits = buf.format(octet).as_bytes();
        text[len..len + digits.len()].copy_from_slice(digits);
        len += digits.len();
    }
    HeaderValue::from_bytes(&text[..len]).expect("an IP address is a valid header value")
}

/// The request target without its first path segment (the matched prefix, see the contract's
/// [`split_first_segment`]): `/acme/items?x` → `/items?x`.
fn strip_prefix(uri: &http::Uri) -> pingora::Result<http::Uri> {
    let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let (_, rest) = split_first_segment(target);
    rest.parse::<http::Uri>().map_err(|_| {
        pingora::Error::explain(
            pingora::ErrorType::InvalidHTTPHeader,
            "bad path after prefix",
        )
    })
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
        for bad in ["/a/.", "/a/..", "/.%2e/x", "/a%2f"] {
            assert_eq!(check_path(bad), Err(Reject::MalformedRequest), "{bad}");
        }
        // `/a%2` is an incomplete escape, not an encoded slash.
        for good in [
            "/",
            "/a/b",
            "/a..b/c",
            "/a%20b",
            "/x?y=../z",
            "//",
            "/a/.../b",
            "/%",
            "/a%2",
        ] {
            assert_eq!(
                check_path(good.split('?').next().unwrap()),
                Ok(()),
                "{good}"
            );
        }
    }

    #[test]
    fn annotates_responses_keeping_status_headers_and_reason() {
        let mut resp = ResponseHeader::build(299, None).unwrap();
        resp.set_reason_phrase(Some("Custom Reason")).unwrap();
        resp.append_header("Set-Cookie", "a=1").unwrap();
        resp.append_header("Set-Cookie", "b=2").unwrap();
        annotate_response(&mut resp, "rid-1", None, false).unwrap();
        assert_eq!(resp.status.as_u16(), 299);
        assert_eq!(resp.get_reason_phrase(), Some("Custom Reason"));
        assert_eq!(resp.headers.get_all("set-cookie").iter().count(), 2);
        assert_eq!(resp.headers["x-request-id"], "rid-1");
        assert!(resp.headers.get("connection").is_none());

        annotate_response(&mut resp, "", None, true).unwrap();
        assert_eq!(resp.headers["connection"], "close");
        assert_eq!(resp.headers["x-request-id"], "rid-1");
    }

    /// The rules of `check_path` written the obvious way (several passes).
    fn check_path_reference(path: &str) -> bool {
        let has = |needle: &str| {
            path.as_bytes()
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
        };
        path.starts_with('/')
            && !path.contains('\\')
            && !has("%2f")
            && !has("%5c")
            && !has("%2e")
            && !path.split('/').any(|seg| seg == ".." || seg == ".")
    }

    proptest::proptest! {
        #[test]
        fn check_path_agrees_with_the_reference(path in "[/.%a-f0-9\\\\]{0,12}") {
            proptest::prop_assert_eq!(check_path(&path).is_ok(), check_path_reference(&path));
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
        let now = tenantgate_contract::time::now_ms();
        let a = new_request_id(now);
        let b = new_request_id(now);
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
                ("X-Forwarded-Proto", "https"),
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
            sign: |method: &str, target: &str| format!("{method} {target}"),
            client_ip: Some([127, 0, 0, 1].into()),
            prefix: Some("acme"),
            tls: false,
        };
        rewrite_upstream(&mut r, fwd).unwrap();
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
        // The signature covers the target after the prefix was stripped.
        assert_eq!(get("x-tenant-signature").as_deref(), Some("GET /items?x=1"));
        // The client's claim is replaced by what the listener was.
        assert_eq!(get("x-forwarded-proto").as_deref(), Some("http"));
        let mut tls = request("/", &[("Host", "a.test"), ("X-Forwarded-Proto", "http")]);
        rewrite_upstream(
            &mut tls,
            Forwarded {
                route: &route,
                request_id: "rid",
                sign: |_: &str, _: &str| "sig".to_string(),
                client_ip: None,
                prefix: None,
                tls: true,
            },
        )
        .unwrap();
        assert_eq!(tls.headers.get_all("x-forwarded-proto").iter().count(), 1);
        assert_eq!(tls.headers["x-forwarded-proto"], "https");
    }

    #[test]
    fn route_headers_slice_one_buffer_and_refuse_bad_values() {
        let id = uuid::Uuid::from_u128(0xabc);
        let h = RouteHeaders::new(id, "acme", "shard-a", -12);
        assert_eq!(h.tenant_id, "00000000-0000-0000-0000-000000000abc");
        assert_eq!(h.slug, "acme");
        assert_eq!(h.shard, "shard-a");
        assert_eq!(h.epoch, "-12");
        let bad = RouteHeaders::new(id, "bad\nslug", "", 0);
        assert_eq!(bad.slug, "");
        assert_eq!(bad.shard, "");
        assert_eq!(bad.epoch, "0");
    }
}
