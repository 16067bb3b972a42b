//! Admin tokens over HTTP on both backends: listing without secrets, revocation taking effect
//! at once, expiry, last use, page caps and the per-token and per-address rate limits.

use std::time::Duration;

use serde_json::Value;
use tenantgate_catalog::TokenScope;
use tenantgate_testkit::admin::{Harness, BOOTSTRAP};
use tenantgate_testkit::{both_backends, wait_until, Engine};

/// The listed token named `name`.
fn listed<'a>(page: &'a Value, id: &str) -> &'a Value {
    page["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("token {id} not listed in {page}"))
}

/// The id of the token the harness just minted (the newest listed).
async fn newest_id(h: &Harness) -> String {
    let page = h.call("GET", "/v1/tokens", Some(BOOTSTRAP), None).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    page.body["tokens"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

both_backends!(tokens_are_listed_and_revoked_at_once);
async fn tokens_are_listed_and_revoked_at_once(backend: Engine) {
    let h = Harness::started(backend).await;
    let read = h.token(TokenScope::Read).await;
    let read_id = newest_id(&h).await;
    let write = h.token(TokenScope::Write).await;
    let write_id = newest_id(&h).await;

    // Listing shows metadata, never a secret or its hash.
    let page = h.call("GET", "/v1/tokens", Some(&read), None).await;
    assert_eq!(page.status, 200);
    let text = page.body.to_string();
    assert!(!text.contains(&read) && !text.contains(&write), "{text}");
    assert!(!text.contains(&tenantgate_contract::crypto::hash_token(&read)));
    let entry = listed(&page.body, &read_id);
    assert_eq!(entry["scope"], "read");
    assert_eq!(entry["name"], "test");
    assert!(entry["revoked_at"].is_null() && entry["expires_at"].is_null());

    // Use records a last-used time (written in the background).
    wait_until(
        "the token's last use is recorded",
        Duration::from_secs(5),
        || async {
            let page = h.call("GET", "/v1/tokens", Some(BOOTSTRAP), None).await;
            listed(&page.body, &read_id)["last_used_at"]
                .as_str()
                .map(str::to_string)
        },
    )
    .await;

    // A read token cannot revoke; a write token can, and the revoked token is refused at once.
    let r = h
        .call(
            "DELETE",
            &format!("/v1/tokens/{write_id}"),
            Some(&read),
            None,
        )
        .await;
    assert_eq!(r.status, 403);
    let r = h
        .call(
            "DELETE",
            &format!("/v1/tokens/{read_id}"),
            Some(&write),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let revoked_at = r.body["revoked_at"]
        .as_str()
        .expect("revoked_at")
        .to_string();
    let r = h.call("GET", "/v1/tenants", Some(&read), None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "unauthorized");

    // Revoking again changes nothing; unknown ids are 404 with our error body.
    let r = h
        .call(
            "DELETE",
            &format!("/v1/tokens/{read_id}"),
            Some(&write),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["revoked_at"].as_str()),
        (200, Some(revoked_at.as_str()))
    );
    for id in [uuid::Uuid::now_v7().to_string(), "not-a-uuid".into()] {
        let r = h
            .call("DELETE", &format!("/v1/tokens/{id}"), Some(&write), None)
            .await;
        assert_eq!(r.status, 404, "{id}");
        assert_eq!(r.body["error"]["code"], "not_found");
    }

    // One audit record for the revocation, naming the token but not its secret.
    let audit = h.get("/v1/audit").await;
    let revocations: Vec<&Value> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "admin_token.revoke")
        .collect();
    assert_eq!(revocations.len(), 1, "{}", audit.body);
    assert!(revocations[0]["target"]
        .as_str()
        .unwrap()
        .ends_with(&read_id));
    assert!(revocations[0]["actor"]
        .as_str()
        .unwrap()
        .ends_with(&write_id));

    // Pages are capped: above the cap is a 400; pages chain through next_cursor.
    let r = h
        .call("GET", "/v1/tokens?limit=501", Some(&write), None)
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["code"], "bad_request");
    let first = h
        .call("GET", "/v1/tokens?limit=1", Some(&write), None)
        .await;
    assert_eq!(first.body["tokens"][0]["id"], read_id.as_str());
    let cursor = first.body["next_cursor"].as_str().unwrap();
    let second = h
        .call(
            "GET",
            &format!("/v1/tokens?limit=1&cursor={cursor}"),
            Some(&write),
            None,
        )
        .await;
    assert_eq!(second.body["tokens"][0]["id"], write_id.as_str());
    assert!(second.body["next_cursor"].is_null());
}

both_backends!(expired_tokens_are_refused);
async fn expired_tokens_are_refused(backend: Engine) {
    let h = Harness::started(backend).await;
    let short = tenantgate_admin::tokens::create(
        &h.catalog,
        TokenScope::Read,
        "short",
        Some(Duration::from_millis(300)),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        h.call("GET", "/v1/tenants", Some(&short), None)
            .await
            .status,
        200
    );
    let page = h.call("GET", "/v1/tokens", Some(BOOTSTRAP), None).await;
    assert!(page.body["tokens"][0]["expires_at"].is_string());
    wait_until("the token expires", Duration::from_secs(5), || async {
        (h.call("GET", "/v1/tenants", Some(&short), None)
            .await
            .status
            == 401)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_addresses_are_rate_limited() {
    let h = Harness::new(Engine::Sqlite, |raw| {
        raw.admin.rate_limit_rps = 1;
        raw.admin.rate_limit_burst = 5;
    })
    .await
    .start()
    .await;
    // Five requests fit the burst of this address; the sixth is refused with Retry-After,
    // whatever its token (an unknown one included: guessing costs the catalog nothing more).
    for _ in 0..5 {
        assert_eq!(
            h.call("GET", "/v1/tenants", Some(BOOTSTRAP), None)
                .await
                .status,
            200
        );
    }
    let resp = h
        .client
        .get(format!("{}/v1/tenants", h.base))
        .bearer_auth("tga_guess")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry_after: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // Operational endpoints are not limited.
    assert_eq!(h.call("GET", "/healthz", None, None).await.status, 200);

    // The token has its own budget, spent by those five requests too: from another address
    // (fresh address budget) the bootstrap token is still refused, another token is not.
    let other_address = reqwest::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let read = h.token(TokenScope::Read).await;
    let status = |token: String| {
        let req = other_address
            .get(format!("{}/v1/tenants", h.base))
            .bearer_auth(token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(BOOTSTRAP.to_string()).await, 429);
    assert_eq!(status(read).await, 200);
}
