//! Process lifecycle of a standalone edge (`run_standalone`): SIGTERM drains in-flight requests,
//! SIGQUIT hands the listening socket to a new process without failing a request.
//!
//! Signals need a process of their own: the test re-runs its own binary with only the ignored
//! `edge_child_process` entry selected, which runs `run_standalone` on the config file named in
//! `TENANTGATE_TEST_EDGE_CONFIG`. The first edge listens on port 0 and writes the addresses it
//! bound to the file named in `TENANTGATE_TEST_EDGE_REPORT`; the new process of an upgrade is
//! configured with those.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenantgate_config::Config;
use tenantgate_edge::EdgeAddrs;
use tenantgate_testkit::edge::{Harness, TestBackend};
use tenantgate_testkit::{wait_until, TestCatalog};

const CONFIG_ENV: &str = "TENANTGATE_TEST_EDGE_CONFIG";
const UPGRADE_ENV: &str = "TENANTGATE_TEST_EDGE_UPGRADE";
const REPORT_ENV: &str = "TENANTGATE_TEST_EDGE_REPORT";

/// Child-process entry, not a test of its own: runs the edge in the foreground.
#[test]
#[ignore = "entry point of the edge child process used by the lifecycle tests"]
fn edge_child_process() {
    let Ok(path) = std::env::var(CONFIG_ENV) else {
        return;
    };
    let config = Config::load(Path::new(&path)).expect("child config");
    let upgrade = std::env::var(UPGRADE_ENV).is_ok_and(|v| v == "1");
    let report = PathBuf::from(std::env::var(REPORT_ENV).expect("report file"));
    let launch = tenantgate_edge::Launch {
        upgrade,
        pid_file: None,
    };
    tenantgate_edge::run_standalone(Arc::new(config), launch, |addrs| {
        // Written whole, then renamed: the test never reads half a report.
        let partial = report.with_extension("partial");
        std::fs::write(&partial, format!("{} {}", addrs.proxy, addrs.metrics)).unwrap();
        std::fs::rename(&partial, &report).unwrap();
    })
    .expect("edge runs");
}

/// An edge process, killed if the test ends (or panics) before it exited.
struct EdgeProcess {
    child: Child,
    /// Where the process writes the addresses it bound once it listens.
    report: PathBuf,
}

impl EdgeProcess {
    /// The addresses the edge bound, once it reports them.
    async fn addrs(&self) -> EdgeAddrs {
        wait_until(
            "edge reports its addresses",
            Duration::from_secs(15),
            || {
                let text = std::fs::read_to_string(&self.report).ok();
                async move {
                    let (proxy, metrics) = text?.split_once(' ').map(|(p, m)| {
                        (p.parse::<SocketAddr>().ok(), m.parse::<SocketAddr>().ok())
                    })?;
                    Some(EdgeAddrs {
                        proxy: proxy?,
                        metrics: metrics?,
                        tls: None,
                    })
                }
            },
        )
        .await
    }
}

impl Drop for EdgeProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Start an edge process on `config`; it reports its addresses to `report`.
fn spawn_edge(config: &Path, upgrade: bool, report: PathBuf) -> EdgeProcess {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "edge_child_process", "--nocapture"])
        .env(CONFIG_ENV, config)
        .env(UPGRADE_ENV, if upgrade { "1" } else { "0" })
        .env(REPORT_ENV, &report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn edge process");
    EdgeProcess { child, report }
}

fn signal(child: &EdgeProcess, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig}");
}

async fn wait_exit(child: &mut EdgeProcess, within: Duration) -> Duration {
    let began = Instant::now();
    wait_until("edge process exit", within, || {
        let done = child.child.try_wait().unwrap().is_some();
        async move { done.then_some(()) }
    })
    .await;
    began.elapsed()
}

/// A harness whose edge runs as a child process; returns it with its config file (port 0).
async fn harness(extra_edge: &str) -> (Harness, tempfile::TempDir, PathBuf, TestBackend) {
    let h = Harness::new(TestCatalog::sqlite(), extra_edge, "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    h.add_active_tenant("acme", "shard-a", &["acme.test"]).await;
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
    let (mut h, dir, path, backend) = harness("grace_period_secs = 3").await;
    let mut child = spawn_edge(&path, false, dir.path().join("edge.addrs"));
    let addrs = child.addrs().await;
    (h.edge, h.metrics) = (addrs.proxy, addrs.metrics);
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
    let (mut h, dir, path, _backend) = harness("grace_period_secs = 1").await;
    let mut old = spawn_edge(&path, false, dir.path().join("old.addrs"));
    let addrs = old.addrs().await;
    (h.edge, h.metrics) = (addrs.proxy, addrs.metrics);
    let (sock, _) = tenantgate_edge::upgrade_paths(h.edge);
    let _ = std::fs::remove_file(&sock);
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

    // The new process, on the old one's addresses, waits on the upgrade socket; SIGQUIT makes
    // the old one hand over.
    let new_path = dir.path().join("new-edge.toml");
    std::fs::write(&new_path, h.config_text_for(addrs)).unwrap();
    let mut new = spawn_edge(&new_path, true, dir.path().join("new.addrs"));
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
        new.child.try_wait().unwrap().is_none(),
        "the new edge is running"
    );
    assert_eq!(
        new.addrs().await,
        addrs,
        "the new edge took over the same addresses"
    );
    signal(&new, "TERM");
    wait_exit(&mut new, Duration::from_secs(10)).await;
    let _ = std::fs::remove_file(&sock);
}
