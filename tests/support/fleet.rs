//! A fleet of real `tenantgate` processes on one PostgreSQL catalog (SQLite tenant files), and
//! HAProxy in TCP mode in front of its edges: shared by the scale-out and fleet-limit tests.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tenantgate_config::RawConfig;
use tenantgate_testkit::PgTestDb;

use super::ComponentProcess;

pub(crate) const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY";
pub(crate) const TOKEN: &str = "scale-out-admin-token";

/// A fleet's shared configuration (PostgreSQL catalog, SQLite tenant files) in one file; every
/// process listens on port 0.
pub(crate) struct Fleet {
    _db: PgTestDb,
    pub(crate) catalog_url: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    pub(crate) client: reqwest::Client,
}

impl Fleet {
    pub(crate) async fn new(tweak: impl FnOnce(&mut RawConfig)) -> Fleet {
        let db = PgTestDb::create().await;
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawConfig::default();
        raw.catalog.url = db.url.clone();
        // Notifications carry changes; polling is only the safety net.
        raw.catalog.poll_interval_ms = 2000;
        raw.admin.listen = "127.0.0.1:0".into();
        raw.admin.bootstrap_token = Some(TOKEN.into());
        raw.edge.listen = "127.0.0.1:0".into();
        raw.edge.metrics_listen = "127.0.0.1:0".into();
        raw.edge.default_rps = 100_000;
        raw.edge.default_burst = 100_000;
        raw.edge.health_interval_ms = 200;
        raw.security.signing_keys.insert("k".into(), KEY.into());
        raw.security.credential_key = Some(KEY.into());
        raw.tenant_migrations.dir = tenantgate_testkit::tenant_migrations_dir();
        tweak(&mut raw);
        let config = dir.path().join("fleet.toml");
        std::fs::write(&config, raw.to_toml()).unwrap();
        Fleet {
            catalog_url: db.url.clone(),
            _db: db,
            dir,
            config,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
        }
    }

    pub(crate) fn start(&self, component: &str, message: &str) -> ComponentProcess {
        self.start_with_env(component, message, &[])
    }

    /// As [`Fleet::start`], with extra environment variables (e.g. `TENANTGATE_LOG`).
    pub(crate) fn start_with_env(
        &self,
        component: &str,
        message: &str,
        env: &[(&str, &str)],
    ) -> ComponentProcess {
        let args = [
            OsStr::new(component),
            OsStr::new("--config"),
            self.config.as_os_str(),
        ];
        ComponentProcess::start_with_env(super::binary(), &args, env, message)
    }

    pub(crate) async fn admin(&self) -> (ComponentProcess, String) {
        let process = self.start("admin", "admin API listening");
        let base = format!("http://{}", process.addr("listen"));
        super::wait_until("admin ready", Duration::from_secs(30), || async {
            let r = self
                .client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        (process, base)
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        body: Option<Value>,
    ) -> Value {
        let mut req = self.client.request(method, &url).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{url}: {status} {body}");
        body
    }

    pub(crate) fn shard_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("shards").display())
    }

    /// Provisioning jobs the admin at `base` completed, from its `tenantgate_jobs_total`.
    pub(crate) async fn provisioned_by(&self, base: &str) -> f64 {
        let text = self
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| {
                l.starts_with("tenantgate_jobs_total{")
                    && l.contains("kind=\"provision_tenant\"")
                    && l.contains("result=\"succeeded\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// HAProxy in TCP mode spreading connections over `edges` round-robin, on `port`.
pub(crate) struct LoadBalancer {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl LoadBalancer {
    pub(crate) fn start(dir: &Path, edges: &[SocketAddr]) -> LoadBalancer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let servers: String = edges
            .iter()
            .enumerate()
            .map(|(i, a)| format!("    server e{i} {a}\n"))
            .collect();
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    \
                 timeout server 30s\nfrontend fleet\n    bind 127.0.0.1:{port}\n    \
                 default_backend edges\nbackend edges\n    balance roundrobin\n{servers}"
            ),
        )
        .unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .spawn()
            .expect("haproxy is installed (scripts/ensure-deps.sh --test)");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "haproxy listens"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        LoadBalancer { child, addr }
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status an edge answers for `host` at `/`.
pub(crate) async fn status(client: &reqwest::Client, edge: SocketAddr, host: &str) -> u16 {
    client
        .get(format!("http://{edge}/"))
        .header("host", host)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// How long after `since` each edge first answered `host` with `want` (two requests in a row
/// for a rate limit: the second is the one that must get `want`).
pub(crate) async fn converged(
    client: &reqwest::Client,
    edges: &[SocketAddr],
    host: &str,
    want: u16,
    since: Instant,
) -> Vec<Duration> {
    let waits = edges.iter().map(|&edge| async move {
        loop {
            let mut got = status(client, edge, host).await;
            if want == 429 && got != 429 {
                got = status(client, edge, host).await;
            }
            if got == want {
                return since.elapsed();
            }
            assert!(
                since.elapsed() < Duration::from_secs(10),
                "edge {edge} still answers {got} for {host}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    futures::future::join_all(waits).await
}

/// The value of the unlabelled metric `name` on an edge's metrics listener (`None` when absent).
pub(crate) async fn metric(
    client: &reqwest::Client,
    metrics: SocketAddr,
    name: &str,
) -> Option<f64> {
    let text = client
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
