//! Items CRUD, validation, pagination and export against the tenant's own database.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tenantgate_config::db_url::Engine;

use crate::both_backends;
use crate::support::{Options, TestApp};

async fn items_crud_validation_pagination_export(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", json!({})).await;
    let owner = app.user(&t, "owner", None).await;

    // No token: 401 before any database work.
    let resp = app.get(&t, "/api/items").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthenticated");

    // Validation: every bad field reported, 422.
    let long_title = "t".repeat(201);
    let long_body = "b".repeat(10_001);
    for (input, fields) in [
        (json!({}), vec!["title"]),
        (json!({"title": "   "}), vec!["title"]),
        (
            json!({"title": long_title, "body": long_body}),
            vec!["body", "title"],
        ),
    ] {
        let resp = app
            .request(&t, Method::POST, "/api/items")
            .bearer_auth(&owner)
            .json(&input)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{input}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "validation_failed");
        let got: Vec<&str> = body["error"]["fields"]
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(got, fields, "{input}");
    }
    let resp = app
        .request(&t, Method::POST, "/api/items")
        .bearer_auth(&owner)
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // Create 25 items; the edge cases of the limits are accepted.
    let mut ids = Vec::new();
    for i in 0..25 {
        let title = if i == 0 {
            "é".repeat(200)
        } else {
            format!("item {i:02}")
        };
        let body = if i == 0 {
            "b".repeat(10_000)
        } else {
            String::new()
        };
        let resp = app
            .request(&t, Method::POST, "/api/items")
            .bearer_auth(&owner)
            .json(&json!({"title": title, "body": body}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
        let item: Value = resp.json().await.unwrap();
        assert_eq!(item["title"], title.as_str());
        ids.push(item["id"].as_str().unwrap().to_string());
    }

    // Pages of 20 and 5, in creation order, with an opaque cursor.
    let first: Value = app
        .get(&t, "/api/items")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let page1: Vec<&str> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        page1,
        ids[..20].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let second: Value = app
        .get(&t, &format!("/api/items?limit=100&cursor={cursor}"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(second["items"].as_array().unwrap().len(), 5);
    assert_eq!(second["items"][4]["id"], ids[24].as_str());
    assert!(second["next_cursor"].is_null());
    let small: Value = app
        .get(&t, "/api/items?limit=1")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(small["items"].as_array().unwrap().len(), 1);
    // Against the documented parameters: 422; a well-formed cursor no page gave names no
    // page: 404.
    for (bad, status) in [
        ("limit=0", StatusCode::UNPROCESSABLE_ENTITY),
        ("limit=101", StatusCode::UNPROCESSABLE_ENTITY),
        ("limit=x", StatusCode::UNPROCESSABLE_ENTITY),
        ("bogus=1", StatusCode::UNPROCESSABLE_ENTITY),
        ("cursor=garbage", StatusCode::NOT_FOUND),
    ] {
        let resp = app
            .get(&t, &format!("/api/items?{bad}"))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{bad}");
    }

    // Read, replace, delete.
    let id = &ids[3];
    let item: Value = app
        .get(&t, &format!("/api/items/{id}"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(item["title"], "item 03");
    let resp = app
        .request(&t, Method::PUT, &format!("/api/items/{id}"))
        .bearer_auth(&owner)
        .json(&json!({"title": "renamed", "body": "new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let item: Value = app
        .get(&t, &format!("/api/items/{id}"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (item["title"].as_str(), item["body"].as_str()),
        (Some("renamed"), Some("new"))
    );
    let resp = app
        .request(&t, Method::PUT, &format!("/api/items/{id}"))
        .bearer_auth(&owner)
        .json(&json!({"title": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let resp = app
        .request(&t, Method::DELETE, &format!("/api/items/{id}"))
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    for method in [Method::GET, Method::DELETE] {
        let resp = app
            .request(&t, method.clone(), &format!("/api/items/{id}"))
            .bearer_auth(&owner)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{method}");
    }
    let resp = app
        .get(&t, "/api/items/not-a-uuid")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    // Export: one JSON document with every remaining item.
    let resp = app
        .get(&t, "/api/export")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let export: Value = resp.json().await.unwrap();
    assert_eq!(export["tenant"]["slug"], "acme");
    let exported: Vec<&str> = export["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).filter(|i| i != id).collect();
    expected.sort();
    let mut got = exported.clone();
    got.sort();
    assert_eq!(got, expected);
    app.stop().await;
}
both_backends!(items_crud_validation_pagination_export);

async fn export_streams_many_pages(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("bulk", json!({})).await;
    let owner = app.user(&t, "owner", None).await;
    // Straight into the tenant database: more than two export pages.
    let pool = app.tenant_pool(&t).await;
    for i in 0..1203 {
        sqlx::query("INSERT INTO items (id, title, body, created_at, updated_at) VALUES ($1, $2, '', $3, $3)")
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(format!("bulk {i}"))
            .bind(1_000 + (i / 3) as i64)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    let export: Value = app
        .get(&t, "/api/export")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = export["items"].as_array().unwrap();
    assert_eq!(items.len(), 1203);
    let mut ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1203, "no item twice");
    app.stop().await;
}
both_backends!(export_streams_many_pages);

async fn roles_limit_what_users_may_do(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", json!({})).await;
    let now = tenantgate_contract::time::now_ms();
    let owner = app.user(&t, "owner", Some(now + 3_600_000)).await;
    let member = app.user(&t, "member", None).await;
    let viewer = app.user(&t, "viewer", None).await;
    let expired = app.user(&t, "owner", Some(now - 1)).await;

    let post = |token: &str| {
        app.request(&t, Method::POST, "/api/items")
            .bearer_auth(token)
            .json(&json!({"title": "x"}))
    };
    let status = |r: reqwest::Response| r.status();
    assert_eq!(
        status(post(&owner).send().await.unwrap()),
        StatusCode::CREATED
    );
    assert_eq!(
        status(post(&member).send().await.unwrap()),
        StatusCode::CREATED
    );
    let resp = post(&viewer).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(
        status(
            app.get(&t, "/api/items")
                .bearer_auth(&viewer)
                .send()
                .await
                .unwrap()
        ),
        StatusCode::OK
    );

    assert_eq!(
        status(
            app.get(&t, "/api/export")
                .bearer_auth(&owner)
                .send()
                .await
                .unwrap()
        ),
        StatusCode::OK
    );
    assert_eq!(
        status(
            app.get(&t, "/api/export")
                .bearer_auth(&member)
                .send()
                .await
                .unwrap()
        ),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(
            app.get(&t, "/api/export")
                .bearer_auth(&viewer)
                .send()
                .await
                .unwrap()
        ),
        StatusCode::FORBIDDEN
    );

    for token in [expired.as_str(), "tgu_unknown", ""] {
        let resp = app
            .get(&t, "/api/items")
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(
            status(post(token).send().await.unwrap()),
            StatusCode::UNAUTHORIZED
        );
    }
    // A token of one tenant means nothing to another.
    let other = app.tenant("globex", json!({})).await;
    let resp = app
        .get(&other, "/api/items")
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    app.stop().await;
}
both_backends!(roles_limit_what_users_may_do);
