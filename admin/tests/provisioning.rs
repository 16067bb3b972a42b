//! Provisioning on real databases: create → 202 → job succeeds → active → database migrated;
//! least-privilege logins; delete with grace then purge; failure, retry; crash recovery.

use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use tenantgate_catalog::store::jobs::JobStatus;
use tenantgate_testkit::admin::{count, pg, Harness};
use tenantgate_testkit::{both_backends, wait_until, Engine};
use tokio_util::sync::CancellationToken;

both_backends!(create_tenant_provisions_its_database);
async fn create_tenant_provisions_its_database(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    let (id, job) = h.tenant("acme", Some("shard-a")).await;
    let created = h.get(&format!("/v1/tenants/{id}")).await;
    assert!(["provisioning", "active"].contains(&created.body["status"].as_str().unwrap()));
    let tenant = h.wait_status(&id, "active").await;
    assert_eq!(tenant["schema_version"], 1);
    assert_eq!(tenant["domains"], json!(["acme.example.com"]));
    assert!(tenant.get("db_credentials").is_none());
    let job = h.wait_job(&job, "succeeded").await;
    assert_eq!(job["kind"], "provision_tenant");
    assert_eq!(job["attempts"], 1);
    assert!(h.database_exists(&id).await);

    // The tenant migrations ran in the tenant's own database, reachable with its own login.
    let pool = h.tenant_pool(&id).await;
    let roles: i64 = sqlx::query("SELECT COUNT(*) FROM roles")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 3);
    pool.close().await;

    // The edge's view and the audit log follow.
    let r = h.get("/v1/resolve?host=ACME.example.com:443").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["edge"]["status"], 200, "{:?}", r.body);
    assert_eq!(r.body["tenant"]["slug"], "acme");
    assert_eq!(r.body["backends"], json!(["127.0.0.1:9"]));
    let audit = h.get("/v1/audit?tenant=acme").await;
    let actions: Vec<&str> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["tenant.activate", "tenant.create"]);
    assert_eq!(audit.body["entries"][1]["actor"], "bootstrap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tenant_login_reaches_only_its_own_database() {
    let h = Harness::started(Engine::Postgres).await;
    h.shard("shard-a").await;
    let (a, _) = h.tenant("alpha", None).await;
    let (b, _) = h.tenant("bravo", None).await;
    h.wait_status(&a, "active").await;
    h.wait_status(&b, "active").await;
    let ta = h.catalog.tenant(&a).await.unwrap().unwrap();
    let tb = h.catalog.tenant(&b).await.unwrap().unwrap();
    let login = tenantgate_catalog::tenant_db::Credentials::open(
        ta.db_credentials.as_deref().unwrap(),
        &h.config.security.credential_key,
        ta.id,
    )
    .unwrap();
    assert_eq!(login.user, ta.db_name);
    let server = h.pg_server();
    use sqlx::Connection;
    let own =
        tenantgate_catalog::tenant_db::postgres_url(&server, &ta.db_name, Some(&login)).unwrap();
    sqlx::PgConnection::connect(&own)
        .await
        .expect("own database")
        .close()
        .await
        .unwrap();
    let other =
        tenantgate_catalog::tenant_db::postgres_url(&server, &tb.db_name, Some(&login)).unwrap();
    let err = sqlx::PgConnection::connect(&other)
        .await
        .expect_err("another tenant's database");
    assert!(err.to_string().contains("permission denied"), "{err}");

    // In the catalog's database (PUBLIC may connect there) it can read nothing.
    let catalog_db = match &h.tc {
        tenantgate_testkit::TestCatalog::Postgres(db) => db.name.clone(),
        _ => unreachable!(),
    };
    let url =
        tenantgate_catalog::tenant_db::postgres_url(&server, &catalog_db, Some(&login)).unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let err = sqlx::query("SELECT COUNT(*) FROM tenants")
        .fetch_one(&mut conn)
        .await
        .expect_err("no catalog access");
    assert!(err.to_string().contains("permission denied"), "{err}");

    // No server-wide privileges.
    let mut admin = pg(&server).await;
    // The role's stored SCRAM verifier is that of the sealed password, so the login works
    // under password authentication too (this test server trusts every local connection).
    let stored: String = sqlx::query("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&ta.db_name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get(0);
    assert!(scram_matches(&login.password, &stored), "{stored}");
    assert!(!scram_matches("another password", &stored));
    let row = sqlx::query("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolcanlogin FROM pg_roles WHERE rolname = $1")
        .bind(&ta.db_name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let flags: (bool, bool, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(flags, (false, false, false, false, true));
    // It owns the tables its migrations created.
    let mut own_conn = sqlx::PgConnection::connect(&own).await.unwrap();
    let owner: String =
        sqlx::query("SELECT tableowner::text FROM pg_tables WHERE tablename = 'items'")
            .fetch_one(&mut own_conn)
            .await
            .unwrap()
            .get(0);
    assert_eq!(owner, ta.db_name);
}

both_backends!(delete_with_grace_then_purge_drops_the_database);
async fn delete_with_grace_then_purge_drops_the_database(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    let (id, _) = h.tenant("doomed", None).await;
    h.wait_status(&id, "active").await;

    let r = h.delete(&format!("/v1/tenants/{id}")).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["tenant"]["status"], "deleted");
    let drop_job = r.body["job_id"].as_str().unwrap().to_string();
    let job = h.get(&format!("/v1/jobs/{drop_job}")).await;
    assert_eq!(job.body["status"], "queued");
    assert_eq!(
        h.get(&format!("/v1/tenants/{id}")).await.body["status"],
        "deleted"
    );
    let r = h.get("/v1/resolve?host=doomed.example.com").await;
    assert_eq!(r.body["edge"]["status"], 410);
    // Within the grace period the database stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(h.database_exists(&id).await);
    assert_eq!(
        h.get(&format!("/v1/jobs/{drop_job}")).await.body["status"],
        "queued"
    );

    let r = h.delete(&format!("/v1/tenants/{id}?purge=true")).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(
        r.body["job_id"],
        drop_job.as_str(),
        "purge brings the scheduled drop forward"
    );
    h.wait_job(&drop_job, "succeeded").await;
    assert!(!h.database_exists(&id).await);
    if backend == Engine::Postgres {
        let db = h.catalog.tenant(&id).await.unwrap().unwrap().db_name;
        let mut admin = pg(&h.pg_server()).await;
        assert_eq!(
            count(
                &mut admin,
                "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1",
                &db
            )
            .await,
            0
        );
    }
    // The domain is free again and the audit log has every step.
    assert_eq!(
        h.get("/v1/resolve?host=doomed.example.com").await.body["edge"]["status"],
        404
    );
    let audit = h.get(&format!("/v1/audit?tenant={id}")).await;
    let actions: Vec<&str> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "tenant.drop_database",
            "tenant.delete_purge",
            "tenant.delete",
            "tenant.activate",
            "tenant.create"
        ]
    );
}

both_backends!(failing_job_retries_then_fails_and_can_be_retried);
async fn failing_job_retries_then_fails_and_can_be_retried(backend: Engine) {
    // Tenant migrations that fail until fixed: a copy of the real ones plus a broken one.
    let dir = tempfile::tempdir().unwrap();
    let sub = backend.dir_name();
    std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    let real = tenantgate_testkit::tenant_migrations_dir()
        .join(sub)
        .join("0001_rbac_and_items.sql");
    std::fs::copy(&real, dir.path().join(sub).join("0001_rbac_and_items.sql")).unwrap();
    let broken = dir.path().join(sub).join("0002_broken.sql");
    std::fs::write(&broken, "CREATE TABLE nonsense (;").unwrap();
    let path = dir.path().to_path_buf();
    let mut h = Harness::new(backend, |raw| {
        raw.tenant_migrations.dir = path;
        raw.admin.job_max_attempts = 2;
    })
    .await
    .start()
    .await;
    h.dirs.push(dir);
    h.shard("shard-a").await;
    let (id, job) = h.tenant("flaky", None).await;
    let tenant = h.wait_status(&id, "failed").await;
    assert!(
        tenant["last_error"]
            .as_str()
            .unwrap()
            .contains("provision_tenant"),
        "{tenant}"
    );
    let failed = h.wait_job(&job, "failed").await;
    assert_eq!(failed["attempts"], 2);
    assert!(failed["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(
        h.get("/v1/resolve?host=flaky.example.com").await.body["edge"]["status"],
        503
    );

    // A retry of a job that has not failed is a conflict; after the fix, a retry succeeds.
    std::fs::write(&broken, "CREATE TABLE fixed (id BIGINT);").unwrap();
    let r = h.post(&format!("/v1/jobs/{job}/retry"), json!({})).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let tenant = h.wait_status(&id, "active").await;
    assert_eq!(tenant["schema_version"], 2);
    assert!(tenant.get("last_error").is_none(), "{tenant}");
    let r = h.post(&format!("/v1/jobs/{job}/retry"), json!({})).await;
    assert_eq!(r.status, 409);
    h.stop().await;
}

both_backends!(job_of_a_dead_worker_is_completed_once);
async fn job_of_a_dead_worker_is_completed_once(backend: Engine) {
    // The tenant and its job exist before any worker runs.
    let mut h = Harness::new(backend, |_| {}).await;
    tenantgate_admin::ensure_shard(
        &h.catalog,
        "shard-a",
        vec!["127.0.0.1:9".into()],
        &h.tc.shard_database_url("shard-a"),
    )
    .await
    .unwrap();
    tenantgate_admin::ensure_tenant(
        &h.config,
        &h.catalog,
        "phoenix",
        "Phoenix",
        "phoenix.example.com",
        "shard-a",
        json!({"locale": "de"}),
    )
    .await
    .unwrap();
    let tenant = h.catalog.tenant("phoenix").await.unwrap().unwrap();
    // A worker claims the job and dies: its lease is already over.
    let now = tenantgate_contract::time::now_ms();
    let claimed = h
        .catalog
        .claim_job("dead-worker", now - 1)
        .await
        .unwrap()
        .expect("a job to claim");
    assert_eq!(claimed.tenant_id, Some(tenant.id));
    // ... after doing part of the work: the database exists, in an unknown state.
    let shard_url = h.tc.shard_database_url("shard-a");
    match backend {
        Engine::Postgres => {
            use sqlx::Executor;
            let mut admin = pg(&shard_url).await;
            admin
                .execute(
                    format!(
                        "CREATE ROLE {0} LOGIN PASSWORD 'lost-with-the-worker'",
                        tenant.db_name
                    )
                    .as_str(),
                )
                .await
                .unwrap();
            admin
                .execute(format!("CREATE DATABASE {0} OWNER {0}", tenant.db_name).as_str())
                .await
                .unwrap();
        }
        Engine::Sqlite => {
            let file = tenantgate_catalog::tenant_db::sqlite_file(&shard_url, &tenant.db_name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, b"").unwrap();
        }
    }
    // Idempotent seeding: a second ensure changes nothing.
    tenantgate_admin::ensure_tenant(
        &h.config,
        &h.catalog,
        "phoenix",
        "Phoenix",
        "phoenix.example.com",
        "shard-a",
        json!({}),
    )
    .await
    .unwrap();

    h = h.start().await;
    let id = tenant.id.to_string();
    let active = h.wait_status(&id, "active").await;
    assert_eq!(active["settings"], json!({"locale": "de"}));
    let job = h.wait_job(&claimed.id.to_string(), "succeeded").await;
    assert_eq!(
        job["attempts"], 2,
        "the dead worker's claim and the takeover"
    );
    assert_eq!(h.catalog.jobs_of_tenant(tenant.id).await.unwrap().len(), 1);
    let pool = h.tenant_pool(&id).await;
    let roles: i64 = sqlx::query("SELECT COUNT(*) FROM roles")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 3);
    pool.close().await;
    if backend == Engine::Postgres {
        let mut admin = pg(&shard_url).await;
        assert_eq!(
            count(
                &mut admin,
                "SELECT COUNT(*) FROM pg_database WHERE datname = $1",
                &tenant.db_name
            )
            .await,
            1
        );
        assert_eq!(
            count(
                &mut admin,
                "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1",
                &tenant.db_name
            )
            .await,
            1
        );
    }
    let audit = h.get("/v1/audit?tenant=phoenix").await;
    let activations = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tenant.activate")
        .count();
    assert_eq!(activations, 1);
    h.stop().await;
}

both_backends!(placement_picks_the_emptiest_active_shard);
async fn placement_picks_the_emptiest_active_shard(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-b").await;
    h.shard("shard-a").await;
    h.shard("shard-c").await;
    let r = h
        .patch("/v1/shards/shard-c", json!({"status": "disabled"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut placed = Vec::new();
    for slug in ["one", "two", "three"] {
        let (id, _) = h.tenant(slug, None).await;
        placed.push(
            h.get(&format!("/v1/tenants/{id}")).await.body["shard"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Tie broken by name, then the emptier one; the disabled shard never.
    assert_eq!(placed, ["shard-a", "shard-b", "shard-a"]);
    for slug in ["one", "two", "three"] {
        h.wait_status(slug, "active").await;
    }
    let page = h.get("/v1/tenants?shard=shard-a&status=active").await;
    assert_eq!(page.body["tenants"].as_array().unwrap().len(), 2);
}

both_backends!(move_copies_the_tenant_and_switches_its_shard);
async fn move_copies_the_tenant_and_switches_its_shard(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    h.shard("shard-b").await;
    let (id, _) = h.tenant("mover", Some("shard-a")).await;
    h.wait_status(&id, "active").await;
    let pool = h.tenant_pool(&id).await;
    sqlx::query("INSERT INTO items (id, title, body, created_at, updated_at) VALUES ('i1', 'kept', '', 1, 1)")
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let before = h.catalog.tenant(&id).await.unwrap().unwrap();

    assert_eq!(
        h.post(
            &format!("/v1/tenants/{id}/move"),
            json!({"shard": "shard-a"})
        )
        .await
        .status,
        409
    );
    assert_eq!(
        tenantgate_testkit::admin::fields(
            &h.post(&format!("/v1/tenants/{id}/move"), json!({"shard": "nope"}))
                .await
        ),
        ["shard"]
    );
    let r = h
        .post(
            &format!("/v1/tenants/{id}/move"),
            json!({"shard": "shard-b"}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let job = r.body["job_id"].as_str().unwrap().to_string();
    h.wait_job(&job, "succeeded").await;
    let moved = h.wait_status(&id, "active").await;
    assert_eq!(moved["shard"], "shard-b");
    assert!(moved["epoch"].as_i64().unwrap() > before.epoch);

    // The data came along, reachable through the new shard.
    let pool = h.tenant_pool(&id).await;
    let title: String = sqlx::query("SELECT title FROM items WHERE id = 'i1'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, "kept");
    pool.close().await;
    if backend == Engine::Sqlite {
        let old = tenantgate_catalog::tenant_db::sqlite_file(
            &h.tc.shard_database_url("shard-a"),
            &before.db_name,
        );
        assert!(!old.exists(), "the old file is removed after the switch");
    }
    let audit = h.get(&format!("/v1/audit?tenant={id}&limit=2")).await;
    assert_eq!(audit.body["entries"][0]["action"], "tenant.move_complete");
    assert_eq!(audit.body["entries"][1]["action"], "tenant.move");
}

/// Tenant migrations with a slow second step, so a worker can be killed in the middle.
fn slow_migrations(backend: Engine) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sub = backend.dir_name();
    std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    let real = tenantgate_testkit::tenant_migrations_dir()
        .join(sub)
        .join("0001_rbac_and_items.sql");
    std::fs::copy(&real, dir.path().join(sub).join("0001_rbac_and_items.sql")).unwrap();
    let slow = match backend {
        Engine::Postgres => "SELECT pg_sleep(1.5);",
        Engine::Sqlite => "CREATE TABLE slow AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT COUNT(*) AS n FROM c;",
    };
    std::fs::write(dir.path().join(sub).join("0002_slow.sql"), slow).unwrap();
    dir
}

both_backends!(worker_killed_mid_job_is_taken_over);
async fn worker_killed_mid_job_is_taken_over(backend: Engine) {
    let dir = slow_migrations(backend);
    let path = dir.path().to_path_buf();
    let mut h = Harness::new(backend, |raw| {
        raw.tenant_migrations.dir = path;
        raw.admin.job_lease_secs = 1;
    })
    .await;
    h.dirs.push(dir);
    let shard_url = h.tc.shard_database_url("shard-a");
    tenantgate_admin::ensure_shard(
        &h.catalog,
        "shard-a",
        vec!["127.0.0.1:9".into()],
        &shard_url,
    )
    .await
    .unwrap();
    tenantgate_admin::ensure_tenant(
        &h.config,
        &h.catalog,
        "lazarus",
        "Lazarus",
        "lazarus.example.com",
        "shard-a",
        json!({}),
    )
    .await
    .unwrap();
    let tenant = h.catalog.tenant("lazarus").await.unwrap().unwrap();
    let job_id = h.catalog.jobs_of_tenant(tenant.id).await.unwrap()[0].id;

    // Admin process A, in a runtime of its own that is torn down without any cleanup: its
    // tasks stop at whatever await they are in and its connections close, like a SIGKILL.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (config, url) = (h.config.clone(), h.tc.url());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    rt.spawn(async move {
        let catalog = tenantgate_catalog::Catalog::connect(&url, 4).await.unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        let _ = tenantgate_admin::serve(config, catalog, listener, CancellationToken::new()).await;
    });
    let owner = wait_until(
        "A to be in the middle of the job",
        Duration::from_secs(20),
        || async {
            let job = h.catalog.job(job_id).await.unwrap().unwrap();
            // Past the first migration's commit, inside the slow one.
            let tenant_started = h.database_exists(&id_of(&tenant)).await;
            (job.status == JobStatus::Running && tenant_started).then_some(job.locked_by)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.shutdown_background();
    let job = h.catalog.job(job_id).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Running, "A died holding the job");
    assert_eq!(job.locked_by, owner);

    // Process B takes over once A's lease has run out, and finishes the job once.
    h = h.start().await;
    let id = tenant.id.to_string();
    let active = h.wait_status(&id, "active").await;
    assert_eq!(active["schema_version"], 2);
    let job = h.wait_job(&job_id.to_string(), "succeeded").await;
    assert_eq!(job["attempts"], 2);
    let pool = h.tenant_pool(&id).await;
    let roles: i64 = sqlx::query("SELECT COUNT(*) FROM roles")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 3);
    pool.close().await;
    if backend == Engine::Postgres {
        let mut admin = pg(&shard_url).await;
        assert_eq!(
            count(
                &mut admin,
                "SELECT COUNT(*) FROM pg_database WHERE datname = $1",
                &tenant.db_name
            )
            .await,
            1
        );
        assert_eq!(
            count(
                &mut admin,
                "SELECT COUNT(*) FROM pg_roles WHERE rolname = $1",
                &tenant.db_name
            )
            .await,
            1
        );
    }
    let audit = h.get("/v1/audit?tenant=lazarus").await;
    let activations = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tenant.activate")
        .count();
    assert_eq!(activations, 1);
    h.stop().await;
}

fn id_of(t: &tenantgate_catalog::Tenant) -> String {
    t.id.to_string()
}

both_backends!(purge_while_provisioning_retries_drops_everything);
async fn purge_while_provisioning_retries_drops_everything(backend: Engine) {
    // Provisioning keeps failing (a broken second migration) after creating the database.
    let dir = tempfile::tempdir().unwrap();
    let sub = backend.dir_name();
    std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    let real = tenantgate_testkit::tenant_migrations_dir()
        .join(sub)
        .join("0001_rbac_and_items.sql");
    std::fs::copy(&real, dir.path().join(sub).join("0001_rbac_and_items.sql")).unwrap();
    std::fs::write(
        dir.path().join(sub).join("0002_broken.sql"),
        "CREATE TABLE nonsense (;",
    )
    .unwrap();
    let path = dir.path().to_path_buf();
    let mut h = Harness::new(backend, |raw| {
        raw.tenant_migrations.dir = path;
        raw.admin.job_max_attempts = 10;
    })
    .await
    .start()
    .await;
    h.dirs.push(dir);
    h.shard("shard-a").await;
    let (id, provision) = h.tenant("gone", None).await;
    wait_until("a failed attempt", Duration::from_secs(20), || async {
        let job = h.get(&format!("/v1/jobs/{provision}")).await.body;
        (job["error"].is_string() && job["status"] == "queued").then_some(())
    })
    .await;
    assert!(h.database_exists(&id).await);

    let r = h.delete(&format!("/v1/tenants/{id}?purge=true")).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let drop_job = r.body["job_id"].as_str().unwrap().to_string();
    h.wait_job(&provision, "succeeded").await;
    h.wait_job(&drop_job, "succeeded").await;
    assert!(!h.database_exists(&id).await);
    assert_eq!(
        h.get(&format!("/v1/tenants/{id}")).await.body["status"],
        "deleted"
    );
    h.stop().await;
}

both_backends!(two_workers_share_the_queue_without_running_a_job_twice);
async fn two_workers_share_the_queue_without_running_a_job_twice(backend: Engine) {
    let h = Harness::started(backend).await;
    // A second admin process on the same catalog.
    let second = tenantgate_catalog::Catalog::connect(&h.tc.url(), 4)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(tenantgate_admin::run_worker(
        h.config.clone(),
        second,
        stop.clone(),
    ));
    h.shard("shard-a").await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(h.tenant(&format!("pair-{i:02}"), None).await.0);
    }
    for id in &ids {
        h.wait_status(id, "active").await;
    }
    for id in &ids {
        let jobs = h.catalog.jobs_of_tenant(id.parse().unwrap()).await.unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].attempts, 1, "claimed once");
    }
    let audit = h.get("/v1/audit?limit=1000").await;
    let activations = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "tenant.activate")
        .count();
    assert_eq!(activations, ids.len());
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), worker)
        .await
        .unwrap()
        .unwrap();
}

/// Whether `stored` (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`) is the verifier of
/// `password`: an implementation independent of the crate's, from RFC 5802.
fn scram_matches(password: &str, stored: &str) -> bool {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let mac = |key: &[u8], data: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    };
    let Some(rest) = stored.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let (params, keys) = rest.split_once('$').unwrap();
    let (iterations, salt) = params.split_once(':').unwrap();
    let (stored_key, _server_key) = keys.split_once(':').unwrap();
    let iterations: u32 = iterations.parse().unwrap();
    let mut block = STANDARD.decode(salt).unwrap();
    block.extend_from_slice(&[0, 0, 0, 1]);
    let mut u = mac(password.as_bytes(), &block);
    let mut salted = u.clone();
    for _ in 1..iterations {
        u = mac(password.as_bytes(), &u);
        salted.iter_mut().zip(&u).for_each(|(s, x)| *s ^= x);
    }
    let client_key = mac(&salted, b"Client Key");
    STANDARD.encode(Sha256::digest(&client_key)) == stored_key
}

both_backends!(concurrent_claims_take_each_job_once_and_leases_fence);
async fn concurrent_claims_take_each_job_once_and_leases_fence(backend: Engine) {
    use tenantgate_catalog::store::jobs::{self, NewJob};
    let h = Harness::new(backend, |_| {}).await;
    let now = tenantgate_contract::time::now_ms();
    let mut tx = h.catalog.begin_write().await.unwrap();
    for _ in 0..20 {
        let job = NewJob {
            id: uuid::Uuid::now_v7(),
            kind: "noop",
            tenant_id: None,
            payload: json!({}),
            max_attempts: 3,
            run_at: now,
        };
        jobs::enqueue(&mut tx, &job).await.unwrap();
    }
    tx.commit().await.unwrap();

    let claimers = (0..6).map(|i| {
        let catalog = h.catalog.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            let lease = tenantgate_contract::time::now_ms() + 60_000;
            while let Some(job) = catalog.claim_job(&format!("w{i}"), lease).await.unwrap() {
                mine.push(job.id);
            }
            mine
        })
    });
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 20, "every job claimed");
    assert_eq!(unique.len(), 20, "no job claimed twice");

    // A lease that ran out lets another worker take the job; the old holder is fenced off.
    let mut tx = h.catalog.begin_write().await.unwrap();
    let id = uuid::Uuid::now_v7();
    let job = NewJob {
        id,
        kind: "noop",
        tenant_id: None,
        payload: json!({}),
        max_attempts: 3,
        run_at: now,
    };
    jobs::enqueue(&mut tx, &job).await.unwrap();
    tx.commit().await.unwrap();
    let expired = tenantgate_contract::time::now_ms() - 1;
    assert_eq!(
        h.catalog
            .claim_job("old", expired)
            .await
            .unwrap()
            .unwrap()
            .id,
        id
    );
    let taken = h
        .catalog
        .claim_job("new", expired + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((taken.id, taken.attempts), (id, 2));
    assert!(!h
        .catalog
        .renew_job_lease(id, "old", expired + 60_000)
        .await
        .unwrap());
    let mut tx = h.catalog.begin_write().await.unwrap();
    assert!(
        !jobs::finish(&mut tx, id, "old", JobStatus::Succeeded, None, None)
            .await
            .unwrap()
    );
    assert!(
        jobs::finish(&mut tx, id, "new", JobStatus::Succeeded, None, None)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    assert!(h
        .catalog
        .claim_job("any", expired + 60_000)
        .await
        .unwrap()
        .is_none());
}
