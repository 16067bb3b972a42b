//! The life of backups beyond taking one, on both backends: the daily schedule driven by a
//! simulated clock (one backup per slot, never twice), grandfather-father-son retention over a
//! calendar (exactly the expected backups and objects survive, each prune audited; a tenant's
//! own policy replaces the config's), the backup a purge takes first and its erasure after
//! `deleted_retention_days` (and the purge that refuses to drop a database it could not back
//! up), the backups taken before a move and before a restore in place, and retrying a failed
//! restore in place.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tenantgate_catalog::store::backups::{Backup, BackupKind, BackupStatus};
use tenantgate_catalog::store::jobs::JobStatus;
use tenantgate_config::{BackupSchedule, Config, RawConfig};
use tenantgate_testkit::admin::Harness;
use tenantgate_testkit::{both_backends, wait_until, Engine};
use uuid::Uuid;

const DAY: i64 = 86_400_000;

/// A started admin whose backups go to a temporary directory (returned), encrypted to a fresh
/// age identity, with `tweak` applied on top.
async fn harness(backend: Engine, tweak: impl FnOnce(&mut RawConfig)) -> (Harness, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let identity = dir.path().join("identity.txt");
    let recipient = tenantgate_admin::backups::ensure_identity(&identity).unwrap();
    let mut h = Harness::new(backend, |raw| {
        raw.backups.store = format!("file://{}", store.display());
        raw.backups.recipient = Some(recipient);
        raw.backups.identity_file = Some(identity);
        tweak(raw);
    })
    .await;
    h.dirs.push(dir);
    (h.start().await, store)
}

/// A tenant on shard-a, active, with one item; returns its id.
async fn active_tenant(h: &Harness, slug: &str) -> Uuid {
    if h.catalog.shard("shard-a").await.unwrap().is_none() {
        h.shard("shard-a").await;
    }
    let (id, _) = h.tenant(slug, Some("shard-a")).await;
    h.wait_status(&id, "active").await;
    insert_item(h, &id, "first").await;
    id.parse().unwrap()
}

async fn insert_item(h: &Harness, tenant: &str, id: &str) {
    let pool = h.tenant_pool(tenant).await;
    sqlx::query(&format!(
        "INSERT INTO items (id, title, body, created_at, updated_at) VALUES ('{id}', 't', '', 1, 1)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

async fn item_ids(h: &Harness, tenant: &str) -> Vec<String> {
    let pool = h.tenant_pool(tenant).await;
    let ids = sqlx::query_scalar::<_, String>("SELECT id FROM items ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    ids
}

/// Wait until no job of `tenant` is queued or running (due now) and none failed; returns its
/// backups, newest first.
async fn settle(h: &Harness, tenant: Uuid) -> Vec<Backup> {
    wait_until(
        "the tenant's jobs to finish",
        Duration::from_secs(60),
        || async {
            let jobs = h.catalog.jobs_of_tenant(tenant).await.unwrap();
            let now = tenantgate_contract::time::now_ms();
            let busy = jobs.iter().any(|j| {
                j.status == JobStatus::Running || (j.status == JobStatus::Queued && j.run_at <= now)
            });
            (!busy).then_some(())
        },
    )
    .await;
    let jobs = h.catalog.jobs_of_tenant(tenant).await.unwrap();
    let failed: Vec<_> = jobs
        .iter()
        .filter(|j| j.status == JobStatus::Failed)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    h.catalog.all_backups_of_tenant(tenant).await.unwrap()
}

/// The object files under the store for `tenant`.
fn objects(store: &Path, tenant: Uuid) -> BTreeSet<String> {
    match std::fs::read_dir(store.join(tenant.to_string())) {
        Ok(dir) => dir
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

/// Wait until job `id` succeeded or failed, and assert it ended as `expected`; returns it.
async fn job_ends(h: &Harness, id: &str, expected: &str) -> Value {
    let job = wait_until(
        &format!("job {id} to end"),
        Duration::from_secs(60),
        || async {
            let j = h.get(&format!("/v1/jobs/{id}")).await.body;
            (j["status"] == "succeeded" || j["status"] == "failed").then_some(j)
        },
    )
    .await;
    assert_eq!(job["status"], expected, "{job}");
    job
}

/// Milliseconds of a UTC date at midnight.
fn date(y: i32, m: u8, d: u8) -> i64 {
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d).unwrap();
    date.midnight().assume_utc().unix_timestamp() * 1000
}

async fn audit_actions(h: &Harness, tenant: Uuid) -> Vec<String> {
    let audit = h.get(&format!("/v1/audit?tenant={tenant}&limit=500")).await;
    assert_eq!(audit.status, 200, "{:?}", audit.body);
    audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

both_backends!(
    schedule_and_retention_over_a_simulated_calendar,
    purge_takes_a_backup_first_and_erases_it_later,
    purge_fails_safe_when_its_backup_fails,
    move_and_restore_in_place_back_up_first_and_a_failed_restore_retries
);

async fn schedule_and_retention_over_a_simulated_calendar(backend: Engine) {
    // The server runs with the schedule off (its own ticks would use the wall clock); the test
    // ticks with a daily schedule at simulated instants instead. Retention is the server's.
    let (h, store) = harness(backend, |raw| {
        raw.backups.keep_daily = 2;
        raw.backups.keep_weekly = 2;
        raw.backups.keep_monthly = 3;
    })
    .await;
    let mut daily: Config = (*h.config).clone();
    daily.backups.schedule = BackupSchedule::Daily;
    let daily = Arc::new(daily);
    let tick = |now: i64| {
        let (config, catalog) = (daily.clone(), h.catalog.clone());
        async move {
            tenantgate_admin::schedule_tick(config, catalog, now)
                .await
                .unwrap()
                .backups
        }
    };
    let acme = active_tenant(&h, "acme").await;
    // The tenant's slot in the day: its first scheduled backup starts within minutes of it
    // (ticking every ten minutes through 2 January), recorded for the slot.
    let mut first = None;
    for minutes in (0..(24 * 60)).step_by(10) {
        let now = date(2026, 1, 2) + minutes * 60_000;
        let queued = tick(now).await;
        if let Some((backup, _)) = queued.first() {
            assert_eq!(queued.len(), 1);
            let slot = h.catalog.backup(*backup).await.unwrap().unwrap().created_at;
            assert!(slot <= now && now - slot < 3_600_000, "{slot} {now}");
            first = Some(slot);
            break;
        }
    }
    let offset = first.expect("a slot by 2 January").rem_euclid(DAY);
    settle(&h, acme).await;

    // Ticks on a sparse calendar (each a catch-up of the latest missed slot), some of them
    // repeated or a few hours late, as restarts would do.
    let calendar = [
        (2026, 1, 9),
        (2026, 1, 20),
        (2026, 1, 28),
        (2026, 2, 3),
        (2026, 2, 10),
        (2026, 2, 11),
        (2026, 2, 25),
        (2026, 3, 2),
        (2026, 3, 4),
        (2026, 3, 5),
        (2026, 3, 6),
    ];
    for (y, m, d) in calendar {
        let slot = date(y, m, d) + offset;
        // Three hours later than the slot: still that day's slot, taken once.
        let queued = tick(slot + 3 * 3_600_000).await;
        assert_eq!(queued.len(), 1, "{y}-{m}-{d}");
        assert!(tick(slot + 3 * 3_600_000).await.is_empty(), "twice");
        assert!(
            tick(slot + 20 * 3_600_000).await.is_empty(),
            "later that period"
        );
        let backups = settle(&h, acme).await;
        let newest = &backups[0];
        assert_eq!(newest.kind, BackupKind::Scheduled);
        assert_eq!(newest.created_at, slot, "recorded for its slot");
        assert_eq!(newest.status, BackupStatus::Completed, "{newest:?}");
    }
    // Kept: daily 6 and 5 March; weekly the weeks of 2-8 March (6 March) and 23 February-1
    // March (25 February); monthly March, February (25th) and January (28th).
    let backups = settle(&h, acme).await;
    let kept: Vec<i64> = backups.iter().map(|b| b.created_at).collect();
    let expected: Vec<i64> = [(3, 6), (3, 5), (2, 25), (1, 28)]
        .iter()
        .map(|(m, d)| date(2026, *m, *d) + offset)
        .collect();
    assert_eq!(kept, expected);
    // Their objects, and no other, are in the store; each pruned one is audited.
    let files: BTreeSet<String> = backups.iter().map(|b| format!("{}.age", b.id)).collect();
    assert_eq!(objects(&store, acme), files);
    let actions = audit_actions(&h, acme).await;
    let count = |a: &str| actions.iter().filter(|x| *x == a).count();
    assert_eq!(count("backup.prune"), 12 - 4);
    assert_eq!(count("backup.complete"), 12);

    // The tenant's own policy replaces the config's: keep only the newest.
    let r = h
        .patch(
            &format!("/v1/tenants/{acme}"),
            json!({"settings": {"backup_retention": {"keep_daily": 1, "keep_weekly": 0, "keep_monthly": 0}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = h
        .patch(
            &format!("/v1/tenants/{acme}"),
            json!({"settings": {"backup_retention": {"keep_daily": 4000}}}),
        )
        .await;
    assert_eq!(r.status, 422, "{:?}", r.body);
    // The document's schema names each invalid count: above the bound, or missing.
    let named: BTreeSet<&str> = r.body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(
        named.contains("settings.backup_retention.keep_daily"),
        "{:?}",
        r.body
    );
    assert_eq!(tick(date(2026, 3, 7) + offset).await.len(), 1);
    let backups = settle(&h, acme).await;
    assert_eq!(backups.len(), 1);
    assert_eq!(backups[0].created_at, date(2026, 3, 7) + offset);
    assert_eq!(
        objects(&store, acme),
        BTreeSet::from([format!("{}.age", backups[0].id)])
    );
}

async fn purge_takes_a_backup_first_and_erases_it_later(backend: Engine) {
    let (h, store) = harness(backend, |raw| raw.backups.deleted_retention_days = 3).await;
    let id = active_tenant(&h, "doomed").await;
    let r = h.delete(&format!("/v1/tenants/{id}?purge=true")).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    job_ends(&h, r.body["job_id"].as_str().unwrap(), "succeeded").await;
    assert!(!h.database_exists(&id.to_string()).await);
    // The backup was taken before the drop, and is kept.
    let backups = h.catalog.all_backups_of_tenant(id).await.unwrap();
    assert_eq!(backups.len(), 1, "{backups:?}");
    let pre = &backups[0];
    assert_eq!(
        (pre.kind, pre.status),
        (BackupKind::PreDelete, BackupStatus::Completed)
    );
    assert_eq!(
        objects(&store, id),
        BTreeSet::from([format!("{}.age", pre.id)])
    );
    let drop = audit_actions(&h, id).await;
    assert_eq!(drop[0], "tenant.drop_database");
    assert!(drop.contains(&"backup.complete".to_string()));
    // Its erasure waits for deleted_retention_days.
    let jobs = h.catalog.jobs_of_tenant(id).await.unwrap();
    let erase = jobs
        .iter()
        .find(|j| j.kind == "prune_backups" && j.payload["mode"] == "erase")
        .expect("an erasure job");
    assert_eq!(erase.status, JobStatus::Queued);
    let wait = erase.run_at - tenantgate_contract::time::now_ms();
    assert!(wait > 3 * DAY - 60_000 && wait <= 3 * DAY, "{wait}");

    // Three days pass (the job's clock is its run_at): the backups are erased, audited.
    let mut tx = h.catalog.begin_write().await.unwrap();
    tenantgate_catalog::store::jobs::reschedule(
        &mut tx,
        erase.id,
        tenantgate_contract::time::now_ms(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    job_ends(&h, &erase.id.to_string(), "succeeded").await;
    assert!(h
        .catalog
        .all_backups_of_tenant(id)
        .await
        .unwrap()
        .is_empty());
    assert!(objects(&store, id).is_empty());
    assert_eq!(audit_actions(&h, id).await[0], "backup.erase");
}

async fn purge_fails_safe_when_its_backup_fails(backend: Engine) {
    // The store is under a regular file: no backup can be written.
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let store = blocker.path().join("store");
    let (h, _) = harness(backend, |raw| {
        raw.backups.store = format!("file://{}", store.display());
    })
    .await;
    let id = active_tenant(&h, "kept").await;
    let r = h.delete(&format!("/v1/tenants/{id}?purge=true")).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let job = job_ends(&h, r.body["job_id"].as_str().unwrap(), "failed").await;
    assert!(job["error"].as_str().unwrap().contains("backup"), "{job}");
    // Nothing was dropped: the database and its rows are there.
    assert!(h.database_exists(&id.to_string()).await);
    assert_eq!(item_ids(&h, &id.to_string()).await, ["first"]);
    assert!(h
        .catalog
        .jobs_of_tenant(id)
        .await
        .unwrap()
        .iter()
        .all(|j| j.kind != "prune_backups"));
}

async fn move_and_restore_in_place_back_up_first_and_a_failed_restore_retries(backend: Engine) {
    let (h, store) = harness(backend, |_| {}).await;
    h.shard("shard-b").await;
    let id = active_tenant(&h, "mover").await;
    let tenant = id.to_string();

    // A move takes a pre_move backup first.
    let r = h
        .post(
            &format!("/v1/tenants/{id}/move"),
            json!({"shard": "shard-b"}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    job_ends(&h, r.body["job_id"].as_str().unwrap(), "succeeded").await;
    let kinds: Vec<BackupKind> = settle(&h, id).await.iter().map(|b| b.kind).collect();
    assert_eq!(kinds, [BackupKind::PreMove]);
    // The new copy records the epoch the move gave the tenant (epoch fencing).
    let moved = h.get(&format!("/v1/tenants/{id}")).await.body;
    assert_eq!(h.recorded_epoch(&tenant).await, moved["epoch"].as_i64());

    // A manual backup with one item; then a second item.
    let r = h
        .post(&format!("/v1/tenants/{id}/backups"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let backup = r.body["backup"]["id"].as_str().unwrap().to_string();
    job_ends(&h, r.body["job_id"].as_str().unwrap(), "succeeded").await;
    insert_item(&h, &tenant, "second").await;

    // The object is damaged: the restore in place fails and the tenant is as it was.
    let object = store.join(&tenant).join(format!("{backup}.age"));
    let good = std::fs::read(&object).unwrap();
    std::fs::write(&object, b"not the backup").unwrap();
    let r = h
        .post(
            &format!("/v1/tenants/{id}/restore"),
            json!({"backup_id": backup, "mode": "in_place"}),
        )
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let restore = r.body["job_id"].as_str().unwrap().to_string();
    job_ends(&h, &restore, "failed").await;
    let t: Value = h.wait_status(&tenant, "active").await;
    assert_eq!(item_ids(&h, &tenant).await, ["first", "second"]);

    // Repaired, the retry restores: the tenant is restoring again, then active with the backed-up
    // rows; the database it had was backed up first (pre_restore).
    std::fs::write(&object, &good).unwrap();
    let r = h
        .post(&format!("/v1/jobs/{restore}/retry"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let status = h.get(&format!("/v1/tenants/{id}")).await.body["status"].clone();
    assert!(status == "restoring" || status == "active", "{status}");
    job_ends(&h, &restore, "succeeded").await;
    let after = h.wait_status(&tenant, "active").await;
    assert_ne!(after["epoch"], t["epoch"]);
    assert_eq!(item_ids(&h, &tenant).await, ["first"]);
    // The restored database recorded the move's epoch when it was backed up; it records the
    // epoch the swap gave the tenant.
    assert_eq!(h.recorded_epoch(&tenant).await, after["epoch"].as_i64());
    let backups = settle(&h, id).await;
    let pre_restore = backups
        .iter()
        .find(|b| b.kind == BackupKind::PreRestore)
        .expect("a pre_restore backup");
    assert_eq!(pre_restore.status, BackupStatus::Completed);
    assert_eq!(pre_restore.job_id, Some(restore.parse().unwrap()));
    // A retry of a succeeded job is refused.
    let r = h
        .post(&format!("/v1/jobs/{restore}/retry"), json!({}))
        .await;
    assert_eq!(r.status, 409, "{:?}", r.body);
}
