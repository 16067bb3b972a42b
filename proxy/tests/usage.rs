//! Usage per tenant: the edge counts requests, 5xx, 429s and response bytes in memory and adds
//! them to the catalog's `tenant_usage` in batches; what is stored equals what clients got. On
//! both catalog backends.

use std::time::Duration;

use tenantgate_catalog::store::usage::{UsageCounts, MINUTE_MS};
use tenantgate_contract::time::now_ms;
use tenantgate_contract::{RateLimit, TenantStatus};
use tenantgate_testkit::edge::Harness;
use tenantgate_testkit::net::RefusedAddr;
use tenantgate_testkit::{both_backends, wait_until, TestCatalog};
use uuid::Uuid;

async fn stored(h: &Harness, tenant: Uuid, since: i64) -> UsageCounts {
    let mut total = UsageCounts::default();
    for (_, c) in h
        .catalog
        .usage(tenant, since, now_ms() + MINUTE_MS, MINUTE_MS)
        .await
        .unwrap()
    {
        total.add(&c);
    }
    total
}

async fn usage_matches_what_clients_got(tc: TestCatalog) {
    let started = now_ms();
    let mut h = Harness::new(tc, "usage_flush_secs = 1", "").await;
    let backend = h.backend("a1").await;
    let refused = RefusedAddr::new();
    h.add_shard("shard-a", &[backend.addr]).await;
    h.add_shard("shard-dead", &[refused.addr()]).await;
    let busy = h
        .add_tenant(
            "busy",
            "shard-a",
            &["busy.test"],
            TenantStatus::Active,
            Some(RateLimit { rps: 1, burst: 5 }),
        )
        .await;
    let broken = h
        .add_active_tenant("broken", "shard-dead", &["broken.test"])
        .await;
    h.start().await;
    h.wait_ready().await;

    let mut expected = [UsageCounts::default(), UsageCounts::default()];
    for (i, host) in [(0, "busy.test"), (1, "broken.test")] {
        for _ in 0..12 {
            let r = h.get(host, "/items", &[]).await;
            let c = &mut expected[i];
            c.requests += 1;
            c.errors += i64::from(r.status >= 500);
            c.rate_limited += i64::from(r.status == 429);
            c.bytes += serde_json::to_vec(&r.body).unwrap().len() as i64;
        }
    }
    // The edge's own answers count too: a 429 has a body.
    assert!(expected[0].rate_limited >= 6, "{:?}", expected[0]);
    assert_eq!(expected[1].errors, 12, "{:?}", expected[1]);

    for (tenant, want) in [(busy, expected[0]), (broken, expected[1])] {
        let got = wait_until("usage flushed", Duration::from_secs(10), || async {
            let got = stored(&h, tenant, started).await;
            (got.requests == want.requests).then_some(got)
        })
        .await;
        assert_eq!(
            (got.requests, got.errors, got.rate_limited),
            (want.requests, want.errors, want.rate_limited)
        );
        // Bytes are the bodies as sent; the client re-serialised JSON bodies, so allow for
        // formatting, but a body never counted would leave a gap of its whole size.
        assert!(
            (got.bytes - want.bytes).abs() <= want.bytes / 5,
            "bytes {} stored, about {} received",
            got.bytes,
            want.bytes
        );
    }
    h.stop().await;
}

both_backends!(usage_matches_what_clients_got);
