//! Data retention on both backends: with `settings.data_retention_days`, the daily
//! `data_retention` job deletes the rows of retention-managed tables (tenant migration 0002
//! marks `items` by `created_at`) older than that, audits the counts, and runs once per day.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tenantgate_catalog::store::jobs::JobStatus;
use tenantgate_testkit::admin::Harness;
use tenantgate_testkit::{both_backends, wait_until, Engine};

const DAY: i64 = 86_400_000;

both_backends!(old_rows_of_managed_tables_are_deleted_daily);

async fn old_rows_of_managed_tables_are_deleted_daily(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    let (id, _) = h.tenant("keeper", None).await;
    let other = h.tenant("hoarder", None).await.0;
    h.wait_status(&id, "active").await;
    h.wait_status(&other, "active").await;
    let now = tenantgate_contract::time::now_ms();
    for tenant in [&id, &other] {
        let pool = h.tenant_pool(tenant).await;
        for (item, age_days) in [("ancient", 400), ("old", 31), ("recent", 29), ("new", 0)] {
            sqlx::query(&format!(
                "INSERT INTO items (id, title, body, created_at, updated_at) \
                 VALUES ('{item}', 't', '', {at}, {at})",
                at = now - age_days * DAY
            ))
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    let tick = |at: i64| {
        let (config, catalog) = (Arc::clone(&h.config), h.catalog.clone());
        async move {
            tenantgate_admin::schedule_tick(config, catalog, at)
                .await
                .unwrap()
                .data_retention
        }
    };
    // Without the setting nothing is queued.
    assert!(tick(now).await.is_empty());
    let bad = h
        .patch(
            &format!("/v1/tenants/{id}"),
            json!({"settings": {"data_retention_days": 0}}),
        )
        .await;
    assert_eq!(bad.status, 422, "{:?}", bad.body);
    let r = h
        .patch(
            &format!("/v1/tenants/{id}"),
            json!({"settings": {"data_retention_days": 30}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);

    // The test's clock runs ten days ahead of the server's own scheduler (which ticks with the
    // wall clock), so the two never pick the same day; the job's cutoff is from the wall clock.
    // The job is recorded for its (future) slot, so the test moves it to now to run it.
    let later = now + 10 * DAY;
    let queued = tick(later).await;
    assert_eq!(queued.len(), 1, "only the tenant with the setting");
    // Once per day: not again at the same time, nor later within the same day (the job is
    // recorded for the day's slot; an hour later, unless the next day's slot comes first).
    assert!(tick(later).await.is_empty());
    let slot = h.catalog.job(queued[0]).await.unwrap().unwrap().run_at;
    assert!(
        slot <= later && later < slot + DAY,
        "the slot of the tick's day"
    );
    assert!(tick((later + 3_600_000).min(slot + DAY - 1))
        .await
        .is_empty());
    let mut tx = h.catalog.begin_write().await.unwrap();
    tenantgate_catalog::store::jobs::reschedule(&mut tx, queued[0], now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let job = queued[0].to_string();
    wait_until(
        "the data retention job",
        Duration::from_secs(30),
        || async {
            let j = h.get(&format!("/v1/jobs/{job}")).await.body;
            (j["status"] == "succeeded" || j["status"] == "failed").then_some(())
        },
    )
    .await;
    let j = h.get(&format!("/v1/jobs/{job}")).await.body;
    assert_eq!(j["status"], "succeeded", "{j}");

    let items = |tenant: String| {
        let h = &h;
        async move {
            let pool = h.tenant_pool(&tenant).await;
            let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM items ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap();
            pool.close().await;
            ids
        }
    };
    assert_eq!(items(id.clone()).await, ["new", "recent"]);
    assert_eq!(
        items(other.clone()).await,
        ["ancient", "new", "old", "recent"]
    );
    let audit = h.get(&format!("/v1/audit?tenant={id}")).await;
    let entry = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["after"]["job"] == job.as_str())
        .expect("the job's audit record");
    assert_eq!(entry["action"], "tenant.data_retention", "{entry}");
    // Every table the schema marks (the audit trail too, still empty here), with its count.
    assert_eq!(
        entry["after"]["deleted"],
        json!({"audit": 0, "items": 2}),
        "{entry}"
    );
    assert_eq!(entry["after"]["data_retention_days"], 30, "{entry}");

    // The next day it runs again (and finds nothing more to delete).
    let next = tick(later + DAY).await;
    assert_eq!(next.len(), 1);
    let jobs = h.catalog.jobs_of_tenant(id.parse().unwrap()).await.unwrap();
    assert!(jobs
        .iter()
        .any(|j| j.id == next[0] && j.status != JobStatus::Failed));
}
