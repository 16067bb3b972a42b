//! TLS to the databases: a private PostgreSQL server that accepts TCP over TLS only, with a
//! certificate from a test CA. A shard whose URL says `sslmode=verify-full` and names the CA
//! provisions, serves and backs up its tenants over TLS; the same server without TLS, or with a
//! CA that did not sign its certificate, is refused. The catalog itself connects the same way.

use std::time::Duration;

use serde_json::json;
use tenantgate_catalog::Catalog;
use tenantgate_testkit::admin::{pg, Harness};
use tenantgate_testkit::pg_server::PgServer;
use tenantgate_testkit::tls::TestCa;
use tenantgate_testkit::{both_backends, wait_until, Engine};

fn server_url(server: &PgServer, query: &str) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/postgres?{query}",
        server.port()
    )
}

fn verify_full(server: &PgServer, ca: &TestCa) -> String {
    server_url(
        server,
        &format!("sslmode=verify-full&sslrootcert={}", ca.ca_file().display()),
    )
}

both_backends!(tenants_on_a_tls_shard_are_served_over_verified_tls);
async fn tenants_on_a_tls_shard_are_served_over_verified_tls(backend: Engine) {
    let ca = TestCa::new("tenantgate test database CA");
    let server = PgServer::start_tls(&ca);
    let dir = tempfile::tempdir().unwrap();
    let identity = dir.path().join("identity.txt");
    let recipient = tenantgate_admin::backups::ensure_identity(&identity).unwrap();
    let store = dir.path().join("store");
    let mut h = Harness::new(backend, |raw| {
        raw.backups.store = format!("file://{}", store.display());
        raw.backups.recipient = Some(recipient);
        raw.backups.identity_file = Some(identity);
    })
    .await;
    h.dirs.push(dir);
    let h = h.start().await;

    h.shard_at("secure", &verify_full(&server, &ca)).await;
    let (id, _) = h.tenant("sealed", Some("secure")).await;
    h.wait_status(&id, "active").await;

    // The tenant's own login reaches its database (the URL keeps the shard's TLS settings).
    let pool = h.tenant_pool(&id).await;
    sqlx::query(
        "INSERT INTO items (id, title, body, created_at, updated_at) VALUES ('i1', 't', '', 1, 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    let tenant = h.catalog.tenant(&id).await.unwrap().unwrap();
    // Every TCP session of the tenant's login is encrypted (the server would refuse one that
    // is not, so a plaintext fallback could not even get this far).
    let mut admin = pg(&verify_full(&server, &ca)).await;
    let (sessions, encrypted): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1",
    )
    .bind(&tenant.db_name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(sessions >= 1, "the tenant's pool holds a session");
    assert_eq!(encrypted, sessions, "every session of the tenant is TLS");
    pool.close().await;

    // pg_dump connects with the same settings.
    let r = h
        .post(&format!("/v1/tenants/{id}/backups"), json!({}))
        .await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    let backup = r.body["backup"]["id"].as_str().unwrap().to_string();
    wait_until("the backup over TLS", Duration::from_secs(30), || async {
        let b = h.get(&format!("/v1/backups/{backup}")).await.body;
        assert_ne!(b["status"], "failed", "{b:?}");
        (b["status"] == "completed").then_some(())
    })
    .await;
}

both_backends!(a_shard_without_tls_or_with_an_untrusted_certificate_is_refused);
async fn a_shard_without_tls_or_with_an_untrusted_certificate_is_refused(backend: Engine) {
    let ca = TestCa::new("tenantgate test database CA");
    let stranger = TestCa::new("someone else's CA");
    let server = PgServer::start_tls(&ca);
    let h = Harness::started(backend).await;

    h.shard_at("plain", &server_url(&server, "sslmode=disable"))
        .await;
    h.shard_at("untrusted", &verify_full(&server, &stranger))
        .await;
    for (shard, why) in [("plain", "no encryption"), ("untrusted", "certificate")] {
        let (id, job) = h.tenant(&format!("t-{shard}"), Some(shard)).await;
        let failed = wait_until(
            &format!("provisioning on {shard} to fail"),
            Duration::from_secs(60),
            || async {
                let j = h.get(&format!("/v1/jobs/{job}")).await.body;
                assert_ne!(j["status"], "succeeded", "{shard}: {j:?}");
                (j["status"] == "failed").then_some(j)
            },
        )
        .await;
        assert!(
            failed["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{failed:?}"
        );
        let t = h.get(&format!("/v1/tenants/{id}")).await.body;
        assert_eq!(t["status"], "failed", "{t:?}");
        let error = t["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{shard}: {error}");
    }
}

#[tokio::test]
async fn the_catalog_connects_over_verified_tls() {
    let ca = TestCa::new("tenantgate test database CA");
    let server = PgServer::start_tls(&ca);
    let mut admin = pg(&verify_full(&server, &ca)).await;
    sqlx::query("CREATE DATABASE catalog_tls")
        .execute(&mut admin)
        .await
        .unwrap();
    let url = verify_full(&server, &ca).replace("/postgres?", "/catalog_tls?");
    let catalog = Catalog::connect(&url, 2).await.expect("catalog over TLS");
    catalog.migrate().await.expect("migrate over TLS");
    assert!(catalog.shards().await.unwrap().is_empty());

    let stranger = TestCa::new("someone else's CA");
    let url = verify_full(&server, &stranger).replace("/postgres?", "/catalog_tls?");
    assert!(Catalog::connect(&url, 2).await.is_err());
}
