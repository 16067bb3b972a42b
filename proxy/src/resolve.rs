//! Host → tenant resolution through a cache over the catalog.
//!
//! One cache entry per normalised host holds every route on that host (the whole-host route and
//! the host + prefix routes), so a request for a known host costs one in-memory lookup and no
//! catalog query. Misses are single-flight per host (moka `try_get_with`) and run on the control
//! runtime.
//!
//! The resolver also keeps an index of every host the catalog has a route for (loaded at each
//! resync, kept current by the feed's changes). Misses for indexed hosts have their own budget
//! of `catalog.miss_queries_per_sec` that a flood of random hosts cannot spend: a known tenant
//! never depends on what strangers send. A host outside the index may still be one created a
//! moment ago and not yet in the feed, so it is asked within the shared budget, and past that
//! budget answered `unknown_tenant` without a query (404, never 503). Unknown hosts are cached
//! as negative entries for `catalog.negative_ttl`.
//!
//! The catalog feed keeps entries current: each change refreshes the hosts it names (replacing a
//! negative entry as soon as the host is created), a shard change reloads the shard pools, and a
//! resync refreshes every cached host. A refresh that fails keeps the old entry, so while the
//! catalog is unreachable the edge serves what it last knew (counted as `stale`, for at most
//! `catalog.stale_max`) and a tenant last seen suspended or deleted stays refused.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use tenantgate_catalog::feed::{ChangeSink, FeedState};
use tenantgate_catalog::store::tenants::HOSTS_PER_QUERY;
use tenantgate_catalog::{Catalog, CatalogError, Change, Route};
use tenantgate_config::Config;
use tenantgate_contract::host;
use tenantgate_contract::labels::TenantLabels;
use tenantgate_contract::{RateLimit, TenantStatus};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::error::Reject;
use crate::metrics::{EdgeMetrics, Lookup};
use crate::pools::Pools;
use crate::rate_limit::{Gcra, Limiters, TenantLimits};
use crate::usage::Usage;

/// One routable tenant on a host, flattened for the request path (all header values prepared).
#[derive(Debug)]
pub struct RouteInfo {
    pub tenant_id: Uuid,
    /// The tenant headers sent upstream (`x-tenant-id`, `-slug`, `-shard`, `-epoch`).
    pub headers: crate::headers::RouteHeaders,
    pub slug: Box<str>,
    /// The bounded metric label for this tenant.
    pub label: Arc<str>,
    pub shard: Arc<str>,
    pub status: TenantStatus,
    pub epoch: i64,
    /// The path prefix of a host + prefix domain.
    pub path_prefix: Option<Box<str>>,
    /// The tenant's rate limiter and in-flight count (shared by all its hosts).
    pub limits: Arc<TenantLimits>,
    /// The tenant's `per_client_share` setting; `None`: `edge.per_client_share`.
    pub client_share: Option<tenantgate_contract::ClientShare>,
    /// This route's metric series, once used.
    pub series: crate::metrics::RouteSeries,
    /// The tenant's `settings.https_only`: plain-HTTP requests are redirected to https.
    pub https_only: bool,
    /// `Strict-Transport-Security` for TLS responses (`settings.hsts_max_age`), prepared.
    pub hsts: Option<http::HeaderValue>,
    /// The tenant's usage counts since the last flush (shared by all its hosts).
    pub usage: Arc<crate::usage::UsageCounters>,
}

/// Everything cached for one host. No routes means the host is unknown (a negative entry).
#[derive(Debug)]
pub struct HostEntry {
    pub routes: Box<[Arc<RouteInfo>]>,
}

impl HostEntry {
    /// True for a cached "unknown host".
    pub fn is_negative(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route for a request path (the contract's [`host::route_for`]). Returns whether a
    /// prefix matched.
    pub fn route_for(&self, path: &str) -> Option<(&Arc<RouteInfo>, bool)> {
        host::route_for(&self.routes, path, |r| r.path_prefix.as_deref())
    }

    /// The route of `tenant`, if it is still on this host.
    pub fn route_of(&self, tenant: Uuid) -> Option<&Arc<RouteInfo>> {
        self.routes.iter().find(|r| r.tenant_id == tenant)
    }
}

/// Negative entries expire after `catalog.negative_ttl`; positive ones live until evicted or
/// replaced (the feed keeps them current).
struct NegativeExpiry(Duration);

impl Expiry<String, Arc<HostEntry>> for NegativeExpiry {
    fn expire_after_create(&self, _: &String, v: &Arc<HostEntry>, _: Instant) -> Option<Duration> {
        v.is_negative().then_some(self.0)
    }

    fn expire_after_update(
        &self,
        _: &String,
        v: &Arc<HostEntry>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        v.is_negative().then_some(self.0)
    }
}

/// Work for the refresh worker. Processed one at a time, in order, so refreshes of the same
/// host can never overtake each other.
#[derive(Debug)]
enum Job {
    Hosts(Vec<String>),
    Shards,
    All,
}

/// The route cache and everything it needs to fill and refresh itself.
pub struct Resolver {
    cache: Cache<String, Arc<HostEntry>>,
    catalog: Catalog,
    control: Handle,
    feed: OnceLock<Arc<FeedState>>,
    /// Bumped by every feed change; a miss that saw it move re-checks its host.
    generation: AtomicU64,
    /// Catalog lookups for hosts not in the index (or before it is loaded).
    miss_budget: Gcra,
    /// Catalog lookups for indexed hosts: a flood of unknown hosts cannot spend it.
    known_miss_budget: Gcra,
    /// Every host the catalog has a route for; `None` until the first resync loads it.
    index: RwLock<Option<HashSet<Box<str>>>>,
    /// The answer for a host outside the index.
    unknown: Arc<HostEntry>,
    limiters: Arc<Limiters>,
    labels: TenantLabels,
    default_limit: RateLimit,
    stale_max: Duration,
    /// Longest a single catalog query may take (`catalog.query_timeout_ms`); also the longest
    /// a miss waits for the query budget.
    query_timeout: Duration,
    usage: Arc<Usage>,
    metrics: Arc<EdgeMetrics>,
    pools: Arc<Pools>,
    jobs: mpsc::UnboundedSender<Job>,
}

impl Resolver {
    /// Create the resolver and its refresh worker; must be called on the control runtime.
    pub(crate) fn start(
        config: &Config,
        catalog: Catalog,
        metrics: Arc<EdgeMetrics>,
        pools: Arc<Pools>,
        limiters: Arc<Limiters>,
    ) -> Arc<Resolver> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let per_sec = config.catalog.miss_queries_per_sec;
        // A small burst keeps the catalog's load within about 10 % of the cap in any second,
        // even at the start of a flood.
        let budget = RateLimit {
            rps: per_sec,
            burst: (per_sec / 10).max(1),
        };
        let resolver = Arc::new(Resolver {
            cache: Cache::builder()
                .max_capacity(config.catalog.cache_capacity)
                .expire_after(NegativeExpiry(config.catalog.negative_ttl))
                .support_invalidation_closures()
                .build(),
            catalog,
            control: Handle::current(),
            feed: OnceLock::new(),
            generation: AtomicU64::new(0),
            miss_budget: Gcra::new(budget),
            known_miss_budget: Gcra::new(budget),
            index: RwLock::new(None),
            unknown: Arc::new(HostEntry {
                routes: Box::new([]),
            }),
            limiters,
            labels: TenantLabels::new(config.edge.tenant_label_limit),
            default_limit: config.edge.default_rate_limit,
            stale_max: config.catalog.stale_max,
            query_timeout: config.catalog.query_timeout,
            usage: Arc::default(),
            metrics,
            pools,
            jobs,
        });
        tokio::spawn(refresh_worker(Arc::downgrade(&resolver), rx));
        resolver
    }

    /// Every tenant's usage counters, for the task that flushes them.
    pub(crate) fn usage(&self) -> Arc<Usage> {
        self.usage.clone()
    }

    /// Attach the feed follower's state (reachability and applied version).
    pub(crate) fn set_feed(&self, feed: Arc<FeedState>) {
        let _ = self.feed.set(feed);
    }

    /// The catalog version applied so far (0 before the first resync).
    pub fn applied_version(&self) -> i64 {
        self.feed.get().map_or(0, |f| f.applied_version())
    }

    /// Ready to route: the feed has loaded and the catalog is reachable or stale within bounds.
    pub fn ready(&self) -> bool {
        let catalog = self
            .feed
            .get()
            .is_some_and(|f| f.loaded() && f.unreachable_for().is_none_or(|d| d <= self.stale_max));
        catalog && self.pools.any_healthy()
    }

    fn unreachable_for(&self) -> Option<Duration> {
        self.feed.get().and_then(|f| f.unreachable_for())
    }

    /// The cached entry of `host` without any catalog query (used while holding a request).
    pub async fn cached(&self, host: &str) -> Option<Arc<HostEntry>> {
        self.cache.get(host).await
    }

    /// Resolve a normalised host. Runs on the request path.
    ///
    /// `Err(CatalogUnavailable)` when the host is not cached and the catalog cannot be asked, or
    /// when the catalog has been unreachable for longer than `catalog.stale_max`.
    pub async fn lookup(&self, host: &str) -> Result<Arc<HostEntry>, Reject> {
        if let Some(entry) = self.cache.get(host).await {
            if entry.is_negative() {
                self.metrics.lookup(Lookup::Negative);
            } else if let Some(down) = self.unreachable_for() {
                if down > self.stale_max {
                    return Err(Reject::CatalogUnavailable);
                }
                self.metrics.lookup(Lookup::Stale);
            } else {
                self.metrics.lookup(Lookup::Hit);
            }
            return Ok(entry);
        }
        if self.unreachable_for().is_some() {
            // Asking would only wait for a timeout; the feed notices when the catalog is back.
            return Err(Reject::CatalogUnavailable);
        }
        let budget = match self.indexed(host) {
            // Not in the index: most likely unknown, but possibly created a moment ago and not
            // yet in the feed, so it is still asked within the shared budget; over that budget
            // the index's answer stands, so a flood gets 404s, never 503s.
            Some(false) => {
                if !self.miss_budget.check(Instant::now()).allowed {
                    self.metrics.lookup(Lookup::Negative);
                    return Ok(self.unknown.clone());
                }
                None
            }
            Some(true) => {
                // A known host is worth waiting for: its request queues for the budget (as after
                // a restart, when every host misses at once) rather than failing at once.
                self.wait_for(&self.known_miss_budget).await?;
                None
            }
            None => Some(&self.miss_budget),
        };
        self.metrics.lookup(Lookup::Miss);
        let seen = self.generation.load(Ordering::Acquire);
        let entry = self
            .cache
            .try_get_with_by_ref(host, self.load(host, budget))
            .await
            .map_err(|e| *e)?;
        if self.generation.load(Ordering::Acquire) != seen {
            // A change was applied while we were loading: what we inserted may predate it.
            let _ = self.jobs.send(Job::Hosts(vec![host.to_string()]));
        }
        Ok(entry)
    }

    /// Whether the catalog has a route for `host`, or `None` before the index is loaded.
    pub(crate) fn indexed(&self, host: &str) -> Option<bool> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.as_ref().map(|hosts| hosts.contains(host))
    }

    /// Tenants whose rate limiters are alive (see [`Limiters::live`]).
    pub fn tenant_limiters(&self) -> usize {
        self.limiters.live()
    }

    /// Entries in the route cache, negative ones included (moka's count, which may lag a
    /// moment); bounded by `catalog.cache_capacity`.
    pub fn cached_hosts(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The number of hosts in the index, or `None` before it is loaded.
    pub fn known_hosts(&self) -> Option<usize> {
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        index.as_ref().map(HashSet::len)
    }

    /// Reload the index of known hosts (at a resync). A failure keeps the previous index.
    async fn load_index(&self) {
        match tokio::time::timeout(self.query_timeout * 10, self.catalog.all_hosts()).await {
            Ok(Ok(hosts)) => {
                let hosts: HashSet<Box<str>> = hosts.into_iter().map(Into::into).collect();
                tracing::debug!(hosts = hosts.len(), "loaded the index of known hosts");
                *self.index.write().unwrap_or_else(|e| e.into_inner()) = Some(hosts);
            }
            Ok(Err(e)) => self.failed(&e),
            Err(_) => tracing::warn!("loading the index of known hosts timed out"),
        }
    }

    /// Take one query from `budget`, waiting up to the query timeout for it;
    /// `CatalogUnavailable` when it does not come in time.
    async fn wait_for(&self, budget: &Gcra) -> Result<(), Reject> {
        let deadline = Instant::now() + self.query_timeout;
        let interval = Duration::from_secs(1) / budget.limit().rps.max(1);
        loop {
            let now = Instant::now();
            if budget.check(now).allowed {
                return Ok(());
            }
            if now + interval > deadline {
                return Err(Reject::CatalogUnavailable);
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Ask the catalog for `host`, within `budget` when given (else the caller took it).
    async fn load(&self, host: &str, budget: Option<&Gcra>) -> Result<Arc<HostEntry>, Reject> {
        if budget.is_some_and(|b| !b.check(Instant::now()).allowed) {
            return Err(Reject::CatalogUnavailable);
        }
        let routes = self
            .query(host)
            .await
            .map_err(|_| Reject::CatalogUnavailable)?;
        Ok(self.entry(routes))
    }

    /// `host_routes` on the control runtime, bounded by the query timeout. Marks the catalog
    /// unreachable when the database fails.
    async fn query(&self, host: &str) -> Result<Vec<Route>, ()> {
        let catalog = self.catalog.clone();
        let owned = host.to_string();
        let timeout = self.query_timeout;
        let task = self
            .control
            .spawn(async move { tokio::time::timeout(timeout, catalog.host_routes(&owned)).await });
        match task.await {
            Ok(Ok(Ok(routes))) => Ok(routes),
            Ok(Ok(Err(e))) => {
                self.failed(&e);
                Err(())
            }
            Ok(Err(_elapsed)) => {
                if let Some(feed) = self.feed.get() {
                    feed.mark_unreachable();
                }
                tracing::warn!(host, "catalog lookup timed out");
                Err(())
            }
            Err(join) => {
                tracing::error!(error = %join, "catalog lookup task failed");
                Err(())
            }
        }
    }

    fn failed(&self, e: &CatalogError) {
        if e.is_unavailable() {
            if let Some(feed) = self.feed.get() {
                feed.mark_unreachable();
            }
        }
        tracing::warn!(error = %e, "catalog lookup failed");
    }

    fn entry(&self, routes: Vec<Route>) -> Arc<HostEntry> {
        let routes = routes
            .into_iter()
            .map(|r| {
                Arc::new(RouteInfo {
                    tenant_id: r.tenant_id,
                    headers: crate::headers::RouteHeaders::new(
                        r.tenant_id,
                        &r.slug,
                        &r.shard,
                        r.epoch,
                    ),
                    label: self.labels.label(&r.slug),
                    limits: self
                        .limiters
                        .get(r.tenant_id, r.rate_limit.unwrap_or(self.default_limit)),
                    slug: r.slug.into(),
                    shard: r.shard.into(),
                    status: r.status,
                    epoch: r.epoch,
                    path_prefix: r.path_prefix.map(Into::into),
                    client_share: r.client_share,
                    series: Default::default(),
                    https_only: r.https_only,
                    hsts: r.hsts_max_age.map(crate::headers::hsts_value),
                    usage: self.usage.counters(r.tenant_id),
                })
            })
            .collect();
        Arc::new(HostEntry { routes })
    }

    /// Refresh `hosts` from the catalog, a batch of hosts per query (a full resync at 100,000
    /// cached hosts is 200 queries, not 100,000): their place in the index, and their cache
    /// entries where cached (hosts not cached are loaded by their next request). A batch that
    /// fails keeps its old entries.
    async fn refresh(&self, hosts: &[&str]) {
        for batch in hosts.chunks(HOSTS_PER_QUERY) {
            let catalog = self.catalog.clone();
            let routes = match tokio::time::timeout(
                self.query_timeout,
                catalog.routes_of_hosts(batch),
            )
            .await
            {
                Ok(Ok(routes)) => routes,
                Ok(Err(e)) => {
                    self.failed(&e);
                    continue;
                }
                Err(_) => {
                    tracing::warn!(
                        hosts = batch.len(),
                        "catalog refresh timed out; keeping the cached routes"
                    );
                    continue;
                }
            };
            if let Some(index) = self
                .index
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .as_mut()
            {
                for (host, routes) in &routes {
                    if routes.is_empty() {
                        index.remove(host.as_str());
                    } else if !index.contains(host.as_str()) {
                        index.insert(host.as_str().into());
                    }
                }
            }
            for (host, routes) in routes {
                // Only cached hosts are replaced; one evicted meanwhile stays out.
                if self.cache.contains_key(&host) {
                    let entry = self.entry(routes);
                    self.cache.insert(host, entry).await;
                }
            }
        }
    }

    async fn reload_shards(&self) {
        match self.catalog.shards().await {
            Ok(shards) => self.pools.replace(&shards, &self.metrics).await,
            Err(e) => self.failed(&e),
        }
    }

    /// Load the shard pools once at start-up, so the first requests have backends.
    pub(crate) async fn load_shards(&self) -> Result<(), CatalogError> {
        let shards = self.catalog.shards().await?;
        self.pools.replace(&shards, &self.metrics).await;
        Ok(())
    }

    /// The feed sink that keeps this resolver current.
    /// Drop the metric series of tenants without traffic for `edge.tenant_label_idle`, and the
    /// cached routes that carry their labels or `_other`, so their next request takes a fresh
    /// label (or `_other`) under the limit. Runs on the control runtime, a few times per idle period.
    pub(crate) fn sweep_quiet_tenants(
        &self,
        sweeper: &mut tenantgate_contract::labels::QuietSweeper,
    ) {
        let quiet = sweeper.sweep(
            &self.labels,
            &[&self.metrics.requests, &self.metrics.rate_limited],
        );
        if quiet.is_empty() {
            return;
        }
        tracing::debug!(
            tenants = quiet.len(),
            "dropped metric series of quiet tenants"
        );
        // Entries counted under `_other` go too: they may take the freed places now.
        let mut relabel: std::collections::HashSet<String> = quiet.into_iter().collect();
        relabel.insert(tenantgate_contract::labels::OTHER.to_string());
        let _ = self.cache.invalidate_entries_if(move |_, entry| {
            entry.routes.iter().any(|r| relabel.contains(&*r.label))
        });
    }

    pub(crate) fn sink(self: &Arc<Self>) -> Arc<dyn ChangeSink> {
        Arc::new(Sink(self.clone()))
    }
}

async fn refresh_worker(resolver: std::sync::Weak<Resolver>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(job) = rx.recv().await {
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        match job {
            Job::Hosts(hosts) => {
                let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
                resolver.refresh(&hosts).await;
            }
            Job::Shards => resolver.reload_shards().await,
            Job::All => {
                resolver.reload_shards().await;
                resolver.load_index().await;
                // Jobs run one after another, which keeps every host's refreshes in feed order.
                let all: Vec<Arc<String>> = resolver.cache.iter().map(|(k, _)| k).collect();
                let hosts: Vec<&str> = all.iter().map(|h| h.as_str()).collect();
                resolver.refresh(&hosts).await;
            }
        }
    }
}

struct Sink(Arc<Resolver>);

impl ChangeSink for Sink {
    fn apply(&self, change: &Change) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        let job = if change.kind == "shard" {
            Job::Shards
        } else {
            Job::Hosts(change.hosts.clone())
        };
        let _ = self.0.jobs.send(job);
    }

    fn resync(&self) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
        let _ = self.0.jobs.send(Job::All);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: Option<&str>, slug: &str) -> Arc<RouteInfo> {
        Arc::new(RouteInfo {
            tenant_id: Uuid::new_v4(),
            headers: crate::headers::RouteHeaders::new(Uuid::new_v4(), slug, "s", 1),
            slug: slug.into(),
            label: Arc::from(slug),
            shard: Arc::from("s"),
            status: TenantStatus::Active,
            epoch: 1,
            path_prefix: prefix.map(Into::into),
            limits: Arc::new(TenantLimits::new(RateLimit { rps: 1, burst: 1 })),
            client_share: None,
            series: Default::default(),
            https_only: false,
            hsts: None,
            usage: Default::default(),
        })
    }

    #[test]
    fn prefix_routes_win_over_the_whole_host() {
        let entry = HostEntry {
            routes: vec![route(None, "host"), route(Some("acme"), "acme")].into(),
        };
        assert_eq!(&*entry.route_for("/acme/x").unwrap().0.slug, "acme");
        assert!(entry.route_for("/acme?x=1").unwrap().1);
        assert_eq!(&*entry.route_for("/acmex/y").unwrap().0.slug, "host");
        assert_eq!(&*entry.route_for("/").unwrap().0.slug, "host");
        let only_prefix = HostEntry {
            routes: vec![route(Some("acme"), "acme")].into(),
        };
        assert!(only_prefix.route_for("/other").is_none());
    }
}
