//! The edge harness: a real edge started in-process with `tenantgate_edge::start` on
//! `127.0.0.1:0` (proxy and metrics), real app backends (axum servers that verify the tenant
//! signature and echo what they received) and a real catalog on PostgreSQL or SQLite.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::{changes, tenants, NewTenant, TenantPatch};
use tenantgate_catalog::Catalog;
use tenantgate_config::{Config, RawConfig};
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::signing::{SigningKeys, TenantClaims, VerifyRules};
use tenantgate_contract::{RateLimit, TenantStatus};
use tenantgate_edge::{EdgeAddrs, EdgeHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::TestCatalog;

/// An app backend: answers `/healthz`, and for anything else reads the body, verifies `x-tenant-signature`
/// (`v2`, for this method and target; 401 when it does not verify) and echoes the request as JSON.
pub struct TestBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its name, echoed as `backend` in every answer.
    pub name: String,
    /// Requests that reached the echo handler (health checks excluded).
    pub hits: Arc<AtomicU64>,
    /// Method and target of every request that reached the app.
    pub seen: Arc<std::sync::Mutex<Vec<String>>>,
    /// What `/healthz` answers: 200 while true, 503 while false.
    pub healthy: Arc<AtomicBool>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    runtime: Option<tokio::runtime::Runtime>,
}

#[derive(Clone)]
struct BackendState {
    name: String,
    keys: SigningKeys,
    hits: Arc<AtomicU64>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestBackend {
    /// Start on a fresh port (`addr` `None`), or again on `addr`: the address of a backend this
    /// test stopped, for tests of a backend that comes back.
    pub async fn start(name: &str, keys: SigningKeys, addr: Option<SocketAddr>) -> TestBackend {
        TestBackend::start_with_health(name, keys, addr, true).await
    }

    /// As [`TestBackend::start`], with `/healthz` answering 200 only while `healthy` (see
    /// [`TestBackend::healthy`]).
    pub async fn start_with_health(
        name: &str,
        keys: SigningKeys,
        addr: Option<SocketAddr>,
        healthy: bool,
    ) -> TestBackend {
        let healthy = Arc::new(AtomicBool::new(healthy));
        let listener = std::net::TcpListener::bind(addr.unwrap_or("127.0.0.1:0".parse().unwrap()))
            .expect("bind backend");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let state = BackendState {
            name: name.to_string(),
            keys,
            hits: hits.clone(),
            seen: seen.clone(),
        };
        let health = healthy.clone();
        let app = axum::Router::new()
            .route(
                "/healthz",
                axum::routing::get(move || async move {
                    if health.load(Ordering::Relaxed) {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }),
            )
            .fallback(echo)
            .with_state(state);
        let stop = CancellationToken::new();
        let token = stop.clone();
        // A runtime of its own, so that [`TestBackend::kill`] can end every connection at once.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("backend-{name}"))
            .enable_all()
            .build()
            .expect("backend runtime");
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
                .unwrap();
        });
        TestBackend {
            addr,
            name: name.to_string(),
            hits,
            seen,
            healthy,
            stop,
            task,
            runtime: Some(runtime),
        }
    }

    /// Stop accepting and close connections.
    pub async fn stop(mut self) -> SocketAddr {
        self.stop.cancel();
        // The listener closes at once; open connections get a moment to finish.
        let _ = tokio::time::timeout(Duration::from_secs(1), &mut self.task).await;
        self.addr
    }

    /// Die as a killed process does: the listener and every connection close at once, with
    /// requests in flight left unanswered.
    pub fn kill(mut self) -> SocketAddr {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        self.addr
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn echo(
    State(state): State<BackendState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    // Read whole before answering, like a real app handler with a body: a slow body keeps the
    // request waiting here.
    body: axum::body::Bytes,
) -> Response {
    state.hits.fetch_add(1, Ordering::Relaxed);
    state.seen.lock().unwrap().push(format!(
        "{} {}",
        method,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    ));
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    let verified = Uuid::parse_str(get("x-tenant-id")).ok().and_then(|id| {
        let claims = TenantClaims {
            tenant_id: id,
            slug: get("x-tenant-slug"),
            shard: get("x-tenant-shard"),
            epoch: get("x-tenant-epoch").parse().ok()?,
            request_id: get("x-request-id"),
            method: method.as_str(),
            target: uri.path_and_query().map_or("/", |p| p.as_str()),
        };
        let now = tenantgate_contract::time::now_secs();
        let rules = VerifyRules {
            max_skew_secs: 30,
            accept_v1: false,
        };
        state
            .keys
            .verify(get("x-tenant-signature"), &claims, now, rules)
            .ok()
    });
    if uri.path().starts_with("/slow") {
        // An in-flight request for shutdown and concurrency tests.
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    if verified.is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "bad signature"})),
        )
            .into_response();
    }
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (n, v) in &headers {
        seen.entry(n.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    Json(json!({
        "backend": state.name,
        "method": method.as_str(),
        "path": uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "headers": seen,
        "body_bytes": body.len(),
    }))
    .into_response()
}

/// `[catalog]` and `[edge]` sections from defaults and `key = value` override lines.
fn config_text(
    catalog: &[(&str, String)],
    extra_catalog: &str,
    edge: &[(&str, String)],
    extra_edge: &str,
) -> String {
    let section = |name: &str, defaults: &[(&str, String)], extra: &str| {
        let overridden: Vec<&str> = extra
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
            .collect();
        let mut out = format!("[{name}]\n");
        for (k, v) in defaults.iter().filter(|(k, _)| !overridden.contains(k)) {
            out.push_str(&format!("{k} = {v}\n"));
        }
        out.push_str(extra);
        out.push('\n');
        out
    };
    section("catalog", catalog, extra_catalog) + &section("edge", edge, extra_edge)
}

/// What the harness's edge configuration is made of, to write it out again for other addresses.
struct ConfigParts {
    catalog_url: String,
    extra_catalog: String,
    extra_edge: String,
    signing_key: String,
}

impl ConfigParts {
    /// The TOML of the test edge listening on `edge` (proxy) and `metrics`.
    fn render(&self, edge: SocketAddr, metrics: SocketAddr) -> String {
        config_text(
            &[
                ("url", format!("\"{}\"", self.catalog_url)),
                ("poll_interval_ms", "100".into()),
                ("negative_ttl_ms", "2000".into()),
            ],
            &self.extra_catalog,
            &[
                ("listen", format!("\"{edge}\"")),
                ("metrics_listen", format!("\"{metrics}\"")),
                ("health_interval_ms", "100".into()),
                ("health_timeout_ms", "300".into()),
                ("grace_period_secs", "0".into()),
                ("default_rps", "10000".into()),
                ("default_burst", "10000".into()),
            ],
            &self.extra_edge,
        ) + &format!(
            "[security]\nsigning_keys = {{ k1 = \"{}\" }}\n",
            self.signing_key
        )
    }
}

/// An edge over a test catalog: configured by [`Harness::new`], running after
/// [`Harness::start`].
pub struct Harness {
    /// The catalog's location (dropped last: it removes the databases).
    pub test_catalog: TestCatalog,
    /// The test's own connection to the catalog, for seeding and changes.
    pub catalog: Catalog,
    /// The edge's configuration.
    pub config: Arc<Config>,
    /// The TOML the config was loaded from (for an edge in a child process); it listens on
    /// port 0 (see [`Harness::config_text_for`]).
    pub config_text: String,
    /// The edge's proxy address: port 0 until [`Harness::start`] learns the bound one (a test
    /// that runs the edge in a child process sets it from what the child reports).
    pub edge: SocketAddr,
    /// The edge's metrics address, like [`Harness::edge`].
    pub metrics: SocketAddr,
    /// The edge's TLS address once started, when `tls_listen` is configured.
    pub tls: Option<SocketAddr>,
    /// A client without proxy settings, not following redirects, with a 15 s timeout.
    pub client: reqwest::Client,
    parts: ConfigParts,
    shutdown: CancellationToken,
    handle: Option<EdgeHandle>,
}

impl Harness {
    /// A catalog on `test_catalog` and an edge configured by `extra_edge` and `extra_catalog`
    /// (TOML lines for the `[edge]` and `[catalog]` sections, replacing defaults of the same
    /// key), listening on `127.0.0.1:0`; not yet started.
    pub async fn new(test_catalog: TestCatalog, extra_edge: &str, extra_catalog: &str) -> Harness {
        let url = test_catalog.url();
        Harness::with_catalog_url(test_catalog, &url, extra_edge, extra_catalog).await
    }

    /// As [`Harness::new`], with the edge reaching the catalog at `edge_catalog_url` (e.g.
    /// through a proxy the test can cut) while the test writes to it directly.
    pub async fn with_catalog_url(
        test_catalog: TestCatalog,
        edge_catalog_url: &str,
        extra_edge: &str,
        extra_catalog: &str,
    ) -> Harness {
        // Pingora logs through `log`; route it into the test output (RUST_LOG to see it).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let catalog = test_catalog.connect().await;
        let parts = ConfigParts {
            catalog_url: edge_catalog_url.to_string(),
            extra_catalog: extra_catalog.to_string(),
            extra_edge: extra_edge.to_string(),
            signing_key: tenantgate_contract::crypto::random_secret(32),
        };
        let ephemeral: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let text = parts.render(ephemeral, ephemeral);
        let raw = RawConfig::parse(&text, std::iter::empty()).expect("test config parses");
        let config = Arc::new(Config::try_from(raw).expect("test config is valid"));
        Harness {
            test_catalog,
            catalog,
            edge: config.edge.listen,
            metrics: config.edge.metrics_listen,
            tls: None,
            config,
            config_text: text,
            client: reqwest::Client::builder()
                .no_proxy()
                // Tests look at the edge's own answers (a 308 of `https_only` included).
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
            parts,
            shutdown: CancellationToken::new(),
            handle: None,
        }
    }

    /// [`Harness::config_text`] listening on `addrs` instead of port 0: for the new process of
    /// a graceful upgrade, which takes over the addresses of the running edge.
    pub fn config_text_for(&self, addrs: EdgeAddrs) -> String {
        self.parts.render(addrs.proxy, addrs.metrics)
    }

    /// Start the edge and record the addresses it bound in [`Harness::edge`] and
    /// [`Harness::metrics`]. Called straight from the test's async context on purpose: `start`
    /// must work there (as in `tenantgate dev`), not only on a blocking thread.
    pub async fn start(&mut self) {
        let handle = tenantgate_edge::start(self.config.clone(), self.shutdown.clone())
            .expect("edge starts");
        let addrs = handle.addrs();
        self.edge = addrs.proxy;
        self.metrics = addrs.metrics;
        self.tls = addrs.tls;
        self.handle = Some(handle);
    }

    /// Wait (up to 10 s) until the edge's `/readyz` answers 200: its feed has loaded the
    /// catalog and a backend is healthy. [`Harness::start`] returns once the edge accepts
    /// connections, which can be before that.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.metrics);
        crate::wait_until("the edge to be ready", Duration::from_secs(10), || async {
            let r = self.client.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await
    }

    /// Stop the edge and wait for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::task::spawn_blocking(move || h.join()).await.unwrap();
        }
    }

    /// The keys the edge signs with (a [`TestBackend`] verifies with them).
    pub fn keys(&self) -> SigningKeys {
        self.config.security.signing.clone()
    }

    /// A [`TestBackend`] named `name` on a fresh port, verifying with the edge's keys.
    pub async fn backend(&self, name: &str) -> TestBackend {
        TestBackend::start(name, self.keys(), None).await
    }

    /// Create shard `name` with `backends` as its app upstreams (tenant databases on the test
    /// catalog's backend).
    pub async fn add_shard(&self, name: &str, backends: &[SocketAddr]) {
        self.catalog
            .create_shard(&NewShard {
                name: name.to_string(),
                app_upstreams: backends.iter().map(|a| a.to_string()).collect(),
                database_url: self.test_catalog.shard_database_url(name),
                replicas: vec![],
            })
            .await
            .expect("create shard");
    }

    /// Create tenant `slug` on `shard` with `domains` (hosts, or host/prefix) and `status`
    /// directly in the catalog; returns its id.
    pub async fn add_tenant(
        &self,
        slug: &str,
        shard: &str,
        domains: &[&str],
        status: TenantStatus,
        rate_limit: Option<RateLimit>,
    ) -> Uuid {
        let id = Uuid::new_v4();
        self.catalog
            .create_tenant(&NewTenant {
                id,
                slug: slug.to_string(),
                name: slug.to_string(),
                status,
                shard: shard.to_string(),
                domains: domains
                    .iter()
                    .map(|d| DomainSpec::parse(d).unwrap())
                    .collect(),
                rate_limit,
                settings: json!({}),
                db_name: tenantgate_catalog::tenant_db::db_name(id),
            })
            .await
            .expect("create tenant");
        id
    }

    /// Create an active tenant `slug` on `shard` with `domains` and the default rate limit;
    /// returns its id.
    pub async fn add_active_tenant(&self, slug: &str, shard: &str, domains: &[&str]) -> Uuid {
        self.add_tenant(slug, shard, domains, TenantStatus::Active, None)
            .await
    }

    /// Change tenant `id`'s status (and its epoch) in the catalog.
    pub async fn set_status(&self, id: Uuid, status: TenantStatus) {
        self.catalog
            .update_tenant(
                id,
                &TenantPatch {
                    status: Some(status),
                    bump_epoch: true,
                    ..TenantPatch::default()
                },
            )
            .await
            .expect("update tenant");
    }

    /// Add `domain` to tenant `id`, with its change feed entry, in one write transaction.
    pub async fn add_domain(&self, id: Uuid, domain: &str) {
        let mut tx = self.catalog.begin_write().await.unwrap();
        tenants::insert_domain(&mut tx, id, &DomainSpec::parse(domain).unwrap(), false)
            .await
            .unwrap();
        let change = tenants::tenant_change(&mut tx, id, &[]).await.unwrap();
        changes::append(&mut tx, &change).await.unwrap();
        tx.commit().await.unwrap();
    }

    /// Replace tenant `id`'s settings document (and announce it).
    pub async fn set_settings(&self, id: Uuid, settings: Value) {
        self.catalog
            .update_tenant(
                id,
                &TenantPatch {
                    settings: Some(settings),
                    ..TenantPatch::default()
                },
            )
            .await
            .expect("update tenant settings");
    }

    /// Record `cert_pem` / `key_pem` as the issued certificate of tenant `id`'s `host`, the key
    /// sealed with the edge's credential key, with its feed entry, in one write transaction
    /// (what the admin API's upload does after its checks).
    pub async fn put_certificate(&self, id: Uuid, host: &str, cert_pem: &str, key_pem: &str) {
        use tenantgate_catalog::store::certificates::{self, key_context, CertSource};
        let sealed = self
            .config
            .security
            .credential_key
            .seal(key_pem.as_bytes(), &key_context(id, host));
        let mut tx = self.catalog.begin_write().await.unwrap();
        certificates::put_issued(
            &mut tx,
            &certificates::NewCertificate {
                host,
                tenant_id: id,
                source: CertSource::Upload,
                cert_pem,
                key_sealed: &sealed,
                not_after: tenantgate_contract::time::now_ms() + 86_400_000,
                issuer: "CN=test",
            },
        )
        .await
        .expect("put certificate");
        changes::append(
            &mut tx,
            &changes::NewChange {
                kind: "certificate",
                tenant_id: Some(id),
                shard: None,
                hosts: vec![host.to_string()],
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    /// The edge's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.edge, path)
    }

    /// GET `path` with `Host: host` and extra headers; returns status, headers and JSON body.
    pub async fn get(&self, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = self.client.get(self.url(path)).header("host", host);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        let resp = req.send().await.expect("request reaches the edge");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        Reply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// The metrics page of the edge.
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("http://{}/metrics", self.metrics))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub body: Value,
}

impl Reply {
    /// `error.code` of a JSON error body.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// A header the backend received (first value).
    pub fn upstream_header(&self, name: &str) -> Option<&str> {
        self.body["headers"][name][0].as_str()
    }

    /// A response header (first value).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
