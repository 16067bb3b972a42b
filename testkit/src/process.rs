//! The real `tenantgate` binary as a child process: the whole demo (`tenantgate dev`) or one
//! component (`tenantgate edge|admin|app`), each on ephemeral ports that it reports back, so
//! that tests never guess a free port.
//!
//! The binary's path is the test's to give: `env!("CARGO_BIN_EXE_tenantgate")` exists only in
//! the root package's integration tests.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a child gets to report that it listens.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `tenantgate dev --port-base 0`, killed on drop if still running.
pub struct DevProcess {
    /// The process.
    pub child: Child,
    /// Its stdout, line by line, after the banner.
    pub stdout: mpsc::Receiver<String>,
    /// The admin token the banner showed.
    pub admin_token: String,
    /// Where each component listens, as the banner printed it: `edge`, `admin`, `metrics`, and
    /// `app <shard>` for each app.
    pub addrs: BTreeMap<String, SocketAddr>,
}

impl DevProcess {
    /// Start `binary dev --data-dir DATA_DIR --port-base 0 EXTRA...` in the repository root and
    /// wait (up to 120 s) until it printed its banner; panics if the banner's addresses are not
    /// those it wrote to `DATA_DIR/tenantgate.toml`.
    pub fn start(binary: impl AsRef<Path>, data_dir: &Path, extra: &[&str]) -> DevProcess {
        let mut command = Command::new(binary.as_ref());
        command.current_dir(crate::repository_root());
        DevProcess::spawn(command, data_dir, extra, Stdio::inherit())
    }

    /// Like [`DevProcess::start`], with the child's stderr (its log) going to `stderr`, e.g. a
    /// file the test reads afterwards.
    pub fn start_with_stderr(
        binary: impl AsRef<Path>,
        data_dir: &Path,
        extra: &[&str],
        stderr: Stdio,
    ) -> DevProcess {
        let mut command = Command::new(binary.as_ref());
        command.current_dir(crate::repository_root());
        DevProcess::spawn(command, data_dir, extra, stderr)
    }

    /// Like [`DevProcess::start`], but in a network namespace of its own where only loopback
    /// exists, and with `dir` as its working directory (data in `dir/data`, relative SQLite
    /// paths under `dir`): for tests that let a fuzzer choose shard URLs and app upstreams, so
    /// that whatever hosts it names are never reached. Needs root (`unshare --net`); reach the
    /// process with [`DevProcess::in_netns`]. The admin API's rate limit is off
    /// (`TENANTGATE__ADMIN__RATE_LIMIT_RPS=0`).
    pub fn start_isolated(binary: impl AsRef<Path>, dir: &Path, extra: &[&str]) -> DevProcess {
        let mut command = Command::new("unshare");
        command
            .args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" \"$@\"",
            ])
            .arg(binary.as_ref())
            .current_dir(dir)
            // A fuzzer's thousands of requests would drown the test's output in request lines.
            .env("TENANTGATE_LOG", "error")
            // ... and run into the admin API's rate limit per client address: the fuzz is about
            // the document and the API agreeing, not about 429s.
            .env("TENANTGATE__ADMIN__RATE_LIMIT_RPS", "0");
        let migrations = crate::repository_root().join("tenant_migrations");
        let mut args = vec![
            "--tenant-migrations",
            migrations.to_str().expect("UTF-8 path"),
        ];
        args.extend_from_slice(extra);
        DevProcess::spawn(command, &dir.join("data"), &args, Stdio::inherit())
    }

    /// `program` to be run in this process's network namespace (see
    /// [`DevProcess::start_isolated`]).
    pub fn in_netns(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .args(["-t", &self.child.id().to_string(), "-n", "--"])
            .arg(program);
        command
    }

    fn spawn(mut command: Command, data_dir: &Path, extra: &[&str], stderr: Stdio) -> DevProcess {
        let mut child = command
            .args(["dev", "--data-dir"])
            .arg(data_dir)
            .args(["--port-base", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("start tenantgate dev");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let mut admin_token = None;
        let mut addrs = BTreeMap::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if line.starts_with("Try:") {
                        break;
                    }
                    let Some((label, value)) = banner_entry(&line) else {
                        continue;
                    };
                    if label == "admin token" {
                        admin_token = Some(value.to_string());
                    } else if let Some(addr) = banner_addr(value) {
                        let label = match label.as_str() {
                            "admin API" => "admin".to_string(),
                            "edge metrics" => "metrics".to_string(),
                            _ => label,
                        };
                        addrs.insert(label, addr);
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "tenantgate dev did not print its banner in time (status {:?})",
                        child.try_wait()
                    );
                }
            }
        }
        let dev = DevProcess {
            child,
            stdout: rx,
            admin_token: admin_token.expect("banner shows the admin token"),
            addrs,
        };
        dev.check_written_config(data_dir);
        dev
    }

    /// The banner's address of `component` (`edge`, `admin`, `metrics`, `app shard-a`, ...).
    pub fn addr(&self, component: &str) -> SocketAddr {
        *self
            .addrs
            .get(component)
            .unwrap_or_else(|| panic!("the banner lists no {component}: {:?}", self.addrs))
    }

    /// Base URL of the edge.
    pub fn edge(&self) -> String {
        format!("http://{}", self.addr("edge"))
    }

    /// Base URL of the admin API.
    pub fn admin(&self) -> String {
        format!("http://{}", self.addr("admin"))
    }

    /// Base URL of the edge's metrics listener.
    pub fn metrics(&self) -> String {
        format!("http://{}", self.addr("metrics"))
    }

    /// Base URL of the app serving `shard`.
    pub fn app(&self, shard: &str) -> String {
        format!("http://{}", self.addr(&format!("app {shard}")))
    }

    /// Send `signal` (e.g. "TERM") and wait up to `within` for the process to exit.
    pub fn stop(&mut self, signal: &str, within: Duration) -> ExitStatus {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tenantgate dev did not stop within {within:?} after SIG{signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `dev` writes the ports it bound to `DIR/tenantgate.toml`, for the other commands.
    fn check_written_config(&self, data_dir: &Path) {
        let path = data_dir.join("tenantgate.toml");
        let raw = tenantgate_config::RawConfig::load_with_env(&path, std::iter::empty())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let written = [
            ("edge", &raw.edge.listen),
            ("admin", &raw.admin.listen),
            ("metrics", &raw.edge.metrics_listen),
            ("app shard-a", &raw.app.listen),
        ];
        for (component, listen) in written {
            assert_eq!(
                listen.parse::<SocketAddr>().ok(),
                Some(self.addr(component)),
                "{component} in {}",
                path.display()
            );
        }
    }
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A banner line `  label  value` (label and value separated by two or more spaces).
fn banner_entry(line: &str) -> Option<(String, &str)> {
    let line = line.strip_prefix("  ")?.trim_end();
    let (label, value) = line.split_once("  ")?;
    Some((label.trim().to_string(), value.trim()))
}

/// The address of a banner URL `http://ip:port[/path]`.
fn banner_addr(value: &str) -> Option<SocketAddr> {
    let rest = value.strip_prefix("http://")?;
    rest.split('/').next()?.parse().ok()
}

/// A `tenantgate` component (`edge`, `admin` or `app`) in a child process with JSON logs,
/// killed on drop. It is started on whatever ports its configuration names (port 0 for
/// ephemeral ones) and found through the log line that reports the address it bound.
pub struct ComponentProcess {
    /// The process.
    pub child: Child,
    /// The fields of the log line that reported the bound address.
    pub fields: Value,
    /// The fields of every JSON log line so far (see [`ComponentProcess::wait_log`]).
    logged: Arc<Mutex<Vec<Value>>>,
}

impl ComponentProcess {
    /// Run `binary --log-format json ARGS...` and wait (up to 120 s) for its log line whose
    /// message is `message` (`edge running`, `admin API listening`, `app listening`). Its log
    /// goes on to the test's stderr.
    pub fn start<S: AsRef<OsStr>>(
        binary: impl AsRef<Path>,
        args: &[S],
        message: &str,
    ) -> ComponentProcess {
        ComponentProcess::start_with_env(binary, args, &[], message)
    }

    /// As [`ComponentProcess::start`], with extra environment variables for the child (for
    /// example the AWS credentials an S3 client reads).
    pub fn start_with_env<S: AsRef<OsStr>>(
        binary: impl AsRef<Path>,
        args: &[S],
        env: &[(&str, &str)],
        message: &str,
    ) -> ComponentProcess {
        let mut child = Command::new(binary.as_ref())
            .args(["--log-format", "json"])
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tenantgate");
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        let wanted = message.to_string();
        let logged = Arc::new(Mutex::new(Vec::new()));
        let log = logged.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                log.lock().unwrap().push(entry["fields"].clone());
                if entry["fields"]["message"] == wanted.as_str() {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(entry["fields"].clone());
                    }
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(fields) => ComponentProcess {
                child,
                fields,
                logged,
            },
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "tenantgate {:?} did not log {message:?} (status {:?})",
                    args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
                    child.try_wait()
                );
            }
        }
    }

    /// Wait (up to `within`) until the process has logged a line whose fields include every
    /// field of `fields` (e.g. `{"message": "job stalled", "step": "role"}`); returns its fields.
    pub async fn wait_log(&self, fields: &Value, within: Duration) -> Value {
        let wanted = fields.as_object().expect("fields are an object");
        crate::wait_until(&format!("log line {fields}"), within, || {
            let found = self.logged.lock().unwrap().iter().find_map(|line| {
                wanted
                    .iter()
                    .all(|(k, v)| &line[k] == v)
                    .then(|| line.clone())
            });
            async move { found }
        })
        .await
    }

    /// The address in field `name` of the reported line (`listen`, `metrics`).
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.fields[name]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address {name} in {}", self.fields))
    }
}

impl Drop for ComponentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `url` with a Host header.
pub async fn get_with_host(url: &str, host: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header("host", host)
        .send()
        .await
        .expect("request")
}
