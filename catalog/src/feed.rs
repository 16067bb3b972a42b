//! Following `catalog_changes`: every edge and app keeps its caches in step with the catalog.
//!
//! A follower polls for changes after the version it has applied (and on PostgreSQL also wakes
//! on `NOTIFY`), hands each change to a [`ChangeSink`] in version order, and asks the sink for a
//! full resync at start, after a gap in the versions, and after the catalog was unreachable.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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

/// Longest wait before the next round after a failed one, whatever the poll interval: the
/// catalog's return is noticed (and everything missed applied) within about this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_millis(500);

/// `application_name` of the feed's LISTEN session on PostgreSQL.
pub const LISTEN_APPLICATION_NAME: &str = "tenantgate-catalog-listen";

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
    /// LISTEN sessions established so far (PostgreSQL).
    listen_sessions: AtomicU64,
}

impl FeedState {
    /// The newest version applied.
    pub fn applied_version(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    /// LISTEN sessions established so far (PostgreSQL): more than one means a session was
    /// lost or found dead and replaced.
    pub fn listen_sessions(&self) -> u64 {
        self.listen_sessions.load(Ordering::Relaxed)
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

/// How a follower paces and bounds its work (from `[catalog]`).
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// Time between polls when nothing wakes the follower sooner.
    pub poll_interval: Duration,
    /// Longest one feed query may take before the catalog counts as unreachable. Without it a
    /// query on a connection gone silently half-open would wait for TCP to give up (minutes),
    /// and the follower with it.
    pub query_timeout: Duration,
    /// PostgreSQL: time without a notification after which the LISTEN session is checked.
    pub listen_heartbeat: Duration,
}

impl From<&tenantgate_config::CatalogConfig> for FeedOptions {
    fn from(config: &tenantgate_config::CatalogConfig) -> FeedOptions {
        FeedOptions {
            poll_interval: config.poll_interval,
            query_timeout: config.query_timeout,
            listen_heartbeat: config.listen_heartbeat,
        }
    }
}

/// Start following the catalog's changes. The task ends when `shutdown` is cancelled.
pub fn follow(
    catalog: Catalog,
    sink: Arc<dyn ChangeSink>,
    options: FeedOptions,
    shutdown: CancellationToken,
) -> (Arc<FeedState>, JoinHandle<()>) {
    let state = Arc::new(FeedState::default());
    let wake = Arc::new(Notify::new());
    if catalog.engine() == Engine::Postgres {
        tokio::spawn(listen(
            catalog.url().to_string(),
            options,
            state.clone(),
            wake.clone(),
            shutdown.clone(),
        ));
    }
    let task = tokio::spawn(run(catalog, sink, options, state.clone(), wake, shutdown));
    (state, task)
}

/// `query` bounded by `timeout`; running out of time is a failure like any other.
async fn bounded<T>(
    timeout: Duration,
    query: impl std::future::Future<Output = Result<T, crate::CatalogError>>,
) -> Result<T, crate::CatalogError> {
    tokio::time::timeout(timeout, query)
        .await
        .unwrap_or(Err(crate::CatalogError::Timeout))
}

async fn run(
    catalog: Catalog,
    sink: Arc<dyn ChangeSink>,
    options: FeedOptions,
    state: Arc<FeedState>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    // `None` means the next successful round must be a full resync.
    let mut applied: Option<i64> = None;
    loop {
        let full_batch = match applied {
            None => match bounded(options.query_timeout, catalog.latest_version()).await {
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
            Some(version) => {
                match bounded(options.query_timeout, catalog.changes_since(version, BATCH)).await {
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
                }
            }
        };
        if full_batch {
            continue;
        }
        let pause = match state.unreachable_for() {
            Some(_) => options.poll_interval.min(RETRY_AFTER_FAILURE),
            None => options.poll_interval,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
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
///
/// A session can also die without a word: in a partition without RST, or when the server side
/// vanished (a failover, a NAT that forgot the connection), the socket just stays quiet, and a
/// quiet LISTEN session looks exactly like a quiet catalog. So after `listen_heartbeat` without
/// a notification the session must answer a query within `query_timeout`, or it is replaced.
async fn listen(
    url: String,
    options: FeedOptions,
    state: Arc<FeedState>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let connect_options = match sqlx::postgres::PgConnectOptions::from_str(&url) {
        // Named, so that a DBA can tell the feed's session apart in `pg_stat_activity`.
        Ok(options) => options.application_name(LISTEN_APPLICATION_NAME),
        Err(e) => {
            tracing::warn!(error = %e, "catalog URL unusable for LISTEN; relying on polling");
            return;
        }
    };
    loop {
        let mut established = false;
        let attempt = async {
            let mut listener = bounded(options.query_timeout, async {
                // One connection, kept for good, as `PgListener::connect` would set it up.
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .max_lifetime(None)
                    .idle_timeout(None)
                    .connect_lazy_with(connect_options.clone());
                let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
                listener.listen(NOTIFY_CHANNEL).await?;
                Ok(listener)
            })
            .await?;
            established = true;
            state.listen_sessions.fetch_add(1, Ordering::Relaxed);
            wake.notify_one();
            loop {
                match tokio::time::timeout(options.listen_heartbeat, listener.try_recv()).await {
                    // `None`: the session was lost (sqlx would reconnect silently on the next
                    // call; reconnecting here wakes the follower once subscribed again).
                    Ok(received) => match received.map_err(crate::CatalogError::from)? {
                        Some(_) => wake.notify_one(),
                        None => return Ok::<(), crate::CatalogError>(()),
                    },
                    Err(_quiet) => {
                        bounded(options.query_timeout, async {
                            sqlx::query("SELECT 1").execute(&mut listener).await?;
                            Ok(())
                        })
                        .await?;
                    }
                }
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = attempt => match result {
                Ok(()) => {
                    tracing::debug!("catalog LISTEN session lost; reconnecting");
                    continue;
                }
                Err(e) if established => {
                    // A session that worked and then stopped answering: replace it at once.
                    tracing::info!(error = %e, "catalog LISTEN session stopped answering; replacing it");
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
