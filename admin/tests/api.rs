//! The admin API over HTTP on both backends: auth, validation, conflicts, domains, patches,
//! tenant user tokens, shards, metrics, OpenAPI coverage, shutdown.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Row;
use tenantgate_catalog::store::CatalogPool;
use tenantgate_catalog::TokenScope;
use tenantgate_testkit::admin::{fields, Harness, BOOTSTRAP};
use tenantgate_testkit::{both_backends, Engine};

both_backends!(auth_requires_tokens_with_the_right_scope);
async fn auth_requires_tokens_with_the_right_scope(backend: Engine) {
    let h = Harness::started(backend).await;
    let read = h.token(TokenScope::Read).await;
    let write = h.token(TokenScope::Write).await;
    let shard = json!({ "name": "shard-a", "app_upstreams": ["127.0.0.1:9"], "database_url": h.tc.shard_database_url("shard-a") });

    let r = h.call("GET", "/v1/tenants", None, None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    assert!(r.body["error"]["message"].is_string());
    assert_eq!(
        h.call("GET", "/v1/tenants", Some("tga_not-a-token"), None)
            .await
            .status,
        401
    );
    assert_eq!(
        h.call(
            "GET",
            "/v1/tenants",
            Some(&BOOTSTRAP[..BOOTSTRAP.len() - 1]),
            None
        )
        .await
        .status,
        401
    );
    assert_eq!(
        h.call("GET", "/v1/tenants", Some(&read), None).await.status,
        200
    );
    let r = h
        .call("POST", "/v1/shards", Some(&read), Some(shard.clone()))
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"]["code"], "forbidden");
    assert_eq!(
        h.call("POST", "/v1/shards", None, Some(shard.clone()))
            .await
            .status,
        401
    );
    let r = h
        .call("POST", "/v1/shards", Some(&write), Some(shard))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    // The audit log names the token.
    let audit = h.call("GET", "/v1/audit", Some(&read), None).await;
    assert!(audit.body["entries"][0]["actor"]
        .as_str()
        .unwrap()
        .starts_with("token:test:"));
    let text = audit.body.to_string();
    assert!(text.contains("admin_token.create"), "{text}");
    assert!(!text.contains(&write) && !text.contains(&read));
    // Operational endpoints are open.
    assert_eq!(h.call("GET", "/healthz", None, None).await.status, 200);
    assert_eq!(h.call("GET", "/readyz", None, None).await.status, 200);
}

both_backends!(validation_names_every_bad_field);
async fn validation_names_every_bad_field(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    h.shard("shard-off").await;
    h.patch("/v1/shards/shard-off", json!({"status": "draining"}))
        .await;

    let ok = || json!({ "slug": "acme", "name": "Acme", "domains": ["acme.example.com"] });
    let with = |key: &str, value: serde_json::Value| {
        let mut b = ok();
        b[key] = value;
        b
    };
    let cases = [
        (with("slug", json!("Acme")), vec!["slug"]),
        (with("slug", json!("a")), vec!["slug"]),
        (with("slug", json!("9lives")), vec!["slug"]),
        (with("name", json!("  ")), vec!["name"]),
        (with("domains", json!([])), vec!["domains"]),
        (
            with(
                "domains",
                json!(["bad host.com", "ok.example.com", "x.example.com/a/b"]),
            ),
            vec!["domains[0]", "domains[2]"],
        ),
        (
            with("domains", json!(["a.example.com", "a.example.com"])),
            vec!["domains"],
        ),
        (
            with("rate_limit", json!({"rps": 0, "burst": 20_000_000})),
            vec!["rate_limit.burst", "rate_limit.rps"],
        ),
        (
            with("settings", json!({"locale": 5, "colour": "red"})),
            vec!["settings.colour", "settings.locale"],
        ),
        (with("settings", json!(["en"])), vec!["settings"]),
        (with("shard", json!("Nope")), vec!["shard"]),
        // Shape errors: unknown field, wrong type, missing field.
        (with("colour", json!("red")), vec!["colour"]),
        (
            with("rate_limit", json!({"rps": 1, "burst": 1, "extra": 1})),
            vec!["rate_limit.extra"],
        ),
        (
            with("rate_limit", json!({"rps": -1, "burst": 1})),
            vec!["rate_limit.rps"],
        ),
        (with("rate_limit", json!([1, 2])), vec!["rate_limit"]),
        (
            json!([["acme"], "Acme", ["acme.example.com"]]),
            vec!["body"],
        ),
        (json!({ "slug": "acme", "name": "Acme" }), vec!["domains"]),
    ];
    for (body, expected) in cases {
        let r = h.post("/v1/tenants", body.clone()).await;
        let mut got = fields(&r);
        got.sort();
        assert_eq!(got, expected, "{body} → {:?}", r.body);
    }
    // What the schema cannot tell: two spellings of one domain, a shard that does not exist or
    // takes no tenants.
    for (key, value, status) in [
        ("domains", json!(["a.example.com", "A.EXAMPLE.com."]), 409),
        ("shard", json!("nope"), 404),
        ("shard", json!("shard-off"), 409),
    ] {
        let r = h.post("/v1/tenants", with(key, value)).await;
        assert_eq!(r.status, status, "{key}: {:?}", r.body);
    }
    // Not JSON at all: 400 with our error body.
    let r = h
        .client
        .post(format!("{}/v1/tenants", h.base))
        .bearer_auth(BOOTSTRAP)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");

    // Shards and patches validate too.
    let r = h
        .post(
            "/v1/shards",
            json!({ "name": "x", "app_upstreams": ["nohost"], "database_url": "mysql://x" }),
        )
        .await;
    let mut got = fields(&r);
    got.sort();
    assert_eq!(got, ["app_upstreams[0]", "database_url", "name"]);
    let r = h
        .patch("/v1/shards/shard-a", json!({"status": "gone"}))
        .await;
    assert_eq!(fields(&r), ["status"]);
    let r = h.get("/v1/tenants?limit=0").await;
    assert_eq!(fields(&r), ["limit"]);
    let r = h.get("/v1/tenants?bogus=1").await;
    assert_eq!(fields(&r), ["bogus"]);
    let r = h.get("/v1/tenants?limit=ten").await;
    assert_eq!(fields(&r), ["limit"]);
    // A JSON array where an object is expected is refused, not read as a struct.
    let r = h.patch("/v1/shards/shard-a", json!([null, null])).await;
    assert_eq!(fields(&r), ["body"]);
    let r = h
        .post(
            "/v1/migrations",
            json!({"concurrency": null, "tenants": [null]}),
        )
        .await;
    assert_eq!(fields(&r), ["tenants[0]"]);

    // Nothing was created by any of these.
    assert_eq!(h.get("/v1/tenants").await.body["tenants"], json!([]));
}

both_backends!(taken_slugs_and_domains_conflict);
async fn taken_slugs_and_domains_conflict(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    let (id, _) = h.tenant("acme", None).await;
    let r = h
        .post(
            "/v1/tenants",
            json!({ "slug": "acme", "name": "Other", "domains": ["other.example.com"] }),
        )
        .await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["error"]["code"], "conflict");
    // Normalised before comparing: case, port and trailing dot do not make a domain new.
    let r = h
        .post(
            "/v1/tenants",
            json!({ "slug": "other", "name": "Other", "domains": ["ACME.Example.com.:8443"] }),
        )
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("acme.example.com"));
    let r = h
        .post(
            &format!("/v1/tenants/{id}/domains"),
            json!({"domain": "Acme.Example.com"}),
        )
        .await;
    assert_eq!(r.status, 409);
    let r = h.post("/v1/shards", json!({ "name": "shard-a", "app_upstreams": ["127.0.0.1:9"], "database_url": h.tc.shard_database_url("shard-a") })).await;
    assert_eq!(r.status, 409);
    assert_eq!(h.get("/v1/tenants/nobody").await.status, 404);
    assert_eq!(
        h.get("/v1/tenants/nobody").await.body["error"]["code"],
        "not_found"
    );
}

both_backends!(domains_patches_and_listing);
async fn domains_patches_and_listing(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    let (id, _) = h.tenant("acme", None).await;
    h.wait_status(&id, "active").await;

    let r = h
        .post(
            &format!("/v1/tenants/{id}/domains"),
            json!({"domain": "App.Example.com/Acme"}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(
        r.body["domains"],
        json!(["acme.example.com", "app.example.com/Acme"])
    );
    let r = h
        .get("/v1/resolve?host=app.example.com&path=/Acme/items")
        .await;
    assert_eq!(r.body["path_prefix"], "Acme");
    assert_eq!(r.body["tenant"]["slug"], "acme");
    let r = h
        .delete(&format!("/v1/tenants/{id}/domains/app.example.com/Acme"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["domains"], json!(["acme.example.com"]));
    let r = h
        .delete(&format!("/v1/tenants/{id}/domains/acme.example.com"))
        .await;
    assert_eq!(r.status, 409, "the last domain stays");
    assert_eq!(
        h.delete(&format!("/v1/tenants/{id}/domains/nope.example.com"))
            .await
            .status,
        404
    );

    let r = h.patch("/v1/tenants/acme", json!({"status": "suspended", "rate_limit": {"rps": 5, "burst": 10}, "settings": {"locale": "de", "theme": "dark"}})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["status"], "suspended");
    assert_eq!(
        h.get("/v1/resolve?host=acme.example.com").await.body["edge"]["status"],
        403
    );
    let r = h
        .patch(
            "/v1/tenants/acme",
            json!({"status": "active", "rate_limit": null, "settings": {"theme": null}}),
        )
        .await;
    let t = h.get("/v1/tenants/acme").await.body;
    assert_eq!(r.body, t);
    assert_eq!(t["status"], "active");
    assert_eq!(t["rate_limit"], json!(null));
    assert_eq!(t["settings"], json!({"locale": "de"}));
    assert_eq!(
        fields(
            &h.patch("/v1/tenants/acme", json!({"status": "deleted"}))
                .await
        ),
        ["status"]
    );
    let r = h.get("/v1/resolve?host=acme.example.com").await;
    assert_eq!(r.body["rate_limit"]["source"], "edge default");

    // Pages of two, by slug, with a cursor.
    for slug in ["bravo", "charlie"] {
        h.tenant(slug, None).await;
    }
    let p1 = h.get("/v1/tenants?limit=2").await.body;
    let slugs: Vec<&str> = p1["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["acme", "bravo"]);
    let p2 = h
        .get(&format!(
            "/v1/tenants?limit=2&cursor={}",
            p1["next_cursor"].as_str().unwrap()
        ))
        .await
        .body;
    assert_eq!(p2["tenants"][0]["slug"], "charlie");
    assert_eq!(p2["next_cursor"], json!(null));
    for slug in ["bravo", "charlie"] {
        h.wait_status(slug, "active").await;
    }
    let count = |q: &'static str| {
        let h = &h;
        async move { h.get(q).await.body["tenants"].as_array().unwrap().len() }
    };
    let latest = tenantgate_testkit::latest_tenant_migration();
    assert_eq!(
        h.get(&format!("/v1/tenants?schema_version={latest}"))
            .await
            .body["tenants"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(count("/v1/tenants?schema_version=0").await, 0);

    // Every write is in the audit log with before and after.
    let audit = h.get("/v1/audit?tenant=acme&limit=3").await.body;
    let update = &audit["entries"][0];
    assert_eq!(update["action"], "tenant.update");
    assert_eq!(update["before"]["status"], "suspended");
    assert_eq!(update["after"]["status"], "active");
}

both_backends!(tenant_user_tokens_are_minted_in_the_tenant_database);
async fn tenant_user_tokens_are_minted_in_the_tenant_database(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    let (id, _) = h.tenant("acme", None).await;
    let r = h
        .post(
            &format!("/v1/tenants/{id}/tokens"),
            json!({"email": "a@acme.test", "role": "owner"}),
        )
        .await;
    assert!(r.status == 409 || r.status == 201, "{:?}", r.body); // 409 while provisioning
    h.wait_status(&id, "active").await;

    let r = h
        .post(
            &format!("/v1/tenants/{id}/tokens"),
            json!({"email": "Ann@Acme.test", "role": "viewer", "ttl_secs": 600}),
        )
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let token = r.body["token"].as_str().unwrap().to_string();
    assert_eq!(r.body["role"], "viewer");
    assert!(r.body["expires_at"].is_string());
    // Another token of the same user with the user's role.
    let r2 = h
        .post(
            &format!("/v1/tenants/{id}/tokens"),
            json!({"email": "ann@acme.test", "role": "viewer"}),
        )
        .await;
    assert_eq!(r2.status, 201);
    assert_eq!(r2.body["expires_at"], json!(null));
    // Another role would change what the user's existing tokens may do: refused, either way.
    for role in ["member", "owner"] {
        let r = h
            .post(
                &format!("/v1/tenants/{id}/tokens"),
                json!({"email": "ANN@acme.test", "role": role}),
            )
            .await;
        assert_eq!(r.status, 409, "{:?}", r.body);
        assert_eq!(r.body["error"]["code"], "conflict");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("already has role viewer"),
            "{:?}",
            r.body
        );
    }

    let pool = h.tenant_pool(&id).await;
    let users = sqlx::query("SELECT email, role FROM users")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users[0].get::<String, _>(0), "ann@acme.test");
    assert_eq!(
        users[0].get::<String, _>(1),
        "viewer",
        "the refused mints changed nothing"
    );
    let hash = tenantgate_contract::crypto::hash_token(&token);
    let row = sqlx::query("SELECT expires_at FROM user_tokens WHERE token_hash = $1")
        .bind(&hash)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(row.get::<Option<i64>, _>(0).is_some());
    let n: i64 = sqlx::query("SELECT COUNT(*) FROM user_tokens")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    pool.close().await;

    // A role the tenant does not have is a role not found; the body itself is well formed.
    let r = h
        .post(
            &format!("/v1/tenants/{id}/tokens"),
            json!({"email": "x@acme.test", "role": "emperor"}),
        )
        .await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.body["error"]["message"], "role not found");
    let mut got = fields(
        &h.post(
            &format!("/v1/tenants/{id}/tokens"),
            json!({"email": "nope", "role": "", "ttl_secs": 0}),
        )
        .await,
    );
    got.sort();
    assert_eq!(got, ["email", "role", "ttl_secs"]);
    // The token itself is never in the audit log.
    let audit = h.get("/v1/audit?tenant=acme").await.body.to_string();
    assert!(audit.contains("tenant.token_mint"));
    assert!(!audit.contains(&token));
}

both_backends!(the_tenants_own_audit_trail_is_readable_by_operators);
async fn the_tenants_own_audit_trail_is_readable_by_operators(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    let (id, _) = h.tenant("acme", None).await;
    h.wait_status(&id, "active").await;
    let empty = h.get(&format!("/v1/tenants/{id}/audit")).await;
    assert_eq!(empty.status, 200, "{:?}", empty.body);
    assert_eq!(empty.body, json!({"entries": [], "next_cursor": null}));
    let mut tokens = Vec::new();
    for email in ["a@acme.test", "b@acme.test", "c@acme.test"] {
        let r = h
            .post(
                &format!("/v1/tenants/{id}/tokens"),
                json!({"email": email, "role": "member"}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        tokens.push(r.body["token"].as_str().unwrap().to_string());
    }
    // By slug too; newest first, two to a page.
    let page = h.get("/v1/tenants/acme/audit?limit=2").await.body;
    let entries = page["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    let minted = &entries[0];
    assert_eq!(minted["action"], "token.minted");
    assert_eq!(minted["actor"]["kind"], "admin");
    assert_eq!(minted["subject"]["email"], "c@acme.test");
    assert_eq!(minted["detail"]["role"], "member");
    let rest = h
        .get(&format!(
            "/v1/tenants/acme/audit?cursor={}",
            page["next_cursor"].as_i64().unwrap()
        ))
        .await
        .body;
    assert_eq!(rest["entries"][0]["subject"]["email"], "a@acme.test");
    assert_eq!(rest["next_cursor"], json!(null));
    // The record names the token's id, never the token.
    let text = format!("{page}{rest}");
    for token in &tokens {
        assert!(!text.contains(token.as_str()));
        assert!(!text.contains(&tenantgate_contract::crypto::hash_token(token)));
    }
    assert_eq!(h.get("/v1/tenants/nope/audit").await.status, 404);
    assert_eq!(h.get("/v1/tenants/acme/audit?limit=0").await.status, 422);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_passwords_are_redacted() {
    let h = Harness::started(Engine::Postgres).await;
    let mut url = url::Url::parse(&h.pg_server()).unwrap();
    url.set_password(Some("s3cret-pw")).unwrap();
    let r = h.post("/v1/shards", json!({ "name": "shard-p", "app_upstreams": ["127.0.0.1:9"], "database_url": url.to_string(), "replicas": [url.to_string()] })).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    for body in [
        r.body,
        h.get("/v1/shards/shard-p").await.body,
        h.get("/v1/shards").await.body,
        h.get("/v1/audit").await.body,
    ] {
        let text = body.to_string();
        assert!(!text.contains("s3cret-pw"), "{text}");
        assert!(text.contains("***"), "{text}");
    }
    // The real URL is still used: trust auth ignores the password, so provisioning works.
    let (id, _) = h.tenant("pw", Some("shard-p")).await;
    h.wait_status(&id, "active").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_tenants_and_jobs() {
    let h = Harness::started(Engine::Sqlite).await;
    h.shard("shard-a").await;
    let (id, _) = h.tenant("acme", None).await;
    h.wait_status(&id, "active").await;
    // The job counter moves just after the activation commits.
    let text =
        tenantgate_testkit::wait_until("the job to be counted", Duration::from_secs(5), || async {
            let r = h
                .client
                .get(format!("{}/metrics", h.base))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let text = r.text().await.unwrap();
            text.contains("tenantgate_jobs_total{kind=\"provision_tenant\",result=\"succeeded\"} 1")
                .then_some(text)
        })
        .await;
    assert!(
        text.contains("tenantgate_tenants{status=\"active\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tenantgate_tenants{status=\"deleted\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("tenantgate_jobs_total{kind=\"provision_tenant\",result=\"succeeded\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tenantgate_job_duration_seconds_count{kind=\"provision_tenant\"} 1"),
        "{text}"
    );
}

both_backends!(metrics_count_tenants_never_backed_up);
async fn metrics_count_tenants_never_backed_up(backend: Engine) {
    // Hourly schedule and no backup recipient: every backup is refused, so none can complete
    // while the test looks (the scheduler may queue some; they fail).
    let h = Harness::new(backend, |raw| raw.backups.schedule = "hourly".into())
        .await
        .start()
        .await;
    h.shard("shard-a").await;
    let (old, _) = h.tenant("old", None).await;
    let (new, _) = h.tenant("new", None).await;
    h.wait_status(&old, "active").await;
    h.wait_status(&new, "active").await;
    let gauge = || async {
        let text = h
            .client
            .get(format!("{}/metrics", h.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("tenantgate_tenants_never_backed_up "))
            .unwrap_or_else(|| panic!("no gauge in {text}"))
            .parse::<i64>()
            .unwrap()
    };
    // Both are younger than the period: not due yet.
    assert_eq!(gauge().await, 0);
    // "old" was created two hours ago.
    match h.catalog.pool() {
        CatalogPool::Postgres(pool) => {
            sqlx::query("UPDATE tenants SET created_at = created_at - interval '2 hours' WHERE slug = 'old'")
                .execute(pool)
                .await
                .unwrap();
        }
        CatalogPool::Sqlite(pool) => {
            sqlx::query("UPDATE tenants SET created_at = created_at - 7200000 WHERE slug = 'old'")
                .execute(pool)
                .await
                .unwrap();
        }
    }
    assert_eq!(gauge().await, 1);
    // A deleted tenant is not owed a backup.
    assert_eq!(h.delete(&format!("/v1/tenants/{old}")).await.status, 202);
    assert_eq!(gauge().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_documents_every_route() {
    let h = Harness::started(Engine::Sqlite).await;
    let r = h.call("GET", "/openapi.json", None, None).await;
    assert_eq!(r.status, 200);
    let paths = r.body["paths"].as_object().unwrap();
    // Every route of DESIGN §6 (and POST /v1/migrations from the fleet-migration issue, and
    // the backup, admin-token, TLS and tenant-audit routes of §9) is documented ...
    let design = [
        ("post", "/v1/shards"),
        ("get", "/v1/shards"),
        ("get", "/v1/shards/{name}"),
        ("patch", "/v1/shards/{name}"),
        ("post", "/v1/tenants"),
        ("get", "/v1/tenants"),
        ("get", "/v1/tenants/{id}"),
        ("patch", "/v1/tenants/{id}"),
        ("delete", "/v1/tenants/{id}"),
        ("post", "/v1/tenants/{id}/domains"),
        ("delete", "/v1/tenants/{id}/domains/{domain}"),
        ("post", "/v1/tenants/{id}/tokens"),
        ("post", "/v1/tenants/{id}/move"),
        ("get", "/v1/jobs/{id}"),
        ("post", "/v1/jobs/{id}/retry"),
        ("post", "/v1/migrations"),
        ("post", "/v1/tenants/{id}/backups"),
        ("get", "/v1/tenants/{id}/backups"),
        ("get", "/v1/backups/{id}"),
        ("post", "/v1/tenants/{id}/restore"),
        ("get", "/v1/resolve"),
        ("get", "/v1/audit"),
        ("get", "/v1/tenants/{id}/audit"),
        ("get", "/v1/tenants/{id}/usage"),
        ("get", "/v1/tokens"),
        ("delete", "/v1/tokens/{id}"),
        ("get", "/v1/tenants/{id}/domains"),
        ("put", "/v1/tenants/{id}/domains/{domain}/certificate"),
        ("get", "/openapi.json"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];
    for (method, path) in design {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not documented"
        );
    }
    // ... and every documented operation is served (not our 404 for unknown routes, not 405).
    let mut documented = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            documented += 1;
            assert!(
                op["summary"].is_string() && op["responses"].is_object(),
                "{method} {path}"
            );
            let concrete = path
                .replace("{name}", "x")
                .replace("{id}", "x")
                .replace("{domain}", "x.example.com");
            let body = op.get("requestBody").map(|_| json!({}));
            let r = h
                .call(&method.to_uppercase(), &concrete, Some(BOOTSTRAP), body)
                .await;
            assert_ne!(r.status, 405, "{method} {path}");
            assert!(
                !(r.status == 404 && r.body["error"]["message"] == "route not found"),
                "{method} {path} is documented but not routed"
            );
        }
    }
    assert_eq!(
        documented,
        design.len(),
        "documented routes that DESIGN does not list"
    );
    // Unknown routes answer our JSON error.
    let r = h.get("/v1/nothing").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_promptly_with_a_job_running() {
    let mut h = Harness::started(Engine::Postgres).await;
    h.shard("shard-a").await;
    h.tenant("acme", None).await;
    // Keep an idle keep-alive connection open too.
    assert_eq!(h.get("/healthz").await.status, 200);
    let started = Instant::now();
    h.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

both_backends!(usage_is_served_per_step);
async fn usage_is_served_per_step(backend: Engine) {
    use tenantgate_catalog::store::usage::UsageCounts;
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    let (id, _) = h.tenant("metered", Some("shard-a")).await;
    let tenant: uuid::Uuid = id.parse().unwrap();
    // Two edges' batches in one minute, and one an hour later.
    let base = 1_800_000_000_000; // on an hour boundary
    let one = UsageCounts {
        requests: 10,
        errors: 1,
        rate_limited: 2,
        bytes: 100,
    };
    h.catalog
        .add_usage(base + 5_000, &[(tenant, one)])
        .await
        .unwrap();
    h.catalog
        .add_usage(base + 50_000, &[(tenant, one)])
        .await
        .unwrap();
    h.catalog
        .add_usage(base + 3_600_000 + 1, &[(tenant, one)])
        .await
        .unwrap();
    let from = tenantgate_contract::time::rfc3339(base);
    let to = tenantgate_contract::time::rfc3339(base + 3 * 3_600_000);
    let r = h
        .get(&format!(
            "/v1/tenants/metered/usage?from={from}&to={to}&step=3600"
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let points = r.body["usage"].as_array().unwrap();
    assert_eq!(points.len(), 3, "{}", r.body);
    assert_eq!(points[0]["ts"], from);
    assert_eq!(
        (
            points[0]["requests"].as_i64(),
            points[0]["errors"].as_i64(),
            points[0]["rate_limited"].as_i64(),
            points[0]["bytes"].as_i64()
        ),
        (Some(20), Some(2), Some(4), Some(200))
    );
    assert_eq!(points[1]["requests"], 10);
    assert_eq!(points[2]["requests"], 0);
    // Minute steps show the two batches of the first minute added together.
    let r = h
        .get(&format!(
            "/v1/tenants/{id}/usage?from={from}&to={}&step=60",
            tenantgate_contract::time::rfc3339(base + 120_000)
        ))
        .await;
    assert_eq!(r.body["usage"][0]["requests"], 20, "{}", r.body);
    assert_eq!(r.body["usage"][1]["requests"], 0);

    for (query, field) in [("step=90", "step"), ("from=yesterday", "from")] {
        let r = h.get(&format!("/v1/tenants/metered/usage?{query}")).await;
        assert!(
            fields(&r).contains(&field.to_string()),
            "{query}: {:?}",
            r.body
        );
    }
    // A reversed range has no points; one too long for its step is cut to its newest part.
    let r = h
        .get(&format!("/v1/tenants/metered/usage?from={to}&to={from}"))
        .await;
    assert_eq!(
        (r.status, r.body["usage"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{}",
        r.body
    );
    let r = h
        .get(&format!(
            "/v1/tenants/metered/usage?from=2020-01-01T00:00:00Z&to={to}&step=60"
        ))
        .await;
    let points = r.body["usage"].as_array().unwrap();
    // At most 2,000 steps, ending with the step before `to` (here on a step boundary).
    assert!((1999..=2000).contains(&points.len()), "{}", points.len());
    assert_eq!(
        points.last().unwrap()["ts"],
        tenantgate_contract::time::rfc3339(base + 3 * 3_600_000 - 60_000)
    );
    assert_eq!(h.get("/v1/tenants/nobody/usage").await.status, 404);
}
