//! Backups of tenant databases: taking them, storing them encrypted, reading them back.
//!
//! Every byte is streamed, never held whole in memory:
//!
//! ```text
//! backup:  pg_dump --format=custom (tenant login) ─┐
//!          or VACUUM INTO a snapshot file  ────────┴▶ age encrypt ─▶ SHA-256 + size ─▶ object store
//!                                                                                  (multipart upload)
//! restore: object store ─▶ SHA-256 + size ─▶ age decrypt ─▶ pg_restore --single-transaction
//!                                                         └▶ or a new SQLite file
//! ```
//!
//! - [`store`]: the object store (`object_store`: a local directory or S3) and object keys;
//! - [`stream`]: the encrypting upload and the verifying, decrypting download;
//! - [`tenant`]: the database side: dumping and restoring PostgreSQL (as the tenant's own login)
//!   and SQLite tenants, and checking a restored database;
//! - [`schedule`]: when a tenant's scheduled backup is due (slots spread by tenant id);
//! - [`retention`]: which backups a grandfather-father-son policy keeps.
//!
//! Blocking work (age, reading a dump, writing a file) runs on Tokio's blocking threads and
//! talks to the async side through bounded channels, so a slow store slows the dump down
//! instead of buffering it.

pub(crate) mod retention;
pub(crate) mod schedule;
pub(crate) mod store;
pub(crate) mod stream;
pub(crate) mod tenant;

use thiserror::Error;

/// What can go wrong taking, storing, verifying or restoring a backup.
#[derive(Debug, Error)]
pub enum BackupError {
    /// A `[backups]` setting the operation needs is not configured.
    #[error("backups are not configured: set {0}")]
    NotConfigured(&'static str),
    /// The backup store failed (its message names the object, never credentials).
    #[error("backup store: {0}")]
    Store(#[from] object_store::Error),
    /// The stored object is not the one the catalog recorded.
    #[error(
        "the stored backup does not match the catalog (expected sha256 {expected} and {expected_size} bytes, found sha256 {actual} and {actual_size} bytes): refusing to restore it"
    )]
    Mismatch {
        expected: String,
        expected_size: i64,
        actual: String,
        actual_size: i64,
    },
    /// The object does not decrypt with the configured identity, or is not an age file.
    #[error("decrypting the backup failed: {0}")]
    Decrypt(String),
    /// Encrypting failed.
    #[error("encrypting the backup failed: {0}")]
    Encrypt(String),
    /// `pg_dump` or `pg_restore` failed; `stderr` is the tail of what it said.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    /// The tenant is in no state to be backed up or restored (deleted meanwhile, ...).
    #[error("{0}")]
    Refused(String),
    /// The restored database is not a usable tenant database.
    #[error("the restored database is not usable: {0}")]
    Invalid(String),
    #[error("backup i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("backup database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Catalog(#[from] tenantgate_catalog::CatalogError),
    #[error(transparent)]
    TenantDb(#[from] tenantgate_catalog::tenant_db::TenantDbError),
}

impl BackupError {
    /// True when retrying cannot help (the object is missing or wrong, a key is not configured),
    /// so a job fails at once instead of holding its tenant in `restoring` through every retry.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            BackupError::NotConfigured(_)
                | BackupError::Store(object_store::Error::NotFound { .. })
                | BackupError::Refused(_)
                | BackupError::Mismatch { .. }
                | BackupError::Decrypt(_)
                | BackupError::Invalid(_)
        )
    }
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
