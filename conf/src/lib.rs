//! Configuration: TOML plus `TENANTGATE__SECTION__KEY` environment overrides, checked once and
//! turned into internal types that cannot hold an invalid value. Shared by every component.
//!
//! - [`acme`]: `[acme]`, the certificate authority of issued certificates;
//! - [`backups`]: `[backups]`, the backup store and its age keys;
//! - [`db_url`]: the one reading of database URLs (catalog, shards, replicas);
//! - [`raw`]: the file as written (`Raw*` structs, unknown keys are errors);
//! - `env`: the environment overlay, applied before parsing;
//! - `validate`: `TryFrom<RawConfig> for Config`, every error naming its key;
//! - `secrets`: signing and credential keys, generated in dev mode, required (or deferred to
//!   the environment by `check-config`) in production.
//!
//! Nothing binds before loading succeeds.

pub mod acme;
pub mod backups;
pub mod db_url;
mod env;
pub mod limits;
pub mod raw;
mod secrets;
mod validate;

pub use acme::{AcmeConfig, OnDemandLimits};
pub use backups::{BackupSchedule, BackupStore, BackupsConfig};
pub use env::{variable_for, ENV_PREFIX};
pub use limits::{LimitsBackend, RedisUrl};
pub use raw::RawConfig;
pub use secrets::SecretPolicy;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tenantgate_contract::crypto::CredentialKey;
use tenantgate_contract::signing::SigningKeys;
use tenantgate_contract::RateLimit;

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
    pub backups: BackupsConfig,
    /// `[acme]`; `None` when ACME issuance is disabled.
    pub acme: Option<AcmeConfig>,
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
    pub query_timeout: Duration,
    pub listen_heartbeat: Duration,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub default_rate_limit: RateLimit,
    pub max_inflight_per_tenant: Option<u32>,
    /// Share of a tenant's limit one client address may use (`edge.per_client_share`).
    pub per_client_share: tenantgate_contract::ClientShare,
    pub health_interval: Duration,
    pub health_timeout: Duration,
    pub connect_timeout: Duration,
    pub usage_flush: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub max_header_bytes: usize,
    /// Deadline for a request body after its headers (`edge.body_timeout_ms`).
    pub body_timeout: Duration,
    pub moving_hold: Duration,
    pub threads: usize,
    pub tenant_label_limit: usize,
    pub tenant_label_idle: Duration,
    pub grace_period: Duration,
    /// The TLS listener; `None` when `edge.tls_listen` is empty.
    pub tls_listen: Option<SocketAddr>,
    /// The certificate for SNI names the catalog has none for; `None`: refuse them.
    pub tls_fallback: Option<TlsFallback>,
    /// Where per-tenant rate limits are kept (`edge.limits_backend`, `edge.redis_url`).
    pub limits_backend: LimitsBackend,
    /// Edges in the fleet (`edge.fleet_size`): each allows `limit / fleet_size` while Redis is
    /// unreachable.
    pub fleet_size: u32,
}

/// The edge's fallback certificate, read from `edge.tls_fallback_cert` / `_key` and checked
/// to parse and match at load time.
#[derive(Clone)]
pub struct TlsFallback {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsFallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFallback(..)")
    }
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub bootstrap_token: Option<String>,
    pub deletion_grace: Duration,
    pub job_lease: Duration,
    pub job_max_attempts: u32,
    /// Jobs one worker runs at once (1..=64).
    pub job_concurrency: usize,
    pub webhook_urls: Vec<String>,
    pub webhook_secret: Option<String>,
    /// Per token and, separately, per client address; `None` when off.
    pub rate_limit: Option<RateLimit>,
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
    /// Failed logins a client address may make against one tenant per `login_failure_window`.
    pub login_failures_per_address: u32,
    /// Failed logins of all addresses against one tenant per `login_failure_window`.
    pub login_failures_per_tenant: u32,
    /// Time over which the login failure budgets refill.
    pub login_failure_window: Duration,
    /// Lifetime of a browser session (capped by its token's expiry).
    pub session_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct SecurityConfig {
    pub signing: SigningKeys,
    pub max_skew_secs: i64,
    /// `v1` signatures accepted by the app (`security.accept_v1`).
    pub accept_v1: bool,
    /// Request ids per replay-cache generation (`security.replay_cache_capacity`).
    pub replay_cache_capacity: usize,
    pub credential_key: CredentialKey,
}

#[derive(Debug, Clone)]
pub struct TenantMigrationsConfig {
    pub dir: PathBuf,
}

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

    /// Validate a file for `check-config`: like [`Config::load_with_env`], except that with
    /// [`SecretPolicy::Defer`] production secrets may be missing. Returns the configuration and
    /// the keys of the secrets it expects from the environment.
    pub fn check_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        policy: SecretPolicy,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        validate::validate(RawConfig::load_with_env(path, env)?, policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawConfig;

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
    fn job_concurrency_defaults_to_four_and_follows_the_environment() {
        assert_eq!(load("", &[]).unwrap().admin.job_concurrency, 4);
        let c = load(
            "[admin]\njob_concurrency = 2\n",
            &[("TENANTGATE__ADMIN__JOB_CONCURRENCY", "16")],
        )
        .unwrap();
        assert_eq!(c.admin.job_concurrency, 16);
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
            ("", &[("TENANTGATE__EDGE__TLS_LISTEN", "443")], "edge.tls_listen"),
            (
                "[edge]\ntls_fallback_cert = \"/nonexistent.crt\"\n",
                &[],
                "edge.tls_fallback_key",
            ),
            (
                "[edge]\ntls_fallback_cert = \"/nonexistent.crt\"\ntls_fallback_key = \"/nonexistent.key\"\n",
                &[],
                "edge.tls_fallback_cert",
            ),
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
            (
                "[admin]\njob_concurrency = 0\n",
                &[],
                "admin.job_concurrency",
            ),
            (
                "",
                &[("TENANTGATE__ADMIN__JOB_CONCURRENCY", "65")],
                "admin.job_concurrency",
            ),
        ];
        for (text, env, key) in cases {
            let err = load(text, env).expect_err(text);
            assert_eq!(&err.key, key, "{text}: {err}");
            assert!(err.to_string().contains(key));
        }
    }

    #[test]
    fn tls_listen_is_optional() {
        assert_eq!(load("", &[]).unwrap().edge.tls_listen, None);
        let c = load("", &[("TENANTGATE__EDGE__TLS_LISTEN", "127.0.0.1:8443")]).unwrap();
        assert_eq!(c.edge.tls_listen, Some("127.0.0.1:8443".parse().unwrap()));
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
