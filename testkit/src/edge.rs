//! Test harness: a real edge started with `tenantgate_proxy::start` on free ports, real app
//! backends (axum servers that verify the tenant signature and echo what they received) and a
//! real catalog on PostgreSQL or SQLite.

#![allow(dead_code, unreachable_pub)]
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::{changes, tenants, NewTenant, TenantPatch};
use tenantgate_catalog::testing::TestCatalog;
use tenantgate_catalog::Catalog;
use tenantgate_config::{Config, RawConfig};
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::signing::{SigningKeys, TenantClaims};
use tenantgate_proxy::EdgeHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A free port on 127.0.0.1 (bound, read, released: Pingora binds it itself).
use tenantgate_contract::{RateLimit, TenantStatus};
pub fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// An app backend: answers `/healthz`, and for anything else verifies `x-tenant-signature`
/// (401 when it does not verify) and echoes the request as JSON.
pub struct TestBackend {
    pub addr: SocketAddr,
    pub name: String,
    pub hits: Arc<AtomicU64>,
    /// Method and target of every request that reached the app.
    pub seen: Arc<std::sync::Mutex<Vec<String>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct BackendState {
    name: String,
    keys: SigningKeys,
    hits: Arc<AtomicU64>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl TestBackend {
    /// Start on `addr` (or a fresh port).
    pub async fn start(name: &str, keys: SigningKeys, addr: Option<SocketAddr>) -> TestBackend {
        let listener =
            tokio::net::TcpListener::bind(addr.unwrap_or("127.0.0.1:0".parse().unwrap()))
                .await
                .expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let state = BackendState {
            name: name.to_string(),
            keys,
            hits: hits.clone(),
            seen: seen.clone(),
        };
        let app = axum::Router::new()
            .route("/healthz", axum::routing::get(|| async { "ok" }))
            .fallback(echo)
            .with_state(state);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
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
            stop,
            task,
        }
    }

    /// Stop accepting and close connections.
    pub async fn stop(self) -> SocketAddr {
        self.stop.cancel();
        // The listener closes at once; open connections get a moment to finish.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
        self.addr
    }
}

async fn echo(
    State(state): State<BackendState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
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
        };
        let now = tenantgate_contract::time::now_secs();
        state
            .keys
            .verify(get("x-tenant-signature"), &claims, now, 30)
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

/// A running edge over a test catalog.
pub struct Harness {
    pub test_catalog: TestCatalog,
    pub catalog: Catalog,
    pub config: Arc<Config>,
    /// The TOML the config was loaded from (for an edge in a child process).
    pub config_text: String,
    pub edge: SocketAddr,
    pub metrics: SocketAddr,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    handle: Option<EdgeHandle>,
}

impl Harness {
    /// A catalog on `test_catalog` and an edge configured by `extra` (TOML lines appended to
    /// the `[edge]` section), not yet started.
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
        let edge = free_addr();
        let metrics = free_addr();
        let key = tenantgate_contract::crypto::random_secret(32);
        let text = config_text(
            &[
                ("url", format!("\"{edge_catalog_url}\"")),
                ("poll_interval_ms", "100".into()),
                ("negative_ttl_ms", "2000".into()),
            ],
            extra_catalog,
            &[
                ("listen", format!("\"{edge}\"")),
                ("metrics_listen", format!("\"{metrics}\"")),
                ("health_interval_ms", "100".into()),
                ("health_timeout_ms", "300".into()),
                ("grace_period_secs", "0".into()),
                ("default_rps", "10000".into()),
                ("default_burst", "10000".into()),
            ],
            extra_edge,
        ) + &format!("[security]\nsigning_keys = {{ k1 = \"{key}\" }}\n");
        let raw = RawConfig::parse(&text, std::iter::empty()).expect("test config parses");
        let config = Arc::new(Config::try_from(raw).expect("test config is valid"));
        Harness {
            test_catalog,
            catalog,
            config,
            config_text: text,
            edge,
            metrics,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
            shutdown: CancellationToken::new(),
            handle: None,
        }
    }

    /// Start the edge. Called straight from the test's async context on purpose: `start` must
    /// work there (as in `tenantgate dev`), not only on a blocking thread.
    pub async fn start(&mut self) {
        let handle = tenantgate_proxy::start(self.config.clone(), self.shutdown.clone())
            .expect("edge starts");
        self.handle = Some(handle);
    }

    /// Stop the edge and wait for it.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::task::spawn_blocking(move || h.join()).await.unwrap();
        }
    }

    pub fn keys(&self) -> SigningKeys {
        self.config.security.signing.clone()
    }

    pub async fn backend(&self, name: &str) -> TestBackend {
        TestBackend::start(name, self.keys(), None).await
    }

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

    pub async fn add_domain(&self, id: Uuid, domain: &str) {
        let mut tx = self.catalog.begin_write().await.unwrap();
        tenants::insert_domain(&mut tx, id, &DomainSpec::parse(domain).unwrap(), false)
            .await
            .unwrap();
        let change = tenants::tenant_change(&mut tx, id, &[]).await.unwrap();
        changes::append(&mut tx, self.catalog.engine(), &change)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

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
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
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

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Run the same test body on PostgreSQL and on SQLite.
#[macro_export]
macro_rules! both_backends {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(tenantgate_catalog::testing::TestCatalog::postgres().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(tenantgate_catalog::testing::TestCatalog::sqlite()).await;
            }
        }
    };
}
