//! Catalog outage: the edge reaches PostgreSQL through a TCP forwarder the test cuts and
//! restores, while the test keeps writing to the catalog directly.
//!
//! (An SQLite catalog is a local file opened by the edge itself; it has no network path to
//! lose, so this scenario is PostgreSQL's.)

use std::net::SocketAddr;
use std::time::Duration;

use tenantgate_contract::TenantStatus;
use tenantgate_testkit::edge::Harness;
use tenantgate_testkit::{wait_until, TestCatalog};
use tokio_util::sync::CancellationToken;

/// Forwards TCP connections from `addr` to `target` until cut; cutting closes the listener
/// and every forwarded connection.
struct Forwarder {
    addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(addr: SocketAddr, target: SocketAddr) -> Forwarder {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    accepted = listener.accept() => {
                        let Ok((mut client, _)) = accepted else { continue };
                        conns.spawn(async move {
                            if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                            }
                        });
                    }
                }
            }
            conns.abort_all();
            while conns.join_next().await.is_some() {}
        });
        Forwarder { addr, stop, task }
    }

    async fn cut(self) -> SocketAddr {
        self.stop.cancel();
        let _ = self.task.await;
        self.addr
    }
}

fn server_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host_port = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:5432")
    };
    std::net::ToSocketAddrs::to_socket_addrs(&host_port)
        .unwrap()
        .next()
        .unwrap()
}

/// A harness on a fresh PostgreSQL catalog whose edge goes through a [`Forwarder`].
async fn behind_forwarder(extra_catalog: &str) -> (Harness, Forwarder, SocketAddr) {
    let tc = TestCatalog::postgres().await;
    let url = tc.url();
    let pg = server_addr(&url);
    let forwarder = Forwarder::start("127.0.0.1:0".parse().unwrap(), pg).await;
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let host_part = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let edge_url = url.replacen(host_part, &forwarder.addr.to_string(), 1);
    let h = Harness::with_catalog_url(tc, &edge_url, "", extra_catalog).await;
    (h, forwarder, pg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_stale_routes_while_the_catalog_is_down() {
    let (mut h, forwarder, pg) = behind_forwarder("").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    let known = h
        .add_active_tenant("known", "shard-a", &["known.test"])
        .await;
    h.add_tenant(
        "blocked",
        "shard-a",
        &["blocked.test"],
        TenantStatus::Suspended,
        None,
    )
    .await;
    h.start().await;
    // The outage begins once the edge has loaded the catalog (its feed's first round).
    h.wait_ready().await;
    assert_eq!(h.get("known.test", "/", &[]).await.status, 200);
    assert_eq!(h.get("blocked.test", "/", &[]).await.status, 403);

    let forwarder_addr = forwarder.cut().await;

    // An uncached host cannot be resolved: 503 catalog_unavailable (once the edge has noticed;
    // until then the lookup itself fails the same way).
    let r = wait_until("catalog_unavailable", Duration::from_secs(15), || async {
        let r = h.get("unknown.test", "/", &[]).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(r.code(), "catalog_unavailable");
    // Known tenants keep being served from the last known route, counted as stale; a tenant
    // last seen suspended stays refused.
    assert_eq!(h.get("known.test", "/", &[]).await.status, 200);
    assert_eq!(h.get("blocked.test", "/", &[]).await.status, 403);
    let stale = |text: &str| {
        text.lines()
            .find(|l| l.starts_with(r#"tenantgate_catalog_cache_lookups_total{result="stale"}"#))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(stale(&h.metrics_text().await) >= 1);
    let ready = h
        .client
        .get(format!("http://{}/readyz", h.metrics))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "stale within bounds is still ready");

    // Changes made meanwhile are applied once the catalog is back.
    h.set_status(known, TenantStatus::Suspended).await;
    h.add_active_tenant("newbie", "shard-a", &["newbie.test"])
        .await;
    for _ in 0..3 {
        assert_eq!(
            h.get("known.test", "/", &[]).await.status,
            200,
            "still the stale route"
        );
    }
    let _restored = Forwarder::start(forwarder_addr, pg).await;
    wait_until(
        "suspension applied after recovery",
        Duration::from_secs(15),
        || async { (h.get("known.test", "/", &[]).await.status == 403).then_some(()) },
    )
    .await;
    wait_until(
        "new tenant routable after recovery",
        Duration::from_secs(5),
        || async { (h.get("newbie.test", "/", &[]).await.status == 200).then_some(()) },
    )
    .await;
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_routes_expire_after_stale_max() {
    let (mut h, forwarder, _) = behind_forwarder("stale_max_secs = 1").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    h.add_active_tenant("known", "shard-a", &["known.test"])
        .await;
    h.start().await;
    // The outage begins once the edge has loaded the catalog (its feed's first round).
    h.wait_ready().await;
    assert_eq!(h.get("known.test", "/", &[]).await.status, 200);
    forwarder.cut().await;
    let r = wait_until("stale route expired", Duration::from_secs(15), || async {
        let r = h.get("known.test", "/", &[]).await;
        (r.status == 503).then_some(r)
    })
    .await;
    assert_eq!(r.code(), "catalog_unavailable");
    let ready = h
        .client
        .get(format!("http://{}/readyz", h.metrics))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    h.stop().await;
}
