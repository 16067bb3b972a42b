//! Many tenants on one app: interleaved creates and reads never cross tenants.

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tenantgate_catalog::Backend;

use crate::both_backends;
use crate::support::{Options, Rng, TestApp};

const TENANTS: usize = 20;
const OPERATIONS: usize = 400;

async fn no_tenant_sees_another_tenants_items(backend: Backend) {
    let app = TestApp::start(
        backend,
        Options {
            budget: 40,
            ..Options::default()
        },
    )
    .await;
    let tenants: Vec<_> = futures::stream::iter(0..TENANTS)
        .map(|i| {
            let app = &app;
            async move {
                let t = app.tenant(&format!("iso-{i:02}"), json!({})).await;
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
    app.stop().await;
}
both_backends!(no_tenant_sees_another_tenants_items);
