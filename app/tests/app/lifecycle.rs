//! Catalog changes reach the app through the feed: suspended or deleted tenants lose their
//! pool and are refused; settings changes show up.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tenantgate_catalog::store::TenantPatch;
use tenantgate_config::db_url::Engine;
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::wait_until;

use crate::both_backends;
use crate::support::{metric, Options, TestApp};

async fn suspending_or_deleting_a_tenant_closes_its_pool(backend: Engine) {
    let app = TestApp::start(backend, Options::default()).await;
    let a = app.tenant("acme", json!({})).await;
    let b = app.tenant("globex", json!({})).await;
    let (a_token, b_token) = (
        app.user(&a, "owner", None).await,
        app.user(&b, "owner", None).await,
    );
    for (t, token) in [(&a, &a_token), (&b, &b_token)] {
        assert_eq!(
            app.get(t, "/api/items")
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        metric(&app.metrics().await, "tenantgate_app_tenant_pools"),
        2.0
    );

    // Settings changes show up.
    app.catalog
        .update_tenant(
            a.id,
            &TenantPatch {
                settings: Some(json!({"locale": "fr"})),
                ..TenantPatch::default()
            },
        )
        .await
        .unwrap();
    wait_until("the new locale", Duration::from_secs(5), || async {
        let body: Value = app
            .get(&a, "/whoami")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (body["locale"] == "fr").then_some(())
    })
    .await;

    for (t, status, code, http) in [
        (
            &a,
            TenantStatus::Suspended,
            "tenant_suspended",
            StatusCode::FORBIDDEN,
        ),
        (
            &b,
            TenantStatus::Deleted,
            "tenant_deleted",
            StatusCode::GONE,
        ),
    ] {
        let before = metric(&app.metrics().await, "tenantgate_app_tenant_pools");
        app.catalog
            .update_tenant(
                t.id,
                &TenantPatch {
                    status: Some(status),
                    bump_epoch: true,
                    ..TenantPatch::default()
                },
            )
            .await
            .unwrap();
        wait_until("the pool to close", Duration::from_secs(5), || async {
            (metric(&app.metrics().await, "tenantgate_app_tenant_pools") == before - 1.0)
                .then_some(())
        })
        .await;
        let resp = app
            .get(t, "/api/items")
            .bearer_auth("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), http);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code);
    }
    wait_until(
        "the budget to be given back",
        Duration::from_secs(5),
        || async {
            let m = app.metrics().await;
            (metric(&m, "tenantgate_app_db_connections_reserved") == 0.0).then_some(())
        },
    )
    .await;
    app.stop().await;
}
both_backends!(suspending_or_deleting_a_tenant_closes_its_pool);
