//! The signed tenant header: only verified requests get a tenant, and refused ones touch no
//! tenant database.

use reqwest::StatusCode;
use serde_json::Value;
use tenantgate_config::db_url::Engine;
use tenantgate_contract::crypto::decode_key;
use tenantgate_contract::crypto::random_secret;
use tenantgate_contract::signing::{SigningKeys, TenantClaims};
use tenantgate_contract::time::now_secs;

use crate::both_backends;
use crate::support::{metric, open_connections, Options, TestApp, SHARD};

async fn whoami_comes_from_the_signed_header_without_a_database(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let de = app
        .tenant("globex", serde_json::json!({"locale": "de"}))
        .await;
    let plain = app.tenant("acme", serde_json::json!({})).await;

    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let resp = app.get(&de, "/whoami").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["tenant_id"], de.id.to_string());
    assert_eq!(body["slug"], "globex");
    assert_eq!(body["shard"], SHARD);
    assert_eq!(body["epoch"], de.epoch);
    assert_eq!(body["locale"], "de");
    let body: Value = app
        .get(&plain, "/whoami")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["locale"], "en", "{body}");

    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "tenantgate_app_tenant_pools_opened_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(open_connections(&metrics), 0.0);
    assert_eq!(
        metric(&metrics, "tenantgate_app_db_connection_budget"),
        20.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"tenantgate_app_requests_total{code="200",tenant="globex"}"#
        ),
        1.0,
        "{metrics}"
    );
    app.stop().await;
}
both_backends!(whoami_comes_from_the_signed_header_without_a_database);

/// Tenant routes checked for refusals.
const PATHS: &[&str] = &["/whoami", "/api/items", "/api/export", "/dashboard"];

async fn bad_signatures_get_401_and_open_no_connection(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", serde_json::json!({})).await;
    let now = now_secs();
    let other_key = SigningKeys::new(
        "k2",
        &[("k2".into(), decode_key(&random_secret(32)).unwrap())],
    )
    .unwrap();
    let unknown_kid = SigningKeys::new(
        "k9",
        &[("k9".into(), decode_key(&random_secret(32)).unwrap())],
    )
    .unwrap();

    let mut cases: Vec<(&str, Vec<(&'static str, String)>)> = Vec::new();
    let valid = app.signed_headers(&t, &app.edge_keys, now, "GET", "/whoami");
    cases.push((
        "missing",
        valid
            .iter()
            .filter(|(k, _)| *k != "x-tenant-signature")
            .cloned()
            .collect(),
    ));
    cases.push((
        "expired",
        app.signed_headers(&t, &app.edge_keys, now - 3600, "GET", "/whoami"),
    ));
    cases.push((
        "future",
        app.signed_headers(&t, &app.edge_keys, now + 3600, "GET", "/whoami"),
    ));
    cases.push((
        "other key",
        app.signed_headers(&t, &other_key, now, "GET", "/whoami"),
    ));
    cases.push((
        "unknown kid",
        app.signed_headers(&t, &unknown_kid, now, "GET", "/whoami"),
    ));
    let mut forged = valid.clone();
    forged
        .iter_mut()
        .find(|(k, _)| *k == "x-tenant-slug")
        .unwrap()
        .1 = "globex".into();
    cases.push(("forged slug", forged));
    let mut forged = valid.clone();
    forged
        .iter_mut()
        .find(|(k, _)| *k == "x-tenant-id")
        .unwrap()
        .1 = uuid::Uuid::new_v4().to_string();
    cases.push(("forged id", forged));
    let mut garbage = valid.clone();
    garbage
        .iter_mut()
        .find(|(k, _)| *k == "x-tenant-signature")
        .unwrap()
        .1 = "v1;kid=k2;ts=1;sig=!!".into();
    cases.push(("malformed", garbage));

    for (what, headers) in &cases {
        for path in PATHS {
            let mut rb = app
                .client
                .get(format!("{}{path}", app.base))
                .bearer_auth("whatever");
            for (k, v) in headers {
                rb = rb.header(*k, v);
            }
            let resp = rb.send().await.unwrap();
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{what} {path}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "invalid_signature", "{what} {path}");
        }
    }

    // A correctly signed request for another shard is refused too.
    let request_id = "r-1";
    let claims = TenantClaims {
        tenant_id: t.id,
        slug: &t.slug,
        shard: "shard-b",
        epoch: t.epoch,
        request_id,
        method: "GET",
        target: "/whoami",
    };
    let resp = app
        .client
        .get(format!("{}/whoami", app.base))
        .bearer_auth("whatever")
        .header("x-tenant-id", t.id.to_string())
        .header("x-tenant-slug", &t.slug)
        .header("x-tenant-shard", "shard-b")
        .header("x-tenant-epoch", t.epoch.to_string())
        .header("x-request-id", request_id)
        .header("x-tenant-signature", app.edge_keys.sign(&claims, now))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST);

    let metrics = app.metrics().await;
    assert_eq!(
        metric(&metrics, "tenantgate_app_tenant_pools_opened_total"),
        0.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "tenantgate_app_tenant_pools"), 0.0);
    assert_eq!(open_connections(&metrics), 0.0);
    assert_eq!(
        metric(
            &metrics,
            r#"tenantgate_app_requests_total{code="401",tenant="_none"}"#
        ),
        (cases.len() * PATHS.len()) as f64,
        "{metrics}"
    );

    // The previous key (k1) is still accepted: keys rotate.
    let mut rb = app.client.get(format!("{}/whoami", app.base));
    for (k, v) in app.signed_headers(&t, &app.previous_keys, now, "GET", "/whoami") {
        rb = rb.header(k, v);
    }
    assert_eq!(rb.send().await.unwrap().status(), StatusCode::OK);
    app.stop().await;
}
both_backends!(bad_signatures_get_401_and_open_no_connection);

/// Epoch fencing: after a move flips the tenant (new shard, new epoch), a request signed by a
/// stale edge (old shard, old epoch) is refused with a retryable 503 `tenant_moved`, and the
/// edge's retry with the new route lands on the new shard.
async fn a_stale_epoch_is_refused_as_tenant_moved(backend: Engine) {
    let mut app = TestApp::start(backend, Options::default()).await;
    app.add_shard("shard-b").await;
    let stale = app.tenant("mover", serde_json::json!({})).await;
    assert_eq!(
        app.get(&stale, "/whoami").send().await.unwrap().status(),
        StatusCode::OK
    );
    app.catalog
        .update_tenant(
            stale.id,
            &tenantgate_catalog::store::TenantPatch {
                shard: Some("shard-b".into()),
                bump_epoch: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // The app learns the new epoch from its catalog feed.
    let resp = tenantgate_testkit::wait_until(
        "the app to refuse the stale epoch",
        std::time::Duration::from_secs(10),
        || async {
            let resp = app.get(&stale, "/whoami").send().await.unwrap();
            (resp.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(resp)
        },
    )
    .await;
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "tenant_moved");

    let mut moved = stale.clone();
    moved.shard = "shard-b".into();
    moved.epoch = stale.epoch + 1;
    let resp = app.get(&moved, "/whoami").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["shard"], "shard-b");
    assert_eq!(body["epoch"], moved.epoch);
    app.stop().await;
}
both_backends!(a_stale_epoch_is_refused_as_tenant_moved);

/// Send `GET|POST target` to the app with `headers`; the status and the error code.
async fn send(
    app: &TestApp,
    method: reqwest::Method,
    target: &str,
    headers: &[(&'static str, String)],
) -> (StatusCode, Value) {
    let mut rb = app
        .client
        .request(method, format!("{}{target}", app.base))
        .bearer_auth("whatever");
    for (k, v) in headers {
        rb = rb.header(*k, v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Signature v2 (DESIGN §9): a captured header is good for one method, one target and one use.
async fn captured_signatures_cannot_be_reused(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", serde_json::json!({})).await;
    let now = now_secs();

    // The first use passes; the same header again within the skew window is a replay.
    let whoami = app.signed_headers(&t, &app.edge_keys, now, "GET", "/whoami");
    let (status, _) = send(&app, reqwest::Method::GET, "/whoami", &whoami).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(&app, reqwest::Method::GET, "/whoami", &whoami).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "replayed_request", "{body}");

    // Fresh headers signed for one request do not verify for another method or target (each
    // is refused before the replay cache, so these are the signature's own refusals).
    let cases = [
        (
            "other path",
            "GET",
            "/whoami",
            reqwest::Method::GET,
            "/api/export",
        ),
        (
            "other method",
            "GET",
            "/api/items",
            reqwest::Method::POST,
            "/api/items",
        ),
        (
            "other query",
            "GET",
            "/api/items?limit=1",
            reqwest::Method::GET,
            "/api/items?limit=2",
        ),
        (
            "query dropped",
            "GET",
            "/api/items?limit=1",
            reqwest::Method::GET,
            "/api/items",
        ),
    ];
    for (what, signed_method, signed_target, method, target) in cases {
        let headers = app.signed_headers(&t, &app.edge_keys, now, signed_method, signed_target);
        let (status, body) = send(&app, method, target, &headers).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_signature", "{what}: {body}");
    }
    // The replay cache keys on the request id, whatever was signed: a header for a new target
    // with an id already used is refused too.
    let mut reused = app.signed_headers(&t, &app.edge_keys, now, "GET", "/api/items");
    let used_id = whoami
        .iter()
        .find(|(k, _)| *k == "x-request-id")
        .unwrap()
        .1
        .clone();
    let signature = app.edge_keys.sign(
        &TenantClaims {
            tenant_id: t.id,
            slug: &t.slug,
            shard: &t.shard,
            epoch: t.epoch,
            request_id: &used_id,
            method: "GET",
            target: "/dashboard",
        },
        now,
    );
    for (k, v) in reused.iter_mut() {
        match *k {
            "x-request-id" => *v = used_id.clone(),
            "x-tenant-signature" => *v = signature.clone(),
            _ => {}
        }
    }
    let (status, body) = send(&app, reqwest::Method::GET, "/dashboard", &reused).await;
    assert_eq!(body["error"]["code"], "replayed_request", "{status} {body}");

    // v1 headers (no method, no path) are refused while `security.accept_v1` is off.
    let request_id = uuid::Uuid::new_v4().to_string();
    let claims = TenantClaims {
        tenant_id: t.id,
        slug: &t.slug,
        shard: &t.shard,
        epoch: t.epoch,
        request_id: &request_id,
        method: "GET",
        target: "/whoami",
    };
    let mut v1 = app.signed_headers(&t, &app.edge_keys, now, "GET", "/whoami");
    for (k, v) in v1.iter_mut() {
        match *k {
            "x-request-id" => *v = request_id.clone(),
            "x-tenant-signature" => *v = app.edge_keys.sign_v1(&claims, now),
            _ => {}
        }
    }
    let (status, body) = send(&app, reqwest::Method::GET, "/whoami", &v1).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "invalid_signature", "{body}");
    app.stop().await;

    // With `accept_v1` on, the same header verifies (once: replays are refused for v1 too).
    let lenient = TestApp::start(
        backend,
        Options {
            accept_v1: true,
            ..Options::default()
        },
    )
    .await;
    let t = lenient.tenant("acme", serde_json::json!({})).await;
    let claims = TenantClaims {
        tenant_id: t.id,
        slug: &t.slug,
        shard: &t.shard,
        epoch: t.epoch,
        ..claims
    };
    let mut v1 = lenient.signed_headers(&t, &lenient.edge_keys, now, "GET", "/whoami");
    for (k, v) in v1.iter_mut() {
        match *k {
            "x-request-id" => *v = request_id.clone(),
            "x-tenant-signature" => *v = lenient.edge_keys.sign_v1(&claims, now),
            _ => {}
        }
    }
    let (status, body) = send(&lenient, reqwest::Method::GET, "/whoami", &v1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(&lenient, reqwest::Method::GET, "/whoami", &v1).await;
    assert_eq!(body["error"]["code"], "replayed_request", "{status} {body}");
    lenient.stop().await;
}
both_backends!(captured_signatures_cannot_be_reused);

/// Epoch fencing by the tenant database itself. A move records the new epoch in the old copy
/// too (the admin's move tests check that it does). An app whose catalog cache has not caught
/// up yet still has the tenant on this shard at the old epoch, so the catalog check lets a
/// stale request through and it would reach the old copy: the copy's record refuses it with a
/// retryable 503 `tenant_moved` before anything is written, within the pool's recheck
/// interval (the pool had read the record before the move). A request signed with the new
/// epoch is served.
async fn a_database_recording_a_newer_epoch_refuses_a_stale_request(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let stale = app.tenant("fenced", serde_json::json!({})).await;
    let owner = app.user(&stale, "owner", None).await;
    let write = |t: &crate::support::TestTenant, title: &str| {
        app.request(t, reqwest::Method::POST, "/api/items")
            .bearer_auth(&owner)
            .json(&serde_json::json!({ "title": title }))
            .send()
    };
    // The pool opens and reads the record (none yet: nothing is fenced).
    assert_eq!(
        write(&stale, "before").await.unwrap().status(),
        StatusCode::CREATED
    );

    // What the move's hold writes into the old copy (the catalog is left as it was: this app
    // has not caught up).
    let pool = app.tenant_pool(&stale).await;
    sqlx::query("INSERT INTO tenantgate_epoch (id, epoch) VALUES (1, $1)")
        .bind(stale.epoch + 1)
        .execute(&pool)
        .await
        .unwrap();

    tenantgate_testkit::wait_until(
        "the pool to read the newer epoch",
        std::time::Duration::from_secs(10),
        || async {
            let resp = app
                .get(&stale, "/api/items")
                .bearer_auth(&owner)
                .send()
                .await
                .unwrap();
            (resp.status() == StatusCode::SERVICE_UNAVAILABLE).then_some(())
        },
    )
    .await;
    let resp = write(&stale, "stale").await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "tenant_moved");

    // The edge's retry carries the new epoch: served.
    let mut current = stale.clone();
    current.epoch = stale.epoch + 1;
    assert_eq!(
        write(&current, "after").await.unwrap().status(),
        StatusCode::CREATED
    );

    let mut titles: Vec<String> = sqlx::query_scalar("SELECT title FROM items")
        .fetch_all(&pool)
        .await
        .unwrap();
    titles.sort();
    assert_eq!(titles, ["after", "before"], "the stale write wrote nothing");
    pool.close().await;
    app.stop().await;
}
both_backends!(a_database_recording_a_newer_epoch_refuses_a_stale_request);
