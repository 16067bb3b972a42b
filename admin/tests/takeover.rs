//! Crash safety of the job queue: a job whose worker died, or was killed in the middle of it, is
//! taken over once its lease ran out and completed once; two workers share the queue; claims are
//! exclusive and an expired lease fences its old holder off.

use std::time::Duration;

use serde_json::json;
use sqlx::Row;
use tenantgate_catalog::store::jobs::JobStatus;
use tenantgate_testkit::admin::{count, migrations_plus, pg, Harness};
use tenantgate_testkit::{both_backends, wait_until, Engine};
use tokio_util::sync::CancellationToken;

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

/// Tenant migrations with a slow second step, so a worker can be killed in the middle.
fn slow_migrations(backend: Engine) -> tempfile::TempDir {
    let slow = match backend {
        Engine::Postgres => "SELECT pg_sleep(1.5);",
        Engine::Sqlite => "CREATE TABLE slow AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000) SELECT COUNT(*) AS n FROM c;",
    };
    migrations_plus(backend, "0002_slow.sql", slow)
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
