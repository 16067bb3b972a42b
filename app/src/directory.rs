//! The app's view of the catalog: cached tenant and shard rows, kept current by the change feed.
//!
//! Requests read tenants and shards from memory (a cold entry is loaded single-flight). The
//! catalog feed ([`tenantgate_catalog::feed::follow`]) reports every change; a worker then
//! reloads the row, and closes the tenant's pools when it may no longer be served here
//! (suspended, deleted, moved) or its database target changed. The work happens on a task of
//! its own because feed sinks must not block.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use tenantgate_catalog::feed::ChangeSink;
use tenantgate_catalog::{Catalog, CatalogError, Change, Shard, Tenant};
use tenantgate_contract::{Admission, Refusal, TenantStatus};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::error::AppError;
use crate::pools::PoolManager;

/// Safety net should a change ever be missed: cached rows are reloaded at least this often.
const CACHE_TTL: Duration = Duration::from_secs(300);

/// Cached catalog rows for one app process.
#[derive(Clone)]
pub struct Directory {
    catalog: Catalog,
    shard: String,
    tenants: Cache<Uuid, Arc<Tenant>>,
    shards: Cache<String, Arc<Shard>>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("shard", &self.shard)
            .field("tenants", &self.tenants.entry_count())
            .finish_non_exhaustive()
    }
}

/// Why a tenant in `status` is refused, by the tenant contract; `None` when it may be served
/// (its database opened). A moving tenant is served: the edge holds its new requests, and
/// those already past the edge finish.
pub fn refusal(status: TenantStatus) -> Option<Refusal> {
    match status.admission() {
        Admission::Refuse(r) => Some(r),
        Admission::Serve | Admission::Hold => None,
    }
}

/// Whether a tenant in `status` may be served.
pub fn servable(status: TenantStatus) -> bool {
    refusal(status).is_none()
}

impl Directory {
    /// A directory for the app serving `shard`, holding at most `capacity` tenants.
    pub fn new(catalog: Catalog, shard: &str, capacity: u64) -> Directory {
        Directory {
            catalog,
            shard: shard.to_string(),
            tenants: Cache::builder()
                .max_capacity(capacity)
                .time_to_live(CACHE_TTL)
                .build(),
            shards: Cache::builder()
                .max_capacity(64)
                .time_to_live(CACHE_TTL)
                .build(),
        }
    }

    /// The tenant `id`, from memory or (once, however many requests ask) from the catalog.
    /// `Ok(None)` when the catalog has no such tenant (not cached, so a new tenant is seen).
    pub async fn tenant(&self, id: Uuid) -> Result<Option<Arc<Tenant>>, AppError> {
        let catalog = self.catalog.clone();
        let loaded = self
            .tenants
            .try_get_with(id, async move {
                match catalog.tenant(&id.to_string()).await {
                    Ok(Some(t)) => Ok(Arc::new(t)),
                    Ok(None) => Err(Lookup::Missing),
                    Err(e) => Err(Lookup::Catalog(Arc::new(e))),
                }
            })
            .await;
        match loaded {
            Ok(t) => Ok(Some(t)),
            Err(e) => match &*e {
                Lookup::Missing => Ok(None),
                Lookup::Catalog(e) => Err(AppError::Catalog(e.clone())),
            },
        }
    }

    /// Drop the cached row of tenant `id`; the next [`Directory::tenant`] reads the catalog.
    pub async fn forget_tenant(&self, id: Uuid) {
        self.tenants.invalidate(&id).await;
    }

    /// The shard `name`, from memory or the catalog.
    pub async fn shard(&self, name: &str) -> Result<Option<Arc<Shard>>, AppError> {
        let catalog = self.catalog.clone();
        let owned = name.to_string();
        let loaded = self
            .shards
            .try_get_with(owned.clone(), async move {
                match catalog.shard(&owned).await {
                    Ok(Some(s)) => Ok(Arc::new(s)),
                    Ok(None) => Err(Lookup::Missing),
                    Err(e) => Err(Lookup::Catalog(Arc::new(e))),
                }
            })
            .await;
        match loaded {
            Ok(s) => Ok(Some(s)),
            Err(e) => match &*e {
                Lookup::Missing => Ok(None),
                Lookup::Catalog(e) => Err(AppError::Catalog(e.clone())),
            },
        }
    }

    /// Start following the catalog feed; pools of tenants that may no longer be served are
    /// closed through `pools`. Both tasks end when `shutdown` is cancelled.
    pub fn follow(
        &self,
        pools: PoolManager,
        feed_options: tenantgate_catalog::feed::FeedOptions,
        shutdown: CancellationToken,
    ) -> (
        Arc<tenantgate_catalog::feed::FeedState>,
        Vec<tokio::task::JoinHandle<()>>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let worker = tokio::spawn(self.clone().refresh_worker(rx, pools, shutdown.clone()));
        let (state, feed) = tenantgate_catalog::feed::follow(
            self.catalog.clone(),
            Arc::new(FeedSink { tx }),
            feed_options,
            shutdown,
        );
        (state, vec![feed, worker])
    }

    async fn refresh_worker(
        self,
        mut rx: mpsc::UnboundedReceiver<Refresh>,
        pools: PoolManager,
        shutdown: CancellationToken,
    ) {
        loop {
            let refresh = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = rx.recv() => match r { Some(r) => r, None => return },
            };
            match refresh {
                Refresh::Tenant(id) => self.refresh_tenant(id, &pools).await,
                Refresh::Shard(name) => self.refresh_shard(&name, &pools).await,
                Refresh::All => {
                    self.tenants.invalidate_all();
                    self.shards.invalidate_all();
                    let shard = self.shard.clone();
                    self.refresh_shard(&shard, &pools).await;
                    for id in pools.tenants_with_pools() {
                        self.refresh_tenant(id, &pools).await;
                    }
                }
            }
        }
    }

    async fn refresh_tenant(&self, id: Uuid, pools: &PoolManager) {
        self.tenants.invalidate(&id).await;
        match self.catalog.tenant(&id.to_string()).await {
            Ok(Some(tenant)) => {
                if servable(tenant.status) && tenant.shard == self.shard {
                    pools.refresh_tenant(&tenant);
                } else {
                    pools.close_tenant(id);
                }
                self.tenants.insert(id, Arc::new(tenant)).await;
            }
            Ok(None) => pools.close_tenant(id),
            // The feed notices an unreachable catalog too and resyncs when it is back.
            Err(e) => tracing::warn!(tenant = %id, error = %e, "reloading tenant failed"),
        }
    }

    async fn refresh_shard(&self, name: &str, pools: &PoolManager) {
        self.shards.invalidate(name).await;
        if name != self.shard {
            return;
        }
        match self.catalog.shard(name).await {
            Ok(Some(shard)) => {
                pools.refresh_shard(&shard);
                self.shards.insert(name.to_string(), Arc::new(shard)).await;
            }
            Ok(None) => tracing::warn!(
                shard = name,
                "the shard this app serves is not in the catalog"
            ),
            Err(e) => tracing::warn!(shard = name, error = %e, "reloading shard failed"),
        }
    }
}

#[derive(Debug)]
enum Lookup {
    Missing,
    Catalog(Arc<CatalogError>),
}

#[derive(Debug)]
enum Refresh {
    Tenant(Uuid),
    Shard(String),
    All,
}

struct FeedSink {
    tx: mpsc::UnboundedSender<Refresh>,
}

impl ChangeSink for FeedSink {
    fn apply(&self, change: &Change) {
        let refresh = match (&change.tenant_id, &change.shard) {
            (Some(id), _) => Refresh::Tenant(*id),
            (None, Some(shard)) => Refresh::Shard(shard.clone()),
            (None, None) => return,
        };
        let _ = self.tx.send(refresh);
    }

    fn resync(&self) {
        let _ = self.tx.send(Refresh::All);
    }
}
