//! Provisioning on real databases: create → 202 → job succeeds → active → database migrated;
//! least-privilege logins; placement on the emptiest shard; a failing job, its retries and a
//! retry after the fix.

use serde_json::json;
use sqlx::Row;
use tenantgate_testkit::admin::{migrations_plus, pg, Harness};
use tenantgate_testkit::{both_backends, Engine, TestCatalog};

both_backends!(create_tenant_provisions_its_database);
async fn create_tenant_provisions_its_database(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    let (id, job) = h.tenant("acme", Some("shard-a")).await;
    let created = h.get(&format!("/v1/tenants/{id}")).await;
    assert!(["provisioning", "active"].contains(&created.body["status"].as_str().unwrap()));
    let tenant = h.wait_status(&id, "active").await;
    assert_eq!(
        tenant["schema_version"],
        tenantgate_testkit::latest_tenant_migration()
    );
    assert_eq!(tenant["domains"], json!(["acme.example.com"]));
    // The database records the epoch activation gave the tenant (epoch fencing).
    assert_eq!(h.recorded_epoch(&id).await, tenant["epoch"].as_i64());
    assert!(tenant.get("db_credentials").is_none());
    let job = h.wait_job(&job, "succeeded").await;
    assert_eq!(job["kind"], "provision_tenant");
    assert_eq!(job["attempts"], 1);
    assert!(h.database_exists(&id).await);

    // The tenant migrations ran in the tenant's own database, reachable with its own login.
    let pool = h.tenant_pool(&id).await;
    let roles: i64 = sqlx::query("SELECT COUNT(*) FROM roles")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(roles, 3);
    pool.close().await;

    // The edge's view and the audit log follow.
    let r = h.get("/v1/resolve?host=ACME.example.com:443").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["edge"]["status"], 200, "{:?}", r.body);
    assert_eq!(r.body["tenant"]["slug"], "acme");
    assert_eq!(r.body["backends"], json!(["127.0.0.1:9"]));
    let audit = h.get("/v1/audit?tenant=acme").await;
    let actions: Vec<&str> = audit.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["tenant.activate", "tenant.create"]);
    assert_eq!(audit.body["entries"][1]["actor"], "bootstrap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tenant_login_reaches_only_its_own_database() {
    let h = Harness::started(Engine::Postgres).await;
    h.shard("shard-a").await;
    let (a, _) = h.tenant("alpha", None).await;
    let (b, _) = h.tenant("bravo", None).await;
    h.wait_status(&a, "active").await;
    h.wait_status(&b, "active").await;
    let ta = h.catalog.tenant(&a).await.unwrap().unwrap();
    let tb = h.catalog.tenant(&b).await.unwrap().unwrap();
    let login = tenantgate_catalog::tenant_db::Credentials::open(
        ta.db_credentials.as_deref().unwrap(),
        &h.config.security.credential_key,
        ta.id,
    )
    .unwrap();
    assert_eq!(login.user, ta.db_name);
    let server = h.pg_server();
    use sqlx::Connection;
    let own =
        tenantgate_catalog::tenant_db::postgres_url(&server, &ta.db_name, Some(&login)).unwrap();
    sqlx::PgConnection::connect(&own)
        .await
        .expect("own database")
        .close()
        .await
        .unwrap();
    let other =
        tenantgate_catalog::tenant_db::postgres_url(&server, &tb.db_name, Some(&login)).unwrap();
    let err = sqlx::PgConnection::connect(&other)
        .await
        .expect_err("another tenant's database");
    assert!(err.to_string().contains("permission denied"), "{err}");

    // In the catalog's database (PUBLIC may connect there) it can read nothing.
    let catalog_db = match &h.tc {
        TestCatalog::Postgres(db) => db.name.clone(),
        _ => unreachable!(),
    };
    let url =
        tenantgate_catalog::tenant_db::postgres_url(&server, &catalog_db, Some(&login)).unwrap();
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let err = sqlx::query("SELECT COUNT(*) FROM tenants")
        .fetch_one(&mut conn)
        .await
        .expect_err("no catalog access");
    assert!(err.to_string().contains("permission denied"), "{err}");

    // No server-wide privileges.
    let mut admin = pg(&server).await;
    // The role's stored SCRAM verifier is that of the sealed password, so the login works
    // under password authentication too (this test server trusts every local connection).
    let stored: String = sqlx::query("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(&ta.db_name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get(0);
    assert!(scram_matches(&login.password, &stored), "{stored}");
    assert!(!scram_matches("another password", &stored));
    let row = sqlx::query("SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolcanlogin FROM pg_roles WHERE rolname = $1")
        .bind(&ta.db_name)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    let flags: (bool, bool, bool, bool, bool) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    assert_eq!(flags, (false, false, false, false, true));
    // It owns the tables its migrations created.
    let mut own_conn = sqlx::PgConnection::connect(&own).await.unwrap();
    let owner: String =
        sqlx::query("SELECT tableowner::text FROM pg_tables WHERE tablename = 'items'")
            .fetch_one(&mut own_conn)
            .await
            .unwrap()
            .get(0);
    assert_eq!(owner, ta.db_name);
}

/// Whether `stored` (`SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`) is the verifier of
/// `password`: an implementation independent of the crate's, from RFC 5802.
fn scram_matches(password: &str, stored: &str) -> bool {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let mac = |key: &[u8], data: &[u8]| {
        let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().to_vec()
    };
    let Some(rest) = stored.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let (params, keys) = rest.split_once('$').unwrap();
    let (iterations, salt) = params.split_once(':').unwrap();
    let (stored_key, _server_key) = keys.split_once(':').unwrap();
    let iterations: u32 = iterations.parse().unwrap();
    let mut block = STANDARD.decode(salt).unwrap();
    block.extend_from_slice(&[0, 0, 0, 1]);
    let mut u = mac(password.as_bytes(), &block);
    let mut salted = u.clone();
    for _ in 1..iterations {
        u = mac(password.as_bytes(), &u);
        salted.iter_mut().zip(&u).for_each(|(s, x)| *s ^= x);
    }
    let client_key = mac(&salted, b"Client Key");
    STANDARD.encode(Sha256::digest(&client_key)) == stored_key
}

both_backends!(placement_picks_the_emptiest_active_shard);
async fn placement_picks_the_emptiest_active_shard(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-b").await;
    h.shard("shard-a").await;
    h.shard("shard-c").await;
    let r = h
        .patch("/v1/shards/shard-c", json!({"status": "disabled"}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let mut placed = Vec::new();
    for slug in ["one", "two", "three"] {
        let (id, _) = h.tenant(slug, None).await;
        placed.push(
            h.get(&format!("/v1/tenants/{id}")).await.body["shard"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // Tie broken by name, then the emptier one; the disabled shard never.
    assert_eq!(placed, ["shard-a", "shard-b", "shard-a"]);
    for slug in ["one", "two", "three"] {
        h.wait_status(slug, "active").await;
    }
    let page = h.get("/v1/tenants?shard=shard-a&status=active").await;
    assert_eq!(page.body["tenants"].as_array().unwrap().len(), 2);
}

both_backends!(failing_job_retries_then_fails_and_can_be_retried);
async fn failing_job_retries_then_fails_and_can_be_retried(backend: Engine) {
    // Tenant migrations that fail until fixed: a copy of the real ones plus a broken one.
    let dir = migrations_plus(backend, "0002_broken.sql", "CREATE TABLE nonsense (;");
    let broken = dir.path().join(backend.dir_name()).join("0002_broken.sql");
    let path = dir.path().to_path_buf();
    let mut h = Harness::new(backend, |raw| {
        raw.tenant_migrations.dir = path;
        raw.admin.job_max_attempts = 2;
    })
    .await
    .start()
    .await;
    h.dirs.push(dir);
    h.shard("shard-a").await;
    let (id, job) = h.tenant("flaky", None).await;
    let tenant = h.wait_status(&id, "failed").await;
    assert!(
        tenant["last_error"]
            .as_str()
            .unwrap()
            .contains("provision_tenant"),
        "{tenant}"
    );
    let failed = h.wait_job(&job, "failed").await;
    assert_eq!(failed["attempts"], 2);
    assert!(failed["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(
        h.get("/v1/resolve?host=flaky.example.com").await.body["edge"]["status"],
        503
    );

    // A retry of a job that has not failed is a conflict; after the fix, a retry succeeds.
    std::fs::write(&broken, "CREATE TABLE fixed (id BIGINT);").unwrap();
    let r = h.post(&format!("/v1/jobs/{job}/retry"), json!({})).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let tenant = h.wait_status(&id, "active").await;
    assert_eq!(tenant["schema_version"], 2);
    assert!(tenant.get("last_error").is_none(), "{tenant}");
    let r = h.post(&format!("/v1/jobs/{job}/retry"), json!({})).await;
    assert_eq!(r.status, 409);
    h.stop().await;
}
