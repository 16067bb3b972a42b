//! Rotating the header signing key under load, with the real binary, the way README ("Rotating
//! the signing key") tells an operator to: both app processes of the shard restarted one at a
//! time with the new key added, the edge upgraded gracefully to sign with it, the apps restarted
//! again without the old key once the old edge process has exited. At 200 requests per second from a keep-alive client that does not
//! retry, no request is rejected; afterwards a header signed with the removed key gets 401.
//!
//! The long form holds each phase `TENANTGATE_ROTATION_PHASE_SECS` seconds (default 1).

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use support::ComponentProcess;
use tenantgate_catalog::store::shards::NewShard;
use tenantgate_catalog::store::NewTenant;
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::signing::{SigningKeys, TenantClaims};
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::load::{self, Summary};
use tenantgate_testkit::TestCatalog;
use uuid::Uuid;

const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA";

/// The `[security]` section of each phase.
const OLD: &str = "signing_key_id = \"k1\"\nsigning_keys = { k1 = \"K1\" }";
const BOTH: &str = "signing_key_id = \"k1\"\nsigning_keys = { k1 = \"K1\", k2 = \"K2\" }";
const NEW_CURRENT: &str = "signing_key_id = \"k2\"\nsigning_keys = { k1 = \"K1\", k2 = \"K2\" }";
const NEW_ONLY: &str = "signing_key_id = \"k2\"\nsigning_keys = { k2 = \"K2\" }";

/// One configuration file of the test: the catalog, the edge's and one app's addresses, and the
/// security section `security`.
fn config_text(catalog: &str, edge: (&str, &str), app: &str, security: &str) -> String {
    let security = security.replace("K1", K1).replace("K2", K2);
    format!(
        "[catalog]\nurl = \"{catalog}\"\npoll_interval_ms = 200\n\
         [edge]\nlisten = \"{}\"\nmetrics_listen = \"{}\"\ndefault_rps = 100000\n\
         default_burst = 100000\ngrace_period_secs = 1\nhealth_interval_ms = 100\n\
         [app]\nlisten = \"{app}\"\nshard = \"s1\"\n\
         [security]\n{security}\ncredential_key = \"{K1}\"\n",
        edge.0, edge.1
    )
}

/// `tenantgate app --config CONFIG`, once it listens.
async fn app(config: &Path) -> ComponentProcess {
    let args = [
        "app".to_string(),
        "--config".into(),
        config.display().to_string(),
    ];
    tokio::task::spawn_blocking(move || {
        ComponentProcess::start(support::binary(), &args, "app listening")
    })
    .await
    .unwrap()
}

/// Requests the app at `addr` answered, from its own metrics.
async fn app_requests(client: &reqwest::Client, addr: SocketAddr) -> f64 {
    let Ok(r) = client.get(format!("http://{addr}/metrics")).send().await else {
        return 0.0;
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("tenantgate_app_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One app process of the shard and its configuration file.
struct App {
    process: ComponentProcess,
    config: PathBuf,
    addr: SocketAddr,
}

/// Restart `app` with `security`, as an operator restarts one app process: SIGTERM (it finishes
/// what it is serving), the new configuration, start, and wait until the edge sends it traffic
/// again before the next one.
async fn restart(app_: &mut App, catalog: &str, edge: (&str, &str), security: &str) {
    let client = reqwest::Client::new();
    let pid = app_.process.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::block_in_place(|| app_.process.child.wait().unwrap());
    assert!(status.success(), "the app stopped cleanly: {status}");
    let text = config_text(catalog, edge, &app_.addr.to_string(), security);
    std::fs::write(&app_.config, text).unwrap();
    app_.process = app(&app_.config).await;
    let addr = app_.addr;
    support::wait_until(
        "the restarted app serves traffic",
        Duration::from_secs(15),
        || {
            let client = client.clone();
            async move { (app_requests(&client, addr).await > 0.0).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_key_rotation_rejects_nothing() {
    let phase = Duration::from_secs(
        std::env::var("TENANTGATE_ROTATION_PHASE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1),
    );
    let tc = TestCatalog::sqlite();
    let catalog = tc.connect().await;
    let url = tc.url();
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let any = ("127.0.0.1:0", "127.0.0.1:0");

    // Two app processes of shard s1 with the old key, then the shard and a tenant on them.
    let mut apps = Vec::new();
    for i in 0..2 {
        let config = dir.path().join(format!("app{i}.toml"));
        std::fs::write(&config, config_text(&url, any, "127.0.0.1:0", OLD)).unwrap();
        let process = app(&config).await;
        let addr = process.addr("listen");
        apps.push(App {
            process,
            config,
            addr,
        });
    }
    catalog
        .create_shard(&NewShard {
            name: "s1".into(),
            app_upstreams: apps.iter().map(|a| a.addr.to_string()).collect(),
            database_url: tc.shard_database_url("s1"),
            replicas: vec![],
        })
        .await
        .unwrap();
    let tenant = Uuid::new_v4();
    catalog
        .create_tenant(&NewTenant {
            id: tenant,
            slug: "acme".into(),
            name: "Acme".into(),
            status: TenantStatus::Active,
            shard: "s1".into(),
            domains: vec![DomainSpec::parse("acme.test").unwrap()],
            rate_limit: None,
            settings: serde_json::json!({}),
            db_name: tenantgate_catalog::tenant_db::db_name(tenant),
        })
        .await
        .unwrap();

    // The edge with the old key; an upgrade takes over its addresses, so the file names them.
    let (edge_config, pid_file) = (dir.path().join("edge.toml"), dir.path().join("edge.pid"));
    std::fs::write(&edge_config, config_text(&url, any, "127.0.0.1:0", OLD)).unwrap();
    let mut first = support::edge_process(&edge_config, &pid_file, &tmp, false).await;
    let (listen, metrics) = (
        first.addr("listen").to_string(),
        first.addr("metrics").to_string(),
    );
    let edge = (listen.as_str(), metrics.as_str());
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let whoami = format!("http://{listen}/whoami");
    support::wait_until("the edge serves acme", Duration::from_secs(15), || async {
        let r = client
            .get(&whoami)
            .header("host", "acme.test")
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;

    let stop = AtomicBool::new(false);
    let load = load::run_until(200, &stop, |_| {
        client.get(&whoami).header("host", "acme.test")
    });
    let rotate = async {
        let began = Instant::now();
        let mut marks = Vec::new();
        tokio::time::sleep(phase).await;
        // 1. Every app learns k2, one process at a time, still accepting k1.
        for a in &mut apps {
            restart(a, &url, edge, BOTH).await;
        }
        marks.push(("k2 on every app", began.elapsed()));
        tokio::time::sleep(phase).await;
        // 2. The edges sign with k2: a graceful upgrade to a configuration naming it.
        std::fs::write(
            &edge_config,
            config_text(&url, edge, "127.0.0.1:0", NEW_CURRENT),
        )
        .unwrap();
        let second = support::edge_process(&edge_config, &pid_file, &tmp, true).await;
        marks.push(("the new edge signs with k2", began.elapsed()));
        // The old edge still answers some requests for a while after the handover (Pingora's
        // 5 s, then `grace_period_secs`), signing them with k1: the old key may leave the apps
        // only once it is gone. (Removing it earlier was measured to give a burst of 401s.)
        support::wait_until("the old edge exits", Duration::from_secs(30), || {
            let gone = first.child.try_wait().unwrap().is_some();
            async move { gone.then_some(()) }
        })
        .await;
        marks.push(("the old edge exited", began.elapsed()));
        tokio::time::sleep(phase).await;
        // 3. k1 leaves every app.
        for a in &mut apps {
            restart(a, &url, edge, NEW_ONLY).await;
        }
        marks.push(("k1 removed from every app", began.elapsed()));
        tokio::time::sleep(phase).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (second, marks)
    };
    let (samples, (_second, marks)) = tokio::join!(load, rotate);
    let rejected: Vec<String> = samples
        .iter()
        .filter(|s| s.outcome != Ok(200))
        .map(|s| format!("{:?} {:?} at {:?}", s.outcome, s.code, s.at))
        .collect();
    println!(
        "signing key rotation: {marks:?}; {}; {} rejected",
        Summary::of(&samples),
        rejected.len()
    );
    assert!(samples.len() > 200, "the rotation ran under load");
    assert!(
        rejected.is_empty(),
        "rejected during the rotation: {rejected:?}"
    );

    // A header signed with the removed key, straight to an app as by someone holding the old
    // key: 401. The same request signed with the current key: 200.
    let epoch = catalog.tenant("acme").await.unwrap().unwrap().epoch;
    let key = |kid: &str, secret: &str| {
        let bytes = tenantgate_contract::crypto::decode_key(secret).unwrap();
        SigningKeys::new(kid, &[(kid.to_string(), bytes)]).unwrap()
    };
    for (keys, expected) in [(key("k1", K1), 401), (key("k2", K2), 200)] {
        let request_id = Uuid::now_v7().to_string();
        let claims = TenantClaims {
            tenant_id: tenant,
            slug: "acme",
            shard: "s1",
            epoch,
            request_id: &request_id,
            method: "GET",
            target: "/whoami",
        };
        let signature = keys.sign(&claims, tenantgate_contract::time::now_secs());
        let r = client
            .get(format!("http://{}/whoami", apps[0].addr))
            .header("x-tenant-id", tenant.to_string())
            .header("x-tenant-slug", "acme")
            .header("x-tenant-shard", "s1")
            .header("x-tenant-epoch", epoch.to_string())
            .header("x-request-id", &request_id)
            .header("x-tenant-signature", &signature)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), expected, "signed with {}", keys.current_kid());
    }
}
