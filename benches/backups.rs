//! Backup benchmark (the backups issue's performance goals), two parts:
//!
//! 1. **Memory while streaming a large backup.** One tenant database of about 1 GB (rows of
//!    random text, so `pg_dump`'s compression cannot shrink it to nothing), backed up once
//!    through the API by the real worker in this process. The process's resident memory is
//!    sampled from `/proc/self/status` every 20 ms during the backup (`VmRSS`), and its peak is
//!    also read from `VmHWM` after resetting it (`/proc/self/clear_refs`). `pg_dump` is a
//!    separate process and is not counted: the goal is about the worker. Runs first, so nothing
//!    the throughput part allocated is counted.
//! 2. **Throughput.** N tenants (default 1,000) provisioned through the API, each with its own
//!    login and 200 items; then, for each worker concurrency (`admin.job_concurrency` = 1, 2, 4,
//!    8, 16; the admin server is restarted with each), one manual backup per tenant is queued
//!    through the API and timed from the first request until the catalog records all N
//!    completed. Each completed backup also queues its retention pass (a `prune_backups` job),
//!    which runs in the same worker and is part of the time; the queue is drained before the
//!    next concurrency.
//!
//! The tenant databases live on a private PostgreSQL 15 server (the test kit's; removed at the
//! end), the catalog on the tests' server, backups in a temporary `file://` store encrypted to a
//! fresh age identity.
//!
//! Run: `cargo bench -p tenantgate-admin --bench backups`. Short form:
//! `TENANTGATE_BENCH_TENANTS=50 TENANTGATE_BENCH_BIG_MB=100 cargo bench -p tenantgate-admin
//! --bench backups` (defaults 1000 tenants and 1024 MB). Needs the tests' PostgreSQL set-up
//! (`scripts/ensure-deps.sh --test`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::json;
use sqlx::{Connection, Executor};
use tenantgate_testkit::admin::Harness;
use tenantgate_testkit::pg_server::PgServer;
use tenantgate_testkit::Engine;

const CONCURRENCIES: [usize; 5] = [1, 2, 4, 8, 16];
/// Items written into each of the N small tenants.
const ITEMS: usize = 200;
/// Requests the bench itself keeps in flight against the admin API.
const CLIENTS: usize = 16;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Restart the admin server (API and worker) with `concurrency` jobs at once.
async fn restart(mut h: Harness, concurrency: usize) -> Harness {
    h.shutdown.cancel();
    if let Some(server) = h.server.take() {
        server.await.unwrap().unwrap();
    }
    let mut config = (*h.config).clone();
    config.admin.job_concurrency = concurrency;
    h.config = Arc::new(config);
    h.shutdown = tokio_util::sync::CancellationToken::new();
    h.start().await
}

/// Poll `sql` (one count) on the catalog until it is `want`, or fail after `limit`.
async fn wait_count(catalog: &sqlx::PgPool, sql: &str, want: i64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(catalog).await.unwrap();
        if n == want {
            return;
        }
        assert!(Instant::now() < deadline, "`{sql}` is {n}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Queue a manual backup of tenant `id`; its backup id.
async fn backup(h: &Harness, id: &str) -> String {
    let r = h
        .post(&format!("/v1/tenants/{id}/backups"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    r.body["backup"]["id"].as_str().unwrap().to_string()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tenants = env("TENANTGATE_BENCH_TENANTS", 1000);
    let big_mb = env("TENANTGATE_BENCH_BIG_MB", 1024);
    let server = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let store = tempfile::tempdir().unwrap();
    let identity = store.path().join("identity.txt");
    let recipient = tenantgate_admin::backups::ensure_identity(&identity).unwrap();
    let objects = store.path().join("objects");
    let mut h = Harness::new(Engine::Postgres, |raw| {
        raw.admin.job_lease_secs = 60;
        raw.admin.job_concurrency = 8;
        raw.admin.rate_limit_rps = 0;
        raw.backups.store = format!("file://{}", objects.display());
        raw.backups.recipient = Some(recipient);
        raw.backups.identity_file = Some(identity);
    })
    .await
    .start()
    .await;
    h.shard_at("pg", &server.url()).await;
    let catalog = sqlx::PgPool::connect(&h.tc.url()).await.unwrap();
    let superuser = |db: &str| {
        let mut url = url::Url::parse(&server.url()).unwrap();
        url.set_path(db);
        url.to_string()
    };

    // Part 1: one big tenant, one backup, resident memory sampled throughout.
    let (big, _) = h.tenant("big", Some("pg")).await;
    h.wait_status(&big, "active").await;
    let big_db = h.catalog.tenant(&big).await.unwrap().unwrap().db_name;
    let mut conn = sqlx::PgConnection::connect(&superuser(&big_db))
        .await
        .unwrap();
    // About 1 KiB per row: 30 MD5s of random numbers (hex, so compressible about 2:1 at most).
    let rows = big_mb * 1024;
    let filled = Instant::now();
    for start in (0..rows).step_by(100_000) {
        let end = (start + 100_000).min(rows);
        conn.execute(
            format!(
                "INSERT INTO items (id, title, body, created_at, updated_at)
                 SELECT 'big-' || g, 'item ' || g,
                        (SELECT string_agg(md5(random()::text || k || g), '') FROM generate_series(1, 30) k),
                        1, 1
                 FROM generate_series({start}, {end} - 1) g"
            )
            .as_str(),
        )
        .await
        .unwrap();
    }
    let db_bytes: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    println!(
        "big tenant: {rows} items, database {:.0} MiB (filled in {:.0} s)",
        db_bytes as f64 / 1048576.0,
        filled.elapsed().as_secs_f64()
    );
    let before = status_kib("VmRSS");
    // Writing 5 resets VmHWM to the current RSS (Linux >= 4.0).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let sampling = sampling.clone();
        async move {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(status_kib("VmRSS"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        }
    });
    let started = Instant::now();
    let id = backup(&h, &big).await;
    wait_count(
        &catalog,
        &format!("SELECT COUNT(*) FROM backups WHERE id = '{id}' AND status = 'completed'"),
        1,
        Duration::from_secs(1800),
    )
    .await;
    let seconds = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let sampled = sampler.await.unwrap();
    let hwm = status_kib("VmHWM");
    let size = h.get(&format!("/v1/backups/{id}")).await.body["size_bytes"]
        .as_i64()
        .unwrap();
    println!(
        "backup of the big tenant: {seconds:.1} s, object {:.0} MiB ({:.1} MiB/s of database)",
        size as f64 / 1048576.0,
        db_bytes as f64 / 1048576.0 / seconds
    );
    println!(
        "worker process RSS: {:.1} MiB before, peak {:.1} MiB sampled (VmRSS every 20 ms), \
         {:.1} MiB VmHWM; goal < 100 MB: {}",
        mib(before),
        mib(sampled),
        mib(hwm),
        if hwm.max(sampled) * 1024 < 100_000_000 {
            "met"
        } else {
            "missed"
        }
    );

    // Part 2: N small tenants, each backed up once per concurrency.
    let started = Instant::now();
    let ids: Vec<String> = stream::iter(0..tenants)
        .map(|i| {
            let h = &h;
            async move { h.tenant(&format!("t{i:05}"), Some("pg")).await.0 }
        })
        .buffer_unordered(CLIENTS)
        .collect()
        .await;
    wait_count(
        &catalog,
        "SELECT COUNT(*) FROM tenants WHERE status = 'active' AND slug LIKE 't%'",
        tenants as i64,
        Duration::from_secs(3600),
    )
    .await;
    let dbs: Vec<String> = sqlx::query_scalar("SELECT db_name FROM tenants WHERE slug LIKE 't%'")
        .fetch_all(&catalog)
        .await
        .unwrap();
    stream::iter(dbs)
        .for_each_concurrent(4, |db| {
            let url = superuser(&db);
            async move {
                let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
                conn.execute(
                    format!(
                        "INSERT INTO items (id, title, body, created_at, updated_at)
                         SELECT 'i-' || g, 'item ' || g, md5(g::text), 1, 1
                         FROM generate_series(1, {ITEMS}) g"
                    )
                    .as_str(),
                )
                .await
                .unwrap();
                conn.close().await.unwrap();
            }
        })
        .await;
    println!(
        "{tenants} tenants provisioned (own login each) with {ITEMS} items in {:.0} s",
        started.elapsed().as_secs_f64()
    );

    println!("concurrency  wall time  tenants/minute  average object");
    let mut best = (0, 0.0);
    for (run, concurrency) in CONCURRENCIES.into_iter().enumerate() {
        h = restart(h, concurrency).await;
        let started = Instant::now();
        stream::iter(&ids)
            .for_each_concurrent(CLIENTS, |id| {
                let h = &h;
                async move {
                    backup(h, id).await;
                }
            })
            .await;
        wait_count(
            &catalog,
            "SELECT COUNT(*) FROM backups b JOIN tenants t ON t.id = b.tenant_id
             WHERE t.slug LIKE 't%' AND b.status = 'completed'",
            ((run + 1) * tenants) as i64,
            Duration::from_secs(3600),
        )
        .await;
        let seconds = started.elapsed().as_secs_f64();
        let failed: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM backups WHERE status = 'failed'")
                .fetch_one(&catalog)
                .await
                .unwrap();
        assert_eq!(failed, 0, "backups failed");
        let average: f64 = sqlx::query_scalar(
            "SELECT AVG(size_bytes)::float8 FROM backups b JOIN tenants t ON t.id = b.tenant_id
             WHERE t.slug LIKE 't%'",
        )
        .fetch_one(&catalog)
        .await
        .unwrap();
        let per_minute = tenants as f64 * 60.0 / seconds;
        if per_minute > best.1 {
            best = (concurrency, per_minute);
        }
        println!(
            "{concurrency:>11}  {seconds:>7.1} s  {per_minute:>14.0}  {:>9.1} KiB",
            average / 1024.0
        );
        // The retention passes the backups queued finish before the next run starts.
        wait_count(
            &catalog,
            "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')",
            0,
            Duration::from_secs(600),
        )
        .await;
    }
    println!(
        "best: {:.0} tenants/minute at concurrency {}; goal >= 300/minute: {}",
        best.1,
        best.0,
        if best.1 >= 300.0 { "met" } else { "missed" }
    );
    catalog.close().await;
    drop(h);
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
}
