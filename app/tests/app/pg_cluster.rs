//! Private PostgreSQL clusters for tests that need a real streaming replica: a primary and a
//! standby made with `pg_basebackup`, each on a free port under a temporary directory, stopped
//! and removed on drop. They run as the `postgres` OS user when the test runs as root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The newest installed PostgreSQL's `bin` directory.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect(
            "PostgreSQL server binaries under /usr/lib/postgresql (Debian's postgresql package)",
        )
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop().expect("an installed PostgreSQL with initdb")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Run a PostgreSQL program (as `postgres` when we are root: the server refuses root).
fn run(program: &str, args: &[&str]) {
    let path = bin_dir().join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A free port for a PostgreSQL server, bound then released. It stays a guess (another process
/// may take it first) because PostgreSQL is told its port (`port = N` in postgresql.conf) and
/// cannot pick one and report it the way tenantgate's listeners do with port 0.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn configure(dir: &Path, port: u16) {
    let conf = format!(
        "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
         fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\n\
         max_connections = 40\nwal_level = replica\nmax_wal_senders = 4\nhot_standby = on\n",
        dir.display()
    );
    let path = dir.join("postgresql.auto.conf");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&conf);
    std::fs::write(&path, text).unwrap();
}

/// A primary and one streaming standby, both accepting `postgres` without a password on
/// 127.0.0.1.
pub(crate) struct ReplicatedCluster {
    _root: tempfile::TempDir,
    primary_dir: PathBuf,
    standby_dir: PathBuf,
    pub(crate) primary_url: String,
    pub(crate) standby_url: String,
}

impl ReplicatedCluster {
    pub(crate) fn start() -> ReplicatedCluster {
        let root = tempfile::tempdir().unwrap();
        let (primary_dir, standby_dir) = (root.path().join("primary"), root.path().join("standby"));
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(root.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let primary = primary_dir.to_str().unwrap();
        run(
            "initdb",
            &[
                "-D",
                primary,
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
            ],
        );
        let primary_port = free_port();
        configure(&primary_dir, primary_port);
        let log = root.path().join("primary.log");
        run(
            "pg_ctl",
            &["-D", primary, "-l", log.to_str().unwrap(), "-w", "start"],
        );
        let standby = standby_dir.to_str().unwrap();
        let port_text = primary_port.to_string();
        run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port_text,
                "-U",
                "postgres",
                "-D",
                standby,
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        let standby_port = free_port();
        configure(&standby_dir, standby_port);
        let log = root.path().join("standby.log");
        run(
            "pg_ctl",
            &["-D", standby, "-l", log.to_str().unwrap(), "-w", "start"],
        );
        ReplicatedCluster {
            primary_url: format!("postgres://postgres@127.0.0.1:{primary_port}/postgres"),
            standby_url: format!("postgres://postgres@127.0.0.1:{standby_port}/postgres"),
            _root: root,
            primary_dir,
            standby_dir,
        }
    }
}

impl Drop for ReplicatedCluster {
    fn drop(&mut self) {
        for dir in [&self.standby_dir, &self.primary_dir] {
            let path = bin_dir().join("pg_ctl");
            let mut cmd = if is_root() {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(&path);
                c
            } else {
                Command::new(&path)
            };
            let _ = cmd
                .args(["-D", dir.to_str().unwrap(), "-m", "immediate", "stop"])
                .output();
        }
    }
}
