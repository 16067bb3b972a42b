//! Tenant isolation through the edge: 20 tenants on two shards of `tenantgate dev`, random
//! interleaved creates and reads with each tenant's own user token; no tenant ever sees another
//! tenant's item, a token never works on another tenant's host, and nothing is lost across a
//! restart. On both backends.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::{binary, wait_until, DevProcess};

const TENANTS: usize = 20;
const OPERATIONS: usize = 300;

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_tenants_never_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    isolation(dir.path(), &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_tenants_never_see_each_other() {
    let db = tenantgate_testkit::PgTestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    isolation(dir.path(), &["--database-url", &db.url]).await;
}

/// A small deterministic generator, so a failure replays the same sequence.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

async fn isolation(data_dir: &std::path::Path, extra: &[&str]) {
    let mut dev = DevProcess::start(binary(), data_dir, extra);
    let client = reqwest::Client::new();
    let admin = dev.admin();
    let token = dev.admin_token.clone();

    // 18 more tenants beside acme and globex; placement spreads them over both shards.
    let mut slugs: Vec<String> = vec!["acme".into(), "globex".into()];
    for i in 0..TENANTS - 2 {
        let slug = format!("iso{i:02}");
        let r = client
            .post(format!("{admin}/v1/tenants"))
            .bearer_auth(&token)
            .json(&json!({"slug": slug, "name": slug, "domains": [format!("{slug}.localhost")]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        slugs.push(slug);
    }
    wait_until("all tenants active", Duration::from_secs(120), || {
        let (client, admin, token) = (&client, &admin, &token);
        async move {
            let page: Value = client
                .get(format!("{admin}/v1/tenants?status=active&limit=100"))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (page["tenants"].as_array()?.len() == TENANTS).then_some(page)
        }
    })
    .await;
    let shards: BTreeMap<String, String> = {
        let page: Value = client
            .get(format!("{admin}/v1/tenants?limit=100"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        page["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                (
                    t["slug"].as_str().unwrap().into(),
                    t["shard"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert!(shards.values().any(|s| s == "shard-a") && shards.values().any(|s| s == "shard-b"));

    let mut tokens = Vec::new();
    for slug in &slugs {
        let minted: Value = client
            .post(format!("{admin}/v1/tenants/{slug}/tokens"))
            .bearer_auth(&token)
            .json(&json!({"email": format!("member@{slug}.test"), "role": "member"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tokens.push(minted["token"].as_str().expect("minted token").to_string());
    }

    let edge = format!("{}/api/items", dev.edge());
    let mut rng = Lcg(42);
    let mut created = [0usize; TENANTS];
    for n in 0..OPERATIONS {
        let t = rng.next(TENANTS);
        let host = format!("{}.localhost", slugs[t]);
        if rng.next(2) == 0 {
            let r = client
                .post(&edge)
                .header("host", &host)
                .bearer_auth(&tokens[t])
                .json(&json!({"title": format!("{}-{n}", slugs[t])}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                r.status(),
                201,
                "create for {host}: {}",
                r.text().await.unwrap()
            );
            created[t] += 1;
        } else {
            let items = list(&client, &edge, &host, &tokens[t]).await;
            assert_eq!(
                items.len(),
                created[t],
                "{host} sees a different number of items"
            );
            for title in items {
                assert!(
                    title.starts_with(&format!("{}-", slugs[t])),
                    "{host} sees {title}"
                );
            }
        }
        // Another tenant's token never works here.
        if n % 10 == 0 {
            let other = (t + 1 + rng.next(TENANTS - 1)) % TENANTS;
            let r = client
                .get(&edge)
                .header("host", &host)
                .bearer_auth(&tokens[other])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{}'s token on {host}", slugs[other]);
        }
    }

    // Nothing is lost across a restart.
    let status = dev.stop("TERM", Duration::from_secs(5));
    assert!(status.success());
    drop(dev);
    let dev = DevProcess::start(binary(), data_dir, extra);
    let edge = format!("{}/api/items", dev.edge());
    for (t, slug) in slugs.iter().enumerate() {
        let items = list(&client, &edge, &format!("{slug}.localhost"), &tokens[t]).await;
        assert_eq!(items.len(), created[t], "{slug} after restart");
    }
}

/// All item titles a tenant's token sees (following cursors).
async fn list(client: &reqwest::Client, url: &str, host: &str, token: &str) -> Vec<String> {
    let mut titles = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut request = client
            .get(url)
            .header("host", host)
            .bearer_auth(token)
            .query(&[("limit", "100")]);
        if let Some(c) = &cursor {
            request = request.query(&[("cursor", c)]);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200, "list on {host}");
        let page: Value = r.json().await.unwrap();
        titles.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["title"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return titles,
        }
    }
}
