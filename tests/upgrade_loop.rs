//! Graceful upgrades of the real edge binary in a loop, under 200 requests per second from
//! keep-alive clients that do not retry: every request gets its 200, and long requests in
//! flight at each upgrade finish on the old process while it drains.
//!
//! Each upgrade is what `systemctl reload` runs (`deploy/systemd/tenantgate-edge-reload`): the
//! unit's command again with `--upgrade`; the new edge asks the one named in the pid file to hand
//! its sockets over, then records its own pid.
//!
//! Short form (CI): 3 upgrades, one every 2 s (about 15 s in all). Long form, the issue's: an upgrade every 30 s for
//! 5 minutes, `TENANTGATE_UPGRADE_EVERY_SECS=30 TENANTGATE_UPGRADES=10 cargo test --test
//! upgrade_loop -- --nocapture`.

mod support;

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::NewTenant;
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::load::{self, Summary};
use tenantgate_testkit::net::SLOW_ANSWER;
use tenantgate_testkit::TestCatalog;
use uuid::Uuid;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
/// Long requests started just before each upgrade.
const LONG_REQUESTS: usize = 5;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn config_text(catalog_url: &str, listen: &str, metrics: &str) -> String {
    format!(
        "[catalog]\nurl = \"{catalog_url}\"\n[edge]\nlisten = \"{listen}\"\n\
         metrics_listen = \"{metrics}\"\ndefault_rps = 100000\ndefault_burst = 100000\n\
         grace_period_secs = 1\n\
         [security]\nsigning_keys = {{ k = \"{KEY}\" }}\ncredential_key = \"{KEY}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_in_a_loop_fail_no_request() {
    let every = Duration::from_secs(env_or("TENANTGATE_UPGRADE_EVERY_SECS", 2));
    let upgrades = env_or("TENANTGATE_UPGRADES", 3);
    let tc = TestCatalog::sqlite();
    let catalog = tc.connect().await;
    catalog
        .create_shard(&NewShard {
            name: "s1".into(),
            app_upstreams: vec![support::ok_upstream().to_string()],
            database_url: tc.shard_database_url("s1"),
            replicas: vec![],
        })
        .await
        .unwrap();
    let id = Uuid::new_v4();
    catalog
        .create_tenant(&NewTenant {
            id,
            slug: "acme".into(),
            name: "Acme".into(),
            status: TenantStatus::Active,
            shard: "s1".into(),
            domains: vec![DomainSpec::parse("acme.test").unwrap()],
            rate_limit: None,
            settings: serde_json::json!({}),
            db_name: tenantgate_catalog::tenant_db::db_name(id),
        })
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (config, pid_file, tmp) = (
        dir.path().join("tenantgate.toml"),
        dir.path().join("edge.pid"),
        dir.path().join("tmp"),
    );
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(
        &config,
        config_text(&tc.url(), "127.0.0.1:0", "127.0.0.1:0"),
    )
    .unwrap();
    let first = support::edge_process(&config, &pid_file, &tmp, false).await;
    let (listen, metrics) = (first.addr("listen"), first.addr("metrics"));
    // An upgrade takes over the running edge's addresses: the file names them from now on.
    std::fs::write(
        &config,
        config_text(&tc.url(), &listen.to_string(), &metrics.to_string()),
    )
    .unwrap();

    // One keep-alive client (reqwest pools connections and does not retry a request that
    // failed), 200 requests per second, open loop.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let url = format!("http://{listen}/");
    let stop = AtomicBool::new(false);
    let load = load::run_until(200, &stop, |_| client.get(&url).header("host", "acme.test"));
    let began = Instant::now();
    let upgrade_loop = async {
        let mut running = first;
        let mut retired = Vec::new();
        let mut long = Vec::new();
        for round in 1..=upgrades {
            tokio::time::sleep(every).await;
            // Long requests on the running edge, under way when it is told to hand over.
            let handover_requested = Instant::now() + Duration::from_millis(300);
            for _ in 0..LONG_REQUESTS {
                let request = client
                    .get(format!("http://{listen}/slow"))
                    .header("host", "acme.test");
                long.push(tokio::spawn(async move {
                    let r = request.send().await;
                    (r.map(|r| r.status().as_u16()), Instant::now())
                }));
            }
            tokio::time::sleep_until(handover_requested.into()).await;
            let old_pid = running.child.id();
            let next = support::edge_process(&config, &pid_file, &tmp, true).await;
            let new_pid = next.child.id();
            let pid = std::fs::read_to_string(&pid_file).unwrap();
            assert_eq!(pid.trim(), new_pid.to_string(), "round {round}: pid file");
            assert_eq!(next.addr("listen"), listen, "round {round}: same address");
            println!(
                "upgrade {round} at {:.1} s: edge {old_pid} → {new_pid}",
                began.elapsed().as_secs_f64()
            );
            retired.push((std::mem::replace(&mut running, next), handover_requested));
        }
        // Every old edge drains and exits by itself (Pingora's 5 s after the handover, then
        // the grace period).
        for (old, _) in &mut retired {
            support::wait_until("an old edge exits", Duration::from_secs(30), || {
                let exited = old.child.try_wait().unwrap();
                async move { exited }
            })
            .await;
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut long_results = Vec::new();
        for l in long {
            long_results.push(l.await.unwrap());
        }
        (running, retired, long_results)
    };
    let (samples, (mut last, retired, long)) = tokio::join!(load, upgrade_loop);

    let summary = Summary::of(&samples);
    let not_ok: Vec<String> = samples
        .iter()
        .filter(|s| s.outcome != Ok(200))
        .map(|s| format!("{:?} at {:?}", s.outcome, s.at))
        .collect();
    println!(
        "{upgrades} upgrades every {every:?} under 200 req/s: {summary}; {} not 200",
        not_ok.len()
    );
    // Every long request got its 200 after the handover was asked for, so the old edge (which
    // owned its connection) finished it while draining.
    let long_ok = long.iter().filter(|(r, _)| matches!(r, Ok(200))).count();
    println!(
        "long requests ({} s each) in flight at the upgrades: {long_ok} of {} answered 200",
        SLOW_ANSWER.as_secs(),
        long.len()
    );
    for (i, (result, done)) in long.iter().enumerate() {
        let (_, handover) = retired[i / LONG_REQUESTS];
        assert!(matches!(result, Ok(200)), "long request {i}: {result:?}");
        assert!(
            *done > handover,
            "long request {i} ended before its upgrade"
        );
    }
    assert!(summary.count > 200, "{summary}");
    assert!(not_ok.is_empty(), "{not_ok:?}");
    for (mut old, _) in retired {
        let status = old.child.wait().unwrap();
        assert!(status.success(), "an old edge exited with {status}");
    }
    assert!(
        last.child.try_wait().unwrap().is_none(),
        "the last edge runs"
    );
}
