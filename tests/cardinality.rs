//! The bounded `tenant` label: with the limit at 100, traffic from 1,000 tenants produces at most
//! 101 distinct `tenant` values per metric (100 tenants and `_other`), on the real edge binary.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::time::Duration;

use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::NewTenant;
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::TestCatalog;
use uuid::Uuid;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";

/// A running `tenantgate edge` over a SQLite catalog with `n` active tenants `tNNNN` on hosts
/// `tNNNN.test`, backed by an upstream that answers 200.
struct Edge {
    /// Killed on drop, before the catalog goes.
    _process: support::ComponentProcess,
    edge_port: u16,
    metrics_port: u16,
    _catalog: TestCatalog,
    _dir: tempfile::TempDir,
}

async fn edge_with_tenants(n: usize, edge_settings: &str) -> Edge {
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
    for i in 0..n {
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
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("edge.toml");
    std::fs::write(
        &config,
        format!(
            "[catalog]\nurl = \"{}\"\nmiss_queries_per_sec = 100000\n[edge]\nlisten = \"127.0.0.1:0\"\n\
             metrics_listen = \"127.0.0.1:0\"\n\
             default_rps = 100000\ndefault_burst = 100000\n{edge_settings}\n\
             [security]\nsigning_keys = {{ k = \"{KEY}\" }}\ncredential_key = \"{KEY}\"\n",
            tc.url()
        ),
    )
    .unwrap();
    let args = [
        OsStr::new("edge"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    let process = support::ComponentProcess::start(support::binary(), &args, "edge running");
    let (edge_port, metrics_port) = (
        process.addr("listen").port(),
        process.addr("metrics").port(),
    );
    let edge = Edge {
        _process: process,
        edge_port,
        metrics_port,
        _catalog: tc,
        _dir: dir,
    };
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
    edge
}

/// Distinct `tenant` label values per metric in one scrape.
async fn tenant_values(metrics_port: u16) -> BTreeMap<String, BTreeSet<String>> {
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    per_metric
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_label_stays_bounded_at_a_thousand_tenants() {
    let edge = edge_with_tenants(1000, "tenant_label_limit = 100").await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}/", edge.edge_port);
    for i in 0..1000 {
        let r = client
            .get(&base)
            .header("host", format!("t{i:04}.test"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "tenant t{i:04}");
    }
    let per_metric = tenant_values(edge.metrics_port).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn series_of_quiet_tenants_are_dropped_and_their_places_reused() {
    let edge = edge_with_tenants(3, "tenant_label_limit = 2\ntenant_label_idle_secs = 1").await;
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{}/", edge.edge_port);
    for host in ["t0000.test", "t0001.test", "t0002.test"] {
        assert_eq!(
            client
                .get(&base)
                .header("host", host)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let requests = |m: &BTreeMap<String, BTreeSet<String>>| {
        m.get("tenantgate_edge_requests_total")
            .cloned()
            .unwrap_or_default()
    };
    // The edge counts a request after its response is sent: wait for all three.
    let first = support::wait_until("three requests counted", Duration::from_secs(5), || async {
        let values = requests(&tenant_values(edge.metrics_port).await);
        (values.len() == 3).then_some(values)
    })
    .await;
    assert!(
        first.contains("_other") && !first.contains("t0002"),
        "{first:?}"
    );
    // Without traffic the tenants' series go after about a second...
    support::wait_until(
        "quiet tenants' series to be dropped",
        Duration::from_secs(15),
        || async {
            let values = requests(&tenant_values(edge.metrics_port).await);
            (!values.contains("t0000") && !values.contains("t0001")).then_some(())
        },
    )
    .await;
    // ...and the freed places go to the next tenants that send traffic.
    assert_eq!(
        client
            .get(&base)
            .header("host", "t0002.test")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    support::wait_until(
        "t0002 to get its own label once places are free",
        Duration::from_secs(5),
        || async {
            let after = requests(&tenant_values(edge.metrics_port).await);
            after.contains("t0002").then_some(())
        },
    )
    .await;
    // A dropped tenant that comes back is counted again (its cached route, which kept handles
    // to the removed series, went with them).
    assert_eq!(
        client
            .get(&base)
            .header("host", "t0000.test")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    support::wait_until(
        "t0000 to be counted again",
        Duration::from_secs(5),
        || async {
            let back = requests(&tenant_values(edge.metrics_port).await);
            back.contains("t0000").then_some(())
        },
    )
    .await;
}
