//! Login hardening: security headers of the HTML pages, the origin check of `POST /login`
//! (login CSRF) and the throttle of failed logins per tenant and client address.

use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tenantgate_config::db_url::Engine;

use crate::both_backends;
use crate::support::{Options, TestApp, TestTenant};

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `method path` to `t`, signed like the edge signs it, with the edge's forwarding headers
/// (`x-forwarded-*`) as it would send them for a client at `client` on `https?://host/prefix`.
fn through_edge(
    app: &TestApp,
    t: &TestTenant,
    method: Method,
    path: &str,
    forwarded: Forwarded<'_>,
) -> RequestBuilder {
    let now = tenantgate_contract::time::now_secs();
    let mut rb = no_redirects().request(method.clone(), format!("{}{path}", app.base));
    for (k, v) in app.signed_headers(t, &app.edge_keys, now, method.as_str(), path) {
        rb = rb.header(k, v);
    }
    rb = rb
        .header("x-forwarded-for", forwarded.client)
        .header("x-forwarded-host", forwarded.host)
        .header(
            "x-forwarded-proto",
            if forwarded.tls { "https" } else { "http" },
        );
    if let Some(prefix) = forwarded.prefix {
        rb = rb.header("x-forwarded-prefix", prefix);
    }
    rb
}

#[derive(Clone, Copy)]
struct Forwarded<'a> {
    client: &'a str,
    host: &'a str,
    tls: bool,
    prefix: Option<&'a str>,
}

const PLAIN: Forwarded<'static> = Forwarded {
    client: "198.51.100.1",
    host: "acme.localhost:8080",
    tls: false,
    prefix: None,
};

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .unwrap()
}

/// Check the security headers of an HTML page and that its CSP allows exactly its stylesheet.
fn assert_secure_page(headers: &HeaderMap, html: &str) {
    let csp = header(headers, "content-security-policy");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"default-src 'none'"), "{csp}");
    assert!(directives.contains(&"frame-ancestors 'none'"), "{csp}");
    assert!(directives.contains(&"form-action 'self'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("script-src"),
        "no scripts, no blanket inline styles: {csp}"
    );
    // The one inline stylesheet is allowed by its own hash, so the page renders styled.
    let style = html
        .split_once("<style>")
        .and_then(|(_, rest)| rest.split_once("</style>"))
        .map(|(style, _)| style)
        .expect("the page has a stylesheet");
    let hash = tenantgate_contract::crypto::sha256_base64(style.as_bytes());
    assert!(
        directives.contains(&format!("style-src 'sha256-{hash}'").as_str()),
        "{csp} does not allow the page's style"
    );
    assert_eq!(header(headers, "x-frame-options"), "DENY");
    assert_eq!(header(headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(headers, "referrer-policy"), "same-origin");
}

async fn html_pages_send_security_headers(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let acme = app
        .tenant("acme", json!({"theme": {"color": "#112233"}}))
        .await;
    let globex = app.tenant("globex", json!({"locale": "fr"})).await;
    let owner = app.user(&acme, "owner", None).await;

    let mut policies = Vec::new();
    for t in [&acme, &globex] {
        let resp = through_edge(&app, t, Method::GET, "/login", PLAIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let headers = resp.headers().clone();
        assert_secure_page(&headers, &resp.text().await.unwrap());
        policies.push(header(&headers, "content-security-policy").to_string());
    }
    assert_ne!(
        policies[0], policies[1],
        "each theme colour is its own stylesheet with its own hash"
    );

    let resp = through_edge(&app, &acme, Method::GET, "/dashboard", PLAIN)
        .bearer_auth(&owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let headers = resp.headers().clone();
    let html = resp.text().await.unwrap();
    assert!(html.contains("#112233"), "{html}");
    assert_secure_page(&headers, &html);

    // The failed login's form again (401) is a page like the others.
    let resp = through_edge(&app, &acme, Method::POST, "/login", PLAIN)
        .form(&[("token", "tgu_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let headers = resp.headers().clone();
    assert_secure_page(&headers, &resp.text().await.unwrap());
    app.stop().await;
}
both_backends!(html_pages_send_security_headers);

/// Status, error code and whether a session cookie was set.
async fn outcome(rb: RequestBuilder) -> (StatusCode, Option<String>, bool) {
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let cookie = resp.headers().contains_key("set-cookie");
    let code = if resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"))
    {
        let body: Value = resp.json().await.unwrap();
        body["error"]["code"].as_str().map(str::to_string)
    } else {
        None
    };
    (status, code, cookie)
}

async fn cross_origin_logins_are_refused(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let acme = app.tenant("acme", json!({})).await;
    let token = app.user(&acme, "owner", None).await;
    let login = |forwarded: Forwarded<'_>| {
        through_edge(&app, &acme, Method::POST, "/login", forwarded)
            .form(&[("token", token.as_str())])
    };
    let refused = (
        StatusCode::FORBIDDEN,
        Some("cross_origin".to_string()),
        false,
    );
    let signed_in = (StatusCode::SEE_OTHER, None, true);

    // A foreign page's form, by Origin or (without Origin) by fetch metadata.
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("origin", "https://acme.localhost:8080"),
        ("origin", "http://acme.localhost"),
        ("origin", "http://globex.localhost:8080"),
        ("origin", "null"),
        ("sec-fetch-site", "cross-site"),
        ("sec-fetch-site", "same-site"),
    ] {
        assert_eq!(
            outcome(login(PLAIN).header(name, value)).await,
            refused,
            "{name}: {value}"
        );
    }
    // The tenant's own login page, and clients that are not browsers.
    assert_eq!(
        outcome(login(PLAIN).header("origin", "http://ACME.localhost:8080")).await,
        signed_in
    );
    assert_eq!(
        outcome(login(PLAIN).header("sec-fetch-site", "same-origin")).await,
        signed_in
    );
    assert_eq!(outcome(login(PLAIN)).await, signed_in);

    // A prefix tenant on a shared host over TLS: the origin is the host's, without the prefix;
    // the cookie is the prefix's and Secure.
    let shared = Forwarded {
        client: "198.51.100.2",
        host: "app.example.com",
        tls: true,
        prefix: Some("/acme"),
    };
    let resp = login(shared)
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(resp.headers(), "location"), "/acme/dashboard");
    let cookie = header(resp.headers(), "set-cookie");
    assert!(
        cookie.contains("Path=/acme") && cookie.contains("Secure"),
        "{cookie}"
    );
    assert_eq!(
        outcome(login(shared).header("origin", "http://app.example.com")).await,
        refused,
        "the plain-HTTP origin is another origin"
    );
    app.stop().await;
}
both_backends!(cross_origin_logins_are_refused);

async fn failed_logins_are_throttled_per_address_and_tenant(backend: Engine) {
    const PER_ADDRESS: usize = 5;
    const PER_TENANT: usize = 12;
    let app = TestApp::start(
        backend,
        Options {
            login_failures: (PER_ADDRESS as u32, PER_TENANT as u32),
            ..Options::default()
        },
    )
    .await;
    let acme = app.tenant("acme", json!({})).await;
    let globex = app.tenant("globex", json!({})).await;
    let owner = app.user(&acme, "owner", None).await;
    let from = |client: &'static str| Forwarded { client, ..PLAIN };
    let bearer = |t: &TestTenant, client: &'static str, token: &str| {
        through_edge(&app, t, Method::GET, "/api/items", from(client)).bearer_auth(token)
    };

    // Successful logins cost nothing, however many.
    for _ in 0..3 * PER_ADDRESS {
        let (status, _, _) = outcome(bearer(&acme, "192.0.2.1", &owner)).await;
        assert_eq!(status, StatusCode::OK);
    }

    // 200 wrong tokens from one address: 401 until its budget is spent, then 429 with
    // Retry-After, without the token being looked at (the right token is refused too).
    let mut statuses = Vec::new();
    for i in 0..200 {
        let resp = through_edge(&app, &acme, Method::POST, "/login", from("192.0.2.66"))
            .form(&[("token", format!("tgu_guess{i}"))])
            .send()
            .await
            .unwrap();
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry: u64 = header(resp.headers(), "retry-after").parse().unwrap();
            assert!((1..=600).contains(&retry), "Retry-After {retry}");
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "login_throttled", "{body}");
        }
        statuses.push(status);
    }
    let first_429 = statuses
        .iter()
        .position(|s| *s == StatusCode::TOO_MANY_REQUESTS)
        .expect("the flood is throttled");
    assert_eq!(first_429, PER_ADDRESS, "{statuses:?}");
    assert!(statuses[..PER_ADDRESS]
        .iter()
        .all(|s| *s == StatusCode::UNAUTHORIZED));
    assert!(statuses[PER_ADDRESS..]
        .iter()
        .all(|s| *s == StatusCode::TOO_MANY_REQUESTS));
    let (status, code, _) = outcome(bearer(&acme, "192.0.2.66", &owner)).await;
    assert_eq!(
        (status, code.as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("login_throttled"))
    );

    // Another address of the same tenant still gets 401, not 429, until the tenant's budget
    // (12) is spent: 5 failures here and 2 from a third address bring it to 12.
    for _ in 0..PER_ADDRESS {
        let (status, code, _) = outcome(bearer(&acme, "192.0.2.77", "tgu_wrong")).await;
        assert_eq!(
            (status, code.as_deref()),
            (StatusCode::UNAUTHORIZED, Some("unauthenticated"))
        );
    }
    for _ in 0..PER_TENANT - 2 * PER_ADDRESS {
        let (status, _, _) = outcome(bearer(&acme, "2001:db8::3", "tgu_wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, code, _) = outcome(bearer(&acme, "2001:db8::3", "tgu_wrong")).await;
    assert_eq!(
        (status, code.as_deref()),
        (StatusCode::TOO_MANY_REQUESTS, Some("login_throttled")),
        "the third address has budget left, the tenant has none"
    );
    // A spent tenant budget never locks out a valid credential (else guessing from enough
    // addresses would lock every user of the tenant out).
    let (status, _, _) = outcome(bearer(&acme, "192.0.2.1", &owner)).await;
    assert_eq!(status, StatusCode::OK, "a valid token still works");

    // Budgets are per tenant: the flooding address still gets 401 at another tenant.
    let (status, _, _) = outcome(bearer(&globex, "192.0.2.66", "tgu_wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    app.stop().await;
}
both_backends!(failed_logins_are_throttled_per_address_and_tenant);

/// The `tg_session` cookie a response set: (value, attributes).
fn session_cookie(headers: &HeaderMap) -> (String, String) {
    let cookie = headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|c| c.starts_with("tg_session="))
        .unwrap_or_else(|| panic!("no session cookie in {headers:?}"));
    let (pair, attributes) = cookie.split_once(';').unwrap();
    (
        pair.trim_start_matches("tg_session=").to_string(),
        attributes.to_string(),
    )
}

async fn sessions_hold_an_id_not_the_token(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let acme = app.tenant("acme", json!({})).await;
    let token = app.user(&acme, "owner", None).await;
    let short_lived = app
        .user(
            &acme,
            "viewer",
            Some(tenantgate_contract::time::now_ms() + 90_000),
        )
        .await;
    let tls = Forwarded {
        tls: true,
        host: "acme.example.com",
        ..PLAIN
    };
    let login = |token: &str, old: Option<&str>| {
        let mut rb = through_edge(&app, &acme, Method::POST, "/login", tls)
            .form(&[("token", token.to_string())]);
        if let Some(old) = old {
            rb = rb.header("cookie", format!("tg_session={old}"));
        }
        rb.send()
    };
    let dashboard = |session: &str| {
        through_edge(&app, &acme, Method::GET, "/dashboard", tls)
            .header("cookie", format!("tg_session={session}"))
            .send()
    };
    let pool = app.tenant_pool(&acme).await;
    let sessions = || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(&pool)
            .await
            .unwrap();
        n
    };

    let resp = login(&token, None).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (first, attributes) = session_cookie(resp.headers());
    assert_ne!(first, token, "the cookie never carries the token");
    assert!(!first.contains(&token[4..]));
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Max-Age=43200",
        "Path=/",
    ] {
        assert!(attributes.contains(attribute), "{attribute}: {attributes}");
    }
    // Stored hashed, with its user and expiry; the token is nowhere in the row.
    let row: (String, String, i64) =
        sqlx::query_as("SELECT id_hash, token_hash, expires_at FROM sessions")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(row.0, tenantgate_contract::crypto::hash_token(&first));
    assert_eq!(row.1, tenantgate_contract::crypto::hash_token(&token));
    let left = row.2 - tenantgate_contract::time::now_ms();
    assert!((43_000_000..=43_200_000).contains(&left), "{left}");

    let resp = dashboard(&first).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("action=\"/logout\""));
    let resp = dashboard(&token).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::UNAUTHORIZED,
        "a token in the cookie is no session"
    );

    // A new login is a new id, and ends the session the browser brought.
    let resp = login(&token, Some(&first)).await.unwrap();
    let (second, _) = session_cookie(resp.headers());
    assert_ne!(second, first);
    assert_eq!(dashboard(&first).await.unwrap().status(), 401);
    assert_eq!(dashboard(&second).await.unwrap().status(), 200);
    assert_eq!(sessions().await, 1);

    // A session never outlives its token.
    let resp = login(&short_lived, None).await.unwrap();
    let (short, attributes) = session_cookie(resp.headers());
    let max_age: i64 = attributes
        .split(';')
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=90).contains(&max_age), "{attributes}");
    assert_eq!(dashboard(&short).await.unwrap().status(), 200);
    sqlx::query("UPDATE sessions SET expires_at = $1 WHERE id_hash = $2")
        .bind(tenantgate_contract::time::now_ms() - 1)
        .bind(tenantgate_contract::crypto::hash_token(&short))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(dashboard(&short).await.unwrap().status(), 401, "expired");

    // Logout: cross-origin refused; from the site it ends the session and clears the cookie.
    let logout = |session: &str| {
        through_edge(&app, &acme, Method::POST, "/logout", tls)
            .header("cookie", format!("tg_session={session}"))
    };
    let (status, code, _) = outcome(logout(&second).header("origin", "https://evil.example")).await;
    assert_eq!(
        (status, code.as_deref()),
        (StatusCode::FORBIDDEN, Some("cross_origin"))
    );
    assert_eq!(dashboard(&second).await.unwrap().status(), 200);
    let resp = logout(&second)
        .header("origin", "https://acme.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(header(resp.headers(), "location"), "/login");
    let (cleared, attributes) = session_cookie(resp.headers());
    assert!(
        cleared.is_empty() && attributes.contains("Max-Age=0"),
        "{attributes}"
    );
    assert_eq!(dashboard(&second).await.unwrap().status(), 401);

    // Removing the token ends the sessions opened with it.
    let resp = login(&token, None).await.unwrap();
    let (third, _) = session_cookie(resp.headers());
    assert_eq!(dashboard(&third).await.unwrap().status(), 200);
    sqlx::query("DELETE FROM user_tokens WHERE token_hash = $1")
        .bind(tenantgate_contract::crypto::hash_token(&token))
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(dashboard(&third).await.unwrap().status(), 401);
    pool.close().await;
    app.stop().await;
}
both_backends!(sessions_hold_an_id_not_the_token);
