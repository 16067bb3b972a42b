//! The admin API's own rate limits and the throttled last-used record of tokens.
//!
//! Each admin token and, separately, each client address gets a GCRA limiter
//! (`[admin] rate_limit_rps`, `rate_limit_burst`). The address is checked before the token is
//! looked up, so a flood of guessed tokens costs the catalog nothing once it is over the limit;
//! the token after, so one automation cannot starve the others behind a shared address.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::sync::Cache;
use tenantgate_catalog::Catalog;
use tenantgate_contract::gcra::Gcra;
use tenantgate_contract::RateLimit;
use uuid::Uuid;

use crate::error::AdminError;

/// Most keys (tokens plus addresses) with a limiter in memory.
const MAX_KEYS: u64 = 100_000;

/// How often at most a token's `last_used_at` is written.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Whose requests one limiter counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Address(IpAddr),
    Token(Uuid),
    Bootstrap,
}

pub(crate) struct AdminLimits {
    limit: Option<RateLimit>,
    limiters: Cache<Key, Arc<Gcra>>,
    /// Tokens whose `last_used_at` was written within [`TOUCH_EVERY`].
    touched: Cache<Uuid, ()>,
}

impl AdminLimits {
    pub(crate) fn new(limit: Option<RateLimit>) -> AdminLimits {
        // A limiter idle for longer than it takes to refill its burst is back at its initial
        // state, so forgetting it then changes nothing; the minute's floor keeps churn low.
        let refill = limit.map_or(0, |l| u64::from(l.burst / l.rps.max(1)) + 1);
        AdminLimits {
            limit,
            limiters: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_idle(Duration::from_secs(refill.max(60)))
                .build(),
            touched: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_live(TOUCH_EVERY)
                .build(),
        }
    }

    /// Take one request for `key`, or [`AdminError::RateLimited`] when it is over the limit.
    pub(crate) fn check(&self, key: Key) -> Result<(), AdminError> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let decision = self
            .limiters
            .get_with(key, || Arc::new(Gcra::new(limit)))
            .check(Instant::now());
        if decision.allowed {
            Ok(())
        } else {
            Err(AdminError::RateLimited(decision.retry_after_secs))
        }
    }

    /// Record that token `id` was used, at most once per [`TOUCH_EVERY`] per process, in the
    /// background: authentication never waits for this write.
    pub(crate) fn touch(&self, catalog: &Catalog, id: Uuid) {
        if self.touched.contains_key(&id) {
            return;
        }
        self.touched.insert(id, ());
        let catalog = catalog.clone();
        tokio::spawn(async move {
            let now = tenantgate_contract::time::now_ms();
            if let Err(e) = catalog.touch_admin_token(id, now).await {
                tracing::warn!(error = %e, token_id = %id, "could not record a token's last use");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_each_key_on_its_own() {
        let limits = AdminLimits::new(Some(RateLimit { rps: 1, burst: 2 }));
        let a = Key::Token(Uuid::from_u128(1));
        let b = Key::Address("127.0.0.1".parse().unwrap());
        assert!(limits.check(a.clone()).is_ok());
        assert!(limits.check(a.clone()).is_ok());
        assert!(matches!(
            limits.check(a.clone()),
            Err(AdminError::RateLimited(secs)) if secs >= 1
        ));
        assert!(limits.check(b).is_ok(), "another key has its own budget");
    }

    #[test]
    fn off_allows_everything() {
        let limits = AdminLimits::new(None);
        for _ in 0..10_000 {
            assert!(limits.check(Key::Bootstrap).is_ok());
        }
    }
}
