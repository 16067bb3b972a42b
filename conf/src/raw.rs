//! The configuration file as written: serde structs that mirror the TOML, with the unit and the
//! default of every key. Unknown keys are errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::env::apply_env;
use crate::ConfigError;

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
    pub backups: RawBackups,
    pub acme: RawAcme,
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
    /// Milliseconds one catalog read on the serving path (a host lookup, a feed poll) may take
    /// before it counts as failed: a slow or partitioned catalog then costs cold lookups a
    /// bounded wait and cached tenants nothing. Default 2000.
    pub query_timeout_ms: u64,
    /// PostgreSQL: milliseconds without a notification after which the LISTEN session is
    /// checked with a query (bounded by `query_timeout_ms`); a session that does not answer, as
    /// one gone silently half-open in a partition, is replaced. Default 5000.
    pub listen_heartbeat_ms: u64,
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
            query_timeout_ms: 2000,
            listen_heartbeat_ms: 5000,
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
    /// Share of its tenant's rate limit (rps and burst) one client address may use, more than 0
    /// and at most 1 (1 turns the per-client limit off); a tenant's `per_client_share` setting
    /// overrides it. Default 0.5.
    pub per_client_share: f64,
    /// Milliseconds between active health checks of each backend. Default 1000.
    pub health_interval_ms: u64,
    /// Milliseconds a health check may take. Default 500.
    pub health_timeout_ms: u64,
    /// Milliseconds a connection to an app backend may take before the backend is ejected and
    /// the request retried on another one. Default 1000.
    pub connect_timeout_ms: u64,
    /// Seconds between the batches in which the edge adds each tenant's usage (requests,
    /// errors, 429s, bytes) to the catalog, 1 to 300. Default 5.
    pub usage_flush_secs: u64,
    /// Consecutive failures that mark a backend down. Default 2.
    pub unhealthy_threshold: u32,
    /// Consecutive successes that mark a backend up again. Default 1.
    pub healthy_threshold: u32,
    /// Total bytes of request headers before answering 431. Default 32768.
    pub max_header_bytes: usize,
    /// Milliseconds after the request headers by which the whole request body must have
    /// arrived, and the longest wait for any part of it; past it the edge answers 408
    /// `body_timeout` (or closes the connection). Default 30000.
    pub body_timeout_ms: u64,
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
    /// Address of the TLS listener (HTTP/1.1 and HTTP/2 by ALPN, certificate chosen by SNI
    /// from the catalog); empty = no TLS listener. Default empty.
    pub tls_listen: String,
    /// PEM file with the certificate chain served where the catalog has no certificate for the
    /// SNI name (or the client sent none); empty = such handshakes are refused. Default empty.
    pub tls_fallback_cert: String,
    /// PEM file with the fallback certificate's private key; set with `tls_fallback_cert`.
    /// Default empty.
    pub tls_fallback_key: String,
    /// Where per-tenant rate limits are kept: `local` (each edge on its own) or `redis` (one
    /// limit per tenant across the fleet, settled with Redis in the background). Default `local`.
    pub limits_backend: String,
    /// The Redis server of `limits_backend = "redis"`, `redis://[user:password@]host:port/db`
    /// (secret when it holds a password; never logged). Default empty.
    pub redis_url: String,
    /// Edges in the fleet: while Redis is unreachable each edge allows `limit / fleet_size` of
    /// every tenant's limit on its own. 1 to 10000. Default 1.
    pub fleet_size: u32,
}

impl Default for RawEdge {
    fn default() -> Self {
        RawEdge {
            listen: "127.0.0.1:8080".into(),
            metrics_listen: "127.0.0.1:8082".into(),
            default_rps: 100,
            default_burst: 200,
            max_inflight_per_tenant: 0,
            per_client_share: 0.5,
            health_interval_ms: 1000,
            health_timeout_ms: 500,
            connect_timeout_ms: 1000,
            usage_flush_secs: 5,
            unhealthy_threshold: 2,
            healthy_threshold: 1,
            max_header_bytes: 32 * 1024,
            body_timeout_ms: 30_000,
            moving_hold_ms: 5000,
            threads: 1,
            tenant_label_limit: 1000,
            tenant_label_idle_secs: 3600,
            grace_period_secs: 10,
            tls_listen: String::new(),
            tls_fallback_cert: String::new(),
            tls_fallback_key: String::new(),
            limits_backend: "local".into(),
            redis_url: String::new(),
            fleet_size: 1,
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
    /// Jobs one worker runs at once (provisioning, backups, moves, …), 1 to 64. Most jobs wait
    /// on a database server, so a few more than the cores pays off. Default 4.
    pub job_concurrency: u32,
    /// URLs that receive tenant events as signed JSON. Default none.
    pub webhook_urls: Vec<String>,
    /// Secret for webhook signatures (secret). Default none (required when webhooks are set).
    pub webhook_secret: Option<String>,
    /// Requests per second allowed to each admin token and, separately, to each client
    /// address; 0 turns the limit off. Default 100.
    pub rate_limit_rps: u32,
    /// Burst of requests allowed to each token and each client address. Default 500.
    pub rate_limit_burst: u32,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: "127.0.0.1:8081".into(),
            bootstrap_token: None,
            deletion_grace_secs: 7 * 24 * 3600,
            job_lease_secs: 30,
            job_max_attempts: 5,
            job_concurrency: 4,
            webhook_urls: Vec::new(),
            webhook_secret: None,
            rate_limit_rps: 100,
            rate_limit_burst: 500,
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
    /// Failed logins (bad bearer token, session or login form) one client address may make
    /// against one tenant per `login_failure_window_secs`; past it the address gets 429 with
    /// `Retry-After` and its tokens are not checked. The budget refills evenly over the window.
    /// 1 to 1 000 000. Default 10.
    pub login_failures_per_address: u32,
    /// Failed logins of all addresses together against one tenant per
    /// `login_failure_window_secs`; past it a wrong credential gets 429 instead of 401 until the
    /// budget refills (valid credentials keep working).
    /// 1 to 1 000 000. Default 200.
    pub login_failures_per_tenant: u32,
    /// Seconds over which the login failure budgets refill. 1 to 86 400. Default 300.
    pub login_failure_window_secs: u64,
    /// Seconds a browser session of `POST /login` lasts (never longer than the token it was
    /// opened with). 60 to 2 592 000 (30 days). Default 43 200 (12 hours).
    pub session_ttl_secs: u64,
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
            login_failures_per_address: 10,
            login_failures_per_tenant: 200,
            login_failure_window_secs: 300,
            session_ttl_secs: 43_200,
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
    /// Whether the app accepts `v1` tenant signatures (no method, no path, replayable on other
    /// routes), e.g. during a rolling upgrade from an older edge. The edge always signs `v2`.
    /// Default false (in dev mode too: dev runs edge and app of the same version).
    pub accept_v1: Option<bool>,
    /// Request ids each app process remembers per generation to refuse replayed signatures;
    /// an id is kept 2 to 4 × `max_skew_secs` (two generations, so at most twice this many
    /// ids, about 16 bytes each). Size it above requests per second × 2 × `max_skew_secs`.
    /// Default 500000 (at most ~16 MB).
    pub replay_cache_capacity: Option<usize>,
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

/// `[backups]`: where tenant backups are stored and how they are encrypted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBackups {
    /// `file://DIR` (a directory; relative to the working directory unless absolute, e.g.
    /// `file:///var/lib/tenantgate/backups`) or `s3://BUCKET/PREFIX` (credentials and region
    /// from the standard `AWS_*` environment variables). Default `file://data/backups`.
    pub store: String,
    /// URL of an S3-compatible service (MinIO, Ceph, ...) for an `s3://` store; `http://` is
    /// allowed. Default none (AWS S3).
    pub endpoint: Option<String>,
    /// age public key (`age1…`) backups are encrypted to. Default none: backups are refused
    /// until it is set.
    pub recipient: Option<String>,
    /// File holding the age identity (`AGE-SECRET-KEY-1…`) that decrypts backups, needed to
    /// restore and verify (secret: keep the file private). Default none.
    pub identity_file: Option<PathBuf>,
    /// `off`, `hourly` or `daily`: every active or suspended tenant is backed up once per
    /// period, at a slot spread over the period by its id. Default `off`.
    pub schedule: String,
    /// Days whose newest backup retention keeps (grandfather-father-son, UTC; a tenant's
    /// `settings.backup_retention` replaces all three). At most 3650. Default 7.
    pub keep_daily: u32,
    /// ISO weeks whose newest backup retention keeps. At most 520. Default 4.
    pub keep_weekly: u32,
    /// Calendar months whose newest backup retention keeps. At most 1200. Default 6.
    pub keep_monthly: u32,
    /// Days the backups of a purged tenant (including the one taken just before the purge)
    /// are kept before they are erased. At most 3650. Default 30.
    pub deleted_retention_days: u32,
}

impl Default for RawBackups {
    fn default() -> Self {
        RawBackups {
            store: "file://data/backups".into(),
            endpoint: None,
            recipient: None,
            identity_file: None,
            schedule: "off".into(),
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            deleted_retention_days: 30,
        }
    }
}

/// `[acme]`: the ACME certificate authority that issues certificates for tenant domains.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAcme {
    /// Issue certificates by ACME for every domain a tenant owns whole (issuance jobs when a
    /// domain is added). Default `false`.
    pub enabled: bool,
    /// The CA's directory URL, `https://` only. Default Let's Encrypt's production directory
    /// (`https://acme-v02.api.letsencrypt.org/directory`).
    pub directory_url: String,
    /// Account contacts, `mailto:` URLs. Default none.
    pub contact: Vec<String>,
    /// PEM file of the roots trusted for the CA's HTTPS, for a private or test CA (e.g.
    /// Pebble). Default none: the platform's roots.
    pub ca_bundle: Option<PathBuf>,
    /// Request issuance at the first TLS handshake for a host a tenant owns whole that has no
    /// certificate (and no issuance under way): the edge queues the issuance job in the
    /// background, within `on_demand_per_tenant` and `on_demand_global`. Hosts not in the
    /// catalog never trigger anything. Default `true` (when `enabled`).
    pub on_demand: bool,
    /// On-demand issuance requests one tenant may cause per `on_demand_window_secs`, counted
    /// across every edge; 1 to 100 000. Default 5.
    pub on_demand_per_tenant: u32,
    /// On-demand issuance requests of all tenants together per `on_demand_window_secs`, counted
    /// across every edge; 1 to 100 000. Default 50.
    pub on_demand_global: u32,
    /// Seconds over which the on-demand limits count requests; 1 to 604 800 (7 days).
    /// Default 3600.
    pub on_demand_window_secs: u64,
    /// Plain-HTTP listeners (`host:port`) of the edges that must serve a new HTTP-01 answer
    /// before the CA is told to validate it; each is asked for the challenge URL with the
    /// domain as Host. Empty: the admin asks `http://<domain>/` itself (as the CA will) and,
    /// when that does not confirm within `confirm_timeout_ms`, goes ahead anyway.
    /// Default empty.
    pub confirm_addrs: Vec<String>,
    /// Milliseconds the admin waits for the edges to serve a new HTTP-01 answer; with
    /// `confirm_addrs` set, an answer not confirmed by every edge in time fails the attempt
    /// (retried with backoff). 100 to 600 000. Default 10000.
    pub confirm_timeout_ms: u64,
}

impl Default for RawAcme {
    fn default() -> Self {
        RawAcme {
            enabled: false,
            directory_url: "https://acme-v02.api.letsencrypt.org/directory".into(),
            contact: Vec::new(),
            ca_bundle: None,
            on_demand: true,
            on_demand_per_tenant: 5,
            on_demand_global: 50,
            on_demand_window_secs: 3600,
            confirm_addrs: Vec::new(),
            confirm_timeout_ms: 10_000,
        }
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
