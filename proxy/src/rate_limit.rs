//! Exact per-tenant limits: one GCRA (generic cell rate algorithm) state per tenant, and an
//! optional cap on the tenant's concurrent requests.
//!
//! A limiter is a single atomic "theoretical arrival time" updated with compare-and-swap, so a
//! check is a handful of instructions and never takes a lock. Limiters are keyed by tenant id
//! after the route lookup (never by raw Host), shared by all hosts of a tenant, and live as long
//! as a cached route refers to them. Limits change live: a route refresh updates the parameters
//! of the existing limiter without resetting its state.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use tenantgate_contract::RateLimit;
use uuid::Uuid;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// The outcome of one check, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The burst size (`RateLimit-Limit`).
    pub limit: u32,
    /// Requests that could still be made right now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the limiter is back to a full burst (`RateLimit-Reset`).
    pub reset_secs: u64,
    /// Seconds until one request would be allowed; 0 when allowed (`Retry-After`).
    pub retry_after_secs: u64,
}

/// One tenant's limiter.
#[derive(Debug)]
pub struct Gcra {
    base: Instant,
    /// `rps` in the high 32 bits, `burst` in the low 32 bits, so both change together.
    params: AtomicU64,
    /// Theoretical arrival time in nanoseconds after `base`.
    tat: AtomicU64,
}

fn pack(limit: RateLimit) -> u64 {
    (u64::from(limit.rps.max(1)) << 32) | u64::from(limit.burst.max(1))
}

impl Gcra {
    /// A limiter that starts with a full burst.
    pub fn new(limit: RateLimit) -> Gcra {
        Gcra {
            base: Instant::now(),
            params: AtomicU64::new(pack(limit)),
            tat: AtomicU64::new(0),
        }
    }

    /// Change the limit, keeping the state (a lowered limit applies from the next request).
    pub fn set_limit(&self, limit: RateLimit) {
        self.params.store(pack(limit), Ordering::Relaxed);
    }

    /// The current limit.
    pub fn limit(&self) -> RateLimit {
        let p = self.params.load(Ordering::Relaxed);
        RateLimit {
            rps: (p >> 32) as u32,
            burst: p as u32,
        }
    }

    /// Take one request at `now`. Denied requests take nothing.
    pub fn check(&self, now: Instant) -> Decision {
        let RateLimit { rps, burst } = self.limit();
        let interval = NANOS_PER_SEC / u64::from(rps);
        let tolerance = interval.saturating_mul(u64::from(burst));
        let now = now.saturating_duration_since(self.base).as_nanos() as u64;
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let new_tat = tat.max(now) + interval;
            let ahead = new_tat - now;
            if ahead > tolerance {
                let wait = ahead - tolerance;
                return Decision {
                    allowed: false,
                    limit: burst,
                    remaining: 0,
                    reset_secs: ceil_secs(tat.max(now) - now),
                    retry_after_secs: ceil_secs(wait).max(1),
                };
            }
            match self
                .tat
                .compare_exchange_weak(tat, new_tat, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    return Decision {
                        allowed: true,
                        limit: burst,
                        remaining: ((tolerance - ahead) / interval) as u32,
                        reset_secs: ceil_secs(ahead),
                        retry_after_secs: 0,
                    }
                }
                Err(current) => tat = current,
            }
        }
    }
}

fn ceil_secs(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_SEC)
}

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
    use std::time::Duration;

    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let g = Gcra::new(RateLimit { rps: 10, burst: 10 });
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| g.check(t0).allowed).count();
        assert_eq!(allowed, 10);
        let denied = g.check(t0);
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after_secs, 1);
        assert_eq!(denied.limit, 10);
        // 100 ms later one more request fits.
        assert!(g.check(t0 + Duration::from_millis(100)).allowed);
        assert!(!g.check(t0 + Duration::from_millis(100)).allowed);
        // After a full second the whole burst is back.
        let later = t0 + Duration::from_millis(1200);
        assert_eq!((0..100).filter(|_| g.check(later).allowed).count(), 10);
    }

    #[test]
    fn reports_remaining_and_reset() {
        let g = Gcra::new(RateLimit { rps: 1, burst: 3 });
        let t0 = Instant::now();
        let first = g.check(t0);
        assert_eq!((first.remaining, first.reset_secs), (2, 1));
        let second = g.check(t0);
        assert_eq!((second.remaining, second.reset_secs), (1, 2));
    }

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

    #[test]
    fn concurrent_checks_are_exact() {
        let g = Arc::new(Gcra::new(RateLimit {
            rps: 1,
            burst: 1000,
        }));
        let t0 = Instant::now();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..1000).filter(|_| g.check(t0).allowed).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 1000);
    }
}
