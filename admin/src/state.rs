//! State shared by the API handlers, the provisioning worker and the webhook deliverer.

use std::sync::Arc;

use tenantgate_catalog::Catalog;
use tenantgate_config::Config;
use tokio::sync::Notify;

use crate::limits::AdminLimits;
use crate::metrics::Metrics;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AdminState {
    pub(crate) config: Arc<Config>,
    pub(crate) catalog: Catalog,
    pub(crate) metrics: Metrics,
    /// Rate limits per token and client address, and the throttle of last-used writes.
    pub(crate) limits: Arc<AdminLimits>,
    /// Woken after a job is enqueued, so the worker starts it without waiting for its poll.
    pub(crate) jobs_wake: Arc<Notify>,
    /// Woken after a webhook event is queued.
    pub(crate) webhooks_wake: Arc<Notify>,
    /// The request checks of the API's route table.
    pub(crate) api: Arc<tenantgate_openapi::Checker>,
    /// The ACME account of this process (made on first issuance).
    pub(crate) acme: Arc<crate::acme::AcmeClient>,
}

impl AdminState {
    pub(crate) fn new(config: Arc<Config>, catalog: Catalog) -> AdminState {
        AdminState {
            catalog,
            metrics: Metrics::new(),
            limits: Arc::new(AdminLimits::new(config.admin.rate_limit)),
            jobs_wake: Arc::new(Notify::new()),
            webhooks_wake: Arc::new(Notify::new()),
            config,
            api: crate::api::checker(),
            acme: Arc::default(),
        }
    }
}
