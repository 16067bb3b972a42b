//! Read-your-writes across replicas: after a successful write a client reads from the primary
//! for `app.read_your_writes`, so it never misses its own write on a lagging replica.
//!
//! The mark is carried by the client, so any app process of the shard honours it: a cookie
//! [`STICKY_COOKIE`] for browsers and a response header [`STICKY_HEADER`] that API clients echo
//! back as a request header. Both hold the unix time in milliseconds until which reads go to the
//! primary. A forged mark can only send the client's own reads to the primary.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use tenantgate_contract::time::now_ms;

use crate::cookies;

/// Cookie holding the read-from-primary deadline (unix milliseconds).
pub const STICKY_COOKIE: &str = "tg_primary_until";
/// Header (response, and echoed on requests) holding the same deadline.
pub const STICKY_HEADER: &str = "x-tenantgate-primary-until";

/// True when the request carries a read-from-primary deadline that has not passed.
pub fn wrote_recently(headers: &HeaderMap) -> bool {
    let now = now_ms();
    let from_header = headers
        .get(STICKY_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let from_cookie = cookies::read(headers, STICKY_COOKIE).and_then(|v| v.parse::<i64>().ok());
    from_header
        .into_iter()
        .chain(from_cookie)
        .any(|until| until > now)
}

/// Mark `response` (of a successful write) so the client reads from the primary for `window`;
/// the cookie is scoped to `base` (the tenant's path prefix, see [`crate::cookies`]).
pub fn mark_wrote(response: &mut Response, window: Duration, base: &str) {
    if window.is_zero() {
        return;
    }
    let until = now_ms() + window.as_millis() as i64;
    let secs = window.as_secs().max(1);
    let headers = response.headers_mut();
    headers.insert(STICKY_HEADER, HeaderValue::from(until));
    cookies::set(
        headers,
        STICKY_COOKIE,
        &until.to_string(),
        base,
        &format!("Max-Age={secs}; HttpOnly; SameSite=Lax"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::header::{COOKIE, SET_COOKIE};

    #[test]
    fn marks_and_recognises_recent_writes() {
        let mut response = Response::new(axum::body::Body::empty());
        mark_wrote(&mut response, Duration::from_secs(5), "/acme");
        let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap();
        assert!(set_cookie.contains("; Path=/acme;"), "{set_cookie}");
        let until = response.headers()[STICKY_HEADER]
            .to_str()
            .unwrap()
            .to_string();
        let mut request = HeaderMap::new();
        assert!(!wrote_recently(&request));
        request.insert(
            COOKIE,
            format!("a=b; {STICKY_COOKIE}={until}").parse().unwrap(),
        );
        assert!(wrote_recently(&request));
        let mut request = HeaderMap::new();
        request.insert(STICKY_HEADER, "1".parse().unwrap());
        assert!(
            !wrote_recently(&request),
            "a deadline in the past is ignored"
        );
        let mut none = Response::new(axum::body::Body::empty());
        mark_wrote(&mut none, Duration::ZERO, "");
        assert!(none.headers().is_empty());
    }
}
