//! One catalog write: the change itself, its audit record, its feed entry, the jobs it starts
//! and the webhook events it announces, committed together.
//!
//! Committing them in one transaction is what makes the admin API crash-safe: a tenant never
//! exists without its provisioning job, and an event is queued exactly when the write happens.

use tenantgate_catalog::store::audit::{self, NewAudit};
use tenantgate_catalog::store::changes::{self, NewChange};
use tenantgate_catalog::store::jobs::{self, NewJob};
use tenantgate_catalog::store::{outbox, WriteTx};
use tenantgate_catalog::Tenant;

use crate::error::AdminError;
use crate::state::AdminState;

/// An open catalog write (holding the catalog write lock until commit or drop).
pub(crate) struct Write<'a> {
    tx: WriteTx,
    state: &'a AdminState,
    jobs: bool,
    events: bool,
}

impl<'a> Write<'a> {
    pub(crate) async fn begin(state: &'a AdminState) -> Result<Write<'a>, AdminError> {
        Ok(Write {
            tx: state.catalog.begin_write().await?,
            state,
            jobs: false,
            events: false,
        })
    }

    /// The transaction, for store functions.
    pub(crate) fn conn(&mut self) -> &mut WriteTx {
        &mut self.tx
    }

    pub(crate) async fn audit(&mut self, entry: NewAudit<'_>) -> Result<(), AdminError> {
        audit::append(&mut self.tx, &entry).await?;
        Ok(())
    }

    pub(crate) async fn change(&mut self, change: &NewChange) -> Result<(), AdminError> {
        changes::append(&mut self.tx, change).await?;
        Ok(())
    }

    /// Append the feed entry for tenant `id` (its current hosts plus `extra_hosts`).
    pub(crate) async fn tenant_change(
        &mut self,
        id: uuid::Uuid,
        extra_hosts: &[String],
    ) -> Result<(), AdminError> {
        let change =
            tenantgate_catalog::store::tenants::tenant_change(&mut self.tx, id, extra_hosts)
                .await?;
        self.change(&change).await
    }

    pub(crate) async fn job(&mut self, job: &NewJob) -> Result<(), AdminError> {
        jobs::enqueue(&mut self.tx, job).await?;
        self.jobs = true;
        Ok(())
    }

    /// Wake the worker after commit (a job was changed rather than enqueued).
    pub(crate) fn wake_worker(&mut self) {
        self.jobs = true;
    }

    /// Queue webhook event `event` (`tenant.created`, ...) about `tenant` for every receiver.
    pub(crate) async fn event(&mut self, event: &str, tenant: &Tenant) -> Result<(), AdminError> {
        let urls = &self.state.config.admin.webhook_urls;
        if urls.is_empty() {
            return Ok(());
        }
        let payload = serde_json::json!({
            "id": uuid::Uuid::new_v4(),
            "event": event,
            "at": tenantgate_contract::time::rfc3339(tenantgate_contract::time::now_ms()),
            "tenant": tenant,
        });
        outbox::enqueue(&mut self.tx, event, urls, &payload.to_string()).await?;
        self.events = true;
        Ok(())
    }

    /// Commit, then wake the worker and the webhook deliverer if this write gave them work.
    pub(crate) async fn commit(self) -> Result<(), AdminError> {
        self.tx.commit().await?;
        if self.jobs {
            self.state.jobs_wake.notify_one();
        }
        if self.events {
            self.state.webhooks_wake.notify_one();
        }
        Ok(())
    }
}
