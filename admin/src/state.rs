//! State shared by the API handlers, the provisioning worker and the webhook deliverer.

use std::sync::Arc;

use tenantgate_catalog::Catalog;
use tenantgate_config::Config;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) config: Arc<Config>,
    pub(crate) catalog: Catalog,
    pub(crate) metrics: Metrics,
    /// Woken after a job is enqueued, so the worker starts it without waiting for its poll.
    pub(crate) jobs_wake: Arc<Notify>,
    /// Woken after a webhook event is queued.
    pub(crate) webhooks_wake: Arc<Notify>,
    /// The request checks of the API's route table.
    pub(crate) api: Arc<tenantgate_openapi::Checker>,
}

impl AdminState {
    pub(crate) fn new(config: Arc<Config>, catalog: Catalog) -> AdminState {
        AdminState {
            config,
            catalog,
            metrics: Metrics::new(),
            jobs_wake: Arc::new(Notify::new()),
            webhooks_wake: Arc::new(Notify::new()),
            api: crate::api::checker(),
        }
    }
}
