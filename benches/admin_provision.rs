//! Provisioning benchmark: tenants created through the admin API on PostgreSQL.
//!
//! Starts the real admin server (API + worker) over a PostgreSQL catalog on the test server
//! (`TENANTGATE_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`), with
//! one shard on the same server, and runs two phases of `TENANTS` tenants each:
//!
//! 1. burst: all POSTs at once; reports throughput (tenants per minute, first POST to last
//!    tenant active);
//! 2. paced: one POST every 200 ms (300 per minute, the goal rate); reports p50/p99 of the time
//!    from each POST's answer to the tenant being active.
//!
//! Activation is observed by polling the catalog every 10 ms, so times are upper bounds with
//! that resolution. Everything it creates (catalog, tenant databases and logins) is dropped at
//! the end.
//!
//! Run: `cargo bench -p tenantgate-admin --bench admin_provision` (add `--profile dev` to skip
//! the release build; the work is on the database server either way).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenantgate_catalog::store::TenantFilter;
use tenantgate_config::{Config, RawConfig};
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::{server_url, tenant_migrations_dir, TestCatalog};
use tokio_util::sync::CancellationToken;

const TENANTS: usize = 100;
const TOKEN: &str = "bench-bootstrap-token-0123456789";
const PACE: Duration = Duration::from_millis(200);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tc = TestCatalog::postgres().await;
    let catalog = tc.connect().await;
    let mut raw = RawConfig::default();
    raw.catalog.url = tc.url();
    raw.admin.bootstrap_token = Some(TOKEN.into());
    raw.tenant_migrations.dir = tenant_migrations_dir();
    let config = Arc::new(Config::try_from(raw).expect("valid config"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(tenantgate_admin::serve(
        config,
        catalog.clone(),
        listener,
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{base}/v1/shards"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "name": "shard-a", "app_upstreams": ["127.0.0.1:9"], "database_url": server_url() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    println!("provisioning {TENANTS} tenants per phase on PostgreSQL through the admin API");
    let (elapsed, _) = phase(&client, &base, &catalog, "burst", None).await;
    println!(
        "burst: {TENANTS} tenants active in {:.2} s = {:.0} tenants/minute",
        elapsed.as_secs_f64(),
        TENANTS as f64 / elapsed.as_secs_f64() * 60.0
    );
    let (elapsed, mut latencies) = phase(&client, &base, &catalog, "paced", Some(PACE)).await;
    latencies.sort();
    println!(
        "paced at {:.0}/minute: all active in {:.2} s; POST→active p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        60.0 / PACE.as_secs_f64(),
        elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
    );

    shutdown.cancel();
    let _ = server.await;
    catalog.close().await;
    drop(tc);
}

/// Create `TENANTS` tenants (all at once, or one per `pace`); wait until all are active.
/// Returns the time from the first POST to the last activation and each tenant's POST→active.
async fn phase(
    client: &reqwest::Client,
    base: &str,
    catalog: &tenantgate_catalog::Catalog,
    name: &str,
    pace: Option<Duration>,
) -> (Duration, Vec<Duration>) {
    let start = Instant::now();
    let posts = {
        let client = client.clone();
        let base = base.to_string();
        let name = name.to_string();
        tokio::spawn(async move {
            let mut posted = HashMap::new();
            let mut pending = Vec::new();
            for i in 0..TENANTS {
                let slug = format!("{name}-{i:03}");
                let request = client
                    .post(format!("{base}/v1/tenants"))
                    .bearer_auth(TOKEN)
                    .json(&serde_json::json!({ "slug": slug, "name": slug, "domains": [format!("{slug}.bench.test")] }));
                match pace {
                    Some(p) => {
                        let r = request.send().await.unwrap();
                        assert_eq!(r.status(), 202);
                        posted.insert(slug, Instant::now());
                        tokio::time::sleep(p).await;
                    }
                    None => pending.push((slug, tokio::spawn(request.send()))),
                }
            }
            for (slug, task) in pending {
                let r = task.await.unwrap().unwrap();
                assert_eq!(r.status(), 202);
                posted.insert(slug, Instant::now());
            }
            posted
        })
    };
    let mut active: HashMap<String, Instant> = HashMap::new();
    let deadline = start + Duration::from_secs(300);
    while active.len() < TENANTS {
        assert!(Instant::now() < deadline, "tenants not active within 300 s");
        let page = catalog
            .list_tenants(&TenantFilter {
                status: Some(TenantStatus::Active),
                cursor: Some(format!("{name}-")),
                limit: 1000,
                ..TenantFilter::default()
            })
            .await
            .unwrap();
        let now = Instant::now();
        for t in page
            .into_iter()
            .filter(|t| t.slug.starts_with(&format!("{name}-")))
        {
            active.entry(t.slug).or_insert(now);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let posted = posts.await.unwrap();
    let last = active.values().max().copied().unwrap();
    let latencies = active
        .iter()
        .map(|(slug, at)| at.saturating_duration_since(posted[slug]))
        .collect();
    (last - start, latencies)
}
