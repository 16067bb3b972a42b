//! Everything one app process shares between requests.

use std::sync::Arc;
use std::time::Duration;

use tenantgate_catalog::feed::FeedState;
use tenantgate_catalog::Catalog;
use tenantgate_config::Config;
use tenantgate_contract::labels::{QuietSweeper, TenantLabels};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::directory::Directory;
use crate::login::LoginThrottle;
use crate::metrics::AppMetrics;
use crate::pools::{PoolManager, PoolOptions};
use crate::replay::ReplayCache;

/// Most tenants whose catalog rows an app process keeps in memory.
const TENANT_CACHE_CAPACITY: u64 = 100_000;

/// Shared state of an app process: config, catalog cache, pool manager, metrics. Cheap to
/// clone; it is the axum state of [`crate::router`] and of routers that reuse this crate's
/// middleware ([`crate::require_tenant`]).
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<Config>,
    catalog: Catalog,
    directory: Directory,
    pools: PoolManager,
    metrics: AppMetrics,
    labels: TenantLabels,
    /// Request ids of verified signatures, to refuse replays.
    replay: ReplayCache,
    /// Failed-login budgets per tenant and client address.
    login_throttle: LoginThrottle,
    /// The feed follower's state once [`AppState::start`] ran (for `/readyz`).
    feed: std::sync::OnceLock<Arc<FeedState>>,
}

/// Background tasks of an app process, from [`AppState::start`].
#[derive(Debug)]
pub struct Background {
    /// The catalog feed follower's progress (for readiness checks).
    pub feed: Arc<FeedState>,
    tasks: Vec<JoinHandle<()>>,
}

impl Background {
    /// Wait for the tasks to end (they end when the start's `shutdown` is cancelled).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl AppState {
    /// State for an app serving `config.app.shard`. Starts nothing; see [`AppState::start`].
    pub fn new(config: Arc<Config>, catalog: Catalog) -> AppState {
        let directory = Directory::new(catalog.clone(), &config.app.shard, TENANT_CACHE_CAPACITY);
        let pools = PoolManager::new(
            PoolOptions::from_config(&config.app),
            config.security.credential_key.clone(),
        );
        let labels = TenantLabels::new(config.app.tenant_label_limit);
        let replay = ReplayCache::new(
            config.security.max_skew_secs,
            config.security.replay_cache_capacity,
        );
        let login_throttle = LoginThrottle::new(&config.app);
        AppState {
            inner: Arc::new(Inner {
                login_throttle,
                config,
                catalog,
                directory,
                pools,
                metrics: AppMetrics::new(),
                labels,
                replay,
                feed: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Start the catalog feed follower and the idle-pool reaper; they stop when `shutdown` is
    /// cancelled.
    pub fn start(&self, shutdown: CancellationToken) -> Background {
        let (feed, mut tasks) = self.inner.directory.follow(
            self.inner.pools.clone(),
            (&self.inner.config.catalog).into(),
            shutdown.clone(),
        );
        let _ = self.inner.feed.set(feed.clone());
        let pools = self.inner.pools.clone();
        let reaper_shutdown = shutdown.clone();
        // Check a few times per idle period so a pool closes soon after it went idle.
        let every = (self.inner.config.app.pool_idle / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = reaper_shutdown.cancelled() => return,
                    _ = tick.tick() => { pools.reap_idle(); }
                }
            }
        }));
        // Drop the metric series of tenants that went quiet, freeing their label places.
        let state = self.clone();
        tasks.push(tokio::spawn(QuietSweeper::run(
            self.inner.config.app.tenant_label_idle,
            shutdown,
            move |sweeper| {
                sweeper.sweep(&state.inner.labels, &state.inner.metrics.tenant_counters());
            },
        )));
        Background { feed, tasks }
    }

    /// Ready to serve: the catalog feed has loaded and the catalog is reachable.
    pub fn ready(&self) -> bool {
        self.inner
            .feed
            .get()
            .is_some_and(|f| f.loaded() && f.unreachable_for().is_none())
    }

    /// The replay cache of verified request ids.
    pub fn replay(&self) -> &ReplayCache {
        &self.inner.replay
    }

    /// The failed-login budgets.
    pub fn login_throttle(&self) -> &LoginThrottle {
        &self.inner.login_throttle
    }

    /// The validated configuration the process runs with.
    pub fn config(&self) -> &Arc<Config> {
        &self.inner.config
    }

    /// The catalog handle (uncached; requests use [`AppState::directory`]).
    pub fn catalog(&self) -> &Catalog {
        &self.inner.catalog
    }

    /// The cached catalog rows.
    pub fn directory(&self) -> &Directory {
        &self.inner.directory
    }

    /// The tenant pool manager (stats, shutdown). Connections come from `TenantContext::db`.
    pub fn pools(&self) -> &PoolManager {
        &self.inner.pools
    }

    /// This process's metrics registry and families.
    pub fn metrics(&self) -> &AppMetrics {
        &self.inner.metrics
    }

    /// The bounded `tenant` metric label.
    pub fn labels(&self) -> &TenantLabels {
        &self.inner.labels
    }
}
