//! On-demand issuance requests at the TLS handshake (`acme.on_demand`), on both catalog
//! backends, without a CA: what the edge asks the catalog to queue. A flood of handshakes for
//! names a tenant owns queues at most the limits' worth of `issue_certificate` jobs; names not
//! in the catalog, path-prefix hosts and suspended tenants queue nothing. (The issuance itself,
//! against Pebble, is in `admin/tests/acme.rs`.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tenantgate_catalog::store::certificates::{IssuePayload, ISSUE_JOB_KIND};
use tenantgate_catalog::store::on_demand::{self, Limit, OnDemand};
use tenantgate_config::{AcmeConfig, OnDemandLimits};
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::edge::Harness;
use tenantgate_testkit::{both_backends, wait_until, TestCatalog};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use uuid::Uuid;

const LIMITS: OnDemandLimits = OnDemandLimits {
    per_tenant: 3,
    global: 5,
    window: Duration::from_secs(3600),
};

/// A handshake for `sni` trusting no root; it always fails, with an alert from the edge when
/// it has no certificate for the name. False.
async fn handshake(addr: SocketAddr, sni: &str) -> bool {
    connect(addr, sni, rustls::RootCertStore::empty()).await
}

/// A handshake for `sni` trusting `ca`: true when the edge presented a certificate it issued.
async fn handshake_with(addr: SocketAddr, sni: &str, ca: &tenantgate_testkit::tls::TestCa) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.ca_der()))
        .unwrap();
    connect(addr, sni, roots).await
}

async fn connect(addr: SocketAddr, sni: &str, roots: rustls::RootCertStore) -> bool {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(5),
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("the handshake ends at once: it never waits for issuance");
    done.is_ok()
}

fn on_demand_metric(text: &str, result: &str) -> u64 {
    let prefix = format!("tenantgate_edge_on_demand_certificates_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// The on-demand issuance jobs queued, by tenant, with their hosts.
fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

async fn queued(h: &Harness, tenant: Uuid) -> Vec<String> {
    h.catalog
        .jobs_of_tenant(tenant)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.kind == ISSUE_JOB_KIND)
        .map(|j| {
            let p: IssuePayload = serde_json::from_value(j.payload).unwrap();
            assert!(p.on_demand);
            p.host
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

both_backends!(a_flood_of_sni_names_queues_at_most_the_limits);
async fn a_flood_of_sni_names_queues_at_most_the_limits(tc: TestCatalog) {
    let mut h = Harness::new(tc, "tls_listen = \"127.0.0.1:0\"", "").await;
    let mut config = (*h.config).clone();
    config.acme = Some(AcmeConfig {
        // The edge never talks to the CA: only the admin's worker does.
        directory_url: "https://ca.invalid/dir".parse().unwrap(),
        contact: vec![],
        ca_bundle: None,
        on_demand: Some(LIMITS),
        confirm_addrs: vec![],
        confirm_timeout: Duration::from_secs(10),
    });
    h.config = Arc::new(config);
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    let hosts = |t: &str| {
        (0..8)
            .map(|i| format!("{t}{i}.flood.test"))
            .collect::<Vec<_>>()
    };
    let (a_hosts, b_hosts) = (hosts("a"), hosts("b"));
    let a = h.add_active_tenant("a", "shard-a", &refs(&a_hosts)).await;
    let b = h.add_active_tenant("b", "shard-a", &refs(&b_hosts)).await;
    let suspended = h
        .add_tenant(
            "s",
            "shard-a",
            &["s.flood.test"],
            TenantStatus::Suspended,
            None,
        )
        .await;
    let prefixed = h
        .add_active_tenant("p", "shard-a", &["shared.flood.test/p"])
        .await;
    h.start().await;
    h.wait_ready().await;
    let tls = h.tls.expect("a TLS listener");

    // Strangers first: 300 names the catalog does not route, then the ineligible ones.
    for i in 0..300 {
        assert!(!handshake(tls, &format!("x{i}.hostile.test")).await);
    }
    for name in ["s.flood.test", "shared.flood.test"] {
        assert!(!handshake(tls, name).await);
    }
    // Then every host of both tenants, three times each.
    for _ in 0..3 {
        for host in a_hosts.iter().chain(&b_hosts) {
            assert!(!handshake(tls, host).await);
        }
    }

    // Each of the 16 hosts is decided once (repeats within the recheck period are not asked
    // again): 3 for `a` (its limit), 2 for `b` (the global limit of 5), 11 refused.
    let text = wait_until("16 decisions", Duration::from_secs(10), || async {
        let text = h.metrics_text().await;
        (on_demand_metric(&text, "requested") + on_demand_metric(&text, "refused") >= 16)
            .then_some(text)
    })
    .await;
    assert_eq!(on_demand_metric(&text, "requested"), 5, "{text}");
    assert_eq!(on_demand_metric(&text, "refused"), 11, "{text}");
    assert_eq!(queued(&h, a).await, a_hosts[..3]);
    assert_eq!(queued(&h, b).await, b_hosts[..2]);
    assert!(queued(&h, suspended).await.is_empty());
    assert!(queued(&h, prefixed).await.is_empty());
    let all_jobs = h.catalog.jobs_of_tenant(a).await.unwrap().len()
        + h.catalog.jobs_of_tenant(b).await.unwrap().len();
    assert_eq!(all_jobs, 5);

    // What the catalog answers now, for any edge: a host with a queued job is covered, a
    // further host is over the limit, a stranger or a prefix host is not eligible.
    let ask = |host: &'static str| {
        let catalog = h.catalog.clone();
        async move {
            let mut tx = catalog.begin_write().await.unwrap();
            let now = tenantgate_contract::time::now_ms();
            on_demand::request_issuance(&mut tx, host, &LIMITS, 3, now)
                .await
                .unwrap()
        }
    };
    assert_eq!(ask("a0.flood.test").await, OnDemand::Covered);
    assert_eq!(ask("a7.flood.test").await, OnDemand::Refused(Limit::Global));
    assert_eq!(ask("x1.hostile.test").await, OnDemand::NotEligible);
    assert_eq!(ask("shared.flood.test").await, OnDemand::NotEligible);
    assert_eq!(ask("s.flood.test").await, OnDemand::NotEligible);
    // Past the window, the limits count afresh; `a` is still at its own limit within it.
    let later = tenantgate_contract::time::now_ms() + 3_600_001;
    let mut tx = h.catalog.begin_write().await.unwrap();
    let again = on_demand::request_issuance(&mut tx, "a7.flood.test", &LIMITS, 3, later)
        .await
        .unwrap();
    assert!(matches!(again, OnDemand::Queued(_)), "{again:?}");
    drop(tx);
    h.stop().await;
}

/// `/readyz` stays 503 while the TLS listener's certificates have not been loaded, though
/// routes are loaded and a backend is healthy, and turns 200 once they are. The load is held
/// back by a lock on the `certificates` table (PostgreSQL only: SQLite in WAL mode has no lock
/// that blocks a reader; the readiness rule does not depend on the engine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_waits_for_the_certificates() {
    let mut h = Harness::new(
        TestCatalog::postgres().await,
        "tls_listen = \"127.0.0.1:0\"",
        "",
    )
    .await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    let a = h.add_active_tenant("a", "shard-a", &["a.ready.test"]).await;
    let ca = tenantgate_testkit::tls::TestCa::new("ready CA");
    let leaf = ca.issue(&["a.ready.test"]);
    h.put_certificate(a, "a.ready.test", &leaf.cert_pem, &leaf.key_pem)
        .await;
    let tenantgate_catalog::store::CatalogPool::Postgres(pool) = h.catalog.pool() else {
        unreachable!("a PostgreSQL catalog");
    };
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE certificates IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    h.start().await;

    // Routing works (routes loaded, backend healthy), yet the edge is not ready.
    wait_until("plain HTTP is routed", Duration::from_secs(10), || async {
        (h.get("a.ready.test", "/", &[]).await.status == 200).then_some(())
    })
    .await;
    let readyz = format!("http://{}/readyz", h.metrics);
    let status = || async { h.client.get(&readyz).send().await.unwrap().status() };
    for _ in 0..10 {
        assert_eq!(status().await, 503, "ready before the certificates loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tls = h.tls.unwrap();
    assert!(!handshake(tls, "a.ready.test").await);

    lock.rollback().await.unwrap();
    h.wait_ready().await;
    assert!(handshake_with(tls, "a.ready.test", &ca).await);
    h.stop().await;
}
