//! Noisy neighbour, on both catalog backends, in three phases: 20 quiet tenants at half their
//! rate limit alone, and beside tenant A (the two in alternating slices, so that both see the
//! same background load of a shared machine) at 10 × its limit (the quiet tenants get no 429
//! and their p99 stays within +10 % of the first phase, plus a noise margin); and the same with a
//! flood of random Host values on top (no 429 nor any error for the quiet tenants, only 404s for
//! the flood, and the edge's limiter states, route cache and catalog queries stay bounded:
//! `tenantgate_edge_limiter_states`, `tenantgate_catalog_cached_hosts`, and misses counted by
//! `tenantgate_catalog_cache_lookups_total`). Every number is printed.
//!
//! The issue asks for 50,000 random hosts per second. On the 2-core machines the suite runs on,
//! the test's own clients share the cores with the edge they measure, in a debug build: the short
//! form floods from 16 connections as fast as they get answers and prints the rate reached (a few
//! hundred to a few thousand per second), and the quiet tenants' latency in that phase is
//! printed, not asserted (the edge is CPU-bound there by design). The long form holds each phase
//! `TENANTGATE_NOISY_SECS` seconds (default 2) with `TENANTGATE_NOISY_FLOODERS` connections
//! (default 16); for the issue's rate run it in release mode on a machine with cores to spare
//! (`cargo test --release -p tenantgate-edge --test noisy_neighbour -- --nocapture`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenantgate_contract::{RateLimit, TenantStatus};
use tenantgate_testkit::edge::Harness;
use tenantgate_testkit::load::{self, Sample, Summary};
use tenantgate_testkit::{both_backends, wait_until, TestCatalog};

/// Every tenant's limit: 20 requests per second, burst 20.
const LIMIT: RateLimit = RateLimit { rps: 20, burst: 20 };
const QUIET_TENANTS: usize = 20;
/// The catalog lookup budget of the edge under test, per second.
const MISS_BUDGET: u32 = 200;
/// The route cache's capacity: below what the flood's lookups alone would cache (about 400 in
/// 2 s, each a negative entry), so the bound is exercised, above the 21 real tenants.
const CACHE_CAPACITY: u64 = 300;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The value of the series `series` (name and labels as printed) in a metrics page.
fn metric(text: &str, series: &str) -> i64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0) as i64
}

/// A client whose requests come from `ip` (a loopback address of its own), as one user.
fn client_at(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from(ip))
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// Each quiet tenant at half its limit (10 req/s) for `secs`, one client address per tenant.
async fn quiet_load(h: &Harness, secs: Duration) -> Vec<Sample> {
    let url = h.url("/");
    let clients: Vec<reqwest::Client> = (0..QUIET_TENANTS)
        .map(|i| client_at([127, 0, 1, 10 + i as u8]))
        .collect();
    let rps = (LIMIT.rps / 2) * QUIET_TENANTS as u32;
    load::run(rps, secs, |i| {
        let t = i as usize % QUIET_TENANTS;
        clients[t]
            .get(&url)
            .header("host", format!("quiet{t}.test"))
    })
    .await
}

/// The backends run one after the other: each measures latency on a machine it must not share
/// with the other's flood.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Tenant A at 10 × its limit from its own address while `active`, until `stop`; returns
/// (200s, 429s, others).
fn noisy_tenant(
    h: &Harness,
    active: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64, u64)> {
    let (client, url) = (client_at([127, 0, 2, 1]), h.url("/"));
    tokio::spawn(async move {
        let (mut ok, mut limited, mut other) = (0u64, 0u64, 0u64);
        let mut tick = tokio::time::interval(Duration::from_secs(1) / (LIMIT.rps * 10));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            if !active.load(Ordering::Relaxed) {
                continue;
            }
            match client.get(&url).header("host", "noisy.test").send().await {
                Ok(r) if r.status() == 200 => ok += 1,
                Ok(r) if r.status() == 429 => limited += 1,
                _ => other += 1,
            }
        }
        (ok, limited, other)
    })
}

/// Random Host values from `flooders` connections, each as fast as it gets answers, until
/// `stop`. Counts: (sent, 404s, other answers).
struct Flood {
    sent: Arc<AtomicU64>,
    not_found: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    tasks: tokio::task::JoinSet<()>,
}

impl Flood {
    fn start(h: &Harness, flooders: u64, stop: Arc<AtomicBool>) -> Flood {
        let counters = || Arc::new(AtomicU64::new(0));
        let (sent, not_found, other) = (counters(), counters(), counters());
        let mut tasks = tokio::task::JoinSet::new();
        for f in 0..flooders {
            let (client, url) = (client_at([127, 0, 3, 1 + f as u8]), h.url("/"));
            let (stop, sent, not_found, other) =
                (stop.clone(), sent.clone(), not_found.clone(), other.clone());
            tasks.spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let host = format!("r{f}-{i}-{}.flood.test", scramble(f, i));
                    let r = client.get(&url).header("host", host).send().await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(r) if r.status() == 404 => not_found.fetch_add(1, Ordering::Relaxed),
                        _ => other.fetch_add(1, Ordering::Relaxed),
                    };
                }
            });
        }
        Flood {
            sent,
            not_found,
            other,
            tasks,
        }
    }
}

/// Panics unless every quiet tenant's request got 200 (a 429 above all); returns the 429s.
#[track_caller]
fn all_served(samples: &[Sample], phase: &str) {
    let bad: Vec<_> = samples
        .iter()
        .filter(|s| s.outcome != Ok(200))
        .map(|s| (s.outcome.clone(), s.code.clone()))
        .collect();
    let limited = samples.iter().filter(|s| s.outcome == Ok(429)).count();
    assert_eq!(limited, 0, "{phase}: false 429s for quiet tenants: {bad:?}");
    assert!(bad.is_empty(), "{phase}: {bad:?}");
}

both_backends!(noisy_neighbour_and_random_hosts_leave_others_alone);
async fn noisy_neighbour_and_random_hosts_leave_others_alone(tc: TestCatalog) {
    let _serial = SERIAL.lock().await;
    let phase = Duration::from_secs(env_or("TENANTGATE_NOISY_SECS", 2));
    let flooders = env_or("TENANTGATE_NOISY_FLOODERS", 16);
    // Every tenant here is one client address, so the per-client share (tested in limits.rs)
    // is turned off: it would halve each tenant's limit for its only client.
    let mut h = Harness::new(
        tc,
        "per_client_share = 1.0",
        &format!("miss_queries_per_sec = {MISS_BUDGET}\ncache_capacity = {CACHE_CAPACITY}"),
    )
    .await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    let active = TenantStatus::Active;
    h.add_tenant("noisy", "shard-a", &["noisy.test"], active, Some(LIMIT))
        .await;
    for t in 0..QUIET_TENANTS {
        let host = format!("quiet{t}.test");
        h.add_tenant(
            &format!("quiet{t}"),
            "shard-a",
            &[&host],
            active,
            Some(LIMIT),
        )
        .await;
    }
    h.start().await;
    h.wait_ready().await;
    // Warm: every tenant's route cached, so every phase measures the same path.
    wait_until("every tenant served", Duration::from_secs(10), || async {
        for t in 0..QUIET_TENANTS {
            if h.get(&format!("quiet{t}.test"), "/", &[]).await.status != 200 {
                return None;
            }
        }
        Some(())
    })
    .await;
    // Past the warm-up requests' share of the burst.
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. and 2. The quiet tenants alone, and beside tenant A at 10 × its limit, in alternating
    //    slices: the machine is shared (other builds, the test's own clients), and interleaving
    //    exposes both measurements to the same background noise. Beside A: no 429, p99 within
    //    +10 % (plus a margin for a busy 2-core machine, as in outage.rs; a request queued behind
    //    A's would take far longer).
    const SLICES: u32 = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let active = Arc::new(AtomicBool::new(false));
    let noisy = noisy_tenant(&h, active.clone(), stop.clone());
    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    for _ in 0..SLICES {
        alone.extend(quiet_load(&h, phase / SLICES).await);
        active.store(true, Ordering::Relaxed);
        beside.extend(quiet_load(&h, phase / SLICES).await);
        active.store(false, Ordering::Relaxed);
    }
    let before = Summary::of(&alone);
    println!("[noisy neighbour] 20 tenants at half their limit, alone: {before}");
    all_served(&alone, "alone");
    let with_noisy = Summary::of(&beside);
    println!("[noisy neighbour] the same, beside tenant A: {with_noisy}");
    all_served(&beside, "beside A");
    let margin = Duration::from_millis(25).max(before.p99 / 2);
    println!(
        "[noisy neighbour] p99 {:.1} ms against {:.1} ms alone; allowed {:.1} ms (+10 % + {:.1} \
         ms margin)",
        with_noisy.p99.as_secs_f64() * 1e3,
        before.p99.as_secs_f64() * 1e3,
        (before.p99.mul_f64(1.1) + margin).as_secs_f64() * 1e3,
        margin.as_secs_f64() * 1e3
    );
    assert!(
        with_noisy.p99 <= before.p99.mul_f64(1.1) + margin,
        "p99 {:?} beside tenant A against {:?} alone",
        with_noisy.p99,
        before.p99
    );

    // 3. And the random-host flood on top.
    // The window starts before the first count, so the budget bound below covers it.
    active.store(true, Ordering::Relaxed);
    let flood_began = Instant::now();
    let misses_before = metric(
        &h.metrics_text().await,
        r#"tenantgate_catalog_cache_lookups_total{result="miss"}"#,
    );
    let mut flood = Flood::start(&h, flooders, stop.clone());
    let flooded_samples = quiet_load(&h, phase).await;
    let mid_flood = h.metrics_text().await;
    let flood_secs = flood_began.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (noisy_ok, noisy_limited, noisy_other) = noisy.await.unwrap();
    while flood.tasks.join_next().await.is_some() {}
    let with_flood = Summary::of(&flooded_samples);
    let sent = flood.sent.load(Ordering::Relaxed);
    let misses = metric(
        &mid_flood,
        r#"tenantgate_catalog_cache_lookups_total{result="miss"}"#,
    ) - misses_before;
    let tenant_states = metric(
        &mid_flood,
        r#"tenantgate_edge_limiter_states{kind="tenant"}"#,
    );
    let client_states = metric(
        &mid_flood,
        r#"tenantgate_edge_limiter_states{kind="client"}"#,
    );
    let cached = metric(&mid_flood, "tenantgate_catalog_cached_hosts");
    println!("[noisy neighbour] the same, beside tenant A and the flood: {with_flood}");
    println!(
        "[noisy neighbour] tenant A at {} req/s: {noisy_ok} passed, {noisy_limited} × 429, \
         {noisy_other} other",
        LIMIT.rps * 10
    );
    println!(
        "[noisy neighbour] random hosts: {sent} in {flood_secs:.1} s ({:.0}/s from {flooders} \
         connections), {} × 404, {} other; catalog lookups {misses} ({:.0}/s, budget \
         {MISS_BUDGET}/s); limiter states: {tenant_states} tenant, {client_states} client; \
         route cache {cached} entries (capacity {CACHE_CAPACITY})",
        sent as f64 / flood_secs,
        flood.not_found.load(Ordering::Relaxed),
        flood.other.load(Ordering::Relaxed),
        misses as f64 / flood_secs,
    );

    // The noise happened: A was held to its limit, the flood ran.
    assert!(noisy_limited > noisy_ok, "A was not held to its limit");
    assert!(sent > 100, "the flood did not run");
    // No false 429 (nor any error) for real tenants during the flood. Their latency is printed,
    // not asserted: the flooders here are closed-loop clients on the same two cores as the
    // edge, so the edge is CPU-bound by design in this phase.
    all_served(&flooded_samples, "beside the flood");
    // The flood: 404 each, never a 429 or a 503.
    assert_eq!(flood.other.load(Ordering::Relaxed), 0);
    // Bounded state: one tenant limiter per tenant with a cached route, whatever the flood
    // sent (random hosts never reach a limiter), no per-client states with the share off; the
    // route cache within its capacity (moka's count lags a little: 10 % slack).
    assert!(tenant_states <= 1 + QUIET_TENANTS as i64, "{tenant_states}");
    assert!(client_states <= 1 + QUIET_TENANTS as i64, "{client_states}");
    assert!(
        cached as u64 <= CACHE_CAPACITY + CACHE_CAPACITY / 10,
        "{cached}"
    );
    assert!(
        misses as u64 > CACHE_CAPACITY,
        "the flood's lookups ({misses}) did not exceed the cache's capacity"
    );
    // Catalog queries within the miss budget (its burst is a tenth of a second's worth). The
    // flood's duration is timed by the clients, so lookups of requests in flight at its start and
    // end fall outside it: half a second of slack (a budget-free edge would be at ~484/s).
    let allowed = (f64::from(MISS_BUDGET) * (flood_secs + 0.1 + 0.5)).ceil() as i64;
    assert!(
        misses <= allowed,
        "{misses} catalog lookups, at most {allowed}"
    );
}

/// A varying label, so the flood's hosts share no pattern but a suffix.
fn scramble(f: u64, i: u64) -> u64 {
    (i ^ (f << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40
}
