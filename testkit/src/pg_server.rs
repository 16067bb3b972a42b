//! Private PostgreSQL servers for tests that need "another server": a fresh data directory made
//! by `initdb`, started with `pg_ctl` on a free port of 127.0.0.1 with `wal_level = logical`
//! (so it can publish to logical replication subscribers, and stream to a standby), accepting
//! the `postgres` user without a password on 127.0.0.1 only. When the test runs as root, every
//! server program runs as the `postgres` OS user (the server refuses root).
//!
//! - [`PgServer::start`]: a server of the test's own, stopped and removed when dropped.
//! - [`PgServer::shared`]: one server for the whole test binary, started on first use. Statics
//!   are never dropped, so a watchdog process stops it and removes its directory once the test
//!   binary has exited (also when it was killed).
//! - [`PgServer::standby`]: a streaming standby of a server (`pg_basebackup -R`).
//!
//! A server left behind by a killed test binary with [`PgServer::start`] is stopped by the same
//! watchdog: every server gets one, which waits for the test process to go away.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The newest installed PostgreSQL's `bin` directory (Debian layout), or `pg_config --bindir`.
fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let e = e.ok()?;
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, p)| p.join("initdb").exists())
            .collect();
        versions.sort();
        if let Some((_, dir)) = versions.pop() {
            return dir;
        }
        let out = Command::new("pg_config").arg("--bindir").output();
        match out {
            Ok(o) if o.status.success() => {
                PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string())
            }
            _ => panic!(
                "PostgreSQL server binaries (initdb, pg_ctl) are not installed: run \
                 `scripts/ensure-deps.sh --test`"
            ),
        }
    })
    .clone()
}

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// A command running PostgreSQL's `program` (as `postgres` when we are root).
fn command(program: &str) -> Command {
    let path = bin_dir().join(program);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

/// Run PostgreSQL's `program`; its output on failure.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = command(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A free port, bound then released. It stays a guess (another process may take it first):
/// PostgreSQL is told its port and cannot report one it picked, so [`PgServer`] retries a start
/// that fails.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Settings for a throwaway server: fast and unsafe on crash (fsync off), logical WAL, room for
/// the replication slots and workers a few concurrent moves use.
fn configure(dir: &Path, port: u16) {
    let conf = format!(
        "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
         fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 32MB\n\
         max_connections = 100\nwal_level = logical\nmax_wal_senders = 20\n\
         max_replication_slots = 20\nmax_logical_replication_workers = 8\n\
         max_worker_processes = 16\nhot_standby = on\n",
        dir.display()
    );
    let path = dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&conf);
    std::fs::write(&path, text).expect("write postgresql.auto.conf");
}

/// A running private PostgreSQL server (see the module docs).
pub struct PgServer {
    root: PathBuf,
    data: PathBuf,
    port: u16,
    /// Removed on drop; false for the shared server (its watchdog removes it).
    owned: bool,
}

impl PgServer {
    /// Start a fresh server of this test's own (about a second: `initdb`, then `pg_ctl start`).
    pub fn start() -> PgServer {
        PgServer::init().launch()
    }

    /// Start a fresh server that accepts TCP connections over TLS only (`hostnossl` rejected),
    /// with a certificate for `127.0.0.1` and `localhost` issued by `ca`.
    pub fn start_tls(ca: &crate::tls::TestCa) -> PgServer {
        let server = PgServer::init();
        let leaf = ca.issue(&["127.0.0.1", "localhost"]);
        let (cert, key) = leaf.write(&server.data, "server");
        std::fs::OpenOptions::new()
            .append(true)
            .open(server.data.join("postgresql.auto.conf"))
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(
                    b"\nssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server.key'\n",
                )
            })
            .expect("enable ssl");
        std::fs::write(
            server.data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("write pg_hba.conf");
        // The server refuses a key others can read, and runs as `postgres` when we are root.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:")
                .args([&cert, &key, &server.data.join("pg_hba.conf")])
                .status()
                .expect("run chown");
            assert!(status.success(), "chown the server's TLS files");
        }
        server.launch()
    }

    /// A data directory made by `initdb`, not started yet.
    fn init() -> PgServer {
        let server = PgServer::prepare(true);
        run(
            "initdb",
            &[
                "-D",
                server.data_str(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        server
    }

    /// The test binary's shared server, started on first use. Tests sharing it must use names
    /// of their own (tenant databases are named for the tenant's uuid, so they do).
    pub fn shared() -> &'static PgServer {
        static SHARED: OnceLock<PgServer> = OnceLock::new();
        SHARED.get_or_init(|| {
            let mut server = PgServer::start();
            server.owned = false;
            server
        })
    }

    /// A streaming standby of `self` (`pg_basebackup -R`), a server of its own.
    pub fn standby(&self) -> PgServer {
        let server = PgServer::prepare(true);
        run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-D",
                server.data_str(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        server.launch()
    }

    /// The administrative URL of the server (database `postgres`, user `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A directory for a server, writable by the user the server runs as.
    fn prepare(owned: bool) -> PgServer {
        let root = tempfile::Builder::new()
            .prefix("tenantgate-pg-")
            .tempdir()
            .expect("temp dir")
            .keep();
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(&root)
                .status()
                .expect("run chown");
            assert!(status.success(), "chown postgres: {}", root.display());
        }
        PgServer {
            data: root.join("data"),
            root,
            port: 0,
            owned,
        }
    }

    fn data_str(&self) -> &str {
        self.data.to_str().expect("temp dir paths are UTF-8")
    }

    /// Configure a free port and start; a start that fails (the port was taken meanwhile) is
    /// retried on another port. Then the watchdog.
    fn launch(mut self) -> PgServer {
        let log = self.root.join("server.log");
        let mut last = String::new();
        for _ in 0..5 {
            self.port = free_port();
            configure(&self.data, self.port);
            match run(
                "pg_ctl",
                &[
                    "-D",
                    self.data_str(),
                    "-l",
                    log.to_str().expect("UTF-8 path"),
                    "-w",
                    "-t",
                    "30",
                    "start",
                ],
            ) {
                Ok(()) => {
                    self.watchdog();
                    return self;
                }
                Err(e) => {
                    last = format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default())
                }
            }
        }
        panic!("could not start a private PostgreSQL server: {last}");
    }

    /// A detached shell that waits for this test process to end, then stops the server and
    /// removes its directory: the shared server's clean-up, and every server's after a kill.
    fn watchdog(&self) {
        let pg_ctl = bin_dir().join("pg_ctl");
        let as_postgres = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        let script = format!(
            "while [ -d /proc/{pid} ]; do sleep 0.5; done; \
             [ -d '{data}' ] && {as_postgres}'{pg_ctl}' -D '{data}' -m immediate stop; \
             rm -rf '{root}'",
            pid = std::process::id(),
            data = self.data.display(),
            pg_ctl = pg_ctl.display(),
            root = self.root.display(),
        );
        let spawned = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Err(e) = spawned {
            eprintln!(
                "no watchdog for the PostgreSQL server in {}: {e}",
                self.root.display()
            );
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let _ = command("pg_ctl")
            .args(["-D", self.data_str(), "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
