//! App tier latency with a warm and a cold tenant pool, and memory per idle tenant pool, on
//! SQLite and PostgreSQL.
//!
//! Starts the real app (`tenantgate_app::serve`) on 127.0.0.1:0 over a test catalog, exactly as
//! the integration tests do, and measures from a client in the same process:
//!
//! - **warm**: `GET /api/items?limit=1` for a tenant whose pool is open (signature check, token
//!   lookup and one query), sequentially, `WARM_REQUESTS` times;
//! - **cold**: the first such request of each of `cold_tenants` fresh tenants, which opens the
//!   tenant's pool (SQLite: open the file; PostgreSQL: connect and authenticate as the tenant's
//!   own login);
//! - **memory per idle pool**: resident memory of the process after the cold phase (all those
//!   pools open and idle) minus before, divided by the number of pools.
//!
//! Run: `cargo bench -p tenantgate-app --bench pools` (add `--profile dev` to skip the release
//! build; the numbers are then those of an unoptimised build). PostgreSQL comes from
//! `TENANTGATE_TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).

#[path = "../tests/app/support.rs"]
#[allow(unused_macros)]
mod support;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use support::{Options, TestApp};
use tenantgate_config::db_url::Engine;

const WARM_REQUESTS: usize = 1000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn report(backend: Engine, what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{backend:?} {what:>5}: n={:5} p50={:8.3} ms p99={:8.3} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
    );
}

async fn bench(backend: Engine) {
    // PostgreSQL allows few connections (100 by default, shared): keep the cold set small.
    let cold_tenants = match backend {
        Engine::Postgres => 30,
        Engine::Sqlite => 200,
    };
    let app = TestApp::start(
        backend,
        Options {
            budget: 1000,
            pool_idle_secs: 600,
            ..Options::default()
        },
    )
    .await;
    let warm = app.tenant("warm", json!({})).await;
    let warm_token = app.user(&warm, "owner", None).await;
    let tenants: Vec<_> = futures::stream::iter(0..cold_tenants)
        .map(|i| {
            let app = &app;
            async move {
                let t = app.tenant(&format!("cold-{i:03}"), json!({})).await;
                let token = app.user(&t, "owner", None).await;
                (t, token)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;

    let get = |t: &support::TestTenant, token: &str| {
        app.get(t, "/api/items?limit=1")
            .bearer_auth(token.to_string())
            .send()
    };
    for _ in 0..20 {
        assert!(get(&warm, &warm_token).await.unwrap().status().is_success());
    }
    let mut samples = Vec::with_capacity(WARM_REQUESTS);
    for _ in 0..WARM_REQUESTS {
        let started = Instant::now();
        let resp = get(&warm, &warm_token).await.unwrap();
        assert!(resp.status().is_success());
        resp.bytes().await.unwrap();
        samples.push(started.elapsed());
    }
    report(backend, "warm", samples);

    let rss_before = rss_kib();
    let mut samples = Vec::with_capacity(tenants.len());
    for (t, token) in &tenants {
        let started = Instant::now();
        let resp = get(t, token).await.unwrap();
        assert!(resp.status().is_success());
        resp.bytes().await.unwrap();
        samples.push(started.elapsed());
    }
    report(backend, "cold", samples);
    let rss_after = rss_kib();
    println!(
        "{backend:?} memory per idle tenant pool (1 connection): {:.0} KiB ({} pools, RSS {} -> {} KiB)",
        rss_after.saturating_sub(rss_before) as f64 / tenants.len() as f64,
        tenants.len(),
        rss_before,
        rss_after,
    );
    app.stop().await;
}

/// With `sqlite` or `postgres` as argument, bench that backend; without, run this program once
/// per backend, so the memory measured for one is not blurred by what the other freed.
fn main() {
    let backend = match std::env::args().nth(1).as_deref() {
        Some("sqlite") => Engine::Sqlite,
        Some("postgres") => Engine::Postgres,
        _ => {
            for backend in ["sqlite", "postgres"] {
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .arg(backend)
                    .status()
                    .unwrap();
                assert!(status.success(), "{backend} bench failed");
            }
            return;
        }
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench(backend));
}
