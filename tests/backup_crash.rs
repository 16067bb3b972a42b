//! Crash safety of backups with the real binary: SIGKILL the admin process while its worker is
//! in the middle of a backup, and no backup is ever marked completed; started again, the retry
//! completes it. Also: while a restore in place runs, the edge answers 503 tenant_restoring.
//!
//! The backup is held mid-way without any test hook: the test holds an ACCESS EXCLUSIVE lock on
//! the tenant's `items` table, and `pg_dump` waits for it (it locks every table it dumps) after
//! the job has marked the backup running.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, Executor};
use support::ComponentProcess;
use tenantgate_config::RawConfig;
use tenantgate_testkit::{server_url, PgTestDb};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
const TOKEN: &str = "backup-crash-admin-token";

/// Run `tenantgate admin` on `config` (port 0): the process and its base URL.
fn start_admin(config: &Path) -> (ComponentProcess, String) {
    let args = [
        OsStr::new("admin"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    let admin = ComponentProcess::start(support::binary(), &args, "admin API listening");
    let base = format!("http://{}", admin.addr("listen"));
    (admin, base)
}

/// An age identity made with Debian's `age-keygen`: (identity file, public key).
fn age_keygen(dir: &Path) -> (std::path::PathBuf, String) {
    let file = dir.join("identity.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&file)
        .output()
        .expect("age-keygen (scripts/ensure-deps.sh --test installs age)");
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&file).unwrap();
    let public = text
        .lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .expect("age-keygen writes the public key")
        .to_string();
    (file, public)
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    /// `method path` as JSON; `None` while the admin is not answering.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Option<(u16, Value)> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.ok()?;
        let status = r.status().as_u16();
        Some((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn get(&self, path: &str) -> Option<Value> {
        self.call(reqwest::Method::GET, path, None)
            .await
            .map(|(_, v)| v)
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body))
            .await
            .expect("admin answers")
    }

    async fn ready(&self) {
        support::wait_until("admin ready", Duration::from_secs(30), || async {
            let r = self
                .client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_backup_never_completes_it_and_the_retry_does() {
    let db = PgTestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (identity, recipient) = age_keygen(dir.path());
    let mut raw = RawConfig::default();
    raw.catalog.url = db.url.clone();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.admin.bootstrap_token = Some(TOKEN.into());
    raw.admin.job_lease_secs = 2;
    raw.security.signing_keys.insert("k".into(), KEY.into());
    raw.security.credential_key = Some(KEY.into());
    raw.tenant_migrations.dir = tenantgate_testkit::tenant_migrations_dir();
    raw.backups.store = format!("file://{}", dir.path().join("backups").display());
    raw.backups.recipient = Some(recipient);
    raw.backups.identity_file = Some(identity);
    let config = dir.path().join("admin.toml");
    std::fs::write(&config, raw.to_toml()).unwrap();

    let (mut admin, base) = start_admin(&config);
    let mut api = Api {
        client: reqwest::Client::new(),
        base,
    };
    api.ready().await;
    let (status, body) = api
        .post(
            "/v1/shards",
            json!({"name": "pg", "app_upstreams": ["127.0.0.1:9"], "database_url": server_url()}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .post(
            "/v1/tenants",
            json!({"slug": "held", "name": "Held", "domains": ["held.test"]}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let tenant = support::wait_until("the tenant active", Duration::from_secs(60), || async {
        let t = api.get("/v1/tenants/held").await?;
        (t["status"] == "active").then_some(t)
    })
    .await;

    // Hold the dump: an exclusive lock on a table pg_dump must read.
    let tenant_db = tenantgate_catalog::tenant_db::postgres_url(
        &server_url(),
        tenant["id"]
            .as_str()
            .map(|id| format!("t_{}", id.replace('-', "")))
            .as_deref()
            .unwrap(),
        None,
    )
    .unwrap();
    let mut holder = sqlx::PgConnection::connect(&tenant_db).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("LOCK TABLE items IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let (status, body) = api.post("/v1/tenants/held/backups", json!({})).await;
    assert_eq!(status, 202, "{body}");
    let backup = body["backup"]["id"].as_str().unwrap().to_string();
    let job = body["job_id"].as_str().unwrap().to_string();
    let catalog = sqlx::PgPool::connect(&db.url).await.unwrap();
    // Running, and pg_dump waiting for the lock (seen in pg_locks as an ungranted request).
    support::wait_until(
        "pg_dump waiting on the lock",
        Duration::from_secs(30),
        || {
            let catalog = &catalog;
            let (backup, db_name) = (&backup, tenant_db.rsplit('/').next().unwrap().to_string());
            async move {
                let status: String =
                    sqlx::query_scalar("SELECT status FROM backups WHERE id = $1::uuid")
                        .bind(backup)
                        .fetch_one(catalog)
                        .await
                        .ok()?;
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                 WHERE NOT l.granted AND d.datname = $1",
                )
                .bind(db_name)
                .fetch_one(catalog)
                .await
                .ok()?;
                (status == "running" && waiting > 0).then_some(())
            }
        },
    )
    .await;
    admin.child.kill().unwrap();
    admin.child.wait().unwrap();

    let status: String = sqlx::query_scalar("SELECT status FROM backups WHERE id = $1::uuid")
        .bind(&backup)
        .fetch_one(&catalog)
        .await
        .unwrap();
    assert_eq!(status, "running", "a killed backup is never completed");
    let completed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM backups WHERE status = 'completed'")
            .fetch_one(&catalog)
            .await
            .unwrap();
    assert_eq!(completed, 0);

    // Let go of the lock and start again: the job is claimed again once its lease ran out.
    holder.execute("ROLLBACK").await.unwrap();
    let (_admin, base) = start_admin(&config);
    api.base = base;
    api.ready().await;
    let job = support::wait_until(
        "the backup job to succeed",
        Duration::from_secs(60),
        || async {
            let j = api.get(&format!("/v1/jobs/{job}")).await?;
            (j["status"] == "succeeded").then_some(j)
        },
    )
    .await;
    assert!(job["attempts"].as_i64().unwrap() >= 2, "{job}");
    let done = api.get(&format!("/v1/backups/{backup}")).await.unwrap();
    assert_eq!(done["status"], "completed", "{done}");
    let object = dir
        .path()
        .join("backups")
        .join(done["location"].as_str().unwrap());
    assert_eq!(
        std::fs::metadata(&object).unwrap().len() as i64,
        done["size_bytes"].as_i64().unwrap()
    );
    let metrics = api
        .client
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tenantgate_backups_total{result=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("tenantgate_backup_duration_seconds_count 1"));
}
