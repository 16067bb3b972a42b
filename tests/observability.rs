//! Observability end to end: a real Prometheus scrapes a running `tenantgate dev`; every query of
//! the Grafana dashboard must return data and every alert rule must evaluate without error.
//! Needs the `prometheus` and `promtool` binaries (Debian package `prometheus`; `.ci/run` and
//! `scripts/test` install it).

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::{binary, get_with_host, wait_until, DevProcess, RefusedAddr};

/// A Prometheus server and the address it listens on.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{tool} is not installed: `apt-get install prometheus` (scripts/test does it when run as root)"
    );
}

/// Prometheus scraping `dev`, on a port it picks and logs (`msg="Listening on" address=...`).
fn start_prometheus(dir: &std::path::Path, dev: &DevProcess) -> Prometheus {
    let root = env!("CARGO_MANIFEST_DIR");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {root}/config/prometheus/alerts.yml\n\
         scrape_configs:\n\
         \x20 - job_name: tenantgate-edge\n    static_configs:\n      - targets: ['{}']\n\
         \x20 - job_name: tenantgate-admin\n    static_configs:\n      - targets: ['{}']\n\
         \x20 - job_name: tenantgate-app\n    static_configs:\n      - targets: ['{}', '{}']\n",
        dev.addr("metrics"),
        dev.addr("admin"),
        dev.addr("app shard-a"),
        dev.addr("app shard-b")
    );
    let path = dir.join("prometheus.yml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new("prometheus")
        .arg(format!("--config.file={}", path.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg("--web.listen-address=127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start prometheus");
    let (tx, rx) = std::sync::mpsc::channel();
    let log = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        // Reads the log to its end, so that Prometheus never blocks on a full pipe.
        for line in BufReader::new(log).lines().map_while(Result::ok) {
            if let Some((_, rest)) = line.split_once(r#"msg="Listening on" address="#) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("prometheus logs its address");
    Prometheus {
        child,
        addr: addr.parse().expect("prometheus address"),
    }
}

async fn query(client: &reqwest::Client, prom: &str, expr: &str) -> Value {
    client
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", expr)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Every PromQL expression of the dashboard, with `$tenant` set.
fn dashboard_queries(tenant: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/grafana/tenantgate.json"
    ))
    .unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().replace("$tenant", tenant);
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    assert!(out.len() >= 15, "dashboard lost its panels");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_queries_and_alert_rules_work_on_scraped_data() {
    require("prometheus");
    require("promtool");
    let dir = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(binary(), &dir.path().join("data"), &[]);
    let client = reqwest::Client::new();
    let admin = |path: &str| format!("{}{path}", dev.admin());

    // Every component's /metrics passes promtool's lint.
    for url in [
        format!("{}/metrics", dev.metrics()),
        admin("/metrics"),
        format!("{}/metrics", dev.app("shard-a")),
    ] {
        let text = client.get(&url).send().await.unwrap().text().await.unwrap();
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics {url}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Traffic for every panel: requests to both shards, an unknown host, a rate-limited
    // tenant, a provisioning job that fails, and a backup.
    let patch = client
        .patch(admin("/v1/tenants/globex"))
        .bearer_auth(&dev.admin_token)
        .json(&json!({"rate_limit": {"rps": 1, "burst": 1}}))
        .send()
        .await
        .unwrap();
    assert!(
        patch.status().is_success(),
        "{}",
        patch.text().await.unwrap()
    );
    let down = RefusedAddr::new();
    let shard = client
        .post(admin("/v1/shards"))
        .bearer_auth(&dev.admin_token)
        .json(
            &json!({"name": "broken", "app_upstreams": [down.addr().to_string()],
                      "database_url": "sqlite:///proc/tenantgate-cannot-write-here"}),
        )
        .send()
        .await
        .unwrap();
    assert!(
        shard.status().is_success(),
        "{}",
        shard.text().await.unwrap()
    );
    let tenant = client
        .post(admin("/v1/tenants"))
        .bearer_auth(&dev.admin_token)
        .json(&json!({"slug": "doomed", "name": "Doomed", "domains": ["doomed.localhost"], "shard": "broken"}))
        .send()
        .await
        .unwrap();
    assert_eq!(tenant.status(), 202, "{}", tenant.text().await.unwrap());
    // A completed backup, for the backup panels.
    let backup = client
        .post(admin("/v1/tenants/acme/backups"))
        .bearer_auth(&dev.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(backup.status(), 202, "{}", backup.text().await.unwrap());

    let prometheus = start_prometheus(dir.path(), &dev);
    let prom = format!("http://{}", prometheus.addr);

    let edge = format!("{}/whoami", dev.edge());
    let traffic = async {
        for _ in 0..8 {
            for host in ["acme.localhost", "globex.localhost", "nobody.localhost"] {
                for _ in 0..5 {
                    get_with_host(&edge, host).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    traffic.await;

    // The drill-down looks at globex, the tenant that was rate-limited.
    let queries = dashboard_queries("globex");
    wait_until(
        "every dashboard query to return data",
        Duration::from_secs(60),
        || {
            let (client, prom, queries) = (&client, &prom, &queries);
            async move {
                for (title, expr) in queries {
                    let r = query(client, prom, expr).await;
                    if r["status"] != "success" {
                        panic!("dashboard query of {title:?} fails: {expr}: {r}");
                    }
                    if r["data"]["result"].as_array().is_none_or(|a| a.is_empty()) {
                        eprintln!("still no data for {title:?}: {expr}");
                        return None;
                    }
                }
                Some(())
            }
        },
    )
    .await;

    let rules: Value = client
        .get(format!("{prom}/api/v1/rules"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let groups = rules["data"]["groups"].as_array().unwrap();
    let all: Vec<&Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    // Every rule of the file loaded (counted from the file, so a new rule needs no edit here).
    let file = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/prometheus/alerts.yml"
    ))
    .unwrap();
    let in_file = file
        .lines()
        .filter(|l| l.trim_start().starts_with("- alert:"))
        .count();
    assert!(in_file >= 8, "alerts.yml lost rules: {in_file}");
    assert_eq!(all.len(), in_file, "{rules}");
    for rule in all {
        assert_eq!(
            rule["health"], "ok",
            "rule {} does not evaluate: {}",
            rule["name"], rule["lastError"]
        );
        assert!(
            rule["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001")),
            "rule {} never evaluated",
            rule["name"]
        );
    }
}
