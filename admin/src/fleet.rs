//! Fleet migrations: apply pending tenant migrations to every tenant database, with bounded
//! concurrency per database server, progress, and a per-tenant record in the catalog.
//!
//! Each migration file runs in its own transaction (sqlx's migrator, on both backends), so an
//! interrupted run leaves every tenant at a version it fully reached; the next run continues
//! from there. The catalog's `schema_version` and `migration_error` follow each tenant.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use sqlx::migrate::Migrator;
use sqlx::Row;
use tenantgate_catalog::store::{TenantFilter, TenantPatch};
use tenantgate_catalog::tenant_db::{self, TenantDbTarget};
use tenantgate_catalog::{Catalog, CatalogError, Shard, Tenant};
use tenantgate_config::Config;
use tokio::sync::Semaphore;

use tenantgate_catalog::db::connect;
use tenantgate_config::db_url::{self, Engine};
/// Which tenants to migrate and how.
use tenantgate_contract::TenantStatus;
#[derive(Debug, Clone, Default)]
pub struct FleetOptions {
    /// Slugs to migrate; empty means every tenant that has a database.
    pub tenants: Vec<String>,
    /// Tenant databases migrated at once per database server.
    pub concurrency: usize,
    /// Only report what would run.
    pub dry_run: bool,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetSummary {
    pub migrated: usize,
    pub current: usize,
    pub failed: usize,
    /// `(slug, error)` of each failure.
    pub failures: Vec<(String, String)>,
    /// `(slug, pending migrations)` of each tenant with work to do (all runs, not only dry
    /// ones); a migration is named `<version>_<description>`, as its file is.
    pub pending: Vec<(String, Vec<String>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    TenantDb(#[from] tenant_db::TenantDbError),
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    #[error("--concurrency must be at least 1")]
    Concurrency,
}

/// What happened to one tenant; each carries the version its database is at afterwards.
enum Outcome {
    Migrated(i64),
    Current(i64),
    Failed(String, i64),
}

/// Tenants whose databases exist and can be migrated.
fn migratable(t: &Tenant) -> bool {
    matches!(
        t.status,
        TenantStatus::Active | TenantStatus::Suspended | TenantStatus::Moving
    )
}

/// How far a run is: tenants finished (migrated, current or failed) of `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub failed: usize,
}

/// Receives progress after every tenant; implementations throttle their own output.
pub trait ProgressSink: Send + Sync {
    fn update(&self, progress: Progress);
}

/// Run (or with `dry_run`, plan) the fleet migration, reporting to `progress`.
pub async fn migrate_tenants(
    config: &Config,
    catalog: &Catalog,
    options: &FleetOptions,
    progress: &dyn ProgressSink,
) -> Result<FleetSummary, FleetError> {
    if options.concurrency == 0 {
        return Err(FleetError::Concurrency);
    }
    let tenants = select_tenants(catalog, &options.tenants).await?;
    let shards: HashMap<String, Shard> = catalog
        .shards()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    let mut migrators: HashMap<Engine, Arc<Migrator>> = HashMap::new();
    for backend in [Engine::Postgres, Engine::Sqlite] {
        let used = tenants.iter().any(|t| {
            shards
                .get(&t.shard)
                .and_then(|s| Engine::of_url(&s.database_url).ok())
                == Some(backend)
        });
        if used {
            let m = tenant_db::migrator(&config.tenant_migrations.dir, backend).await?;
            migrators.insert(backend, Arc::new(m));
        }
    }

    // One semaphore per database server bounds the load each server sees.
    let mut servers: HashMap<String, Arc<Semaphore>> = HashMap::new();
    let total = tenants.len();
    let done = AtomicUsize::new(0);
    let failed = AtomicUsize::new(0);
    progress.update(Progress {
        done: 0,
        total,
        failed: 0,
    });

    let jobs: Vec<_> = tenants
        .into_iter()
        .map(|tenant| {
            let shard = shards.get(&tenant.shard).cloned();
            let server_key = shard
                .as_ref()
                .map(|s| {
                    db_url::server_of(&s.database_url).unwrap_or_else(|| s.database_url.clone())
                })
                .unwrap_or_default();
            let permits = servers
                .entry(server_key)
                .or_insert_with(|| Arc::new(Semaphore::new(options.concurrency)))
                .clone();
            let migrators = migrators.clone();
            let (done, failed) = (&done, &failed);
            async move {
                let _permit = permits.acquire_owned().await.expect("semaphore open");
                let result = match shard {
                    Some(shard) => {
                        migrate_one(
                            config,
                            catalog,
                            &shard,
                            &tenant,
                            &migrators,
                            options.dry_run,
                        )
                        .await
                    }
                    None => Err(format!("shard {} not found", tenant.shard)),
                };
                let tenant_failed = matches!(result, Err(_) | Ok((_, Outcome::Failed(..))));
                let failed = failed.fetch_add(usize::from(tenant_failed), Ordering::Relaxed)
                    + usize::from(tenant_failed);
                let done = done.fetch_add(1, Ordering::Relaxed) + 1;
                progress.update(Progress {
                    done,
                    total,
                    failed,
                });
                (tenant, result)
            }
        })
        .collect();
    // Enough in flight to keep every server's semaphore busy.
    let width = options.concurrency * servers.len().max(1);
    let results: Vec<_> = stream::iter(jobs).buffer_unordered(width).collect().await;

    let mut summary = FleetSummary::default();
    for (tenant, result) in results {
        match result {
            Ok((pending, outcome)) => {
                if !pending.is_empty() {
                    summary.pending.push((tenant.slug.clone(), pending));
                }
                match outcome {
                    Outcome::Migrated(_) => summary.migrated += 1,
                    Outcome::Current(_) => summary.current += 1,
                    Outcome::Failed(e, _) => {
                        summary.failed += 1;
                        summary.failures.push((tenant.slug.clone(), e));
                    }
                }
            }
            Err(e) => {
                summary.failed += 1;
                summary.failures.push((tenant.slug.clone(), e));
            }
        }
    }
    summary.pending.sort();
    summary.failures.sort();
    Ok(summary)
}

async fn select_tenants(catalog: &Catalog, slugs: &[String]) -> Result<Vec<Tenant>, FleetError> {
    if !slugs.is_empty() {
        let mut out = Vec::new();
        for slug in slugs {
            let tenant = catalog
                .tenant(slug)
                .await?
                .ok_or_else(|| FleetError::UnknownTenant(slug.clone()))?;
            out.push(tenant);
        }
        return Ok(out);
    }
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = catalog
            .list_tenants(&TenantFilter {
                cursor: cursor.clone(),
                limit: 1000,
                ..TenantFilter::default()
            })
            .await?;
        cursor = page.last().map(|t| t.slug.clone());
        let last = page.len() < 1000;
        out.extend(page.into_iter().filter(migratable));
        if last {
            return Ok(out);
        }
    }
}

async fn migrate_one(
    config: &Config,
    catalog: &Catalog,
    shard: &Shard,
    tenant: &Tenant,
    migrators: &HashMap<Engine, Arc<Migrator>>,
    dry_run: bool,
) -> Result<(Vec<String>, Outcome), String> {
    let target = TenantDbTarget::resolve(shard, tenant, &config.security.credential_key)
        .map_err(|e| e.to_string())?;
    let migrator = migrators
        .get(&target.engine)
        .ok_or("no migrator for the tenant's backend")?;
    let pool = connect(&target.primary, 1)
        .await
        .map_err(|e| format!("connecting to the tenant database: {e}"))?;
    let result: Result<(Vec<String>, Outcome), String> = async {
        let applied = applied_versions(&pool).await.map_err(|e| e.to_string())?;
        let pending: Vec<String> = migrator
            .iter()
            .filter(|m| m.migration_type.is_up_migration() && !applied.contains(&m.version))
            // sqlx turns the file name's underscores into spaces; show it as it was written.
            .map(|m| format!("{}_{}", m.version, m.description.replace(' ', "_")))
            .collect();
        if dry_run || pending.is_empty() {
            let version = applied.iter().copied().max().unwrap_or(0);
            return Ok((pending, Outcome::Current(version)));
        }
        let run = migrator.run(&pool).await;
        // Read the version back either way: a failed run may still have applied earlier files.
        let version = tenant_db::schema_version(&pool)
            .await
            .map_err(|e| e.to_string())?;
        let outcome = match run {
            Ok(()) => Outcome::Migrated(version),
            Err(e) => Outcome::Failed(e.to_string(), version),
        };
        Ok((pending, outcome))
    }
    .await;
    pool.close().await;
    let (pending, outcome) = result?;
    if !dry_run {
        record(catalog, tenant, &outcome).await;
    }
    Ok((pending, outcome))
}

/// Record the tenant's version and error in the catalog when they changed (best effort: the
/// tenant database is the truth, and the next run corrects the catalog, e.g. after a run was
/// killed between migrating a tenant and recording it).
async fn record(catalog: &Catalog, tenant: &Tenant, outcome: &Outcome) {
    let (version, error) = match outcome {
        Outcome::Migrated(v) | Outcome::Current(v) => (*v, None),
        Outcome::Failed(e, v) => (*v, Some(e.clone())),
    };
    if tenant.schema_version == version && tenant.migration_error == error {
        return;
    }
    let patch = TenantPatch {
        schema_version: Some(version),
        migration_error: Some(error),
        ..TenantPatch::default()
    };
    if let Err(e) = catalog.update_tenant(tenant.id, &patch).await {
        tracing::warn!(tenant = %tenant.slug, error = %e, "could not record migration result");
    }
}

async fn applied_versions(pool: &sqlx::AnyPool) -> Result<Vec<i64>, sqlx::Error> {
    match sqlx::query("SELECT version FROM _sqlx_migrations WHERE success = TRUE")
        .fetch_all(pool)
        .await
    {
        Ok(rows) => rows.iter().map(|r| r.try_get(0)).collect(),
        Err(sqlx::Error::Database(_)) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Progress on stderr: a bar redrawn at most five times a second on a terminal, otherwise a line
/// every two seconds (and one at the end).
pub struct ConsoleProgress {
    terminal: bool,
    started: Instant,
    last: std::sync::Mutex<Option<Instant>>,
}

impl Default for ConsoleProgress {
    fn default() -> Self {
        ConsoleProgress {
            terminal: std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: std::sync::Mutex::new(None),
        }
    }
}

impl ProgressSink for ConsoleProgress {
    fn update(&self, p: Progress) {
        let period = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(2)
        };
        {
            let mut last = self.last.lock().expect("progress lock");
            let finished = p.done == p.total;
            if last.is_some_and(|t| t.elapsed() < period) && !finished {
                return;
            }
            *last = Some(Instant::now());
        }
        let rate = p.done as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        let Progress {
            done,
            total,
            failed,
        } = p;
        if self.terminal {
            let width = 30;
            let filled = (done * width).checked_div(total).unwrap_or(width);
            eprint!(
                "\r[{}{}] {done}/{total} tenants, {failed} failed, {rate:.0}/s ",
                "#".repeat(filled),
                "-".repeat(width - filled)
            );
            if done == total {
                eprintln!();
            }
        } else {
            eprintln!("progress: {done}/{total} tenants, {failed} failed, {rate:.0}/s");
        }
    }
}

/// Print the outcome of a run on stdout.
pub fn print_summary(summary: &FleetSummary, dry_run: bool) {
    if dry_run {
        println!("dry run: nothing was changed");
        for (slug, migrations) in &summary.pending {
            println!("  {slug}: would apply {}", migrations.join(", "));
        }
        println!(
            "{} tenants with pending migrations, {} current, {} failed",
            summary.pending.len(),
            summary.current - summary.pending.len().min(summary.current),
            summary.failed
        );
    } else {
        println!(
            "migrated {}, already current {}, failed {}",
            summary.migrated, summary.current, summary.failed
        );
    }
    for (slug, error) in &summary.failures {
        println!("  failed {slug}: {error}");
    }
}
