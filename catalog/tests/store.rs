//! The catalog store, with the same test bodies on PostgreSQL and SQLite.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenantgate_catalog::feed::{self, ChangeSink};
use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::{NewTenant, TenantFilter, TenantPatch};
use tenantgate_catalog::{Catalog, Change, TokenScope};
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::{RateLimit, TenantStatus};
use tenantgate_testkit::{both_backends, wait_until, TestCatalog};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

both_backends!(
    tenants_domains_and_routes,
    conflicts_are_reported,
    patches_and_listing,
    changes_are_contiguous_under_concurrency,
    feed_follower_applies_changes_in_order,
    admin_tokens_by_hash,
);

async fn seed_shard(catalog: &Catalog, tc: &TestCatalog, name: &str) {
    catalog
        .create_shard(&NewShard {
            name: name.into(),
            app_upstreams: vec!["127.0.0.1:1".into()],
            database_url: tc.shard_database_url(name),
            replicas: vec![],
        })
        .await
        .unwrap();
}

fn new_tenant(slug: &str, shard: &str, domains: &[&str]) -> NewTenant {
    let id = Uuid::new_v4();
    NewTenant {
        id,
        slug: slug.into(),
        name: slug.to_uppercase(),
        status: TenantStatus::Active,
        shard: shard.into(),
        domains: domains
            .iter()
            .map(|d| DomainSpec::parse(d).unwrap())
            .collect(),
        rate_limit: None,
        settings: serde_json::json!({"locale": "de"}),
        db_name: tenantgate_catalog::tenant_db::db_name(id),
    }
}

async fn tenants_domains_and_routes(tc: TestCatalog) {
    let catalog = tc.connect().await;
    seed_shard(&catalog, &tc, "shard-a").await;
    let acme = new_tenant(
        "acme",
        "shard-a",
        &["acme.example.com", "app.example.com/acme"],
    );
    let globex = new_tenant("globex", "shard-a", &["app.example.com/globex"]);
    catalog.create_tenant(&acme).await.unwrap();
    catalog.create_tenant(&globex).await.unwrap();

    let t = catalog.tenant("acme").await.unwrap().unwrap();
    assert_eq!(t.id, acme.id);
    assert_eq!(t.settings["locale"], "de");
    assert_eq!(t.domains, vec!["acme.example.com", "app.example.com/acme"]);
    assert_eq!(
        catalog
            .tenant(&acme.id.to_string())
            .await
            .unwrap()
            .unwrap()
            .slug,
        "acme"
    );
    assert!(catalog.tenant("nobody").await.unwrap().is_none());

    let routes = catalog.host_routes("acme.example.com").await.unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].slug, "acme");
    assert_eq!(routes[0].path_prefix, None);
    let mut shared = catalog.host_routes("app.example.com").await.unwrap();
    shared.sort_by(|a, b| a.slug.cmp(&b.slug));
    let prefixes: Vec<_> = shared.iter().map(|r| r.path_prefix.as_deref()).collect();
    assert_eq!(prefixes, vec![Some("acme"), Some("globex")]);
    assert!(catalog
        .host_routes("unknown.example.com")
        .await
        .unwrap()
        .is_empty());

    // The same routes in one batch (a full resync), unknown hosts included, and across
    // several queries when the batch is larger than one query takes.
    let many: Vec<String> = (0..tenantgate_catalog::store::tenants::HOSTS_PER_QUERY + 3)
        .map(|i| format!("unknown{i}.example.com"))
        .chain(["acme.example.com".into(), "app.example.com".into()])
        .collect();
    let hosts: Vec<&str> = many.iter().map(String::as_str).collect();
    let batch = catalog.routes_of_hosts(&hosts).await.unwrap();
    assert_eq!(batch.len(), hosts.len());
    assert_eq!(batch["acme.example.com"], routes);
    let mut batch_shared = batch["app.example.com"].clone();
    batch_shared.sort_by(|a, b| a.slug.cmp(&b.slug));
    assert_eq!(batch_shared, shared);
    assert!(batch["unknown0.example.com"].is_empty());

    // The edge's index of known hosts: each host once, in order.
    assert_eq!(
        catalog.all_hosts().await.unwrap(),
        vec!["acme.example.com", "app.example.com"]
    );
}

async fn conflicts_are_reported(tc: TestCatalog) {
    let catalog = tc.connect().await;
    seed_shard(&catalog, &tc, "shard-a").await;
    catalog
        .create_tenant(&new_tenant("acme", "shard-a", &["acme.example.com"]))
        .await
        .unwrap();
    let version = catalog.latest_version().await.unwrap();

    let err = catalog
        .create_tenant(&new_tenant("acme", "shard-a", &["other.example.com"]))
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err}");
    let err = catalog
        .create_tenant(&new_tenant("acme2", "shard-a", &["ACME.example.com."]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("acme.example.com"), "{err}");
    // Failed writes leave nothing behind: no tenant, no feed entry.
    assert!(catalog.tenant("acme2").await.unwrap().is_none());
    assert_eq!(catalog.latest_version().await.unwrap(), version);

    let err = catalog
        .create_shard(&NewShard {
            name: "shard-a".into(),
            app_upstreams: vec![],
            database_url: tc.shard_database_url("x"),
            replicas: vec![],
        })
        .await
        .unwrap_err();
    assert!(err.is_unique_violation());
}

async fn patches_and_listing(tc: TestCatalog) {
    let catalog = tc.connect().await;
    seed_shard(&catalog, &tc, "shard-a").await;
    seed_shard(&catalog, &tc, "shard-b").await;
    for i in 0..5 {
        let shard = if i % 2 == 0 { "shard-a" } else { "shard-b" };
        catalog
            .create_tenant(&new_tenant(
                &format!("t{i}"),
                shard,
                &[&format!("t{i}.example.com")],
            ))
            .await
            .unwrap();
    }
    let t2 = catalog.tenant("t2").await.unwrap().unwrap();
    catalog
        .update_tenant(
            t2.id,
            &TenantPatch {
                status: Some(TenantStatus::Suspended),
                rate_limit: Some(Some(RateLimit { rps: 10, burst: 20 })),
                bump_epoch: true,
                ..TenantPatch::default()
            },
        )
        .await
        .unwrap();
    let after = catalog.tenant("t2").await.unwrap().unwrap();
    assert_eq!(after.status, TenantStatus::Suspended);
    assert_eq!(after.rate_limit, Some(RateLimit { rps: 10, burst: 20 }));
    assert_eq!(after.epoch, t2.epoch + 1);
    assert_eq!(after.name, t2.name);
    // Clearing the limit goes back to the default.
    catalog
        .update_tenant(
            t2.id,
            &TenantPatch {
                rate_limit: Some(None),
                ..TenantPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        catalog.tenant("t2").await.unwrap().unwrap().rate_limit,
        None
    );

    let page = |cursor: Option<String>| TenantFilter {
        limit: 2,
        cursor,
        ..TenantFilter::default()
    };
    let first = catalog.list_tenants(&page(None)).await.unwrap();
    let second = catalog
        .list_tenants(&page(Some(first[1].slug.clone())))
        .await
        .unwrap();
    let slugs: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|t| t.slug.as_str())
        .collect();
    assert_eq!(slugs, vec!["t0", "t1", "t2", "t3"]);
    assert_eq!(first[0].domains, vec!["t0.example.com"]);

    let on_b = catalog
        .list_tenants(&TenantFilter {
            shard: Some("shard-b".into()),
            limit: 100,
            ..TenantFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(
        on_b.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>(),
        vec!["t1", "t3"]
    );
    let suspended = catalog
        .list_tenants(&TenantFilter {
            status: Some(TenantStatus::Suspended),
            limit: 100,
            ..TenantFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(suspended.len(), 1);
    // A tenant-restricted token's listing: only its ids, other filters still apply, and an
    // empty restriction lists nothing (never everything).
    let only = |ids: Vec<uuid::Uuid>, shard: Option<&str>| TenantFilter {
        ids: Some(ids),
        shard: shard.map(str::to_string),
        limit: 100,
        ..TenantFilter::default()
    };
    let (t1, t2) = (first[1].id, second[0].id);
    let mine = catalog
        .list_tenants(&only(vec![t2, t1], None))
        .await
        .unwrap();
    assert_eq!(
        mine.iter().map(|t| t.slug.as_str()).collect::<Vec<_>>(),
        vec!["t1", "t2"]
    );
    let mine_on_b = catalog
        .list_tenants(&only(vec![t1, t2], Some("shard-b")))
        .await
        .unwrap();
    assert_eq!(mine_on_b.len(), 1);
    assert!(catalog
        .list_tenants(&only(vec![], None))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        catalog.tenant_counts().await.unwrap(),
        vec![("shard-a".into(), 3), ("shard-b".into(), 2)]
    );
}

async fn changes_are_contiguous_under_concurrency(tc: TestCatalog) {
    let catalog = tc.connect().await;
    seed_shard(&catalog, &tc, "shard-a").await;
    let start = catalog.latest_version().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let catalog = catalog.clone();
        tasks.push(tokio::spawn(async move {
            catalog
                .create_tenant(&new_tenant(
                    &format!("c{i}"),
                    "shard-a",
                    &[&format!("c{i}.example.com")],
                ))
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let changes = catalog.changes_since(start, 1000).await.unwrap();
    let versions: Vec<i64> = changes.iter().map(|c| c.version).collect();
    assert_eq!(versions, ((start + 1)..=(start + 20)).collect::<Vec<_>>());
    assert!(changes
        .iter()
        .all(|c| c.kind == "tenant" && c.hosts.len() == 1));
}

#[derive(Default)]
struct Recorder {
    applied: Mutex<Vec<Change>>,
    resyncs: Mutex<u32>,
}

impl ChangeSink for Recorder {
    fn apply(&self, change: &Change) {
        self.applied.lock().unwrap().push(change.clone());
    }
    fn resync(&self) {
        *self.resyncs.lock().unwrap() += 1;
    }
}

async fn feed_follower_applies_changes_in_order(tc: TestCatalog) {
    let catalog = tc.connect().await;
    seed_shard(&catalog, &tc, "shard-a").await;
    let recorder = Arc::new(Recorder::default());
    let shutdown = CancellationToken::new();
    let (state, task) = feed::follow(
        catalog.clone(),
        recorder.clone(),
        feed::FeedOptions {
            poll_interval: Duration::from_millis(50),
            query_timeout: Duration::from_secs(2),
            listen_heartbeat: Duration::from_secs(5),
        },
        shutdown.clone(),
    );
    wait_until("initial resync", Duration::from_secs(5), || async {
        state.loaded().then_some(())
    })
    .await;
    assert_eq!(*recorder.resyncs.lock().unwrap(), 1);
    let base = state.applied_version();

    let t = new_tenant("fed", "shard-a", &["fed.example.com"]);
    catalog.create_tenant(&t).await.unwrap();
    catalog
        .update_tenant(
            t.id,
            &TenantPatch {
                status: Some(TenantStatus::Suspended),
                ..TenantPatch::default()
            },
        )
        .await
        .unwrap();
    wait_until("two changes applied", Duration::from_secs(5), || async {
        (state.applied_version() == base + 2).then_some(())
    })
    .await;
    let applied = recorder.applied.lock().unwrap().clone();
    assert_eq!(applied.len(), 2);
    assert_eq!(applied[0].version, base + 1);
    assert_eq!(applied[1].hosts, vec!["fed.example.com".to_string()]);
    assert_eq!(applied[1].tenant_id, Some(t.id));
    assert!(state.unreachable_for().is_none());

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

async fn admin_tokens_by_hash(tc: TestCatalog) {
    use tenantgate_catalog::store::tokens;
    let catalog = tc.connect().await;
    let now = tenantgate_contract::time::now_ms();
    let mut tx = catalog.begin_write().await.unwrap();
    let id = tokens::insert_admin_token(&mut tx, "ops", "tok-123", TokenScope::Read, None, None)
        .await
        .unwrap();
    let expired = tokens::insert_admin_token(
        &mut tx,
        "old",
        "tok-exp",
        TokenScope::Write,
        Some(now - 1),
        None,
    )
    .await
    .unwrap();
    let later = tokens::insert_admin_token(
        &mut tx,
        "later",
        "tok-later",
        TokenScope::Write,
        Some(now + 60_000),
        None,
    )
    .await
    .unwrap();
    // Restricted to two tenants (ids only: the restriction needs no tenant rows to exist).
    let reach = [uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
    tokens::insert_admin_token(
        &mut tx,
        "two",
        "tok-two",
        TokenScope::Read,
        None,
        Some(&reach),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let hash = tenantgate_contract::crypto::hash_token;
    let info = catalog
        .admin_token_info(&hash("tok-123"))
        .await
        .unwrap()
        .expect("token found");
    assert_eq!(
        (info.scope, info.name, info.id, info.tenants),
        (TokenScope::Read, "ops".into(), id, None)
    );
    let two = catalog
        .admin_token_info(&hash("tok-two"))
        .await
        .unwrap()
        .expect("restricted token found");
    assert_eq!(two.tenants.as_deref(), Some(&reach[..]));
    assert_eq!(
        catalog.admin_token_info(&hash("tok-124")).await.unwrap(),
        None
    );
    assert_eq!(
        catalog.admin_token_info(&hash("tok-exp")).await.unwrap(),
        None,
        "an expired token is not valid"
    );
    assert!(catalog
        .admin_token_info(&hash("tok-later"))
        .await
        .unwrap()
        .is_some());

    // Last use only moves forward.
    catalog.touch_admin_token(id, now).await.unwrap();
    catalog.touch_admin_token(id, now - 5_000).await.unwrap();

    // Revocation: valid no more, listed with its time, and a second revocation keeps the first.
    let mut tx = catalog.begin_write().await.unwrap();
    let revoked = tokens::revoke_admin_token(&mut tx, id)
        .await
        .unwrap()
        .unwrap();
    assert!(tokens::revoke_admin_token(&mut tx, uuid::Uuid::now_v7())
        .await
        .unwrap()
        .is_none());
    tx.commit().await.unwrap();
    let first_revocation = revoked.revoked_at.expect("revoked_at set");
    assert_eq!(
        catalog.admin_token_info(&hash("tok-123")).await.unwrap(),
        None
    );
    let mut tx = catalog.begin_write().await.unwrap();
    let again = tokens::revoke_admin_token(&mut tx, id)
        .await
        .unwrap()
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(again.revoked_at, Some(first_revocation));

    // Listing pages in creation order and includes revoked and expired tokens.
    let first = catalog.admin_tokens(None, 2).await.unwrap();
    let rest = catalog.admin_tokens(Some(first[1].id), 2).await.unwrap();
    let listed: Vec<_> = first.iter().chain(&rest).map(|t| t.id).collect();
    assert_eq!(listed[..3], [id, expired, later]);
    assert_eq!(rest[1].tenants.as_deref(), Some(&reach[..]));
    assert_eq!(first[0].last_used_at, Some(now));
    assert_eq!(first[0].revoked_at, Some(first_revocation));
    assert_eq!(first[1].expires_at, Some(now - 1));
}
