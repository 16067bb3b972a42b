//! Moving a tenant to another shard: refused to its own shard or an unknown one, then the data
//! is copied, the shard switches with a new epoch and the old database is removed. Across
//! PostgreSQL servers (the kit's private server, with logical WAL, to the test server) under
//! writes: every committed write arrives once, the old copy is read-only, nothing of the
//! replication is left; a move that cannot start rolls back. SQLite: the copy is taken while
//! the tenant serves; the hold copies again only when a write landed after it, and no write is
//! lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;
use sqlx::{Connection, Row};
use tenantgate_catalog::tenant_db::{self, Credentials};
use tenantgate_testkit::admin::{count, fields, pg, Harness};
use tenantgate_testkit::pg_server::PgServer;
use tenantgate_testkit::{both_backends, wait_until, Engine};

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
        h.post(&format!("/v1/tenants/{id}/move"), json!({"shard": "nope"}))
            .await
            .status,
        404
    );
    assert_eq!(
        fields(
            &h.post(&format!("/v1/tenants/{id}/move"), json!({"shard": "No pe"}))
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
    // The copy the tenant now uses records the new epoch (epoch fencing).
    assert_eq!(h.recorded_epoch(&id).await, moved["epoch"].as_i64());

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
    let audit = h.get(&format!("/v1/audit?tenant={id}&limit=3")).await;
    assert_eq!(audit.body["entries"][0]["action"], "tenant.move_complete");
    assert_eq!(audit.body["entries"][1]["action"], "tenant.move_hold");
    assert_eq!(audit.body["entries"][2]["action"], "tenant.move");
    let job = h.get(&format!("/v1/jobs/{job}")).await;
    assert_eq!(job.body["progress"]["phase"], "done", "{:?}", job.body);
    if backend == Engine::Sqlite {
        // Nothing wrote after the online copy: the hold copied nothing.
        assert_eq!(
            job.body["progress"]["hold_recopied"], false,
            "{:?}",
            job.body
        );
        assert!(
            job.body["progress"]["copy_seconds"].is_f64(),
            "{:?}",
            job.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_move_copies_online_and_loses_no_write() {
    let h = Harness::started(Engine::Sqlite).await;
    h.shard("shard-a").await;
    h.shard("shard-b").await;
    let (id, _) = h.tenant("busy", Some("shard-a")).await;
    h.wait_status(&id, "active").await;
    let tenant = h.catalog.tenant(&id).await.unwrap().unwrap();
    let source = tenant_db::sqlite_file(&h.tc.shard_database_url("shard-a"), &tenant.db_name);
    let url = format!("sqlite://{}", source.display());
    // Enough rows that the online copy takes a moment, with writes going on.
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < 20000)
         INSERT INTO items (id, title, body, created_at, updated_at)
         SELECT 'seed-' || n, 'seed', printf('%.200c', 'x'), 1, 1 FROM g",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    // A writer on the source until it sees the hold (the edge would hold its requests from
    // then on; the hold waits one feed poll interval before copying, far longer than one
    // status check and one insert).
    let writer = tokio::spawn({
        let (catalog, id) = (h.catalog.clone(), id.clone());
        async move {
            let mut acknowledged = Vec::new();
            loop {
                let now = catalog.tenant(&id).await.unwrap().unwrap();
                if now.status != tenantgate_contract::TenantStatus::Active || now.shard != "shard-a"
                {
                    break;
                }
                let item = format!("w{}", acknowledged.len());
                sqlx::query(
                    "INSERT INTO items (id, title, body, created_at, updated_at) VALUES (?, 'w', '', 1, 1)",
                )
                .bind(&item)
                .execute(&mut conn)
                .await
                .unwrap();
                acknowledged.push(item);
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            conn.close().await.unwrap();
            acknowledged
        }
    });
    let r = h
        .post(
            &format!("/v1/tenants/{id}/move"),
            json!({"shard": "shard-b"}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let job = h
        .wait_job(r.body["job_id"].as_str().unwrap(), "succeeded")
        .await;
    let acknowledged = writer.await.unwrap();
    eprintln!(
        "{} writes during the move; progress {}",
        acknowledged.len(),
        job["progress"]
    );
    assert!(!acknowledged.is_empty(), "the writer ran");
    assert!(job["progress"]["hold_recopied"].is_boolean(), "{job}");

    let pool = h.tenant_pool(&id).await;
    let on_target: Vec<String> = sqlx::query_scalar("SELECT id FROM items WHERE title = 'w'")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    for item in &acknowledged {
        assert!(on_target.contains(item), "acknowledged write {item} lost");
    }
    assert_eq!(on_target.len(), acknowledged.len(), "nothing else appeared");
}

/// The tenant's own login on `server` (its sealed credentials), database `db`.
fn tenant_url(h: &Harness, tenant: &tenantgate_catalog::Tenant, server: &str) -> String {
    let login = Credentials::open(
        tenant.db_credentials.as_deref().unwrap(),
        &h.config.security.credential_key,
        tenant.id,
    )
    .unwrap();
    tenant_db::postgres_url(server, &tenant.db_name, Some(&login)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_another_server_copies_under_writes_and_freezes_the_old_copy() {
    let source = tokio::task::spawn_blocking(PgServer::shared).await.unwrap();
    let h = Harness::started(Engine::Postgres).await;
    h.shard_at("shard-a", &source.url()).await;
    h.shard("shard-b").await;
    let (id, _) = h.tenant("far", Some("shard-a")).await;
    h.wait_status(&id, "active").await;
    let before = h.catalog.tenant(&id).await.unwrap().unwrap();
    let source_url = tenant_url(&h, &before, &source.url());

    // Rows before the move, then a writer that keeps inserting until the freeze stops it;
    // the ids it saw committed must all arrive, once.
    let mut conn = sqlx::PgConnection::connect(&source_url).await.unwrap();
    sqlx::query(
        "INSERT INTO items (id, title, body, created_at, updated_at)
         SELECT 'pre-' || g, 'x', '', 1, 1 FROM generate_series(1, 2000) g",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut committed = Vec::new();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let id = format!("w-{n}");
                let r = sqlx::query(
                    "INSERT INTO items (id, title, body, created_at, updated_at) VALUES ($1, 'w', '', 1, 1)",
                )
                .bind(&id)
                .execute(&mut conn)
                .await;
                match r {
                    Ok(_) => committed.push(id),
                    Err(_) => break, // frozen: the session ended or the database is read-only
                }
            }
            committed
        }
    });
    wait_until("some writes", std::time::Duration::from_secs(5), || async {
        let mut c = sqlx::PgConnection::connect(&source_url).await.unwrap();
        let n = count(&mut c, "SELECT COUNT(*) FROM items WHERE title = $1", "w").await;
        (n > 20).then_some(())
    })
    .await;

    let r = h
        .post(
            &format!("/v1/tenants/{id}/move"),
            json!({"shard": "shard-b"}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let job = r.body["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        h.post(
            &format!("/v1/tenants/{id}/move"),
            json!({"shard": "shard-b"})
        )
        .await
        .status,
        409,
        "one move at a time"
    );
    let done = wait_until("the move", std::time::Duration::from_secs(60), || async {
        let r = h.get(&format!("/v1/jobs/{job}")).await;
        assert_ne!(r.body["status"], "failed", "{:?}", r.body);
        (r.body["status"] == "succeeded").then_some(r.body)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let committed = writer.await.unwrap();
    assert_eq!(done["progress"]["phase"], "done", "{done:?}");
    assert!(
        done["progress"]["rows_copied"].as_i64().is_some(),
        "{done:?}"
    );
    assert!(
        done["progress"]["hold_seconds"].as_f64().unwrap() < 10.0,
        "{done:?}"
    );
    assert!(done["progress"]["final_lsn"].is_string(), "{done:?}");

    let moved = h.catalog.tenant(&id).await.unwrap().unwrap();
    assert_eq!(moved.shard, "shard-b");
    assert_eq!(moved.status.as_str(), "active");
    assert!(moved.epoch > before.epoch);

    // Every committed write is on the new server, once; the old rows too.
    let target_url = tenant_url(&h, &moved, &h.pg_server());
    let mut target = sqlx::PgConnection::connect(&target_url).await.unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM items WHERE title = 'w'")
        .fetch_all(&mut target)
        .await
        .unwrap();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ids.len(), "no write duplicated");
    for id in &committed {
        assert!(ids.contains(id), "committed write {id} lost");
    }
    assert_eq!(
        count(
            &mut target,
            "SELECT COUNT(*) FROM items WHERE title = $1",
            "x"
        )
        .await,
        2000
    );
    // The target is the tenant's, writable, and free of the move's marker.
    sqlx::query("INSERT INTO items (id, title, body, created_at, updated_at) VALUES ('after', 'a', '', 1, 1)")
        .execute(&mut target)
        .await
        .unwrap();
    assert_eq!(
        count(
            &mut target,
            "SELECT COUNT(*) FROM pg_tables WHERE tablename = $1",
            "tenantgate_move_marker"
        )
        .await,
        0
    );
    // Epoch fencing: the new copy records the new epoch, and so does the old one, so a request
    // an edge still signs with the old epoch is refused by either.
    let recorded = "SELECT epoch FROM tenantgate_epoch WHERE id = 1";
    let on_target: i64 = sqlx::query_scalar(recorded)
        .fetch_one(&mut target)
        .await
        .unwrap();
    assert_eq!(on_target, moved.epoch);
    target.close().await.unwrap();

    // The old copy is read-only and awaits its drop; no subscription or slot is left.
    let mut old = sqlx::PgConnection::connect(&source_url).await.unwrap();
    let on_source: i64 = sqlx::query_scalar(recorded)
        .fetch_one(&mut old)
        .await
        .unwrap();
    assert_eq!(on_source, moved.epoch);
    let refused = sqlx::query("INSERT INTO items (id, title, body, created_at, updated_at) VALUES ('late', 'l', '', 1, 1)")
        .execute(&mut old)
        .await
        .unwrap_err();
    assert_eq!(
        refused
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("25006"),
        "{refused}"
    );
    let mut src_admin = pg(&source.url()).await;
    assert_eq!(
        count(
            &mut src_admin,
            "SELECT COUNT(*) FROM pg_replication_slots WHERE slot_name LIKE '%' || $1",
            &moved.db_name
        )
        .await,
        0
    );
    let mut dst_admin = pg(&h.pg_server()).await;
    assert_eq!(
        count(
            &mut dst_admin,
            "SELECT COUNT(*) FROM pg_subscription WHERE subname LIKE '%' || $1",
            &moved.db_name
        )
        .await,
        0
    );
    let drops: Vec<_> = h
        .catalog
        .jobs_of_tenant(moved.id)
        .await
        .unwrap()
        .into_iter()
        .filter(|j| j.kind == "drop_database")
        .collect();
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0].payload["shard"], "shard-a");

    let audit = h.get(&format!("/v1/audit?tenant={id}&limit=3")).await;
    assert_eq!(audit.body["entries"][0]["action"], "tenant.move_complete");
    assert_eq!(audit.body["entries"][1]["action"], "tenant.move_hold");
    let metrics = reqwest::get(format!("{}/metrics", h.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("tenantgate_moves_total{result=\"completed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tenantgate_move_hold_seconds_count 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_cannot_replicate_rolls_back() {
    // The test server has wal_level = replica: it cannot publish, so a move away fails.
    let target = tokio::task::spawn_blocking(PgServer::shared).await.unwrap();
    let h = Harness::started(Engine::Postgres).await;
    h.shard("shard-a").await;
    h.shard_at("shard-b", &target.url()).await;
    let (id, _) = h.tenant("stays", Some("shard-a")).await;
    h.wait_status(&id, "active").await;
    let r = h
        .post(
            &format!("/v1/tenants/{id}/move"),
            json!({"shard": "shard-b"}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let job = h
        .wait_job(r.body["job_id"].as_str().unwrap(), "failed")
        .await;
    assert_eq!(job["progress"]["phase"], "rolled_back", "{job:?}");
    assert!(
        job["error"].as_str().unwrap().contains("wal_level"),
        "{job:?}"
    );
    let t = h.catalog.tenant(&id).await.unwrap().unwrap();
    assert_eq!((t.shard.as_str(), t.status.as_str()), ("shard-a", "active"));
    let mut admin = pg(&target.url()).await;
    assert_eq!(
        count(
            &mut admin,
            "SELECT COUNT(*) FROM pg_database WHERE datname = $1",
            &t.db_name
        )
        .await,
        0,
        "nothing left on the target"
    );
}

both_backends!(rebalance_evens_out_then_drains_a_shard);
async fn rebalance_evens_out_then_drains_a_shard(backend: Engine) {
    use tenantgate_admin::rebalance::{self, Balance};
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    h.shard("shard-b").await;
    let mut ids = Vec::new();
    for slug in ["r1", "r2", "r3", "r4"] {
        ids.push(h.tenant(slug, Some("shard-a")).await.0);
    }
    for id in &ids {
        h.wait_status(id, "active").await;
    }
    let per_shard = |tenants: Vec<tenantgate_catalog::Tenant>| {
        let a = tenants.iter().filter(|t| t.shard == "shard-a").count();
        (a, tenants.len() - a)
    };
    let all = || async {
        let mut v = Vec::new();
        for id in &ids {
            v.push(h.catalog.tenant(id).await.unwrap().unwrap());
        }
        v
    };

    let proposed = rebalance::propose(&h.config, &h.catalog, Balance::Tenants)
        .await
        .unwrap();
    assert_eq!(proposed.len(), 2, "{proposed:?}");
    assert_eq!(per_shard(all().await), (4, 0), "a dry run changes nothing");
    rebalance::run(
        &h.config,
        &h.catalog,
        &proposed,
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(per_shard(all().await), (2, 2));
    assert!(rebalance::propose(&h.config, &h.catalog, Balance::Tenants)
        .await
        .unwrap()
        .is_empty());

    // Draining shard-b, then a rebalance, empties it.
    let r = h
        .patch("/v1/shards/shard-b", json!({"status": "draining"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let proposed = rebalance::propose(&h.config, &h.catalog, Balance::Tenants)
        .await
        .unwrap();
    assert!(
        proposed
            .iter()
            .all(|m| m.from == "shard-b" && m.to == "shard-a"),
        "{proposed:?}"
    );
    rebalance::run(
        &h.config,
        &h.catalog,
        &proposed,
        std::time::Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(per_shard(all().await), (4, 0));
    for t in all().await {
        assert_eq!(t.status.as_str(), "active");
    }
}
