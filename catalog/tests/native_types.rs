//! The catalog's column types per backend, and catalogs written before PostgreSQL had its own.
//!
//! Until migration 0003 the PostgreSQL catalog held TEXT ids, BIGINT milliseconds and TEXT JSON,
//! as SQLite still does. A catalog written then must read back the same through the store after
//! the upgrade; on SQLite the same rows must read back with no migration at all.

use sqlx::migrate::Migrator;
use sqlx::Row;
use tenantgate_catalog::store::jobs::{Job, JobStatus};
use tenantgate_catalog::store::{CatalogPool, TenantFilter};
use tenantgate_catalog::{Change, Route, Shard, ShardStatus, Tenant, TokenScope};
use tenantgate_config::db_url::Engine;
use tenantgate_contract::{RateLimit, TenantStatus};
use tenantgate_testkit::{both_backends, TestCatalog};
use uuid::Uuid;

both_backends!(
    rows_written_by_the_text_schema_read_back_the_same,
    stored_column_types
);

const ACME: &str = "5f0c6a3e-1d2b-4c5d-8e9f-0a1b2c3d4e5f";
const GLOBEX: &str = "9b2e7c41-0d3a-4f6b-a8c9-1e2f3a4b5c6d";
const TOKEN: &str = "01890f3c-7a2b-7c3d-8e4f-5a6b7c8d9e0f";
const JOB: &str = "0189a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
/// The exact bytes of a signed webhook body: key order and spacing must survive.
const WEBHOOK_BODY: &str = r#"{"z": 1, "a":2}"#;

/// Build the catalog as migrations 0001 and 0002 left it and fill it in their format (TEXT ids,
/// BIGINT milliseconds, TEXT JSON), through the `Any` driver as the store used to write it.
async fn catalog_in_text_format(tc: &TestCatalog) {
    let backend = match tc.engine() {
        Engine::Postgres => "postgres",
        Engine::Sqlite => "sqlite",
    };
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(backend);
    let mut migrator = Migrator::new(dir).await.unwrap();
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= 2)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert_eq!(migrator.migrations.len(), 2);
    let pool = tenantgate_catalog::db::connect(&tc.url(), 1).await.unwrap();
    migrator.run(&pool).await.unwrap();

    let shard_db = tc.shard_database_url("shard-a");
    let acme_db = tenantgate_catalog::tenant_db::db_name(ACME.parse().unwrap());
    let globex_db = tenantgate_catalog::tenant_db::db_name(GLOBEX.parse().unwrap());
    let token_hash = tenantgate_contract::crypto::hash_token("tok-old");
    let rows: Vec<(&str, Vec<&str>)> = vec![
        (
            "INSERT INTO shards (name, status, app_upstreams, database_url, replicas, created_at,
                updated_at)
             VALUES ('shard-a', 'draining', '[\"127.0.0.1:7001\", \"127.0.0.1:7002\"]', $1, '[]',
                1600000000001, 1600000000002)",
            vec![&shard_db],
        ),
        (
            "INSERT INTO tenants (id, slug, name, status, shard, epoch, rate_limit_rps,
                rate_limit_burst, settings, db_name, db_credentials, schema_version,
                migration_error, last_error, created_at, updated_at, deleted_at)
             VALUES ($1, 'acme', 'Acme Corp', 'active', 'shard-a', 3, 10, 20,
                '{\"locale\":\"de\",\"theme\":{\"color\":\"#336699\"},\"features\":[\"beta\"]}',
                $2, 'sealed-credentials', 2, NULL, 'last failure', 1700000000123, 1700000000999,
                NULL)",
            vec![ACME, &acme_db],
        ),
        (
            "INSERT INTO tenants (id, slug, name, status, shard, epoch, settings, db_name,
                schema_version, created_at, updated_at)
             VALUES ($1, 'globex', 'Globex', 'suspended', 'shard-a', 1, '{}', $2, 0,
                1700000100000, 1700000200001)",
            vec![GLOBEX, &globex_db],
        ),
        (
            "INSERT INTO tenant_domains (host, path_prefix, tenant_id, is_primary, created_at)
             VALUES ('acme.example.com', '', $1, 1, 1700000000124),
                    ('app.example.com', 'acme', $1, 0, 1700000000125),
                    ('app.example.com', 'globex', $2, 1, 1700000100001)",
            vec![ACME, GLOBEX],
        ),
        (
            "INSERT INTO admin_tokens (id, name, token_hash, scope, created_at, revoked_at)
             VALUES ($1, 'ops', $2, 'write', 1700000000300, NULL)",
            vec![TOKEN, &token_hash],
        ),
        (
            "INSERT INTO jobs (id, kind, tenant_id, payload, status, attempts, max_attempts,
                run_at, lease_until, locked_by, error, progress, created_at, updated_at)
             VALUES ($1, 'provision', $2, '{\"shard\":\"shard-a\"}', 'queued', 1, 5,
                1700000000400, NULL, NULL, 'boom', '{\"phase\":\"copy\"}', 1700000000401,
                1700000000402)",
            vec![JOB, ACME],
        ),
        (
            "INSERT INTO audit_log (at, actor, action, target, tenant_id, before_value,
                after_value)
             VALUES (1700000000500, 'cli', 'tenant.create', 'tenant:acme', $1, NULL,
                '{\"slug\":\"acme\"}')",
            vec![ACME],
        ),
        (
            "INSERT INTO catalog_changes (version, kind, tenant_id, shard, hosts, created_at)
             VALUES (1, 'tenant', $1, NULL, '[\"acme.example.com\",\"app.example.com\"]',
                1700000000600),
                    (2, 'shard', NULL, 'shard-a', '[]', 1700000000601)",
            vec![ACME],
        ),
        (
            "INSERT INTO webhook_outbox (event, url, payload, attempts, next_attempt_at,
                created_at)
             VALUES ('tenant.created', 'http://127.0.0.1:1/hook', $1, 0, 1700000000700,
                1700000000700)",
            vec![WEBHOOK_BODY],
        ),
    ];
    for (sql, binds) in rows {
        let mut query = sqlx::query(sql);
        for value in binds {
            query = query.bind(value);
        }
        query.execute(&pool).await.unwrap();
    }
    pool.close().await;
}

async fn rows_written_by_the_text_schema_read_back_the_same(tc: TestCatalog) {
    catalog_in_text_format(&tc).await;
    // Runs every migration of the backend: 0003 converts PostgreSQL; SQLite has nothing to do.
    let catalog = tc.connect().await;
    let (acme, globex): (Uuid, Uuid) = (ACME.parse().unwrap(), GLOBEX.parse().unwrap());

    let expected_acme = Tenant {
        id: acme,
        slug: "acme".into(),
        name: "Acme Corp".into(),
        status: TenantStatus::Active,
        shard: "shard-a".into(),
        epoch: 3,
        domains: vec!["acme.example.com".into(), "app.example.com/acme".into()],
        rate_limit: Some(RateLimit { rps: 10, burst: 20 }),
        settings: serde_json::json!({
            "locale": "de", "theme": {"color": "#336699"}, "features": ["beta"]
        }),
        schema_version: 2,
        migration_error: None,
        last_error: Some("last failure".into()),
        db_name: tenantgate_catalog::tenant_db::db_name(acme),
        db_credentials: Some("sealed-credentials".into()),
        created_at: 1_700_000_000_123,
        updated_at: 1_700_000_000_999,
    };
    assert_eq!(
        catalog.tenant("acme").await.unwrap().as_ref(),
        Some(&expected_acme)
    );
    assert_eq!(
        catalog.tenant(ACME).await.unwrap().as_ref(),
        Some(&expected_acme)
    );

    let listed = catalog
        .list_tenants(&TenantFilter {
            limit: 10,
            ..TenantFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0], expected_acme);
    assert_eq!(
        (
            listed[1].id,
            listed[1].status,
            listed[1].rate_limit,
            &listed[1].domains,
            &listed[1].settings,
            listed[1].created_at,
            listed[1].updated_at,
        ),
        (
            globex,
            TenantStatus::Suspended,
            None,
            &vec!["app.example.com/globex".to_string()],
            &serde_json::json!({}),
            1_700_000_100_000,
            1_700_000_200_001,
        )
    );

    let route = |tenant_id, slug: &str, status, epoch, rate_limit, prefix: Option<&str>| Route {
        tenant_id,
        slug: slug.into(),
        status,
        shard: "shard-a".into(),
        epoch,
        rate_limit,
        path_prefix: prefix.map(String::from),
        client_share: None,
        https_only: false,
        hsts_max_age: None,
    };
    let acme_limit = Some(RateLimit { rps: 10, burst: 20 });
    assert_eq!(
        catalog.host_routes("acme.example.com").await.unwrap(),
        vec![route(
            acme,
            "acme",
            TenantStatus::Active,
            3,
            acme_limit,
            None
        )]
    );
    let mut shared = catalog.host_routes("app.example.com").await.unwrap();
    shared.sort_by(|a, b| a.slug.cmp(&b.slug));
    assert_eq!(
        shared,
        vec![
            route(
                acme,
                "acme",
                TenantStatus::Active,
                3,
                acme_limit,
                Some("acme")
            ),
            route(
                globex,
                "globex",
                TenantStatus::Suspended,
                1,
                None,
                Some("globex")
            ),
        ]
    );

    assert_eq!(
        catalog.shards().await.unwrap(),
        vec![Shard {
            name: "shard-a".into(),
            status: ShardStatus::Draining,
            app_upstreams: vec!["127.0.0.1:7001".into(), "127.0.0.1:7002".into()],
            database_url: tc.shard_database_url("shard-a"),
            replicas: vec![],
            created_at: 1_600_000_000_001,
            updated_at: 1_600_000_000_002,
        }]
    );

    let info = catalog
        .admin_token_info(&tenantgate_contract::crypto::hash_token("tok-old"))
        .await
        .unwrap()
        .expect("token found");
    assert_eq!(
        (info.id.to_string().as_str(), info.name.as_str(), info.scope),
        (TOKEN, "ops", TokenScope::Write)
    );

    let expected_job = Job {
        id: JOB.parse().unwrap(),
        kind: "provision".into(),
        tenant_id: Some(acme),
        payload: serde_json::json!({"shard": "shard-a"}),
        status: JobStatus::Queued,
        attempts: 1,
        max_attempts: 5,
        run_at: 1_700_000_000_400,
        lease_until: None,
        locked_by: None,
        error: Some("boom".into()),
        progress: Some(serde_json::json!({"phase": "copy"})),
        created_at: 1_700_000_000_401,
        updated_at: 1_700_000_000_402,
    };
    assert_eq!(
        catalog.job(expected_job.id).await.unwrap().as_ref(),
        Some(&expected_job)
    );
    assert_eq!(
        catalog.jobs_of_tenant(acme).await.unwrap(),
        vec![expected_job.clone()]
    );
    // The converted job is still claimable (its run_at is long past) and its lease is kept to
    // the millisecond.
    let lease = tenantgate_contract::time::now_ms() + 60_123;
    let claimed = catalog.claim_job("w1", lease).await.unwrap().unwrap();
    assert_eq!(
        (claimed.id, claimed.attempts, claimed.lease_until),
        (expected_job.id, 2, Some(lease))
    );

    let audit = catalog.audit_log(Some(&[acme]), None, 10).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].at,
            audit[0].action.as_str(),
            audit[0].tenant_id.as_deref(),
            &audit[0].before,
            &audit[0].after,
        ),
        (
            1_700_000_000_500,
            "tenant.create",
            Some(ACME),
            &None,
            &Some(serde_json::json!({"slug": "acme"})),
        )
    );

    assert_eq!(catalog.latest_version().await.unwrap(), 2);
    assert_eq!(
        catalog.changes_since(0, 10).await.unwrap(),
        vec![
            Change {
                version: 1,
                kind: "tenant".into(),
                tenant_id: Some(acme),
                shard: None,
                hosts: vec!["acme.example.com".into(), "app.example.com".into()],
            },
            Change {
                version: 2,
                kind: "shard".into(),
                tenant_id: None,
                shard: Some("shard-a".into()),
                hosts: vec![],
            },
        ]
    );

    let delivery = catalog
        .claim_outbox(tenantgate_contract::time::now_ms() + 60_000)
        .await
        .unwrap()
        .expect("webhook due");
    assert_eq!(delivery.payload, WEBHOOK_BODY);

    // Writes continue the converted catalog: the feed goes on from version 2.
    let version = catalog
        .record_change(&tenantgate_catalog::store::shards::shard_change("shard-a"))
        .await
        .unwrap();
    assert_eq!(version, 3);

    if let CatalogPool::Postgres(pool) = catalog.pool() {
        // The foreign key dropped for the conversion is back, cascading as 0001 declared it.
        let on_delete: String = sqlx::query(
            "SELECT confdeltype::text FROM pg_constraint
             WHERE conname = 'tenant_domains_tenant_id_fkey'",
        )
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0);
        assert_eq!(on_delete, "c");
    }
}

async fn stored_column_types(tc: TestCatalog) {
    let catalog = tc.connect().await;
    match catalog.pool() {
        CatalogPool::Postgres(pool) => {
            let expected = [
                ("tenants", "id", "uuid"),
                ("tenants", "created_at", "timestamp with time zone"),
                ("tenants", "deleted_at", "timestamp with time zone"),
                ("tenants", "settings", "jsonb"),
                ("tenant_domains", "tenant_id", "uuid"),
                ("shards", "app_upstreams", "jsonb"),
                ("shards", "updated_at", "timestamp with time zone"),
                ("admin_tokens", "id", "uuid"),
                ("jobs", "id", "uuid"),
                ("jobs", "payload", "jsonb"),
                ("jobs", "lease_until", "timestamp with time zone"),
                ("audit_log", "at", "timestamp with time zone"),
                ("audit_log", "after_value", "jsonb"),
                ("catalog_changes", "tenant_id", "uuid"),
                ("catalog_changes", "hosts", "jsonb"),
                (
                    "webhook_outbox",
                    "next_attempt_at",
                    "timestamp with time zone",
                ),
                // Sent byte for byte as signed, so not normalised by jsonb.
                ("webhook_outbox", "payload", "text"),
                ("tenants", "epoch", "bigint"),
                ("tenant_usage", "tenant_id", "uuid"),
                ("tenant_usage", "minute", "timestamp with time zone"),
            ];
            for (table, column, data_type) in expected {
                let found: String = sqlx::query(
                    "SELECT data_type::text FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1
                       AND column_name = $2",
                )
                .bind(table)
                .bind(column)
                .fetch_one(pool)
                .await
                .unwrap()
                .get(0);
                assert_eq!(found, data_type, "{table}.{column}");
            }
        }
        CatalogPool::Sqlite(pool) => {
            // SQLite keeps its format, so existing files stay readable by older binaries too:
            // hyphenated TEXT ids, INTEGER milliseconds, TEXT JSON.
            catalog
                .create_shard(&tenantgate_catalog::store::shards::NewShard {
                    name: "shard-a".into(),
                    app_upstreams: vec!["127.0.0.1:1".into()],
                    database_url: tc.shard_database_url("shard-a"),
                    replicas: vec![],
                })
                .await
                .unwrap();
            let id = Uuid::new_v4();
            catalog
                .create_tenant(&tenantgate_catalog::store::NewTenant {
                    id,
                    slug: "acme".into(),
                    name: "Acme".into(),
                    status: TenantStatus::Active,
                    shard: "shard-a".into(),
                    domains: vec![
                        tenantgate_contract::host::DomainSpec::parse("acme.test").unwrap()
                    ],
                    rate_limit: None,
                    settings: serde_json::json!({"locale": "de"}),
                    db_name: tenantgate_catalog::tenant_db::db_name(id),
                })
                .await
                .unwrap();
            let row = sqlx::query(
                "SELECT t.id, typeof(t.id), typeof(t.created_at), t.settings, typeof(t.settings),
                    typeof(d.tenant_id), typeof(c.hosts), typeof(c.created_at)
                 FROM tenants t JOIN tenant_domains d ON d.tenant_id = t.id
                 JOIN catalog_changes c ON c.tenant_id = t.id",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            assert_eq!(row.get::<String, _>(0), id.hyphenated().to_string());
            assert_eq!(row.get::<String, _>(3), r#"{"locale":"de"}"#);
            let types: Vec<String> = [1, 2, 4, 5, 6, 7].iter().map(|&i| row.get(i)).collect();
            assert_eq!(
                types,
                ["text", "integer", "text", "text", "text", "integer"]
            );
        }
    }
}
