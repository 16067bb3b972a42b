//! Shard pools: the app backends of each shard, their health, and the choice of a backend.
//!
//! Pools are rebuilt from the `shards` table whenever the feed reports a shard change; backends
//! that stay keep their health state. A backend is ejected at once when a connection to it fails
//! (passive) and after `edge.unhealthy_threshold` failed `GET /healthz` checks (active); it comes
//! back after `edge.healthy_threshold` successful checks. Shard status does not affect routing:
//! a draining or disabled shard keeps serving the tenants it still has.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tenantgate_catalog::{Shard, ShardStatus};
use tenantgate_config::EdgeConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::metrics::{EdgeMetrics, UpstreamError};

/// One app backend of a shard.
#[derive(Debug)]
pub struct Backend {
    /// `host:port` as configured on the shard.
    pub name: String,
    /// The resolved address; `None` when the name did not resolve (the backend is then down).
    pub addr: Option<SocketAddr>,
    healthy: AtomicBool,
    failures: AtomicU32,
    successes: AtomicU32,
}

impl Backend {
    /// A backend named `name` (`host:port`) at `addr`; healthy when it has an address.
    pub fn new(name: String, addr: Option<SocketAddr>) -> Backend {
        Backend {
            name,
            healthy: AtomicBool::new(addr.is_some()),
            addr,
            failures: AtomicU32::new(0),
            successes: AtomicU32::new(0),
        }
    }

    /// Whether the backend takes traffic.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// A connection to the backend failed: eject it until an active check succeeds.
    pub fn eject(&self) {
        self.successes.store(0, Ordering::Relaxed);
        self.healthy.store(false, Ordering::Relaxed);
    }

    /// Record an active check; returns the new health when it changed.
    fn record_check(&self, ok: bool, healthy_after: u32, unhealthy_after: u32) -> Option<bool> {
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            let n = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.is_healthy() && n >= healthy_after && self.addr.is_some() {
                self.healthy.store(true, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.successes.store(0, Ordering::Relaxed);
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            if self.is_healthy() && n >= unhealthy_after {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }
}

/// The backends of one shard.
#[derive(Debug)]
pub struct ShardPool {
    pub name: Arc<str>,
    pub status: ShardStatus,
    pub backends: Vec<Arc<Backend>>,
    next: AtomicUsize,
}

impl ShardPool {
    /// A pool of `backends` for shard `name`.
    pub fn new(name: &str, status: ShardStatus, backends: Vec<Arc<Backend>>) -> ShardPool {
        ShardPool {
            name: Arc::from(name),
            status,
            backends,
            next: AtomicUsize::new(0),
        }
    }

    /// The next healthy backend in round-robin order that is not in `tried`.
    pub fn pick(&self, tried: &[Arc<Backend>]) -> Option<Arc<Backend>> {
        let n = self.backends.len();
        if n == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.backends[(start + i) % n])
            .find(|b| b.is_healthy() && !tried.iter().any(|t| Arc::ptr_eq(t, b)))
            .cloned()
    }
}

/// All shard pools of the edge.
#[derive(Debug, Default)]
pub struct Pools {
    shards: RwLock<HashMap<Arc<str>, Arc<ShardPool>>>,
}

impl Pools {
    /// The pool of `shard`, if the shard exists.
    pub fn get(&self, shard: &str) -> Option<Arc<ShardPool>> {
        self.shards.read().expect("pools lock").get(shard).cloned()
    }

    /// Replace the pools with `shards`, resolving backend names. Backends that stay keep their
    /// health state. Runs on the control runtime.
    pub(crate) async fn replace(&self, shards: &[Shard], metrics: &EdgeMetrics) {
        let old = self.shards.read().expect("pools lock").clone();
        let mut fresh = HashMap::with_capacity(shards.len());
        for shard in shards {
            let mut backends = Vec::with_capacity(shard.app_upstreams.len());
            for name in &shard.app_upstreams {
                let kept = old
                    .get(shard.name.as_str())
                    .and_then(|p| p.backends.iter().find(|b| &b.name == name).cloned());
                let backend = match kept {
                    Some(b) if b.addr.is_some() => b,
                    _ => {
                        let addr = resolve(name).await;
                        if addr.is_none() {
                            tracing::warn!(shard = %shard.name, backend = %name, "backend address does not resolve");
                        }
                        Arc::new(Backend::new(name.clone(), addr))
                    }
                };
                metrics
                    .upstream_healthy
                    .with_label_values(&[shard.name.as_str(), name.as_str()])
                    .set(i64::from(backend.is_healthy()));
                backends.push(backend);
            }
            let pool = ShardPool::new(&shard.name, shard.status, backends);
            fresh.insert(pool.name.clone(), Arc::new(pool));
            // Every shard's error series exist from the start, at 0.
            for kind in UpstreamError::ALL {
                metrics
                    .upstream_errors
                    .with_label_values(&[shard.name.as_str(), kind.label()]);
            }
        }
        // Drop the series of shards and backends that are gone.
        for shard in old.keys().filter(|s| !fresh.contains_key(*s)) {
            for kind in UpstreamError::ALL {
                let _ = metrics
                    .upstream_errors
                    .remove_label_values(&[&**shard, kind.label()]);
            }
        }
        for (shard, pool) in &old {
            for b in &pool.backends {
                let still = fresh
                    .get(shard)
                    .is_some_and(|p| p.backends.iter().any(|n| n.name == b.name));
                if !still {
                    let _ = metrics
                        .upstream_healthy
                        .remove_label_values(&[&**shard, b.name.as_str()]);
                }
            }
        }
        *self.shards.write().expect("pools lock") = fresh;
    }

    /// True when some shard has a healthy backend, or no shard has any backend yet (an edge
    /// with nothing to route to is not broken, it is empty).
    pub fn any_healthy(&self) -> bool {
        let shards = self.snapshot();
        let mut backends = shards.iter().flat_map(|s| s.backends.iter()).peekable();
        backends.peek().is_none() || backends.any(|b| b.is_healthy())
    }

    fn snapshot(&self) -> Vec<Arc<ShardPool>> {
        self.shards
            .read()
            .expect("pools lock")
            .values()
            .cloned()
            .collect()
    }
}

async fn resolve(name: &str) -> Option<SocketAddr> {
    if let Ok(addr) = name.parse() {
        return Some(addr);
    }
    tokio::net::lookup_host(name).await.ok()?.next()
}

/// Check every backend with `GET /healthz` every `edge.health_interval` until `shutdown`.
pub(crate) async fn health_checks(
    pools: Arc<Pools>,
    config: EdgeConfig,
    metrics: Arc<EdgeMetrics>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(config.health_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut checks = tokio::task::JoinSet::new();
        for pool in pools.snapshot() {
            for backend in &pool.backends {
                let (pool, backend, config, metrics) = (
                    pool.clone(),
                    backend.clone(),
                    config.clone(),
                    metrics.clone(),
                );
                checks.spawn(async move {
                    let ok = match backend.addr {
                        Some(addr) => probe(addr, &backend.name, config.health_timeout).await,
                        None => false,
                    };
                    if !ok {
                        // Failed checks are upstream errors too: a dead backend shows up in
                        // the error panels before (and while) traffic avoids it.
                        metrics.upstream_error(&pool.name, UpstreamError::HealthCheck);
                    }
                    let changed = backend.record_check(
                        ok,
                        config.healthy_threshold,
                        config.unhealthy_threshold,
                    );
                    if let Some(up) = changed {
                        tracing::info!(shard = %pool.name, backend = %backend.name, healthy = up, "backend health changed");
                    }
                    metrics
                        .upstream_healthy
                        .with_label_values(&[&*pool.name, backend.name.as_str()])
                        .set(i64::from(backend.is_healthy()));
                });
            }
        }
        while checks.join_next().await.is_some() {}
    }
}

/// One `GET /healthz`: healthy when the status line says 2xx within `timeout`.
async fn probe(addr: SocketAddr, host: &str, timeout: Duration) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: tenantgate-edge\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<bool, std::io::Error>(head.starts_with(b"HTTP/1.") && head[9] == b'2')
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(name: &str) -> Arc<Backend> {
        Arc::new(Backend::new(
            name.into(),
            Some("127.0.0.1:1".parse().unwrap()),
        ))
    }

    #[test]
    fn picks_round_robin_skipping_unhealthy_and_tried() {
        let (a, b) = (backend("a"), backend("b"));
        let pool = ShardPool::new("s", ShardStatus::Active, vec![a.clone(), b.clone()]);
        let first = pool.pick(&[]).unwrap();
        let second = pool.pick(&[]).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(
            &pool.pick(std::slice::from_ref(&a)).unwrap(),
            &b
        ));
        a.eject();
        assert!((0..4).all(|_| Arc::ptr_eq(&pool.pick(&[]).unwrap(), &b)));
        assert!(pool.pick(std::slice::from_ref(&b)).is_none());
    }

    #[test]
    fn thresholds_govern_active_checks() {
        let b = backend("a");
        assert_eq!(b.record_check(false, 2, 2), None);
        assert_eq!(b.record_check(false, 2, 2), Some(false));
        assert_eq!(b.record_check(true, 2, 2), None);
        assert_eq!(b.record_check(true, 2, 2), Some(true));
        b.eject();
        assert!(!b.is_healthy());
    }
}
