//! Field validation of API requests. Each check pushes a [`FieldError`] naming the field, so one
//! 422 answer lists every problem of a request at once.

use tenantgate_config::db_url::Engine;
use tenantgate_contract::host::{normalize_host, DomainSpec};
use tenantgate_contract::settings::{SettingsErrors, TenantSettings};
use tenantgate_contract::RateLimit;

use crate::error::{AdminError, FieldError};

/// Highest `rps` a tenant's own limit may have.
pub(crate) const MAX_RPS: u32 = 1_000_000;
/// Highest `burst` a tenant's own limit may have.
pub(crate) const MAX_BURST: u32 = 10_000_000;
/// Longest display name, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 200;
/// Most domains per tenant.
const MAX_DOMAINS: usize = 50;

/// Collects field errors; [`Errors::finish`] turns them into one 422.
#[derive(Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub(crate) fn finish(self) -> Result<(), AdminError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(AdminError::Invalid(self.0))
        }
    }
}

/// A slug (and a shard name): `^[a-z][a-z0-9-]{1,62}$`, not ending in `-`.
///
/// Slugs appear in metric labels, URLs and headers, so they are kept to a small alphabet.
pub(crate) fn slug(errors: &mut Errors, field: &str, value: &str) {
    let ok = (2..=63).contains(&value.len())
        && value.as_bytes()[0].is_ascii_lowercase()
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.ends_with('-');
    if !ok {
        errors.add(
            field,
            "must be 2-63 characters of a-z, 0-9 and '-', start with a letter and not end with '-'",
        );
    }
}

/// A display name: not blank, at most 200 characters, no control characters.
pub(crate) fn name(errors: &mut Errors, field: &str, value: &str) {
    if value.trim().is_empty() {
        errors.add(field, "must not be empty");
    } else if value.chars().count() > MAX_NAME_CHARS {
        errors.add(
            field,
            format!("must be at most {MAX_NAME_CHARS} characters"),
        );
    } else if value.chars().any(char::is_control) {
        errors.add(field, "must not contain control characters");
    }
}

/// One domain (`host` or `host/prefix`), normalised.
pub(crate) fn domain(errors: &mut Errors, field: &str, value: &str) -> Option<DomainSpec> {
    match DomainSpec::parse(value) {
        Ok(spec) => Some(spec),
        Err(e) => {
            errors.add(field, e.to_string());
            None
        }
    }
}

/// A tenant's domain list: 1 to 50 valid, distinct domains.
pub(crate) fn domains(errors: &mut Errors, values: &[String]) -> Vec<DomainSpec> {
    if values.is_empty() {
        errors.add("domains", "must list at least one domain");
    }
    if values.len() > MAX_DOMAINS {
        errors.add(
            "domains",
            format!("must list at most {MAX_DOMAINS} domains"),
        );
    }
    let mut specs: Vec<DomainSpec> = Vec::new();
    for (i, value) in values.iter().enumerate() {
        let field = format!("domains[{i}]");
        if let Some(spec) = domain(errors, &field, value) {
            if specs.contains(&spec) {
                errors.add(field, format!("{spec} is listed twice"));
            } else {
                specs.push(spec);
            }
        }
    }
    specs
}

/// A tenant's own rate limit: `rps` in 1..=1,000,000, `burst` in 1..=10,000,000 and at least 1.
pub(crate) fn rate_limit(errors: &mut Errors, limit: &RateLimit) {
    if !(1..=MAX_RPS).contains(&limit.rps) {
        errors.add("rate_limit.rps", format!("must be between 1 and {MAX_RPS}"));
    }
    if !(1..=MAX_BURST).contains(&limit.burst) {
        errors.add(
            "rate_limit.burst",
            format!("must be between 1 and {MAX_BURST}"),
        );
    }
}

/// Tenant settings, checked by the tenant contract's typed schema
/// ([`TenantSettings`](tenantgate_contract::TenantSettings)); its error names the field.
pub(crate) fn settings(
    errors: &mut Errors,
    parsed: Result<TenantSettings, SettingsErrors>,
) -> Option<TenantSettings> {
    match parsed {
        Ok(settings) => Some(settings),
        Err(invalid) => {
            for e in invalid.0 {
                errors.add(e.field, e.message);
            }
            None
        }
    }
}

/// App upstreams of a shard: at least one `host:port` with a valid host and a non-zero port.
pub(crate) fn upstreams(errors: &mut Errors, values: &[String]) {
    if values.is_empty() {
        errors.add("app_upstreams", "must list at least one host:port");
    }
    for (i, value) in values.iter().enumerate() {
        let field = format!("app_upstreams[{i}]");
        let ok = value.rsplit_once(':').is_some_and(|(host, port)| {
            port.parse::<u16>().is_ok_and(|p| p != 0)
                && !host.is_empty()
                && normalize_host(host).is_ok()
        });
        if !ok {
            errors.add(field, "must be host:port");
        }
    }
}

/// A shard's database location: a PostgreSQL server URL or `sqlite://DIR`.
pub(crate) fn database_url(errors: &mut Errors, value: &str) -> Option<Engine> {
    let backend = match Engine::of_url(value) {
        Ok(b) => b,
        Err(_) => {
            errors.add("database_url", "must be a postgres:// URL or sqlite://DIR");
            return None;
        }
    };
    let ok = match backend {
        Engine::Sqlite => !tenantgate_config::db_url::sqlite_path(value).is_empty(),
        Engine::Postgres => url::Url::parse(value).is_ok_and(|u| u.host_str().is_some()),
    };
    if !ok {
        errors.add("database_url", "is not a valid URL");
        return None;
    }
    Some(backend)
}

/// Replicas of a shard: PostgreSQL URLs, only on a PostgreSQL shard.
pub(crate) fn replicas(errors: &mut Errors, backend: Option<Engine>, values: &[String]) {
    if backend == Some(Engine::Sqlite) && !values.is_empty() {
        errors.add("replicas", "a SQLite shard has no replicas");
        return;
    }
    for (i, value) in values.iter().enumerate() {
        if !matches!(Engine::of_url(value), Ok(Engine::Postgres)) || url::Url::parse(value).is_err()
        {
            errors.add(format!("replicas[{i}]"), "must be a postgres:// URL");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(f: impl FnOnce(&mut Errors)) -> Vec<String> {
        let mut e = Errors::default();
        f(&mut e);
        e.0.into_iter().map(|f| f.field).collect()
    }

    #[test]
    fn slugs() {
        for good in ["ab", "acme", "a-1", "globex-2"] {
            assert!(check(|e| slug(e, "slug", good)).is_empty(), "{good}");
        }
        for bad in ["a", "1abc", "Acme", "ac_me", "acme-", "", &"a".repeat(64)] {
            assert_eq!(check(|e| slug(e, "slug", bad)), ["slug"], "{bad}");
        }
    }

    #[test]
    fn upstreams_and_urls() {
        assert!(
            check(|e| upstreams(e, &["127.0.0.1:8090".into(), "app.local:80".into()])).is_empty()
        );
        assert_eq!(
            check(|e| upstreams(e, &["nohost".into(), ":80".into()])),
            ["app_upstreams[0]", "app_upstreams[1]"]
        );
        assert_eq!(check(|e| upstreams(e, &[])), ["app_upstreams"]);
        assert_eq!(
            check(|e| {
                database_url(e, "mysql://x");
            }),
            ["database_url"]
        );
        assert!(check(|e| {
            database_url(e, "sqlite://data/shard-a");
        })
        .is_empty());
        assert!(check(|e| {
            database_url(e, "postgres://u:p@h:5432/postgres");
        })
        .is_empty());
    }
}
