//! ACME HTTP-01 answers on the plain listener, on both catalog backends: a challenge recorded
//! in the catalog is answered for any host once the feed announces it, and gone once removed;
//! tokens the edge does not hold are routed like any other request.

use std::time::Duration;

use tenantgate_catalog::store::acme;
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::edge::Harness;
use tenantgate_testkit::{both_backends, wait_until, TestCatalog};

both_backends!(challenges_are_answered_from_the_feed);
async fn challenges_are_answered_from_the_feed(tc: TestCatalog) {
    let mut h = Harness::new(tc, "", "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    h.add_tenant(
        "acme",
        "shard-a",
        &["acme.test"],
        TenantStatus::Active,
        None,
    )
    .await;
    h.start().await;
    h.wait_ready().await;
    let path = "/.well-known/acme-challenge/tok-123";

    // Not held: an unknown host is unknown, a tenant's host reaches its app.
    assert_eq!(
        h.get("new.example.test", path, &[]).await.code(),
        "unknown_tenant"
    );
    assert_eq!(h.get("acme.test", path, &[]).await.status, 200);
    let app_hits = backend.hits.load(std::sync::atomic::Ordering::Relaxed);

    let mut tx = h.catalog.begin_write().await.unwrap();
    let expires = tenantgate_contract::time::now_ms() + 600_000;
    acme::put_challenge(
        &mut tx,
        "tok-123",
        "tok-123.thumbprint",
        "new.example.test",
        expires,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // Answered by the edge itself, for any host (the domain being validated may not route yet).
    let r = wait_until(
        "the challenge is answered",
        Duration::from_secs(10),
        || async {
            let r = h.get("new.example.test", path, &[]).await;
            (r.status == 200).then_some(r)
        },
    )
    .await;
    assert_eq!(r.body, "tok-123.thumbprint");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    let r = h.get("acme.test", path, &[]).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, Some("tok-123.thumbprint"))
    );
    assert_eq!(
        backend.hits.load(std::sync::atomic::Ordering::Relaxed),
        app_hits,
        "the app saw a challenge the edge answers"
    );
    // Another token is not.
    let r = h
        .get("new.example.test", "/.well-known/acme-challenge/other", &[])
        .await;
    assert_eq!(r.code(), "unknown_tenant");

    let mut tx = h.catalog.begin_write().await.unwrap();
    acme::delete_challenge(&mut tx, "tok-123").await.unwrap();
    tx.commit().await.unwrap();
    wait_until(
        "the challenge is withdrawn",
        Duration::from_secs(10),
        || async {
            (h.get("new.example.test", path, &[]).await.code() == "unknown_tenant").then_some(())
        },
    )
    .await;
    h.stop().await;
}
