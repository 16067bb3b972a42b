//! A private `redis-server` for tests: its own port on 127.0.0.1 and its own temporary
//! directory, no persistence. Tests never use (or flush) a Redis they did not start.
//!
//! It can be killed and restarted on the same port, or paused with SIGSTOP: a paused server
//! keeps its connections open and answers nothing, as a peer behind a partition that drops
//! packets (no reset, so only the client's own timeouts notice).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running private Redis server; stopped when dropped.
pub struct RedisServer {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Start `redis-server` on a free port and wait until it answers PING.
    pub fn start() -> RedisServer {
        // A port the system chose, released for the server to take.
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let mut server = RedisServer {
            child: None,
            addr,
            dir: tempfile::tempdir().expect("temp dir"),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/ensure-deps.sh --test)");
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on {} did not answer PING",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when the server answers PING within 200 ms.
    pub fn answers(&self) -> bool {
        let ping = || -> std::io::Result<bool> {
            let timeout = Duration::from_millis(200);
            let mut stream = TcpStream::connect_timeout(&self.addr, timeout)?;
            stream.set_read_timeout(Some(timeout))?;
            stream.write_all(b"PING\r\n")?;
            let mut reply = [0u8; 7];
            stream.read_exact(&mut reply)?;
            Ok(&reply == b"+PONG\r\n")
        };
        ping().unwrap_or(false)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kill the server (SIGKILL): its connections are reset and its port refuses.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// SIGSTOP: connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let ok = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} {pid}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // A paused process still dies of SIGKILL; resuming first is not needed.
            self.kill();
        }
    }
}
