//! Exact per-tenant limits: one GCRA state ([`tenantgate_contract::gcra`]) per tenant, and an
//! optional cap on the tenant's concurrent requests; and [`ClientLimiters`], the share of its
//! tenant's limit one client address may use.
//!
//! Limiters are keyed by tenant id
//! after the route lookup (never by raw Host), shared by all hosts of a tenant, and live as long
//! as a cached route refers to them. Limits change live: a route refresh updates the parameters
//! of the existing limiter without resetting its state.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

pub use tenantgate_contract::gcra::{Decision, Gcra};

use crate::redis_limits::{Fleet, Lease};
use tenantgate_contract::RateLimit;
use uuid::Uuid;

/// Most (tenant, client address) pairs whose limiter state the edge keeps.
pub const MAX_TRACKED_CLIENTS: u64 = 100_000;

/// A client's limiter is forgotten after this long without a request. A limiter that has been
/// idle for its burst ÷ rps is full again, the same as a fresh one, so forgetting it changes
/// nothing for limits whose burst refills within this time (all but bursts over a minute's
/// worth of requests).
pub const CLIENT_IDLE: Duration = Duration::from_secs(60);

/// Per-client limits: one GCRA state per (tenant, client address), limited to the client's
/// share of the tenant's limit ([`tenantgate_contract::ClientShare`]), so that one address
/// cannot spend a whole tenant's limit and starve its other users.
///
/// Memory is bounded: at most [`MAX_TRACKED_CLIENTS`] states (each a 32-byte limiter plus the
/// cache's bookkeeping for a 36-byte key), idle ones dropped after [`CLIENT_IDLE`]. Past the
/// bound the least recently and least frequently used states are evicted; an evicted client
/// starts again with a full burst of its share, never more.
pub struct ClientLimiters {
    states: moka::sync::Cache<(Uuid, IpAddr), Arc<Gcra>>,
}

impl std::fmt::Debug for ClientLimiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientLimiters")
            .field("tracked", &self.states.entry_count())
            .finish()
    }
}

impl Default for ClientLimiters {
    fn default() -> Self {
        ClientLimiters::new(MAX_TRACKED_CLIENTS)
    }
}

impl ClientLimiters {
    /// Limiters for at most `capacity` clients.
    pub fn new(capacity: u64) -> ClientLimiters {
        ClientLimiters {
            states: moka::sync::Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(CLIENT_IDLE)
                .build(),
        }
    }

    /// How many client states are kept now (moka's count, which may lag inserts and
    /// evictions by a moment); reported as `tenantgate_edge_limiter_states{kind="client"}`.
    pub fn tracked(&self) -> u64 {
        self.states.entry_count()
    }

    /// Take one request of `client` of `tenant` at `now`, under `limit` (the client's share of
    /// the tenant's limit). Runs on the request path, before the tenant's own check.
    pub fn check(&self, tenant: Uuid, client: IpAddr, limit: RateLimit, now: Instant) -> Decision {
        let state = self
            .states
            .get_with((tenant, client), || Arc::new(Gcra::new(limit)));
        if state.limit() != limit {
            // The tenant's limit or share changed: keep the state, apply the new limit.
            state.set_limit(limit);
        }
        state.check(now)
    }
}

/// Everything limited per tenant.
#[derive(Debug)]
pub struct TenantLimits {
    /// The tenant's limit; with the local backend also its limiter.
    rate: Gcra,
    /// With the Redis backend: the tenant's share of its fleet-wide limit at this edge.
    lease: Option<Lease>,
    in_flight: AtomicU32,
}

impl TenantLimits {
    /// Limits kept by this edge alone (`edge.limits_backend = "local"`).
    pub fn new(limit: RateLimit) -> TenantLimits {
        TenantLimits {
            rate: Gcra::new(limit),
            lease: None,
            in_flight: AtomicU32::new(0),
        }
    }

    /// Limits shared by the fleet through Redis (`edge.limits_backend = "redis"`).
    pub fn shared(limit: RateLimit, fleet: &Arc<Fleet>) -> TenantLimits {
        TenantLimits {
            lease: Some(Lease::new(fleet, limit)),
            ..TenantLimits::new(limit)
        }
    }

    /// The tenant's limit (the whole fleet's, with the Redis backend).
    pub fn limit(&self) -> RateLimit {
        self.rate.limit()
    }

    /// Change the limit, keeping the state.
    pub fn set_limit(&self, limit: RateLimit) {
        self.rate.set_limit(limit);
        if let Some(lease) = &self.lease {
            lease.set_limit(limit);
        }
    }

    /// Take one request at `now`. Runs on the request path; never waits (with the Redis
    /// backend it spends the edge's lease, see [`crate::redis_limits`]).
    pub fn check(&self, now: Instant) -> Decision {
        match &self.lease {
            None => self.rate.check(now),
            Some(lease) => lease.check(self.rate.limit(), now),
        }
    }

    /// The lease, with the Redis backend.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Count one more concurrent request unless `cap` are already running. The count drops
    /// when the permit is dropped (at the end of the request, whatever its outcome).
    pub fn enter(self: &Arc<Self>, cap: u32) -> Option<InFlight> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= cap {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(self.clone()))
    }

    /// Requests of this tenant currently counted.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Acquire)
    }
}

/// One counted concurrent request (see [`TenantLimits::enter`]).
#[derive(Debug)]
pub struct InFlight(Arc<TenantLimits>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Tenant limits by tenant id. Entries are weak: a tenant's limits live while a cached route
/// holds them, so the registry never grows beyond the tenants in the route cache.
#[derive(Debug, Default)]
pub struct Limiters {
    by_tenant: Mutex<HashMap<Uuid, Weak<TenantLimits>>>,
    /// The Redis backend's shared state; `None` with the local backend.
    fleet: Option<Arc<Fleet>>,
}

impl Limiters {
    /// Limiters for the Redis backend: every tenant's limits hold a lease.
    pub fn shared(fleet: Arc<Fleet>) -> Limiters {
        Limiters {
            by_tenant: Mutex::default(),
            fleet: Some(fleet),
        }
    }

    /// Call `f` with every live tenant's limits. Holds the registry's lock (taken only when a
    /// route is loaded, never on the request path), so `f` must be quick.
    pub fn for_each_tenant(&self, mut f: impl FnMut(Uuid, &Arc<TenantLimits>)) {
        let map = self.by_tenant.lock().expect("limiters lock");
        for (tenant, limits) in map.iter() {
            if let Some(limits) = limits.upgrade() {
                f(*tenant, &limits);
            }
        }
    }

    /// Call `f` with every live tenant's lease (none with the local backend).
    pub fn for_each_lease(&self, mut f: impl FnMut(&Lease)) {
        self.for_each_tenant(|_, limits| {
            if let Some(lease) = limits.lease() {
                f(lease);
            }
        });
    }

    /// The tenant's limits with `limit` applied, created when it has none. Called when a route
    /// is loaded or refreshed, never on the request path.
    pub fn get(&self, tenant: Uuid, limit: RateLimit) -> Arc<TenantLimits> {
        let mut map = self.by_tenant.lock().expect("limiters lock");
        if let Some(existing) = map.get(&tenant).and_then(Weak::upgrade) {
            existing.set_limit(limit);
            return existing;
        }
        // Drop dead entries now and then so tenants evicted from the cache do not accumulate.
        if map.len() > 64 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let fresh = Arc::new(match &self.fleet {
            None => TenantLimits::new(limit),
            Some(fleet) => TenantLimits::shared(limit, fleet),
        });
        map.insert(tenant, Arc::downgrade(&fresh));
        fresh
    }

    /// How many tenants have limits alive (held by a cached route); reported as
    /// `tenantgate_edge_limiter_states{kind="tenant"}`. Walks the registry: for scrapes only.
    pub fn live(&self) -> usize {
        let map = self.by_tenant.lock().expect("limiters lock");
        map.values().filter(|w| w.strong_count() > 0).count()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn limit_changes_keep_state_and_registry_shares_limiters() {
        let limiters = Limiters::default();
        let id = Uuid::from_u128(1);
        let a = limiters.get(id, RateLimit { rps: 1, burst: 1 });
        let t0 = Instant::now();
        assert!(a.check(t0).allowed);
        assert!(!a.check(t0).allowed);
        let b = limiters.get(id, RateLimit { rps: 1, burst: 5 });
        assert!(Arc::ptr_eq(&a, &b));
        assert!(b.check(t0).allowed);
        drop((a, b));
        let c = limiters.get(id, RateLimit { rps: 1, burst: 1 });
        assert!(c.check(t0).allowed, "a dropped limiter starts afresh");
    }

    #[test]
    fn clients_are_limited_separately() {
        let clients = ClientLimiters::new(100);
        let tenant = Uuid::from_u128(1);
        let limit = RateLimit { rps: 1, burst: 2 };
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        assert!(clients.check(tenant, a, limit, t0).allowed);
        assert!(clients.check(tenant, a, limit, t0).allowed);
        assert!(!clients.check(tenant, a, limit, t0).allowed);
        // Another address, or the same address at another tenant, has its own state.
        assert!(clients.check(tenant, b, limit, t0).allowed);
        assert!(clients.check(Uuid::from_u128(2), a, limit, t0).allowed);
        // A raised limit applies to the existing state.
        let raised = RateLimit { rps: 1, burst: 5 };
        assert!(clients.check(tenant, a, raised, t0).allowed);
    }

    #[test]
    fn caps_concurrent_requests() {
        let limits = Arc::new(TenantLimits::new(RateLimit { rps: 1, burst: 1 }));
        let first = limits.enter(2).unwrap();
        let second = limits.enter(2).unwrap();
        assert!(limits.enter(2).is_none());
        assert_eq!(limits.in_flight(), 2);
        drop(first);
        let _third = limits.enter(2).unwrap();
        drop(second);
        assert_eq!(limits.in_flight(), 1);
    }
}
