//! Usage per tenant (requests, 5xx, 429s, response bytes), counted in memory on the request
//! path and added to the catalog's `tenant_usage` in batches every `edge.usage_flush_secs`, by a
//! control task: a slow or unreachable catalog never delays a request, it only delays the counts
//! (which stay in memory and are added at the next flush that succeeds).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantgate_catalog::store::usage::UsageCounts;
use tenantgate_catalog::Catalog;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One tenant's counts since the last flush. Shared by all the tenant's cached routes, and kept
/// across route refreshes, so a catalog change never drops counts.
#[derive(Debug, Default)]
pub struct UsageCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    rate_limited: AtomicU64,
    bytes: AtomicU64,
}

impl UsageCounters {
    /// Count one answered request (called in the logging phase).
    pub fn record(&self, status: u16, body_bytes: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.errors.fetch_add(1, Ordering::Relaxed);
        } else if status == 429 {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
        if body_bytes > 0 {
            self.bytes.fetch_add(body_bytes, Ordering::Relaxed);
        }
    }

    /// Take the counts, leaving zeros.
    fn take(&self) -> UsageCounts {
        let take = |c: &AtomicU64| c.swap(0, Ordering::Relaxed) as i64;
        UsageCounts {
            requests: take(&self.requests),
            errors: take(&self.errors),
            rate_limited: take(&self.rate_limited),
            bytes: take(&self.bytes),
        }
    }

    /// Put counts a failed flush could not store back.
    fn give_back(&self, counts: &UsageCounts) {
        let add = |c: &AtomicU64, n: i64| c.fetch_add(n.max(0) as u64, Ordering::Relaxed);
        add(&self.requests, counts.requests);
        add(&self.errors, counts.errors);
        add(&self.rate_limited, counts.rate_limited);
        add(&self.bytes, counts.bytes);
    }
}

/// Every tenant's [`UsageCounters`].
#[derive(Debug, Default)]
pub struct Usage {
    by_tenant: Mutex<HashMap<Uuid, Arc<UsageCounters>>>,
}

impl Usage {
    /// The tenant's counters, created when it has none. Called when a route is loaded or
    /// refreshed, never on the request path.
    pub fn counters(&self, tenant: Uuid) -> Arc<UsageCounters> {
        self.by_tenant
            .lock()
            .expect("usage lock")
            .entry(tenant)
            .or_default()
            .clone()
    }

    /// Take every tenant's counts. Counters that are empty and no longer held by a cached route
    /// are dropped, so evicted tenants do not accumulate.
    fn take(&self) -> Vec<(Uuid, UsageCounts)> {
        let mut map = self.by_tenant.lock().expect("usage lock");
        let mut taken = Vec::new();
        map.retain(|tenant, counters| {
            let counts = counters.take();
            if !counts.is_zero() {
                taken.push((*tenant, counts));
            }
            !counts.is_zero() || Arc::strong_count(counters) > 1
        });
        taken
    }

    fn give_back(&self, counts: &[(Uuid, UsageCounts)]) {
        for (tenant, c) in counts {
            self.counters(*tenant).give_back(c);
        }
    }

    /// Add what was counted to the catalog; on failure keep it for the next flush.
    async fn flush(&self, catalog: &Catalog, timeout: Duration) {
        let counts = self.take();
        if counts.is_empty() {
            return;
        }
        let now = tenantgate_contract::time::now_ms();
        match tokio::time::timeout(timeout, catalog.add_usage(now, &counts)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, tenants = counts.len(), "storing usage failed; kept for the next flush");
                self.give_back(&counts);
            }
            Err(_) => {
                tracing::warn!(
                    tenants = counts.len(),
                    "storing usage timed out; kept for the next flush"
                );
                self.give_back(&counts);
            }
        }
    }

    /// Flush every `interval` until `stop`, then once more.
    pub(crate) async fn run(
        self: Arc<Usage>,
        catalog: Catalog,
        interval: Duration,
        timeout: Duration,
        stop: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => self.flush(&catalog, timeout).await,
            }
        }
        self.flush(&catalog, timeout).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind_and_forgets_idle_unheld_tenants() {
        let usage = Usage::default();
        let held = Uuid::from_u128(1);
        let gone = Uuid::from_u128(2);
        let route = usage.counters(held);
        route.record(200, 10);
        route.record(503, 5);
        route.record(429, 0);
        usage.counters(gone).record(200, 1);
        let mut taken = usage.take();
        taken.sort_by_key(|(t, _)| *t);
        assert_eq!(
            taken,
            vec![
                (
                    held,
                    UsageCounts {
                        requests: 3,
                        errors: 1,
                        rate_limited: 1,
                        bytes: 15
                    }
                ),
                (
                    gone,
                    UsageCounts {
                        requests: 1,
                        errors: 0,
                        rate_limited: 0,
                        bytes: 1
                    }
                ),
            ]
        );
        // `gone` had counts, so it stays one more round; then, empty and unheld, it goes.
        assert!(usage.take().is_empty());
        let map = usage.by_tenant.lock().unwrap();
        assert!(map.contains_key(&held) && !map.contains_key(&gone));
    }

    #[test]
    fn a_failed_flush_keeps_the_counts() {
        let usage = Usage::default();
        let t = Uuid::from_u128(1);
        let _route = usage.counters(t);
        usage.counters(t).record(200, 7);
        let taken = usage.take();
        usage.give_back(&taken);
        assert_eq!(usage.take(), taken);
    }
}
