//! Exact per-tenant limits: one GCRA state ([`tenantgate_contract::gcra`]) per tenant, and an
//! optional cap on the tenant's concurrent requests.
//!
//! Limiters are keyed by tenant id
//! after the route lookup (never by raw Host), shared by all hosts of a tenant, and live as long
//! as a cached route refers to them. Limits change live: a route refresh updates the parameters
//! of the existing limiter without resetting its state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub use tenantgate_contract::gcra::{Decision, Gcra};
use tenantgate_contract::RateLimit;
use uuid::Uuid;

/// Everything limited per tenant.
#[derive(Debug)]
pub struct TenantLimits {
    /// Requests per second and burst.
    pub rate: Gcra,
    in_flight: AtomicU32,
}

impl TenantLimits {
    pub fn new(limit: RateLimit) -> TenantLimits {
        TenantLimits {
            rate: Gcra::new(limit),
            in_flight: AtomicU32::new(0),
        }
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
}

impl Limiters {
    /// The tenant's limits with `limit` applied, created when it has none. Called when a route
    /// is loaded or refreshed, never on the request path.
    pub fn get(&self, tenant: Uuid, limit: RateLimit) -> Arc<TenantLimits> {
        let mut map = self.by_tenant.lock().expect("limiters lock");
        if let Some(existing) = map.get(&tenant).and_then(Weak::upgrade) {
            existing.rate.set_limit(limit);
            return existing;
        }
        // Drop dead entries now and then so tenants evicted from the cache do not accumulate.
        if map.len() > 64 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let fresh = Arc::new(TenantLimits::new(limit));
        map.insert(tenant, Arc::downgrade(&fresh));
        fresh
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
        assert!(a.rate.check(t0).allowed);
        assert!(!a.rate.check(t0).allowed);
        let b = limiters.get(id, RateLimit { rps: 1, burst: 5 });
        assert!(Arc::ptr_eq(&a, &b));
        assert!(b.rate.check(t0).allowed);
        drop((a, b));
        let c = limiters.get(id, RateLimit { rps: 1, burst: 1 });
        assert!(c.rate.check(t0).allowed, "a dropped limiter starts afresh");
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
