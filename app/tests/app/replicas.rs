//! Reads go to the shard's replica; after a write the client reads from the primary for the
//! read-your-writes window (header or cookie), so it always sees its own write.
//!
//! The "replica" is the test server listed again under another `application_name`, so the test
//! can tell which URL a connection was opened with. SQLite shards have no replicas: there every
//! read goes to the primary.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, Row};
use tenantgate_config::db_url::Engine;

use crate::both_backends;
use crate::support::{metric, Options, TestApp, REPLICA_APP_NAME};

async fn acquires(app: &TestApp) -> (f64, f64) {
    let m = app.metrics().await;
    (
        metric(&m, r#"tenantgate_app_db_acquires_total{role="primary"}"#),
        metric(&m, r#"tenantgate_app_db_acquires_total{role="replica"}"#),
    )
}

async fn reads_use_the_replica_except_right_after_a_write(backend: Engine) {
    let app = TestApp::start(
        backend,
        Options {
            replica: true,
            ..Options::default()
        },
    )
    .await;
    let t = app.tenant("acme", json!({})).await;
    let owner = app.user(&t, "owner", None).await;
    let has_replica = backend == Engine::Postgres;
    let read_role =
        |before: (f64, f64), after: (f64, f64)| match (after.0 - before.0, after.1 - before.1) {
            (1.0, 0.0) => "primary",
            (0.0, 1.0) => "replica",
            other => panic!("one acquire expected, got {other:?}"),
        };
    let expected_read = if has_replica { "replica" } else { "primary" };

    let before = acquires(&app).await;
    assert_eq!(
        app.get(&t, "/api/items")
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(read_role(before, acquires(&app).await), expected_read);

    let before = acquires(&app).await;
    let resp = app
        .request(&t, Method::POST, "/api/items")
        .bearer_auth(&owner)
        .json(&json!({"title": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(
        read_role(before, acquires(&app).await),
        "primary",
        "writes go to the primary"
    );
    let until = resp.headers()["x-tenantgate-primary-until"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(until.parse::<i64>().unwrap() > tenantgate_contract::time::now_ms());
    let cookie = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
        .find(|c| c.starts_with("tg_primary_until="))
        .expect("a read-your-writes cookie");
    let item: Value = resp.json().await.unwrap();
    let path = format!("/api/items/{}", item["id"].as_str().unwrap());

    // Right after the write, by header or by cookie: the primary, which has the item.
    for (name, value) in [
        ("x-tenantgate-primary-until", until.as_str()),
        ("cookie", cookie.as_str()),
    ] {
        let before = acquires(&app).await;
        let resp = app
            .get(&t, &path)
            .bearer_auth(&owner)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{name}");
        assert_eq!(read_role(before, acquires(&app).await), "primary", "{name}");
    }
    // Without the mark: the replica again.
    let before = acquires(&app).await;
    assert_eq!(
        app.get(&t, &path)
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(read_role(before, acquires(&app).await), expected_read);

    if has_replica {
        // The replica pool really was opened with the replica's URL.
        let mut server = sqlx::PgConnection::connect(&app.shard_url()).await.unwrap();
        let names: Vec<String> =
            sqlx::query("SELECT application_name FROM pg_stat_activity WHERE datname = $1")
                .bind(tenantgate_catalog::tenant_db::db_name(t.id))
                .fetch_all(&mut server)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
        assert!(names.iter().any(|n| n == REPLICA_APP_NAME), "{names:?}");
        assert!(names.iter().any(|n| n != REPLICA_APP_NAME), "{names:?}");
        let _ = server.close().await;
    }
    app.stop().await;
}
both_backends!(reads_use_the_replica_except_right_after_a_write);
