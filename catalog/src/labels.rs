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
