//! Certificates by ACME against Pebble (Let's Encrypt's test CA, Debian package `pebble`), on
//! both catalog backends, with real HTTP-01 validation: Pebble resolves the tenant's name
//! through `pebble-challtestsrv`'s DNS (every name → 127.0.0.1) and fetches the challenge from
//! the real edge's plain listener, which answers it from the catalog the admin wrote.
//!
//! Skipped (with a message) when the `pebble` binaries are not installed, except under CI.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tenantgate_config::{AcmeConfig, Config};
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

/// Whether Pebble is installed. Under CI (`CI` set; `scripts/ensure-deps.sh --test` installs
/// it) a missing Pebble fails the test rather than skipping it.
fn pebble_installed() -> bool {
    let installed = ["pebble", "pebble-challtestsrv"].iter().all(|b| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(
        installed || std::env::var_os("CI").is_none(),
        "pebble is not installed (apt-get install pebble)"
    );
    installed
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

/// An edge (plain and TLS listeners), Pebble validating on `http_port` (the edge's plain port
/// unless given), and an admin with `[acme]` pointing at Pebble, on one catalog.
struct Setup {
    edge: Harness,
    admin: String,
    config: Arc<Config>,
    client: reqwest::Client,
    _pebble: Pebble,
    _shutdown: tokio_util::sync::DropGuard,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start(tc: TestCatalog, http_port: Option<u16>, attempts: u32) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mut edge = Harness::new(tc, "tls_listen = \"127.0.0.1:0\"", "").await;
        let backend = edge.backend("a1").await;
        edge.add_shard("shard-a", &[backend.addr]).await;
        edge.start().await;
        let pebble = Pebble::start(dir.path(), http_port.unwrap_or(edge.edge.port())).await;

        // The admin shares the edge's configuration, so both open the same sealed keys.
        let mut config = (*edge.config).clone();
        config.admin.bootstrap_token = Some(BOOTSTRAP.into());
        config.admin.job_max_attempts = attempts;
        config.tenant_migrations.dir = tenantgate_testkit::tenant_migrations_dir();
        config.acme = Some(AcmeConfig {
            directory_url: pebble.directory.parse().unwrap(),
            contact: vec!["mailto:ops@tenantgate.test".into()],
            ca_bundle: Some(pebble.ca.ca_file()),
        });
        let config = Arc::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(tenantgate_admin::serve(
            config.clone(),
            edge.catalog.clone(),
            listener,
            shutdown.clone(),
        ));
        Setup {
            edge,
            admin,
            config,
            client: reqwest::Client::new(),
            _pebble: pebble,
            _shutdown: shutdown.drop_guard(),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.admin))
            .bearer_auth(BOOTSTRAP)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Create tenant `shop` with [`HOST`] through the admin API; its id.
    async fn create_tenant(&self) -> String {
        let created: Value = self
            .client
            .post(format!("{}/v1/tenants", self.admin))
            .bearer_auth(BOOTSTRAP)
            .json(&json!({"slug": "shop", "name": "Shop", "domains": [HOST], "shard": "shard-a"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["tenant"]["id"]
            .as_str()
            .expect("tenant created")
            .to_string()
    }

    /// Wait until the tenant's certificate reads `status` and `check` accepts it.
    async fn wait_certificate(
        &self,
        id: &str,
        status: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(
            &format!("the domain's certificate is {status}"),
            Duration::from_secs(60),
            || async {
                let domains = self.get(&format!("/v1/tenants/{id}/domains")).await;
                let c = domains["domains"][0]["certificate"].clone();
                assert!(
                    status == "failed" || c["status"] != "failed",
                    "issuance failed: {domains}"
                );
                (c["status"] == status && check(&c)).then_some(c)
            },
        )
        .await
    }

    /// The leaf of the chain the catalog holds for [`HOST`].
    async fn recorded_leaf(&self) -> String {
        let issued = self
            .edge
            .catalog
            .served_certificates(Some(&[HOST.to_string()]))
            .await
            .unwrap();
        assert_eq!(issued.len(), 1);
        first_pem(&issued[0].cert_pem).to_string()
    }
}

both_backends!(a_new_tenant_domain_gets_a_certificate_the_edge_serves_and_renews);
async fn a_new_tenant_domain_gets_a_certificate_the_edge_serves_and_renews(tc: TestCatalog) {
    if !pebble_installed() {
        eprintln!("skipped: pebble and pebble-challtestsrv are not installed");
        return;
    }
    let s = Setup::start(tc, None, 3).await;
    // Before any tenant owns the name, the edge refuses its handshake.
    let tls = s.edge.tls.expect("the edge has a TLS listener");
    assert_eq!(served_leaf(tls, HOST).await, None);

    let id = s.create_tenant().await;
    let certificate = s.wait_certificate(&id, "issued", |_| true).await;
    assert_eq!(certificate["source"], "acme");
    assert!(
        certificate["issuer"].as_str().unwrap().contains("Pebble"),
        "{certificate}"
    );
    // The challenge was withdrawn once the order was done.
    assert!(s.edge.catalog.live_challenges().await.unwrap().is_empty());

    // The edge serves the issued chain's leaf for the name, from the feed.
    let expected = s.recorded_leaf().await;
    let served = wait_until("the edge serves it", Duration::from_secs(10), || async {
        served_leaf(tls, HOST).await
    })
    .await;
    assert_eq!(served.trim(), expected.trim());

    let audit = s.get(&format!("/v1/audit?tenant={id}")).await.to_string();
    assert!(audit.contains("tenant.certificate_issued"), "{audit}");
    assert!(!audit.contains("PRIVATE KEY"));

    // A fresh certificate is not renewed.
    let now = tenantgate_contract::time::now_ms();
    let ticked = tenantgate_admin::schedule_tick(s.config.clone(), s.edge.catalog.clone(), now)
        .await
        .unwrap();
    assert!(ticked.certificates.is_empty());

    // One past two thirds of its lifetime (valid for three days, two of them gone) is.
    let old = short_lived_acme_certificate(&s, &id, now).await;
    let ticked = tenantgate_admin::schedule_tick(s.config.clone(), s.edge.catalog.clone(), now)
        .await
        .unwrap();
    assert_eq!(ticked.certificates.len(), 1);
    // Its job is queued or running: the next tick does not queue another.
    let again = tenantgate_admin::schedule_tick(s.config.clone(), s.edge.catalog.clone(), now)
        .await
        .unwrap();
    assert!(again.certificates.is_empty());
    let renewed = s
        .wait_certificate(&id, "issued", |c| {
            c["issuer"].as_str().is_some_and(|i| i.contains("Pebble"))
        })
        .await;
    assert_eq!(renewed["source"], "acme");
    let new_leaf = s.recorded_leaf().await;
    assert_ne!(new_leaf.trim(), old.trim());
    wait_until(
        "the edge serves the renewed one",
        Duration::from_secs(10),
        || async { (served_leaf(tls, HOST).await?.trim() == new_leaf.trim()).then_some(()) },
    )
    .await;

    // An uploaded certificate replaces it and is never renewed by ACME, however old it gets.
    let ca = TestCa::new("operator CA");
    let leaf = ca.issue(&[HOST]);
    let upload = s
        .client
        .put(format!(
            "{}/v1/tenants/{id}/domains/{HOST}/certificate",
            s.admin
        ))
        .bearer_auth(BOOTSTRAP)
        .json(&json!({"cert_pem": leaf.cert_pem.clone() + &ca.ca_pem(), "key_pem": leaf.key_pem}))
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 200);
    let later = now + 100 * 365 * 86_400_000;
    let ticked = tenantgate_admin::schedule_tick(s.config.clone(), s.edge.catalog.clone(), later)
        .await
        .unwrap();
    assert!(ticked.certificates.is_empty());
}

/// Replace the certificate of [`HOST`] with an ACME-sourced one valid from two days before
/// `now_ms` to one day after (signed by a throwaway CA); its PEM.
async fn short_lived_acme_certificate(s: &Setup, id: &str, now_ms: i64) -> String {
    use tenantgate_catalog::store::certificates::{self, key_context, CertSource, NewCertificate};
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "old test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![HOST.to_string()]).unwrap();
    let at = |ms: i64| time::OffsetDateTime::from_unix_timestamp(ms / 1000).unwrap();
    params.not_before = at(now_ms - 2 * 86_400_000);
    params.not_after = at(now_ms + 86_400_000);
    let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
    let chain = format!("{}{}", leaf.pem(), ca.pem());
    let tenant: uuid::Uuid = id.parse().unwrap();
    let sealed = s
        .config
        .security
        .credential_key
        .seal(key.serialize_pem().as_bytes(), &key_context(tenant, HOST));
    let mut tx = s.edge.catalog.begin_write().await.unwrap();
    certificates::put_issued(
        &mut tx,
        &NewCertificate {
            host: HOST,
            tenant_id: tenant,
            source: CertSource::Acme,
            cert_pem: &chain,
            key_sealed: &sealed,
            not_after: now_ms + 86_400_000,
            issuer: "CN=old test CA",
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    leaf.pem()
}

both_backends!(a_domain_the_ca_cannot_validate_ends_failed_and_gets_no_certificate);
async fn a_domain_the_ca_cannot_validate_ends_failed_and_gets_no_certificate(tc: TestCatalog) {
    if !pebble_installed() {
        eprintln!("skipped: pebble and pebble-challtestsrv are not installed");
        return;
    }
    // Pebble validates on a port where nothing answers, as when the name does not point at
    // the edge.
    let refused = tenantgate_testkit::net::RefusedAddr::new();
    let s = Setup::start(tc, Some(refused.addr().port()), 2).await;
    let id = s.create_tenant().await;
    let certificate = s.wait_certificate(&id, "failed", |_| true).await;
    assert_eq!(certificate["source"], "acme");
    assert_eq!(certificate["not_after"], Value::Null);
    // The job tried every attempt and keeps the CA's reason.
    let failed = s
        .edge
        .catalog
        .jobs_of_tenant(id.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.kind == "issue_certificate")
        .expect("an issuance job");
    assert_eq!(failed.attempts, 2);
    let error = failed.error.expect("the job's error");
    assert!(error.contains("ACME"), "{error}");
    assert!(s.edge.catalog.live_challenges().await.unwrap().is_empty());
    let tls = s.edge.tls.expect("the edge has a TLS listener");
    assert_eq!(served_leaf(tls, HOST).await, None);
}
