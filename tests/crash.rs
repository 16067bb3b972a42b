//! Crash safety of provisioning with the real binary: SIGKILL the admin process in the middle of
//! provisioning a PostgreSQL tenant, start it again, and the job completes with exactly one
//! database and one login for the tenant.
//!
//! `sigkill_at_every_provisioning_step_takes_effect_once` does it at every step boundary in turn
//! (the debug-only stall points `TENANTGATE_TEST_PROVISION_STALL`, admin/src/jobs/stall.rs): one
//! tenant, five kills, and every effect exactly once. Its long form repeats that for
//! `TENANTGATE_CRASH_ROUNDS` tenants (default 1).

mod support;

use std::ffi::OsStr;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, Row};
use support::ComponentProcess;
use tenantgate_config::RawConfig;
use tenantgate_testkit::{server_url, tenant_migrations_dir, PgTestDb};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
const TOKEN: &str = "crash-test-admin-token";

/// `tenantgate admin` on `config` (port 0) and its base URL, once it has bound its port; with
/// `stall`, provisioning jobs stop for good after that step (see the module docs).
fn start_admin(config: &std::path::Path, stall: Option<&str>) -> (ComponentProcess, String) {
    let args = [
        OsStr::new("admin"),
        OsStr::new("--config"),
        config.as_os_str(),
    ];
    let env: Vec<(&str, &str)> = stall
        .map(|step| ("TENANTGATE_TEST_PROVISION_STALL", step))
        .into_iter()
        .collect();
    let admin =
        ComponentProcess::start_with_env(support::binary(), &args, &env, "admin API listening");
    let base = format!("http://{}", admin.addr("listen"));
    (admin, base)
}

/// `GET url` with the admin token, as JSON; `None` while the admin is not answering.
async fn get_json(client: &reqwest::Client, url: String) -> Option<Value> {
    client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

async fn ready(client: &reqwest::Client, base: &str) {
    support::wait_until("admin ready", Duration::from_secs(30), || async move {
        let r = client.get(format!("{base}/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_provisioning_then_restart_completes_once() {
    let db = PgTestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    // The repository's tenant schema plus a slow step, so the kill lands mid-migration.
    let migrations = dir.path().join("tenant_migrations");
    for backend in ["postgres", "sqlite"] {
        std::fs::create_dir_all(migrations.join(backend)).unwrap();
        for entry in std::fs::read_dir(tenant_migrations_dir().join(backend)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(
                entry.path(),
                migrations.join(backend).join(entry.file_name()),
            )
            .unwrap();
        }
    }
    // Numbered past any real migration, so it stays the last step as the schema grows.
    std::fs::write(
        migrations.join("postgres/0999_slow.sql"),
        "SELECT pg_sleep(2);\n",
    )
    .unwrap();

    let mut raw = RawConfig::default();
    raw.catalog.url = db.url.clone();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.admin.bootstrap_token = Some(TOKEN.into());
    raw.admin.job_lease_secs = 2;
    raw.security.signing_keys.insert("k".into(), KEY.into());
    raw.security.credential_key = Some(KEY.into());
    raw.tenant_migrations.dir = migrations;
    let config = dir.path().join("admin.toml");
    std::fs::write(&config, raw.to_toml()).unwrap();

    let client = reqwest::Client::new();
    let (mut admin, base) = start_admin(&config, None);
    ready(&client, &base).await;
    let r = client
        .post(format!("{base}/v1/shards"))
        .bearer_auth(TOKEN)
        .json(
            &json!({"name": "pg", "app_upstreams": ["127.0.0.1:9"], "database_url": server_url()}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let created: Value = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(TOKEN)
        .json(&json!({"slug": "phoenix", "name": "Phoenix", "domains": ["phoenix.test"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job = created["job_id"].as_str().expect("job id").to_string();

    // Kill it inside the slow second migration: the job runs and the first one has committed.
    let db_name: String = sqlx::query_scalar("SELECT db_name FROM tenants WHERE slug = 'phoenix'")
        .fetch_one(&mut sqlx::PgConnection::connect(&db.url).await.unwrap())
        .await
        .unwrap();
    let tenant_db =
        tenantgate_catalog::tenant_db::postgres_url(&server_url(), &db_name, None).unwrap();
    support::wait_until(
        "the first migration to commit",
        Duration::from_secs(30),
        || {
            let (client, url, tenant_db) = (&client, format!("{base}/v1/jobs/{job}"), &tenant_db);
            async move {
                let job = get_json(client, url).await?;
                let mut conn = sqlx::PgConnection::connect(tenant_db).await.ok()?;
                let first: Option<i64> = sqlx::query_scalar(
                    "SELECT version FROM _sqlx_migrations WHERE version = 1 AND success",
                )
                .fetch_optional(&mut conn)
                .await
                .ok()?;
                (job["status"] == "running" && first.is_some()).then_some(())
            }
        },
    )
    .await;
    admin.child.kill().unwrap();
    admin.child.wait().unwrap();

    let mut catalog = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let status: String = sqlx::query_scalar("SELECT status FROM tenants WHERE slug = 'phoenix'")
        .fetch_one(&mut catalog)
        .await
        .unwrap();
    assert_eq!(
        status, "provisioning",
        "the kill must land before provisioning finished"
    );

    let (_admin, base) = start_admin(&config, None);
    ready(&client, &base).await;
    let tenant = support::wait_until(
        "the tenant to become active",
        Duration::from_secs(60),
        || {
            let (client, url) = (&client, format!("{base}/v1/tenants/phoenix"));
            async move {
                let t = get_json(client, url).await?;
                (t["status"] == "active").then_some(t)
            }
        },
    )
    .await;
    assert_eq!(tenant["schema_version"], 999);
    let job = get_json(&client, format!("{base}/v1/jobs/{job}"))
        .await
        .unwrap();
    assert_eq!(job["status"], "succeeded");
    assert!(job["attempts"].as_i64().unwrap() >= 2, "{job}");

    // Exactly one database and one login for the tenant.
    let mut server = sqlx::PgConnection::connect(&server_url()).await.unwrap();
    for sql in [
        "SELECT COUNT(*) FROM pg_database WHERE datname = $1",
        "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1",
    ] {
        let n: i64 = sqlx::query(sql)
            .bind(&db_name)
            .fetch_one(&mut server)
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "{sql}");
    }
    // Every migration of the repository once, then the slow step once.
    migrated_once(&tenant_db, &[999]).await;
}

/// Panics unless the tenant database at `url` applied every migration of the repository, and
/// `extra` versions, exactly once each.
async fn migrated_once(url: &str, extra: &[i64]) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let applied: Vec<(i64, i64)> = sqlx::query(
        "SELECT version, COUNT(*) FROM _sqlx_migrations WHERE success GROUP BY version ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect();
    let mut expected: Vec<(i64, i64)> = std::fs::read_dir(tenant_migrations_dir().join("postgres"))
        .unwrap()
        .map(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            (name.split('_').next().unwrap().parse().unwrap(), 1)
        })
        .chain(extra.iter().map(|v| (*v, 1)))
        .collect();
    expected.sort();
    assert_eq!(applied, expected);
}

/// `SELECT COUNT(*)` of `sql` with `bind` as `$1`.
async fn count(conn: &mut sqlx::PgConnection, sql: &str, bind: &str) -> i64 {
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(conn)
        .await
        .unwrap()
        .get(0)
}

/// The step boundaries of provisioning a PostgreSQL tenant, in order
/// (admin/src/jobs/provision.rs).
const STEPS: [&str; 5] = ["sealed", "role", "database", "migrated", "epoch"];

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_every_provisioning_step_takes_effect_once() {
    let rounds: usize = std::env::var("TENANTGATE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let db = PgTestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let (hook, deliveries) = support::webhook_receiver().await;
    let mut raw = RawConfig::default();
    raw.catalog.url = db.url.clone();
    raw.admin.listen = "127.0.0.1:0".into();
    raw.admin.bootstrap_token = Some(TOKEN.into());
    raw.admin.job_lease_secs = 2;
    raw.admin.webhook_urls = vec![hook];
    raw.admin.webhook_secret = Some("crash-webhook-secret".into());
    raw.security.signing_keys.insert("k".into(), KEY.into());
    raw.security.credential_key = Some(KEY.into());
    raw.tenant_migrations.dir = tenant_migrations_dir();
    let config = dir.path().join("admin.toml");
    std::fs::write(&config, raw.to_toml()).unwrap();
    let client = reqwest::Client::new();
    let mut catalog = sqlx::PgConnection::connect(&db.url).await.unwrap();
    let mut server = sqlx::PgConnection::connect(&server_url()).await.unwrap();

    for round in 0..rounds {
        let slug = format!("phoenix{round}");
        let (mut admin, mut base) = start_admin(&config, Some(STEPS[0]));
        ready(&client, &base).await;
        if round == 0 {
            let r = client
                .post(format!("{base}/v1/shards"))
                .bearer_auth(TOKEN)
                .json(&json!({"name": "pg", "app_upstreams": ["127.0.0.1:9"], "database_url": server_url()}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        }
        let created: Value = client
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(TOKEN)
            .json(&json!({"slug": slug, "name": "Phoenix", "domains": [format!("{slug}.test")]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job = created["job_id"].as_str().expect("job id").to_string();
        let began = std::time::Instant::now();
        for (i, step) in STEPS.iter().enumerate() {
            admin
                .wait_log(
                    &json!({"message": "job stalled", "step": step}),
                    Duration::from_secs(60),
                )
                .await;
            admin.child.kill().unwrap();
            admin.child.wait().unwrap();
            let status: String = sqlx::query_scalar("SELECT status FROM tenants WHERE slug = $1")
                .bind(&slug)
                .fetch_one(&mut catalog)
                .await
                .unwrap();
            assert_eq!(status, "provisioning", "killed after {step}");
            println!(
                "[{slug}] SIGKILL after step {step} at {:.1} s",
                began.elapsed().as_secs_f64()
            );
            // The next process stalls at the next step; the last one runs to the end.
            (admin, base) = start_admin(&config, STEPS.get(i + 1).copied());
            ready(&client, &base).await;
        }
        let tenant = support::wait_until(
            "the tenant to become active",
            Duration::from_secs(60),
            || {
                let (client, url) = (&client, format!("{base}/v1/tenants/{slug}"));
                async move {
                    let t = get_json(client, url).await?;
                    (t["status"] == "active").then_some(t)
                }
            },
        )
        .await;
        let job = get_json(&client, format!("{base}/v1/jobs/{job}"))
            .await
            .unwrap();
        println!(
            "[{slug}] active after {:.1} s; job {} after {} attempts",
            began.elapsed().as_secs_f64(),
            job["status"],
            job["attempts"]
        );
        assert_eq!(job["status"], "succeeded");
        // One claim per process that ran it: each killed one and the last.
        assert_eq!(job["attempts"], STEPS.len() as i64 + 1, "{job}");

        // Exactly one database, one login, the schema once, one activation.
        let db_name: String = sqlx::query_scalar("SELECT db_name FROM tenants WHERE slug = $1")
            .bind(&slug)
            .fetch_one(&mut catalog)
            .await
            .unwrap();
        for sql in [
            "SELECT COUNT(*) FROM pg_database WHERE datname = $1",
            "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1",
        ] {
            assert_eq!(count(&mut server, sql, &db_name).await, 1, "{sql}");
        }
        let tenant_db =
            tenantgate_catalog::tenant_db::postgres_url(&server_url(), &db_name, None).unwrap();
        migrated_once(&tenant_db, &[]).await;
        assert_eq!(
            tenant["schema_version"],
            migrated_version(),
            "the tenant is at the latest schema"
        );
        let id = tenant["id"].as_str().unwrap();
        for (action, n) in [("tenant.create", 1), ("tenant.activate", 1)] {
            let sql = format!(
                "SELECT COUNT(*) FROM audit_log WHERE tenant_id = $1::uuid AND action = '{action}'"
            );
            assert_eq!(count(&mut catalog, &sql, id).await, n, "{action}");
        }
        // One webhook per event, each delivered once.
        let expected = round + 1;
        support::wait_until(
            "the activation delivered",
            Duration::from_secs(30),
            || async {
                let got = deliveries.lock().unwrap().clone();
                let activated = got.iter().filter(|(_, e)| e == "tenant.activated").count();
                (activated >= expected).then_some(())
            },
        )
        .await;
        let outbox = "SELECT COUNT(*) FROM webhook_outbox WHERE event = $1";
        for event in ["tenant.created", "tenant.activated"] {
            assert_eq!(
                count(&mut catalog, outbox, event).await,
                expected as i64,
                "{event}"
            );
        }
        drop(admin);
    }
    let got = deliveries.lock().unwrap().clone();
    let mut ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), got.len(), "a delivery arrived twice: {got:?}");
    for event in ["tenant.created", "tenant.activated"] {
        let n = got.iter().filter(|(_, e)| e == event).count();
        assert_eq!(n, rounds, "{event} deliveries: {got:?}");
    }
}

/// The highest tenant migration version in the repository.
fn migrated_version() -> i64 {
    std::fs::read_dir(tenant_migrations_dir().join("postgres"))
        .unwrap()
        .map(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            name.split('_').next().unwrap().parse::<i64>().unwrap()
        })
        .max()
        .unwrap()
}
