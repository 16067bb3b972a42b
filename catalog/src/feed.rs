//! Following `catalog_changes`: every edge and app keeps its caches in step with the catalog.
//!
//! A follower polls for changes after the version it has applied (and on PostgreSQL also wakes
//! on `NOTIFY`), hands each change to a [`ChangeSink`] in version order, and asks the sink for a
//! full resync at start, after a gap in the versions, and after the catalog was unreachable.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tenantgate_config::db_url::Engine;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::model::Change;
use crate::store::{Catalog, NOTIFY_CHANNEL};

/// Most changes read per poll.
const BATCH: i64 = 1000;

/// Receives the catalog's changes. Called from the follower task only, never concurrently.
pub trait ChangeSink: Send + Sync + 'static {
    /// One change, in version order, each exactly once between resyncs.
    fn apply(&self, change: &Change);
    /// Everything derived from the catalog may be out of date: refresh it. Called before the
    /// first change, after a gap, and after the catalog was unreachable. Keeping old values
    /// until their refresh succeeds is allowed (and is what the edge does).
    fn resync(&self);
}

/// What a follower knows about the feed; shared with metrics and readiness checks.
#[derive(Debug, Default)]
pub struct FeedState {
    applied: AtomicI64,
    loaded: AtomicBool,
    /// Milliseconds since the epoch when the catalog was first seen unreachable; 0 = reachable.
    unreachable_since_ms: AtomicI64,
}

impl FeedState {
    /// The newest version applied.
    pub fn applied_version(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// True once the first resync has happened.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// How long the catalog has been unreachable, if it is.
    pub fn unreachable_for(&self) -> Option<Duration> {
        match self.unreachable_since_ms.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(
                (tenantgate_contract::time::now_ms() - since).max(0) as u64,
            )),
        }
    }

    /// Record that the catalog could not be reached (by the feed or by a lookup).
    pub fn mark_unreachable(&self) {
        let _ = self.unreachable_since_ms.compare_exchange(
            0,
            tenantgate_contract::time::now_ms().max(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    fn mark_reachable(&self) -> bool {
        self.unreachable_since_ms.swap(0, Ordering::AcqRel) != 0
    }
}

/// Start following the catalog's changes. The task ends when `shutdown` is cancelled.
pub fn follow(
    catalog: Catalog,
    sink: Arc<dyn ChangeSink>,
    poll_interval: Duration,
    shutdown: CancellationToken,
) -> (Arc<FeedState>, JoinHandle<()>) {
    let state = Arc::new(FeedState::default());
    let wake = Arc::new(Notify::new());
    if catalog.engine() == Engine::Postgres {
        tokio::spawn(listen(
            catalog.url().to_string(),
            wake.clone(),
            shutdown.clone(),
        ));
    }
    let task = tokio::spawn(run(
        catalog,
        sink,
        poll_interval,
        state.clone(),
        wake,
        shutdown,
    ));
    (state, task)
}

async fn run(
    catalog: Catalog,
    sink: Arc<dyn ChangeSink>,
    poll_interval: Duration,
    state: Arc<FeedState>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    // `None` means the next successful round must be a full resync.
    let mut applied: Option<i64> = None;
    loop {
        let full_batch = match applied {
            None => match catalog.latest_version().await {
                Ok(version) => {
                    state.mark_reachable();
                    sink.resync();
                    state.applied.store(version, Ordering::Release);
                    state.loaded.store(true, Ordering::Release);
                    applied = Some(version);
                    tracing::debug!(version, "catalog feed resynced");
                    false
                }
                Err(e) => {
                    unreachable(&state, &e);
                    false
                }
            },
            Some(version) => match catalog.changes_since(version, BATCH).await {
                Ok(changes) => {
                    if state.mark_reachable() {
                        tracing::info!("catalog reachable again; resyncing");
                        applied = None;
                        continue;
                    }
                    let full = changes.len() as i64 == BATCH;
                    let mut expected = version + 1;
                    for change in &changes {
                        if change.version != expected {
                            tracing::warn!(
                                expected,
                                got = change.version,
                                "gap in catalog feed; resyncing"
                            );
                            applied = None;
                            break;
                        }
                        sink.apply(change);
                        state.applied.store(change.version, Ordering::Release);
                        expected += 1;
                    }
                    if applied.is_some() {
                        applied = Some(expected - 1);
                    }
                    full || applied.is_none()
                }
                Err(e) => {
                    unreachable(&state, &e);
                    false
                }
            },
        };
        if full_batch {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll_interval) => {}
            _ = wake.notified() => {}
        }
    }
}

fn unreachable(state: &FeedState, error: &crate::CatalogError) {
    if state.unreachable_for().is_none() {
        tracing::warn!(error = %error, "catalog unreachable; serving last known state");
    }
    state.mark_unreachable();
}

/// Wake the follower on PostgreSQL NOTIFY; polling still guarantees progress if this fails.
///
/// A notification sent while the LISTEN session is down is lost, so the follower is also woken
/// each time the session is (re)established: it then reads whatever it missed by version
/// instead of waiting for its next poll.
async fn listen(url: String, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let attempt = async {
            let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            wake.notify_one();
            // `None`: the session was lost (sqlx would reconnect silently on the next call;
            // reconnecting here wakes the follower once subscribed again).
            while listener.try_recv().await?.is_some() {
                wake.notify_one();
            }
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = attempt => match result {
                Ok(()) => {
                    tracing::debug!("catalog LISTEN session lost; reconnecting");
                    continue;
                }
                Err(e) => tracing::debug!(error = %e, "catalog LISTEN failed; retrying"),
            }
        }
        // The catalog is not answering: retry at a gentle pace (polling carries on meanwhile).
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
