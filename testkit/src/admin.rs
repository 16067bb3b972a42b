//! The admin harness: a real admin server (API + provisioning worker) on `127.0.0.1:0` over a
//! real catalog on PostgreSQL or SQLite, driven with reqwest.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tenantgate_catalog::{Catalog, TokenScope};
use tenantgate_config::{Config, RawConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{tenant_migrations_dir, wait_until, Engine, TestCatalog};

/// The bootstrap admin token of every harness (scope `write`, actor `bootstrap`).
pub const BOOTSTRAP: &str = "bootstrap-token-for-tests-0123456789";

/// An admin server over a test catalog: configured by [`Harness::new`], serving after
/// [`Harness::start`].
pub struct Harness {
    /// The catalog's location (removes the databases when dropped).
    pub tc: TestCatalog,
    /// The test's own connection to the catalog.
    pub catalog: Catalog,
    /// The admin's configuration (job lease 3 s, 3 attempts, the repository's migrations).
    pub config: Arc<Config>,
    /// The server's base URL, once started.
    pub base: String,
    /// The client the request helpers use.
    pub client: reqwest::Client,
    /// Cancelled to stop the server (also on drop).
    pub shutdown: CancellationToken,
    /// The server task, once started.
    pub server: Option<JoinHandle<Result<(), tenantgate_admin::AdminError>>>,
    /// Keeps the temporary directories (migrations copies) alive.
    pub dirs: Vec<tempfile::TempDir>,
}

/// An admin API answer.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body as JSON, or as a JSON string when it is not JSON.
    pub body: Value,
}

impl Harness {
    /// A catalog on `backend` and a config tuned for tests, adjusted by `tweak`; no server yet.
    pub async fn new(backend: Engine, tweak: impl FnOnce(&mut RawConfig)) -> Harness {
        let tc = TestCatalog::on(backend).await;
        let catalog = tc.connect().await;
        let mut raw = RawConfig::default();
        raw.catalog.url = tc.url();
        raw.admin.bootstrap_token = Some(BOOTSTRAP.into());
        raw.admin.job_lease_secs = 3;
        raw.admin.job_max_attempts = 3;
        raw.tenant_migrations.dir = tenant_migrations_dir();
        tweak(&mut raw);
        let config = Arc::new(Config::try_from(raw).expect("test config is valid"));
        Harness {
            tc,
            catalog,
            config,
            base: String::new(),
            client: reqwest::Client::new(),
            shutdown: CancellationToken::new(),
            server: None,
            dirs: Vec::new(),
        }
    }

    /// Start `tenantgate_admin::serve` on an ephemeral port.
    pub async fn start(mut self) -> Harness {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.base = format!("http://{}", listener.local_addr().unwrap());
        self.server = Some(tokio::spawn(tenantgate_admin::serve(
            self.config.clone(),
            self.catalog.clone(),
            listener,
            self.shutdown.clone(),
        )));
        self
    }

    /// New harness with defaults, started.
    pub async fn started(backend: Engine) -> Harness {
        Harness::new(backend, |_| {}).await.start().await
    }

    /// The backend of the catalog and the shards.
    pub fn engine(&self) -> Engine {
        self.tc.engine()
    }

    /// `method path` with `token` as bearer and `body` as JSON.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request reaches the admin server");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Response { status, body }
    }

    /// GET `path` with the bootstrap token.
    pub async fn get(&self, path: &str) -> Response {
        self.call("GET", path, Some(BOOTSTRAP), None).await
    }

    /// POST `body` to `path` with the bootstrap token.
    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.call("POST", path, Some(BOOTSTRAP), Some(body)).await
    }

    /// PATCH `path` with `body` and the bootstrap token.
    pub async fn patch(&self, path: &str, body: Value) -> Response {
        self.call("PATCH", path, Some(BOOTSTRAP), Some(body)).await
    }

    /// DELETE `path` with the bootstrap token.
    pub async fn delete(&self, path: &str) -> Response {
        self.call("DELETE", path, Some(BOOTSTRAP), None).await
    }

    /// Create shard `name` on the test backend (no app upstream listens: the API does not care).
    pub async fn shard(&self, name: &str) {
        self.shard_at(name, &self.tc.shard_database_url(name)).await
    }

    /// Create shard `name` with its tenant databases at `database_url` (e.g. a
    /// [`crate::pg_server::PgServer`]).
    pub async fn shard_at(&self, name: &str, database_url: &str) {
        let r = self
            .post(
                "/v1/shards",
                json!({ "name": name, "app_upstreams": ["127.0.0.1:9"], "database_url": database_url }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }

    /// Create a tenant and return (tenant id, job id).
    pub async fn tenant(&self, slug: &str, shard: Option<&str>) -> (String, String) {
        let mut body = json!({ "slug": slug, "name": format!("{slug} Inc"), "domains": [format!("{slug}.example.com")] });
        if let Some(s) = shard {
            body["shard"] = json!(s);
        }
        let r = self.post("/v1/tenants", body).await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        (
            r.body["tenant"]["id"].as_str().unwrap().to_string(),
            r.body["job_id"].as_str().unwrap().to_string(),
        )
    }

    /// Wait until tenant `id` has `status`; returns the tenant JSON.
    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        wait_until(
            &format!("tenant {id} to be {status}"),
            Duration::from_secs(20),
            || async {
                let r = self.get(&format!("/v1/tenants/{id}")).await;
                (r.body["status"] == status).then_some(r.body)
            },
        )
        .await
    }

    /// Wait until job `id` has `status`; returns the job JSON.
    pub async fn wait_job(&self, id: &str, status: &str) -> Value {
        wait_until(
            &format!("job {id} to be {status}"),
            Duration::from_secs(20),
            || async {
                let r = self.get(&format!("/v1/jobs/{id}")).await;
                (r.body["status"] == status).then_some(r.body)
            },
        )
        .await
    }

    /// A new admin token with `scope`.
    pub async fn token(&self, scope: TokenScope) -> String {
        self.tenant_token(scope, &[]).await
    }

    /// A new admin token with `scope` restricted to `tenants` (ids or slugs; none: the fleet).
    pub async fn tenant_token(&self, scope: TokenScope, tenants: &[&str]) -> String {
        let tenants: Vec<String> = tenants.iter().map(|t| t.to_string()).collect();
        tenantgate_admin::tokens::create(&self.catalog, scope, "test", None, &tenants)
            .await
            .unwrap()
    }

    /// Stop the server; panics unless it returns within 2 s.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(2), server)
                .await
                .expect("serve returns within 2 s of shutdown")
                .unwrap()
                .unwrap();
        }
    }

    /// The PostgreSQL server URL of the shards (PostgreSQL backend only).
    pub fn pg_server(&self) -> String {
        crate::server_url()
    }

    /// True when tenant `id`'s database exists on its shard.
    pub async fn database_exists(&self, id: &str) -> bool {
        let tenant = self.catalog.tenant(id).await.unwrap().unwrap();
        let shard = self.catalog.shard(&tenant.shard).await.unwrap().unwrap();
        match self.engine() {
            Engine::Sqlite => {
                tenantgate_catalog::tenant_db::sqlite_file(&shard.database_url, &tenant.db_name)
                    .exists()
            }
            Engine::Postgres => {
                let mut conn = pg(&self.pg_server()).await;
                count(
                    &mut conn,
                    "SELECT COUNT(*) FROM pg_database WHERE datname = $1",
                    &tenant.db_name,
                )
                .await
                    == 1
            }
        }
    }

    /// A pool on tenant `id`'s own database, with its own login.
    pub async fn tenant_pool(&self, id: &str) -> sqlx::AnyPool {
        let tenant = self.catalog.tenant(id).await.unwrap().unwrap();
        let shard = self.catalog.shard(&tenant.shard).await.unwrap().unwrap();
        let target = tenantgate_catalog::tenant_db::TenantDbTarget::resolve(
            &shard,
            &tenant,
            &self.config.security.credential_key,
        )
        .unwrap();
        tenantgate_catalog::db::connect(&target.primary, 1)
            .await
            .unwrap()
    }

    /// The route epoch tenant `id`'s current database records (`tenantgate_epoch`), `None`
    /// when it records none.
    pub async fn recorded_epoch(&self, id: &str) -> Option<i64> {
        let pool = self.tenant_pool(id).await;
        let epoch = sqlx::query_scalar::<_, i64>("SELECT epoch FROM tenantgate_epoch WHERE id = 1")
            .fetch_optional(&pool)
            .await
            .unwrap();
        pool.close().await;
        epoch
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A connection to the PostgreSQL server or database at `url`.
pub async fn pg(url: &str) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(url).await.unwrap()
}

/// The `COUNT(*)` that `sql` (with one text parameter, `bind`) returns.
pub async fn count(conn: &mut sqlx::PgConnection, sql: &str, bind: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(conn)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

/// Field names of a 422 answer.
pub fn fields(r: &Response) -> Vec<String> {
    assert_eq!(r.status, 422, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "validation_failed");
    r.body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_string())
        .collect()
}

/// Tenant migrations for `backend` in a temporary directory: a copy of the repository's first
/// one (`0001_rbac_and_items.sql`) plus `file` holding `sql`, e.g. a broken or slow step.
/// The copy lives in `<dir>/<backend>/`.
pub fn migrations_plus(backend: Engine, file: &str, sql: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sub = backend.dir_name();
    std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    let real = tenant_migrations_dir()
        .join(sub)
        .join("0001_rbac_and_items.sql");
    std::fs::copy(&real, dir.path().join(sub).join("0001_rbac_and_items.sql")).unwrap();
    std::fs::write(dir.path().join(sub).join(file), sql).unwrap();
    dir
}
