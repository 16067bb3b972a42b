//! Backups in an S3-compatible store: the real admin binary against moto's S3 server (from
//! PyPI, which `scripts/ensure-deps.sh --test` installs), through `object_store`'s AWS client
//! with an endpoint and plain HTTP. A tenant database larger than one multipart part (8 MiB) is
//! backed up, changed, and restored in place from the bucket.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tenantgate_config::RawConfig;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
const TOKEN: &str = "backup-s3-admin-token";
const BUCKET: &str = "tg-backups";

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto's S3 server: `TENANTGATE_TEST_MOTO_SERVER`, the venv `scripts/ensure-deps.sh --test`
/// makes, or `moto_server` on the PATH.
fn moto_server() -> PathBuf {
    if let Ok(path) = std::env::var("TENANTGATE_TEST_MOTO_SERVER") {
        return path.into();
    }
    let venv = Path::new("/opt/tenantgate-test/moto/bin/moto_server");
    if venv.exists() {
        return venv.into();
    }
    PathBuf::from("moto_server")
}

fn age_keygen(dir: &Path) -> (PathBuf, String) {
    let file = dir.join("identity.txt");
    let out = Command::new("age-keygen")
        .arg("-o")
        .arg(&file)
        .output()
        .expect("age-keygen (scripts/ensure-deps.sh --test installs age)");
    assert!(out.status.success(), "{out:?}");
    let public = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("# public key: ").map(str::to_string))
        .unwrap();
    (file, public)
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Option<(u16, Value)> {
    let mut req = client.request(method, url).bearer_auth(TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_tenant_backed_up_to_s3_and_restored_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();

    // The S3 server and its bucket (moto does not check signatures, so a plain PUT makes it).
    // moto's server must be told its port (it cannot report one it picked): bind one, release it.
    let s3_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _moto = Running(
        Command::new(moto_server())
            .args(["-H", "127.0.0.1", "-p", &s3_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (scripts/ensure-deps.sh --test installs it)"),
    );
    let s3 = format!("http://127.0.0.1:{s3_port}");
    support::wait_until("moto's S3 server", Duration::from_secs(30), || async {
        let r = client.put(format!("{s3}/{BUCKET}")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;

    let (identity, recipient) = age_keygen(dir.path());
    let mut raw = RawConfig::default();
    raw.catalog.url = format!("sqlite://{}", dir.path().join("catalog.db").display());
    raw.admin.listen = "127.0.0.1:0".into();
    raw.admin.bootstrap_token = Some(TOKEN.into());
    raw.security.signing_keys.insert("k".into(), KEY.into());
    raw.security.credential_key = Some(KEY.into());
    raw.tenant_migrations.dir = tenantgate_testkit::tenant_migrations_dir();
    raw.backups.store = format!("s3://{BUCKET}/tenants/");
    raw.backups.endpoint = Some(s3.clone());
    raw.backups.recipient = Some(recipient);
    raw.backups.identity_file = Some(identity);
    let config = dir.path().join("admin.toml");
    std::fs::write(&config, raw.to_toml()).unwrap();
    let admin_process = support::ComponentProcess::start_with_env(
        support::binary(),
        &[
            std::ffi::OsStr::new("admin"),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
        ],
        "admin API listening",
    );
    let admin = format!("http://{}", admin_process.addr("listen"));
    let api = |method: reqwest::Method, path: &str, body: Option<Value>| {
        call(&client, method, format!("{admin}{path}"), body)
    };
    support::wait_until("admin ready", Duration::from_secs(30), || async {
        let r = client.get(format!("{admin}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let shard_dir = dir.path().join("shard");
    let (status, body) = api(
        reqwest::Method::POST,
        "/v1/shards",
        Some(json!({"name": "local", "app_upstreams": ["127.0.0.1:9"],
            "database_url": format!("sqlite://{}", shard_dir.display())})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, body) = api(
        reqwest::Method::POST,
        "/v1/tenants",
        Some(json!({"slug": "bulky", "name": "Bulky", "domains": ["bulky.test"]})),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{body}");
    let tenant = support::wait_until("the tenant active", Duration::from_secs(60), || async {
        let (_, t) = api(reqwest::Method::GET, "/v1/tenants/bulky", None).await?;
        (t["status"] == "active").then_some(t)
    })
    .await;

    // 12 MiB of incompressible rows: more than one 8 MiB part.
    let file = shard_dir.join(format!(
        "t_{}.db",
        tenant["id"].as_str().unwrap().replace('-', "")
    ));
    let tenant_url = format!("sqlite://{}", file.display());
    let pool = sqlx::SqlitePool::connect(&tenant_url).await.unwrap();
    sqlx::query("CREATE TABLE ballast (n INTEGER PRIMARY KEY, b BLOB NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    for n in 0..12 {
        sqlx::query("INSERT INTO ballast (n, b) VALUES ($1, randomblob(1048576))")
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
    }
    let digest_of = |pool: sqlx::SqlitePool| async move {
        let rows: Vec<Vec<u8>> = sqlx::query_scalar("SELECT b FROM ballast ORDER BY n")
            .fetch_all(&pool)
            .await
            .unwrap();
        let mut h = Sha256::new();
        for r in &rows {
            h.update(r);
        }
        (rows.len(), h.finalize().to_vec())
    };
    let before = digest_of(pool.clone()).await;

    let (status, body) = api(
        reqwest::Method::POST,
        "/v1/tenants/bulky/backups",
        Some(json!({})),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{body}");
    let backup_id = body["backup"]["id"].as_str().unwrap().to_string();
    let backup = support::wait_until("the backup", Duration::from_secs(60), || async {
        let (_, b) = api(
            reqwest::Method::GET,
            &format!("/v1/backups/{backup_id}"),
            None,
        )
        .await?;
        matches!(b["status"].as_str(), Some("completed" | "failed")).then_some(b)
    })
    .await;
    assert_eq!(backup["status"], "completed", "{backup}");
    let location = backup["location"].as_str().unwrap();
    assert!(location.starts_with("tenants/"), "{location}");

    // The object in the bucket: the recorded size and digest, an age file.
    let object = client
        .get(format!("{s3}/{BUCKET}/{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(object.status(), 200);
    let bytes = object.bytes().await.unwrap();
    assert!(bytes.len() > 12 << 20);
    assert_eq!(bytes.len() as i64, backup["size_bytes"].as_i64().unwrap());
    let sha: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(sha, backup["sha256"].as_str().unwrap());
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));

    // Change the data, restore in place from the bucket: the backed-up rows again.
    sqlx::query("DELETE FROM ballast WHERE n < 6")
        .execute(&pool)
        .await
        .unwrap();
    assert_ne!(digest_of(pool.clone()).await, before);
    pool.close().await;
    let (status, body) = api(
        reqwest::Method::POST,
        "/v1/tenants/bulky/restore",
        Some(json!({"backup_id": backup_id, "mode": "in_place"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{body}");
    let job_id = body["job_id"].as_str().unwrap().to_string();
    let job = support::wait_until("the restore", Duration::from_secs(60), || async {
        let (_, j) = api(reqwest::Method::GET, &format!("/v1/jobs/{job_id}"), None).await?;
        matches!(j["status"].as_str(), Some("succeeded" | "failed")).then_some(j)
    })
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (_, restored) = api(reqwest::Method::GET, "/v1/tenants/bulky", None)
        .await
        .unwrap();
    assert_eq!(restored["status"], "active");
    let catalog = tenantgate_catalog::Catalog::connect(&raw.catalog.url, 1)
        .await
        .unwrap();
    let db_name = catalog.tenant("bulky").await.unwrap().unwrap().db_name;
    catalog.close().await;
    let restored_file = shard_dir.join(format!("{db_name}.db"));
    assert_ne!(restored_file, file, "restored into a fresh file");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", restored_file.display()))
        .await
        .unwrap();
    assert_eq!(digest_of(pool.clone()).await, before);
    pool.close().await;
}
