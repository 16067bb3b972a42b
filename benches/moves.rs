//! Cross-server move benchmark (the online-moves issue's performance goal): one tenant with
//! 100,000 items moved back and forth between two private PostgreSQL servers (the test kit's,
//! `wal_level = logical`) by the real admin worker, first idle, then under steady writes.
//! Reports the copy time and the hold's p50 and p99 (the job's `hold_seconds`: status `moving`
//! until the flip committed), and the loaded/idle ratios from the same run.
//!
//! The writer inserts one item per statement through the tenant's own login into whichever
//! database the catalog currently routes to; while the tenant is held, its writes fail (the
//! source is read-only) and it retries every 10 ms, as the edge would hold them.
//!
//! SQLite tenants get the same two runs between two SQLite shards (files in two directories):
//! the copy is taken while the tenant serves, and the hold copies again only when a write
//! landed after it. The SQLite writer checks the catalog before each insert and pauses while
//! the tenant is held (a file has no read-only switch; the edge would hold its requests), so
//! under writes most holds copy the file again and idle ones copy nothing.
//!
//! Run: `cargo bench -p tenantgate-admin --bench moves` (`TENANTGATE_BENCH_ROWS`, default
//! 100000; `TENANTGATE_BENCH_MOVES`, default 10 per mode; `TENANTGATE_BENCH_ENGINES`, default
//! `postgres,sqlite`). Needs the tests' PostgreSQL set-up
//! (`scripts/ensure-deps.sh --test`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection;
use tenantgate_catalog::tenant_db::TenantDbTarget;
use tenantgate_testkit::admin::Harness;
use tenantgate_testkit::pg_server::PgServer;
use tenantgate_testkit::Engine;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Run {
    copy: Vec<f64>,
    hold: Vec<f64>,
}

impl Run {
    fn report(&mut self, name: &str) -> (f64, f64, f64) {
        self.copy.sort_by(f64::total_cmp);
        self.hold.sort_by(f64::total_cmp);
        let (copy, p50, p99) = (
            percentile(&self.copy, 0.5),
            percentile(&self.hold, 0.5),
            percentile(&self.hold, 0.99),
        );
        println!(
            "{name:>6}: {} moves, copy p50 {copy:.2} s, hold p50 {:.0} ms, p99 {:.0} ms (max {:.0} ms)",
            self.hold.len(),
            p50 * 1000.0,
            p99 * 1000.0,
            self.hold.last().unwrap() * 1000.0
        );
        (copy, p50, p99)
    }
}

/// Move tenant `id` to shard `to` and wait for it; the job's (copy, hold) seconds, and whether
/// the hold copied again (SQLite).
/// `moves` moves of tenant `id` back and forth between shards `one` and `two`, starting from
/// `*shard` (left at the last target): the copy and hold times, and how many holds copied the
/// data again.
async fn run_moves(h: &Harness, id: &str, shard: &mut &'static str, moves: usize) -> (Run, usize) {
    let mut run = Run {
        copy: Vec::new(),
        hold: Vec::new(),
    };
    let mut recopied = 0;
    for _ in 0..moves {
        *shard = if *shard == "one" { "two" } else { "one" };
        let (copy, hold, again) = move_once(h, id, shard).await;
        run.copy.push(copy);
        run.hold.push(hold);
        recopied += usize::from(again);
    }
    (run, recopied)
}

async fn move_once(h: &Harness, id: &str, to: &str) -> (f64, f64, bool) {
    let r = h
        .post(&format!("/v1/tenants/{id}/move"), json!({ "shard": to }))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let job = r.body["job_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let j = h.get(&format!("/v1/jobs/{job}")).await;
        match j.body["status"].as_str() {
            Some("succeeded") => {
                let p = &j.body["progress"];
                return (
                    p["copy_seconds"].as_f64().unwrap(),
                    p["hold_seconds"].as_f64().unwrap(),
                    p["hold_recopied"].as_bool().unwrap_or(false),
                );
            }
            Some("failed") => panic!("move failed: {:?}", j.body),
            _ => {}
        }
        assert!(Instant::now() < deadline, "move took over 10 minutes");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rows = env("TENANTGATE_BENCH_ROWS", 100_000);
    let moves = env("TENANTGATE_BENCH_MOVES", 10);
    let engines =
        std::env::var("TENANTGATE_BENCH_ENGINES").unwrap_or_else(|_| "postgres,sqlite".into());
    if engines.contains("postgres") {
        postgres(rows, moves).await;
    }
    if engines.contains("sqlite") {
        sqlite(rows, moves).await;
    }
}

async fn postgres(rows: usize, moves: usize) {
    println!("PostgreSQL, between two servers:");
    let (one, two) = tokio::task::spawn_blocking(|| (PgServer::start(), PgServer::start()))
        .await
        .unwrap();
    let h = Harness::new(Engine::Postgres, |raw| {
        raw.catalog.poll_interval_ms = 100;
        raw.admin.job_lease_secs = 30;
    })
    .await
    .start()
    .await;
    h.shard_at("one", &one.url()).await;
    h.shard_at("two", &two.url()).await;
    let (id, _) = h.tenant("bench", Some("one")).await;
    h.wait_status(&id, "active").await;
    let pool = h.tenant_pool(&id).await;
    sqlx::query(&format!(
        "INSERT INTO items (id, title, body, created_at, updated_at)
         SELECT 'seed-' || g, 'item ' || g, repeat('x', 100), 1, 1 FROM generate_series(1, {rows}) g"
    ))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    println!("tenant with {rows} items; {moves} moves idle, then {moves} under writes");

    let mut shard = "one";
    let (mut idle, _) = run_moves(&h, &id, &mut shard, moves).await;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn({
        let (catalog, key) = (h.catalog.clone(), h.config.security.credential_key.clone());
        let (stop, written, id) = (stop.clone(), written.clone(), id.clone());
        async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let tenant = catalog.tenant(&id).await.unwrap().unwrap();
                let shard = catalog.shard(&tenant.shard).await.unwrap().unwrap();
                let target = TenantDbTarget::resolve(&shard, &tenant, &key).unwrap();
                let Ok(mut conn) = sqlx::PgConnection::connect(&target.primary).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                for _ in 0..200 {
                    n += 1;
                    let r = sqlx::query(
                        "INSERT INTO items (id, title, body, created_at, updated_at)
                         VALUES ($1, 'load', '', 1, 1)",
                    )
                    .bind(format!("load-{n}"))
                    .execute(&mut conn)
                    .await;
                    if r.is_err() {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        break;
                    }
                    written.fetch_add(1, Ordering::Relaxed);
                }
                let _ = conn.close().await;
            }
        }
    });
    let started = Instant::now();
    let (mut loaded, _) = run_moves(&h, &id, &mut shard, moves).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let rate = written.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();

    let (idle_copy, idle_p50, idle_p99) = idle.report("idle");
    let (copy, p50, p99) = loaded.report("loaded");
    println!("writes during the loaded moves: {rate:.0}/s");
    println!(
        "loaded / idle: copy {:.2}x, hold p50 {:.2}x, p99 {:.2}x",
        copy / idle_copy,
        p50 / idle_p50,
        p99 / idle_p99
    );
    println!(
        "goals: hold p50 <= 1 s: {}, p99 <= 2.5 s: {}",
        if p50 <= 1.0 { "met" } else { "missed" },
        if p99 <= 2.5 { "met" } else { "missed" }
    );
    drop(h);
    tokio::task::spawn_blocking(move || drop((one, two)))
        .await
        .unwrap();
}

async fn sqlite(rows: usize, moves: usize) {
    println!("SQLite, between two shard directories:");
    let h = Harness::new(Engine::Sqlite, |raw| {
        raw.catalog.poll_interval_ms = 100;
        raw.admin.job_lease_secs = 30;
    })
    .await
    .start()
    .await;
    h.shard("one").await;
    h.shard("two").await;
    let (id, _) = h.tenant("bench", Some("one")).await;
    h.wait_status(&id, "active").await;
    let pool = h.tenant_pool(&id).await;
    sqlx::query(&format!(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows})
         INSERT INTO items (id, title, body, created_at, updated_at)
         SELECT 'seed-' || n, 'item ' || n, printf('%.100c', 'x'), 1, 1 FROM g"
    ))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    println!("tenant with {rows} items; {moves} moves idle, then {moves} under writes");

    let mut shard = "one";
    let (mut idle, recopied) = run_moves(&h, &id, &mut shard, moves).await;
    println!("idle: the hold copied the file again in {recopied} of {moves} moves");

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = tokio::spawn({
        let (catalog, key) = (h.catalog.clone(), h.config.security.credential_key.clone());
        let (stop, written, id) = (stop.clone(), written.clone(), id.clone());
        async move {
            let mut n = 0u64;
            // One connection to the file the tenant is on, with the app's settings (WAL,
            // synchronous NORMAL), opened again after each flip.
            let mut open: Option<(String, sqlx::AnyPool)> = None;
            while !stop.load(Ordering::Relaxed) {
                let tenant = catalog.tenant(&id).await.unwrap().unwrap();
                if tenant.status != tenantgate_contract::TenantStatus::Active {
                    // Held: the edge would keep the request until the flip.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                if open.as_ref().is_none_or(|(on, _)| *on != tenant.shard) {
                    if let Some((_, pool)) = open.take() {
                        pool.close().await;
                    }
                    let shard = catalog.shard(&tenant.shard).await.unwrap().unwrap();
                    let target = TenantDbTarget::resolve(&shard, &tenant, &key).unwrap();
                    let pool = tenantgate_catalog::db::connect(&target.primary, 1)
                        .await
                        .unwrap();
                    open = Some((tenant.shard.clone(), pool));
                }
                let (_, pool) = open.as_ref().unwrap();
                n += 1;
                let r = sqlx::query(
                    "INSERT INTO items (id, title, body, created_at, updated_at)
                     VALUES (?, 'load', '', 1, 1)",
                )
                .bind(format!("load-{n}"))
                .execute(pool)
                .await;
                if r.is_ok() {
                    written.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some((_, pool)) = open {
                pool.close().await;
            }
        }
    });
    let started = Instant::now();
    let (mut loaded, recopied) = run_moves(&h, &id, &mut shard, moves).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    let rate = written.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("under writes: the hold copied the file again in {recopied} of {moves} moves");

    let (idle_copy, idle_p50, idle_p99) = idle.report("idle");
    let (copy, p50, p99) = loaded.report("loaded");
    println!("writes during the loaded moves: {rate:.0}/s");
    println!(
        "loaded / idle: copy {:.2}x, hold p50 {:.2}x, p99 {:.2}x",
        copy / idle_copy,
        p50 / idle_p50,
        p99 / idle_p99
    );
    drop(h);
}
