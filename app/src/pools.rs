//! The tenant pool manager: one sqlx pool per tenant database, under one connection budget.
//!
//! A shard may hold thousands of tenants while a process may hold only a few dozen database
//! connections. The manager keeps at most one pool per tenant database (primary, and one replica
//! when the shard has replicas), opens it single-flight on the first request that needs it, and
//! closes it when it has been idle for `pool_idle`, when its room is needed for another tenant
//! (least recently used first), when the tenant is suspended, deleted or moved, or when its
//! credentials or location change in the catalog.
//!
//! **The budget is hard.** Every pool reserves its whole capacity (`per_pool` connections) when it
//! is created and gives it back only after it has been closed and all its connections are gone,
//! so the connections open at any instant never exceed `connection_budget`, however requests
//! interleave. A request that finds the budget reserved first closes idle pools; if every pool is
//! busy it waits (at most `acquire_timeout`) and then gets 503 `tenant_db_unavailable`.
//!
//! Handlers never see this type directly: they call [`crate::TenantContext::db`], which is how
//! a tenant database handle ([`TenantDb`]) can only exist for a verified tenant.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool};
use tenantgate_catalog::tenant_db::TenantDbTarget;
use tenantgate_catalog::{Shard, Tenant};
use tenantgate_config::db_url::Engine;
use tenantgate_config::AppConfig;
use tenantgate_contract::crypto::CredentialKey;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use crate::error::{AppError, Unavailable};

/// Which copy of a tenant database a handle talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DbRole {
    /// The primary: all writes, and reads that must see the client's own writes.
    Primary,
    /// A streaming replica of the shard (reads only; may lag the primary).
    Replica,
}

impl DbRole {
    /// The metric label value: `primary` or `replica`.
    pub fn as_str(self) -> &'static str {
        match self {
            DbRole::Primary => "primary",
            DbRole::Replica => "replica",
        }
    }
}

/// Limits of a [`PoolManager`].
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most tenant database connections open at once in this process (hard).
    pub connection_budget: u32,
    /// Capacity of each tenant pool; reserved in full against the budget while the pool exists.
    pub per_pool: u32,
    /// A pool unused this long is closed.
    pub pool_idle: Duration,
    /// Most time a request waits for a connection (budget room plus connect) before 503.
    pub acquire_timeout: Duration,
}

impl PoolOptions {
    /// Options from the `[app]` config section. `per_pool` is a quarter of the budget, between
    /// 1 and 4: enough for a tenant's concurrent requests without letting one tenant hold the
    /// room of many.
    pub fn from_config(app: &AppConfig) -> PoolOptions {
        PoolOptions {
            connection_budget: app.connection_budget,
            per_pool: (app.connection_budget / 4).clamp(1, 4),
            pool_idle: app.pool_idle,
            acquire_timeout: app.acquire_timeout,
        }
    }
}

/// A snapshot of the manager, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Tenant pools that exist (open or opening), not counting ones being closed.
    pub pools: usize,
    /// Connections open now, in all pools including ones being closed.
    pub open_connections: u32,
    /// Of those, connections idle in their pool.
    pub idle_connections: u32,
    /// Budget reserved by existing and closing pools; never above `connection_budget`.
    pub reserved: u32,
    pub connection_budget: u32,
    /// Pools ever opened (a cold tenant request opens one).
    pub opened_total: u64,
    /// Connections handed out from primaries since start.
    pub acquired_primary: u64,
    /// Connections handed out from replicas since start.
    pub acquired_replica: u64,
}

impl PoolStats {
    /// Connections handed out to requests now.
    pub fn in_use_connections(&self) -> u32 {
        self.open_connections.saturating_sub(self.idle_connections)
    }
}

/// Opens, shares, evicts and closes tenant database pools under a connection budget.
///
/// Cheap to clone (one shared state). Create one per app process with [`PoolManager::new`],
/// run [`PoolManager::reap_idle`] periodically (`AppState::start` does) and call
/// [`PoolManager::close_all`] at shutdown.
#[derive(Clone)]
pub struct PoolManager {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for PoolManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolManager")
            .field("stats", &self.stats())
            .finish()
    }
}

struct Shared {
    options: PoolOptions,
    credential_key: CredentialKey,
    state: Mutex<State>,
    /// Signalled when budget is given back or a pool becomes idle (evictable).
    changed: Notify,
    started: Instant,
    opened_total: AtomicU64,
    acquired: [AtomicU64; 2],
}

#[derive(Default)]
struct State {
    pools: HashMap<PoolKey, Arc<Entry>>,
    /// Retired pools whose connections are still closing; their budget is still reserved.
    closing: Vec<Arc<Entry>>,
    reserved: u32,
    shut_down: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PoolKey {
    tenant: Uuid,
    role: DbRole,
}

struct Entry {
    key: PoolKey,
    slug: String,
    /// What the pool was opened with; a tenant or shard change that alters it retires the pool.
    tenant_fp: u64,
    shard_fp: u64,
    reserved: u32,
    leases: AtomicUsize,
    last_used_ms: AtomicU64,
    retired: AtomicBool,
    /// Held while the pool is being opened (single flight) and while it is being closed.
    opening: tokio::sync::Mutex<()>,
    pool: Mutex<Option<AnyPool>>,
    /// The epoch the database records, as last read through this pool (see
    /// [`PoolManager::fence`]); `None` until the first connection is handed out.
    recorded: Mutex<Option<RecordedEpoch>>,
}

/// A tenant database's recorded epoch as one read saw it.
#[derive(Debug, Clone, Copy)]
struct RecordedEpoch {
    epoch: i64,
    /// When it was read (the manager's clock, ms).
    read_ms: u64,
    /// The newest signed epoch checked against this read. A request signed with a newer one
    /// means the route changed since: the database may record a newer epoch too.
    checked: i64,
}

/// How long a pool trusts the recorded epoch it read, for requests signed with an epoch it has
/// already checked. This bounds how long after a move a request from a stale edge can still
/// reach an old copy through a pool that was open before the old copy was fenced: at most this
/// long (reads only on PostgreSQL, whose old copy is read-only from the hold on). A request
/// signed with a newer epoch than checked always re-reads, so the cost is one small query per
/// pool per second of traffic plus one per route change.
const EPOCH_RECHECK_MS: u64 = 1000;

impl Entry {
    fn pool(&self) -> Option<AnyPool> {
        lock(&self.pool).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these short critical sections cannot leave them inconsistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A connection to one tenant's database, checked out of its pool.
///
/// Only [`crate::TenantContext::db`] / [`crate::TenantContext::read_db`] make one, so a handler
/// cannot reach a tenant database without the request's verified tenant. Derefs to
/// `sqlx::AnyConnection`: pass `&mut *db` to sqlx queries. Dropping it returns the connection
/// to the pool.
///
/// Code outside this crate can neither ask the pool manager for a tenant by hand nor build a
/// handle:
///
/// ```compile_fail
/// # async fn f(pools: tenantgate_app::PoolManager, t: tenantgate_catalog::Tenant, s: tenantgate_catalog::Shard) {
/// let db = pools.acquire(&t, &s, tenantgate_app::DbRole::Primary).await; // private
/// # }
/// ```
pub struct TenantDb {
    // Field order matters: the connection goes back to the pool before the lease is released,
    // so a pool is never seen idle (evictable) while one of its connections is still out.
    conn: PoolConnection<Any>,
    role: DbRole,
    engine: Engine,
    _lease: Lease,
}

impl TenantDb {
    /// Whether this is the primary or a replica.
    pub fn role(&self) -> DbRole {
        self.role
    }

    /// The database kind, for the rare query that differs between PostgreSQL and SQLite.
    pub fn engine(&self) -> Engine {
        self.engine
    }
}

impl std::fmt::Debug for TenantDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantDb")
            .field("role", &self.role)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Deref for TenantDb {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for TenantDb {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// A request's claim on a pool entry: while any exist the pool is not idle and is never evicted.
struct Lease {
    entry: Arc<Entry>,
    shared: Arc<Shared>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.entry
            .last_used_ms
            .store(self.shared.now_ms(), Ordering::Relaxed);
        if self.entry.leases.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.changed.notify_waiters();
        }
    }
}

enum ConnectError {
    /// The entry was retired under us; take a fresh lease.
    Retry,
    Fail(AppError),
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Take `entry` out of service: no new leases, close it in the background, give its budget
    /// back once its connections are gone. Caller holds the state lock and removed it from
    /// `pools` already.
    fn retire_locked(self: &Arc<Self>, state: &mut State, entry: Arc<Entry>, why: &'static str) {
        if entry.retired.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::debug!(tenant = %entry.slug, role = entry.key.role.as_str(), why, "closing tenant pool");
        state.closing.push(entry.clone());
        let shared = self.clone();
        tokio::spawn(async move { shared.close_entry(entry).await });
    }

    async fn close_entry(self: Arc<Self>, entry: Arc<Entry>) {
        // Waits for an open in progress, so no pool can appear on a retired entry afterwards.
        let guard = entry.opening.lock().await;
        let pool = entry.pool();
        drop(guard);
        if let Some(pool) = pool {
            // Waits until connections checked out by requests are back, then closes them all.
            pool.close().await;
            *lock(&entry.pool) = None;
        }
        {
            let mut state = lock(&self.state);
            state.reserved -= entry.reserved;
            state.closing.retain(|e| !Arc::ptr_eq(e, &entry));
        }
        self.changed.notify_waiters();
    }
}

impl PoolManager {
    /// A manager with the given limits; `credential_key` opens tenants' sealed logins.
    pub fn new(options: PoolOptions, credential_key: CredentialKey) -> PoolManager {
        assert!(
            options.per_pool >= 1 && options.per_pool <= options.connection_budget,
            "per_pool must be between 1 and the connection budget"
        );
        PoolManager {
            shared: Arc::new(Shared {
                options,
                credential_key,
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                started: Instant::now(),
                opened_total: AtomicU64::new(0),
                acquired: [AtomicU64::new(0), AtomicU64::new(0)],
            }),
        }
    }

    /// The limits this manager was made with.
    pub fn options(&self) -> &PoolOptions {
        &self.shared.options
    }

    /// A connection to `tenant`'s database on `shard` (`role` picks primary or replica), for a
    /// request signed with route epoch `signed`.
    ///
    /// Runs on every request that needs the database. Returns within `acquire_timeout`:
    /// [`AppError::TenantDbUnavailable`] when the budget stayed exhausted or the database could
    /// not be reached, [`AppError::TenantDb`] when the target could not be resolved (sealed
    /// credentials that do not open), [`AppError::TenantMoved`] when the database records a
    /// newer epoch than `signed` (epoch fencing, see [`crate::fence`]). Handlers use [`crate::TenantContext::db`] instead; this is
    /// `pub(crate)` so that no code can name a tenant without a verified context.
    pub(crate) async fn acquire(
        &self,
        tenant: &Tenant,
        shard: &Shard,
        role: DbRole,
        signed: i64,
    ) -> Result<TenantDb, AppError> {
        let deadline = Instant::now() + self.shared.options.acquire_timeout;
        let key = PoolKey {
            tenant: tenant.id,
            role,
        };
        let (tenant_fp, shard_fp) = (tenant_fingerprint(tenant), shard_fingerprint(shard));
        loop {
            let lease = self
                .lease(key, &tenant.slug, tenant_fp, shard_fp, deadline)
                .await?;
            match self.connect(&lease.entry, tenant, shard, deadline).await {
                Ok(mut conn) => {
                    self.fence(&lease.entry, &mut conn, signed).await?;
                    self.shared.acquired[role as usize].fetch_add(1, Ordering::Relaxed);
                    return Ok(TenantDb {
                        conn,
                        role,
                        engine: Engine::of_url(&shard.database_url)?,
                        _lease: lease,
                    });
                }
                Err(ConnectError::Retry) if Instant::now() < deadline => continue,
                Err(ConnectError::Retry) => {
                    return Err(AppError::TenantDbUnavailable(Unavailable::Timeout))
                }
                Err(ConnectError::Fail(e)) => return Err(e),
            }
        }
    }

    /// Epoch fencing on a connection of `entry`'s pool, for a request signed with `signed`:
    /// the database's recorded epoch is read when the pool hands out its first connection, and
    /// again only when a request carries a newer epoch than any checked against the last read,
    /// or when that read is older than [`EPOCH_RECHECK_MS`]. Otherwise the cached value decides.
    async fn fence(
        &self,
        entry: &Entry,
        conn: &mut PoolConnection<Any>,
        signed: i64,
    ) -> Result<(), AppError> {
        let now = self.shared.now_ms();
        let cached = *lock(&entry.recorded);
        if let Some(r) = cached {
            if signed <= r.checked && now.saturating_sub(r.read_ms) < EPOCH_RECHECK_MS {
                return crate::fence::check(signed, r.epoch);
            }
        }
        let epoch = crate::fence::recorded(conn).await.map_err(|e| {
            tracing::warn!(tenant = %entry.slug, error = %e, "reading the tenant database's epoch failed");
            AppError::TenantDbUnavailable(Unavailable::Connect)
        })?;
        let checked = cached
            .filter(|r| r.epoch == epoch)
            .map_or(signed, |r| r.checked.max(signed));
        *lock(&entry.recorded) = Some(RecordedEpoch {
            epoch,
            read_ms: now,
            checked,
        });
        if signed < epoch {
            tracing::info!(tenant = %entry.slug, signed, recorded = epoch, "request signed with an epoch older than the database's");
        }
        crate::fence::check(signed, epoch)
    }

    /// A lease on the live pool entry for `key`, creating the entry (and reserving its budget)
    /// when there is none. Waits for budget until `deadline`.
    async fn lease(
        &self,
        key: PoolKey,
        slug: &str,
        tenant_fp: u64,
        shard_fp: u64,
        deadline: Instant,
    ) -> Result<Lease, AppError> {
        let shared = &self.shared;
        let (budget, per_pool) = (shared.options.connection_budget, shared.options.per_pool);
        loop {
            // Registered before looking at the state, so a release between the look and the
            // wait still wakes us.
            let notified = shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = lock(&shared.state);
                if state.shut_down {
                    return Err(AppError::TenantDbUnavailable(Unavailable::ShuttingDown));
                }
                if let Some(entry) = state.pools.get(&key).cloned() {
                    if entry.tenant_fp == tenant_fp && entry.shard_fp == shard_fp {
                        entry.leases.fetch_add(1, Ordering::AcqRel);
                        return Ok(Lease {
                            entry,
                            shared: shared.clone(),
                        });
                    }
                    // Opened with credentials or a location that no longer hold.
                    state.pools.remove(&key);
                    shared.retire_locked(&mut state, entry, "tenant database target changed");
                }
                if state.closing.iter().any(|e| e.key == key) {
                    // Its previous pool is still closing: wait, so a tenant database never has
                    // two pools (and SQLite never holds a closed pool's file open for a live
                    // one's locks).
                } else if state.reserved + per_pool <= budget {
                    state.reserved += per_pool;
                    let entry = Arc::new(Entry {
                        key,
                        slug: slug.to_string(),
                        tenant_fp,
                        shard_fp,
                        reserved: per_pool,
                        leases: AtomicUsize::new(1),
                        last_used_ms: AtomicU64::new(shared.now_ms()),
                        retired: AtomicBool::new(false),
                        opening: tokio::sync::Mutex::new(()),
                        pool: Mutex::new(None),
                        recorded: Mutex::new(None),
                    });
                    state.pools.insert(key, entry.clone());
                    return Ok(Lease {
                        entry,
                        shared: shared.clone(),
                    });
                } else {
                    // At budget. Evict the least recently used idle pool, unless pools already
                    // closing will give back enough room (each waiter would otherwise evict one).
                    let releasing: u32 = state.closing.iter().map(|e| e.reserved).sum();
                    if state.reserved - releasing + per_pool > budget {
                        let victim = state
                            .pools
                            .values()
                            .filter(|e| e.leases.load(Ordering::Acquire) == 0)
                            .min_by_key(|e| e.last_used_ms.load(Ordering::Relaxed))
                            .cloned();
                        if let Some(victim) = victim {
                            state.pools.remove(&victim.key);
                            shared.retire_locked(
                                &mut state,
                                victim,
                                "room needed for another tenant",
                            );
                        }
                    }
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(AppError::TenantDbUnavailable(Unavailable::Budget));
            }
        }
    }

    /// A connection from `entry`'s pool, opening the pool first if this is its first use.
    async fn connect(
        &self,
        entry: &Arc<Entry>,
        tenant: &Tenant,
        shard: &Shard,
        deadline: Instant,
    ) -> Result<PoolConnection<Any>, ConnectError> {
        let pool = match entry.pool() {
            Some(pool) => pool,
            None => {
                let Ok(_opening) = tokio::time::timeout_at(deadline, entry.opening.lock()).await
                else {
                    return Err(ConnectError::Fail(AppError::TenantDbUnavailable(
                        Unavailable::Timeout,
                    )));
                };
                if entry.retired.load(Ordering::Acquire) {
                    return Err(ConnectError::Retry);
                }
                match entry.pool() {
                    Some(pool) => pool,
                    None => match self.open(entry, tenant, shard, deadline).await {
                        Ok(pool) => {
                            *lock(&entry.pool) = Some(pool.clone());
                            pool
                        }
                        Err(e) => {
                            // Forget the entry so the next request tries afresh.
                            let mut state = lock(&self.shared.state);
                            if state
                                .pools
                                .get(&entry.key)
                                .is_some_and(|e| Arc::ptr_eq(e, entry))
                            {
                                state.pools.remove(&entry.key);
                            }
                            self.shared
                                .retire_locked(&mut state, entry.clone(), "opening failed");
                            return Err(ConnectError::Fail(e));
                        }
                    },
                }
            }
        };
        match tokio::time::timeout_at(deadline, pool.acquire()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(sqlx::Error::PoolClosed)) => Err(ConnectError::Retry),
            Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => Err(ConnectError::Fail(
                AppError::TenantDbUnavailable(Unavailable::Timeout),
            )),
            Ok(Err(e)) => {
                tracing::warn!(tenant = %entry.slug, error = %e, "tenant database connection failed");
                Err(ConnectError::Fail(AppError::TenantDbUnavailable(
                    Unavailable::Connect,
                )))
            }
        }
    }

    /// Open the pool of `entry`. The URL carries the tenant's password: it is never logged.
    async fn open(
        &self,
        entry: &Entry,
        tenant: &Tenant,
        shard: &Shard,
        deadline: Instant,
    ) -> Result<AnyPool, AppError> {
        let target = TenantDbTarget::resolve(shard, tenant, &self.shared.credential_key)?;
        let url = match entry.key.role {
            DbRole::Primary => target.primary,
            DbRole::Replica => {
                if target.replicas.is_empty() {
                    return Err(AppError::TenantDbUnavailable(Unavailable::NoReplica));
                }
                // One replica per tenant (stable), so a tenant has at most one replica pool.
                let i = (tenant.id.as_u128() % target.replicas.len() as u128) as usize;
                target.replicas[i].clone()
            }
        };
        let options = &self.shared.options;
        let opened = tokio::time::timeout_at(
            deadline,
            tenantgate_catalog::db::connect_with(
                &url,
                tenantgate_catalog::db::PoolOptions {
                    idle_timeout: Some(options.pool_idle),
                    create: false,
                    busy_timeout: Duration::from_secs(5),
                    ..tenantgate_catalog::db::PoolOptions::new(options.per_pool)
                },
            ),
        )
        .await;
        match opened {
            Ok(Ok(pool)) => {
                self.shared.opened_total.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(tenant = %entry.slug, role = entry.key.role.as_str(), "opened tenant pool");
                Ok(pool)
            }
            Ok(Err(e)) => {
                tracing::warn!(tenant = %entry.slug, role = entry.key.role.as_str(), error = %e, "opening tenant database failed");
                Err(AppError::TenantDbUnavailable(Unavailable::Connect))
            }
            Err(_) => Err(AppError::TenantDbUnavailable(Unavailable::Timeout)),
        }
    }

    /// Close the pools of `tenant` (suspended, deleted, moved away). Runs from the catalog feed.
    pub fn close_tenant(&self, tenant: Uuid) {
        self.retire_where(|e| e.key.tenant == tenant, "tenant no longer served here");
    }

    /// Close `tenant`'s pools if they were opened with other credentials or another database
    /// name than the catalog now holds. Runs from the catalog feed.
    pub fn refresh_tenant(&self, tenant: &Tenant) {
        let fp = tenant_fingerprint(tenant);
        self.retire_where(
            |e| e.key.tenant == tenant.id && e.tenant_fp != fp,
            "tenant database target changed",
        );
    }

    /// Close the pools opened against another location of `shard` (database URL, replicas).
    pub fn refresh_shard(&self, shard: &Shard) {
        let fp = shard_fingerprint(shard);
        self.retire_where(|e| e.shard_fp != fp, "shard database location changed");
    }

    /// Close pools unused for `pool_idle`. Runs periodically; returns how many it closed.
    pub fn reap_idle(&self) -> usize {
        let idle_ms = self.shared.options.pool_idle.as_millis() as u64;
        let now = self.shared.now_ms();
        self.retire_where(
            |e| {
                e.leases.load(Ordering::Acquire) == 0
                    && now.saturating_sub(e.last_used_ms.load(Ordering::Relaxed)) >= idle_ms
            },
            "idle",
        )
    }

    fn retire_where(&self, pred: impl Fn(&Entry) -> bool, why: &'static str) -> usize {
        let mut state = lock(&self.shared.state);
        let doomed: Vec<PoolKey> = state
            .pools
            .values()
            .filter(|e| pred(e))
            .map(|e| e.key)
            .collect();
        for key in &doomed {
            if let Some(entry) = state.pools.remove(key) {
                self.shared.retire_locked(&mut state, entry, why);
            }
        }
        doomed.len()
    }

    /// Tenants that have a pool now (for re-checking them after a catalog resync).
    pub fn tenants_with_pools(&self) -> Vec<Uuid> {
        let state = lock(&self.shared.state);
        let mut ids: Vec<Uuid> = state.pools.keys().map(|k| k.tenant).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Counts for metrics and tests.
    pub fn stats(&self) -> PoolStats {
        let state = lock(&self.shared.state);
        let mut stats = PoolStats {
            pools: state.pools.len(),
            reserved: state.reserved,
            connection_budget: self.shared.options.connection_budget,
            opened_total: self.shared.opened_total.load(Ordering::Relaxed),
            acquired_primary: self.shared.acquired[DbRole::Primary as usize]
                .load(Ordering::Relaxed),
            acquired_replica: self.shared.acquired[DbRole::Replica as usize]
                .load(Ordering::Relaxed),
            ..PoolStats::default()
        };
        for entry in state.pools.values().chain(state.closing.iter()) {
            if let Some(pool) = entry.pool() {
                // Two separate reads of a live pool: keep them consistent.
                let size = pool.size();
                stats.open_connections += size;
                stats.idle_connections += (pool.num_idle() as u32).min(size);
            }
        }
        stats
    }

    /// Refuse new connections and close every pool, waiting at most `timeout` for connections
    /// still in use. Runs at shutdown.
    pub async fn close_all(&self, timeout: Duration) {
        {
            let mut state = lock(&self.shared.state);
            state.shut_down = true;
            let all: Vec<Arc<Entry>> = state.pools.drain().map(|(_, e)| e).collect();
            for entry in all {
                self.shared.retire_locked(&mut state, entry, "shutdown");
            }
        }
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if lock(&self.shared.state).closing.is_empty() {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!("tenant pools still closing at shutdown deadline");
                return;
            }
        }
    }
}

fn tenant_fingerprint(t: &Tenant) -> u64 {
    let mut h = DefaultHasher::new();
    (&t.shard, &t.db_name, &t.db_credentials).hash(&mut h);
    h.finish()
}

fn shard_fingerprint(s: &Shard) -> u64 {
    let mut h = DefaultHasher::new();
    (&s.name, &s.database_url, &s.replicas).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use tenantgate_catalog::ShardStatus;
    use tenantgate_contract::TenantStatus;

    use super::*;

    fn shard(dir: &std::path::Path) -> Shard {
        Shard {
            name: "s".into(),
            status: ShardStatus::Active,
            app_upstreams: vec![],
            database_url: format!("sqlite://{}", dir.display()),
            replicas: vec![],
            created_at: 0,
            updated_at: 0,
        }
    }

    async fn tenant(shard: &Shard, n: u128) -> Tenant {
        let id = Uuid::from_u128(n);
        let db_name = tenantgate_catalog::tenant_db::db_name(id);
        let file = tenantgate_catalog::tenant_db::sqlite_file(&shard.database_url, &db_name);
        let pool = tenantgate_catalog::db::connect(&format!("sqlite://{}", file.display()), 1)
            .await
            .unwrap();
        pool.close().await;
        Tenant {
            id,
            slug: format!("t{n}"),
            name: String::new(),
            status: TenantStatus::Active,
            shard: shard.name.clone(),
            epoch: 1,
            domains: vec![],
            rate_limit: None,
            settings: serde_json::json!({}),
            schema_version: 0,
            migration_error: None,
            last_error: None,
            db_name,
            db_credentials: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn manager(budget: u32, timeout_ms: u64) -> PoolManager {
        PoolManager::new(
            PoolOptions {
                connection_budget: budget,
                per_pool: 1,
                pool_idle: Duration::from_secs(60),
                acquire_timeout: Duration::from_millis(timeout_ms),
            },
            CredentialKey::from_bytes(&[3; 32]).unwrap(),
        )
    }

    #[tokio::test]
    async fn full_budget_waits_then_503s_and_idle_pools_make_room() {
        let dir = tempfile::tempdir().unwrap();
        let s = shard(dir.path());
        let (a, b, c) = (
            tenant(&s, 1).await,
            tenant(&s, 2).await,
            tenant(&s, 3).await,
        );
        let pools = manager(2, 200);

        let held_a = pools.acquire(&a, &s, DbRole::Primary, 0).await.unwrap();
        let held_b = pools.acquire(&b, &s, DbRole::Primary, 0).await.unwrap();
        let started = std::time::Instant::now();
        let err = pools.acquire(&c, &s, DbRole::Primary, 0).await.unwrap_err();
        assert!(
            matches!(err, AppError::TenantDbUnavailable(Unavailable::Budget)),
            "{err}"
        );
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(pools.stats().open_connections, 2);

        // A waiter gets in as soon as a pool goes idle (it is evicted for the waiter).
        let waiter = {
            let pools = pools.clone();
            let (c, s) = (c.clone(), s.clone());
            tokio::spawn(async move { pools.acquire(&c, &s, DbRole::Primary, 0).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held_a);
        waiter.await.unwrap().unwrap();
        let stats = pools.stats();
        assert!(
            stats.reserved <= 2 && stats.open_connections <= 2,
            "{stats:?}"
        );
        assert_eq!(stats.opened_total, 3);

        // Closing a tenant with a connection out waits for it, then gives the budget back.
        pools.close_tenant(b.id);
        assert_eq!(
            pools.stats().reserved,
            2,
            "still reserved while b's connection is out"
        );
        drop(held_b);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pools.stats().reserved > 1 {
            assert!(Instant::now() < deadline, "{:?}", pools.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        pools.close_all(Duration::from_secs(1)).await;
        let stats = pools.stats();
        assert_eq!(
            (stats.pools, stats.reserved, stats.open_connections),
            (0, 0, 0)
        );
        let err = pools.acquire(&a, &s, DbRole::Primary, 0).await.unwrap_err();
        assert!(matches!(
            err,
            AppError::TenantDbUnavailable(Unavailable::ShuttingDown)
        ));
    }

    #[tokio::test]
    async fn first_use_opens_one_pool_however_many_ask() {
        let dir = tempfile::tempdir().unwrap();
        let s = shard(dir.path());
        let t = tenant(&s, 7).await;
        let pools = manager(4, 2000);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (pools, t, s) = (pools.clone(), t.clone(), s.clone());
                tokio::spawn(async move {
                    let mut db = pools.acquire(&t, &s, DbRole::Primary, 0).await.unwrap();
                    sqlx::query("SELECT 1").execute(&mut *db).await.unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(pools.stats().opened_total, 1);
        assert_eq!(pools.stats().pools, 1);
    }

    #[tokio::test]
    async fn a_missing_tenant_file_is_unavailable_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let s = shard(dir.path());
        let mut t = tenant(&s, 9).await;
        t.db_name = "t_missing".into();
        let pools = manager(2, 500);
        let err = pools.acquire(&t, &s, DbRole::Primary, 0).await.unwrap_err();
        assert!(
            matches!(err, AppError::TenantDbUnavailable(Unavailable::Connect)),
            "{err}"
        );
        assert!(!dir.path().join("t_missing.db").exists());
        let deadline = Instant::now() + Duration::from_secs(5);
        while pools.stats().reserved > 0 {
            assert!(Instant::now() < deadline, "{:?}", pools.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
