//! The database side of backups: dumping a tenant database into the store and restoring one
//! from it, for PostgreSQL (`pg_dump`/`pg_restore` as the tenant's own login) and SQLite
//! (`VACUUM INTO` a snapshot file; a restore writes a new file).
//!
//! The tenant's password reaches `pg_dump` and `pg_restore` through a temporary passfile (mode
//! 0600, removed when the tool exits), never through their arguments or the environment
//! (`PGPASSWORD` is visible to other processes of the same user in `/proc`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tenantgate_catalog::db::PoolOptions;
use tenantgate_catalog::tenant_db::{self, Credentials};
use tokio::io::AsyncReadExt;
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio_util::io::SyncIoBridge;

use super::store::Store;
use super::stream::{self, Digest256};
use super::BackupError;

/// Bytes of a tool's stderr kept for its error message.
const STDERR_TAIL: usize = 2000;

/// A tenant database on a PostgreSQL server, as the tenant's own login sees it.
pub(crate) struct PgTarget {
    /// libpq connection URI without the password.
    uri: String,
    /// sqlx URL with the password, for our own connections (never logged).
    sqlx_url: String,
    password: String,
}

impl PgTarget {
    /// Database `database` on the server of `shard_url`, as `login`.
    pub(crate) fn new(
        shard_url: &str,
        database: &str,
        login: &Credentials,
    ) -> Result<PgTarget, BackupError> {
        let sqlx_url = tenant_db::postgres_url(shard_url, database, Some(login))?;
        let mut uri = url::Url::parse(&sqlx_url)
            .map_err(|e| BackupError::Invalid(format!("shard URL: {e}")))?;
        let _ = uri.set_password(None);
        Ok(PgTarget {
            uri: uri.to_string(),
            sqlx_url,
            password: login.password.clone(),
        })
    }

    /// The sqlx URL (with the password) for our own connections. Never log it.
    pub(crate) fn url(&self) -> &str {
        &self.sqlx_url
    }

    /// A passfile holding the password for any host, database and user (the URI names them).
    fn passfile(&self) -> Result<tempfile::TempPath, BackupError> {
        // libpq's passfile escapes ':' and '\' with a backslash.
        let escaped = self.password.replace('\\', "\\\\").replace(':', "\\:");
        // tempfile creates the file with mode 0600, which libpq requires.
        let mut file = tempfile::Builder::new()
            .prefix("tenantgate-pgpass-")
            .tempfile()?;
        writeln!(file, "*:*:*:*:{escaped}")?;
        file.flush()?;
        Ok(file.into_temp_path())
    }
}

/// A running `pg_dump` or `pg_restore`. Its exit status arrives on `exit` once it has exited
/// and its stderr is read; the passfile lives until then.
struct Tool {
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    exit: oneshot::Receiver<Result<(), String>>,
    name: &'static str,
}

impl Tool {
    fn spawn(
        name: &'static str,
        args: &[&str],
        target: &PgTarget,
        input: bool,
        output: bool,
    ) -> Result<Tool, BackupError> {
        let passfile = target.passfile()?;
        let mut child = Command::new(name)
            .args(args)
            .arg(format!("--dbname={}", target.uri))
            .env("PGPASSFILE", &passfile)
            .env_remove("PGPASSWORD")
            .stdin(if input { Stdio::piped() } else { Stdio::null() })
            .stdout(if output {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BackupError::Tool {
                tool: name,
                status: "not started".into(),
                stderr: e.to_string(),
            })?;
        let (stdin, stdout, mut stderr) = (
            child.stdin.take(),
            child.stdout.take(),
            child.stderr.take().expect("stderr piped"),
        );
        let (tx, exit) = oneshot::channel();
        tokio::spawn(async move {
            let mut said = Vec::new();
            let (_, status) = tokio::join!(stderr.read_to_end(&mut said), child.wait());
            drop(passfile);
            let result = match status {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("{s}: {}", tail(&said))),
                Err(e) => Err(format!("waiting for it: {e}")),
            };
            let _ = tx.send(result);
        });
        Ok(Tool {
            stdin,
            stdout,
            exit,
            name,
        })
    }

    /// Wait for the tool to exit; its failure (with the tail of its stderr) is an error.
    async fn finish(self) -> Result<(), BackupError> {
        let result = self.exit.await.unwrap_or_else(|_| Err("lost".into()));
        result.map_err(|said| {
            let (status, stderr) = said.split_once(": ").unwrap_or((&said, ""));
            BackupError::Tool {
                tool: self.name,
                status: status.to_string(),
                stderr: stderr.to_string(),
            }
        })
    }
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    let start = text.len().saturating_sub(STDERR_TAIL);
    let start = (start..=text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(text.len());
    text[start..].replace('\n', " | ")
}

/// Reads a tool's stdout; at its end, waits for the tool and turns a failed exit into a read
/// error, so a dump that died half-way never reads as a complete (short) one.
struct ToolOutput {
    out: SyncIoBridge<ChildStdout>,
    exit: Option<oneshot::Receiver<Result<(), String>>>,
    name: &'static str,
}

impl std::io::Read for ToolOutput {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(exit) = self.exit.take() {
                let result = exit.blocking_recv().unwrap_or_else(|_| Err("lost".into()));
                if let Err(said) = result {
                    return Err(std::io::Error::other(format!(
                        "{} failed ({said})",
                        self.name
                    )));
                }
            }
        }
        Ok(n)
    }
}

/// The schema version of the tenant database at `url` (which must exist; 0 when unmigrated).
async fn schema_version_at(url: &str) -> Result<i64, BackupError> {
    let mut options = PoolOptions::new(1);
    options.create = false;
    let pool = tenantgate_catalog::db::connect_with(url, options).await?;
    let version = tenant_db::schema_version(&pool).await;
    pool.close().await;
    Ok(version?)
}

/// Back up a PostgreSQL tenant database: `pg_dump --format=custom` as the tenant's login,
/// streamed through [`stream::encrypt_upload`] to `key`. Returns the object's digest and the
/// database's schema version (read just before the dump).
pub(crate) async fn backup_postgres(
    store: &Store,
    key: &str,
    recipient: age::x25519::Recipient,
    target: &PgTarget,
) -> Result<(Digest256, i64), BackupError> {
    let version = schema_version_at(&target.sqlx_url).await?;
    let mut tool = Tool::spawn("pg_dump", &["--format=custom"], target, false, true)?;
    let output = ToolOutput {
        out: SyncIoBridge::new(tool.stdout.take().expect("stdout piped")),
        exit: Some(tool.exit),
        name: "pg_dump",
    };
    let digest = stream::encrypt_upload(store, key, recipient, output).await?;
    Ok((digest, version))
}

/// Back up a SQLite tenant file: `VACUUM INTO` a snapshot next to it (a consistent copy while
/// the tenant keeps writing), streamed through [`stream::encrypt_upload`] to `key`, then
/// removed. Returns the object's digest and the snapshot's schema version.
pub(crate) async fn backup_sqlite(
    store: &Store,
    key: &str,
    recipient: age::x25519::Recipient,
    file: &Path,
) -> Result<(Digest256, i64), BackupError> {
    let dir = file.parent().unwrap_or(Path::new("."));
    // Next to the tenant's file, not in /tmp (often a RAM disk): the snapshot is as large as
    // the database.
    let scratch = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(dir)?;
    let snapshot = scratch.path().join("snapshot.db");
    let mut options = PoolOptions::new(1);
    options.create = false;
    let pool =
        tenantgate_catalog::db::connect_with(&format!("sqlite://{}", file.display()), options)
            .await?;
    let target = snapshot.display().to_string().replace('\'', "''");
    let copied = sqlx::query(&format!("VACUUM INTO '{target}'"))
        .execute(&pool)
        .await;
    pool.close().await;
    copied?;
    let version = schema_version_at(&format!("sqlite://{}", snapshot.display())).await?;
    let source = std::fs::File::open(&snapshot)?;
    let digest = stream::encrypt_upload(store, key, recipient, source).await?;
    drop(scratch);
    Ok((digest, version))
}

/// Restore the backup at `key` (which must be `expected`) into the existing, empty PostgreSQL
/// database of `target`: the object is decrypted straight into `pg_restore --single-transaction`
/// as the tenant's login, so a failure leaves nothing behind in the database.
pub(crate) async fn restore_postgres(
    store: &Store,
    key: &str,
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    expected: &Digest256,
    target: &PgTarget,
) -> Result<(), BackupError> {
    let mut tool = Tool::spawn(
        "pg_restore",
        &[
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--single-transaction",
        ],
        target,
        true,
        false,
    )?;
    let input = SyncIoBridge::new(tool.stdin.take().expect("stdin piped"));
    match stream::decrypt_into(store, key, identities, input, expected).await {
        // Closing its input (dropping the bridge) lets pg_restore commit.
        Ok(input) => {
            drop(input);
            tool.finish().await
        }
        // The input was closed early (or, on a digest mismatch, complete but unwanted: the
        // caller then drops the database). A broken pipe means pg_restore failed first, and
        // its own message says why; a bad object is ours to report.
        Err(e) => match tool.finish().await {
            Err(tool_error) if !e.is_permanent() => Err(tool_error),
            _ => Err(e),
        },
    }
}

/// Restore the backup at `key` (which must be `expected`) as the SQLite file `file`: decrypted
/// into `file.restore` first, renamed into place only when complete and matching.
pub(crate) async fn restore_sqlite(
    store: &Store,
    key: &str,
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    expected: &Digest256,
    file: &Path,
) -> Result<(), BackupError> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let partial = with_suffix(file, ".restore");
    let out = std::io::BufWriter::new(std::fs::File::create(&partial)?);
    let result = async {
        let out = stream::decrypt_into(store, key, identities, out, expected).await?;
        let file_handle = out.into_inner().map_err(|e| e.into_error())?;
        file_handle.sync_all()?;
        drop(file_handle);
        for suffix in ["-wal", "-shm", "-journal"] {
            remove_if_exists(&with_suffix(file, suffix))?;
        }
        std::fs::rename(&partial, file)?;
        Ok::<_, BackupError>(())
    }
    .await;
    if result.is_err() {
        let _ = remove_if_exists(&partial);
    }
    result
}

/// Check a restored tenant database: it opens, (SQLite) passes `integrity_check`, and has the
/// tenant schema at `expected_version`.
pub(crate) async fn check_restored(url: &str, expected_version: i64) -> Result<(), BackupError> {
    let mut options = PoolOptions::new(1);
    options.create = false;
    let pool = tenantgate_catalog::db::connect_with(url, options).await?;
    let checked = async {
        if url.starts_with("sqlite:") {
            let verdict: String = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(&pool)
                .await?;
            if verdict != "ok" {
                return Err(BackupError::Invalid(format!("integrity_check: {verdict}")));
            }
        }
        let version = tenant_db::schema_version(&pool).await?;
        if version == 0 || version != expected_version {
            return Err(BackupError::Invalid(format!(
                "it is at tenant schema version {version}, the backup recorded {expected_version}"
            )));
        }
        Ok(())
    }
    .await;
    pool.close().await;
    checked
}

/// What `verify` found in a backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    pub size_bytes: i64,
    pub sha256: String,
    /// `pg_custom`: archive entries `pg_restore --list` reads; `sqlite`: tables.
    pub entries: usize,
    pub schema_version: i64,
}

/// Verify a backup without touching any tenant: the object matches the catalog, decrypts with
/// the identity, and holds a readable archive (`pg_restore --list`) or a sound SQLite
/// database at the recorded schema version. The plaintext goes to a temporary file in
/// `scratch`, removed afterwards.
pub(crate) async fn verify(
    store: &Store,
    key: &str,
    identities: Vec<Box<dyn age::Identity + Send + Sync>>,
    expected: &Digest256,
    postgres: bool,
    expected_version: i64,
    scratch: &Path,
) -> Result<Verified, BackupError> {
    stream::verify(store, key, expected).await?;
    let dir = tempfile::Builder::new()
        .prefix(".verify-")
        .tempdir_in(scratch)?;
    let plain = dir.path().join(if postgres { "dump" } else { "tenant.db" });
    let out = std::io::BufWriter::new(std::fs::File::create(&plain)?);
    let out = stream::decrypt_into(store, key, identities, out, expected).await?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let entries = if postgres {
        let listed = Command::new("pg_restore")
            .arg("--list")
            .arg(&plain)
            .stdin(Stdio::null())
            .output()
            .await?;
        if !listed.status.success() {
            return Err(BackupError::Tool {
                tool: "pg_restore --list",
                status: listed.status.to_string(),
                stderr: tail(&listed.stderr),
            });
        }
        String::from_utf8_lossy(&listed.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
            .count()
    } else {
        let url = format!("sqlite://{}", plain.display());
        check_restored(&url, expected_version).await?;
        let mut options = PoolOptions::new(1);
        options.create = false;
        let pool = tenantgate_catalog::db::connect_with(&url, options).await?;
        let tables: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'")
                .fetch_one(&pool)
                .await?;
        pool.close().await;
        tables as usize
    };
    Ok(Verified {
        size_bytes: expected.size,
        sha256: expected.sha256.clone(),
        entries,
        schema_version: expected_version,
    })
}

fn with_suffix(file: &Path, suffix: &str) -> PathBuf {
    let mut path = file.as_os_str().to_owned();
    path.push(suffix);
    PathBuf::from(path)
}

/// Remove `path`; already absent is fine.
pub(crate) fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Remove a SQLite database file and its `-wal`, `-shm` and `-journal` companions.
pub(crate) fn remove_sqlite(file: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal", ".restore"] {
        remove_if_exists(&with_suffix(file, suffix))?;
    }
    Ok(())
}
