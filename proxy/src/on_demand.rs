//! On-demand certificate issuance at the first TLS handshake for a host without a certificate
//! (`acme.on_demand`).
//!
//! The SNI resolver runs inside the handshake and must never wait on the catalog or the CA, so
//! it only [`OnDemand::notice`]s the name: a host outside the route index (not in the catalog)
//! is dropped at once, a known one goes into a small bounded queue (full: dropped and counted
//! as refused). A background task takes each name at most once per [`RECHECK_AFTER`] and asks
//! the catalog ([`tenantgate_catalog::store::on_demand`]), which queues the durable
//! `issue_certificate` job only for a host a serving tenant owns whole, that nothing covers
//! yet, within the per-tenant and global limits counted across every edge. That handshake
//! still fails (or gets the fallback certificate); once the admin's worker has the
//! certificate, the feed brings it here and later handshakes get it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenantgate_catalog::store::on_demand::{self, OnDemand as Outcome};
use tenantgate_catalog::Catalog;
use tenantgate_config::OnDemandLimits;
use tokio::sync::mpsc;

use crate::metrics::{EdgeMetrics, OnDemandResult};
use crate::resolve::Resolver;

/// Names waiting for the background task. A flood beyond it is refused without any work.
const QUEUE: usize = 256;
/// How long a name is not asked about again after it was (whatever the answer): a client
/// retrying its handshake, or many clients at once, cost one catalog write per period.
pub const RECHECK_AFTER: Duration = Duration::from_secs(30);
/// Most names remembered as recently asked; past it, expired ones are forgotten.
const REMEMBERED: usize = 10_000;

/// The edge's side of on-demand issuance.
pub struct OnDemand {
    resolver: Arc<Resolver>,
    metrics: Arc<EdgeMetrics>,
    queue: mpsc::Sender<Box<str>>,
}

impl std::fmt::Debug for OnDemand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnDemand").finish_non_exhaustive()
    }
}

impl OnDemand {
    /// Start the background task; must run on the control runtime. Jobs it queues get
    /// `max_attempts` attempts (`admin.job_max_attempts`).
    pub(crate) fn start(
        catalog: Catalog,
        resolver: Arc<Resolver>,
        metrics: Arc<EdgeMetrics>,
        limits: OnDemandLimits,
        max_attempts: i64,
    ) -> Arc<OnDemand> {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(worker(catalog, metrics.clone(), limits, max_attempts, rx));
        Arc::new(OnDemand {
            resolver,
            metrics,
            queue,
        })
    }

    /// Called by the SNI resolver, during a handshake, for a normalised name without a
    /// certificate. Never blocks: a name the catalog does not route (or any name before the
    /// route index is loaded) is ignored; a known one is queued for the background task.
    pub fn notice(&self, host: &str) {
        if self.resolver.indexed(host) != Some(true) {
            return;
        }
        if self.queue.try_send(host.into()).is_err() {
            self.metrics.on_demand(OnDemandResult::Refused);
        }
    }
}

async fn worker(
    catalog: Catalog,
    metrics: Arc<EdgeMetrics>,
    limits: OnDemandLimits,
    max_attempts: i64,
    mut rx: mpsc::Receiver<Box<str>>,
) {
    let mut asked: HashMap<Box<str>, Instant> = HashMap::new();
    while let Some(host) = rx.recv().await {
        let now = Instant::now();
        if asked
            .get(&host)
            .is_some_and(|at| now.duration_since(*at) < RECHECK_AFTER)
        {
            continue;
        }
        if asked.len() >= REMEMBERED {
            asked.retain(|_, at| now.duration_since(*at) < RECHECK_AFTER);
        }
        asked.insert(host.clone(), now);
        match request(&catalog, &host, &limits, max_attempts).await {
            Ok(Outcome::Queued(job)) => {
                metrics.on_demand(OnDemandResult::Requested);
                tracing::info!(%host, %job, "queued on-demand certificate issuance");
            }
            Ok(Outcome::Refused(limit)) => {
                metrics.on_demand(OnDemandResult::Refused);
                tracing::info!(%host, ?limit, "on-demand certificate issuance over its limit");
            }
            Ok(Outcome::Covered | Outcome::NotEligible) => {}
            Err(e) => {
                tracing::warn!(%host, error = %e, "on-demand certificate request failed");
            }
        }
    }
}

async fn request(
    catalog: &Catalog,
    host: &str,
    limits: &OnDemandLimits,
    max_attempts: i64,
) -> Result<Outcome, tenantgate_catalog::CatalogError> {
    let mut tx = catalog.begin_write().await?;
    let now = tenantgate_contract::time::now_ms();
    let outcome = on_demand::request_issuance(&mut tx, host, limits, max_attempts, now).await?;
    if matches!(outcome, Outcome::Queued(_)) {
        tx.commit().await?;
    }
    Ok(outcome)
}
