//! The catalog model: what a tenant, a domain, a shard and a route are.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::status::UnknownStatus;
use tenantgate_contract::time::serde_rfc3339;
use tenantgate_contract::{RateLimit, TenantStatus};
use uuid::Uuid;

/// Whether a shard takes traffic and new tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ShardStatus {
    /// Serves its tenants and takes new ones.
    Active,
    /// Serves its tenants, takes no new ones.
    Draining,
    /// Takes nothing new; its tenants are still served until moved (routing never silently drops
    /// a tenant), but placement and moves never choose it.
    Disabled,
}

impl ShardStatus {
    pub const ALL: [ShardStatus; 3] = [
        ShardStatus::Active,
        ShardStatus::Draining,
        ShardStatus::Disabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShardStatus::Active => "active",
            ShardStatus::Draining => "draining",
            ShardStatus::Disabled => "disabled",
        }
    }
}

impl FromStr for ShardStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ShardStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_string()))
    }
}

impl fmt::Display for ShardStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Scope of an admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TokenScope {
    Read,
    Write,
}

impl TokenScope {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Write => "write",
        }
    }

    /// A write token may do everything a read token may.
    pub fn allows(self, needed: TokenScope) -> bool {
        self == TokenScope::Write || needed == TokenScope::Read
    }
}

impl FromStr for TokenScope {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(TokenScope::Read),
            "write" => Ok(TokenScope::Write),
            other => Err(UnknownStatus(other.to_string())),
        }
    }
}

/// A tenant as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub status: TenantStatus,
    pub shard: String,
    /// Bumped whenever routing of the tenant changes (move, status); sent as `x-tenant-epoch`.
    pub epoch: i64,
    pub domains: Vec<String>,
    /// The tenant's own limit; `None` means the edge's configured default.
    pub rate_limit: Option<RateLimit>,
    #[cfg_attr(feature = "openapi", schema(value_type = tenantgate_contract::TenantSettings))]
    pub settings: serde_json::Value,
    /// Highest tenant migration applied (0 before the first).
    pub schema_version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub migration_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(nullable = false))]
    pub last_error: Option<String>,
    /// Name of the tenant's database (PostgreSQL) or file stem (SQLite) on its shard.
    #[serde(skip)]
    pub db_name: String,
    /// Encrypted login of the tenant's database (PostgreSQL); never serialised.
    #[serde(skip)]
    pub db_credentials: Option<String>,
    #[serde(with = "serde_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: i64,
    #[serde(with = "serde_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: i64,
}

/// One routable domain row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Domain {
    pub host: String,
    pub path_prefix: Option<String>,
    pub tenant_id: Uuid,
    pub primary: bool,
}

impl Domain {
    pub fn spec(&self) -> DomainSpec {
        DomainSpec {
            host: self.host.clone(),
            path_prefix: self.path_prefix.clone(),
        }
    }
}

/// A shard: an app pool and the database server its tenants live on.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Shard {
    pub name: String,
    pub status: ShardStatus,
    /// `host:port` of each app backend.
    pub app_upstreams: Vec<String>,
    /// Where tenant databases are created: a PostgreSQL server URL, or `sqlite://DIR` for a
    /// directory of tenant files. Passwords in it are redacted in API output by the admin API.
    pub database_url: String,
    /// Read replicas (PostgreSQL URLs of the same server's streaming replicas).
    pub replicas: Vec<String>,
    #[serde(with = "serde_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub created_at: i64,
    #[serde(with = "serde_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub updated_at: i64,
}

/// What the edge needs to route one domain: the tenant behind it, flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub tenant_id: Uuid,
    pub slug: String,
    pub status: TenantStatus,
    pub shard: String,
    pub epoch: i64,
    pub rate_limit: Option<RateLimit>,
    /// The domain's path prefix, if it is a host + prefix domain.
    pub path_prefix: Option<String>,
    /// The tenant's `per_client_share` setting; `None` means the edge's configured default.
    pub client_share: Option<tenantgate_contract::ClientShare>,
    /// The tenant's `settings.https_only`.
    pub https_only: bool,
    /// The tenant's `settings.hsts_max_age`, seconds.
    pub hsts_max_age: Option<u32>,
}

/// One entry of the `catalog_changes` feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Contiguous, increasing with commit order.
    pub version: i64,
    /// What changed: `tenant`, `domain` or `shard`.
    pub kind: String,
    pub tenant_id: Option<Uuid>,
    pub shard: Option<String>,
    /// Normalised hosts whose routing may have changed.
    pub hosts: Vec<String>,
}
