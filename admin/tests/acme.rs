//! Certificates by ACME against Pebble (Let's Encrypt's test CA, Debian package `pebble`), on
//! both catalog backends, with real HTTP-01 validation: Pebble resolves the tenant's name
//! through `pebble-challtestsrv`'s DNS (every name → 127.0.0.1) and fetches the challenge from
//! the real edge's plain listener, which answers it from the catalog the admin wrote.
//!
//! Skipped (with a message) when the `pebble` binaries are not installed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tenantgate_config::AcmeConfig;
use tenantgate_testkit::admin::BOOTSTRAP;
use tenantgate_testkit::edge::Harness;
use tenantgate_testkit::tls::TestCa;
use tenantgate_testkit::{both_backends, wait_until, TestCatalog};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

const HOST: &str = "shop.tenantgate.test";

/// A free port on 127.0.0.1 for a child process that cannot report the one it bound.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Pebble and its DNS, running until dropped.
struct Pebble {
    _dns: Child,
    _pebble: Child,
    /// The directory URL.
    directory: String,
    /// Trusts Pebble's HTTPS listener.
    ca: TestCa,
}

impl Pebble {
    /// Pebble validating HTTP-01 on `http_port` of 127.0.0.1 (the edge's plain listener).
    async fn start(dir: &Path, http_port: u16) -> Pebble {
        let dns_port = free_udp_port();
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            // IPv4 only: the edge listens on 127.0.0.1.
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start pebble-challtestsrv");

        let ca = TestCa::new("pebble listener test root");
        let (cert, key) = ca.issue(&["127.0.0.1", "localhost"]).write(dir, "pebble");
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = json!({ "pebble": {
            "listenAddress": listen.to_string(),
            "managementListenAddress": format!("127.0.0.1:{}", free_port()),
            "certificate": cert,
            "privateKey": key,
            "httpPort": http_port,
            "tlsPort": free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        let config_path = dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // Validate at once rather than after a random pause of up to 15 s, and do not
            // reject nonces at random: the test is about the edge answering, not retries.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start pebble");
        wait_until("pebble listens", Duration::from_secs(20), || async {
            tokio::net::TcpStream::connect(listen).await.ok().map(drop)
        })
        .await;
        Pebble {
            _dns: dns,
            _pebble: pebble,
            directory: format!("https://{listen}/dir"),
            ca,
        }
    }
}

fn pebble_installed() -> bool {
    ["pebble", "pebble-challtestsrv"].iter().all(|b| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The leaf certificate the edge presents for `sni` on `addr`, as PEM (`openssl s_client`).
async fn served_leaf(addr: SocketAddr, sni: &str) -> Option<String> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            "-servername",
            sni,
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let begin = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[begin..].find("-----END CERTIFICATE-----")? + begin;
    Some(text[begin..end + "-----END CERTIFICATE-----".len()].to_string())
}

fn first_pem(chain: &str) -> &str {
    let end = chain
        .find("-----END CERTIFICATE-----")
        .expect("a PEM chain")
        + "-----END CERTIFICATE-----".len();
    chain[..end].trim_start()
}

both_backends!(a_new_tenant_domain_gets_a_certificate_the_edge_serves);
async fn a_new_tenant_domain_gets_a_certificate_the_edge_serves(tc: TestCatalog) {
    if !pebble_installed() {
        eprintln!("skipped: pebble and pebble-challtestsrv are not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Harness::new(tc, "tls_listen = \"127.0.0.1:0\"", "").await;
    let backend = edge.backend("a1").await;
    edge.add_shard("shard-a", &[backend.addr]).await;
    edge.start().await;
    let pebble = Pebble::start(dir.path(), edge.edge.port()).await;

    // The admin shares the edge's configuration, so both open the same sealed keys.
    let mut config = (*edge.config).clone();
    config.admin.bootstrap_token = Some(BOOTSTRAP.into());
    config.admin.job_max_attempts = 3;
    config.tenant_migrations.dir = tenantgate_testkit::tenant_migrations_dir();
    config.acme = Some(AcmeConfig {
        directory_url: pebble.directory.parse().unwrap(),
        contact: vec!["mailto:ops@tenantgate.test".into()],
        ca_bundle: Some(pebble.ca.ca_file()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    tokio::spawn(tenantgate_admin::serve(
        Arc::new(config),
        edge.catalog.clone(),
        listener,
        shutdown,
    ));
    let client = reqwest::Client::new();

    // Before any tenant owns the name, the edge refuses its handshake.
    let tls = edge.tls.expect("the edge has a TLS listener");
    assert_eq!(served_leaf(tls, HOST).await, None);

    let created: Value = client
        .post(format!("{admin}/v1/tenants"))
        .bearer_auth(BOOTSTRAP)
        .json(&json!({"slug": "shop", "name": "Shop", "domains": [HOST], "shard": "shard-a"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["tenant"]["id"]
        .as_str()
        .expect("tenant created")
        .to_string();

    let certificate = wait_until(
        "the domain's certificate is issued",
        Duration::from_secs(60),
        || async {
            let domains: Value = client
                .get(format!("{admin}/v1/tenants/{id}/domains"))
                .bearer_auth(BOOTSTRAP)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let c = domains["domains"][0]["certificate"].clone();
            assert_ne!(c["status"], "failed", "issuance failed: {domains}");
            (c["status"] == "issued").then_some(c)
        },
    )
    .await;
    assert_eq!(certificate["source"], "acme");
    assert!(
        certificate["issuer"].as_str().unwrap().contains("Pebble"),
        "{certificate}"
    );
    // The challenge was withdrawn once the order was done.
    assert!(edge.catalog.live_challenges().await.unwrap().is_empty());

    // The edge serves the issued chain's leaf for the name, from the feed.
    let issued = edge
        .catalog
        .served_certificates(Some(&[HOST.to_string()]))
        .await
        .unwrap();
    assert_eq!(issued.len(), 1);
    let expected = first_pem(&issued[0].cert_pem).to_string();
    let served = wait_until("the edge serves it", Duration::from_secs(10), || async {
        served_leaf(tls, HOST).await
    })
    .await;
    assert_eq!(served.trim(), expected.trim());

    let audit: Value = client
        .get(format!("{admin}/v1/audit?tenant={id}"))
        .bearer_auth(BOOTSTRAP)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        audit.to_string().contains("tenant.certificate_issued"),
        "{audit}"
    );
    assert!(!audit.to_string().contains("PRIVATE KEY"));
}
