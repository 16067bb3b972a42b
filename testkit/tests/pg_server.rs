//! The kit's private PostgreSQL servers: logical WAL, reachable as `postgres` on 127.0.0.1,
//! gone (stopped, directory removed) once dropped.

use sqlx::{Connection, Row};
use tenantgate_testkit::pg_server::PgServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_server_has_logical_wal_and_is_removed_on_drop() {
    let server = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&server.url()).await.unwrap();
    let wal: String = sqlx::query("SHOW wal_level")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(wal, "logical");
    conn.close().await.unwrap();
    // The shared one is another server, and the same one every time.
    let shared = PgServer::shared();
    assert_ne!(shared.port(), server.port());
    assert_eq!(PgServer::shared().port(), shared.port());

    let port = server.port();
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .unwrap();
    assert!(
        sqlx::PgConnection::connect(&format!("postgres://postgres@127.0.0.1:{port}/postgres"))
            .await
            .is_err(),
        "the server stopped"
    );
}
