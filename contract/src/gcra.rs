//! The generic cell rate algorithm (GCRA): an exact rate limit with a burst, as one atomic
//! "theoretical arrival time" updated with compare-and-swap, so a check is a handful of
//! instructions and never takes a lock.
//!
//! The edge keeps one per tenant (keyed by tenant id after the route lookup); the admin API one
//! per token and per client address. The `RateLimit-*` header values come from [`Decision`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::RateLimit;

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

/// One limiter (a tenant's at the edge, a token's or an address's at the admin API).
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
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
