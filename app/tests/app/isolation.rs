//! Many tenants on two shards (an app process each): interleaved creates and reads never cross
//! tenants, and an app refuses tenants of the other shard.

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tenantgate_config::db_url::Engine;

use crate::both_backends;
use crate::support::{edge_headers, Options, Rng, TestApp, SHARD};

const TENANTS: usize = 20;
const OPERATIONS: usize = 400;

async fn no_tenant_sees_another_tenants_items(backend: Engine) {
    let mut app = TestApp::start(
        backend,
        Options {
            budget: 40,
            ..Options::default()
        },
    )
    .await;
    app.add_shard("shard-b").await;
    let tenants: Vec<_> = futures::stream::iter(0..TENANTS)
        .map(|i| {
            let app = &app;
            async move {
                let shard = if i % 2 == 0 { SHARD } else { "shard-b" };
                let t = app
                    .tenant_on(shard, &format!("iso-{i:02}"), json!({}))
                    .await;
                let token = app.user(&t, "owner", None).await;
                (t, token)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;

    let mut rng = Rng::new(0x5eed);
    let plan: Vec<(usize, bool, usize)> = (0..OPERATIONS)
        .map(|n| (rng.below(TENANTS), rng.below(3) == 0, n))
        .collect();
    let created: Vec<Option<(usize, String)>> = futures::stream::iter(plan)
        .map(|(i, read, n)| {
            let (t, token) = &tenants[i];
            let app = &app;
            async move {
                if read {
                    let resp = app
                        .get(t, "/api/items?limit=100")
                        .bearer_auth(token)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::OK);
                    let page: Value = resp.json().await.unwrap();
                    for item in page["items"].as_array().unwrap() {
                        let title = item["title"].as_str().unwrap();
                        assert!(
                            title.starts_with(&format!("{}/", t.slug)),
                            "{} saw {title}",
                            t.slug
                        );
                    }
                    None
                } else {
                    let title = format!("{}/{n}", t.slug);
                    let resp = app
                        .request(t, Method::POST, "/api/items")
                        .bearer_auth(token)
                        .json(&json!({ "title": title }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), StatusCode::CREATED);
                    Some((i, title))
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;

    // Each tenant holds exactly its own items, and cannot reach another's by id.
    for (i, (t, token)) in tenants.iter().enumerate() {
        let mut expected: Vec<&str> = created
            .iter()
            .flatten()
            .filter(|(j, _)| *j == i)
            .map(|(_, title)| title.as_str())
            .collect();
        expected.sort();
        let mut got = Vec::new();
        let mut cursor = String::new();
        loop {
            let page: Value = app
                .get(t, &format!("/api/items?limit=100&cursor={cursor}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            got.extend(
                page["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["title"].as_str().unwrap().to_string()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_string(),
                None => break,
            }
        }
        got.sort();
        assert_eq!(got, expected, "tenant {}", t.slug);
    }
    let (a, a_token) = &tenants[0];
    let (b, b_token) = &tenants[1];
    let page: Value = app
        .get(b, "/api/items?limit=1")
        .bearer_auth(b_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if let Some(b_item) = page["items"][0]["id"].as_str() {
        let resp = app
            .get(a, &format!("/api/items/{b_item}"))
            .bearer_auth(a_token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }

    // A tenant of shard-b sent to shard-a's app: refused, whether it says shard-b (the header
    // names another shard) or claims shard-a (the catalog places it elsewhere).
    let (b_tenant, b_token) = tenants.iter().find(|(t, _)| t.shard == "shard-b").unwrap();
    let mut claims_a = b_tenant.clone();
    claims_a.shard = SHARD.into();
    for (t, what) in [(b_tenant, "own shard"), (&claims_a, "claims shard-a")] {
        let mut rb = app
            .client
            .get(format!("{}/api/items", app.base_of(SHARD)))
            .bearer_auth(b_token);
        let now = tenantgate_contract::time::now_secs();
        for (k, v) in edge_headers(t, &app.edge_keys, now, "GET", "/api/items") {
            rb = rb.header(k, v);
        }
        let resp = rb.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::MISDIRECTED_REQUEST, "{what}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "wrong_shard");
    }
    app.stop().await;
}
both_backends!(no_tenant_sees_another_tenants_items);
