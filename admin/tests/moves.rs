//! Moving a tenant to another shard: refused to its own shard or an unknown one, then the data
//! is copied, the shard switches with a new epoch and the old database is removed.

use serde_json::json;
use sqlx::Row;
use tenantgate_testkit::admin::{fields, Harness};
use tenantgate_testkit::{both_backends, Engine};

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
