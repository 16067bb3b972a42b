//! Configuration: TOML plus `TENANTGATE__SECTION__KEY` environment overrides, checked once and
//! turned into internal types that cannot hold an invalid value.
//!
//! The `Raw*` structs mirror the file (unknown keys are errors); `TryFrom` turns them into
//! [`Config`]. Every error names the key it is about, and nothing binds before loading succeeds.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crypto::{decode_key, random_secret, CredentialKey};
use crate::model::RateLimit;
use crate::signing::SigningKeys;

/// Prefix of environment overrides: `TENANTGATE__EDGE__LISTEN=127.0.0.1:9000`.
pub const ENV_PREFIX: &str = "TENANTGATE__";

/// A configuration error that names the key (`edge.listen`) or the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key, or the file path for read and syntax errors.
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error at `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// The file, as written.
// ---------------------------------------------------------------------------------------------

/// The configuration file. Every section is optional; every key has a default except secrets.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `dev` or `production`. Production refuses to start without explicit secrets. Default `dev`.
    pub mode: Option<String>,
    pub catalog: RawCatalog,
    pub edge: RawEdge,
    pub admin: RawAdmin,
    pub app: RawApp,
    pub security: RawSecurity,
    pub tenant_migrations: RawTenantMigrations,
}

/// `[catalog]`: where the catalog lives and how components cache and follow it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCatalog {
    /// `postgres://…` or `sqlite://PATH`. Default `sqlite://data/catalog.db`.
    pub url: String,
    /// Connections per process to the catalog. Default 8.
    pub max_connections: u32,
    /// Milliseconds between change-feed polls (PostgreSQL also pushes via NOTIFY). Default 500.
    pub poll_interval_ms: u64,
    /// Milliseconds an unknown host stays cached as unknown. Default 2000.
    pub negative_ttl_ms: u64,
    /// Seconds the edge keeps serving cached routes while the catalog is unreachable. Default 300.
    pub stale_max_secs: u64,
    /// Most hosts the route cache holds. Default 1,000,000.
    pub cache_capacity: u64,
    /// Most catalog lookups per second for uncached hosts; beyond it, 503. Default 500.
    pub miss_queries_per_sec: u32,
}

impl Default for RawCatalog {
    fn default() -> Self {
        RawCatalog {
            url: "sqlite://data/catalog.db".into(),
            max_connections: 8,
            poll_interval_ms: 500,
            negative_ttl_ms: 2000,
            stale_max_secs: 300,
            cache_capacity: 1_000_000,
            miss_queries_per_sec: 500,
        }
    }
}

/// `[edge]`: the Pingora proxy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawEdge {
    /// Address for tenant traffic. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Address of the edge's `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:8082`.
    pub metrics_listen: String,
    /// Requests per second for tenants without their own limit. Default 100.
    pub default_rps: u32,
    /// Burst for tenants without their own limit. Default 200.
    pub default_burst: u32,
    /// Most concurrent requests per tenant; 0 = unlimited. Default 0.
    pub max_inflight_per_tenant: u32,
    /// Milliseconds between active health checks of each backend. Default 1000.
    pub health_interval_ms: u64,
    /// Milliseconds a health check may take. Default 500.
    pub health_timeout_ms: u64,
    /// Consecutive failures that mark a backend down. Default 2.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that mark a backend up again. Default 1.
    pub healthy_threshold: u32,
    /// Total bytes of request headers before answering 431. Default 32768.
    pub max_header_bytes: usize,
    /// Milliseconds a request for a tenant in `moving` is held before 503. Default 5000.
    pub moving_hold_ms: u64,
    /// Worker threads of the proxy. Default 1 (measured best per CPU second).
    pub threads: usize,
    /// Distinct tenants labelled in metrics before the rest count as `_other`. Default 1000.
    pub tenant_label_limit: usize,
    /// Seconds without traffic after which a tenant's metric series are dropped. Default 3600.
    pub tenant_label_idle_secs: u64,
    /// Seconds SIGTERM waits for in-flight requests. Default 10.
    pub grace_period_secs: u64,
}

impl Default for RawEdge {
    fn default() -> Self {
        RawEdge {
            listen: "127.0.0.1:8080".into(),
            metrics_listen: "127.0.0.1:8082".into(),
            default_rps: 100,
            default_burst: 200,
            max_inflight_per_tenant: 0,
            health_interval_ms: 1000,
            health_timeout_ms: 500,
            unhealthy_threshold: 2,
            healthy_threshold: 1,
            max_header_bytes: 32 * 1024,
            moving_hold_ms: 5000,
            threads: 1,
            tenant_label_limit: 1000,
            tenant_label_idle_secs: 3600,
            grace_period_secs: 10,
        }
    }
}

/// `[admin]`: the admin API and provisioning worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Address of the admin API. Default `127.0.0.1:8081`.
    pub listen: String,
    /// Token with write scope accepted without a catalog row (secret). Default none.
    pub bootstrap_token: Option<String>,
    /// Seconds between deleting a tenant and dropping its database. Default 604800 (7 days).
    pub deletion_grace_secs: u64,
    /// Seconds a worker holds a job before another may take it over. Default 30.
    pub job_lease_secs: u64,
    /// Attempts of a job step before the job fails. Default 5.
    pub job_max_attempts: u32,
    /// URLs that receive tenant events as signed JSON. Default none.
    pub webhook_urls: Vec<String>,
    /// Secret for webhook signatures (secret). Default none (required when webhooks are set).
    pub webhook_secret: Option<String>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:8081".into(),
            bootstrap_token: None,
            deletion_grace_secs: 7 * 24 * 3600,
            job_lease_secs: 30,
            job_max_attempts: 5,
            webhook_urls: Vec::new(),
            webhook_secret: None,
        }
    }
}

/// `[app]`: one app-tier process serving one shard.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApp {
    /// Address of the app. Default `127.0.0.1:8090`.
    pub listen: String,
    /// Name of the shard this process serves. Default `shard-a`.
    pub shard: String,
    /// Most open tenant database connections in this process. Default 50.
    pub connection_budget: u32,
    /// Seconds an unused tenant pool stays open. Default 300.
    pub pool_idle_secs: u64,
    /// Milliseconds a request waits for a connection before 503. Default 2000.
    pub acquire_timeout_ms: u64,
    /// Milliseconds a client reads from the primary after it wrote. Default 5000.
    pub read_your_writes_ms: u64,
    /// Distinct tenants labelled in metrics before the rest count as `_other`. Default 1000.
    pub tenant_label_limit: usize,
    /// Seconds without traffic after which a tenant's metric series are dropped. Default 3600.
    pub tenant_label_idle_secs: u64,
}

impl Default for RawApp {
    fn default() -> Self {
        RawApp {
            listen: "127.0.0.1:8090".into(),
            shard: "shard-a".into(),
            connection_budget: 50,
            pool_idle_secs: 300,
            acquire_timeout_ms: 2000,
            read_your_writes_ms: 5000,
            tenant_label_limit: 1000,
            tenant_label_idle_secs: 3600,
        }
    }
}

/// `[security]`: header signing keys and the credential key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSecurity {
    /// Key id the edge signs with; must be in `signing_keys`.
    pub signing_key_id: Option<String>,
    /// Key id → base64 secret (at least 32 bytes). The app accepts all of them (secret).
    pub signing_keys: BTreeMap<String, String>,
    /// Seconds a signature stays valid either side of now. Default 30.
    pub max_skew_secs: Option<u64>,
    /// Base64 32-byte key sealing tenant database credentials (secret).
    pub credential_key: Option<String>,
}

/// `[tenant_migrations]`: the schema of every tenant database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTenantMigrations {
    /// Directory holding `postgres/` and `sqlite/` migration folders. Default `tenant_migrations`.
    pub dir: PathBuf,
}

impl Default for RawTenantMigrations {
    fn default() -> Self {
        RawTenantMigrations {
            dir: PathBuf::from("tenant_migrations"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validated internal configuration.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Dev,
    Production,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    pub catalog: CatalogConfig,
    pub edge: EdgeConfig,
    pub admin: AdminConfig,
    pub app: AppConfig,
    pub security: SecurityConfig,
    pub tenant_migrations: TenantMigrationsConfig,
    /// Things worth a warning at start-up (e.g. generated dev secrets).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct CatalogConfig {
    pub url: String,
    pub max_connections: u32,
    pub poll_interval: Duration,
    pub negative_ttl: Duration,
    pub stale_max: Duration,
    pub cache_capacity: u64,
    pub miss_queries_per_sec: u32,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub default_rate_limit: RateLimit,
    pub max_inflight_per_tenant: Option<u32>,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub max_header_bytes: usize,
    pub moving_hold: Duration,
    pub threads: usize,
    pub tenant_label_limit: usize,
    pub tenant_label_idle: Duration,
    pub grace_period: Duration,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub bootstrap_token: Option<String>,
    pub deletion_grace: Duration,
    pub job_lease: Duration,
    pub job_max_attempts: u32,
    pub webhook_urls: Vec<String>,
    pub webhook_secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub listen: SocketAddr,
    pub shard: String,
    pub connection_budget: u32,
    pub pool_idle: Duration,
    pub acquire_timeout: Duration,
    pub read_your_writes: Duration,
    pub tenant_label_limit: usize,
    pub tenant_label_idle: Duration,
}

#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub signing: SigningKeys,
    pub max_skew_secs: i64,
    pub credential_key: CredentialKey,
}

#[derive(Debug, Clone)]
pub struct TenantMigrationsConfig {
    pub dir: PathBuf,
}

// ---------------------------------------------------------------------------------------------
// Loading.
// ---------------------------------------------------------------------------------------------

impl Config {
    /// Read `path`, apply `TENANTGATE__*` variables from the process environment, validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with an explicit environment (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let raw = RawConfig::load_with_env(path, env)?;
        Config::try_from(raw)
    }
}

impl RawConfig {
    /// Read and parse `path` with environment overrides, without validating values.
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        RawConfig::parse(&text, env).map_err(|e| match e.key.is_empty() {
            true => ConfigError::new(path.display().to_string(), e.message),
            false => e,
        })
    }

    /// Parse TOML text and apply environment overrides.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<RawConfig, ConfigError> {
        let mut table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::new("", e.to_string()))?;
        apply_env(&mut table, env)?;
        let value = toml::Value::Table(table);
        serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::new(
                if key == "." { "config".into() } else { key },
                e.into_inner().to_string(),
            )
        })
    }

    /// The file as TOML text (used by `dev` to write the configuration it runs with).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises to TOML")
    }
}

fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(path) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
        let key = parts.join(".");
        if parts.iter().any(String::is_empty) || parts.len() > 2 {
            return Err(ConfigError::new(
                name,
                "environment overrides are TENANTGATE__KEY or TENANTGATE__SECTION__KEY",
            ));
        }
        // A value that parses as TOML (number, bool, array, inline table) is taken as such;
        // anything else is a string, so `127.0.0.1:9000` needs no quoting.
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        let (section, leaf) = match parts.as_slice() {
            [leaf] => (None, leaf),
            [section, leaf] => (Some(section), leaf),
            _ => unreachable!("checked above"),
        };
        let target = match section {
            None => &mut *table,
            Some(section) => match table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(t) => t,
                _ => return Err(ConfigError::new(key, "is not a section")),
            },
        };
        target.insert(leaf.clone(), parsed);
    }
    Ok(())
}

fn addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| ConfigError::new(key, format!("{value:?} is not a socket address (ip:port)")))
}

fn range<T: PartialOrd + fmt::Display + Copy>(
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

fn key_bytes(key: &str, text: &str, min_len: usize) -> Result<Vec<u8>, ConfigError> {
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

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
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

        let c = &raw.catalog;
        if !(c.url.starts_with("postgres://")
            || c.url.starts_with("postgresql://")
            || c.url.starts_with("sqlite:"))
        {
            return Err(ConfigError::new(
                "catalog.url",
                "must start with postgres://, postgresql:// or sqlite:",
            ));
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
        };

        let e = &raw.edge;
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
            health_interval: ms("edge.health_interval_ms", e.health_interval_ms, 50, 600_000)?,
            health_timeout: ms("edge.health_timeout_ms", e.health_timeout_ms, 10, 60_000)?,
            unhealthy_threshold: range("edge.unhealthy_threshold", e.unhealthy_threshold, 1, 100)?,
            healthy_threshold: range("edge.healthy_threshold", e.healthy_threshold, 1, 100)?,
            max_header_bytes: range("edge.max_header_bytes", e.max_header_bytes, 1024, 1 << 20)?,
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
            return Err(ConfigError::new(
                "admin.webhook_secret",
                "is required when admin.webhook_urls is set",
            ));
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
            webhook_urls: a.webhook_urls.clone(),
            webhook_secret: a.webhook_secret.clone(),
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
        };

        let security = security(&raw.security, mode, &mut warnings)?;
        Ok(Config {
            mode,
            catalog,
            edge,
            admin,
            app,
            security,
            tenant_migrations: TenantMigrationsConfig {
                dir: raw.tenant_migrations.dir.clone(),
            },
            warnings,
        })
    }
}

fn security(
    s: &RawSecurity,
    mode: Mode,
    warnings: &mut Vec<String>,
) -> Result<SecurityConfig, ConfigError> {
    let missing = |key: &str| {
        ConfigError::new(key, "is required in production mode (it is a secret: set it in the file or in the environment)")
    };
    let mut signing_keys = Vec::new();
    for (kid, secret) in &s.signing_keys {
        if kid.is_empty()
            || !kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::new(
                format!("security.signing_keys.{kid}"),
                "key ids are letters, digits, '-' and '_'",
            ));
        }
        let bytes = key_bytes(&format!("security.signing_keys.{kid}"), secret, 32)?;
        signing_keys.push((kid.clone(), bytes));
    }
    let signing = if signing_keys.is_empty() {
        if mode == Mode::Production {
            return Err(missing("security.signing_keys"));
        }
        warnings.push(
            "no security.signing_keys configured: generated a random key for this process only"
                .into(),
        );
        let secret = decode_key(&random_secret(32)).expect("fresh key decodes");
        SigningKeys::new("dev", &[("dev".into(), secret)]).expect("current key is present")
    } else {
        let kid = match &s.signing_key_id {
            Some(kid) => kid.clone(),
            None if signing_keys.len() == 1 => signing_keys[0].0.clone(),
            None => {
                return Err(ConfigError::new(
                    "security.signing_key_id",
                    "is required when more than one signing key is configured",
                ))
            }
        };
        SigningKeys::new(&kid, &signing_keys).ok_or_else(|| {
            ConfigError::new(
                "security.signing_key_id",
                format!("{kid:?} is not in security.signing_keys"),
            )
        })?
    };
    let credential_key = match &s.credential_key {
        Some(text) => {
            let bytes = key_bytes("security.credential_key", text, 32)?;
            if bytes.len() != 32 {
                return Err(ConfigError::new(
                    "security.credential_key",
                    "must decode to exactly 32 bytes",
                ));
            }
            CredentialKey::from_bytes(&bytes).expect("32-byte key")
        }
        None if mode == Mode::Production => return Err(missing("security.credential_key")),
        None => {
            warnings.push("no security.credential_key configured: generated one for this process only; sealed tenant credentials will not open after a restart".into());
            CredentialKey::from_bytes(&decode_key(&random_secret(32)).expect("fresh key decodes"))
                .expect("32-byte key")
        }
    };
    let max_skew_secs = range(
        "security.max_skew_secs",
        s.max_skew_secs.unwrap_or(30),
        1,
        3600,
    )?;
    Ok(SecurityConfig {
        signing,
        max_skew_secs: max_skew_secs as i64,
        credential_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::try_from(RawConfig::parse(text, env)?)
    }

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn empty_file_is_a_valid_dev_config() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.mode, Mode::Dev);
        assert_eq!(c.edge.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.warnings.len(), 2);
    }

    #[test]
    fn environment_overrides_file() {
        let c = load(
            "[edge]\nlisten = \"127.0.0.1:1\"\n",
            &[
                ("TENANTGATE__EDGE__LISTEN", "127.0.0.1:9000"),
                ("TENANTGATE__EDGE__THREADS", "2"),
                ("OTHER", "x"),
            ],
        )
        .unwrap();
        assert_eq!(c.edge.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.edge.threads, 2);
    }

    #[test]
    fn errors_name_the_key() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case<'_>] = &[
            ("[edge]\nlistn = \"x\"\n", &[], "edge.listn"),
            ("[edge]\nlisten = \"nope\"\n", &[], "edge.listen"),
            ("[edge]\nthreads = 0\n", &[], "edge.threads"),
            ("[catalog]\nurl = \"mysql://x\"\n", &[], "catalog.url"),
            ("[edge]\ndefault_rps = -1\n", &[], "edge.default_rps"),
            ("[edge]\nlisten = 5\n", &[], "edge.listen"),
            (
                "",
                &[("TENANTGATE__EDGE__METRICS_LISTEN", "bad")],
                "edge.metrics_listen",
            ),
            ("", &[("TENANTGATE__EDGE__NOPE", "1")], "edge.nope"),
            ("mode = \"prod\"\n", &[], "mode"),
            ("mode = \"production\"\n", &[], "security.signing_keys"),
            (
                &format!(
                    "mode = \"production\"\n[security]\nsigning_keys = {{ k1 = \"{KEY}\" }}\n"
                ),
                &[],
                "security.credential_key",
            ),
            (
                "[security]\nsigning_keys = { k1 = \"short\" }\n",
                &[],
                "security.signing_keys.k1",
            ),
            (
                &format!(
                    "[security]\nsigning_key_id = \"k9\"\nsigning_keys = {{ k1 = \"{KEY}\" }}\n"
                ),
                &[],
                "security.signing_key_id",
            ),
            (
                "[admin]\nwebhook_urls = [\"ftp://x\"]\n",
                &[],
                "admin.webhook_urls[0]",
            ),
            (
                "[admin]\nbootstrap_token = \"short\"\n",
                &[],
                "admin.bootstrap_token",
            ),
        ];
        for (text, env, key) in cases {
            let err = load(text, env).expect_err(text);
            assert_eq!(&err.key, key, "{text}: {err}");
            assert!(err.to_string().contains(key));
        }
    }

    #[test]
    fn production_with_secrets_is_valid() {
        let text = format!(
            "mode = \"production\"\n[security]\nsigning_keys = {{ k1 = \"{KEY}\" }}\ncredential_key = \"{KEY}\"\n"
        );
        let c = load(&text, &[]).unwrap();
        assert_eq!(c.mode, Mode::Production);
        assert_eq!(c.security.signing.current_kid(), "k1");
        assert!(c.warnings.is_empty());
    }

    #[test]
    fn raw_config_round_trips_through_toml() {
        let raw = RawConfig::parse("[edge]\nthreads = 3\n", std::iter::empty()).unwrap();
        let again = RawConfig::parse(&raw.to_toml(), std::iter::empty()).unwrap();
        assert_eq!(again.edge.threads, 3);
    }
}
