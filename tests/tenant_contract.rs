//! The tenant contract through the real binary: the edge, the admin API's `/v1/resolve` and
//! the app give the same answer for every tenant status; a host is owned whole or shared by
//! path-prefix tenants, never both; prefix tenants sharing a host never see each other's
//! cookies. On both backends.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::cookie::CookieStore;
use reqwest::redirect::Policy;
use serde_json::{json, Value};
use support::{binary, wait_until, DevProcess};
use tenantgate_catalog::store::TenantPatch;
use tenantgate_catalog::Catalog;
use tenantgate_config::Config;
use tenantgate_contract::signing::{self, TenantClaims};
use tenantgate_contract::{Admission, Refusal, TenantStatus};

/// The admin API of a running demo.
struct Admin {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Admin {
    fn of(dev: &DevProcess) -> Admin {
        Admin {
            client: reqwest::Client::new(),
            base: dev.admin(),
            token: dev.admin_token.clone(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn wait_active(&self, slug: &str) -> Value {
        wait_until(
            &format!("{slug} active"),
            Duration::from_secs(60),
            || async {
                let (_, t) = self.get(&format!("/v1/tenants/{slug}")).await;
                (t["status"] == "active").then_some(t)
            },
        )
        .await
    }

    /// A tenant user token for `slug` with `role`.
    async fn user_token(&self, slug: &str, role: &str) -> String {
        let (status, body) = self
            .post(
                &format!("/v1/tenants/{slug}/tokens"),
                json!({"email": format!("{role}@{slug}.test"), "role": role}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_string()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_hosts_are_owned_whole_or_shared_and_cookies_stay_with_their_prefix() {
    let dir = tempfile::tempdir().unwrap();
    ownership_and_cookies(dir.path(), &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_hosts_are_owned_whole_or_shared_and_cookies_stay_with_their_prefix() {
    let db = tenantgate_testkit::PgTestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    ownership_and_cookies(dir.path(), &["--database-url", &db.url]).await;
}

async fn ownership_and_cookies(data_dir: &Path, extra: &[&str]) {
    let dev = DevProcess::start(binary(), data_dir, extra);
    let admin = Admin::of(&dev);

    // A path prefix on a host another tenant owns whole would receive that tenant's cookies.
    let (status, body) = admin
        .post(
            "/v1/tenants/acme/domains",
            json!({"domain": "globex.localhost/admin"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("owned whole"),
        "{body}"
    );
    let (status, body) = admin
        .post(
            "/v1/tenants",
            json!({"slug": "pathco", "name": "Pathco", "domains": ["acme.localhost/pathco"]}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(
        admin.get("/v1/tenants/pathco").await.0,
        404,
        "no half-made tenant"
    );
    // A tenant may put prefixes on its own host.
    let (status, body) = admin
        .post(
            "/v1/tenants/globex/domains",
            json!({"domain": "globex.localhost/extra"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // Two prefix tenants share a host; nobody may then take the host whole.
    for (slug, prefix) in [("alpha", "a"), ("bravo", "b")] {
        let (status, body) = admin
            .post(
                "/v1/tenants",
                json!({"slug": slug, "name": slug, "domains": [format!("shared.localhost/{prefix}")]}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = admin
        .post(
            "/v1/tenants/acme/domains",
            json!({"domain": "shared.localhost"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("path-prefix"),
        "{body}"
    );
    admin.wait_active("alpha").await;
    admin.wait_active("bravo").await;
    let alpha = admin.user_token("alpha", "owner").await;

    // A browser-like client: cookies kept per RFC 6265, shared.localhost resolving to the edge.
    let edge: SocketAddr = dev.addr("edge");
    let jar = std::sync::Arc::new(reqwest::cookie::Jar::default());
    let browser = reqwest::Client::builder()
        .cookie_provider(jar.clone())
        .resolve("shared.localhost", edge)
        .redirect(Policy::none())
        .build()
        .unwrap();
    let site = format!("http://shared.localhost:{}", edge.port());
    let r = browser
        .post(format!("{site}/a/login"))
        .form(&[("token", alpha.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/a/dashboard");
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set_cookie.contains("Path=/a;"), "{set_cookie}");

    // The session works under /a, and the browser never sends it under /b.
    let r = browser
        .get(format!("{site}/a/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("alpha"));
    let cookies_for = |path: &str| jar.cookies(&format!("{site}{path}").parse().unwrap());
    assert!(cookies_for("/a/x").is_some());
    assert!(cookies_for("/b/x").is_none(), "{:?}", cookies_for("/b/x"));
    let r = browser
        .get(format!("{site}/b/dashboard"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "bravo's app saw no session");
    assert_eq!(r.headers()["location"], "/b/login");

    // A write's read-your-writes cookie is scoped the same way.
    let r = browser
        .post(format!("{site}/a/api/items"))
        .bearer_auth(&alpha)
        .json(&json!({"title": "scoped"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sticky = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("tg_primary_until="))
        .expect("read-your-writes cookie");
    assert!(sticky.contains("Path=/a;"), "{sticky}");
    assert!(cookies_for("/b/x").is_none());

    // A theme colour set through the admin API shows on the tenant's dashboard.
    let (status, body) = admin
        .send(
            reqwest::Method::PATCH,
            "/v1/tenants/alpha",
            Some(json!({"settings": {"theme": {"color": "#1F6FEB"}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"], json!({"theme": {"color": "#1f6feb"}}));
    wait_until(
        "dashboard in the new colour",
        Duration::from_secs(10),
        || {
            let (browser, site) = (&browser, &site);
            async move {
                let html = browser
                    .get(format!("{site}/a/dashboard"))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                html.contains("#1f6feb").then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_every_status_gets_one_answer_from_edge_resolve_and_app() {
    let dir = tempfile::tempdir().unwrap();
    status_answers(dir.path(), &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_every_status_gets_one_answer_from_edge_resolve_and_app() {
    let db = tenantgate_testkit::PgTestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    status_answers(dir.path(), &["--database-url", &db.url]).await;
}

/// Status, error code and `Retry-After` of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    code: Option<String>,
    retry_after: Option<String>,
}

impl Answer {
    async fn of(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            code: body["error"]["code"].as_str().map(str::to_string),
            retry_after,
        }
    }
}

async fn status_answers(data_dir: &Path, extra: &[&str]) {
    // Keep the moving hold short: the edge answers a tenant still moving after it.
    std::fs::write(
        data_dir.join("tenantgate.toml"),
        "[edge]\nmoving_hold_ms = 300\n",
    )
    .unwrap();
    let dev = DevProcess::start(binary(), data_dir, extra);
    let admin = Admin::of(&dev);
    let config = Config::load(&data_dir.join("tenantgate.toml")).unwrap();
    let catalog = Catalog::connect(&config.catalog.url, 2).await.unwrap();
    let acme = admin.wait_active("acme").await;
    let id: uuid::Uuid = acme["id"].as_str().unwrap().parse().unwrap();
    let client = reqwest::Client::new();
    let app = dev.app("shard-a");

    for status in [
        TenantStatus::Provisioning,
        TenantStatus::Restoring,
        TenantStatus::Suspended,
        TenantStatus::Deleted,
        TenantStatus::Failed,
        TenantStatus::Moving,
        TenantStatus::Active,
    ] {
        catalog
            .update_tenant(
                id,
                &TenantPatch {
                    status: Some(status),
                    bump_epoch: true,
                    ..TenantPatch::default()
                },
            )
            .await
            .unwrap();
        let expected_edge = match status.admission() {
            Admission::Refuse(r) => refusal(r),
            Admission::Hold => refusal(Refusal::MovingTimedOut),
            Admission::Serve => Answer {
                status: 200,
                code: None,
                retry_after: None,
            },
        };
        // The edge, once the change reached it.
        let edge = wait_until(
            &format!("edge answers {status}"),
            Duration::from_secs(10),
            || {
                let (client, edge, expected) = (&client, dev.edge(), &expected_edge);
                async move {
                    let r = client
                        .get(format!("{edge}/whoami"))
                        .header("host", "acme.localhost")
                        .send()
                        .await
                        .ok()?;
                    let answer = Answer::of(r).await;
                    (answer == *expected).then_some(answer)
                }
            },
        )
        .await;

        // /v1/resolve says what the edge does.
        let (code, resolved) = admin.get("/v1/resolve?host=acme.localhost").await;
        assert_eq!(code, 200);
        let resolved_answer = (
            resolved["edge"]["status"].as_u64().unwrap() as u16,
            resolved["edge"]["code"].as_str().map(str::to_string),
        );
        match status.admission() {
            // Held: resolve reports the hold (200), and the edge's answer after it.
            Admission::Hold => {
                assert_eq!(resolved_answer, (200, None), "{status}: {resolved}");
                let reason = resolved["edge"]["reason"].as_str().unwrap();
                assert!(reason.contains(edge.code.as_deref().unwrap()), "{reason}");
            }
            _ => assert_eq!(
                resolved_answer,
                (edge.status, edge.code.clone()),
                "{status}: {resolved}"
            ),
        }

        // The app, asked directly with a valid signed header, once its directory has the row.
        let epoch = catalog
            .tenant(&id.to_string())
            .await
            .unwrap()
            .unwrap()
            .epoch;
        let expected_app = match status.admission() {
            Admission::Refuse(r) => refusal(r),
            // The app serves a moving tenant: requests already past the edge finish.
            Admission::Hold | Admission::Serve => Answer {
                status: 200,
                code: None,
                retry_after: None,
            },
        };
        wait_until(
            &format!("app answers {status}"),
            Duration::from_secs(10),
            || {
                let (client, app, config, expected) = (&client, &app, &config, &expected_app);
                async move {
                    let request_id = uuid::Uuid::now_v7().to_string();
                    let claims = TenantClaims {
                        tenant_id: id,
                        slug: "acme",
                        shard: "shard-a",
                        epoch,
                        request_id: &request_id,
                        method: "GET",
                        target: "/whoami",
                    };
                    let signature = config
                        .security
                        .signing
                        .sign(&claims, tenantgate_contract::time::now_secs());
                    let r = client
                        .get(format!("{app}/whoami"))
                        .header(signing::HEADER_TENANT_ID, id.to_string())
                        .header(signing::HEADER_TENANT_SLUG, "acme")
                        .header(signing::HEADER_TENANT_SHARD, "shard-a")
                        .header(signing::HEADER_TENANT_EPOCH, epoch.to_string())
                        .header(signing::HEADER_REQUEST_ID, &request_id)
                        .header(signing::HEADER_TENANT_SIGNATURE, signature)
                        .send()
                        .await
                        .ok()?;
                    (Answer::of(r).await == *expected).then_some(())
                }
            },
        )
        .await;
    }
}

fn refusal(r: Refusal) -> Answer {
    Answer {
        status: r.status(),
        code: Some(r.code().to_string()),
        retry_after: r.retry_after_secs().map(|s| s.to_string()),
    }
}
