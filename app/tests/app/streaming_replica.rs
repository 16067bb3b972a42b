//! A real PostgreSQL streaming replica (a private primary + standby started by the test):
//! reads go to the standby, and a client reads its own write at once after writing.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Row};
use tenantgate_config::db_url::Engine;
use tenantgate_testkit::pg_server::PgServer;
use tenantgate_testkit::wait_until;

use crate::support::{metric, Options, TestApp};

async fn connections_to(server: &str, db: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(server).await.unwrap();
    let row = sqlx::query("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(db)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let _ = conn.close().await;
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_a_streaming_replica_and_clients_read_their_writes() {
    let (primary, standby) = tokio::task::spawn_blocking(|| {
        let primary = PgServer::start();
        let standby = primary.standby();
        (primary, standby)
    })
    .await
    .unwrap();
    let app = TestApp::start(
        Engine::Postgres,
        Options {
            shard_location: Some((primary.url(), vec![standby.url()])),
            ..Options::default()
        },
    )
    .await;
    let t = app.tenant("acme", json!({})).await;
    let db = tenantgate_catalog::tenant_db::db_name(t.id);
    let owner = app.user(&t, "owner", None).await;

    // The tenant's database reaches the standby by streaming replication; until it does, reads
    // fall back to the primary. Then they are served by the standby.
    wait_until(
        "reads served by the standby",
        Duration::from_secs(10),
        || async {
            let resp = app
                .get(&t, "/api/items")
                .bearer_auth(&owner)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            let m = app.metrics().await;
            (metric(&m, r#"tenantgate_app_db_acquires_total{role="replica"}"#) >= 1.0).then_some(())
        },
    )
    .await;
    assert!(
        connections_to(&standby.url(), &db).await >= 1,
        "the replica pool is connected to the standby"
    );

    for n in 0..20 {
        let resp = app
            .request(&t, Method::POST, "/api/items")
            .bearer_auth(&owner)
            .json(&json!({ "title": format!("write {n}") }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let until = resp.headers()["x-tenantgate-primary-until"]
            .to_str()
            .unwrap()
            .to_string();
        let id = resp.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        // At once, with the mark the write returned: the primary, which has the item.
        let resp = app
            .get(&t, &format!("/api/items/{id}"))
            .bearer_auth(&owner)
            .header("x-tenantgate-primary-until", &until)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "read-your-writes for write {n}"
        );
    }
    // Without the mark reads go to the standby, which catches up.
    wait_until(
        "the standby to have every write",
        Duration::from_secs(10),
        || async {
            let page: Value = app
                .get(&t, "/api/items?limit=100")
                .bearer_auth(&owner)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (page["items"].as_array().map(Vec::len) == Some(20)).then_some(())
        },
    )
    .await;

    // The standby really is read-only: the app's writes never went there.
    let mut on_standby = sqlx::PgConnection::connect(&standby.url()).await.unwrap();
    let in_recovery: bool = sqlx::query("SELECT pg_is_in_recovery()")
        .fetch_one(&mut on_standby)
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery);
    let _ = on_standby.close().await;
    app.stop().await;
    drop(standby);
    drop(primary);
}
