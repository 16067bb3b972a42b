//! Fleet migrations through the real binary: `tenantgate migrate tenants` on both backends.

mod support;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use sqlx::Row;
use tenantgate_catalog::db::connect;
use tenantgate_catalog::store::TenantFilter;
use tenantgate_catalog::tenant_db::TenantDbTarget;
use tenantgate_catalog::Catalog;
use tenantgate_config::{Config, RawConfig};
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::{both_backends, tenant_migrations_dir, TestCatalog};
use tokio_util::sync::CancellationToken;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
const ADMIN_TOKEN: &str = "fleet-test-admin-token";

/// A catalog with `n` provisioned tenants on one shard, and a config file for the binary.
struct Fleet {
    tc: TestCatalog,
    catalog: Catalog,
    config: Arc<Config>,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
}

async fn fleet(tc: TestCatalog, n: usize) -> Fleet {
    let catalog = tc.connect().await;
    let dir = tempfile::tempdir().unwrap();
    let mut raw = RawConfig::default();
    raw.catalog.url = tc.url();
    raw.security.signing_keys.insert("k".into(), KEY.into());
    raw.security.credential_key = Some(KEY.into());
    raw.tenant_migrations.dir = tenant_migrations_dir();
    raw.admin.bootstrap_token = Some(ADMIN_TOKEN.into());
    let config_path = dir.path().join("tenantgate.toml");
    std::fs::write(&config_path, raw.to_toml()).unwrap();
    let config = Arc::new(Config::try_from(raw).unwrap());

    tenantgate_admin::ensure_shard(
        &catalog,
        "s1",
        vec!["127.0.0.1:1".into()],
        &tc.shard_database_url("s1"),
    )
    .await
    .unwrap();
    for i in 0..n {
        let slug = format!("f{i:03}");
        tenantgate_admin::ensure_tenant(
            &config,
            &catalog,
            &slug,
            &slug,
            &format!("{slug}.test"),
            "s1",
            serde_json::json!({}),
        )
        .await
        .unwrap();
    }
    let shutdown = CancellationToken::new();
    let worker = tokio::spawn(tenantgate_admin::run_worker(
        config.clone(),
        catalog.clone(),
        shutdown.clone(),
    ));
    support::wait_until("tenants provisioned", Duration::from_secs(120), || {
        let catalog = catalog.clone();
        async move {
            let active = catalog
                .list_tenants(&TenantFilter {
                    status: Some(TenantStatus::Active),
                    limit: 10_000,
                    ..Default::default()
                })
                .await
                .unwrap();
            (active.len() == n).then_some(())
        }
    })
    .await;
    shutdown.cancel();
    worker.await.unwrap();
    Fleet {
        tc,
        catalog,
        config,
        config_path,
        _dir: dir,
    }
}

/// The newest tenant migration of the repository.
fn latest() -> i64 {
    tenantgate_testkit::latest_tenant_migration()
}

/// The version `migrations_with` gives its extra migration: the one after the repository's.
fn next() -> i64 {
    latest() + 1
}

/// The repository's tenant migrations plus `extra` as version [`next`], in a new folder.
fn migrations_with(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for backend in ["postgres", "sqlite"] {
        let to = dir.path().join(backend);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(tenant_migrations_dir().join(backend)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        std::fs::write(to.join(format!("{:04}_item_priority.sql", next())), extra).unwrap();
    }
    dir
}

fn migrate(config: &Path, migrations: &Path, extra: &[&str]) -> Output {
    Command::new(support::binary())
        .args(["migrate", "tenants", "--config"])
        .arg(config)
        .arg("--tenant-migrations")
        .arg(migrations)
        .args(extra)
        .output()
        .unwrap()
}

async fn tenant_pool(f: &Fleet, slug: &str) -> sqlx::AnyPool {
    let tenant = f.catalog.tenant(slug).await.unwrap().unwrap();
    let shard = f.catalog.shard(&tenant.shard).await.unwrap().unwrap();
    let target =
        TenantDbTarget::resolve(&shard, &tenant, &f.config.security.credential_key).unwrap();
    connect(&target.primary, 1).await.unwrap()
}

/// `(version, count)` of successful rows in a tenant's migration table.
async fn applied(f: &Fleet, slug: &str) -> Vec<(i64, i64)> {
    let pool = tenant_pool(f, slug).await;
    let rows = sqlx::query("SELECT version, COUNT(*) FROM _sqlx_migrations WHERE success = TRUE GROUP BY version ORDER BY version")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn versions(f: &Fleet) -> Vec<(String, i64, Option<String>)> {
    f.catalog
        .list_tenants(&TenantFilter {
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.slug, t.schema_version, t.migration_error))
        .collect()
}

const PRIORITY: &str = "ALTER TABLE items ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;\n\
                        CREATE UNIQUE INDEX items_title_unique ON items (title);\n";

both_backends!(fifty_tenants_one_bad_then_fixed);

async fn fifty_tenants_one_bad_then_fixed(tc: TestCatalog) {
    let f = fleet(tc, 50).await;
    assert!(
        versions(&f)
            .await
            .iter()
            .all(|(_, v, e)| *v == latest() && e.is_none()),
        "provisioned at the latest version"
    );
    // Crafted bad data: two items with one title break the new unique index for f007 only.
    let pool = tenant_pool(&f, "f007").await;
    for id in ["a", "b"] {
        sqlx::query("INSERT INTO items (id, title, body, created_at, updated_at) VALUES ($1, 'dup', '', 0, 0)")
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
    }
    let migrations = migrations_with(PRIORITY);

    // --dry-run lists the work and changes nothing.
    let out = migrate(&f.config_path, migrations.path(), &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("f000: would apply {}_item_priority", next()))
            && stdout.contains(&format!("f049: would apply {}_item_priority", next())),
        "{stdout}"
    );
    assert!(versions(&f).await.iter().all(|(_, v, _)| *v == latest()));
    assert_eq!(
        applied(&f, "f000").await,
        (1..=latest()).map(|v| (v, 1)).collect::<Vec<_>>()
    );

    let out = migrate(&f.config_path, migrations.path(), &["--concurrency", "4"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a failed tenant makes the run fail: {stdout}"
    );
    assert!(
        stdout.contains("migrated 49, already current 0, failed 1"),
        "{stdout}"
    );
    assert!(stdout.contains("failed f007"), "{stdout}");
    // Without a terminal, progress comes as lines on stderr, the last one complete.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("progress: 50/50 tenants, 1 failed"),
        "{stderr}"
    );
    for (slug, version, error) in versions(&f).await {
        if slug == "f007" {
            assert_eq!(
                version,
                latest(),
                "the failed tenant stays at its old version"
            );
            assert!(error.is_some_and(|e| !e.is_empty()));
            assert_eq!(
                applied(&f, &slug).await,
                (1..=latest()).map(|v| (v, 1)).collect::<Vec<_>>()
            );
        } else {
            assert_eq!((version, error), (next(), None), "{slug}");
        }
    }
    // The failed migration left no half-applied change behind (it ran in a transaction).
    let columns = sqlx::query("SELECT priority FROM items")
        .fetch_all(&pool)
        .await;
    assert!(columns.is_err(), "f007 must not have the new column");

    // Fix the data, run again: only f007 has work left.
    sqlx::query("DELETE FROM items WHERE id = 'b'")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let out = migrate(&f.config_path, migrations.path(), &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("migrated 1, already current 49, failed 0"),
        "{stdout}"
    );
    assert!(versions(&f)
        .await
        .iter()
        .all(|(_, v, e)| *v == next() && e.is_none()));
    let _ = &f.tc;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_run_resumes_and_migrates_each_tenant_once() {
    let f = fleet(TestCatalog::sqlite(), 30).await;
    // A slow migration, so that the kill lands midway.
    let slow = format!(
        "{PRIORITY}SELECT COUNT(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) SELECT x FROM c);\n"
    );
    let migrations = migrations_with(&slow);
    let mut child = Command::new(support::binary())
        .args(["migrate", "tenants", "--concurrency", "1", "--config"])
        .arg(&f.config_path)
        .arg("--tenant-migrations")
        .arg(migrations.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    support::wait_until("a few tenants migrated", Duration::from_secs(60), || {
        let f = &f;
        async move {
            let done = versions(f)
                .await
                .iter()
                .filter(|(_, v, _)| *v == next())
                .count();
            (done >= 3).then_some(())
        }
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let done = versions(&f)
        .await
        .iter()
        .filter(|(_, v, _)| *v == next())
        .count();
    assert!(
        done < 30,
        "the run finished before it was killed; the test proves nothing"
    );

    let out = migrate(&f.config_path, migrations.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for (slug, version, error) in versions(&f).await {
        assert_eq!((version, error), (next(), None), "{slug}");
        assert_eq!(
            applied(&f, &slug).await,
            (1..=next()).map(|v| (v, 1)).collect::<Vec<_>>(),
            "{slug} migrated exactly once"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_job_through_the_admin_api_reports_progress() {
    let f = fleet(TestCatalog::sqlite(), 10).await;
    let migrations = migrations_with(PRIORITY);
    let mut config = (*f.config).clone();
    config.tenant_migrations.dir = migrations.path().to_path_buf();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(tenantgate_admin::serve(
        Arc::new(config),
        f.catalog.clone(),
        listener,
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        client
            .post(format!("{admin}/v1/migrations"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
    };

    // A tenant that does not exist is not found; a concurrency out of range breaks the schema.
    let missing = post(serde_json::json!({"tenants": ["f001", "nobody"]}))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let bad = post(serde_json::json!({"tenants": ["f001", 7], "concurrency": 0}))
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    let body: serde_json::Value = bad.json().await.unwrap();
    let mut fields: Vec<&str> = body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    fields.sort();
    assert_eq!(fields, vec!["concurrency", "tenants[1]"], "{body}");
    let unknown = post(serde_json::json!({"tenantz": []})).await.unwrap();
    assert_eq!(unknown.status(), 422);

    let started = post(serde_json::json!({"concurrency": 2})).await.unwrap();
    assert_eq!(started.status(), 202);
    let job_id = started.json::<serde_json::Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let job = support::wait_until(
        "the migration job to finish",
        Duration::from_secs(60),
        || {
            let (client, url) = (&client, format!("{admin}/v1/jobs/{job_id}"));
            async move {
                let job: serde_json::Value = client
                    .get(url)
                    .bearer_auth(ADMIN_TOKEN)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                matches!(job["status"].as_str(), Some("succeeded" | "failed")).then_some(job)
            }
        },
    )
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["kind"], "migrate_tenants");
    assert_eq!(job["progress"]["done"], 10, "{job}");
    assert_eq!(job["progress"]["total"], 10);
    assert_eq!(job["progress"]["migrated"], 10);
    assert!(versions(&f)
        .await
        .iter()
        .all(|(_, v, e)| *v == next() && e.is_none()));
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
