//! A real app on 127.0.0.1:0 over a real catalog (PostgreSQL or SQLite) with provisioned tenant
//! databases, and a client that signs requests exactly like the edge does.

#![allow(dead_code)] // not every test module uses every helper
use std::sync::Arc;
use std::time::Duration;

use sqlx::{AnyPool, Connection, Executor};
use tenantgate_app::AppError;
use tenantgate_catalog::db::connect;
use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::{NewTenant, TenantPatch};
use tenantgate_catalog::tenant_db::{self, Credentials};
use tenantgate_catalog::Catalog;
use tenantgate_config::db_url::Engine;
use tenantgate_config::{Config, RawConfig};
use tenantgate_contract::crypto::{decode_key, random_secret};
use tenantgate_contract::signing::{
    SigningKeys, TenantClaims, HEADER_REQUEST_ID, HEADER_TENANT_EPOCH, HEADER_TENANT_ID,
    HEADER_TENANT_SHARD, HEADER_TENANT_SIGNATURE, HEADER_TENANT_SLUG,
};
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::{tenant_migrations_dir, TestCatalog};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub(crate) const SHARD: &str = "shard-a";
/// `application_name` of connections made through the shard's replica URL.
pub(crate) const REPLICA_APP_NAME: &str = "tg_replica";

/// Knobs of a test app.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) budget: u32,
    pub(crate) acquire_timeout_ms: u64,
    pub(crate) pool_idle_secs: u64,
    pub(crate) max_skew_secs: u64,
    /// `security.accept_v1`.
    pub(crate) accept_v1: bool,
    /// PostgreSQL only: list the test server again as the shard's replica, told apart by its
    /// `application_name` ([`REPLICA_APP_NAME`]).
    pub(crate) replica: bool,
    /// PostgreSQL only: put shard-a on this server URL with these replicas instead of the test
    /// server.
    pub(crate) shard_location: Option<(String, Vec<String>)>,
    /// `app.login_failures_per_address` and `app.login_failures_per_tenant`.
    pub(crate) login_failures: (u32, u32),
}

impl Default for Options {
    fn default() -> Self {
        Options {
            budget: 20,
            acquire_timeout_ms: 2000,
            pool_idle_secs: 60,
            max_skew_secs: 30,
            accept_v1: false,
            replica: false,
            shard_location: None,
            login_failures: (1000, 10_000),
        }
    }
}

/// A tenant of the test app, with its provisioned database.
#[derive(Debug, Clone)]
pub(crate) struct TestTenant {
    pub(crate) id: Uuid,
    pub(crate) slug: String,
    pub(crate) epoch: i64,
    /// The shard the tenant lives on (and the app that serves it).
    pub(crate) shard: String,
    /// URL to reach the tenant database as the test (server user or the SQLite file).
    pub(crate) admin_url: String,
}

type ServeTask = JoinHandle<Result<(), AppError>>;

pub(crate) struct TestApp {
    pub(crate) backend: Engine,
    pub(crate) catalog: Catalog,
    pub(crate) config: Arc<Config>,
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    /// Keys the edge signs with (the app accepts these).
    pub(crate) edge_keys: SigningKeys,
    /// The other configured key (`k1`): no longer used by the edge, still accepted.
    pub(crate) previous_keys: SigningKeys,
    shutdown: CancellationToken,
    handle: Option<ServeTask>,
    /// Apps of further shards: (shard, base URL, task), stopped with the first.
    others: Vec<(String, String, ServeTask)>,
    raw_config: RawConfig,
    shard_a_url: String,
    // Last: dropped after the app stopped (drops the PostgreSQL databases / temp dir).
    test_catalog: TestCatalog,
}

fn config_text(opts: &Options, catalog_url: &str, k1: &str, k2: &str, cred: &str) -> String {
    format!(
        r#"
[catalog]
url = "{catalog_url}"
poll_interval_ms = 50

[app]
listen = "127.0.0.1:0"
shard = "{SHARD}"
connection_budget = {budget}
acquire_timeout_ms = {acquire}
pool_idle_secs = {idle}
read_your_writes_ms = 5000
login_failures_per_address = {per_address}
login_failures_per_tenant = {per_tenant}
login_failure_window_secs = 600

[security]
signing_key_id = "k2"
signing_keys = {{ k1 = "{k1}", k2 = "{k2}" }}
credential_key = "{cred}"
max_skew_secs = {skew}
accept_v1 = {accept_v1}
"#,
        budget = opts.budget,
        acquire = opts.acquire_timeout_ms,
        idle = opts.pool_idle_secs,
        skew = opts.max_skew_secs,
        accept_v1 = opts.accept_v1,
        per_address = opts.login_failures.0,
        per_tenant = opts.login_failures.1,
    )
}

impl TestApp {
    pub(crate) async fn start(backend: Engine, opts: Options) -> TestApp {
        let test_catalog = match backend {
            Engine::Postgres => TestCatalog::postgres().await,
            Engine::Sqlite => TestCatalog::sqlite(),
        };
        let catalog = test_catalog.connect().await;
        let (database_url, replicas) = match (&opts.shard_location, backend, opts.replica) {
            (Some(location), _, _) => location.clone(),
            (None, Engine::Postgres, true) => {
                let server = test_catalog.shard_database_url(SHARD);
                let replica = format!("{server}?application_name={REPLICA_APP_NAME}");
                (server, vec![replica])
            }
            (None, _, _) => (test_catalog.shard_database_url(SHARD), vec![]),
        };
        catalog
            .create_shard(&NewShard {
                name: SHARD.into(),
                app_upstreams: vec![],
                database_url: database_url.clone(),
                replicas,
            })
            .await
            .expect("create shard");
        let k1 = random_secret(32);
        let text = config_text(
            &opts,
            &test_catalog.url(),
            &k1,
            &random_secret(32),
            &random_secret(32),
        );
        let previous_keys =
            SigningKeys::new("k1", &[("k1".into(), decode_key(&k1).unwrap())]).unwrap();
        let raw = RawConfig::parse(&text, std::iter::empty()).expect("test config parses");
        let config = Arc::new(Config::try_from(raw.clone()).expect("test config is valid"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(tenantgate_app::serve(
            config.clone(),
            catalog.clone(),
            listener,
            shutdown.clone(),
        ));
        TestApp {
            backend,
            catalog,
            edge_keys: config.security.signing.clone(),
            previous_keys,
            config,
            base,
            client: reqwest::Client::new(),
            shutdown,
            handle: Some(handle),
            others: Vec::new(),
            raw_config: raw,
            shard_a_url: database_url,
            test_catalog,
        }
    }

    /// Create shard `shard` (on the same database server, or its own folder) and start an app
    /// for it, with the same keys; [`TestApp::request`] sends its tenants' requests there.
    pub(crate) async fn add_shard(&mut self, shard: &str) {
        self.catalog
            .create_shard(&NewShard {
                name: shard.into(),
                app_upstreams: vec![],
                database_url: self.test_catalog.shard_database_url(shard),
                replicas: vec![],
            })
            .await
            .expect("create shard");
        let mut raw = self.raw_config.clone();
        raw.app.shard = shard.into();
        let config = Arc::new(Config::try_from(raw).expect("test config is valid"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(tenantgate_app::serve(
            config,
            self.catalog.clone(),
            listener,
            self.shutdown.clone(),
        ));
        self.others.push((shard.into(), base, handle));
    }

    /// Start one more app process (task) for shard-a with the same configuration, as a second
    /// replica of the app tier behind the edge; returns its base URL.
    pub(crate) async fn add_process(&mut self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = tokio::spawn(tenantgate_app::serve(
            self.config.clone(),
            self.catalog.clone(),
            listener,
            self.shutdown.clone(),
        ));
        // Named after no shard, so `base_of` never picks it.
        self.others.push((
            format!("{SHARD}/process-{}", self.others.len()),
            base.clone(),
            handle,
        ));
        base
    }

    /// A request for `t` to the app at `base`, signed like the edge signs it, now.
    pub(crate) fn request_at(
        &self,
        base: &str,
        t: &TestTenant,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let headers = self.signed_headers(
            t,
            &self.edge_keys,
            tenantgate_contract::time::now_secs(),
            method.as_str(),
            path,
        );
        let mut rb = self.client.request(method, format!("{base}{path}"));
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb
    }

    /// Base URL of the app serving `shard`.
    pub(crate) fn base_of(&self, shard: &str) -> &str {
        if shard == SHARD {
            return &self.base;
        }
        self.others
            .iter()
            .find(|(s, _, _)| s == shard)
            .map(|(_, base, _)| base.as_str())
            .unwrap_or_else(|| panic!("no app for shard {shard}"))
    }

    /// The database URL of shard-a (a server, or a folder of SQLite files).
    pub(crate) fn shard_url(&self) -> String {
        self.shard_a_url.clone()
    }

    /// Create an active tenant with `settings` and provision its database (schema migrated).
    pub(crate) async fn tenant(&self, slug: &str, settings: serde_json::Value) -> TestTenant {
        self.tenant_on(SHARD, slug, settings).await
    }

    /// As [`TestApp::tenant`], on `shard`.
    pub(crate) async fn tenant_on(
        &self,
        shard: &str,
        slug: &str,
        settings: serde_json::Value,
    ) -> TestTenant {
        let id = Uuid::new_v4();
        let db_name = tenant_db::db_name(id);
        self.catalog
            .create_tenant(&NewTenant {
                id,
                slug: slug.into(),
                name: format!("{slug} Inc."),
                status: TenantStatus::Provisioning,
                shard: shard.into(),
                domains: vec![],
                rate_limit: None,
                settings,
                db_name: db_name.clone(),
            })
            .await
            .expect("create tenant");
        let shard_url = if shard == SHARD {
            self.shard_url()
        } else {
            self.test_catalog.shard_database_url(shard)
        };
        let migrator = tenant_db::migrator(&tenant_migrations_dir(), self.backend)
            .await
            .expect("tenant migrations");
        let (admin_url, credentials) = match self.backend {
            Engine::Sqlite => {
                let path = tenant_db::sqlite_file(&shard_url, &db_name);
                (format!("sqlite://{}", path.display()), None)
            }
            Engine::Postgres => {
                let password = random_secret(18);
                let mut server = sqlx::PgConnection::connect(&shard_url).await.unwrap();
                server
                    .execute(format!("CREATE ROLE {db_name} LOGIN PASSWORD '{password}'").as_str())
                    .await
                    .unwrap();
                server
                    .execute(format!("CREATE DATABASE {db_name} OWNER {db_name}").as_str())
                    .await
                    .unwrap();
                server.close().await.unwrap();
                let login = Credentials {
                    user: db_name.clone(),
                    password,
                };
                let admin = tenant_db::postgres_url(&shard_url, &db_name, Some(&login)).unwrap();
                (
                    admin,
                    Some(login.seal(&self.config.security.credential_key, id)),
                )
            }
        };
        // Migrate as the tenant's own login (PostgreSQL) so it owns its tables.
        let pool = connect(&admin_url, 1).await.expect("connect tenant db");
        migrator.run(&pool).await.expect("migrate tenant db");
        pool.close().await;
        self.catalog
            .update_tenant(
                id,
                &TenantPatch {
                    status: Some(TenantStatus::Active),
                    db_credentials: Some(credentials),
                    schema_version: Some(tenant_db::latest_version(&migrator)),
                    ..TenantPatch::default()
                },
            )
            .await
            .expect("activate tenant");
        let tenant = self.catalog.tenant(&id.to_string()).await.unwrap().unwrap();
        TestTenant {
            id,
            slug: slug.into(),
            epoch: tenant.epoch,
            shard: shard.into(),
            admin_url,
        }
    }

    /// A pool on `t`'s database for seeding (users, tokens).
    pub(crate) async fn tenant_pool(&self, t: &TestTenant) -> AnyPool {
        connect(&t.admin_url, 1).await.expect("connect tenant db")
    }

    /// Insert a user with `role` and a token expiring at `expires_at` (ms); returns the token.
    pub(crate) async fn user(&self, t: &TestTenant, role: &str, expires_at: Option<i64>) -> String {
        let pool = self.tenant_pool(t).await;
        let user_id = Uuid::new_v4().to_string();
        let now = tenantgate_contract::time::now_ms();
        sqlx::query("INSERT INTO users (id, email, role, created_at) VALUES ($1, $2, $3, $4)")
            .bind(&user_id)
            .bind(format!("{role}-{user_id}@example.com"))
            .bind(role)
            .bind(now)
            .execute(&pool)
            .await
            .unwrap();
        let mut conn = pool.acquire().await.unwrap();
        let minted = tenantgate_catalog::tenant_tokens::mint(&mut conn, &user_id, expires_at)
            .await
            .unwrap();
        drop(conn);
        pool.close().await;
        minted.token
    }

    /// The headers the edge would send for `method target` to `t`, signed with `keys` at unix
    /// time `ts`.
    pub(crate) fn signed_headers(
        &self,
        t: &TestTenant,
        keys: &SigningKeys,
        ts: i64,
        method: &str,
        target: &str,
    ) -> Vec<(&'static str, String)> {
        edge_headers(t, keys, ts, method, target)
    }

    /// A request for `t` signed like the edge signs it, now.
    pub(crate) fn request(
        &self,
        t: &TestTenant,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.request_at(self.base_of(&t.shard), t, method, path)
    }

    pub(crate) fn get(&self, t: &TestTenant, path: &str) -> reqwest::RequestBuilder {
        self.request(t, reqwest::Method::GET, path)
    }

    /// The app's `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stop the app; it must return promptly.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        let handles = std::iter::once(self.handle.take().unwrap())
            .chain(self.others.drain(..).map(|(_, _, h)| h));
        for handle in handles {
            tokio::time::timeout(Duration::from_secs(2), handle)
                .await
                .expect("serve returns within 2 s of shutdown")
                .unwrap()
                .expect("serve ends cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The value of metric `name{labels}` in a Prometheus text exposition (0 when absent).
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Open tenant connections according to the app's metrics.
pub(crate) fn open_connections(metrics: &str) -> f64 {
    metric(metrics, r#"tenantgate_app_db_connections{state="idle"}"#)
        + metric(metrics, r#"tenantgate_app_db_connections{state="active"}"#)
}

/// A small deterministic generator (xorshift) for test plans.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The headers the edge sends for `method target` to `t` (target: path and query as the app
/// receives it), signed with `keys` at unix time `ts`, with a fresh request id.
pub(crate) fn edge_headers(
    t: &TestTenant,
    keys: &SigningKeys,
    ts: i64,
    method: &str,
    target: &str,
) -> Vec<(&'static str, String)> {
    let request_id = Uuid::new_v4().to_string();
    let claims = TenantClaims {
        tenant_id: t.id,
        slug: &t.slug,
        shard: &t.shard,
        epoch: t.epoch,
        request_id: &request_id,
        method,
        target,
    };
    let signature = keys.sign(&claims, ts);
    vec![
        (HEADER_TENANT_ID, t.id.to_string()),
        (HEADER_TENANT_SLUG, t.slug.clone()),
        (HEADER_TENANT_SHARD, t.shard.clone()),
        (HEADER_TENANT_EPOCH, t.epoch.to_string()),
        (HEADER_REQUEST_ID, request_id.clone()),
        (HEADER_TENANT_SIGNATURE, signature),
    ]
}
