//! Tenants and their domains.

use std::collections::HashMap;

use sqlx::types::Json;
use tenantgate_contract::host::{self, DomainSpec, OwnershipConflict};
use tenantgate_contract::{RateLimit, TenantStatus};
use uuid::Uuid;

use super::changes::{self, NewChange};
use super::driver::{on, CatalogRow, Id, Millis};
use super::{Catalog, WriteTx};
use crate::error::CatalogError;
use crate::model::{Domain, Route, Tenant};

/// A tenant to create.
#[derive(Debug, Clone)]
pub struct NewTenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub status: TenantStatus,
    pub shard: String,
    pub domains: Vec<DomainSpec>,
    pub rate_limit: Option<RateLimit>,
    pub settings: serde_json::Value,
    pub db_name: String,
}

/// Fields of a tenant to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    pub name: Option<String>,
    pub status: Option<TenantStatus>,
    /// `Some(None)` clears the tenant's own limit (back to the edge default).
    pub rate_limit: Option<Option<RateLimit>>,
    pub settings: Option<serde_json::Value>,
    pub shard: Option<String>,
    /// The tenant's database (a restore in place swaps in a restored copy under a new name).
    pub db_name: Option<String>,
    pub db_credentials: Option<Option<String>>,
    pub schema_version: Option<i64>,
    pub migration_error: Option<Option<String>>,
    pub last_error: Option<Option<String>>,
    /// Bump the route epoch (routing changed: status, shard).
    pub bump_epoch: bool,
}

/// Filter and page of a tenant listing. Pages are ordered by slug; `cursor` is the last slug seen.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    pub status: Option<TenantStatus>,
    pub shard: Option<String>,
    pub schema_version: Option<i64>,
    pub cursor: Option<String>,
    pub limit: i64,
    /// Only these tenants (a tenant-restricted admin token's), when given.
    pub ids: Option<Vec<Uuid>>,
}

const COLUMNS: &str = "id, slug, name, status, shard, epoch, rate_limit_rps, rate_limit_burst, \
    settings, db_name, db_credentials, schema_version, migration_error, last_error, created_at, updated_at";

fn status_col(text: &str) -> Result<TenantStatus, CatalogError> {
    text.parse()
        .map_err(|e| crate::error::corrupt("tenants.status", e))
}

fn rate_limit_cols(rps: Option<i64>, burst: Option<i64>) -> Option<RateLimit> {
    match (rps, burst) {
        (Some(rps), Some(burst)) => Some(RateLimit {
            rps: rps.clamp(0, u32::MAX as i64) as u32,
            burst: burst.clamp(0, u32::MAX as i64) as u32,
        }),
        _ => None,
    }
}

fn from_row(r: &impl CatalogRow) -> Result<Tenant, CatalogError> {
    Ok(Tenant {
        id: r.id("id")?,
        slug: r.get("slug")?,
        name: r.get("name")?,
        status: status_col(&r.get::<String>("status")?)?,
        shard: r.get("shard")?,
        epoch: r.get("epoch")?,
        domains: Vec::new(),
        rate_limit: rate_limit_cols(r.get("rate_limit_rps")?, r.get("rate_limit_burst")?),
        settings: r.json("settings")?,
        schema_version: r.get("schema_version")?,
        migration_error: r.get("migration_error")?,
        last_error: r.get("last_error")?,
        db_name: r.get("db_name")?,
        db_credentials: r.get("db_credentials")?,
        created_at: r.millis("created_at")?,
        updated_at: r.millis("updated_at")?,
    })
}

/// Insert a tenant and its domains in the caller's write transaction.
///
/// A taken slug or domain is a [`CatalogError::Conflict`] naming it.
pub async fn insert(tx: &mut WriteTx, t: &NewTenant) -> Result<(), CatalogError> {
    let result = on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO tenants (id, slug, name, status, shard, epoch, rate_limit_rps,
                rate_limit_burst, settings, db_name, schema_version, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $8, $9, 0, $10, $10)",
        )
        .bind(Id(t.id))
        .bind(&t.slug)
        .bind(&t.name)
        .bind(t.status.as_str())
        .bind(&t.shard)
        .bind(t.rate_limit.map(|l| i64::from(l.rps)))
        .bind(t.rate_limit.map(|l| i64::from(l.burst)))
        .bind(Json(&t.settings))
        .bind(&t.db_name)
        .bind(Millis::now())
        .execute(db)
        .await
        .map(drop)
    });
    match result.map_err(CatalogError::from) {
        Err(e) if e.is_unique_violation() => {
            return Err(CatalogError::Conflict(format!("slug {} is taken", t.slug)))
        }
        other => other?,
    };
    for (i, domain) in t.domains.iter().enumerate() {
        insert_domain(tx, t.id, domain, i == 0).await?;
    }
    Ok(())
}

/// Add a domain to a tenant in the caller's write transaction.
///
/// Enforces the host ownership rule of the tenant contract
/// ([`check_ownership`](tenantgate_contract::host::check_ownership)): a host is owned whole by
/// one tenant or shared by path-prefix tenants. Checked under the catalog write lock, so two
/// concurrent writes cannot both pass. A violation or a taken domain is a
/// [`CatalogError::Conflict`] naming the domain.
pub async fn insert_domain(
    tx: &mut WriteTx,
    tenant_id: Uuid,
    domain: &DomainSpec,
    primary: bool,
) -> Result<(), CatalogError> {
    let existing: Vec<(String, Uuid)> = on!(tx.db(), db => {
        sqlx::query("SELECT path_prefix, tenant_id FROM tenant_domains WHERE host = $1")
            .bind(&domain.host)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| Ok((r.get("path_prefix")?, r.id("tenant_id")?)))
            .collect::<Result<_, CatalogError>>()?
    });
    let existing: Vec<(Option<&str>, Uuid)> = existing
        .iter()
        .map(|(p, t)| ((!p.is_empty()).then_some(p.as_str()), *t))
        .collect();
    if let Err(conflict) = host::check_ownership(domain, &tenant_id, &existing) {
        return Err(CatalogError::Conflict(match conflict {
            OwnershipConflict::Taken => format!("domain {domain} is taken"),
            other => format!("domain {domain}: {other}"),
        }));
    }
    let result = on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO tenant_domains (host, path_prefix, tenant_id, is_primary, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&domain.host)
        .bind(domain.path_prefix.clone().unwrap_or_default())
        .bind(Id(tenant_id))
        .bind(i64::from(primary))
        .bind(Millis::now())
        .execute(db)
        .await
        .map(drop)
    });
    match result.map_err(CatalogError::from) {
        Err(e) if e.is_unique_violation() => {
            Err(CatalogError::Conflict(format!("domain {domain} is taken")))
        }
        other => other,
    }
}

/// Remove a tenant's domain in the caller's write transaction.
pub async fn delete_domain(
    tx: &mut WriteTx,
    tenant_id: Uuid,
    domain: &DomainSpec,
) -> Result<(), CatalogError> {
    let deleted = on!(tx.db(), db => {
        sqlx::query(
            "DELETE FROM tenant_domains WHERE tenant_id = $1 AND host = $2 AND path_prefix = $3",
        )
        .bind(Id(tenant_id))
        .bind(&domain.host)
        .bind(domain.path_prefix.clone().unwrap_or_default())
        .execute(db)
        .await?
        .rows_affected()
    });
    if deleted == 0 {
        return Err(CatalogError::NotFound("domain"));
    }
    // A host's certificate goes with the tenant's last domain on it.
    super::certificates::drop_orphaned(tx, tenant_id, &domain.host).await
}

/// Apply `patch` to a tenant in the caller's write transaction.
pub async fn update(tx: &mut WriteTx, id: Uuid, patch: &TenantPatch) -> Result<(), CatalogError> {
    // Each nullable column takes a "set" flag and a value, so `Some(None)` can clear it.
    let (set_limit, rps, burst) = match patch.rate_limit {
        Some(Some(l)) => (1i64, Some(i64::from(l.rps)), Some(i64::from(l.burst))),
        Some(None) => (1, None, None),
        None => (0, None, None),
    };
    let flag = |o: &Option<Option<String>>| (i64::from(o.is_some()), o.clone().flatten());
    let (set_creds, creds) = flag(&patch.db_credentials);
    let (set_merr, merr) = flag(&patch.migration_error);
    let (set_lerr, lerr) = flag(&patch.last_error);
    let updated = on!(tx.db(), db => {
        sqlx::query(
            "UPDATE tenants SET
                name = COALESCE($2, name),
                status = COALESCE($3, status),
                rate_limit_rps = CASE WHEN $4 = 1 THEN $5 ELSE rate_limit_rps END,
                rate_limit_burst = CASE WHEN $4 = 1 THEN $6 ELSE rate_limit_burst END,
                settings = COALESCE($7, settings),
                shard = COALESCE($8, shard),
                db_credentials = CASE WHEN $9 = 1 THEN $10 ELSE db_credentials END,
                schema_version = COALESCE($11, schema_version),
                migration_error = CASE WHEN $12 = 1 THEN $13 ELSE migration_error END,
                last_error = CASE WHEN $14 = 1 THEN $15 ELSE last_error END,
                epoch = epoch + $16,
                deleted_at = CASE WHEN $3 = 'deleted' THEN $17 ELSE deleted_at END,
                db_name = COALESCE($18, db_name),
                updated_at = $17
             WHERE id = $1",
        )
        .bind(Id(id))
        .bind(patch.name.as_deref())
        .bind(patch.status.map(|s| s.as_str()))
        .bind(set_limit)
        .bind(rps)
        .bind(burst)
        .bind(patch.settings.as_ref().map(Json))
        .bind(patch.shard.as_deref())
        .bind(set_creds)
        .bind(creds.as_deref())
        .bind(patch.schema_version)
        .bind(set_merr)
        .bind(merr.as_deref())
        .bind(set_lerr)
        .bind(lerr.as_deref())
        .bind(i64::from(patch.bump_epoch))
        .bind(Millis::now())
        .bind(patch.db_name.as_deref())
        .execute(db)
        .await?
        .rows_affected()
    });
    if updated == 0 {
        return Err(CatalogError::NotFound("tenant"));
    }
    Ok(())
}

/// Hosts of a tenant's domains (for feed entries), read in the caller's transaction.
pub async fn hosts_of(tx: &mut WriteTx, id: Uuid) -> Result<Vec<String>, CatalogError> {
    on!(tx.db(), db => {
        sqlx::query("SELECT DISTINCT host FROM tenant_domains WHERE tenant_id = $1 ORDER BY host")
            .bind(Id(id))
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| r.get("host"))
            .collect()
    })
}

/// The feed entry for a change to tenant `id`, naming its hosts (read in the transaction).
pub async fn tenant_change(
    tx: &mut WriteTx,
    id: Uuid,
    extra_hosts: &[String],
) -> Result<NewChange, CatalogError> {
    let mut hosts = hosts_of(tx, id).await?;
    hosts.extend(extra_hosts.iter().cloned());
    hosts.sort();
    hosts.dedup();
    Ok(NewChange {
        kind: "tenant",
        tenant_id: Some(id),
        shard: None,
        hosts,
    })
}

impl Catalog {
    /// Create a tenant with its domains and announce it, in one transaction.
    pub async fn create_tenant(&self, t: &NewTenant) -> Result<(), CatalogError> {
        let mut tx = self.begin_write().await?;
        insert(&mut tx, t).await?;
        let change = tenant_change(&mut tx, t.id, &[]).await?;
        changes::append(&mut tx, &change).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Patch a tenant and announce it, in one transaction.
    pub async fn update_tenant(&self, id: Uuid, patch: &TenantPatch) -> Result<(), CatalogError> {
        let mut tx = self.begin_write().await?;
        update(&mut tx, id, patch).await?;
        let change = tenant_change(&mut tx, id, &[]).await?;
        changes::append(&mut tx, &change).await?;
        tx.commit().await?;
        Ok(())
    }

    /// A tenant by id or slug, with its domains.
    pub async fn tenant(&self, id_or_slug: &str) -> Result<Option<Tenant>, CatalogError> {
        let id = Uuid::parse_str(id_or_slug).ok();
        let column = if id.is_some() { "id" } else { "slug" };
        let sql = format!("SELECT {COLUMNS} FROM tenants WHERE {column} = $1");
        let tenant = on!(self.db(), db => {
            let query = sqlx::query(&sql);
            let query = match id {
                Some(id) => query.bind(Id(id)),
                None => query.bind(id_or_slug),
            };
            query.fetch_optional(db).await?.as_ref().map(from_row).transpose()?
        });
        let Some(mut tenant) = tenant else {
            return Ok(None);
        };
        tenant.domains = self
            .domains_of(tenant.id)
            .await?
            .iter()
            .map(|d| d.spec().to_string())
            .collect();
        Ok(Some(tenant))
    }

    /// A page of tenants matching `filter`, with their domains.
    pub async fn list_tenants(&self, filter: &TenantFilter) -> Result<Vec<Tenant>, CatalogError> {
        let ids = filter.ids.as_deref().unwrap_or_default();
        if filter.ids.is_some() && ids.is_empty() {
            return Ok(Vec::new());
        }
        // A restriction is a handful of ids (a token's), so one placeholder each is fine.
        let only: Vec<String> = (6..6 + ids.len()).map(|i| format!("${i}")).collect();
        let only = if only.is_empty() {
            String::new()
        } else {
            format!("AND id IN ({})", only.join(", "))
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM tenants
             WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR shard = $2)
               AND ($3 IS NULL OR schema_version = $3) AND ($4 IS NULL OR slug > $4) {only}
             ORDER BY slug LIMIT $5"
        );
        let mut tenants = on!(self.db(), db => {
            let mut query = sqlx::query(&sql)
                .bind(filter.status.map(|s| s.as_str()))
                .bind(filter.shard.as_deref())
                .bind(filter.schema_version)
                .bind(filter.cursor.as_deref())
                .bind(filter.limit);
            for id in ids {
                query = query.bind(Id(*id));
            }
            query
                .fetch_all(db)
                .await?
                .iter()
                .map(from_row)
                .collect::<Result<Vec<_>, _>>()?
        });
        // One domain query per page rather than per tenant.
        if !tenants.is_empty() {
            let placeholders: Vec<String> = (1..=tenants.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT host, path_prefix, tenant_id, is_primary FROM tenant_domains
                 WHERE tenant_id IN ({}) ORDER BY is_primary DESC, host, path_prefix",
                placeholders.join(", ")
            );
            let domains = on!(self.db(), db => {
                let mut query = sqlx::query(&sql);
                for t in &tenants {
                    query = query.bind(Id(t.id));
                }
                query
                    .fetch_all(db)
                    .await?
                    .iter()
                    .map(domain_from_row)
                    .collect::<Result<Vec<_>, _>>()?
            });
            for d in domains {
                if let Some(t) = tenants.iter_mut().find(|t| t.id == d.tenant_id) {
                    t.domains.push(d.spec().to_string());
                }
            }
        }
        Ok(tenants)
    }

    /// A tenant's domains, primary first.
    pub async fn domains_of(&self, id: Uuid) -> Result<Vec<Domain>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT host, path_prefix, tenant_id, is_primary FROM tenant_domains
                 WHERE tenant_id = $1 ORDER BY is_primary DESC, host, path_prefix",
            )
            .bind(Id(id))
            .fetch_all(db)
            .await?
            .iter()
            .map(domain_from_row)
            .collect()
        })
    }

    /// Every route on `host`: the whole-host one (no prefix) and any host + prefix ones.
    ///
    /// This is the edge's one query on a cache miss.
    pub async fn host_routes(&self, host: &str) -> Result<Vec<Route>, CatalogError> {
        let sql = format!("{ROUTES_SELECT} WHERE d.host = $1");
        on!(self.db(), db => {
            sqlx::query(&sql)
                .bind(host)
                .fetch_all(db)
                .await?
                .iter()
                .map(|r| Ok(route_from_row(r)?.1))
                .collect()
        })
    }

    /// The routes of many hosts at once (each host is a key, with no routes when unknown), in
    /// queries of at most [`HOSTS_PER_QUERY`] hosts: the edge's full resync of its cache.
    pub async fn routes_of_hosts(
        &self,
        hosts: &[&str],
    ) -> Result<HashMap<String, Vec<Route>>, CatalogError> {
        let mut routes: HashMap<String, Vec<Route>> =
            hosts.iter().map(|h| (h.to_string(), Vec::new())).collect();
        for chunk in hosts.chunks(HOSTS_PER_QUERY) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "{ROUTES_SELECT} WHERE d.host IN ({})",
                placeholders.join(", ")
            );
            let found = on!(self.db(), db => {
                let mut query = sqlx::query(&sql);
                for host in chunk {
                    query = query.bind(*host);
                }
                query
                    .fetch_all(db)
                    .await?
                    .iter()
                    .map(route_from_row)
                    .collect::<Result<Vec<_>, _>>()?
            });
            for (host, route) in found {
                routes.entry(host).or_default().push(route);
            }
        }
        Ok(routes)
    }

    /// Every host that has a route, whatever its tenant's status: the edge's index of known
    /// hosts, so that a request for any other host is answered without a catalog query. Read in
    /// pages of [`HOSTS_PER_QUERY`] × 20 hosts in host order.
    pub async fn all_hosts(&self) -> Result<Vec<String>, CatalogError> {
        let page = (HOSTS_PER_QUERY * 20) as i64;
        let mut hosts: Vec<String> = Vec::new();
        loop {
            let after = hosts.last().cloned().unwrap_or_default();
            let batch: Vec<String> = on!(self.db(), db => {
                sqlx::query(
                    "SELECT DISTINCT host FROM tenant_domains WHERE host > $1
                     ORDER BY host LIMIT $2",
                )
                .bind(&after)
                .bind(page)
                .fetch_all(db)
                .await?
                .iter()
                .map(|r| r.get::<String>("host"))
                .collect::<Result<_, _>>()?
            });
            let done = (batch.len() as i64) < page;
            hosts.extend(batch);
            if done {
                return Ok(hosts);
            }
        }
    }

    /// Number of tenants per status.
    pub async fn tenant_status_counts(&self) -> Result<Vec<(TenantStatus, i64)>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query("SELECT status, COUNT(*) AS n FROM tenants GROUP BY status")
                .fetch_all(db)
                .await?
                .iter()
                .map(|r| Ok((status_col(&r.get::<String>("status")?)?, r.get("n")?)))
                .collect()
        })
    }
}

/// Hosts per query of [`Catalog::routes_of_hosts`] (well under SQLite's and PostgreSQL's limits
/// on bound parameters).
pub const HOSTS_PER_QUERY: usize = 500;

const ROUTES_SELECT: &str =
    "SELECT d.host, d.path_prefix, t.id, t.slug, t.status, t.shard, t.epoch,
        t.rate_limit_rps, t.rate_limit_burst, t.settings
     FROM tenant_domains d JOIN tenants t ON t.id = d.tenant_id";

/// A row of [`ROUTES_SELECT`]: its host and route.
fn route_from_row(r: &impl CatalogRow) -> Result<(String, Route), CatalogError> {
    let prefix: String = r.get("path_prefix")?;
    let settings = tenantgate_contract::TenantSettings::read_stored(&r.json("settings")?);
    let route = Route {
        tenant_id: r.id("id")?,
        slug: r.get("slug")?,
        status: status_col(&r.get::<String>("status")?)?,
        shard: r.get("shard")?,
        epoch: r.get("epoch")?,
        rate_limit: rate_limit_cols(r.get("rate_limit_rps")?, r.get("rate_limit_burst")?),
        path_prefix: (!prefix.is_empty()).then_some(prefix),
        client_share: settings.per_client_share,
        https_only: settings.https_only(),
        hsts_max_age: settings.hsts_max_age.map(u32::from),
    };
    Ok((r.get("host")?, route))
}

fn domain_from_row(r: &impl CatalogRow) -> Result<Domain, CatalogError> {
    let prefix: String = r.get("path_prefix")?;
    Ok(Domain {
        host: r.get("host")?,
        path_prefix: (!prefix.is_empty()).then_some(prefix),
        tenant_id: r.id("tenant_id")?,
        primary: r.get::<i64>("is_primary")? != 0,
    })
}

impl Catalog {
    /// True when a tenant's database is named `db_name` now (a restore's previous database
    /// must not be dropped if it is).
    pub async fn database_in_use(&self, db_name: &str) -> Result<bool, CatalogError> {
        on!(self.db(), db => {
            Ok(sqlx::query("SELECT 1 FROM tenants WHERE db_name = $1")
                .bind(db_name)
                .fetch_optional(db)
                .await?
                .is_some())
        })
    }

    /// The shards of the tenants whose database is `db_name` (a moved tenant keeps its
    /// database's name on its new shard, so a name alone does not say which server holds it).
    pub async fn shards_using_database(&self, db_name: &str) -> Result<Vec<String>, CatalogError> {
        on!(self.db(), db => {
            Ok(sqlx::query_scalar("SELECT shard FROM tenants WHERE db_name = $1")
                .bind(db_name)
                .fetch_all(db)
                .await?)
        })
    }
}
