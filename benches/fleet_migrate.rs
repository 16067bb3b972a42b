//! Fleet migration benchmark (the tenant-migrations issue's performance goal): N tenant
//! databases on PostgreSQL, one new migration that adds a column and an index, applied by
//! `fleet::migrate_tenants` at several concurrencies.
//!
//! Each run adds the next migration (0002, 0003, …), so every run applies exactly one new
//! migration to every tenant. The tenant databases are copies of a migrated template
//! (`CREATE DATABASE … TEMPLATE`), and the benchmark's logins are the test server's user (the
//! provisioning path with a login per tenant is measured by `admin_provision`). Everything is
//! dropped at the end.
//!
//! Run: `cargo bench -p tenantgate-admin --bench fleet_migrate` (TENANTS=1000 by default; set
//! `TENANTGATE_BENCH_TENANTS` for fewer). Needs PostgreSQL as for the tests.

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt};
use sqlx::{Connection, Executor};
use tenantgate_admin::fleet::{migrate_tenants, FleetOptions, Progress, ProgressSink};
use tenantgate_catalog::db::connect;
use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::{NewTenant, TenantPatch};
use tenantgate_catalog::tenant_db::{self, postgres_url, Credentials};
use tenantgate_config::db_url::Engine;
use tenantgate_config::{Config, RawConfig};
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::{server_url, tenant_migrations_dir, TestCatalog};

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
const CONCURRENCIES: [usize; 5] = [1, 2, 4, 8, 16];

struct Quiet;

impl ProgressSink for Quiet {
    fn update(&self, _: Progress) {}
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tenants: usize = std::env::var("TENANTGATE_BENCH_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let tc = TestCatalog::postgres().await;
    let catalog = tc.connect().await;
    let server = server_url();
    let migrations = tempfile::tempdir().unwrap();
    let dir = migrations.path().join("postgres");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(tenant_migrations_dir().join("postgres")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let mut raw = RawConfig::default();
    raw.catalog.url = tc.url();
    raw.security.signing_keys.insert("k".into(), KEY.into());
    raw.security.credential_key = Some(KEY.into());
    raw.tenant_migrations.dir = migrations.path().to_path_buf();
    let config = Arc::new(Config::try_from(raw).unwrap());

    // A migrated template, copied into every tenant database.
    let template = format!("tg_bench_tpl_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
    admin
        .execute(format!("CREATE DATABASE {template}").as_str())
        .await
        .unwrap();
    let pool = connect(&postgres_url(&server, &template, None).unwrap(), 1)
        .await
        .unwrap();
    tenant_db::migrator(migrations.path(), Engine::Postgres)
        .await
        .unwrap()
        .run(&pool)
        .await
        .unwrap();
    pool.close().await;
    // No session may stay on a template while it is copied.
    for _ in 0..100 {
        let sessions: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1",
        )
        .bind(&template)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if sessions == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    catalog
        .create_shard(&NewShard {
            name: "s1".into(),
            app_upstreams: vec!["127.0.0.1:9".into()],
            database_url: server.clone(),
            replicas: vec![],
        })
        .await
        .unwrap();
    let user = url::Url::parse(&server).unwrap().username().to_string();
    let started = Instant::now();
    let created = stream::iter(0..tenants)
        .map(|i| {
            let (catalog, server, template, config, user) = (
                catalog.clone(),
                server.clone(),
                template.clone(),
                config.clone(),
                user.clone(),
            );
            async move {
                let id = uuid::Uuid::new_v4();
                let db = tenant_db::db_name(id);
                catalog
                    .create_tenant(&NewTenant {
                        id,
                        slug: format!("b{i:05}"),
                        name: format!("B{i}"),
                        status: TenantStatus::Active,
                        shard: "s1".into(),
                        domains: vec![DomainSpec::parse(&format!("b{i:05}.bench")).unwrap()],
                        rate_limit: None,
                        settings: serde_json::json!({}),
                        db_name: db.clone(),
                    })
                    .await
                    .unwrap();
                let mut conn = sqlx::PgConnection::connect(&server).await.unwrap();
                // Autovacuum may visit the template for a moment; copying waits for it to leave.
                let create = format!("CREATE DATABASE {db} TEMPLATE {template}");
                let mut tries = 0;
                while let Err(e) = conn.execute(create.as_str()).await {
                    tries += 1;
                    assert!(tries < 200, "{e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                let login = Credentials {
                    user,
                    password: "unused-trust-auth".into(),
                };
                let patch = TenantPatch {
                    db_credentials: Some(Some(login.seal(&config.security.credential_key, id))),
                    schema_version: Some(1),
                    ..TenantPatch::default()
                };
                catalog.update_tenant(id, &patch).await.unwrap();
            }
        })
        // One at a time: PostgreSQL refuses concurrent copies of one template.
        .buffer_unordered(1)
        .count()
        .await;
    println!(
        "{created} tenant databases created in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    println!("concurrency  wall time  tenants/s  (one migration: add a column and an index)");
    for (n, concurrency) in CONCURRENCIES.into_iter().enumerate() {
        let version = n + 2;
        std::fs::write(
            dir.join(format!("{version:04}_bench_column_{version}.sql")),
            format!(
                "ALTER TABLE items ADD COLUMN bench_{version} BIGINT NOT NULL DEFAULT 0;\n\
                 CREATE INDEX items_bench_{version} ON items (bench_{version});\n"
            ),
        )
        .unwrap();
        let options = FleetOptions {
            tenants: Vec::new(),
            concurrency,
            dry_run: false,
        };
        let started = Instant::now();
        let summary = migrate_tenants(&config, &catalog, &options, &Quiet)
            .await
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(
            (summary.migrated, summary.failed),
            (tenants, 0),
            "{summary:?}"
        );
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM pg_stat_activity WHERE datname LIKE 't\\_%'")
                .fetch_one(&mut admin)
                .await
                .unwrap();
        println!(
            "{concurrency:>11}  {seconds:>8.1} s  {:>9.1}   (tenant sessions left open: {open})",
            tenants as f64 / seconds
        );
    }
    admin
        .execute(format!("DROP DATABASE {template}").as_str())
        .await
        .unwrap();
    drop(tc);
}
