//! The dashboard rendered by a real browser (headless Chromium, Debian's `chromium` package).
//!
//! Chromium cannot add the edge's signed headers, so a small stand-in for the edge sits in
//! front of the app: it signs every request for one tenant, adds the user's token and forwards
//! it, as the edge and a signed-in browser would. It passes the page's
//! `Content-Security-Policy` on, and Chromium's log shows whether the policy blocked anything.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use reqwest::Method;
use serde_json::json;
use tenantgate_config::db_url::Engine;

use crate::both_backends;
use crate::support::{edge_headers, Options, TestApp};

/// The browser: `TENANTGATE_CHROMIUM`, else `chromium` on the PATH.
fn chromium() -> String {
    let path = std::env::var("TENANTGATE_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let found = std::process::Command::new(&path)
        .arg("--version")
        .output()
        .is_ok();
    assert!(
        found,
        "headless Chromium is needed for this test: install Debian's `chromium` package \
         (apt-get install chromium) or point TENANTGATE_CHROMIUM at a Chromium binary"
    );
    path
}

/// The DOM of `url` after Chromium rendered it, and what Chromium logged (page console
/// messages, such as Content-Security-Policy violations, included).
async fn dump_dom(browser: &str, url: &str) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            url,
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("chromium finishes within 60 s")
        .expect("chromium runs");
    let console = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "chromium failed: {console}");
    (String::from_utf8(output.stdout).unwrap(), console)
}

async fn dashboard_renders_in_headless_chromium(backend: Engine) {
    let browser = chromium();
    let app = TestApp::start(backend, Options::default()).await;
    let t = app
        .tenant(
            "globex",
            json!({"locale": "de", "theme": {"color": "#123456"}}),
        )
        .await;
    let token = app.user(&t, "owner", None).await;
    let resp = app
        .request(&t, Method::POST, "/api/items")
        .bearer_auth(&token)
        .json(&json!({"title": "Hallo Welt <3"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    // The stand-in edge. With `spoil_csp` it breaks the page's stylesheet hash, to show that
    // the browser reports a policy that does not allow the page's style.
    let spoil_csp = Arc::new(AtomicBool::new(false));
    let (client, base, keys, tenant, spoil) = (
        app.client.clone(),
        app.base.clone(),
        app.edge_keys.clone(),
        t.clone(),
        spoil_csp.clone(),
    );
    let edge = axum::Router::new().fallback(move |req: Request| {
        let (client, base, keys, tenant, token, spoil) = (
            client.clone(),
            base.clone(),
            keys.clone(),
            tenant.clone(),
            token.clone(),
            spoil.clone(),
        );
        async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let mut forwarded = client.get(format!("{base}{path}")).bearer_auth(&token);
            let now = tenantgate_contract::time::now_secs();
            for (k, v) in edge_headers(&tenant, &keys, now, "GET", &path) {
                forwarded = forwarded.header(k, v);
            }
            let upstream = forwarded.send().await.unwrap();
            let mut response = Response::builder().status(upstream.status().as_u16());
            if let Some(ct) = upstream.headers().get("content-type") {
                response = response.header("content-type", ct.to_str().unwrap());
            }
            if let Some(csp) = upstream.headers().get("content-security-policy") {
                let mut csp = csp.to_str().unwrap().to_string();
                if spoil.load(Ordering::Relaxed) {
                    csp = csp.replace("'sha256-", "'sha256-AAAA");
                }
                response = response.header("content-security-policy", csp);
            }
            response
                .body(Body::from(upstream.bytes().await.unwrap()))
                .unwrap()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let edge_addr = listener.local_addr().unwrap();
    let edge_task = tokio::spawn(async move { axum::serve(listener, edge).await });

    let (dom, console) = dump_dom(&browser, &format!("http://{edge_addr}/dashboard")).await;
    // The page's Content-Security-Policy allows its own stylesheet: Chromium logs no violation.
    assert!(
        !console.contains("Content Security Policy"),
        "the policy blocks the page: {console}"
    );
    assert!(dom.contains("<html lang=\"de\">"), "{dom}");
    assert!(dom.contains("<h1>globex Inc.</h1>"), "{dom}");
    assert!(
        dom.contains("Übersicht") && dom.contains("Neueste Einträge") && dom.contains("Einträge"),
        "{dom}"
    );
    // Escaped by the app, shown as text by the browser (serialised back as an entity).
    assert!(dom.contains("Hallo Welt &lt;3"), "{dom}");
    assert!(dom.contains("background:#123456"), "{dom}");
    // The check above can fail: the same page under a policy with another hash is reported.
    spoil_csp.store(true, Ordering::Relaxed);
    let (_, console) = dump_dom(&browser, &format!("http://{edge_addr}/dashboard")).await;
    assert!(
        console.contains("Content Security Policy"),
        "a wrong hash is reported: {console}"
    );
    edge_task.abort();
    app.stop().await;
}
both_backends!(dashboard_renders_in_headless_chromium);
