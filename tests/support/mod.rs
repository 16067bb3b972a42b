//! Helpers for end-to-end tests that run the real `tenantgate` binary.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tenantgate")
}

/// A port base N such that N..=N+11 are free right now.
pub(crate) fn free_port_base() -> u16 {
    for _ in 0..200 {
        let base = 20_000 + (rand_u16() % 40_000);
        let free = [0u16, 1, 2, 10, 11]
            .iter()
            .all(|off| TcpListener::bind(("127.0.0.1", base + off)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free port range found");
}

fn rand_u16() -> u16 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    (nanos ^ std::process::id().rotate_left(7)) as u16
}

/// A running `tenantgate dev`, killed on drop if still running.
pub(crate) struct DevProcess {
    pub(crate) child: Child,
    pub(crate) port_base: u16,
    pub(crate) stdout: mpsc::Receiver<String>,
    pub(crate) admin_token: String,
}

impl DevProcess {
    /// Start `tenantgate dev` and wait (up to 120 s) until it prints its banner.
    pub(crate) fn start(data_dir: &Path, port_base: u16, extra: &[&str]) -> DevProcess {
        let mut child = Command::new(binary())
            .args(["dev", "--data-dir"])
            .arg(data_dir)
            .args(["--port-base", &port_base.to_string()])
            .args(extra)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut admin_token = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(t) = line.trim().strip_prefix("admin token") {
                        admin_token = Some(t.trim().to_string());
                    }
                    if line.starts_with("Try:") {
                        break;
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
        DevProcess {
            child,
            port_base,
            stdout: rx,
            admin_token: admin_token.expect("banner shows the admin token"),
        }
    }

    pub(crate) fn edge(&self) -> String {
        format!("http://127.0.0.1:{}", self.port_base)
    }

    pub(crate) fn admin(&self) -> String {
        format!("http://127.0.0.1:{}", self.port_base + 1)
    }

    pub(crate) fn metrics(&self) -> String {
        format!("http://127.0.0.1:{}", self.port_base + 2)
    }

    /// Send `signal` (e.g. "TERM") and wait up to `within` for the process to exit.
    pub(crate) fn stop(&mut self, signal: &str, within: Duration) -> std::process::ExitStatus {
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
}

impl Drop for DevProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `url` with a Host header.
pub(crate) async fn get_with_host(url: &str, host: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header("host", host)
        .send()
        .await
        .expect("request")
}

/// An HTTP/1.1 server on 127.0.0.1:0 that answers every request with 200 `ok` (keep-alive),
/// standing in for an app backend where only the edge is under test. Runs until the process ends.
pub(crate) fn ok_upstream() -> std::net::SocketAddr {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Answer each complete request head; requests here have no body.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[allow(unused_imports)] // not every test binary polls
pub(crate) use tenantgate_testkit::wait_until;
