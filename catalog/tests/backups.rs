//! The catalog's backups table on PostgreSQL and SQLite: the life of a backup row, the newest-
//! first listing with its cursor, the `restoring` status, and a restore's `db_name` swap.

use tenantgate_catalog::store::backups::{
    self, BackupFormat, BackupKind, BackupStatus, NewBackup, Stored,
};
use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::{NewTenant, TenantPatch};
use tenantgate_catalog::Catalog;
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::{both_backends, TestCatalog};
use uuid::Uuid;

both_backends!(backup_rows_live_and_list, restoring_and_the_db_name_swap);

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
