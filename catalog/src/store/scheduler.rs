//! One scheduler at a time across the admin processes of a catalog.
//!
//! Every admin process runs the scheduler, which reads what is due (a tenant's last scheduled
//! backup, its last data-retention job, certificates without a pending renewal) and then
//! queues it. Two processes ticking at once could both read "due" before either committed and
//! queue the same work twice; the unique backup slot catches that for backups only. Holding
//! this lock across the whole read-then-queue makes the second process wait its turn, and then
//! see the first one's jobs.

use sqlx::{ConnectOptions, Connection, PgConnection};

use super::Catalog;
use super::CatalogPool;
use crate::error::CatalogError;

/// Key of the PostgreSQL advisory lock of the scheduler (an arbitrary constant, "tgsched" in
/// ASCII), in the catalog database's own key space.
const SCHEDULER_LOCK_KEY: i64 = 0x0074_6773_6368_6564;

/// The scheduler lock, held until [`SchedulerLock::release`] or the drop (either closes the
/// session that holds it, which releases it).
#[derive(Debug)]
pub struct SchedulerLock {
    /// The session holding the advisory lock on PostgreSQL; none on SQLite.
    session: Option<PgConnection>,
}

impl Catalog {
    /// Take the scheduler lock, waiting while another process holds it (that process is
    /// queueing due work; once it is done, what it queued is no longer due).
    ///
    /// On PostgreSQL this is a session advisory lock on a connection of its own, opened with
    /// the pool's options but outside the pool: the tick's own queries need pool connections
    /// while it holds the lock (a pool of one would otherwise wait on itself), and a lock never
    /// stays behind on a pooled connection. A process that dies while holding it releases it
    /// with its connection. On SQLite the catalog belongs to one admin process, and the lock is
    /// granted at once.
    pub async fn lock_scheduler(&self) -> Result<SchedulerLock, CatalogError> {
        let CatalogPool::Postgres(pool) = self.pool() else {
            return Ok(SchedulerLock { session: None });
        };
        let mut session = pool.connect_options().connect().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(SCHEDULER_LOCK_KEY)
            .execute(&mut session)
            .await?;
        Ok(SchedulerLock {
            session: Some(session),
        })
    }
}

impl SchedulerLock {
    /// Release the lock by ending its session.
    pub async fn release(mut self) {
        if let Some(session) = self.session.take() {
            // Closing ends the session, and with it the advisory lock; a failure to close
            // politely still drops the socket, which the server sees as the session's end.
            let _ = session.close().await;
        }
    }
}
