//! Backups and restores through the real binary (`tenantgate dev`), on SQLite and PostgreSQL:
//! write items, back up, write more and delete some, restore in place and get exactly the
//! backed-up state; the stored object holds no plaintext and Debian's `age` CLI decrypts it with
//! the dev identity; a tampered object is refused with a clear error while the tenant keeps
//! serving; a restore as copy makes a new tenant; the CLI lists and verifies.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{binary, wait_until, DevProcess};
use tenantgate_config::Config;

/// The admin API and the edge of a running demo.
struct Demo {
    client: reqwest::Client,
    admin: String,
    edge: String,
    token: String,
}

impl Demo {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.admin))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Wait for job `id` to end; returns it.
    async fn job(&self, id: &str) -> Value {
        wait_until(
            &format!("job {id} to end"),
            Duration::from_secs(60),
            || async {
                let (_, job) = self.get(&format!("/v1/jobs/{id}")).await;
                matches!(job["status"].as_str(), Some("succeeded" | "failed")).then_some(job)
            },
        )
        .await
    }

    /// Back up `slug` and wait until the backup completed; returns it.
    async fn backup(&self, slug: &str) -> Value {
        let (status, body) = self
            .post(&format!("/v1/tenants/{slug}/backups"), json!({}))
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["backup"]["status"], "queued", "{body}");
        assert_eq!(body["backup"]["kind"], "manual", "{body}");
        let job = self.job(body["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{job}");
        let (status, backup) = self
            .get(&format!(
                "/v1/backups/{}",
                body["backup"]["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(status, 200, "{backup}");
        assert_eq!(backup["status"], "completed", "{backup}");
        backup
    }

    /// Item titles of `host` through the edge, sorted.
    async fn titles(&self, host: &str, user: &str) -> Vec<String> {
        self.try_titles(host, user).await.expect("the items (200)")
    }

    /// Item titles of `host` through the edge, sorted; `None` unless the answer is 200 (the
    /// edge may still refuse for a moment after a restore, until the change reaches it).
    async fn try_titles(&self, host: &str, user: &str) -> Option<Vec<String>> {
        let r = self
            .client
            .get(format!("{}/api/items?limit=100", self.edge))
            .header("host", host)
            .bearer_auth(user)
            .send()
            .await
            .unwrap();
        if r.status() != 200 {
            return None;
        }
        let body: Value = r.json().await.unwrap();
        let mut titles: Vec<String> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["title"].as_str().unwrap().to_string())
            .collect();
        titles.sort();
        Some(titles)
    }

    async fn add_item(&self, host: &str, user: &str, title: &str) -> String {
        let r = self
            .client
            .post(format!("{}/api/items", self.edge))
            .header("host", host)
            .bearer_auth(user)
            .json(&json!({"title": title, "body": format!("body of {title}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let item: Value = r.json().await.unwrap();
        item["id"].as_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_backup_restore_in_place_copy_and_tamper() {
    let dir = tempfile::tempdir().unwrap();
    backup_and_restore(dir.path(), &[], false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_backup_restore_in_place_copy_and_tamper() {
    let db = tenantgate_testkit::PgTestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    backup_and_restore(dir.path(), &["--database-url", &db.url], true).await;
}

async fn backup_and_restore(data_dir: &Path, extra: &[&str], postgres: bool) {
    let dev = DevProcess::start(binary(), data_dir, extra);
    let demo = Demo {
        client: reqwest::Client::new(),
        admin: dev.admin(),
        edge: dev.edge(),
        token: dev.admin_token.clone(),
    };
    let config_path = data_dir.join("tenantgate.toml");
    let host = "acme.localhost";
    let (status, minted) = demo
        .post(
            "/v1/tenants/acme/tokens",
            json!({"email": "owner@acme.test", "role": "owner"}),
        )
        .await;
    assert_eq!(status, 201, "{minted}");
    let user = minted["token"].as_str().unwrap().to_string();

    // Items, then a backup of them.
    let alpha = demo.add_item(host, &user, "alpha-plaintext-marker").await;
    demo.add_item(host, &user, "beta-plaintext-marker").await;
    let before = demo.titles(host, &user).await;
    let backup = demo.backup("acme").await;
    let backup_id = backup["id"].as_str().unwrap().to_string();
    assert_eq!(
        backup["schema_version"],
        tenantgate_testkit::latest_tenant_migration(),
        "{backup}"
    );
    assert_eq!(
        backup["format"],
        if postgres { "pg_custom" } else { "sqlite" }
    );

    // The stored object: the recorded size and SHA-256, no plaintext, and Debian's age CLI
    // decrypts it with the dev identity into a pg_dump archive or a SQLite database.
    let object = data_dir
        .join("backups")
        .join(backup["location"].as_str().unwrap());
    let bytes = std::fs::read(&object).unwrap();
    assert_eq!(bytes.len() as i64, backup["size_bytes"].as_i64().unwrap());
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sha, backup["sha256"].as_str().unwrap());
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    for marker in [&b"plaintext-marker"[..], b"CREATE TABLE", b"SQLite format"] {
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "the stored object contains {:?}",
            String::from_utf8_lossy(marker)
        );
    }
    let plain = data_dir.join("decrypted");
    let decrypted = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(data_dir.join("backup-identity.txt"))
        .arg("-o")
        .arg(&plain)
        .arg(&object)
        .status()
        .expect("the age CLI (scripts/ensure-deps.sh --test installs it)");
    assert!(decrypted.success());
    let plain_bytes = std::fs::read(&plain).unwrap();
    if postgres {
        assert!(
            plain_bytes.starts_with(b"PGDMP"),
            "a pg_dump custom archive"
        );
        let listed = Command::new("pg_restore")
            .arg("--list")
            .arg(&plain)
            .output()
            .unwrap();
        assert!(listed.status.success());
        assert!(String::from_utf8_lossy(&listed.stdout).contains("TABLE public items"));
    } else {
        assert!(plain_bytes.starts_with(b"SQLite format 3\0"));
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", plain.display()))
            .await
            .unwrap();
        let mut titles: Vec<String> = sqlx::query_scalar("SELECT title FROM items")
            .fetch_all(&pool)
            .await
            .unwrap();
        titles.sort();
        assert_eq!(titles, before);
        pool.close().await;
    }
    std::fs::remove_file(&plain).unwrap();

    // More writes and a delete, then restore in place: exactly the backed-up state.
    demo.add_item(host, &user, "gamma-after-backup").await;
    let r = demo
        .client
        .delete(format!("{}/api/items/{alpha}", demo.edge))
        .header("host", host)
        .bearer_auth(&user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_ne!(demo.titles(host, &user).await, before);
    let (_, acme) = demo.get("/v1/tenants/acme").await;
    let (status, started) = demo
        .post(
            "/v1/tenants/acme/restore",
            json!({"backup_id": backup_id, "mode": "in_place"}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["tenant_id"], acme["id"]);
    let job = demo.job(started["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, restored) = demo.get("/v1/tenants/acme").await;
    assert_eq!(restored["status"], "active", "{restored}");
    assert!(restored["epoch"].as_i64() > acme["epoch"].as_i64());
    let titles = wait_until("the restored items", Duration::from_secs(10), || async {
        let titles = demo.try_titles(host, &user).await?;
        (titles == before).then_some(titles)
    })
    .await;
    assert_eq!(titles, before);
    let (_, audit) = demo.get("/v1/audit?tenant=acme&limit=50").await;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "backup.create",
        "backup.complete",
        "tenant.restore",
        "tenant.restore_complete",
    ] {
        assert!(
            actions.contains(&action),
            "{action} missing from {actions:?}"
        );
    }

    // A tampered object is refused before anything changes; the tenant keeps serving.
    let second = demo.backup("acme").await;
    let object = data_dir
        .join("backups")
        .join(second["location"].as_str().unwrap());
    let mut bytes = std::fs::read(&object).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&object, &bytes).unwrap();
    let (status, started) = demo
        .post(
            "/v1/tenants/acme/restore",
            json!({"backup_id": second["id"], "mode": "in_place"}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let job = demo.job(started["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["attempts"], 1, "a mismatch is not retried: {job}");
    let error = job["error"].as_str().unwrap();
    assert!(
        error.contains("does not match the catalog") && error.contains("refusing to restore"),
        "{error}"
    );
    let (_, after) = demo.get("/v1/tenants/acme").await;
    assert_eq!(after["status"], "active", "{after}");
    assert_eq!(after["schema_version"], restored["schema_version"]);
    wait_until("acme serving again", Duration::from_secs(10), || async {
        let r = demo
            .client
            .get(format!("{}/api/items", demo.edge))
            .header("host", host)
            .bearer_auth(&user)
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    assert_eq!(demo.titles(host, &user).await, before);

    // The CLI: list shows both backups and the one the restore in place took first of the
    // database it replaced; verify accepts the first and refuses the tampered one.
    let cli = |args: &[&str]| {
        Command::new(support::binary())
            .arg("backup")
            .args(args)
            .arg("--config")
            .arg(&config_path)
            .args(["--tenant", "acme"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap()
    };
    let listed = cli(&["list"]);
    assert!(listed.status.success(), "{listed:?}");
    let lines: Vec<Value> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["id"], second["id"], "newest first");
    assert_eq!(lines[1]["kind"], "pre_restore", "{lines:?}");
    assert_eq!(lines[1]["status"], "completed", "{lines:?}");
    assert_eq!(lines[2]["id"], backup_id.as_str());
    let verified = cli(&["verify", "--backup", &backup_id]);
    assert!(verified.status.success(), "{verified:?}");
    let verified: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(verified["sha256"], backup["sha256"]);
    assert!(verified["entries"].as_u64().unwrap() > 0, "{verified}");
    let refused = cli(&["verify", "--backup", second["id"].as_str().unwrap()]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not match the catalog"),
        "{refused:?}"
    );

    // A restore as copy: a new tenant without domains, holding the backed-up items.
    let (status, started) = demo
        .post(
            "/v1/tenants/acme/restore",
            json!({"backup_id": backup_id, "mode": "copy", "slug": "acme-copy"}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let job = demo.job(started["job_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, copy) = demo.get("/v1/tenants/acme-copy").await;
    assert_eq!(copy["status"], "active", "{copy}");
    assert_eq!(copy["domains"], json!([]));
    assert_eq!(
        copy["schema_version"],
        tenantgate_testkit::latest_tenant_migration()
    );
    let config = Config::load(&config_path).unwrap();
    let catalog = tenantgate_catalog::Catalog::connect(&config.catalog.url, 1)
        .await
        .unwrap();
    let tenant = catalog.tenant("acme-copy").await.unwrap().unwrap();
    let shard = catalog.shard(&tenant.shard).await.unwrap().unwrap();
    let target = tenantgate_catalog::tenant_db::TenantDbTarget::resolve(
        &shard,
        &tenant,
        &config.security.credential_key,
    )
    .unwrap();
    let pool = tenantgate_catalog::db::connect(&target.primary, 1)
        .await
        .unwrap();
    let mut titles: Vec<String> = sqlx::query_scalar("SELECT title FROM items")
        .fetch_all(&pool)
        .await
        .unwrap();
    titles.sort();
    assert_eq!(titles, before);
    pool.close().await;
    catalog.close().await;

    // Unknown backups and bad requests are named.
    let (status, body) = demo
        .post(
            "/v1/tenants/acme/restore",
            json!({"backup_id": "nope", "mode": "sideways"}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["backup_id", "mode"]);
    let (status, _) = demo
        .get(&format!("/v1/backups/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(status, 404);
}

/// While a restore in place runs, the edge answers 503 tenant_restoring with Retry-After, and
/// serves the restored database once it is swapped in. The restore is held at its final
/// catalog write by holding the catalog's write lock (PostgreSQL catalog).
#[tokio::test(flavor = "multi_thread")]
async fn postgres_edge_answers_tenant_restoring_while_a_restore_runs() {
    let db = tenantgate_testkit::PgTestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(binary(), dir.path(), &["--database-url", &db.url]);
    let demo = Demo {
        client: reqwest::Client::new(),
        admin: dev.admin(),
        edge: dev.edge(),
        token: dev.admin_token.clone(),
    };
    let backup = demo.backup("globex").await;
    let catalog = sqlx::PgPool::connect(&db.url).await.unwrap();
    // The job is fast: if it finished before the lock was taken, try again (bounded).
    let mut held = None;
    for _ in 0..5 {
        let (status, started) = demo
            .post(
                "/v1/tenants/globex/restore",
                json!({"backup_id": backup["id"], "mode": "in_place"}),
            )
            .await;
        assert_eq!(status, 202, "{started}");
        let mut lock = catalog.begin().await.unwrap();
        sqlx::query("UPDATE catalog_lock SET writes = writes + 1 WHERE id = 1")
            .execute(&mut *lock)
            .await
            .unwrap();
        let status: String = sqlx::query_scalar("SELECT status FROM tenants WHERE slug = 'globex'")
            .fetch_one(&mut *lock)
            .await
            .unwrap();
        if status == "restoring" {
            held = Some((lock, started["job_id"].as_str().unwrap().to_string()));
            break;
        }
        lock.rollback().await.unwrap();
    }
    let (lock, job) = held.expect("took the catalog lock while the restore ran");
    let (status, retry_after, code) = wait_until(
        "the edge to answer tenant_restoring",
        Duration::from_secs(10),
        || async {
            let r = demo
                .client
                .get(format!("{}/whoami", demo.edge))
                .header("host", "globex.localhost")
                .send()
                .await
                .ok()?;
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let code = body["error"]["code"].as_str().map(str::to_string);
            (status == 503).then_some((status, retry, code))
        },
    )
    .await;
    assert_eq!(
        (status, retry_after.as_deref(), code.as_deref()),
        (503, Some("5"), Some("tenant_restoring"))
    );
    let (_, resolved) = demo.get("/v1/resolve?host=globex.localhost").await;
    assert_eq!(resolved["edge"]["code"], "tenant_restoring", "{resolved}");
    lock.rollback().await.unwrap();
    let job = demo.job(&job).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    wait_until("globex served again", Duration::from_secs(10), || async {
        let r = demo
            .client
            .get(format!("{}/whoami", demo.edge))
            .header("host", "globex.localhost")
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    catalog.close().await;
}
