//! The dashboard and login pages: tenant's locale, theme colour, escaping, session cookie.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tenantgate_config::db_url::Engine;

use crate::both_backends;
use crate::support::{Options, TestApp};

async fn dashboard_speaks_the_tenants_language(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let de = app
        .tenant(
            "globex",
            json!({"locale": "de", "theme": {"color": "#C0FFEE"}}),
        )
        .await;
    let en = app
        .tenant(
            "acme",
            json!({"theme": {"color": "red;}</style><script>x()</script>"}}),
        )
        .await;
    let de_owner = app.user(&de, "owner", None).await;
    let en_owner = app.user(&en, "owner", None).await;
    for title in ["Erster Eintrag", "<script>alert('x')</script>"] {
        let resp = app
            .request(&de, Method::POST, "/api/items")
            .bearer_auth(&de_owner)
            .json(&json!({"title": title}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::CREATED);
    }

    let resp = app
        .get(&de, "/dashboard")
        .bearer_auth(&de_owner)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = resp.text().await.unwrap();
    assert!(html.contains("<html lang=\"de\">"), "{html}");
    assert!(html.contains("globex Inc."), "{html}");
    assert!(
        html.contains("Übersicht") && html.contains("Neueste Einträge"),
        "{html}"
    );
    assert!(html.contains("data-count=\"2\""), "{html}");
    assert!(html.contains("Erster Eintrag"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "{html}");
    assert!(html.contains("background:#c0ffee"), "{html}");

    let html = app
        .get(&en, "/dashboard")
        .bearer_auth(&en_owner)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("<html lang=\"en\">") && html.contains("No items yet."),
        "{html}"
    );
    assert!(
        !html.contains("<script>") && !html.contains("red;"),
        "an invalid colour is never used: {html}"
    );

    // Browsers without a session are sent to the login form, in German.
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let signed = |method: Method, path: &str| {
        let now = tenantgate_contract::time::now_secs();
        let headers = app.signed_headers(&de, &app.edge_keys, now, method.as_str(), path);
        let mut rb = no_redirects.request(method, format!("{}{path}", app.base));
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        rb
    };
    let resp = signed(Method::GET, "/dashboard").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/login");
    let html = signed(Method::GET, "/login")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("Anmelden") && html.contains("name=\"token\""),
        "{html}"
    );

    let resp = signed(Method::POST, "/login")
        .form(&[("token", "tgu_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp
        .text()
        .await
        .unwrap()
        .contains("Dieses Token ist ungültig."));
    let resp = signed(Method::POST, "/login")
        .form(&[("token", "a\r\nb")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = signed(Method::POST, "/login")
        .form(&[("token", de_owner.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()["location"], "/dashboard");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let resp = signed(Method::GET, "/dashboard")
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("Übersicht"));
    app.stop().await;
}
both_backends!(dashboard_speaks_the_tenants_language);
