//! The bounded `tenant` label: with the limit at 100, traffic from 1,000 tenants produces at most
//! 101 distinct `tenant` values per metric (100 tenants and `_other`), on the real edge binary.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use tenantgate_catalog::host::DomainSpec;
use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::NewTenant;
use tenantgate_catalog::testing::TestCatalog;
use tenantgate_catalog::TenantStatus;
use uuid::Uuid;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";

#[tokio::test(flavor = "multi_thread")]
async fn tenant_label_stays_bounded_at_a_thousand_tenants() {
    let tc = TestCatalog::sqlite();
    let catalog = tc.connect().await;
    let upstream = support::ok_upstream();
    catalog
        .create_shard(&NewShard {
            name: "s1".into(),
            app_upstreams: vec![upstream.to_string()],
            database_url: tc.shard_database_url("s1"),
            replicas: vec![],
        })
        .await
        .unwrap();
    for i in 0..1000 {
        let id = Uuid::new_v4();
        catalog
            .create_tenant(&NewTenant {
                id,
                slug: format!("t{i:04}"),
                name: format!("T{i}"),
                status: TenantStatus::Active,
                shard: "s1".into(),
                domains: vec![DomainSpec::parse(&format!("t{i:04}.test")).unwrap()],
                rate_limit: None,
                settings: serde_json::json!({}),
                db_name: tenantgate_catalog::tenant_db::db_name(id),
            })
            .await
            .unwrap();
    }

    let (edge_port, metrics_port) = (support::free_port(), support::free_port());
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[catalog]\nurl = \"{}\"\n[edge]\nlisten = \"127.0.0.1:{edge_port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\
             tenant_label_limit = 100\ndefault_rps = 100000\ndefault_burst = 100000\n\
             [security]\nsigning_keys = {{ k = \"{KEY}\" }}\ncredential_key = \"{KEY}\"\n",
            tc.url()
        ),
    )
    .unwrap();
    let mut edge = Command::new(support::binary())
        .args(["edge", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{edge_port}/");
    support::wait_until("edge to serve t0000", Duration::from_secs(30), || {
        let (client, base) = (&client, &base);
        async move {
            let r = client
                .get(base)
                .header("host", "t0000.test")
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    for i in 0..1000 {
        let r = client
            .get(&base)
            .header("host", format!("t{i:04}.test"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "tenant t{i:04}");
    }

    let text = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let _ = edge.kill();
    let _ = edge.wait();

    let mut per_metric: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, labels)) = line.split_once('{') else {
            continue;
        };
        if let Some(rest) = labels.split("tenant=\"").nth(1) {
            let value = rest.split('"').next().unwrap().to_string();
            per_metric
                .entry(name.to_string())
                .or_default()
                .insert(value);
        }
    }
    let requests = per_metric
        .get("tenantgate_edge_requests_total")
        .expect("requests carry a tenant label");
    assert!(
        requests.contains("_other"),
        "tenants past the limit are counted as _other"
    );
    for (metric, values) in &per_metric {
        assert!(
            values.len() <= 101,
            "{metric} has {} tenant values",
            values.len()
        );
    }
}
