//! Tenant self-service (issue 17): users, tokens and roles managed by the tenant's own users,
//! the tenant's audit trail, and GDPR export and erasure; on SQLite and PostgreSQL tenant
//! databases, through requests signed like the edge's.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tenantgate_config::db_url::Engine;
use tenantgate_testkit::wait_until;

use crate::both_backends;
use crate::support::{Options, TestApp, TestTenant};

/// `method path` for `t` with bearer `token` and an optional JSON body: status and JSON body
/// (`Null` when there is none).
async fn call(
    app: &TestApp,
    t: &TestTenant,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut rb = app.request(t, method, path).bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let r = rb.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Invite `email` with `role` as `manager`: the new user's id and token.
async fn invite(
    app: &TestApp,
    t: &TestTenant,
    manager: &str,
    email: &str,
    role: &str,
) -> (String, String) {
    let (status, body) = call(
        app,
        t,
        manager,
        Method::POST,
        "/api/users",
        Some(json!({ "email": email, "role": role })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        body["user"]["id"].as_str().unwrap().to_string(),
        body["token"].as_str().unwrap().to_string(),
    )
}

/// `POST /login` with `token` from client address `client`, as the edge forwards it: the
/// status (a redirect is not followed).
async fn login(app: &TestApp, t: &TestTenant, token: &str, client: &str) -> StatusCode {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let now = tenantgate_contract::time::now_secs();
    let mut rb = http.post(format!("{}/login", app.base));
    for (k, v) in app.signed_headers(t, &app.edge_keys, now, "POST", "/login") {
        rb = rb.header(k, v);
    }
    rb.header("x-forwarded-for", client)
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .status()
}

/// Status of `GET /api/items` with `token`.
async fn items_status(app: &TestApp, t: &TestTenant, token: &str) -> StatusCode {
    call(app, t, token, Method::GET, "/api/items", None).await.0
}

/// Every audit record of `t`, newest first, read page by page (two at a time, so paging is
/// exercised) as `owner`.
async fn audit_trail(app: &TestApp, t: &TestTenant, owner: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut path = "/api/audit?limit=2".to_string();
    loop {
        let (status, body) = call(app, t, owner, Method::GET, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        all.extend(body["entries"].as_array().unwrap().iter().cloned());
        match body["next_cursor"].as_i64() {
            Some(c) => path = format!("/api/audit?limit=2&cursor={c}"),
            None => return all,
        }
    }
}

/// The actions of a trail, oldest first.
fn actions(trail: &[Value]) -> Vec<&str> {
    trail
        .iter()
        .rev()
        .map(|e| e["action"].as_str().unwrap())
        .collect()
}

both_backends!(users_are_invited_changed_disabled_and_deleted);
async fn users_are_invited_changed_disabled_and_deleted(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", json!({})).await;
    let owner = app.user(&t, "owner", None).await;
    let viewer = app.user(&t, "viewer", None).await;

    // Invite: the token is shown once and works at once.
    let (status, body) = call(
        &app,
        &t,
        &owner,
        Method::POST,
        "/api/users",
        Some(json!({ "email": "Ann@Example.com", "role": "member", "ttl_secs": 3600 })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["email"], "ann@example.com");
    assert_eq!(body["user"]["role"], "member");
    assert!(body["expires_at"].is_string());
    let ann_id = body["user"]["id"].as_str().unwrap().to_string();
    let ann = body["token"].as_str().unwrap().to_string();
    assert!(ann.starts_with("tgu_"));
    let (status, _) = call(
        &app,
        &t,
        &ann,
        Method::POST,
        "/api/items",
        Some(json!({"title": "by ann"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Refusals: taken email, unknown role, bad email, no permission.
    let (status, body) = call(
        &app,
        &t,
        &owner,
        Method::POST,
        "/api/users",
        Some(json!({ "email": "ann@example.com", "role": "viewer" })),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (StatusCode::CONFLICT, &json!("conflict"))
    );
    let (status, body) = call(
        &app,
        &t,
        &owner,
        Method::POST,
        "/api/users",
        Some(json!({ "email": "bob@example.com", "role": "admin" })),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"]["message"], "no such role");
    let (status, body) = call(
        &app,
        &t,
        &owner,
        Method::POST,
        "/api/users",
        Some(json!({ "email": "not an address", "role": "viewer" })),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    for (token, who) in [(&viewer, "viewer"), (&ann, "member")] {
        let (status, body) = call(&app, &t, token, Method::GET, "/api/users", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
        let (status, _) = call(
            &app,
            &t,
            token,
            Method::DELETE,
            &format!("/api/users/{ann_id}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{who}");
    }

    // The list pages.
    let (status, body) = call(&app, &t, &owner, Method::GET, "/api/users?limit=2", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["users"].as_array().unwrap().len(), 2);
    let cursor = body["next_cursor"].as_str().unwrap();
    let (_, rest) = call(
        &app,
        &t,
        &owner,
        Method::GET,
        &format!("/api/users?cursor={cursor}"),
        None,
    )
    .await;
    assert_eq!(rest["users"].as_array().unwrap().len(), 1, "{rest}");
    let mut ids: Vec<&Value> = body["users"].as_array().unwrap().iter().collect();
    ids.extend(rest["users"].as_array().unwrap());
    let ids: std::collections::BTreeSet<&str> =
        ids.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.contains(ann_id.as_str()));

    // A role change applies to the user's existing token at once.
    let (status, body) = call(
        &app,
        &t,
        &owner,
        Method::PATCH,
        &format!("/api/users/{ann_id}"),
        Some(json!({ "role": "viewer" })),
    )
    .await;
    assert_eq!((status, &body["role"]), (StatusCode::OK, &json!("viewer")));
    let (status, _) = call(
        &app,
        &t,
        &ann,
        Method::POST,
        "/api/items",
        Some(json!({"title": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Disabled: refused like an unknown token; enabled again: back.
    let (status, body) = call(
        &app,
        &t,
        &owner,
        Method::PATCH,
        &format!("/api/users/{ann_id}"),
        Some(json!({ "disabled": true })),
    )
    .await;
    assert_eq!((status, &body["disabled"]), (StatusCode::OK, &json!(true)));
    assert_eq!(items_status(&app, &t, &ann).await, StatusCode::UNAUTHORIZED);
    call(
        &app,
        &t,
        &owner,
        Method::PATCH,
        &format!("/api/users/{ann_id}"),
        Some(json!({ "disabled": false })),
    )
    .await;
    assert_eq!(items_status(&app, &t, &ann).await, StatusCode::OK);

    // Delete: the user and their tokens are gone.
    let (status, _) = call(
        &app,
        &t,
        &owner,
        Method::DELETE,
        &format!("/api/users/{ann_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(items_status(&app, &t, &ann).await, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &app,
        &t,
        &owner,
        Method::DELETE,
        &format!("/api/users/{ann_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}

both_backends!(the_tenant_always_keeps_an_active_owner);
async fn the_tenant_always_keeps_an_active_owner(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", json!({})).await;
    let owner = app.user(&t, "owner", None).await;
    let (_, users) = call(&app, &t, &owner, Method::GET, "/api/users", None).await;
    let me = users["users"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/users/{me}");
    for (method, body) in [
        (Method::PATCH, Some(json!({ "role": "member" }))),
        (Method::PATCH, Some(json!({ "disabled": true }))),
        (Method::DELETE, None),
    ] {
        let (status, answer) = call(&app, &t, &owner, method.clone(), &path, body.clone()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{method} {body:?}: {answer}");
        assert_eq!(answer["error"]["code"], "conflict");
    }
    let (status, _) = call(
        &app,
        &t,
        &owner,
        Method::DELETE,
        &format!("{path}?erase=true"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Still the owner, still working: the refused changes were rolled back.
    assert_eq!(items_status(&app, &t, &owner).await, StatusCode::OK);
    let (_, users) = call(&app, &t, &owner, Method::GET, "/api/users", None).await;
    assert_eq!(users["users"][0]["role"], "owner");
    assert_eq!(users["users"][0]["disabled"], false);

    // With a second owner, the first may step down; then the second is the last.
    let (second, second_token) = invite(&app, &t, &owner, "second@example.com", "owner").await;
    let (status, _) = call(
        &app,
        &t,
        &owner,
        Method::PATCH,
        &path,
        Some(json!({ "role": "member" })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &app,
        &t,
        &second_token,
        Method::DELETE,
        &format!("/api/users/{second}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    app.stop().await;
}

both_backends!(a_revoked_token_is_refused_by_every_app_process_within_a_second);
async fn a_revoked_token_is_refused_by_every_app_process_within_a_second(backend: Engine) {
    let mut app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", json!({})).await;
    let owner = app.user(&t, "owner", None).await;
    let (_, member) = invite(&app, &t, &owner, "m@example.com", "member").await;
    let processes = [app.base.clone(), app.add_process().await];
    let status_at = |base: String, token: String| {
        let rb = app
            .request_at(&base, &t, Method::GET, "/api/items")
            .bearer_auth(token);
        async move { rb.send().await.unwrap().status() }
    };
    for base in &processes {
        assert_eq!(
            status_at(base.clone(), member.clone()).await,
            StatusCode::OK
        );
    }

    // The list shows ids, never a secret or its hash.
    let (status, list) = call(&app, &t, &owner, Method::GET, "/api/tokens", None).await;
    assert_eq!(status, StatusCode::OK);
    let text = list.to_string();
    assert!(!text.contains(&member) && !text.contains(&owner));
    assert!(!text.contains(&tenantgate_contract::crypto::hash_token(&member)));
    let tokens = list["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 2, "{list}");
    let id = tokens
        .iter()
        .find(|tok| tok["email"] == "m@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Revoke through the first process; both refuse the token within a second.
    let (status, _) = call(
        &app,
        &t,
        &owner,
        Method::DELETE,
        &format!("/api/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let revoked = Instant::now();
    for base in &processes {
        wait_until(
            "the revoked token is refused",
            Duration::from_secs(1),
            || {
                let answer = status_at(base.clone(), member.clone());
                async move { (answer.await == StatusCode::UNAUTHORIZED).then_some(()) }
            },
        )
        .await;
    }
    println!(
        "revocation refused at both processes {:?} after the DELETE",
        revoked.elapsed()
    );
    let (status, _) = call(
        &app,
        &t,
        &owner,
        Method::DELETE,
        &format!("/api/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Still listed: the user; gone: the token.
    let (_, list) = call(&app, &t, &owner, Method::GET, "/api/tokens", None).await;
    assert_eq!(list["tokens"].as_array().unwrap().len(), 1);
    app.stop().await;
}

both_backends!(custom_roles_are_documents_and_built_in_roles_stay);
async fn custom_roles_are_documents_and_built_in_roles_stay(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", json!({})).await;
    let owner = app.user(&t, "owner", None).await;

    let (status, roles) = call(&app, &t, &owner, Method::GET, "/api/roles", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        roles["roles"],
        json!([
            {"name": "member", "permissions": {"items": ["read", "write"]}, "builtin": true},
            {"name": "owner", "permissions": {"items": ["read", "write"], "users": ["manage"],
                "export": ["run"], "audit": ["read"]}, "builtin": true},
            {"name": "viewer", "permissions": {"items": ["read"]}, "builtin": true},
        ])
    );

    // A custom role: readers who may export.
    let (status, role) = call(
        &app,
        &t,
        &owner,
        Method::POST,
        "/api/roles",
        Some(json!({"name": "auditor", "permissions": {"items": ["read"], "export": ["run"]}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{role}");
    assert_eq!(role["builtin"], false);
    let (_, auditor) = invite(&app, &t, &owner, "aud@example.com", "auditor").await;
    let export = app
        .get(&t, "/api/export")
        .bearer_auth(&auditor)
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    let (status, _) = call(
        &app,
        &t,
        &auditor,
        Method::POST,
        "/api/items",
        Some(json!({"title": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Edited: the export goes, writing comes, for the existing token.
    let (status, role) = call(
        &app,
        &t,
        &owner,
        Method::PATCH,
        "/api/roles/auditor",
        Some(json!({"permissions": {"items": ["read", "write"]}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{role}");
    let (status, _) = call(
        &app,
        &t,
        &auditor,
        Method::POST,
        "/api/items",
        Some(json!({"title": "x"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call(&app, &t, &auditor, Method::GET, "/api/export", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Unknown resources and actions, bad names.
    for body in [
        json!({"name": "x", "permissions": {"billing": ["read"]}}),
        json!({"name": "x", "permissions": {"items": ["delete"]}}),
        json!({"name": "x", "permissions": {"items": "read"}}),
        json!({"name": "Bad Name", "permissions": {}}),
    ] {
        let (status, answer) = call(
            &app,
            &t,
            &owner,
            Method::POST,
            "/api/roles",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "validation_failed");
    }
    let (status, _) = call(
        &app,
        &t,
        &owner,
        Method::POST,
        "/api/roles",
        Some(json!({"name": "auditor", "permissions": {}})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Built-in roles: neither changed nor removed; a role in use is not removed.
    for name in ["owner", "member", "viewer"] {
        let (status, _) = call(
            &app,
            &t,
            &owner,
            Method::PATCH,
            &format!("/api/roles/{name}"),
            Some(json!({"permissions": {"items": ["read"]}})),
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{name}");
        let (status, _) = call(
            &app,
            &t,
            &owner,
            Method::DELETE,
            &format!("/api/roles/{name}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT, "{name}");
    }
    let (status, _) = call(&app, &t, &owner, Method::DELETE, "/api/roles/auditor", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = call(&app, &t, &owner, Method::DELETE, "/api/roles/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // No escalation: a manager without audit:read cannot grant it or make an owner.
    call(
        &app,
        &t,
        &owner,
        Method::POST,
        "/api/roles",
        Some(json!({"name": "helpdesk", "permissions": {"users": ["manage"], "items": ["read"]}})),
    )
    .await;
    let (_, helpdesk) = invite(&app, &t, &owner, "help@example.com", "helpdesk").await;
    let (status, answer) = call(
        &app,
        &t,
        &helpdesk,
        Method::POST,
        "/api/users",
        Some(json!({"email": "evil@example.com", "role": "owner"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    let (status, _) = call(
        &app,
        &t,
        &helpdesk,
        Method::POST,
        "/api/roles",
        Some(json!({"name": "spy", "permissions": {"audit": ["read"]}})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, users) = call(&app, &t, &owner, Method::GET, "/api/users", None).await;
    let owner_id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["role"] == "owner")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = call(
        &app,
        &t,
        &helpdesk,
        Method::PATCH,
        &format!("/api/users/{owner_id}"),
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Within its own permissions it manages: invite a viewer.
    invite(&app, &t, &helpdesk, "v@example.com", "viewer").await;

    // Removed once unused.
    let (_, users) = call(&app, &t, &owner, Method::GET, "/api/users", None).await;
    let auditor_id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["role"] == "auditor")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        &app,
        &t,
        &owner,
        Method::DELETE,
        &format!("/api/users/{auditor_id}"),
        None,
    )
    .await;
    let (status, _) = call(&app, &t, &owner, Method::DELETE, "/api/roles/auditor", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.stop().await;
}

both_backends!(the_audit_trail_records_sign_ins_and_changes);
async fn the_audit_trail_records_sign_ins_and_changes(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", json!({})).await;
    let owner = app.user(&t, "owner", None).await;
    let viewer = app.user(&t, "viewer", None).await;
    assert_eq!(
        login(&app, &t, "tgu_wrong", "203.0.113.9").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&app, &t, &viewer, "203.0.113.9").await,
        StatusCode::SEE_OTHER
    );
    let (id, _) = invite(&app, &t, &owner, "ann@example.com", "member").await;
    call(
        &app,
        &t,
        &owner,
        Method::PATCH,
        &format!("/api/users/{id}"),
        Some(json!({"role": "viewer"})),
    )
    .await;
    let (_, tokens) = call(&app, &t, &owner, Method::GET, "/api/tokens", None).await;
    let token_id = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|tok| tok["email"] == "ann@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    call(
        &app,
        &t,
        &owner,
        Method::DELETE,
        &format!("/api/tokens/{token_id}"),
        None,
    )
    .await;
    let (status, _) = call(&app, &t, &owner, Method::GET, "/api/export", None).await;
    assert_eq!(status, StatusCode::OK);
    call(
        &app,
        &t,
        &owner,
        Method::DELETE,
        &format!("/api/users/{id}"),
        None,
    )
    .await;
    let (_, item) = call(
        &app,
        &t,
        &owner,
        Method::POST,
        "/api/items",
        Some(json!({"title": "short-lived"})),
    )
    .await;
    let item_id = item["id"].as_str().unwrap().to_string();
    let (status, _) = call(
        &app,
        &t,
        &owner,
        Method::DELETE,
        &format!("/api/items/{item_id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let trail = audit_trail(&app, &t, &owner).await;
    assert_eq!(
        actions(&trail),
        [
            "login.failed",
            "login.succeeded",
            "user.invited",
            "user.role_changed",
            "token.revoked",
            "export.run",
            "user.deleted",
            "item.deleted",
        ]
    );
    assert_eq!(trail[0]["subject"], json!({"id": item_id, "email": null}));
    // Newest first, ids falling.
    assert!(trail
        .windows(2)
        .all(|w| w[0]["id"].as_i64() > w[1]["id"].as_i64()));
    let trail = &trail[1..];
    let failed = &trail[6];
    assert_eq!(failed["actor"]["kind"], "anonymous");
    assert_eq!(failed["client"], "203.0.113.9");
    let changed = &trail[3];
    assert_eq!(
        changed["subject"],
        json!({"id": id, "email": "ann@example.com"})
    );
    assert_eq!(changed["detail"], json!({"from": "member", "to": "viewer"}));
    assert_eq!(changed["actor"]["kind"], "user");
    assert_eq!(trail[2]["detail"]["token_id"], token_id.as_str());

    // audit:read is the owner's; a viewer gets 403.
    let (status, _) = call(&app, &t, &viewer, Method::GET, "/api/audit", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(&app, &t, &owner, Method::GET, "/api/audit?limit=0", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    app.stop().await;
}

both_backends!(export_holds_every_table_and_erasure_leaves_no_personal_data);
async fn export_holds_every_table_and_erasure_leaves_no_personal_data(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", json!({})).await;
    let owner = app.user(&t, "owner", None).await;
    let (ann_id, ann) = invite(&app, &t, &owner, "ann@example.com", "member").await;
    // Ann signs in from her address and writes; her data is in the trail and the export.
    assert_eq!(
        login(&app, &t, &ann, "198.51.100.77").await,
        StatusCode::SEE_OTHER
    );
    // More than a page of the export's 500 rows per table, to cross page boundaries.
    let pool = app.tenant_pool(&t).await;
    for i in 0..520 {
        sqlx::query(
            "INSERT INTO items (id, title, body, created_by, created_at, updated_at)
             VALUES ($1, $2, '', $3, $4, $4)",
        )
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(format!("item {i}"))
        .bind(&ann_id)
        .bind(i64::from(i))
        .execute(&pool)
        .await
        .unwrap();
    }
    pool.close().await;

    let export = |token: String| {
        let rb = app.get(&t, "/api/export").bearer_auth(token);
        async move {
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let text = r.text().await.unwrap();
            let doc: Value = serde_json::from_str(&text).expect("the export is one JSON document");
            (text, doc)
        }
    };
    let (text, doc) = export(owner.clone()).await;
    assert_eq!(doc["items"].as_array().unwrap().len(), 520);
    let users = doc["users"].as_array().unwrap();
    assert_eq!(users.len(), 2);
    assert!(users.iter().any(|u| u["email"] == "ann@example.com"));
    assert_eq!(doc["roles"].as_array().unwrap().len(), 3);
    let audit = doc["audit"].as_array().unwrap();
    assert_eq!(
        audit
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["user.invited", "login.succeeded", "export.run"],
        "oldest first, this export included"
    );
    // No secrets: not the tokens, not their hashes.
    for secret in [&owner, &ann] {
        assert!(!text.contains(secret.as_str()));
        assert!(!text.contains(&tenantgate_contract::crypto::hash_token(secret)));
    }
    assert!(text.contains("198.51.100.77"));

    // Erase Ann.
    let (status, body) = call(
        &app,
        &t,
        &owner,
        Method::DELETE,
        &format!("/api/users/{ann_id}?erase=true"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(items_status(&app, &t, &ann).await, StatusCode::UNAUTHORIZED);
    let (_, users) = call(&app, &t, &owner, Method::GET, "/api/users", None).await;
    let erased = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == ann_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (&erased["erased"], &erased["disabled"]),
        (&json!(true), &json!(true))
    );
    let pseudonym = erased["email"].as_str().unwrap().to_string();
    assert!(pseudonym.ends_with("@erased.invalid"), "{pseudonym}");
    let (_, tokens) = call(&app, &t, &owner, Method::GET, "/api/tokens", None).await;
    assert!(!tokens.to_string().contains(&ann_id), "{tokens}");
    let (status, _) = call(
        &app,
        &t,
        &owner,
        Method::PATCH,
        &format!("/api/users/{ann_id}"),
        Some(json!({"disabled": false})),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // Nothing of Ann's personal data in the trail or the export; the pseudonym stands in and
    // the erasure is recorded.
    let trail = audit_trail(&app, &t, &owner).await;
    let (text, doc) = export(owner.clone()).await;
    for place in [serde_json::to_string(&trail).unwrap(), text] {
        assert!(!place.contains("ann@example.com"));
        assert!(!place.contains("198.51.100.77"));
    }
    let erasure = &trail[0];
    assert_eq!(erasure["action"], "user.erased");
    assert_eq!(
        erasure["subject"],
        json!({"id": ann_id, "email": pseudonym})
    );
    assert_eq!(erasure["detail"]["tokens_revoked"], 1);
    assert!(trail
        .iter()
        .any(|e| e["action"] == "login.succeeded" && e["actor"]["email"] == pseudonym.as_str()));
    // Her items stay, attributed to the pseudonymous user.
    assert_eq!(doc["items"].as_array().unwrap().len(), 520);
    app.stop().await;
}

both_backends!(usage_is_the_tenants_own_and_needs_audit_read);
async fn usage_is_the_tenants_own_and_needs_audit_read(backend: Engine) {
    use tenantgate_catalog::store::usage::UsageCounts;
    let app = TestApp::start(backend, Options::default()).await;
    let t = app.tenant("acme", json!({})).await;
    let other = app.tenant("globex", json!({})).await;
    let owner = app.user(&t, "owner", None).await;
    let viewer = app.user(&t, "viewer", None).await;
    let counts = UsageCounts {
        requests: 7,
        errors: 1,
        rate_limited: 2,
        bytes: 70,
    };
    let now = tenantgate_contract::time::now_ms();
    app.catalog
        .add_usage(
            now,
            &[(t.id, counts), (other.id, counts), (other.id, counts)],
        )
        .await
        .unwrap();
    let (status, body) = call(&app, &t, &owner, Method::GET, "/api/usage?step=3600", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let points = body["usage"].as_array().unwrap();
    assert_eq!(body["step"], 3600);
    // The last 24 hours in aligned hours: 25 buckets unless now is on the hour.
    assert!((24..=25).contains(&points.len()), "{body}");
    let total: i64 = points.iter().map(|p| p["requests"].as_i64().unwrap()).sum();
    // Only this tenant's counts, never the other tenant's.
    assert_eq!(total, 7, "{body}");
    assert_eq!(points.last().unwrap()["rate_limited"], 2, "{body}");

    let (status, _) = call(&app, &t, &viewer, Method::GET, "/api/usage", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = call(&app, &t, &owner, Method::GET, "/api/usage?step=61", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}
