//! Webhook delivery from the durable outbox.
//!
//! Events are queued in `webhook_outbox` by the catalog write they announce (see
//! [`crate::write::Write::event`]), so the API call never waits for a receiver. This loop sends
//! each as a POST with a JSON body and an HMAC-SHA256 signature, and retries failures with
//! exponential backoff until [`MAX_ATTEMPTS`].
//!
//! Signature header: `x-tenantgate-signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"` with `admin.webhook_secret`. Receivers should reject old `t` values.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tenantgate_catalog::store::outbox::OutboxEntry;
use tokio_util::sync::CancellationToken;

use crate::state::AdminState;

/// Header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-tenantgate-signature";
/// Header carrying the event name.
pub const EVENT_HEADER: &str = "x-tenantgate-event";
/// Header carrying the delivery's id (stable across retries, for receiver-side dedup).
pub const DELIVERY_HEADER: &str = "x-tenantgate-delivery";

/// Deliveries tried before an entry is given up.
const MAX_ATTEMPTS: i64 = 10;
const POLL: Duration = Duration::from_millis(200);
/// How long a claimed entry is hidden from other deliverers (covers the request timeout).
const LEASE: Duration = Duration::from_secs(30);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The signature header value for `body` at unix time `t`.
pub fn sign(secret: &str, t: i64, body: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

fn backoff(attempts: i64) -> Duration {
    let exp = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    FIRST_BACKOFF
        .saturating_mul(2u32.saturating_pow(exp))
        .min(MAX_BACKOFF)
}

/// Deliver queued events until `shutdown`. Does nothing without a webhook secret (config
/// validation requires one whenever URLs are configured).
pub(crate) async fn run(state: AdminState, shutdown: CancellationToken) {
    let Some(secret) = state.config.admin.webhook_secret.clone() else {
        return;
    };
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook HTTP client; webhooks are not delivered");
            return;
        }
    };
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let lease_until = tenantgate_contract::time::now_ms() + LEASE.as_millis() as i64;
        match state.catalog.claim_outbox(lease_until).await {
            Ok(Some(entry)) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return, // the lease expires; retried later
                    _ = deliver(&state, &client, &secret, entry) => {}
                }
            }
            Ok(None) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = state.webhooks_wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the webhook outbox failed");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

async fn deliver(state: &AdminState, client: &reqwest::Client, secret: &str, entry: OutboxEntry) {
    let t = tenantgate_contract::time::now_secs();
    let response = client
        .post(&entry.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, &entry.event)
        .header(DELIVERY_HEADER, entry.id.to_string())
        .header(SIGNATURE_HEADER, sign(secret, t, &entry.payload))
        .body(entry.payload.clone())
        .send()
        .await;
    let error = match response {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("receiver answered {}", r.status())),
        // Without the URL: it may carry credentials.
        Err(e) => Some(format!("request failed: {}", e.without_url())),
    };
    let outcome = match &error {
        None => {
            state
                .catalog
                .finish_outbox(entry.id, true, None, None)
                .await
        }
        Some(message) => {
            let retry_at = (entry.attempts < MAX_ATTEMPTS).then(|| {
                tenantgate_contract::time::now_ms() + backoff(entry.attempts).as_millis() as i64
            });
            tracing::warn!(event = %entry.event, attempt = entry.attempts, error = %message, gave_up = retry_at.is_none(), "webhook delivery failed");
            state
                .catalog
                .finish_outbox(entry.id, false, Some(message), retry_at)
                .await
        }
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "could not record a webhook delivery; it is retried after its lease");
    }
}
