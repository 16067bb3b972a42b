//! The replay cache: request ids of verified signatures, so that a captured signed request
//! cannot be sent again while its signature is still fresh (DESIGN §9).
//!
//! A signature verifies for `max_skew_secs` either side of its timestamp, so an id must be
//! remembered for `2 × max_skew_secs` after it is first seen. The cache keeps two generations
//! of ids, each spanning that window: an id is a replay when either generation holds it, and
//! when the current generation is older than the window it becomes the previous one (the old
//! previous is dropped). Every id is therefore remembered for at least one window and at most
//! two.
//!
//! Memory is bounded: a generation holds at most `capacity` ids (`security.replay_cache_capacity`),
//! each stored as a 64-bit keyed hash (about 16 bytes with the table's overhead), so the cache
//! never holds more than `2 × capacity` ids. A generation that fills up early is rotated early,
//! which shortens how long the oldest ids are remembered: size the capacity above the app's
//! requests per second × `2 × max_skew_secs`. Only requests whose signature verified are
//! recorded, so clients without the signing key cannot fill it.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Request ids seen within the signature window (see the module documentation).
#[derive(Debug)]
pub struct ReplayCache {
    window: Duration,
    capacity: usize,
    /// Keyed per process: ids are hashed with a secret key, so nobody can aim for collisions.
    hasher: RandomState,
    generations: Mutex<Generations>,
}

#[derive(Debug)]
struct Generations {
    started: Instant,
    current: HashSet<u64>,
    previous: HashSet<u64>,
}

impl ReplayCache {
    /// A cache for signatures valid `max_skew_secs` either side of their timestamp, holding at
    /// most `capacity` ids per generation.
    pub fn new(max_skew_secs: i64, capacity: usize) -> ReplayCache {
        let secs = u64::try_from(max_skew_secs.max(1)).unwrap_or(1);
        ReplayCache {
            window: Duration::from_secs(2 * secs),
            capacity: capacity.max(1),
            hasher: RandomState::new(),
            generations: Mutex::new(Generations {
                started: Instant::now(),
                current: HashSet::new(),
                previous: HashSet::new(),
            }),
        }
    }

    /// Record `request_id` at `now`. Returns false when it was already recorded within the
    /// window: the request is a replay.
    pub fn first_use(&self, request_id: &str, now: Instant) -> bool {
        let key = self.hasher.hash_one(request_id);
        let mut g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        let age = now.saturating_duration_since(g.started);
        if age >= 2 * self.window {
            // Quiet for two windows: everything remembered has expired.
            g.previous.clear();
            g.current.clear();
            g.started = now;
        } else if age >= self.window || g.current.len() >= self.capacity {
            g.previous = std::mem::take(&mut g.current);
            g.started = now;
        }
        if g.previous.contains(&key) {
            return false;
        }
        g.current.insert(key)
    }

    /// Ids currently remembered (both generations).
    pub fn len(&self) -> usize {
        let g = self.generations.lock().unwrap_or_else(|e| e.into_inner());
        g.current.len() + g.previous.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_repeats_within_the_window_only() {
        let cache = ReplayCache::new(30, 1000);
        let t0 = Instant::now();
        assert!(cache.first_use("a", t0));
        assert!(!cache.first_use("a", t0));
        assert!(cache.first_use("b", t0 + Duration::from_secs(10)));
        // Rotated into the previous generation: still remembered.
        assert!(cache.first_use("c", t0 + Duration::from_secs(61)));
        assert!(!cache.first_use("a", t0 + Duration::from_secs(61)));
        assert!(!cache.first_use("b", t0 + Duration::from_secs(100)));
        // Two windows after the last rotation everything is forgotten (the signatures expired).
        assert!(cache.first_use("a", t0 + Duration::from_secs(61 + 121)));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn memory_is_bounded() {
        let cache = ReplayCache::new(30, 1000);
        let t0 = Instant::now();
        for i in 0..10_000 {
            assert!(cache.first_use(&format!("id-{i}"), t0));
        }
        assert!(cache.len() <= 2000, "{}", cache.len());
        // The most recent ids are still refused.
        assert!(!cache.first_use("id-9999", t0));
    }
}
