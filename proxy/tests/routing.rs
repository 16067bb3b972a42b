//! Routing end to end: tenants are proxied with signed headers, the status gate follows the
//! catalog within bounds, and new hosts become routable.

use std::time::{Duration, Instant};

use tenantgate_contract::TenantStatus;
use tenantgate_testkit::edge::Harness;
use tenantgate_testkit::{both_backends, wait_until, TestCatalog};

both_backends!(proxies_with_signed_headers);
async fn proxies_with_signed_headers(tc: TestCatalog) {
    let mut h = Harness::new(tc, "", "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    let acme = h
        .add_active_tenant("acme", "shard-a", &["acme.test", "app.test/beta"])
        .await;
    let globex = h
        .add_active_tenant("globex", "shard-a", &["globex.test"])
        .await;
    h.start().await;

    // Client-chosen tenant and forwarding headers never reach the app.
    let r = h
        .get(
            "Acme.Test.",
            "/items?x=1",
            &[
                ("x-tenant-id", &globex.to_string()),
                ("x-tenant-slug", "globex"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-real-ip", "6.6.6.6"),
                ("forwarded", "for=6.6.6.6"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.upstream_header("x-tenant-id"),
        Some(acme.to_string().as_str())
    );
    assert_eq!(
        r.body["headers"]["x-tenant-id"].as_array().unwrap().len(),
        1
    );
    assert_eq!(r.upstream_header("x-tenant-slug"), Some("acme"));
    assert_eq!(r.upstream_header("x-tenant-shard"), Some("shard-a"));
    assert_eq!(r.upstream_header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.upstream_header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.upstream_header("x-forwarded-host"), Some("Acme.Test."));
    assert_eq!(r.upstream_header("x-real-ip"), None);
    assert_eq!(r.upstream_header("forwarded"), None);
    assert!(r
        .upstream_header("x-tenant-signature")
        .unwrap()
        .starts_with("v2;kid="));
    let request_id = r.upstream_header("x-request-id").unwrap().to_string();
    assert_eq!(r.header("x-request-id"), Some(request_id.as_str()));
    assert_eq!(r.body["path"], "/items?x=1");

    // Host + prefix: the prefix is stripped and sent as x-forwarded-prefix.
    let r = h.get("app.test:8080", "/beta/items?y=2", &[]).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.upstream_header("x-tenant-id"),
        Some(acme.to_string().as_str())
    );
    assert_eq!(r.body["path"], "/items?y=2");
    assert_eq!(r.upstream_header("x-forwarded-prefix"), Some("/beta"));
    let r = h.get("app.test", "/gamma/items", &[]).await;
    assert_eq!((r.status, r.code()), (404, "unknown_tenant"));

    // Unknown and invalid hosts.
    let r = h.get("nobody.test", "/", &[]).await;
    assert_eq!((r.status, r.code()), (404, "unknown_tenant"));
    assert!(r.body["error"]["message"].is_string());
    let id = r
        .header("x-request-id")
        .expect("refusals carry a request id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    let r = h.get("bad_host.test", "/", &[]).await;
    assert_eq!((r.status, r.code()), (400, "invalid_host"));
    assert!(r.header("x-request-id").is_some());

    let metrics = h.metrics_text().await;
    assert!(
        metrics.contains(
            r#"tenantgate_edge_requests_total{code="200",shard="shard-a",tenant="acme"} 2"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(r#"tenantgate_edge_rejections_total{reason="unknown_tenant"} 2"#));
    assert!(metrics.contains(r#"tenantgate_catalog_cache_lookups_total{result="miss"}"#));
    assert!(metrics.contains("tenantgate_edge_request_duration_seconds_bucket"));
    assert!(metrics.contains(&format!(
        r#"tenantgate_upstream_healthy{{backend="{}",shard="shard-a"}} 1"#,
        backend.addr
    )));
    // Ready (bounded wait: on a loaded machine a health check may time out once and eject
    // the backend until the next check passes).
    wait_until("readyz 200", Duration::from_secs(10), || async {
        let ready = h
            .client
            .get(format!("http://{}/readyz", h.metrics))
            .send()
            .await
            .unwrap();
        (ready.status() == 200).then_some(())
    })
    .await;
    h.stop().await;
}

both_backends!(status_changes_apply_within_bounds);
async fn status_changes_apply_within_bounds(tc: TestCatalog) {
    let mut h = Harness::new(tc, "", "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    let acme = h.add_active_tenant("acme", "shard-a", &["acme.test"]).await;
    let fresh = h
        .add_tenant(
            "fresh",
            "shard-a",
            &["fresh.test"],
            TenantStatus::Provisioning,
            None,
        )
        .await;
    h.start().await;
    assert_eq!(h.get("acme.test", "/", &[]).await.status, 200);
    let r = h.get("fresh.test", "/", &[]).await;
    assert_eq!((r.status, r.code()), (503, "tenant_provisioning"));
    assert!(r.header("retry-after").is_some());

    let status_within = |host: &'static str, want: u16| {
        let h = &h;
        async move {
            let began = Instant::now();
            wait_until(
                &format!("{host} answering {want}"),
                Duration::from_secs(2),
                || async { (h.get(host, "/", &[]).await.status == want).then_some(()) },
            )
            .await;
            began.elapsed()
        }
    };

    h.set_status(acme, TenantStatus::Suspended).await;
    let took = status_within("acme.test", 403).await;
    assert!(took < Duration::from_secs(2), "suspension took {took:?}");
    assert_eq!(
        h.get("acme.test", "/", &[]).await.code(),
        "tenant_suspended"
    );

    h.set_status(acme, TenantStatus::Active).await;
    status_within("acme.test", 200).await;
    h.set_status(fresh, TenantStatus::Active).await;
    status_within("fresh.test", 200).await;

    h.set_status(acme, TenantStatus::Deleted).await;
    status_within("acme.test", 410).await;
    assert_eq!(h.get("acme.test", "/", &[]).await.code(), "tenant_deleted");

    // A new domain of an existing tenant.
    h.add_domain(fresh, "fresh2.test").await;
    status_within("fresh2.test", 200).await;

    // A host asked for while unknown (and so cached as unknown), then created.
    assert_eq!(h.get("later.test", "/", &[]).await.status, 404);
    h.add_active_tenant("later", "shard-a", &["later.test"])
        .await;
    let took = status_within("later.test", 200).await;
    assert!(took < Duration::from_secs(2), "new host took {took:?}");
    h.stop().await;
}

both_backends!(moving_tenants_are_held);
async fn moving_tenants_are_held(tc: TestCatalog) {
    let mut h = Harness::new(tc, "moving_hold_ms = 1500", "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    let mover = h
        .add_tenant(
            "mover",
            "shard-a",
            &["mover.test"],
            TenantStatus::Moving,
            None,
        )
        .await;
    h.start().await;

    // Held until the move ends (the catalog says active again), then forwarded.
    let h = std::sync::Arc::new(h);
    let held = {
        let h = h.clone();
        tokio::spawn(async move {
            let began = Instant::now();
            (h.get("mover.test", "/", &[]).await, began.elapsed())
        })
    };
    tokio::task::yield_now().await;
    h.set_status(mover, TenantStatus::Active).await;
    let (r, took) = held.await.unwrap();
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(took < Duration::from_millis(1500), "held {took:?}");

    // A move that outlasts the hold: 503 tenant_moving after the deadline.
    h.set_status(mover, TenantStatus::Moving).await;
    wait_until("moving again", Duration::from_secs(5), || async {
        (h.get("mover.test", "/", &[]).await.status == 503).then_some(())
    })
    .await;
    let began = Instant::now();
    let r = h.get("mover.test", "/", &[]).await;
    assert_eq!((r.status, r.code()), (503, "tenant_moving"));
    assert!(r.header("retry-after").is_some());
    assert!(
        began.elapsed() >= Duration::from_millis(1400),
        "answered after {:?}",
        began.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_fails_cleanly_on_taken_addresses() {
    for which in ["listen", "metrics_listen"] {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let h = Harness::new(TestCatalog::sqlite(), &format!("{which} = \"{addr}\""), "").await;
        let err =
            tenantgate_edge::start(h.config.clone(), tokio_util::sync::CancellationToken::new())
                .err()
                .unwrap_or_else(|| panic!("{which}: started on a taken address"));
        assert!(
            matches!(&err, tenantgate_edge::EdgeError::Bind { addr: a, .. } if *a == addr),
            "{which}: {err}"
        );
    }
}

both_backends!(caches_unknown_hosts_and_bounds_misses);
async fn caches_unknown_hosts_and_bounds_misses(tc: TestCatalog) {
    let mut h = Harness::new(tc, "", "miss_queries_per_sec = 3").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    for slug in ["real", "later"] {
        h.add_active_tenant(slug, "shard-a", &[&format!("{slug}.test")])
            .await;
    }
    h.start().await;
    let metric = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let lookups = |text: &str, result: &str| {
        metric(
            text,
            &format!(r#"tenantgate_catalog_cache_lookups_total{{result="{result}"}}"#),
        )
    };
    // The index of known hosts is loaded from the catalog.
    wait_until(
        "the host index is loaded",
        Duration::from_secs(10),
        || async {
            (metric(&h.metrics_text().await, "tenantgate_catalog_known_hosts") == 2).then_some(())
        },
    )
    .await;
    // An unknown host costs at most one catalog query, then is answered from the negative
    // cache.
    for _ in 0..5 {
        assert_eq!(h.get("ghost.test", "/", &[]).await.code(), "unknown_tenant");
    }
    let text = h.metrics_text().await;
    assert_eq!((lookups(&text, "miss"), lookups(&text, "negative")), (1, 4));
    // Many distinct unknown hosts at once: beyond the miss budget they are answered from the
    // index, 404 without a query, never 503. (3 per second with a burst of 1.)
    let began = Instant::now();
    let mut codes = Vec::new();
    for i in 0..10 {
        codes.push(h.get(&format!("ghost{i}.test"), "/", &[]).await.status);
    }
    let refill = (began.elapsed().as_secs_f64() * 3.0).ceil() as i64;
    let queried = lookups(&h.metrics_text().await, "miss") - 1;
    assert!(
        queried <= 1 + refill,
        "{queried} queries within {:?}",
        began.elapsed()
    );
    assert!(codes.iter().all(|&c| c == 404), "{codes:?}");
    // With the shared budget spent by the flood, a known tenant that is not cached yet is
    // still served: indexed hosts have their own budget.
    assert_eq!(h.get("ghost-last.test", "/", &[]).await.status, 404);
    assert_eq!(h.get("real.test", "/", &[]).await.status, 200);
    assert_eq!(h.get("later.test", "/", &[]).await.status, 200);

    // A tenant created later joins the index through the feed, and is then served during a
    // flood just the same.
    h.add_active_tenant("fresh", "shard-a", &["fresh.test"])
        .await;
    wait_until(
        "the new host is indexed",
        Duration::from_secs(10),
        || async {
            (metric(&h.metrics_text().await, "tenantgate_catalog_known_hosts") == 3).then_some(())
        },
    )
    .await;
    for i in 0..5 {
        assert_eq!(h.get(&format!("again{i}.test"), "/", &[]).await.status, 404);
    }
    assert_eq!(h.get("fresh.test", "/", &[]).await.status, 200);
}

both_backends!(rate_limit_changes_apply_live);
async fn rate_limit_changes_apply_live(tc: TestCatalog) {
    let mut h = Harness::new(tc, "", "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    let id = h
        .add_tenant(
            "tight",
            "shard-a",
            &["tight.test"],
            TenantStatus::Active,
            Some(tenantgate_contract::RateLimit { rps: 1, burst: 1 }),
        )
        .await;
    h.start().await;
    assert_eq!(h.get("tight.test", "/", &[]).await.status, 200);
    assert_eq!(h.get("tight.test", "/", &[]).await.status, 429);
    h.catalog
        .update_tenant(
            id,
            &tenantgate_catalog::store::TenantPatch {
                rate_limit: Some(Some(tenantgate_contract::RateLimit {
                    rps: 1000,
                    burst: 1000,
                })),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    wait_until("new limit applied", Duration::from_secs(2), || async {
        let mut ok = 0;
        for _ in 0..5 {
            ok += usize::from(h.get("tight.test", "/", &[]).await.status == 200);
        }
        (ok == 5).then_some(())
    })
    .await;
}
