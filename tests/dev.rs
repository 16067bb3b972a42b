//! `tenantgate dev` end to end: the real binary on ephemeral ports (`--port-base 0`) with a
//! temporary data directory.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{binary, get_with_host, DevProcess};

#[tokio::test(flavor = "multi_thread")]
async fn dev_on_sqlite_serves_demo_and_restarts_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    run_demo_twice(dir.path(), &[]).await;
    // The configuration it ran with is on disk for the other commands.
    let written = std::fs::read_to_string(dir.path().join("tenantgate.toml")).unwrap();
    assert!(written.contains("[edge]") && written.contains("sqlite://"));
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_on_postgres_serves_demo_and_restarts_without_duplicates() {
    let db = tenantgate_testkit::PgTestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    run_demo_twice(dir.path(), &["--database-url", &db.url]).await;
}

async fn run_demo_twice(data_dir: &std::path::Path, extra: &[&str]) {
    let mut dev = DevProcess::start(binary(), data_dir, extra);
    let first = check_demo(&dev).await;
    let started = Instant::now();
    let status = dev.stop("TERM", Duration::from_secs(5));
    assert!(status.success(), "dev exited with {status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(dev);

    let mut dev = DevProcess::start(binary(), data_dir, extra);
    let second = check_demo(&dev).await;
    assert_eq!(first, second, "tenants changed across a restart");
    let status = dev.stop("INT", Duration::from_secs(5));
    assert!(status.success(), "dev exited with {status}");
}

/// Check the demo's answers; returns the tenants `(slug, id, shard)` the admin API lists.
async fn check_demo(dev: &DevProcess) -> Vec<(String, String, String)> {
    let acme: Value = get_with_host(&format!("{}/whoami", dev.edge()), "acme.localhost")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(acme["slug"], "acme");
    assert_eq!(acme["shard"], "shard-a");
    assert_eq!(acme["locale"], "en");

    let globex = get_with_host(&format!("{}/whoami", dev.edge()), "GLOBEX.localhost.:8080").await;
    assert_eq!(globex.status(), 200);
    let globex: Value = globex.json().await.unwrap();
    assert_eq!(globex["slug"], "globex");
    assert_eq!(globex["shard"], "shard-b");
    assert_eq!(globex["locale"], "de");
    assert_ne!(globex["tenant_id"], acme["tenant_id"]);

    // Every component reports alive and ready.
    for base in [
        dev.metrics(),
        dev.admin(),
        dev.app("shard-a"),
        dev.app("shard-b"),
    ] {
        for probe in ["healthz", "readyz"] {
            let r = reqwest::get(format!("{base}/{probe}")).await.unwrap();
            assert_eq!(r.status(), 200, "{base}/{probe}");
        }
    }

    let unknown = get_with_host(&format!("{}/whoami", dev.edge()), "nobody.localhost").await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_tenant");

    let list: Value = reqwest::Client::new()
        .get(format!("{}/v1/tenants", dev.admin()))
        .bearer_auth(&dev.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut tenants: Vec<(String, String, String)> = list["tenants"]
        .as_array()
        .expect("tenant list")
        .iter()
        .map(|t| {
            (
                t["slug"].as_str().unwrap().to_string(),
                t["id"].as_str().unwrap().to_string(),
                t["shard"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    tenants.sort();
    let slugs: Vec<&str> = tenants.iter().map(|t| t.0.as_str()).collect();
    assert_eq!(slugs, vec!["acme", "globex"]);

    let shards: Value = reqwest::Client::new()
        .get(format!("{}/v1/shards", dev.admin()))
        .bearer_auth(&dev.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        shards["shards"].as_array().expect("shard list").len(),
        2,
        "{shards}"
    );
    tenants
}
