//! Deleting tenants: delete keeps the database for the grace period, purge drops it (and the
//! login) at once; a purge while provisioning keeps failing drops everything.

use std::time::Duration;

use tenantgate_testkit::admin::{count, migrations_plus, pg, Harness};
use tenantgate_testkit::{both_backends, wait_until, Engine};

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
    // A deleted tenant is gone for the API (404), and listed under status=deleted.
    assert_eq!(h.get(&format!("/v1/tenants/{id}")).await.status, 404);
    let listed = h.get("/v1/tenants?status=deleted").await;
    assert_eq!(listed.body["tenants"][0]["id"], id.as_str());
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

both_backends!(purge_while_provisioning_retries_drops_everything);
async fn purge_while_provisioning_retries_drops_everything(backend: Engine) {
    // Provisioning keeps failing (a broken second migration) after creating the database.
    let dir = migrations_plus(backend, "0002_broken.sql", "CREATE TABLE nonsense (;");
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
    assert_eq!(h.get(&format!("/v1/tenants/{id}")).await.status, 404);
    let listed = h.get("/v1/tenants?status=deleted").await;
    assert_eq!(listed.body["tenants"][0]["id"], id.as_str());
    h.stop().await;
}
