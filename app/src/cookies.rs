//! The cookies the app sets and reads, and the path they are scoped to.
//!
//! Tenants on host + prefix domains share a host (`app.example.com/acme`,
//! `app.example.com/globex`): browsers scope cookies by host, so every cookie the app sets is
//! scoped to the tenant's prefix (`Path=/acme`), which the edge passes as `x-forwarded-prefix`.
//! One tenant's session then never reaches another tenant's app. Whole-host tenants get
//! `Path=/`. (The catalog's host ownership rule keeps a host either whole or shared, so no
//! whole-host tenant sits beside prefix tenants.)

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};

/// The path prefix the edge stripped (`x-forwarded-prefix`), without a trailing slash; empty for
/// a whole-host domain. Only a plain path is accepted (it goes into links and cookies).
pub fn base_path(headers: &HeaderMap) -> String {
    headers
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| {
            p.starts_with('/')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
        })
        .unwrap_or("")
        .to_string()
}

/// Append `Set-Cookie: name=value; Path=<base or />; <attributes>` to `headers`. `value` and
/// `attributes` must be valid header text (the caller builds them from tokens and numbers);
/// an invalid cookie is not set.
pub fn set(headers: &mut HeaderMap, name: &str, value: &str, base: &str, attributes: &str) {
    let path = if base.is_empty() { "/" } else { base };
    let cookie = format!("{name}={value}; Path={path}; {attributes}");
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            headers.append(SET_COOKIE, v);
        }
        Err(_) => tracing::warn!(
            cookie = name,
            "cookie value is not valid header text; not set"
        ),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn read<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_paths_are_plain_paths() {
        let mut h = HeaderMap::new();
        assert_eq!(base_path(&h), "");
        h.insert("x-forwarded-prefix", "/acme/".parse().unwrap());
        assert_eq!(base_path(&h), "/acme");
        h.insert("x-forwarded-prefix", "/a\"><script>".parse().unwrap());
        assert_eq!(base_path(&h), "");
    }

    #[test]
    fn cookies_are_scoped_to_the_prefix() {
        let mut h = HeaderMap::new();
        set(&mut h, "s", "v1", "/acme", "HttpOnly");
        set(&mut h, "t", "v2", "", "HttpOnly");
        set(&mut h, "bad", "a\nb", "", "HttpOnly");
        let set: Vec<&str> = h
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            set,
            ["s=v1; Path=/acme; HttpOnly", "t=v2; Path=/; HttpOnly"]
        );
    }

    #[test]
    fn reads_one_cookie_among_many() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, "a=1; tg_session=xyz ; b=2".parse().unwrap());
        assert_eq!(read(&h, "tg_session"), Some("xyz"));
        assert_eq!(read(&h, "c"), None);
    }
}
