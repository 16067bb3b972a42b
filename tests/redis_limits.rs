//! Fleet-wide per-tenant rate limits through Redis (`edge.limits_backend = "redis"`), with the
//! real binary, a PostgreSQL catalog and a private `redis-server` per test:
//!
//! - three edges loaded unevenly admit one tenant's 300 req/s in total (±10 %), where each
//!   edge on its own (or the fallback share) would admit a different amount;
//! - an edge that loses Redis (server killed: connections reset; server paused with SIGSTOP:
//!   nothing answers, no reset) falls back to `limit / fleet_size` within a bounded time,
//!   counts it, fails no request, and returns to Redis on its own when Redis is back.
//!
//! `TENANTGATE_REDIS_LIMITS_SECS` sets the accuracy test's load duration (default 3 s, the CI
//! form; e.g. 30 for the long form).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::fleet::{converged, metric, Fleet};
use support::{ok_upstream, ComponentProcess};
use tenantgate_testkit::load;
use tenantgate_testkit::redis::RedisServer;

const HOST: &str = "acme.test";
const FALLBACK: &str = "tenantgate_edge_limits_fallback";
const FALLBACK_TOTAL: &str = "tenantgate_edge_limits_fallback_total";

/// A fleet on Redis-backed limits with `edges` edges, serving tenant `acme` at `rps`/`burst`.
async fn fleet_with_tenant(
    redis: &RedisServer,
    edges: usize,
    rps: u32,
    burst: u32,
) -> (Fleet, ComponentProcess, Vec<ComponentProcess>) {
    let url = redis.url();
    let fleet = Fleet::new(|raw| {
        raw.edge.limits_backend = "redis".into();
        raw.edge.redis_url = url;
        raw.edge.fleet_size = 3;
        // The load comes from one address: the per-client share would hide the tenant's limit.
        raw.edge.per_client_share = 1.0;
    })
    .await;
    let (admin_process, admin) = fleet.admin().await;
    let processes: Vec<ComponentProcess> = (0..edges)
        .map(|_| fleet.start("edge", "edge running"))
        .collect();
    let upstream = ok_upstream();
    let post = reqwest::Method::POST;
    fleet
        .call(
            post.clone(),
            format!("{admin}/v1/shards"),
            Some(json!({"name": "shard-a", "app_upstreams": [upstream.to_string()], "database_url": fleet.shard_url()})),
        )
        .await;
    fleet
        .call(
            post,
            format!("{admin}/v1/tenants"),
            Some(json!({"slug": "acme", "name": "Acme", "domains": [HOST], "shard": "shard-a",
                        "rate_limit": {"rps": rps, "burst": burst}})),
        )
        .await;
    let addrs: Vec<SocketAddr> = processes.iter().map(|e| e.addr("listen")).collect();
    converged(&fleet.client, &addrs, HOST, 200, Instant::now()).await;
    (fleet, admin_process, processes)
}

async fn fallback_of(fleet: &Fleet, edge: &ComponentProcess) -> (f64, f64) {
    let metrics = edge.addr("metrics");
    (
        metric(&fleet.client, metrics, FALLBACK).await.unwrap_or(-1.0),
        metric(&fleet.client, metrics, FALLBACK_TOTAL)
            .await
            .unwrap_or(-1.0),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_edges_admit_one_tenant_limit_in_total() {
    const RPS: u32 = 300;
    const BURST: u32 = 30;
    let secs: u64 = std::env::var("TENANTGATE_REDIS_LIMITS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let redis = RedisServer::start();
    let (fleet, _admin, edges) = fleet_with_tenant(&redis, 3, RPS, BURST).await;
    for edge in &edges {
        assert_eq!(fallback_of(&fleet, edge).await, (0.0, 0.0), "settling with Redis");
    }
    // Let the requests of the convergence check drop out of the bucket: full burst again.
    tokio::time::sleep(Duration::from_millis(u64::from(BURST) * 1000 / u64::from(RPS) + 300)).await;

    // 600 req/s offered, unevenly: 450, 75 and 75. Each edge alone would admit up to 300 (900 in
    // all); limit / fleet_size per edge (the fallback) would admit 100 + 75 + 75 = 250.
    let duration = Duration::from_secs(secs);
    let offered = [450u32, 75, 75];
    let runs = edges.iter().zip(offered).map(|(edge, rps)| {
        let url = format!("http://{}/", edge.addr("listen"));
        let client = fleet.client.clone();
        load::run(rps, duration, move |_| {
            client.get(&url).header("host", HOST)
        })
    });
    let results = futures::future::join_all(runs).await;
    let mut admitted = 0usize;
    for (samples, rps) in results.iter().zip(offered) {
        let ok = samples.iter().filter(|s| s.outcome == Ok(200)).count();
        let limited = samples.iter().filter(|s| s.outcome == Ok(429)).count();
        println!(
            "edge offered {rps} req/s: {} requests, {ok} admitted, {limited} limited",
            samples.len()
        );
        assert_eq!(ok + limited, samples.len(), "only 200 or 429");
        admitted += ok;
    }
    // The burst the bucket started with is admitted on top of the rate.
    let rate = (admitted as f64 - f64::from(BURST)) / duration.as_secs_f64();
    println!(
        "3 edges, tenant limit {RPS} req/s: admitted {admitted} in {secs} s = {rate:.1} req/s \
         ({:+.1} %)",
        (rate / f64::from(RPS) - 1.0) * 100.0
    );
    assert!(
        (rate - f64::from(RPS)).abs() <= f64::from(RPS) * 0.10,
        "{rate:.1} req/s is not within 10 % of {RPS}"
    );
    for edge in &edges {
        assert_eq!(fallback_of(&fleet, edge).await, (0.0, 0.0), "never fell back");
    }
}

/// Requests sent one after another until stopped; every status seen.
fn steady_requests(
    client: reqwest::Client,
    edge: SocketAddr,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<u16>> {
    tokio::spawn(async move {
        let mut statuses = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let status = client
                .get(format!("http://{edge}/"))
                .header("host", HOST)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            statuses.push(status);
            // About 50 req/s: well within the fallback share (300 / 3).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        statuses
    })
}

/// Wait until the edge's fallback gauge reads `want`; how long that took.
async fn gauge_becomes(fleet: &Fleet, edge: &ComponentProcess, want: f64, within: Duration) -> Duration {
    let since = Instant::now();
    support::wait_until(&format!("{FALLBACK} = {want}"), within, || async {
        (fallback_of(fleet, edge).await.0 == want).then_some(())
    })
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_cut_off_from_redis_falls_back_and_recovers() {
    let mut redis = RedisServer::start();
    let (fleet, _admin, edges) = fleet_with_tenant(&redis, 1, 300, 300).await;
    let edge = &edges[0];
    assert_eq!(fallback_of(&fleet, edge).await, (0.0, 0.0));
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_requests(fleet.client.clone(), edge.addr("listen"), stop.clone());
    let bound = Duration::from_secs(2);

    // Killed: connections reset, the port refuses.
    redis.kill();
    let fell = gauge_becomes(&fleet, edge, 1.0, bound).await;
    assert_eq!(fallback_of(&fleet, edge).await.1, 1.0, "counted once");
    redis.restart();
    let back = gauge_becomes(&fleet, edge, 0.0, bound * 2).await;
    println!("redis killed: fallback after {fell:?}; restarted: back after {back:?}");

    // Paused (SIGSTOP): the connection stays open and nothing answers, as behind a partition
    // that drops packets.
    redis.pause();
    let fell = gauge_becomes(&fleet, edge, 1.0, bound).await;
    assert_eq!(fallback_of(&fleet, edge).await.1, 2.0, "counted once more");
    redis.resume();
    let back = gauge_becomes(&fleet, edge, 0.0, bound * 2).await;
    println!("redis paused: fallback after {fell:?}; resumed: back after {back:?}");

    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    let failed: Vec<&u16> = statuses.iter().filter(|s| **s != 200).collect();
    println!("{} requests during the outages, {} not 200", statuses.len(), failed.len());
    assert!(statuses.len() > 50, "the load ran");
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    // One transition each way per outage: the counter did not move while it was back.
    assert_eq!(fallback_of(&fleet, edge).await, (0.0, 2.0));
}
