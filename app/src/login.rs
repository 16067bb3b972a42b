//! Guards of signing in: the origin check of `POST /login` (login CSRF) and the throttle of
//! failed logins.
//!
//! **Origin.** A foreign page must not be able to post its own token to a tenant's `/login`
//! and so sign the victim's browser in as the attacker (login CSRF). Browsers say who is
//! posting: `Origin` (all current browsers send it on a POST) or, failing that,
//! `Sec-Fetch-Site`. [`check_origin`] compares `Origin` with the origin the client used
//! (scheme from the edge's `x-forwarded-proto`, host and port from its `x-forwarded-host`).
//! The tenant's path prefix (`app.example.com/acme`) is not part of an origin, so it plays no
//! part: tenants sharing a host by prefix share an origin, and a browser cannot tell their pages
//! apart (the pages carry no scripts, see [`crate::pages`]). A request with neither header is
//! not a browser following a foreign form and is allowed: API clients and `curl` post the
//! login form without them, and refusing them would protect nothing.
//!
//! **Throttle.** Failed checks of a token or session ([`crate::Credential::read`] and
//! [`crate::Credential::write`], the login form) are counted in two budgets: the client
//! address's at this tenant and the whole tenant's (`[app] login_failures_per_address`,
//! `login_failures_per_tenant`, refilling over `login_failure_window_secs`). Only failures
//! count, after the check, so valid traffic never spends a budget however much of it is in
//! flight (a service calling with one token from one address must not be throttled).
//!
//! - An address whose budget is spent gets 429 `login_throttled` with `Retry-After`, and its
//!   credential is not looked at: a flood of guessed tokens from it costs the tenant database
//!   nothing.
//! - When the tenant's budget is spent (guesses from many addresses), credentials are still
//!   checked: a valid one goes through, a wrong one gets 429 instead of 401. Refusing valid
//!   ones too would let anyone lock a tenant's users out by guessing from enough addresses.
//!
//! Guesses in flight at the same moment can pass the address's limit by as many as are in
//! flight; the edge's rate limits bound that. The address is the edge's `x-forwarded-for`,
//! which the edge overwrites with the client's address.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::header::{HOST, ORIGIN};
use axum::http::HeaderMap;
use moka::sync::Cache;
use tenantgate_config::AppConfig;
use tenantgate_contract::host::normalize_host;
use uuid::Uuid;

use crate::error::AppError;

/// Refuse a browser's cross-origin `POST /login`; see the module documentation.
pub fn check_origin(headers: &HeaderMap) -> Result<(), AppError> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(ORIGIN) {
        // `Origin: null` (sandboxed frames, privacy redirects, data: URLs) matches nothing.
        let theirs = origin.to_str().ok().and_then(Origin::from_origin_header);
        let scheme = match text("x-forwarded-proto") {
            Some(p) if p.eq_ignore_ascii_case("https") => "https",
            _ => "http",
        };
        let ours = text("x-forwarded-host")
            .or_else(|| text(HOST.as_str()))
            .and_then(|host| Origin::new(scheme, host));
        return match (theirs, ours) {
            (Some(theirs), Some(ours)) if theirs == ours => Ok(()),
            _ => Err(AppError::CrossOriginLogin),
        };
    }
    match text("sec-fetch-site") {
        // `none`: the user typed, bookmarked or reloaded; no other site is involved.
        None | Some("same-origin" | "none") => Ok(()),
        // `same-site` is refused too: tenants' hosts are often sibling subdomains.
        Some(_) => Err(AppError::CrossOriginLogin),
    }
}

/// A web origin: scheme, normalised host and port (the scheme's default when not given).
#[derive(Debug, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The value of an `Origin` header: `scheme://host[:port]`, nothing after it.
    fn from_origin_header(value: &str) -> Option<Origin> {
        let (scheme, authority) = value.split_once("://")?;
        if authority.contains(['/', '?', '#', '@']) {
            return None;
        }
        Origin::new(scheme, authority)
    }

    /// `scheme` with a Host header value `host[:port]`.
    fn new(scheme: &str, authority: &str) -> Option<Origin> {
        let scheme = scheme.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return None,
        };
        // The port follows the last ':' outside an IPv6 literal's brackets.
        let port_at = match authority.rfind(']') {
            Some(close) => authority[close..].find(':').map(|i| close + i),
            None => authority.rfind(':'),
        };
        let (host, port) = match port_at {
            Some(i) => (&authority[..i], &authority[i + 1..]),
            None => (authority, ""),
        };
        let port = if port.is_empty() {
            default
        } else {
            port.parse().ok()?
        };
        let host = normalize_host(host).ok()?.into_owned();
        Some(Origin { scheme, host, port })
    }
}

/// Whose failures one budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    /// One client address (none when the edge sent no usable one) at one tenant.
    Address(Uuid, Option<IpAddr>),
    /// All addresses of one tenant.
    Tenant(Uuid),
}

/// Most budgets kept in memory; past it the least recently used are forgotten (an attacker
/// with that many addresses still meets the per-tenant budget, which is kept per tenant).
const MAX_BUDGETS: u64 = 200_000;

/// The failed-login budgets of an app process; see the module documentation. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LoginThrottle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    per_address: Rate,
    per_tenant: Rate,
    budgets: Cache<Key, Arc<Budget>>,
}

/// `limit` failures per `window`, refilled evenly: one every `window / limit`.
#[derive(Debug, Clone, Copy)]
struct Rate {
    window: Duration,
    interval: Duration,
}

impl Rate {
    fn new(limit: u32, window: Duration) -> Rate {
        Rate {
            window,
            interval: window / limit.max(1),
        }
    }
}

/// One budget as a leaky bucket: the instant at which it will be full again. (The GCRA of
/// `tenantgate_contract::gcra` counts whole requests per second; login budgets refill over
/// minutes.)
#[derive(Debug)]
struct Budget {
    full_at: Mutex<Instant>,
}

impl Budget {
    /// Take one failure at `now`; when the budget is empty, how long until it has one.
    fn take(&self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let mut full_at = self.full_at.lock().unwrap_or_else(|e| e.into_inner());
        let spent = full_at.saturating_duration_since(now);
        // Taking one more must keep the spent part within the window.
        if spent + rate.interval > rate.window {
            return Err(spent + rate.interval - rate.window);
        }
        *full_at = now.max(*full_at) + rate.interval;
        Ok(())
    }

    /// Whether one failure could be taken at `now`, without taking it; if not, how long until
    /// it could.
    fn available(&self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let full_at = self.full_at.lock().unwrap_or_else(|e| e.into_inner());
        let spent = full_at.saturating_duration_since(now);
        if spent + rate.interval > rate.window {
            return Err(spent + rate.interval - rate.window);
        }
        Ok(())
    }
}

impl LoginThrottle {
    /// Budgets as `[app]` configures them.
    pub fn new(config: &AppConfig) -> LoginThrottle {
        let window = config.login_failure_window;
        LoginThrottle {
            inner: Arc::new(Inner {
                per_address: Rate::new(config.login_failures_per_address, window),
                per_tenant: Rate::new(config.login_failures_per_tenant, window),
                // A budget untouched for a whole window is full again: forgetting it then
                // changes nothing.
                budgets: Cache::builder()
                    .max_capacity(MAX_BUDGETS)
                    .time_to_idle(window)
                    .build(),
            }),
        }
    }

    fn budget(&self, key: Key) -> Arc<Budget> {
        self.inner.budgets.get_with(key, || {
            Arc::new(Budget {
                full_at: Mutex::new(Instant::now()),
            })
        })
    }

    fn rate(&self, key: Key) -> Rate {
        match key {
            Key::Address(..) => self.inner.per_address,
            Key::Tenant(_) => self.inner.per_tenant,
        }
    }

    /// Start checking a credential of `tenant` from `client`: 429
    /// [`AppError::LoginThrottled`] when the address's budget is spent (nothing is taken).
    pub fn attempt(&self, tenant: Uuid, client: Option<IpAddr>) -> Result<Attempt, AppError> {
        let address = Key::Address(tenant, client);
        if let Err(wait) = self
            .budget(address)
            .available(self.rate(address), Instant::now())
        {
            return Err(AppError::LoginThrottled(retry_after(wait)));
        }
        Ok(Attempt {
            throttle: self.clone(),
            keys: [address, Key::Tenant(tenant)],
        })
    }
}

/// Whole seconds to wait, at least one.
fn retry_after(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// A credential check in progress; [`Attempt::settle`] counts it if it failed.
#[derive(Debug)]
pub struct Attempt {
    throttle: LoginThrottle,
    keys: [Key; 2],
}

impl Attempt {
    /// Pass the result of checking the credential through. An unknown or expired credential
    /// takes one failure from both budgets, and is 429 rather than 401 once either is spent.
    pub fn settle<T>(self, result: Result<T, AppError>) -> Result<T, AppError> {
        if !matches!(result, Err(AppError::Unauthenticated)) {
            return result;
        }
        let now = Instant::now();
        let mut throttled: Option<Duration> = None;
        for key in self.keys {
            let rate = self.throttle.rate(key);
            if let Err(wait) = self.throttle.budget(key).take(rate, now) {
                throttled = Some(throttled.map_or(wait, |w| w.max(wait)));
            }
        }
        match throttled {
            Some(wait) => Err(AppError::LoginThrottled(retry_after(wait))),
            None => result,
        }
    }
}

/// The client address the edge put in `x-forwarded-for` (the last entry, which the nearest
/// proxy added; the edge sends only one).
pub fn client_address(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get("x-forwarded-for")?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn same_origin_posts_pass_and_others_are_refused() {
        let edge = [
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "Acme.Example.com."),
            ("host", "10.0.0.5:8090"),
        ];
        let with = |origin: &str| {
            let mut h = headers(&edge);
            h.insert(ORIGIN, origin.parse().unwrap());
            check_origin(&h)
        };
        assert!(with("https://acme.example.com").is_ok());
        assert!(with("https://acme.example.com:443").is_ok());
        for refused in [
            "https://evil.example",
            "http://acme.example.com",
            "https://acme.example.com:8443",
            "https://globex.example.com",
            "null",
            "https://acme.example.com/login",
        ] {
            assert!(
                matches!(with(refused), Err(AppError::CrossOriginLogin)),
                "{refused}"
            );
        }
        // A non-default port is part of the origin on both sides.
        let mut h = headers(&[
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "acme.localhost:8080"),
        ]);
        h.insert(ORIGIN, "http://acme.localhost:8080".parse().unwrap());
        assert!(check_origin(&h).is_ok());
        h.insert(ORIGIN, "http://acme.localhost".parse().unwrap());
        assert!(check_origin(&h).is_err());
        let mut h = headers(&[("x-forwarded-host", "[::1]:8080")]);
        h.insert(ORIGIN, "http://[0:0::1]:8080".parse().unwrap());
        assert!(check_origin(&h).is_ok());
    }

    #[test]
    fn fetch_metadata_decides_without_origin() {
        assert!(check_origin(&headers(&[])).is_ok(), "non-browser clients");
        assert!(check_origin(&headers(&[("sec-fetch-site", "same-origin")])).is_ok());
        assert!(check_origin(&headers(&[("sec-fetch-site", "none")])).is_ok());
        for refused in ["cross-site", "same-site"] {
            assert!(check_origin(&headers(&[("sec-fetch-site", refused)])).is_err());
        }
    }

    #[test]
    fn a_budget_refuses_past_its_limit_and_refills() {
        let rate = Rate::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        let b = Budget {
            full_at: Mutex::new(t0),
        };
        for _ in 0..3 {
            assert!(b.take(rate, t0).is_ok());
        }
        assert_eq!(b.take(rate, t0), Err(Duration::from_secs(10)));
        // One failure refills every 10 s.
        assert!(b.take(rate, t0 + Duration::from_secs(10)).is_ok());
        assert!(b.available(rate, t0 + Duration::from_secs(10)).is_err());
        assert!(b.take(rate, t0 + Duration::from_secs(10)).is_err());
        // Looking does not take.
        assert!(b.available(rate, t0 + Duration::from_secs(20)).is_ok());
        assert!(b.available(rate, t0 + Duration::from_secs(20)).is_ok());
        assert!(b.take(rate, t0 + Duration::from_secs(20)).is_ok());
    }

    #[test]
    fn client_address_is_the_edges() {
        assert_eq!(
            client_address(&headers(&[("x-forwarded-for", "203.0.113.7")])),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(
            client_address(&headers(&[("x-forwarded-for", "1.2.3.4, 2001:db8::1")])),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(
            client_address(&headers(&[("x-forwarded-for", "junk")])),
            None
        );
    }
}
