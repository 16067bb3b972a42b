//! Webhooks: signed tenant events reach a real local receiver that fails twice before
//! accepting; the API call never waits for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use tenantgate_testkit::admin::Harness;
use tenantgate_testkit::{both_backends, wait_until, Engine};

const SECRET: &str = "webhook-secret-for-tests";

#[derive(Default)]
struct Receiver {
    /// Every request: (event, delivery id, signature, body, status answered).
    requests: Vec<(String, String, String, String, u16)>,
}

async fn start_receiver() -> (String, Arc<Mutex<Receiver>>) {
    let seen = Arc::new(Mutex::new(Receiver::default()));
    let state = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let mut s = state.lock().unwrap();
                // The first two requests fail, whatever they carry.
                let status = if s.requests.len() < 2 { 500 } else { 200 };
                s.requests.push((
                    header(tenantgate_admin::webhooks::EVENT_HEADER),
                    header(tenantgate_admin::webhooks::DELIVERY_HEADER),
                    header(tenantgate_admin::webhooks::SIGNATURE_HEADER),
                    body,
                    status,
                ));
                StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

both_backends!(events_are_signed_retried_and_never_block);
async fn events_are_signed_retried_and_never_block(backend: Engine) {
    let (url, seen) = start_receiver().await;
    let h = Harness::new(backend, |raw| {
        raw.admin.webhook_urls = vec![url];
        raw.admin.webhook_secret = Some(SECRET.into());
    })
    .await
    .start()
    .await;
    h.shard("shard-a").await;
    let (id, _) = h.tenant("hooked", None).await;
    // The API answered before the receiver accepted anything.
    assert!(seen.lock().unwrap().requests.iter().all(|r| r.4 != 200));
    h.wait_status(&id, "active").await;

    let accepted = wait_until("both events accepted", Duration::from_secs(20), || async {
        let s = seen.lock().unwrap();
        let ok: Vec<_> = s.requests.iter().filter(|r| r.4 == 200).cloned().collect();
        (ok.len() == 2).then_some(ok)
    })
    .await;
    let mut events: Vec<&str> = accepted.iter().map(|r| r.0.as_str()).collect();
    events.sort();
    assert_eq!(events, ["tenant.activated", "tenant.created"]);
    let all = seen.lock().unwrap().requests.clone();
    for (event, delivery, signature, body, _) in &all {
        let t: i64 = signature
            .strip_prefix("t=")
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .expect("signature carries a timestamp");
        assert_eq!(
            signature,
            &tenantgate_admin::webhooks::sign(SECRET, t, body),
            "{event}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(&json["event"], event.as_str());
        assert_eq!(json["tenant"]["slug"], "hooked");
        assert!(json["tenant"].get("db_credentials").is_none());
        assert!(!delivery.is_empty());
    }
    // The failed attempts were retries of deliveries that later succeeded.
    let failed: Vec<&String> = all.iter().filter(|r| r.4 != 200).map(|r| &r.1).collect();
    assert_eq!(failed.len(), 2);
    for delivery in failed {
        assert!(accepted.iter().any(|r| &r.1 == delivery));
    }
    wait_until("outbox drained", Duration::from_secs(5), || async {
        h.catalog
            .undelivered_webhooks()
            .await
            .unwrap()
            .is_empty()
            .then_some(())
    })
    .await;
}
