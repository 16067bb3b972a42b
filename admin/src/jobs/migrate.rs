//! The `migrate_tenants` job (`POST /v1/migrations`): the same fleet migration as
//! `tenantgate migrate tenants`, with its progress kept in the job row for `GET /v1/jobs/{id}`.
//!
//! Re-running it is safe (each tenant runs only what it lacks), so a job that died halfway is
//! simply run again when its lease ends.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::jobs::Job;

use super::succeed;
use crate::error::AdminError;
use crate::fleet::{self, FleetOptions, FleetSummary, Progress, ProgressSink};
use crate::state::AdminState;
use crate::write::Write;

/// How often the job's progress is written to its row.
const FLUSH: Duration = Duration::from_millis(500);

/// What `POST /v1/migrations` asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MigratePayload {
    /// Slugs; empty means every tenant with a database.
    pub(crate) tenants: Vec<String>,
    pub(crate) concurrency: usize,
}

/// Keeps the newest progress for the flusher.
#[derive(Default)]
struct Latest(Mutex<Option<Progress>>);

impl ProgressSink for Latest {
    fn update(&self, progress: Progress) {
        *self.0.lock().expect("progress lock") = Some(progress);
    }
}

fn report(p: Progress, summary: Option<&FleetSummary>) -> serde_json::Value {
    let mut value = serde_json::json!({ "done": p.done, "total": p.total, "failed": p.failed });
    if let Some(s) = summary {
        value["migrated"] = s.migrated.into();
        value["current"] = s.current.into();
        value["failures"] = s
            .failures
            .iter()
            .map(|(tenant, error)| serde_json::json!({ "tenant": tenant, "error": error }))
            .collect();
    }
    value
}

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let payload: MigratePayload = serde_json::from_value(job.payload.clone())
        .map_err(|e| AdminError::Job(format!("bad migration job payload: {e}")))?;
    let options = FleetOptions {
        tenants: payload.tenants,
        concurrency: payload.concurrency,
        dry_run: false,
    };
    let latest = Arc::new(Latest::default());
    let flush = async {
        loop {
            tokio::time::sleep(FLUSH).await;
            let progress = latest.0.lock().expect("progress lock").take();
            if let Some(p) = progress {
                if let Err(e) = state
                    .catalog
                    .set_job_progress(job.id, worker, &report(p, None))
                    .await
                {
                    tracing::warn!(job = %job.id, error = %e, "could not record migration progress");
                }
            }
        }
    };
    let run = fleet::migrate_tenants(&state.config, &state.catalog, &options, latest.as_ref());
    let summary = tokio::select! {
        summary = run => summary.map_err(|e| AdminError::Job(e.to_string()))?,
        _ = flush => unreachable!("the flusher never ends"),
    };
    let done = summary.migrated + summary.current + summary.failed;
    let last = Progress {
        done,
        total: done,
        failed: summary.failed,
    };
    state
        .catalog
        .set_job_progress(job.id, worker, &report(last, Some(&summary)))
        .await?;
    if summary.failed > 0 {
        let names: Vec<&str> = summary.failures.iter().map(|(t, _)| t.as_str()).collect();
        return Err(AdminError::Job(format!(
            "{} of {done} tenants failed to migrate: {}",
            summary.failed,
            names.join(", ")
        )));
    }
    let mut w = Write::begin(state).await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    w.commit().await
}
