//! Backups for the CLI (`tenantgate backup create|list|restore|verify`) and for `tenantgate
//! dev`'s key set-up. `create` and `restore` queue jobs exactly as the admin API does (same
//! checks, same audit records, actor `cli`); the jobs run in whichever process runs the admin
//! worker, and [`wait_for_job`] follows them. `verify` runs here and changes nothing.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tenantgate_catalog::store::backups::{BackupKind, BackupStatus};
use tenantgate_catalog::store::jobs::{Job, JobStatus};
use tenantgate_catalog::Catalog;
use tenantgate_config::Config;
use uuid::Uuid;

use crate::api::backups::StartRestore;
pub use crate::api::backups::{BackupView, RestoreJob};
use crate::backup::store::Store;
use crate::backup::stream::{self, Digest256};
use crate::backup::{tenant, BackupError};
use crate::error::AdminError;
use crate::state::AdminState;
use crate::CLI_ACTOR;

fn state(config: &Config, catalog: &Catalog) -> AdminState {
    AdminState::new(Arc::new(config.clone()), catalog.clone())
}

/// Queue a manual backup of tenant `tenant` (slug or id). Returns the backup (queued) and its
/// job.
pub async fn create(
    config: &Config,
    catalog: &Catalog,
    tenant: &str,
) -> Result<(BackupView, Uuid), AdminError> {
    let (backup, job) = crate::api::backups::create(
        &state(config, catalog),
        CLI_ACTOR,
        tenant,
        BackupKind::Manual,
    )
    .await?;
    Ok((backup.into(), job))
}

/// The newest `limit` backups of tenant `tenant`.
pub async fn list(
    config: &Config,
    catalog: &Catalog,
    tenant: &str,
    limit: i64,
) -> Result<Vec<BackupView>, AdminError> {
    let (page, _) =
        crate::api::backups::list(&state(config, catalog), tenant, Some(limit), None).await?;
    Ok(page.into_iter().map(BackupView::from).collect())
}

/// One backup by id.
pub async fn get(catalog: &Catalog, backup: Uuid) -> Result<Option<BackupView>, AdminError> {
    Ok(catalog.backup(backup).await?.map(BackupView::from))
}

/// Start restoring `backup` of tenant `tenant`: `mode` `in_place`, or `copy` as tenant `slug`.
pub async fn restore(
    config: &Config,
    catalog: &Catalog,
    tenant: &str,
    backup: &str,
    mode: &str,
    slug: Option<String>,
) -> Result<RestoreJob, AdminError> {
    let state = state(config, catalog);
    let request: StartRestore = crate::api::checked(
        &state,
        match slug {
            Some(slug) => serde_json::json!({ "backup_id": backup, "mode": mode, "slug": slug }),
            None => serde_json::json!({ "backup_id": backup, "mode": mode }),
        },
    )?;
    crate::api::backups::restore(&state, CLI_ACTOR, tenant, request).await
}

/// Check backup `backup` of tenant `tenant` without touching the tenant: the stored object is
/// the one the catalog recorded, decrypts with `backups.identity_file`, and holds a readable
/// `pg_dump` archive or a sound SQLite database at the recorded schema version. The plaintext
/// is written to a temporary file under `scratch` and removed.
pub async fn verify(
    config: &Config,
    catalog: &Catalog,
    tenant: &str,
    backup: Uuid,
    scratch: &Path,
) -> Result<tenant::Verified, AdminError> {
    let owner = crate::api::tenants::find(&state(config, catalog), tenant).await?;
    let backup = catalog
        .backup(backup)
        .await?
        .filter(|b| b.tenant_id == owner.id)
        .ok_or(AdminError::NotFound("backup"))?;
    let (Some(location), Some(sha256), Some(size), Some(version)) = (
        backup.location.clone(),
        backup.sha256.clone(),
        backup.size_bytes,
        backup.schema_version,
    ) else {
        return Err(AdminError::Conflict(format!(
            "the backup is {}; only a completed backup can be verified",
            backup.status
        )));
    };
    if backup.status != BackupStatus::Completed {
        return Err(AdminError::Conflict(format!(
            "the backup is {}",
            backup.status
        )));
    }
    let store = Store::open(&config.backups)?;
    let identities = stream::identities(config.backups.identity_file.as_deref())?;
    let expected = Digest256 { size, sha256 };
    let postgres = backup.format == tenantgate_catalog::store::backups::BackupFormat::PgCustom;
    Ok(tenant::verify(
        &store, &location, identities, &expected, postgres, version, scratch,
    )
    .await?)
}

/// Poll job `id` until it has succeeded or failed, for at most `timeout`.
pub async fn wait_for_job(
    catalog: &Catalog,
    id: Uuid,
    timeout: Duration,
) -> Result<Job, AdminError> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let job = catalog.job(id).await?.ok_or(AdminError::NotFound("job"))?;
        if matches!(job.status, JobStatus::Succeeded | JobStatus::Failed) {
            return Ok(job);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(AdminError::Conflict(format!(
                "job {id} is still {} after {timeout:?}; is an admin process (tenantgate admin or dev) running?",
                job.status.as_str()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Make sure `path` holds an age identity, generating one (file mode 0600) when it does not
/// exist. Returns its public key (the `backups.recipient` to configure).
pub fn ensure_identity(path: &Path) -> Result<String, AdminError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !path.exists() {
        let (secret, public) = stream::new_identity();
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(path)?;
        writeln!(
            file,
            "# tenantgate backup identity: decrypts this installation's backups (keep it private)\n# public key: {public}\n{secret}"
        )?;
        file.sync_all()?;
        return Ok(public);
    }
    let identities = std::fs::read_to_string(path)?;
    identities
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .and_then(|l| l.parse::<age::x25519::Identity>().ok())
        .map(|i| i.to_public().to_string())
        .ok_or_else(|| {
            BackupError::Decrypt(format!("{} holds no age identity", path.display())).into()
        })
}
