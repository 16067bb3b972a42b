//! Online moves across PostgreSQL servers with the real binary: an edge, an admin and one app
//! per shard as processes; the source shard on the kit's private server (logical WAL), the
//! target on the test server.
//!
//! - Under steady reads and writes through the edge on the moving tenant and on another one,
//!   the move completes; no request of either fails (the moving tenant's are held, then
//!   served by the new shard), and every acknowledged write is on the new copy exactly once.
//! - The admin is SIGKILLed in each phase (`copy`, `catch_up`, `hold`, `flip`, `cleanup`); a
//!   new admin resumes the job, which completes or rolls back, and there is never more than
//!   one writable copy. The killed admin (a debug build) is started with
//!   `TENANTGATE_TEST_MOVE_STALL=<phase>`, which stops the move at a fixed point of that phase,
//!   so every phase is reached for certain, even the ones that last milliseconds.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection;
use support::{wait_until, ComponentProcess};
use tenantgate_config::RawConfig;
use tenantgate_testkit::pg_server::PgServer;
use tenantgate_testkit::{server_url, tenant_migrations_dir, PgTestDb};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
const TOKEN: &str = "moves-test-admin-token";

/// The processes and the catalog of one test.
struct Fleet {
    _catalog: PgTestDb,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    admin: Option<ComponentProcess>,
    admin_base: String,
    client: reqwest::Client,
}

fn start(binary_args: &[&OsStr], env: &[(&str, &str)], message: &str) -> ComponentProcess {
    ComponentProcess::start_with_env(support::binary(), binary_args, env, message)
}

impl Fleet {
    async fn new() -> Fleet {
        let catalog = PgTestDb::create().await;
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig::default();
        raw.catalog.url = catalog.url.clone();
        raw.catalog.poll_interval_ms = 100;
        raw.admin.listen = "127.0.0.1:0".into();
        raw.admin.bootstrap_token = Some(TOKEN.into());
        raw.admin.job_lease_secs = 2;
        raw.edge.listen = "127.0.0.1:0".into();
        raw.edge.metrics_listen = "127.0.0.1:0".into();
        raw.edge.moving_hold_ms = 10_000;
        // The load is a few clients in tight loops: no rate limit may refuse it.
        raw.edge.default_rps = 100_000;
        raw.edge.default_burst = 100_000;
        raw.app.listen = "127.0.0.1:0".into();
        raw.security.signing_keys.insert("k".into(), KEY.into());
        raw.security.credential_key = Some(KEY.into());
        raw.tenant_migrations.dir = tenant_migrations_dir();
        let config = dir.path().join("tenantgate.toml");
        std::fs::write(&config, raw.to_toml()).unwrap();
        let mut fleet = Fleet {
            _catalog: catalog,
            dir,
            config,
            admin: None,
            admin_base: String::new(),
            client: reqwest::Client::new(),
        };
        fleet.start_admin().await;
        fleet
    }

    fn args<'a>(&'a self, component: &'a str) -> [&'a OsStr; 3] {
        [
            OsStr::new(component),
            OsStr::new("--config"),
            self.config.as_os_str(),
        ]
    }

    async fn start_admin(&mut self) {
        self.start_admin_with(&[]).await
    }

    async fn start_admin_with(&mut self, env: &[(&str, &str)]) {
        let admin = start(&self.args("admin"), env, "admin API listening");
        self.admin_base = format!("http://{}", admin.addr("listen"));
        self.admin = Some(admin);
        let (client, base) = (&self.client, &self.admin_base);
        wait_until("admin ready", Duration::from_secs(30), || async move {
            let r = client.get(format!("{base}/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    fn kill_admin(&mut self) {
        if let Some(mut admin) = self.admin.take() {
            admin.child.kill().unwrap();
            admin.child.wait().unwrap();
        }
    }

    /// An app process for `shard`; its address.
    fn app(&self, shard: &str) -> (ComponentProcess, String) {
        let app = start(
            &self.args("app"),
            &[("TENANTGATE__APP__SHARD", shard)],
            "app listening",
        );
        let addr = app.addr("listen").to_string();
        (app, addr)
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.admin_base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn shard(&self, name: &str, app: &str, database_url: &str) {
        let (status, body) = self
            .post(
                "/v1/shards",
                json!({"name": name, "app_upstreams": [app], "database_url": database_url}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }

    /// Create tenant `slug` on `shard`, wait until active; returns a user token for it.
    async fn tenant(&self, slug: &str, shard: &str) -> String {
        let (status, body) = self
            .post(
                "/v1/tenants",
                json!({"slug": slug, "name": slug, "domains": [format!("{slug}.test")], "shard": shard}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        wait_until(
            &format!("{slug} active"),
            Duration::from_secs(30),
            || async {
                let (_, t) = self.get(&format!("/v1/tenants/{slug}")).await;
                (t["status"] == "active").then_some(())
            },
        )
        .await;
        let (status, minted) = self
            .post(
                &format!("/v1/tenants/{slug}/tokens"),
                json!({"email": format!("owner@{slug}.test"), "role": "owner"}),
            )
            .await;
        assert_eq!(status, 201, "{minted}");
        minted["token"].as_str().unwrap().to_string()
    }

    /// Wait until job `id` has ended (through admin restarts); returns it.
    async fn job_end(&self, id: &str, within: Duration) -> Value {
        wait_until(&format!("job {id} to end"), within, || async {
            let (_, job) = self.get(&format!("/v1/jobs/{id}")).await;
            matches!(job["status"].as_str(), Some("succeeded" | "failed")).then_some(job)
        })
        .await
    }

    /// The tenant's database URL with the server's administrative login.
    async fn tenant_db(&self, slug: &str, server: &str) -> String {
        let (_, t) = self.get(&format!("/v1/tenants/{slug}")).await;
        let id = uuid::Uuid::parse_str(t["id"].as_str().unwrap()).unwrap();
        tenantgate_catalog::tenant_db::postgres_url(
            server,
            &tenantgate_catalog::tenant_db::db_name(id),
            None,
        )
        .unwrap()
    }
}

/// What the clients of one tenant saw.
#[derive(Default)]
struct Seen {
    failures: Vec<String>,
    written: Vec<String>,
    requests: usize,
}

/// Reads and writes through the edge for `host` until `stop`.
async fn load(
    edge: String,
    host: String,
    token: String,
    who: usize,
    stop: Arc<AtomicBool>,
) -> Seen {
    let client = reqwest::Client::new();
    let mut seen = Seen::default();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let write = n % 2 == 0;
        let request = if write {
            client
                .post(format!("{edge}/api/items"))
                .json(&json!({"title": format!("{host}-{who}-{n}"), "body": ""}))
        } else {
            client.get(format!("{edge}/api/items?limit=5"))
        };
        seen.requests += 1;
        match request
            .header("host", &host)
            .bearer_auth(&token)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                if write {
                    seen.written.push(format!("{host}-{who}-{n}"));
                }
            }
            Ok(r) => {
                let status = r.status();
                seen.failures
                    .push(format!("{status} {}", r.text().await.unwrap_or_default()));
            }
            Err(e) => seen.failures.push(e.to_string()),
        }
    }
    seen
}

/// The item titles in a tenant database.
async fn titles(url: &str) -> Vec<String> {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let titles = sqlx::query_scalar("SELECT title FROM items")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    titles
}

/// Whether the tenant database at `url` takes writes (`None`: it does not exist).
async fn writable(url: &str) -> Option<bool> {
    let mut conn = sqlx::PgConnection::connect(url).await.ok()?;
    let read_only: String = sqlx::query_scalar("SHOW default_transaction_read_only")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    Some(read_only == "off")
}

fn shared_source() -> &'static PgServer {
    PgServer::shared()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_move_under_load_fails_no_request_and_loses_no_write() {
    let source = tokio::task::spawn_blocking(shared_source).await.unwrap();
    let fleet = Fleet::new().await;
    let (_app_src, src_addr) = fleet.app("src");
    let (_app_dst, dst_addr) = fleet.app("dst");
    fleet.shard("src", &src_addr, &source.url()).await;
    fleet.shard("dst", &dst_addr, &server_url()).await;
    let mover = fleet.tenant("mover", "src").await;
    let other = fleet.tenant("other", "dst").await;
    let edge = start(&fleet.args("edge"), &[], "edge running");
    let edge_base = format!("http://{}", edge.addr("listen"));
    let client = reqwest::Client::new();
    wait_until(
        "the edge to serve mover",
        Duration::from_secs(30),
        || async {
            let r = client
                .get(format!("{edge_base}/api/items"))
                .header("host", "mover.test")
                .bearer_auth(&mover)
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    let hosts = [
        ("mover.test", &mover),
        ("mover.test", &mover),
        ("other.test", &other),
    ];
    for (who, (host, token)) in hosts.into_iter().enumerate() {
        clients.push(tokio::spawn(load(
            edge_base.clone(),
            host.to_string(),
            token.clone(),
            who,
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // load before the move starts
    let (status, started) = fleet
        .post("/v1/tenants/mover/move", json!({"shard": "dst"}))
        .await;
    assert_eq!(status, 202, "{started}");
    let job = fleet
        .job_end(started["job_id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // load after the flip
    stop.store(true, Ordering::Relaxed);
    let mut seen = Vec::new();
    for c in clients {
        seen.push(c.await.unwrap());
    }
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["progress"]["phase"], "done", "{job}");
    eprintln!("move progress: {}", job["progress"]);
    for s in &seen {
        assert!(s.requests > 10, "the load ran");
        assert!(s.failures.is_empty(), "failed requests: {:?}", s.failures);
    }
    let (_, t) = fleet.get("/v1/tenants/mover").await;
    assert_eq!(t["shard"], "dst");

    // Every acknowledged write of the moving tenant is on the new copy, once.
    let on_target = titles(&fleet.tenant_db("mover", &server_url()).await).await;
    let mut unique = on_target.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), on_target.len(), "no write duplicated");
    for title in seen.iter().take(2).flat_map(|s| &s.written) {
        assert!(on_target.contains(title), "acknowledged write {title} lost");
    }
    // The old copy takes no writes.
    assert_eq!(
        writable(&fleet.tenant_db("mover", &source.url()).await).await,
        Some(false)
    );
    drop(edge);
    let _ = fleet.dir.path();
}

/// Kill the admin while the move stands still in `phase`, start a new one, and check the end.
async fn kill_in_phase(phase: &str) {
    let source = tokio::task::spawn_blocking(shared_source).await.unwrap();
    let mut fleet = Fleet::new().await;
    fleet.shard("src", "127.0.0.1:9", &source.url()).await;
    fleet.shard("dst", "127.0.0.1:9", &server_url()).await;
    fleet.tenant("victim", "src").await;
    let src_db = fleet.tenant_db("victim", &source.url()).await;
    let dst_db = fleet.tenant_db("victim", &server_url()).await;
    // Enough rows that the copy phase lasts a moment.
    let mut conn = sqlx::PgConnection::connect(&src_db).await.unwrap();
    sqlx::query(
        "INSERT INTO items (id, title, body, created_at, updated_at)
         SELECT 'i' || g, 'row ' || g, repeat('x', 200), 1, 1 FROM generate_series(1, 50000) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    // The admin that will be killed stops the move in `phase` and stays there.
    fleet.kill_admin();
    fleet
        .start_admin_with(&[("TENANTGATE_TEST_MOVE_STALL", phase)])
        .await;
    let (status, started) = fleet
        .post("/v1/tenants/victim/move", json!({"shard": "dst"}))
        .await;
    assert_eq!(status, 202, "{started}");
    let job_id = started["job_id"].as_str().unwrap().to_string();
    wait_until(
        &format!("phase {phase}"),
        Duration::from_secs(60),
        || async {
            let (_, job) = fleet.get(&format!("/v1/jobs/{job_id}")).await;
            assert!(
                matches!(job["status"].as_str(), Some("queued" | "running")),
                "the move stalls in {phase}: {job}"
            );
            // The hold reports its phase when it begins; it stalls once the target has
            // replayed the source's final position (`final_lsn` recorded).
            let at_stall = phase != "hold" || job["progress"]["final_lsn"].is_string();
            (job["progress"]["phase"] == phase && at_stall).then_some(())
        },
    )
    .await;
    fleet.kill_admin();
    // Dead in the middle: from the hold on, the source takes no writes (only the target may).
    let after_hold = matches!(phase, "hold" | "flip" | "cleanup");
    if after_hold {
        assert_eq!(writable(&src_db).await, Some(false), "killed in {phase}");
    } else {
        assert_eq!(writable(&src_db).await, Some(true), "killed in {phase}");
    }
    fleet.start_admin().await;
    let job = fleet.job_end(&job_id, Duration::from_secs(90)).await;
    eprintln!("killed in {phase}, then: {job}");
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, t) = fleet.get("/v1/tenants/victim").await;
    assert_eq!(t["status"], "active", "{t}");
    let (src, dst) = (writable(&src_db).await, writable(&dst_db).await);
    match t["shard"].as_str() {
        Some("dst") => {
            assert_eq!(job["progress"]["phase"], "done", "{job}");
            assert_eq!((src, dst), (Some(false), Some(true)));
            assert_eq!(titles(&dst_db).await.len(), 50_000);
        }
        Some("src") => {
            assert!(
                !matches!(phase, "flip" | "cleanup"),
                "a flipped move never goes back: {job}"
            );
            assert_eq!(job["progress"]["phase"], "rolled_back", "{job}");
            assert_eq!(src, Some(true));
            assert_eq!(dst, None, "the target copy is gone");
        }
        other => panic!("tenant on {other:?}"),
    }
    assert_eq!(titles(&src_db).await.len(), 50_000);
    fleet.kill_admin();
    let _ = Path::new(&fleet.config);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_killed_while_copying_the_move_resumes() {
    kill_in_phase("copy").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_killed_while_catching_up_the_move_resumes() {
    kill_in_phase("catch_up").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_killed_while_holding_the_move_resumes() {
    kill_in_phase("hold").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_killed_right_after_the_flip_resumes() {
    kill_in_phase("flip").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_killed_while_cleaning_up_the_move_resumes() {
    kill_in_phase("cleanup").await;
}
