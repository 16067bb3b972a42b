//! The catalog's backups table on PostgreSQL and SQLite: the life of a backup row, the newest-
//! first listing with its cursor, the `restoring` status, and a restore's `db_name` swap; one
//! scheduled backup per tenant and slot, what the schedule reads, forgetting a backup; the
//! count of tenants never backed up.

use tenantgate_catalog::store::backups::{
    self, BackupFormat, BackupKind, BackupStatus, NewBackup, Stored,
};
use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::{NewTenant, TenantPatch};
use tenantgate_catalog::Catalog;
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::{both_backends, TestCatalog};
use uuid::Uuid;

both_backends!(
    backup_rows_live_and_list,
    restoring_and_the_db_name_swap,
    one_scheduled_backup_per_slot,
    tenants_never_backed_up_by_age
);

async fn tenant(catalog: &Catalog, tc: &TestCatalog, slug: &str) -> Uuid {
    if catalog.shard("shard-a").await.unwrap().is_none() {
        catalog
            .create_shard(&NewShard {
                name: "shard-a".into(),
                app_upstreams: vec!["127.0.0.1:1".into()],
                database_url: tc.shard_database_url("shard-a"),
                replicas: vec![],
            })
            .await
            .unwrap();
    }
    let id = Uuid::now_v7();
    catalog
        .create_tenant(&NewTenant {
            id,
            slug: slug.into(),
            name: slug.into(),
            status: TenantStatus::Active,
            shard: "shard-a".into(),
            domains: vec![],
            rate_limit: None,
            settings: serde_json::json!({}),
            db_name: tenantgate_catalog::tenant_db::db_name(id),
        })
        .await
        .unwrap();
    id
}

async fn backup_rows_live_and_list(tc: TestCatalog) {
    let catalog = tc.connect().await;
    let acme = tenant(&catalog, &tc, "acme").await;
    let globex = tenant(&catalog, &tc, "globex").await;
    let mut ids = Vec::new();
    for owner in [acme, globex, acme, acme] {
        let id = Uuid::now_v7();
        let mut tx = catalog.begin_write().await.unwrap();
        backups::insert(
            &mut tx,
            &NewBackup {
                id,
                tenant_id: owner,
                kind: BackupKind::Manual,
                format: BackupFormat::Sqlite,
                job_id: Uuid::now_v7(),
                created_at: tenantgate_contract::time::now_ms(),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        ids.push(id);
    }
    let first = catalog.backup(ids[0]).await.unwrap().unwrap();
    assert_eq!(first.status, BackupStatus::Queued);
    assert_eq!((first.size_bytes, first.completed_at), (None, None));

    // Completing needs a running backup; a second completion changes nothing.
    let stored = Stored {
        size_bytes: 1234,
        sha256: "ab".repeat(32),
        location: format!("{acme}/{}.age", ids[0]),
        schema_version: 3,
    };
    let mut tx = catalog.begin_write().await.unwrap();
    assert!(!backups::complete(&mut tx, ids[0], &stored).await.unwrap());
    assert!(backups::start(&mut tx, ids[0]).await.unwrap());
    assert!(backups::complete(&mut tx, ids[0], &stored).await.unwrap());
    assert!(!backups::complete(&mut tx, ids[0], &stored).await.unwrap());
    assert!(!backups::start(&mut tx, ids[0]).await.unwrap(), "finished");
    // An attempt's error is kept; the last one fails the backup.
    assert!(backups::start(&mut tx, ids[2]).await.unwrap());
    backups::record_error(&mut tx, ids[2], "pg_dump failed", false)
        .await
        .unwrap();
    assert_eq!(
        backups::get(&mut tx, ids[2]).await.unwrap().unwrap().status,
        BackupStatus::Running
    );
    backups::record_error(&mut tx, ids[2], "pg_dump failed again", true)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let done = catalog.backup(ids[0]).await.unwrap().unwrap();
    assert_eq!(done.status, BackupStatus::Completed);
    assert_eq!(done.size_bytes, Some(1234));
    assert_eq!(done.sha256.as_deref(), Some(stored.sha256.as_str()));
    assert_eq!(done.location, Some(stored.location.clone()));
    assert_eq!(done.schema_version, Some(3));
    assert!(done.started_at.is_some() && done.completed_at >= done.started_at);
    let failed = catalog.backup(ids[2]).await.unwrap().unwrap();
    assert_eq!(failed.status, BackupStatus::Failed);
    assert_eq!(failed.error.as_deref(), Some("pg_dump failed again"));
    // A retried job starts it over.
    let mut tx = catalog.begin_write().await.unwrap();
    assert!(backups::start(&mut tx, ids[2]).await.unwrap());
    let again = backups::get(&mut tx, ids[2]).await.unwrap().unwrap();
    assert_eq!((again.status, again.error), (BackupStatus::Running, None));
    tx.rollback().await.unwrap();

    // Newest first, per tenant, paged by id.
    let page = catalog.backups_of_tenant(acme, None, 2).await.unwrap();
    let listed: Vec<Uuid> = page.iter().map(|b| b.id).collect();
    assert_eq!(listed, [ids[3], ids[2]]);
    let rest = catalog
        .backups_of_tenant(acme, Some(ids[2]), 2)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|b| b.id).collect::<Vec<_>>(), [ids[0]]);
    let theirs = catalog.backups_of_tenant(globex, None, 10).await.unwrap();
    assert_eq!(theirs.iter().map(|b| b.id).collect::<Vec<_>>(), [ids[1]]);
    assert!(catalog.backup(Uuid::now_v7()).await.unwrap().is_none());
}

async fn restoring_and_the_db_name_swap(tc: TestCatalog) {
    let catalog = tc.connect().await;
    let acme = tenant(&catalog, &tc, "acme").await;
    let before = catalog.tenant("acme").await.unwrap().unwrap();
    catalog
        .update_tenant(
            acme,
            &TenantPatch {
                status: Some(TenantStatus::Restoring),
                bump_epoch: true,
                ..TenantPatch::default()
            },
        )
        .await
        .unwrap();
    let routes = catalog.tenant("acme").await.unwrap().unwrap();
    assert_eq!(routes.status, TenantStatus::Restoring);
    let fresh = format!("{}_r0123456789ab", before.db_name);
    assert!(catalog.database_in_use(&before.db_name).await.unwrap());
    assert!(!catalog.database_in_use(&fresh).await.unwrap());
    catalog
        .update_tenant(
            acme,
            &TenantPatch {
                db_name: Some(fresh.clone()),
                status: Some(TenantStatus::Active),
                bump_epoch: true,
                ..TenantPatch::default()
            },
        )
        .await
        .unwrap();
    let after = catalog.tenant("acme").await.unwrap().unwrap();
    assert_eq!(after.db_name, fresh);
    assert_eq!(after.status, TenantStatus::Active);
    assert_eq!(after.epoch, before.epoch + 2);
    assert!(!catalog.database_in_use(&before.db_name).await.unwrap());
    assert!(catalog.database_in_use(&fresh).await.unwrap());
}

async fn insert(catalog: &Catalog, tenant_id: Uuid, kind: BackupKind, created_at: i64) -> bool {
    let mut tx = catalog.begin_write().await.unwrap();
    let inserted = backups::insert(
        &mut tx,
        &NewBackup {
            id: Uuid::now_v7(),
            tenant_id,
            kind,
            format: BackupFormat::Sqlite,
            job_id: Uuid::now_v7(),
            created_at,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    inserted
}

async fn one_scheduled_backup_per_slot(tc: TestCatalog) {
    let catalog = tc.connect().await;
    let acme = tenant(&catalog, &tc, "acme").await;
    let globex = tenant(&catalog, &tc, "globex").await;
    let slot = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    assert!(insert(&catalog, acme, BackupKind::Scheduled, slot).await);
    // The same slot again (a second admin process, a restart): nothing written.
    assert!(!insert(&catalog, acme, BackupKind::Scheduled, slot).await);
    // Another tenant's slot, another kind at that instant, the next slot: all fine.
    assert!(insert(&catalog, globex, BackupKind::Scheduled, slot).await);
    assert!(insert(&catalog, acme, BackupKind::Manual, slot).await);
    assert!(insert(&catalog, acme, BackupKind::Manual, slot + 5).await);
    assert!(insert(&catalog, acme, BackupKind::Scheduled, slot + 86_400_000).await);
    let mut candidates = catalog.schedule_candidates("no_such_job").await.unwrap();
    candidates.sort_by_key(|c| c.tenant_id);
    let mut expected = vec![
        backups::ScheduleCandidate {
            tenant_id: acme,
            last_scheduled: Some(slot + 86_400_000),
            last_job_run_at: None,
            settings: serde_json::json!({}),
        },
        backups::ScheduleCandidate {
            tenant_id: globex,
            last_scheduled: Some(slot),
            last_job_run_at: None,
            settings: serde_json::json!({}),
        },
    ];
    expected.sort_by_key(|c| c.tenant_id);
    assert_eq!(candidates, expected);
    // A tenant without scheduled backups is a candidate with none; a deleted one is none.
    let initech = tenant(&catalog, &tc, "initech").await;
    catalog
        .update_tenant(
            globex,
            &TenantPatch {
                status: Some(TenantStatus::Deleted),
                ..TenantPatch::default()
            },
        )
        .await
        .unwrap();
    let candidates = catalog.schedule_candidates("no_such_job").await.unwrap();
    assert_eq!(candidates.len(), 2, "{candidates:?}");
    assert!(candidates
        .iter()
        .any(|c| c.tenant_id == initech && c.last_scheduled.is_none()));

    // Newest first by creation; deleting forgets one row once.
    let all = catalog.all_backups_of_tenant(acme).await.unwrap();
    let times: Vec<i64> = all.iter().map(|b| b.created_at).collect();
    assert_eq!(times, [slot + 86_400_000, slot + 5, slot, slot]);
    let mut tx = catalog.begin_write().await.unwrap();
    assert!(backups::delete(&mut tx, all[0].id).await.unwrap());
    assert!(!backups::delete(&mut tx, all[0].id).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(catalog.all_backups_of_tenant(acme).await.unwrap().len(), 3);

    // Last successes: completed backups of tenants not deleted, by slug.
    assert!(catalog.last_backup_successes().await.unwrap().is_empty());
    let stored = Stored {
        size_bytes: 1,
        sha256: "00".repeat(32),
        location: "x.age".into(),
        schema_version: 1,
    };
    let mut tx = catalog.begin_write().await.unwrap();
    assert!(backups::start(&mut tx, all[1].id).await.unwrap());
    assert!(backups::complete(&mut tx, all[1].id, &stored)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    let completed_at = catalog
        .backup(all[1].id)
        .await
        .unwrap()
        .unwrap()
        .completed_at;
    assert_eq!(
        catalog.last_backup_successes().await.unwrap(),
        [("acme".to_string(), completed_at.unwrap())]
    );
}

async fn tenants_never_backed_up_by_age(tc: TestCatalog) {
    let catalog = tc.connect().await;
    let acme = tenant(&catalog, &tc, "acme").await;
    let globex = tenant(&catalog, &tc, "globex").await;
    let initech = tenant(&catalog, &tc, "initech").await;
    let later = tenantgate_contract::time::now_ms() + 60_000;
    // Only tenants created before the cut-off count: none was created a day ago.
    assert_eq!(catalog.tenants_never_backed_up(later).await.unwrap(), 3);
    assert_eq!(
        catalog
            .tenants_never_backed_up(later - 86_400_000)
            .await
            .unwrap(),
        0
    );
    // A queued, a running or a failed backup is not a backup; a completed one is.
    assert!(insert(&catalog, acme, BackupKind::Manual, 1).await);
    assert!(insert(&catalog, globex, BackupKind::Manual, 1).await);
    let theirs = catalog.all_backups_of_tenant(globex).await.unwrap();
    let mut tx = catalog.begin_write().await.unwrap();
    assert!(backups::start(&mut tx, theirs[0].id).await.unwrap());
    let stored = Stored {
        size_bytes: 1,
        sha256: "00".repeat(32),
        location: "x.age".into(),
        schema_version: 1,
    };
    assert!(backups::complete(&mut tx, theirs[0].id, &stored)
        .await
        .unwrap());
    tx.commit().await.unwrap();
    assert_eq!(catalog.tenants_never_backed_up(later).await.unwrap(), 2);
    // Suspended tenants still need backups; deleted ones do not.
    for (id, status) in [
        (acme, TenantStatus::Suspended),
        (initech, TenantStatus::Deleted),
    ] {
        let patch = TenantPatch {
            status: Some(status),
            ..TenantPatch::default()
        };
        catalog.update_tenant(id, &patch).await.unwrap();
    }
    assert_eq!(catalog.tenants_never_backed_up(later).await.unwrap(), 1);
}
