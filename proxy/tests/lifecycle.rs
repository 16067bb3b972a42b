//! Process lifecycle of a standalone edge (`run_standalone`): SIGTERM drains in-flight requests,
//! SIGQUIT hands the listening socket to a new process without failing a request.
//!
//! Signals need a process of their own: the test re-runs its own binary with only the ignored
//! `edge_child_process` entry selected, which runs `run_standalone` on the config file named in
//! `TENANTGATE_TEST_EDGE_CONFIG`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::Harness;
use tenantgate_catalog::testing::{wait_until, TestCatalog};
use tenantgate_config::Config;
use tenantgate_contract::TenantStatus;

const CONFIG_ENV: &str = "TENANTGATE_TEST_EDGE_CONFIG";
const UPGRADE_ENV: &str = "TENANTGATE_TEST_EDGE_UPGRADE";

/// Child-process entry, not a test of its own: runs the edge in the foreground.
#[test]
#[ignore = "entry point of the edge child process used by the lifecycle tests"]
fn edge_child_process() {
    let Ok(path) = std::env::var(CONFIG_ENV) else {
        return;
    };
    let config = Config::load(Path::new(&path)).expect("child config");
    let upgrade = std::env::var(UPGRADE_ENV).is_ok_and(|v| v == "1");
    tenantgate_proxy::run_standalone(Arc::new(config), upgrade, |_| {}).expect("edge runs");
}

/// An edge process, killed if the test ends (or panics) before it exited.
struct EdgeProcess(Child);

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn spawn_edge(config: &Path, upgrade: bool) -> EdgeProcess {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "edge_child_process", "--nocapture"])
        .env(CONFIG_ENV, config)
        .env(UPGRADE_ENV, if upgrade { "1" } else { "0" })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn edge process");
    EdgeProcess(child)
}

fn signal(child: &EdgeProcess, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
}

async fn wait_exit(child: &mut EdgeProcess, within: Duration) -> Duration {
    let began = Instant::now();
    wait_until("edge process exit", within, || {
        let done = child.0.try_wait().unwrap().is_some();
        async move { done.then_some(()) }
    })
    .await;
    began.elapsed()
}

/// A harness whose edge runs as a child process; returns it with its config file.
async fn harness(
    extra_edge: &str,
) -> (
    Harness,
    tempfile::TempDir,
    std::path::PathBuf,
    common::TestBackend,
) {
    let h = Harness::new(TestCatalog::sqlite(), extra_edge, "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    h.add_tenant(
        "acme",
        "shard-a",
        &["acme.test"],
        TenantStatus::Active,
        None,
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, &h.config_text).unwrap();
    (h, dir, path, backend)
}

async fn wait_serving(h: &Harness) {
    wait_until("edge serving", Duration::from_secs(15), || async {
        let r = h
            .client
            .get(h.url("/"))
            .header("host", "acme.test")
            .send()
            .await
            .ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests() {
    let (h, _dir, path, backend) = harness("grace_period_secs = 3").await;
    let mut child = spawn_edge(&path, false);
    wait_serving(&h).await;

    let h = Arc::new(h);
    let slow = {
        let h = h.clone();
        tokio::spawn(async move { h.get("acme.test", "/slow", &[]).await })
    };
    wait_until("slow request in flight", Duration::from_secs(5), || async {
        backend
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.contains("/slow"))
            .then_some(())
    })
    .await;
    signal(&child, "TERM");
    let r = slow.await.unwrap();
    assert_eq!(r.status, 200, "in-flight request must finish: {:?}", r.body);
    let took = wait_exit(&mut child, Duration::from_secs(10)).await;
    assert!(took < Duration::from_secs(8), "exit took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_fails_no_request() {
    let (h, _dir, path, _backend) = harness("grace_period_secs = 1").await;
    let (sock, _) = tenantgate_proxy::upgrade_paths(h.edge);
    let _ = std::fs::remove_file(&sock);
    let mut old = spawn_edge(&path, false);
    wait_serving(&h).await;

    // Steady load, a new connection per request, counting every failure.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Plus keep-alive clients that never retry: the draining edge closes their connections
    // after a response, so they reconnect instead of losing a request.
    let keep_alive = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = tokio::task::JoinSet::new();
    for i in 0..4 {
        let fresh = i % 2 == 0;
        let client = if fresh {
            client.clone()
        } else {
            keep_alive.clone()
        };
        let (url, stop, ok, failed) = (h.url("/"), stop.clone(), ok.clone(), failed.clone());
        load.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut req = client.get(&url).header("host", "acme.test");
                if fresh {
                    req = req.header("connection", "close");
                }
                match req.send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    wait_until("load running", Duration::from_secs(5), || async {
        (ok.load(Ordering::Relaxed) > 20).then_some(())
    })
    .await;

    // The new process waits on the upgrade socket; SIGQUIT makes the old one hand over.
    let mut new = spawn_edge(&path, true);
    wait_until(
        "new edge waiting for the socket",
        Duration::from_secs(15),
        || {
            let exists = sock.exists();
            async move { exists.then_some(()) }
        },
    )
    .await;
    signal(&old, "QUIT");
    wait_exit(&mut old, Duration::from_secs(20)).await;
    let after_handover = ok.load(Ordering::Relaxed);
    wait_until(
        "load served by the new process",
        Duration::from_secs(10),
        || async { (ok.load(Ordering::Relaxed) > after_handover + 20).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "{} ok",
        ok.load(Ordering::Relaxed)
    );

    assert!(
        new.0.try_wait().unwrap().is_none(),
        "the new edge is running"
    );
    signal(&new, "TERM");
    wait_exit(&mut new, Duration::from_secs(10)).await;
    let _ = std::fs::remove_file(&sock);
}
