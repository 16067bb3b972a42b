//! Backups of tenant databases: one row per backup, written by the admin API (queued) and the
//! backup job (running, then completed or failed).
//!
//! A backup becomes `completed` only through [`complete`], in the transaction that also
//! completes its job; a worker that dies mid-backup therefore leaves it `running`, and the
//! retry (another claim of the same job) completes it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::driver::{on, CatalogRow, Id, Millis};
use super::{Catalog, WriteTx};
use crate::error::CatalogError;

/// Where a backup is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BackupStatus {
    Queued,
    Running,
    Completed,
    Failed,
}

/// Why a backup was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Asked for through the API or the CLI.
    Manual,
    /// Taken by the backup schedule.
    Scheduled,
    /// Taken before a deleted tenant's database is dropped.
    PreDelete,
    /// Taken before a move.
    PreMove,
    /// Taken before a restore in place replaces the database.
    PreRestore,
}

/// What the (decrypted) backup object holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BackupFormat {
    /// A `pg_dump --format=custom` archive.
    PgCustom,
    /// A SQLite database file.
    Sqlite,
}

/// Words of the three enums, both ways, in one table each.
macro_rules! words {
    ($ty:ident, $column:literal, $($variant:ident => $word:literal),+ $(,)?) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $word),+ }
            }
        }

        impl FromStr for $ty {
            type Err = CatalogError;

            fn from_str(s: &str) -> Result<Self, CatalogError> {
                match s {
                    $($word => Ok($ty::$variant),)+
                    other => Err(crate::error::corrupt($column, other)),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

words!(BackupStatus, "backups.status",
    Queued => "queued", Running => "running", Completed => "completed", Failed => "failed");
words!(BackupKind, "backups.kind",
    Manual => "manual", Scheduled => "scheduled", PreDelete => "pre_delete",
    PreMove => "pre_move", PreRestore => "pre_restore");
words!(BackupFormat, "backups.format", PgCustom => "pg_custom", Sqlite => "sqlite");

/// A backup row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub status: BackupStatus,
    pub kind: BackupKind,
    pub format: BackupFormat,
    /// The job that takes it.
    pub job_id: Option<Uuid>,
    pub started_at: Option<i64>,
    pub completed_at: Option<i64>,
    /// Size of the stored (encrypted) object.
    pub size_bytes: Option<i64>,
    /// Lower-case hex SHA-256 of the stored (encrypted) object.
    pub sha256: Option<String>,
    /// The object's key in the backup store.
    pub location: Option<String>,
    /// The tenant schema version of the backed-up database.
    pub schema_version: Option<i64>,
    /// Why it failed (or why the last attempt failed).
    pub error: Option<String>,
    pub created_at: i64,
}

/// A backup to record (status `queued`).
#[derive(Debug, Clone)]
pub struct NewBackup {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub kind: BackupKind,
    pub format: BackupFormat,
    pub job_id: Uuid,
    /// When it was asked for (ms). A scheduled backup records the start of its schedule slot
    /// here: at most one scheduled backup per tenant and slot exists (a unique index).
    pub created_at: i64,
}

/// What a finished backup produced.
#[derive(Debug, Clone)]
pub struct Stored {
    pub size_bytes: i64,
    pub sha256: String,
    pub location: String,
    pub schema_version: i64,
}

const COLUMNS: &str = "id, tenant_id, status, kind, format, job_id, started_at, completed_at, \
    size_bytes, sha256, location, schema_version, error, created_at";

fn from_row(r: &impl CatalogRow) -> Result<Backup, CatalogError> {
    Ok(Backup {
        id: r.id("id")?,
        tenant_id: r.id("tenant_id")?,
        status: r.get::<String>("status")?.parse()?,
        kind: r.get::<String>("kind")?.parse()?,
        format: r.get::<String>("format")?.parse()?,
        job_id: r.opt_id("job_id")?,
        started_at: r.opt_millis("started_at")?,
        completed_at: r.opt_millis("completed_at")?,
        size_bytes: r.get("size_bytes")?,
        sha256: r.get("sha256")?,
        location: r.get("location")?,
        schema_version: r.get("schema_version")?,
        error: r.get("error")?,
        created_at: r.millis("created_at")?,
    })
}

/// Record a queued backup in the caller's transaction (with the job that takes it). False,
/// and nothing written, when it is a scheduled backup for a slot that already has one.
pub async fn insert(tx: &mut WriteTx, b: &NewBackup) -> Result<bool, CatalogError> {
    let inserted = on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO backups (id, tenant_id, status, kind, format, job_id, created_at)
             VALUES ($1, $2, 'queued', $3, $4, $5, $6)
             ON CONFLICT DO NOTHING",
        )
        .bind(Id(b.id))
        .bind(Id(b.tenant_id))
        .bind(b.kind.as_str())
        .bind(b.format.as_str())
        .bind(Id(b.job_id))
        .bind(Millis(b.created_at))
        .execute(db)
        .await?
        .rows_affected()
    });
    Ok(inserted == 1)
}

/// Forget a backup whose object is gone (retention, erasure). Call it only after the object
/// was deleted, so the catalog never loses track of a stored object. False when it was
/// already gone.
pub async fn delete(tx: &mut WriteTx, id: Uuid) -> Result<bool, CatalogError> {
    let deleted = on!(tx.db(), db => {
        sqlx::query("DELETE FROM backups WHERE id = $1")
            .bind(Id(id))
            .execute(db)
            .await?
            .rows_affected()
    });
    Ok(deleted == 1)
}

/// A tenant the schedules consider (backups, data retention): what they decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleCandidate {
    pub tenant_id: Uuid,
    /// `created_at` of its newest scheduled backup (the slot it was for), if any.
    pub last_scheduled: Option<i64>,
    /// The latest `run_at` of its jobs of the kind the caller named (data retention), if any.
    pub last_job_run_at: Option<i64>,
    /// Its settings document.
    pub settings: serde_json::Value,
}

/// Mark a backup `running` from now: when its job starts, again when the job is claimed again
/// after a crash, and when a failed job is retried (`POST /v1/jobs/{id}/retry`). False when it
/// is already completed.
pub async fn start(tx: &mut WriteTx, id: Uuid) -> Result<bool, CatalogError> {
    let updated = on!(tx.db(), db => {
        sqlx::query(
            "UPDATE backups SET status = 'running', started_at = $2, completed_at = NULL,
                error = NULL
             WHERE id = $1 AND status IN ('queued', 'running', 'failed')",
        )
        .bind(Id(id))
        .bind(Millis::now())
        .execute(db)
        .await?
        .rows_affected()
    });
    Ok(updated == 1)
}

/// Mark a running backup `completed` with what it stored. Call it in the transaction that
/// completes the backup's job. False when the backup was not running.
pub async fn complete(tx: &mut WriteTx, id: Uuid, stored: &Stored) -> Result<bool, CatalogError> {
    let updated = on!(tx.db(), db => {
        sqlx::query(
            "UPDATE backups SET status = 'completed', completed_at = $2, size_bytes = $3,
                sha256 = $4, location = $5, schema_version = $6, error = NULL
             WHERE id = $1 AND status = 'running'",
        )
        .bind(Id(id))
        .bind(Millis::now())
        .bind(stored.size_bytes)
        .bind(&stored.sha256)
        .bind(&stored.location)
        .bind(stored.schema_version)
        .execute(db)
        .await?
        .rows_affected()
    });
    Ok(updated == 1)
}

/// Record an attempt's error on an unfinished backup; with `last` the backup is `failed`.
pub async fn record_error(
    tx: &mut WriteTx,
    id: Uuid,
    error: &str,
    last: bool,
) -> Result<(), CatalogError> {
    on!(tx.db(), db => {
        sqlx::query(
            "UPDATE backups SET error = $2,
                status = CASE WHEN $3 = 1 THEN 'failed' ELSE status END,
                completed_at = CASE WHEN $3 = 1 THEN $4 ELSE completed_at END
             WHERE id = $1 AND status IN ('queued', 'running')",
        )
        .bind(Id(id))
        .bind(error)
        .bind(i64::from(last))
        .bind(Millis::now())
        .execute(db)
        .await?;
    });
    Ok(())
}

/// Read a backup in the caller's transaction.
pub async fn get(tx: &mut WriteTx, id: Uuid) -> Result<Option<Backup>, CatalogError> {
    let sql = format!("SELECT {COLUMNS} FROM backups WHERE id = $1");
    on!(tx.db(), db => {
        sqlx::query(&sql)
            .bind(Id(id))
            .fetch_optional(db)
            .await?
            .as_ref()
            .map(from_row)
            .transpose()
    })
}

impl Catalog {
    /// One backup by id.
    pub async fn backup(&self, id: Uuid) -> Result<Option<Backup>, CatalogError> {
        let sql = format!("SELECT {COLUMNS} FROM backups WHERE id = $1");
        on!(self.db(), db => {
            sqlx::query(&sql)
                .bind(Id(id))
                .fetch_optional(db)
                .await?
                .as_ref()
                .map(from_row)
                .transpose()
        })
    }

    /// Every active or suspended tenant with the slot of its newest scheduled backup, the latest
    /// run of its jobs of `job_kind`, and its settings: what the schedules decide on, in one
    /// query.
    pub async fn schedule_candidates(
        &self,
        job_kind: &str,
    ) -> Result<Vec<ScheduleCandidate>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT t.id, t.settings,
                    (SELECT MAX(b.created_at) FROM backups b
                     WHERE b.tenant_id = t.id AND b.kind = 'scheduled') AS last_scheduled,
                    (SELECT MAX(j.run_at) FROM jobs j
                     WHERE j.tenant_id = t.id AND j.kind = $1) AS last_job_run_at
                 FROM tenants t WHERE t.status IN ('active', 'suspended')",
            )
            .bind(job_kind)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| {
                Ok(ScheduleCandidate {
                    tenant_id: r.id("id")?,
                    last_scheduled: r.opt_millis("last_scheduled")?,
                    last_job_run_at: r.opt_millis("last_job_run_at")?,
                    settings: r.json("settings")?,
                })
            })
            .collect()
        })
    }

    /// Every backup of a tenant, newest first (retention and erasure decide over all of them).
    pub async fn all_backups_of_tenant(
        &self,
        tenant_id: Uuid,
    ) -> Result<Vec<Backup>, CatalogError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM backups WHERE tenant_id = $1 ORDER BY created_at DESC, id DESC"
        );
        on!(self.db(), db => {
            sqlx::query(&sql)
                .bind(Id(tenant_id))
                .fetch_all(db)
                .await?
                .iter()
                .map(from_row)
                .collect()
        })
    }

    /// For each tenant not deleted that has a completed backup: its slug and the completion
    /// time (ms) of its newest completed backup.
    pub async fn last_backup_successes(&self) -> Result<Vec<(String, i64)>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT t.slug, MAX(b.completed_at) AS last
                 FROM backups b JOIN tenants t ON t.id = b.tenant_id
                 WHERE b.status = 'completed' AND t.status <> 'deleted'
                 GROUP BY t.slug ORDER BY t.slug",
            )
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| Ok((r.get::<String>("slug")?, r.millis("last")?)))
            .collect()
        })
    }

    /// Active or suspended tenants created before `created_before_ms` that have no completed
    /// backup: with a schedule on, those the schedule should have reached by now. A count, so
    /// the metric built on it stays one series whatever the fleet's size.
    pub async fn tenants_never_backed_up(
        &self,
        created_before_ms: i64,
    ) -> Result<i64, CatalogError> {
        on!(self.db(), db => {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM tenants t
                 WHERE t.status IN ('active', 'suspended') AND t.created_at < $1
                   AND NOT EXISTS (SELECT 1 FROM backups b
                                   WHERE b.tenant_id = t.id AND b.status = 'completed')",
            )
            .bind(Millis(created_before_ms))
            .fetch_one(db)
            .await?)
        })
    }

    /// A tenant's backups, newest first: up to `limit`, older than backup `before` when given.
    pub async fn backups_of_tenant(
        &self,
        tenant_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Backup>, CatalogError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM backups
             WHERE tenant_id = $1 AND ($2 IS NULL OR id < $2)
             ORDER BY id DESC LIMIT $3"
        );
        on!(self.db(), db => {
            sqlx::query(&sql)
                .bind(Id(tenant_id))
                .bind(before.map(Id))
                .bind(limit)
                .fetch_all(db)
                .await?
                .iter()
                .map(from_row)
                .collect()
        })
    }
}
