//! `tenantgate backup create|list|restore|verify`.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use tenantgate_catalog::store::jobs::JobStatus;

use crate::cli::{BackupCommand, BackupTarget};
use crate::commands::{connect, load, runtime};

pub(crate) fn run(command: BackupCommand) -> anyhow::Result<ExitCode> {
    let target: &BackupTarget = match &command {
        BackupCommand::Create { target, .. }
        | BackupCommand::List { target, .. }
        | BackupCommand::Restore { target, .. }
        | BackupCommand::Verify { target, .. } => target,
    };
    let config = load(&target.config, None)?;
    let tenant = target.tenant.clone();
    runtime()?.block_on(async move {
        let catalog = connect(&config, true).await?;
        match command {
            BackupCommand::Create { wait_secs, .. } => {
                let (backup, job) = tenantgate_admin::backups::create(&config, &catalog, &tenant).await?;
                eprintln!("queued backup {} (job {job}); waiting for the admin worker", backup.id);
                finish_job(&catalog, job, wait_secs).await?;
                let backup = tenantgate_admin::backups::get(&catalog, backup.id)
                    .await?
                    .context("the backup disappeared")?;
                println!("{}", serde_json::to_string(&backup)?);
            }
            BackupCommand::List { limit, .. } => {
                for backup in tenantgate_admin::backups::list(&config, &catalog, &tenant, limit).await? {
                    println!("{}", serde_json::to_string(&backup)?);
                }
            }
            BackupCommand::Restore {
                backup,
                mode,
                slug,
                wait_secs,
                ..
            } => {
                let started = tenantgate_admin::backups::restore(
                    &config, &catalog, &tenant, &backup, &mode, slug,
                )
                .await?;
                eprintln!(
                    "restoring backup {backup} ({mode}) into tenant {} (job {}); waiting for the admin worker",
                    started.tenant_id, started.job_id
                );
                finish_job(&catalog, started.job_id, wait_secs).await?;
                let restored = catalog
                    .tenant(&started.tenant_id.to_string())
                    .await?
                    .context("the tenant disappeared")?;
                println!(
                    "{}",
                    serde_json::json!({
                        "tenant": restored.slug,
                        "status": restored.status,
                        "schema_version": restored.schema_version,
                        "job_id": started.job_id,
                    })
                );
            }
            BackupCommand::Verify {
                backup, scratch, ..
            } => {
                let verified =
                    tenantgate_admin::backups::verify(&config, &catalog, &tenant, backup, &scratch)
                        .await?;
                println!("{}", serde_json::to_string(&verified)?);
            }
        }
        catalog.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Wait for `job`; an error naming the job's error when it failed.
async fn finish_job(
    catalog: &tenantgate_catalog::Catalog,
    job: uuid::Uuid,
    wait_secs: u64,
) -> anyhow::Result<()> {
    let job = tenantgate_admin::backups::wait_for_job(catalog, job, Duration::from_secs(wait_secs))
        .await?;
    if job.status == JobStatus::Failed {
        bail!(
            "job {} failed: {}",
            job.id,
            job.error.as_deref().unwrap_or("no error recorded")
        );
    }
    Ok(())
}
