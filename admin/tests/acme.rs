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
use tenantgate_config::{AcmeConfig, Config, OnDemandLimits};
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
    /// Pebble's output (its log).
    log: std::path::PathBuf,
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
        let log = dir.join("pebble.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            // Validate at once rather than after a random pause of up to 15 s, and do not
            // reject nonces at random: the test is about the edge answering, not retries.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
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
            log,
            directory: format!("https://{listen}/dir"),
            ca,
        }
    }
}

impl Pebble {
    /// How many accounts Pebble has registered: it logs the count after each registration.
    fn accounts(&self) -> usize {
        let text = std::fs::read_to_string(&self.log).unwrap();
        text.lines()
            .filter_map(|l| l.split("There are now ").nth(1))
            .filter_map(|rest| rest.strip_suffix(" accounts in memory"))
            .map(|n| n.trim().parse::<usize>().unwrap())
            .max()
            .unwrap_or(0)
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
    pebble: Pebble,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Start an admin process (API and worker) on `config`; its URL and its shutdown.
async fn start_admin(
    config: &Arc<Config>,
    catalog: &tenantgate_catalog::Catalog,
) -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(tenantgate_admin::serve(
        config.clone(),
        catalog.clone(),
        listener,
        shutdown.clone(),
    ));
    (admin, shutdown)
}

impl Setup {
    async fn start(tc: TestCatalog, http_port: Option<u16>, attempts: u32) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let mut edge = Harness::new(tc, "tls_listen = \"127.0.0.1:0\"", "").await;
        let backend = edge.backend("a1").await;
        edge.add_shard("shard-a", &[backend.addr]).await;
        // The edge requests issuance at a handshake for a host without a certificate; it never
        // talks to the CA itself, so its `[acme]` needs no reachable directory.
        let mut edge_config = (*edge.config).clone();
        edge_config.acme = Some(AcmeConfig {
            directory_url: "https://ca.invalid/dir".parse().unwrap(),
            contact: vec![],
            ca_bundle: None,
            on_demand: Some(OnDemandLimits {
                per_tenant: 5,
                global: 50,
                window: Duration::from_secs(3600),
            }),
            confirm_addrs: vec![],
            confirm_timeout: Duration::from_secs(10),
        });
        edge.config = Arc::new(edge_config);
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
            on_demand: None,
            // The CA is told only once the edge serves the answer.
            confirm_addrs: vec![edge.edge.to_string()],
            confirm_timeout: Duration::from_secs(10),
        });
        let config = Arc::new(config);
        let (admin, shutdown) = start_admin(&config, &edge.catalog).await;
        Setup {
            edge,
            admin,
            config,
            client: reqwest::Client::new(),
            pebble,
            shutdown,
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

    /// Wait until the certificate of the tenant's [`HOST`] reads `status` and `check` accepts it.
    async fn wait_certificate(
        &self,
        id: &str,
        status: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_certificate_of(id, HOST, status, check).await
    }

    /// As [`Setup::wait_certificate`], for `host`.
    async fn wait_certificate_of(
        &self,
        id: &str,
        host: &str,
        status: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_until(
            &format!("the certificate of {host} is {status}"),
            Duration::from_secs(60),
            || async {
                let domains = self.get(&format!("/v1/tenants/{id}/domains")).await;
                let c = domains["domains"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|d| d["domain"] == host)
                    .map(|d| d["certificate"].clone())
                    .unwrap_or(Value::Null);
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
        self.recorded_leaf_of(HOST).await
    }

    /// The leaf of the chain the catalog holds for `host`.
    async fn recorded_leaf_of(&self, host: &str) -> String {
        let issued = self
            .edge
            .catalog
            .served_certificates(Some(&[host.to_string()]))
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

both_backends!(a_domain_without_a_certificate_gets_one_at_its_first_tls_hit);
async fn a_domain_without_a_certificate_gets_one_at_its_first_tls_hit(tc: TestCatalog) {
    if !pebble_installed() {
        eprintln!("skipped: pebble and pebble-challtestsrv are not installed");
        return;
    }
    let s = Setup::start(tc, None, 3).await;
    let tls = s.edge.tls.expect("the edge has a TLS listener");
    // Written straight to the catalog, as by an admin without `[acme]`: no issuance job.
    let tenant = s.edge.add_active_tenant("shop", "shard-a", &[HOST]).await;
    let id = tenant.to_string();
    wait_until(
        "the edge knows the host",
        Duration::from_secs(10),
        || async { (s.edge.get(HOST, "/", &[]).await.code() != "unknown_tenant").then_some(()) },
    )
    .await;
    assert!(s
        .edge
        .catalog
        .jobs_of_tenant(tenant)
        .await
        .unwrap()
        .is_empty());

    // The first handshake is refused at once (no fallback); it requested issuance.
    let started = std::time::Instant::now();
    assert_eq!(served_leaf(tls, HOST).await, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the handshake waited"
    );
    let certificate = s.wait_certificate(&id, "issued", |_| true).await;
    assert_eq!(certificate["source"], "acme");
    let jobs = s.edge.catalog.jobs_of_tenant(tenant).await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].kind, "issue_certificate");
    assert_eq!(jobs[0].payload["on_demand"], true);

    // A later handshake gets the issued certificate.
    let expected = s.recorded_leaf().await;
    let served = wait_until("the edge serves it", Duration::from_secs(10), || async {
        served_leaf(tls, HOST).await
    })
    .await;
    assert_eq!(served.trim(), expected.trim());
    let metrics = s.edge.metrics_text().await;
    assert!(
        metrics.contains("tenantgate_edge_on_demand_certificates_total{result=\"requested\"} 1"),
        "{metrics}"
    );
}

both_backends!(one_acme_account_serves_every_admin_process_and_restart);
async fn one_acme_account_serves_every_admin_process_and_restart(tc: TestCatalog) {
    if !pebble_installed() {
        eprintln!("skipped: pebble and pebble-challtestsrv are not installed");
        return;
    }
    let mut s = Setup::start(tc, None, 3).await;
    let id = s.create_tenant().await;
    s.wait_certificate(&id, "issued", |_| true).await;
    assert_eq!(s.pebble.accounts(), 1);
    let directory = s.config.acme.as_ref().unwrap().directory_url.to_string();
    let kept = s
        .edge
        .catalog
        .acme_account(&directory)
        .await
        .unwrap()
        .expect("the account is kept in the catalog");
    assert!(kept.account_url.starts_with("https://"), "{kept:?}");
    assert!(!kept.credentials_sealed.contains("PRIVATE"));

    // The admin restarts (a new process would start the same way: nothing in memory).
    s.shutdown.cancel();
    let (admin, shutdown) = start_admin(&s.config, &s.edge.catalog).await;
    s.admin = admin;
    s.shutdown = shutdown;
    const SECOND: &str = "two.tenantgate.test";
    let added = s
        .client
        .post(format!("{}/v1/tenants/{id}/domains", s.admin))
        .bearer_auth(BOOTSTRAP)
        .json(&json!({"domain": SECOND}))
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success(), "{}", added.status());
    s.wait_certificate_of(&id, SECOND, "issued", |_| true).await;
    assert!(!s.recorded_leaf_of(SECOND).await.is_empty());
    // Both issuances used the one account.
    assert_eq!(s.pebble.accounts(), 1);
    let again = s
        .edge
        .catalog
        .acme_account(&directory)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.account_url, kept.account_url);
}

both_backends!(a_challenge_an_edge_does_not_serve_is_never_handed_to_the_ca);
async fn a_challenge_an_edge_does_not_serve_is_never_handed_to_the_ca(tc: TestCatalog) {
    if !pebble_installed() {
        eprintln!("skipped: pebble and pebble-challtestsrv are not installed");
        return;
    }
    let mut s = Setup::start(tc, None, 1).await;
    // One of the configured edges is down: its confirmation never comes.
    let down = tenantgate_testkit::net::RefusedAddr::new();
    let mut config = (*s.config).clone();
    let acme = config.acme.as_mut().unwrap();
    acme.confirm_addrs.push(down.addr().to_string());
    acme.confirm_timeout = Duration::from_millis(300);
    s.config = Arc::new(config);
    s.shutdown.cancel();
    let (admin, shutdown) = start_admin(&s.config, &s.edge.catalog).await;
    s.admin = admin;
    s.shutdown = shutdown;

    let id = s.create_tenant().await;
    s.wait_certificate(&id, "failed", |_| true).await;
    let job = s
        .edge
        .catalog
        .jobs_of_tenant(id.parse().unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|j| j.kind == "issue_certificate")
        .expect("an issuance job");
    let error = job.error.expect("the job's error");
    assert!(
        error.contains(&format!("edge {} did not serve the challenge", down.addr())),
        "{error}"
    );
    assert!(s.edge.catalog.live_challenges().await.unwrap().is_empty());
}
