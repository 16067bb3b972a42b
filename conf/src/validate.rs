//! Validation: the file's values turned into the internal [`Config`], every error naming its key.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tenantgate_contract::crypto::decode_key;
use tenantgate_contract::RateLimit;

use crate::db_url::Engine;
use crate::raw::RawConfig;
use crate::secrets::{self, SecretPolicy};
use crate::{
    AdminConfig, AppConfig, CatalogConfig, Config, ConfigError, EdgeConfig, Mode,
    TenantMigrationsConfig, TlsFallback,
};

fn addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(key, format!("{value:?} is not a socket address (ip:port)")))
}

/// The fallback certificate: both files or neither, readable, parsing, key matching.
fn tls_fallback(cert: &str, key: &str) -> Result<Option<TlsFallback>, ConfigError> {
    let (cert_key, key_key) = ("edge.tls_fallback_cert", "edge.tls_fallback_key");
    match (cert.is_empty(), key.is_empty()) {
        (true, true) => return Ok(None),
        (false, true) => {
            return Err(ConfigError::new(
                key_key,
                format!("must be set with {cert_key}"),
            ))
        }
        (true, false) => {
            return Err(ConfigError::new(
                cert_key,
                format!("must be set with {key_key}"),
            ))
        }
        (false, false) => {}
    }
    let read = |name: &str, path: &str| {
        std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(name, format!("cannot read {path:?}: {e}")))
    };
    let fallback = TlsFallback {
        cert_pem: read(cert_key, cert)?,
        key_pem: read(key_key, key)?,
    };
    if let Err(e) = tenantgate_contract::tls::certified_key(&fallback.cert_pem, &fallback.key_pem) {
        let name = match e {
            tenantgate_contract::tls::CertError::BadCertificatePem(_) => cert_key,
            _ => key_key,
        };
        return Err(ConfigError::new(name, e.to_string()));
    }
    Ok(Some(fallback))
}

pub(crate) fn range<T: PartialOrd + fmt::Display + Copy>(
    key: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    if value < min || value > max {
        Err(ConfigError::new(
            key,
            format!("{value} is out of range {min}..={max}"),
        ))
    } else {
        Ok(value)
    }
}

fn ms(key: &str, value: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    range(key, value, min, max).map(Duration::from_millis)
}

fn secs(key: &str, value: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    range(key, value, min, max).map(Duration::from_secs)
}

pub(crate) fn key_bytes(key: &str, text: &str, min_len: usize) -> Result<Vec<u8>, ConfigError> {
    let bytes = decode_key(text).ok_or_else(|| ConfigError::new(key, "is not valid base64"))?;
    if bytes.len() < min_len {
        return Err(ConfigError::new(
            key,
            format!("must decode to at least {min_len} bytes"),
        ));
    }
    Ok(bytes)
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    /// Validate for running: in production every secret must be given.
    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        validate(raw, SecretPolicy::Require).map(|(config, _)| config)
    }
}

/// Validate `raw`; with [`SecretPolicy::Defer`], production secrets that are missing are listed
/// (by key) instead of refused, and the returned configuration holds throwaway values for them.
pub(crate) fn validate(
    raw: RawConfig,
    policy: SecretPolicy,
) -> Result<(Config, Vec<String>), ConfigError> {
    {
        let mode = match raw.mode.as_deref() {
            None | Some("dev") => Mode::Dev,
            Some("production") => Mode::Production,
            Some(other) => {
                return Err(ConfigError::new(
                    "mode",
                    format!("{other:?} is not one of \"dev\", \"production\""),
                ))
            }
        };
        let mut warnings = Vec::new();
        let mut deferred = Vec::new();

        let c = &raw.catalog;
        if let Err(e) = Engine::of_valid_url(&c.url) {
            return Err(ConfigError::new("catalog.url", e.to_string()));
        }
        let catalog = CatalogConfig {
            url: c.url.clone(),
            max_connections: range("catalog.max_connections", c.max_connections, 1, 1000)?,
            poll_interval: ms("catalog.poll_interval_ms", c.poll_interval_ms, 10, 60_000)?,
            negative_ttl: ms("catalog.negative_ttl_ms", c.negative_ttl_ms, 0, 3_600_000)?,
            stale_max: secs("catalog.stale_max_secs", c.stale_max_secs, 0, 7 * 86_400)?,
            cache_capacity: range("catalog.cache_capacity", c.cache_capacity, 100, 100_000_000)?,
            miss_queries_per_sec: range(
                "catalog.miss_queries_per_sec",
                c.miss_queries_per_sec,
                1,
                1_000_000,
            )?,
            query_timeout: ms("catalog.query_timeout_ms", c.query_timeout_ms, 50, 60_000)?,
            listen_heartbeat: ms(
                "catalog.listen_heartbeat_ms",
                c.listen_heartbeat_ms,
                100,
                600_000,
            )?,
        };

        let e = &raw.edge;
        let (limits_backend, fleet_size) = crate::limits::limits(e, policy, &mut deferred)?;
        let edge = EdgeConfig {
            listen: addr("edge.listen", &e.listen)?,
            metrics_listen: addr("edge.metrics_listen", &e.metrics_listen)?,
            default_rate_limit: RateLimit {
                rps: range("edge.default_rps", e.default_rps, 1, 10_000_000)?,
                burst: range("edge.default_burst", e.default_burst, 1, 10_000_000)?,
            },
            max_inflight_per_tenant: match e.max_inflight_per_tenant {
                0 => None,
                n => Some(range("edge.max_inflight_per_tenant", n, 1, 1_000_000)?),
            },
            per_client_share: tenantgate_contract::ClientShare::try_from(e.per_client_share)
                .map_err(|m| ConfigError::new("edge.per_client_share", m))?,
            health_interval: ms("edge.health_interval_ms", e.health_interval_ms, 50, 600_000)?,
            health_timeout: ms("edge.health_timeout_ms", e.health_timeout_ms, 10, 60_000)?,
            connect_timeout: ms("edge.connect_timeout_ms", e.connect_timeout_ms, 10, 60_000)?,
            usage_flush: secs("edge.usage_flush_secs", e.usage_flush_secs, 1, 300)?,
            unhealthy_threshold: range("edge.unhealthy_threshold", e.unhealthy_threshold, 1, 100)?,
            healthy_threshold: range("edge.healthy_threshold", e.healthy_threshold, 1, 100)?,
            max_header_bytes: range("edge.max_header_bytes", e.max_header_bytes, 1024, 1 << 20)?,
            body_timeout: ms("edge.body_timeout_ms", e.body_timeout_ms, 100, 3_600_000)?,
            moving_hold: ms("edge.moving_hold_ms", e.moving_hold_ms, 0, 120_000)?,
            threads: range("edge.threads", e.threads, 1, 256)?,
            tenant_label_limit: range(
                "edge.tenant_label_limit",
                e.tenant_label_limit,
                1,
                1_000_000,
            )?,
            tenant_label_idle: secs(
                "edge.tenant_label_idle_secs",
                e.tenant_label_idle_secs,
                1,
                30 * 86_400,
            )?,
            grace_period: secs("edge.grace_period_secs", e.grace_period_secs, 0, 3600)?,
            tls_listen: match e.tls_listen.as_str() {
                "" => None,
                text => Some(addr("edge.tls_listen", text)?),
            },
            tls_fallback: tls_fallback(&e.tls_fallback_cert, &e.tls_fallback_key)?,
            limits_backend,
            fleet_size,
        };

        let a = &raw.admin;
        if let Some(t) = &a.bootstrap_token {
            if t.len() < 16 {
                return Err(ConfigError::new(
                    "admin.bootstrap_token",
                    "must be at least 16 characters",
                ));
            }
        }
        for (i, url) in a.webhook_urls.iter().enumerate() {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::new(
                    format!("admin.webhook_urls[{i}]"),
                    "must be an http:// or https:// URL",
                ));
            }
        }
        if !a.webhook_urls.is_empty() && a.webhook_secret.is_none() {
            if mode == Mode::Production && policy == SecretPolicy::Defer {
                deferred.push("admin.webhook_secret".to_string());
            } else {
                return Err(ConfigError::new(
                    "admin.webhook_secret",
                    "is required when admin.webhook_urls is set",
                ));
            }
        }
        let admin = AdminConfig {
            listen: addr("admin.listen", &a.listen)?,
            bootstrap_token: a.bootstrap_token.clone(),
            deletion_grace: secs(
                "admin.deletion_grace_secs",
                a.deletion_grace_secs,
                0,
                365 * 86_400,
            )?,
            job_lease: secs("admin.job_lease_secs", a.job_lease_secs, 1, 3600)?,
            job_max_attempts: range("admin.job_max_attempts", a.job_max_attempts, 1, 100)?,
            job_concurrency: range("admin.job_concurrency", a.job_concurrency, 1, 64)? as usize,
            webhook_urls: a.webhook_urls.clone(),
            webhook_secret: a.webhook_secret.clone(),
            rate_limit: match a.rate_limit_rps {
                0 => None,
                rps => Some(RateLimit {
                    rps: range("admin.rate_limit_rps", rps, 1, 1_000_000)?,
                    burst: range("admin.rate_limit_burst", a.rate_limit_burst, 1, 1_000_000)?,
                }),
            },
        };

        let p = &raw.app;
        if p.shard.is_empty() {
            return Err(ConfigError::new("app.shard", "must not be empty"));
        }
        let app = AppConfig {
            listen: addr("app.listen", &p.listen)?,
            shard: p.shard.clone(),
            connection_budget: range("app.connection_budget", p.connection_budget, 1, 100_000)?,
            pool_idle: secs("app.pool_idle_secs", p.pool_idle_secs, 1, 86_400)?,
            acquire_timeout: ms("app.acquire_timeout_ms", p.acquire_timeout_ms, 1, 120_000)?,
            read_your_writes: ms(
                "app.read_your_writes_ms",
                p.read_your_writes_ms,
                0,
                3_600_000,
            )?,
            tenant_label_limit: range(
                "app.tenant_label_limit",
                p.tenant_label_limit,
                1,
                1_000_000,
            )?,
            tenant_label_idle: secs(
                "app.tenant_label_idle_secs",
                p.tenant_label_idle_secs,
                1,
                30 * 86_400,
            )?,
            login_failures_per_address: range(
                "app.login_failures_per_address",
                p.login_failures_per_address,
                1,
                1_000_000,
            )?,
            login_failures_per_tenant: range(
                "app.login_failures_per_tenant",
                p.login_failures_per_tenant,
                1,
                1_000_000,
            )?,
            login_failure_window: secs(
                "app.login_failure_window_secs",
                p.login_failure_window_secs,
                1,
                86_400,
            )?,
            session_ttl: secs("app.session_ttl_secs", p.session_ttl_secs, 60, 30 * 86_400)?,
        };

        let security =
            secrets::security(&raw.security, mode, policy, &mut warnings, &mut deferred)?;
        let backups = crate::backups::backups(&raw.backups, &mut warnings)?;
        let acme = crate::acme::acme(&raw.acme)?;
        let config = Config {
            mode,
            catalog,
            edge,
            admin,
            app,
            security,
            tenant_migrations: TenantMigrationsConfig {
                dir: raw.tenant_migrations.dir.clone(),
            },
            backups,
            acme,
            warnings,
        };
        Ok((config, deferred))
    }
}
