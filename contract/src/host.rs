//! Host rules: the one definition of "the same host", of which route on a host serves a path, of
//! prefix stripping and of host ownership, for the edge, the admin API and the catalog.
//!
//! A host is lower-cased, its port and one trailing dot removed, internationalised labels turned
//! into punycode, and anything that is not a valid DNS name or IP literal rejected. The edge calls
//! [`normalize_host`] on every request, so the common case (already lower-case ASCII, no port)
//! borrows the input and allocates nothing.

use std::borrow::Cow;
use std::net::Ipv6Addr;

use thiserror::Error;

/// Longest host name we accept, in bytes, after normalisation (DNS limit).
pub const MAX_HOST_LEN: usize = 253;
/// Longest DNS label, in bytes.
pub const MAX_LABEL_LEN: usize = 63;
/// Longest path prefix of a domain, in bytes.
pub const MAX_PREFIX_LEN: usize = 63;

/// Why a host or domain was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HostError {
    #[error("host is empty")]
    Empty,
    #[error("host is longer than {MAX_HOST_LEN} bytes")]
    TooLong,
    #[error("host has an invalid port")]
    BadPort,
    #[error("host contains an invalid character")]
    BadCharacter,
    #[error("host has an empty or invalid label")]
    BadLabel,
    #[error("internationalised host name is invalid")]
    BadIdn,
    #[error("path prefix must be one segment of letters, digits, '-', '_' or '.'")]
    BadPrefix,
}

/// Normalise a Host header value (or a host typed by an operator).
///
/// Returns the input borrowed when it is already normal.
pub fn normalize_host(raw: &str) -> Result<Cow<'_, str>, HostError> {
    if raw.is_empty() {
        return Err(HostError::Empty);
    }
    let host = strip_port(raw)?;
    if let Some(inner) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets, canonical lower-case form.
        let inner = inner.strip_suffix(']').ok_or(HostError::BadCharacter)?;
        let addr: Ipv6Addr = inner.parse().map_err(|_| HostError::BadCharacter)?;
        return Ok(Cow::Owned(format!("[{addr}]")));
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    if host.is_ascii() {
        let mut needs_lowering = false;
        for b in host.bytes() {
            match b {
                b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' => {}
                b'A'..=b'Z' => needs_lowering = true,
                _ => return Err(HostError::BadCharacter),
            }
        }
        // Punycode labels must round-trip through IDNA to be valid.
        let has_puny = host
            .split('.')
            .any(|l| l.len() >= 4 && l[..4].eq_ignore_ascii_case("xn--"));
        if has_puny {
            return to_ascii(host).map(Cow::Owned);
        }
        check_labels(host)?;
        return Ok(if needs_lowering {
            Cow::Owned(host.to_ascii_lowercase())
        } else if host.len() == raw.len() {
            Cow::Borrowed(raw)
        } else {
            Cow::Borrowed(host)
        });
    }
    to_ascii(host).map(Cow::Owned)
}

fn to_ascii(host: &str) -> Result<String, HostError> {
    let ascii = idna::domain_to_ascii_strict(host).map_err(|_| HostError::BadIdn)?;
    if ascii
        .bytes()
        .any(|b| !matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'))
    {
        return Err(HostError::BadCharacter);
    }
    check_labels(&ascii)?;
    Ok(ascii)
}

fn strip_port(raw: &str) -> Result<&str, HostError> {
    let (host, port) = if raw.starts_with('[') {
        match raw.find(']') {
            Some(end) => {
                let rest = &raw[end + 1..];
                match rest.strip_prefix(':') {
                    Some(port) => (&raw[..=end], Some(port)),
                    None if rest.is_empty() => (raw, None),
                    None => return Err(HostError::BadCharacter),
                }
            }
            None => return Err(HostError::BadCharacter),
        }
    } else {
        match raw.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    };
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| p <= 65_535);
        if !valid {
            return Err(HostError::BadPort);
        }
    }
    Ok(host)
}

fn check_labels(host: &str) -> Result<(), HostError> {
    if host.len() > MAX_HOST_LEN {
        return Err(HostError::TooLong);
    }
    for label in host.split('.') {
        if label.is_empty()
            || label.len() > MAX_LABEL_LEN
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(HostError::BadLabel);
        }
    }
    Ok(())
}

/// A domain as operators write it: `acme.example.com` or `app.example.com/acme`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainSpec {
    /// Normalised host.
    pub host: String,
    /// One path segment, without slashes; `None` for a whole-host domain.
    pub path_prefix: Option<String>,
}

impl DomainSpec {
    /// Parse and normalise `host` or `host/prefix`.
    pub fn parse(spec: &str) -> Result<DomainSpec, HostError> {
        let (host, prefix) = match spec.split_once('/') {
            Some((host, prefix)) => (host, Some(prefix.strip_suffix('/').unwrap_or(prefix))),
            None => (spec, None),
        };
        let host = normalize_host(host)?.into_owned();
        let path_prefix = match prefix {
            None => None,
            Some(p) if valid_prefix(p) => Some(p.to_string()),
            Some(_) => return Err(HostError::BadPrefix),
        };
        Ok(DomainSpec { host, path_prefix })
    }
}

impl std::fmt::Display for DomainSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path_prefix {
            Some(p) => write!(f, "{}/{}", self.host, p),
            None => f.write_str(&self.host),
        }
    }
}

/// A path prefix is one non-empty segment of unreserved characters and never `.` or `..`.
pub fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= MAX_PREFIX_LEN
        && p != "."
        && p != ".."
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The first segment of a request path (`/acme/items?x=1` → `acme`; `/` → ``).
pub fn first_segment(path_and_query: &str) -> &str {
    let path = path_and_query.strip_prefix('/').unwrap_or(path_and_query);
    let end = path.find(['/', '?']).unwrap_or(path.len());
    &path[..end]
}

/// The first segment of a request path and the rest (starting with `/`, or `/` when empty):
/// the rest is what a host + prefix route forwards.
///
/// `"/acme/items?x=1"` gives `("acme", "/items?x=1")`.
pub fn split_first_segment(path_and_query: &str) -> (&str, Cow<'_, str>) {
    let first = first_segment(path_and_query);
    let skip = usize::from(path_and_query.starts_with('/')) + first.len();
    let rest = &path_and_query[skip..];
    let rest = if rest.is_empty() {
        Cow::Borrowed("/")
    } else if rest.starts_with('?') {
        Cow::Owned(format!("/{rest}"))
    } else {
        Cow::Borrowed(rest)
    };
    (first, rest)
}

/// The route among a host's routes that serves `path`: a host + prefix route whose prefix is the
/// first path segment, else the whole-host route. Returns whether a prefix matched (its segment
/// is then stripped before forwarding, see [`split_first_segment`]).
///
/// `prefix_of` gives a route's path prefix (`None` for a whole-host route). The edge, the admin
/// API's `/v1/resolve` and the tests all choose through this function.
pub fn route_for<'a, R>(
    routes: &'a [R],
    path: &str,
    prefix_of: impl Fn(&R) -> Option<&str>,
) -> Option<(&'a R, bool)> {
    if routes.iter().any(|r| prefix_of(r).is_some()) {
        let first = first_segment(path);
        if let Some(r) = routes.iter().find(|r| prefix_of(r) == Some(first)) {
            return Some((r, true));
        }
    }
    routes
        .iter()
        .find(|r| prefix_of(r).is_none())
        .map(|r| (r, false))
}

/// Why a domain cannot be added to a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum OwnershipConflict {
    /// Exactly this domain (host, or host + prefix) already exists.
    #[error("the domain is taken")]
    Taken,
    /// A prefix domain on a host that another tenant owns whole.
    #[error("the host is owned whole by another tenant, so it cannot take path-prefix tenants")]
    HostOwnedWhole,
    /// A whole host on which other tenants have path-prefix domains.
    #[error("other tenants have path-prefix domains on this host, so it cannot be owned whole")]
    HostShared,
}

/// The host ownership rule: a host is owned whole by one tenant or shared by path-prefix
/// tenants, never both. `existing` lists the domains already on `new.host` as (path prefix,
/// tenant). One tenant may have both its whole host and prefixes on it.
///
/// The rule exists because a prefix tenant on another tenant's host would receive that
/// tenant's cookies (browsers scope cookies by host, and the app scopes them by prefix only on
/// shared hosts).
pub fn check_ownership<T: PartialEq>(
    new: &DomainSpec,
    tenant: &T,
    existing: &[(Option<&str>, T)],
) -> Result<(), OwnershipConflict> {
    for (prefix, owner) in existing {
        if *prefix == new.path_prefix.as_deref() {
            return Err(OwnershipConflict::Taken);
        }
        if owner == tenant {
            continue;
        }
        match (new.path_prefix.is_some(), prefix.is_some()) {
            (true, false) => return Err(OwnershipConflict::HostOwnedWhole),
            (false, true) => return Err(OwnershipConflict::HostShared),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn normalises_case_port_and_trailing_dot() {
        assert_eq!(
            normalize_host("Acme.Example.COM.").unwrap(),
            "acme.example.com"
        );
        assert_eq!(
            normalize_host("acme.example.com:8080").unwrap(),
            "acme.example.com"
        );
        assert_eq!(normalize_host("acme.localhost").unwrap(), "acme.localhost");
        assert!(matches!(
            normalize_host("acme.localhost").unwrap(),
            Cow::Borrowed(_)
        ));
        assert_eq!(normalize_host("[::1]:80").unwrap(), "[::1]");
        assert_eq!(normalize_host("127.0.0.1:80").unwrap(), "127.0.0.1");
    }

    #[test]
    fn converts_international_names_to_punycode() {
        assert_eq!(
            normalize_host("Bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_host("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_host("XN--BCHER-KVA.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn rejects_invalid_hosts() {
        for bad in [
            "",
            ".",
            "a..b",
            "-a.com",
            "a-.com",
            "a b.com",
            "a/b.com",
            "a\\b",
            "t1.example.com/../x",
            "user@host",
            "host:",
            "host:99999",
            "host:80:80",
            "host:abc",
            "a_b.com",
            "\u{0}x",
            "[::1",
            "[zz]",
            "xn--.com",
            &"a".repeat(64),
            &format!("{}.com", ["a"; 130].join(".")),
        ] {
            assert!(normalize_host(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn parses_domain_specs() {
        let d = DomainSpec::parse("App.Example.com/acme").unwrap();
        assert_eq!(d.host, "app.example.com");
        assert_eq!(d.path_prefix.as_deref(), Some("acme"));
        assert_eq!(d.to_string(), "app.example.com/acme");
        assert_eq!(DomainSpec::parse("a.com").unwrap().path_prefix, None);
        for bad in ["a.com/..", "a.com/a/b", "a.com/%2F", "a.com/", "/x"] {
            assert!(DomainSpec::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn chooses_prefix_route_before_whole_host() {
        let routes = [(None, "host"), (Some("acme"), "acme")];
        let pick = |path| route_for(&routes, path, |r| r.0).map(|(r, p)| (r.1, p));
        assert_eq!(pick("/acme/x"), Some(("acme", true)));
        assert_eq!(pick("/acme?x=1"), Some(("acme", true)));
        assert_eq!(pick("/acmex/y"), Some(("host", false)));
        assert_eq!(pick("/"), Some(("host", false)));
        let only_prefix = [(Some("acme"), "acme")];
        assert_eq!(route_for(&only_prefix, "/other", |r| r.0), None);
        assert_eq!(first_segment("/a/b"), "a");
        assert_eq!(first_segment("/"), "");
    }

    #[test]
    fn a_host_is_owned_whole_or_shared_by_prefixes() {
        let spec = |s| DomainSpec::parse(s).unwrap();
        let whole_of_globex = [(None, "globex")];
        assert_eq!(
            check_ownership(&spec("globex.localhost/admin"), &"acme", &whole_of_globex),
            Err(OwnershipConflict::HostOwnedWhole)
        );
        assert_eq!(
            check_ownership(&spec("globex.localhost/admin"), &"globex", &whole_of_globex),
            Ok(())
        );
        let shared = [(Some("a"), "acme"), (Some("b"), "globex")];
        assert_eq!(
            check_ownership(&spec("app.test"), &"acme", &shared),
            Err(OwnershipConflict::HostShared)
        );
        assert_eq!(
            check_ownership(&spec("app.test/c"), &"initech", &shared),
            Ok(())
        );
        assert_eq!(
            check_ownership(&spec("app.test/a"), &"initech", &shared),
            Err(OwnershipConflict::Taken)
        );
        assert_eq!(check_ownership(&spec("new.test"), &"acme", &[]), Ok(()));
    }

    #[test]
    fn splits_first_path_segment() {
        assert_eq!(
            split_first_segment("/acme/items?x=1"),
            ("acme", "/items?x=1".into())
        );
        assert_eq!(split_first_segment("/acme"), ("acme", "/".into()));
        assert_eq!(split_first_segment("/acme?x"), ("acme", "/?x".into()));
        assert_eq!(split_first_segment("/"), ("", "/".into()));
    }

    proptest! {
        #[test]
        fn normalisation_is_idempotent(raw in "[a-zA-Z0-9.\\-:]{0,40}") {
            if let Ok(once) = normalize_host(&raw) {
                let twice = normalize_host(&once).expect("normal host must stay valid");
                prop_assert_eq!(&*once, &*twice);
            }
        }

        #[test]
        fn normal_hosts_are_lowercase_without_port_or_trailing_dot(raw in "\\PC{0,30}") {
            if let Ok(host) = normalize_host(&raw) {
                prop_assert!(!host.is_empty());
                prop_assert!(!host.ends_with('.'));
                prop_assert!(host.len() <= MAX_HOST_LEN);
                if !host.starts_with('[') {
                    prop_assert!(!host.contains(':'));
                    prop_assert!(host.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.')));
                }
            }
        }

        #[test]
        fn case_port_and_dot_do_not_change_identity(
            labels in proptest::collection::vec("[a-z0-9]{1,10}", 1..4),
            port in proptest::option::of(1u16..),
            upper in any::<bool>(),
            dot in any::<bool>(),
        ) {
            let base = labels.join(".");
            let mut variant = if upper { base.to_uppercase() } else { base.clone() };
            if dot { variant.push('.'); }
            if let Some(p) = port { variant.push_str(&format!(":{p}")); }
            prop_assert_eq!(normalize_host(&variant).unwrap(), normalize_host(&base).unwrap());
        }
    }
}
