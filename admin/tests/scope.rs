//! Tenant-restricted admin tokens over HTTP, on both backends: such a token sees and changes
//! only its tenants, lists are filtered to them, and everything else answers 403
//! `outside_scope`: other tenants (whether they exist or not, so slugs cannot be probed), their
//! jobs, backups and audit records, and every fleet-wide route.

use serde_json::{json, Value};
use tenantgate_catalog::TokenScope;
use tenantgate_testkit::admin::{Harness, Response, BOOTSTRAP};
use tenantgate_testkit::{both_backends, Engine};

/// Panics unless `r` is the 403 `outside_scope` JSON error.
#[track_caller]
fn outside(r: &Response, what: &str) {
    assert_eq!(r.status, 403, "{what}: {:?}", r.body);
    assert_eq!(
        r.body["error"]["code"], "outside_scope",
        "{what}: {:?}",
        r.body
    );
    assert!(r.body["error"]["message"].is_string(), "{what}");
}

fn slugs(page: &Value) -> Vec<&str> {
    page["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect()
}

both_backends!(restricted_tokens_reach_only_their_tenants);
async fn restricted_tokens_reach_only_their_tenants(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("s1").await;
    let mut ids = Vec::new();
    for slug in ["alpha", "bravo", "charlie"] {
        let (id, job) = h.tenant(slug, None).await;
        h.wait_job(&job, "succeeded").await;
        ids.push((id, job));
    }
    let [(a, a_job), (b, b_job), (c, _)] = <[_; 3]>::try_from(ids).unwrap();
    let token = h.tenant_token(TokenScope::Write, &["alpha", &c]).await;
    let reader = h.tenant_token(TokenScope::Read, &["alpha"]).await;
    let call = |method: &'static str, path: String, body: Option<Value>| {
        let token = token.clone();
        let h = &h;
        async move { h.call(method, &path, Some(&token), body).await }
    };

    // Lists are filtered to the token's tenants.
    let page = call("GET", "/v1/tenants".into(), None).await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    assert_eq!(slugs(&page.body), ["alpha", "charlie"]);
    let page = h.call("GET", "/v1/tenants", Some(BOOTSTRAP), None).await;
    assert_eq!(slugs(&page.body), ["alpha", "bravo", "charlie"]);

    // Its tenants, by slug or id: read and changed.
    assert_eq!(
        call("GET", "/v1/tenants/alpha".into(), None).await.status,
        200
    );
    assert_eq!(
        call("GET", format!("/v1/tenants/{c}"), None).await.status,
        200
    );
    let r = call(
        "PATCH",
        "/v1/tenants/alpha".into(),
        Some(json!({"name": "Alpha 2"})),
    )
    .await;
    assert_eq!((r.status, &r.body["name"]), (200, &json!("Alpha 2")));
    assert_eq!(
        call("GET", "/v1/tenants/alpha/domains".into(), None)
            .await
            .status,
        200
    );
    let r = call(
        "POST",
        "/v1/tenants/alpha/tokens".into(),
        Some(json!({"email": "o@alpha.example", "role": "owner"})),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let r = call("GET", format!("/v1/jobs/{a_job}"), None).await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // Another tenant, by slug or id, and one that does not exist: the same 403, on every
    // tenant route, and nothing changes.
    for t in ["bravo", b.as_str(), "no-such-tenant"] {
        outside(&call("GET", format!("/v1/tenants/{t}"), None).await, t);
        outside(
            &call(
                "PATCH",
                format!("/v1/tenants/{t}"),
                Some(json!({"name": "Mine"})),
            )
            .await,
            t,
        );
        outside(&call("DELETE", format!("/v1/tenants/{t}"), None).await, t);
        outside(
            &call("GET", format!("/v1/tenants/{t}/domains"), None).await,
            t,
        );
        outside(
            &call(
                "POST",
                format!("/v1/tenants/{t}/domains"),
                Some(json!({"domain": "stolen.example.com"})),
            )
            .await,
            t,
        );
        outside(
            &call(
                "DELETE",
                format!("/v1/tenants/{t}/domains/bravo.example.com"),
                None,
            )
            .await,
            t,
        );
        outside(
            &call(
                "PUT",
                format!("/v1/tenants/{t}/domains/bravo.example.com/certificate"),
                Some(json!({"cert_pem": "x", "key_pem": "y"})),
            )
            .await,
            t,
        );
        outside(
            &call(
                "POST",
                format!("/v1/tenants/{t}/tokens"),
                Some(json!({"email": "x@evil.example", "role": "owner"})),
            )
            .await,
            t,
        );
        outside(
            &call("GET", format!("/v1/tenants/{t}/backups"), None).await,
            t,
        );
        outside(
            &call("POST", format!("/v1/tenants/{t}/backups"), None).await,
            t,
        );
        outside(&call("GET", format!("/v1/audit?tenant={t}"), None).await, t);
    }
    let bravo = h.get("/v1/tenants/bravo").await.body;
    assert_eq!(
        (&bravo["name"], &bravo["status"]),
        (&json!("bravo Inc"), &json!("active"))
    );
    assert_eq!(bravo["domains"], json!(["bravo.example.com"]));

    // Objects of other tenants, fleet objects, and unknown ids: 403 alike.
    outside(
        &call("GET", format!("/v1/jobs/{b_job}"), None).await,
        "bravo's job",
    );
    outside(
        &call("POST", format!("/v1/jobs/{b_job}/retry"), None).await,
        "bravo's job",
    );
    let unknown = uuid::Uuid::now_v7();
    outside(
        &call("GET", format!("/v1/jobs/{unknown}"), None).await,
        "unknown job",
    );
    outside(
        &call("GET", format!("/v1/backups/{unknown}"), None).await,
        "unknown backup",
    );
    assert_eq!(h.get(&format!("/v1/jobs/{unknown}")).await.status, 404);

    // The audit log holds only its tenants' records.
    let audit = call("GET", "/v1/audit?limit=1000".into(), None).await;
    assert_eq!(audit.status, 200, "{:?}", audit.body);
    let tenants: Vec<&str> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tenant_id"].as_str().unwrap_or("none"))
        .collect();
    assert!(
        tenants.contains(&a.as_str()) && tenants.contains(&c.as_str()),
        "{tenants:?}"
    );
    assert!(tenants.iter().all(|t| *t == a || *t == c), "{tenants:?}");

    // Fleet-wide routes.
    let fleet = [
        ("GET", "/v1/shards", None),
        ("GET", "/v1/shards/s1", None),
        (
            "PATCH",
            "/v1/shards/s1",
            Some(json!({"status": "draining"})),
        ),
        (
            "POST",
            "/v1/shards",
            Some(
                json!({"name": "s9", "app_upstreams": ["127.0.0.1:9"], "database_url": "sqlite:///tmp/x"}),
            ),
        ),
        (
            "POST",
            "/v1/tenants",
            Some(json!({"slug": "delta", "name": "Delta", "domains": ["delta.example.com"]})),
        ),
        (
            "POST",
            "/v1/tenants/alpha/move",
            Some(json!({"shard": "s1"})),
        ),
        ("GET", "/v1/tokens", None),
        ("DELETE", &*format!("/v1/tokens/{unknown}"), None),
        ("GET", "/v1/resolve?host=alpha.example.com", None),
        ("POST", "/v1/migrations", Some(json!({}))),
    ];
    for (method, path, body) in fleet {
        outside(&call(method, path.to_string(), body).await, path);
    }
    assert_eq!(h.get("/v1/shards/s1").await.body["status"], "active");

    // A restricted read token reads its tenant, and is still refused writes by scope.
    let r = h
        .call("GET", "/v1/tenants/alpha", Some(&reader), None)
        .await;
    assert_eq!(r.status, 200);
    let r = h
        .call(
            "PATCH",
            "/v1/tenants/alpha",
            Some(&reader),
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["error"]["code"]),
        (403, &json!("forbidden"))
    );
    outside(
        &h.call("GET", "/v1/tenants/charlie", Some(&reader), None)
            .await,
        "reader",
    );

    // The token list shows each token's restriction (ids); fleet tokens have none.
    let listed = h.get("/v1/tokens").await.body;
    let restrictions: Vec<&Value> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["tenants"])
        .collect();
    assert_eq!(restrictions, [&json!([a, c]), &json!([a])]);

    // Its own tenant it may delete.
    let r = call("DELETE", "/v1/tenants/charlie".into(), None).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
}

both_backends!(unknown_tenants_are_refused_at_creation);
async fn unknown_tenants_are_refused_at_creation(backend: Engine) {
    let h = Harness::started(backend).await;
    let err = tenantgate_admin::tokens::create(
        &h.catalog,
        TokenScope::Read,
        "typo",
        None,
        &["no-such-tenant".to_string()],
    )
    .await
    .expect_err("a token for an unknown tenant is refused");
    assert!(err.to_string().contains("no-such-tenant"), "{err}");
    assert!(h.get("/v1/tokens").await.body["tokens"]
        .as_array()
        .unwrap()
        .is_empty());
}
