//! Many tenants against a small connection budget: every request succeeds or gets the bounded
//! 503, and the connections really open (seen by the database server or the OS, not just by
//! the app's own bookkeeping) never exceed the budget.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Row};
use tenantgate_config::db_url::Engine;
use tenantgate_testkit::wait_until;

use crate::both_backends;
use crate::support::{metric, open_connections, Options, Rng, TestApp};

const ACQUIRE_TIMEOUT_MS: u64 = 1000;

/// Tenant database connections open now, counted outside the app.
async fn connections_seen_outside(app: &TestApp, db_names: &[String]) -> usize {
    match app.backend {
        Engine::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&app.shard_url()).await.unwrap();
            let row = sqlx::query("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = ANY($1)")
                .bind(db_names)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            let _ = conn.close().await;
            row.get::<i64, _>(0) as usize
        }
        Engine::Sqlite => {
            // Every SQLite connection holds its database file open; the app runs in this
            // process, so its open files are ours to count.
            let dir = tenantgate_config::db_url::sqlite_path(&app.shard_url()).to_string();
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|p| p.starts_with(&dir) && p.extension().is_some_and(|e| e == "db"))
                .count()
        }
    }
}

async fn many_tenants_share_a_bounded_budget(backend: Engine) {
    let (tenant_count, requests, budget) = match backend {
        // Creating and dropping PostgreSQL databases is slow (~0.5 s each to drop); the budget
        // is what matters, and 30 tenants already need several times the pools it allows.
        Engine::Postgres => (30, 300, 10u32),
        // The scale: 1,000 tenants against a budget of 50.
        Engine::Sqlite => (1000, 2000, 50u32),
    };
    let app = TestApp::start(
        backend,
        Options {
            budget,
            acquire_timeout_ms: ACQUIRE_TIMEOUT_MS,
            pool_idle_secs: 1,
            ..Options::default()
        },
    )
    .await;
    let tenants: Vec<_> = futures::stream::iter(0..tenant_count)
        .map(|i| {
            let app = &app;
            async move {
                let t = app.tenant(&format!("b-{i:04}"), json!({})).await;
                let token = app.user(&t, "owner", None).await;
                (t, token)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let db_names: Vec<String> = tenants
        .iter()
        .map(|(t, _)| tenantgate_catalog::tenant_db::db_name(t.id))
        .collect();

    // Watch the budget from outside and through the metrics while the load runs.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        let app = &app;
        let db_names = &db_names;
        async move {
            let (mut max_outside, mut max_metrics, mut samples) = (0usize, 0f64, 0);
            while !done.load(Ordering::Acquire) {
                max_outside = max_outside.max(connections_seen_outside(app, db_names).await);
                let m = app.metrics().await;
                max_metrics = max_metrics.max(open_connections(&m));
                assert!(
                    metric(&m, "tenantgate_app_db_connections_reserved") <= budget as f64,
                    "{m}"
                );
                samples += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (max_outside, max_metrics, samples)
        }
    };
    let load = async {
        let mut rng = Rng::new(0xb0d9e7);
        let plan: Vec<(usize, bool)> = (0..requests)
            .map(|_| (rng.below(tenants.len()), rng.below(3) == 0))
            .collect();
        let results: Vec<(StatusCode, Duration)> = futures::stream::iter(plan)
            .map(|(i, write)| {
                let (t, token) = &tenants[i];
                let app = &app;
                async move {
                    let rb = if write {
                        app.request(t, Method::POST, "/api/items")
                            .json(&json!({"title": "x"}))
                    } else {
                        app.get(t, "/api/items")
                    };
                    let started = Instant::now();
                    let resp = rb.bearer_auth(token).send().await.unwrap();
                    let status = resp.status();
                    let body: Value = resp.json().await.unwrap();
                    if status == StatusCode::SERVICE_UNAVAILABLE {
                        assert_eq!(body["error"]["code"], "tenant_db_unavailable");
                    }
                    (status, started.elapsed())
                }
            })
            .buffer_unordered(24)
            .collect()
            .await;
        done.store(true, Ordering::Release);
        results
    };
    let (results, (max_outside, max_metrics, samples)) = tokio::join!(load, watcher);

    let ok = results.iter().filter(|(s, _)| s.is_success()).count();
    eprintln!(
        "{backend:?}: {ok}/{} ok, at most {max_outside} connections seen outside, {max_metrics} in metrics, {samples} samples",
        results.len()
    );
    for (status, took) in &results {
        assert!(
            status.is_success() || *status == StatusCode::SERVICE_UNAVAILABLE,
            "unexpected {status}"
        );
        assert!(
            *took < Duration::from_millis(ACQUIRE_TIMEOUT_MS + 1500),
            "request took {took:?}"
        );
    }
    assert!(
        ok * 2 > results.len(),
        "only {ok} of {} succeeded",
        results.len()
    );
    assert!(samples > 3, "the watcher sampled {samples} times");
    assert!(
        max_outside <= budget as usize,
        "{max_outside} connections open (budget {budget})"
    );
    assert!(
        max_metrics <= budget as f64,
        "metrics showed {max_metrics} connections"
    );
    assert!(max_outside > 0, "the watcher never saw a connection");

    let m = app.metrics().await;
    let opened = metric(&m, "tenantgate_app_tenant_pools_opened_total");
    assert!(
        opened > budget as f64,
        "pools were reused rather than evicted? opened {opened}"
    );
    // Idle pools close on their own after pool_idle.
    wait_until("idle pools to close", Duration::from_secs(10), || async {
        let m = app.metrics().await;
        (metric(&m, "tenantgate_app_tenant_pools") == 0.0 && open_connections(&m) == 0.0)
            .then_some(())
    })
    .await;
    assert_eq!(connections_seen_outside(&app, &db_names).await, 0);
    app.stop().await;
}
both_backends!(many_tenants_share_a_bounded_budget);
