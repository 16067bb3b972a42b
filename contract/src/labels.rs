//! The bounded `tenant` metric label (DESIGN §8): the first `limit` distinct tenants a process
//! sees get their own label value; the rest are counted under `_other`, so label cardinality
//! stays bounded at ten thousand tenants and beyond.

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// The label value for tenants past the limit.
pub const OTHER: &str = "_other";

/// Maps tenant slugs to bounded label values. Shared by all requests of a process.
#[derive(Debug)]
pub struct TenantLabels {
    limit: usize,
    seen: RwLock<HashSet<Arc<str>>>,
    other: Arc<str>,
}

impl TenantLabels {
    pub fn new(limit: usize) -> TenantLabels {
        TenantLabels {
            limit,
            seen: RwLock::new(HashSet::new()),
            other: Arc::from(OTHER),
        }
    }

    /// The label value for `slug`: the slug itself while under the limit, else `_other`.
    pub fn label(&self, slug: &str) -> Arc<str> {
        if let Some(v) = self.seen.read().expect("labels lock").get(slug) {
            return v.clone();
        }
        let mut seen = self.seen.write().expect("labels lock");
        if let Some(v) = seen.get(slug) {
            return v.clone();
        }
        if seen.len() >= self.limit {
            return self.other.clone();
        }
        let v: Arc<str> = Arc::from(slug);
        seen.insert(v.clone());
        v
    }

    /// Forget `slug` (its series was removed), freeing its place under the limit.
    pub fn forget(&self, slug: &str) {
        self.seen.write().expect("labels lock").remove(slug);
    }

    /// Number of distinct labelled tenants.
    pub fn len(&self) -> usize {
        self.seen.read().expect("labels lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_distinct_labels() {
        let labels = TenantLabels::new(2);
        assert_eq!(&*labels.label("a"), "a");
        assert_eq!(&*labels.label("b"), "b");
        assert_eq!(&*labels.label("c"), OTHER);
        assert_eq!(&*labels.label("a"), "a");
        assert_eq!(labels.len(), 2);
        labels.forget("a");
        assert_eq!(&*labels.label("c"), "c");
    }
}

/// Drops the series of tenants that went quiet, so a process that saw many tenants over its
/// lifetime keeps only the recently active ones and frees their places under the limit.
///
/// A tenant is quiet when none of its counters in the watched vectors moved for `idle`. The
/// sweep reads the counters (no cost on the request path), removes every series of a quiet
/// tenant from those vectors and forgets its label. Call [`QuietSweeper::sweep`] periodically
/// (a few times per `idle`).
#[derive(Debug)]
pub struct QuietSweeper {
    idle: std::time::Duration,
    /// Per tenant label: the sum of its counters and when that sum last changed.
    last: std::collections::HashMap<String, (u64, std::time::Instant)>,
}

impl QuietSweeper {
    pub fn new(idle: std::time::Duration) -> QuietSweeper {
        QuietSweeper {
            idle,
            last: std::collections::HashMap::new(),
        }
    }

    /// Sweep every quarter of `idle` (at least every minute, at most every 250 ms) until
    /// `shutdown`; `sweep` does one sweep with the sweeper and acts on what it dropped.
    pub async fn run(
        idle: std::time::Duration,
        shutdown: tokio_util::sync::CancellationToken,
        mut sweep: impl FnMut(&mut QuietSweeper),
    ) {
        let mut sweeper = QuietSweeper::new(idle);
        let every = (idle / 4).clamp(
            std::time::Duration::from_millis(250),
            std::time::Duration::from_secs(60),
        );
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => sweep(&mut sweeper),
            }
        }
    }

    /// One sweep over `vecs` (counter vectors with a `tenant` label). Returns the tenants whose
    /// series were removed.
    pub fn sweep(
        &mut self,
        labels: &TenantLabels,
        vecs: &[&prometheus::IntCounterVec],
    ) -> Vec<String> {
        use prometheus::core::Collector;
        let mut sums: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
        for vec in vecs {
            for family in vec.collect() {
                for metric in family.get_metric() {
                    if let Some(tenant) = tenant_of(metric) {
                        *sums.entry(tenant.to_string()).or_default() +=
                            metric.get_counter().get_value() as u64;
                    }
                }
            }
        }
        let now = std::time::Instant::now();
        let mut quiet = Vec::new();
        for (tenant, sum) in &sums {
            match self.last.get_mut(tenant) {
                Some((seen, since)) if *seen == *sum => {
                    if now.duration_since(*since) >= self.idle {
                        quiet.push(tenant.clone());
                    }
                }
                Some(entry) => *entry = (*sum, now),
                None => {
                    self.last.insert(tenant.clone(), (*sum, now));
                }
            }
        }
        self.last.retain(|t, _| sums.contains_key(t));
        for tenant in &quiet {
            for vec in vecs {
                for family in vec.collect() {
                    for metric in family.get_metric() {
                        if tenant_of(metric) == Some(tenant.as_str()) {
                            let series: std::collections::HashMap<&str, &str> = metric
                                .get_label()
                                .iter()
                                .map(|l| (l.name(), l.value()))
                                .collect();
                            let _ = vec.remove(&series);
                        }
                    }
                }
            }
            labels.forget(tenant);
            self.last.remove(tenant);
        }
        quiet
    }
}

/// The `tenant` label of a series, unless it is the shared `_other`.
fn tenant_of(metric: &prometheus::proto::Metric) -> Option<&str> {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == "tenant")
        .map(|l| l.value())
        .filter(|v| *v != OTHER)
}

#[cfg(test)]
mod sweeper_tests {
    use prometheus::{IntCounterVec, Opts};

    use super::*;

    #[test]
    fn drops_series_of_quiet_tenants_only() {
        let labels = TenantLabels::new(10);
        let requests =
            IntCounterVec::new(Opts::new("requests_total", "h"), &["tenant", "code"]).unwrap();
        for t in ["a", "b", OTHER] {
            let l = labels.label(t);
            requests.with_label_values(&[&*l, "200"]).inc();
        }
        requests.with_label_values(&["a", "404"]).inc();
        let mut sweeper = QuietSweeper::new(std::time::Duration::ZERO);
        assert!(
            sweeper.sweep(&labels, &[&requests]).is_empty(),
            "first sweep only records"
        );
        requests.with_label_values(&["b", "200"]).inc();
        assert_eq!(sweeper.sweep(&labels, &[&requests]), vec!["a".to_string()]);
        let left: Vec<String> = prometheus::core::Collector::collect(&requests)[0]
            .get_metric()
            .iter()
            .map(|m| m.get_label()[1].value().to_string())
            .collect();
        assert_eq!(left.len(), 2, "a's two series are gone: {left:?}");
        assert!(!left.contains(&"a".to_string()));
        assert_eq!(
            labels.len(),
            2,
            "a's place is free (b and _other remain labelled)"
        );
    }
}
