//! One scheduler at a time across the admin processes of a catalog.
//!
//! Every admin process runs the scheduler, which reads what is due (a tenant's last scheduled
//! backup, its last data-retention job, certificates without a pending renewal) and then
//! queues it. Two processes ticking at once could both read "due" before either committed and
//! queue the same work twice; the unique backup slot catches that for backups only. Holding
//! this lock across the whole read-then-queue makes the second process wait its turn, and then
//! see the first one's jobs.

use sqlx::pool::PoolConnection;
use sqlx::Postgres;

use super::Catalog;
use crate::error::CatalogError;
use super::CatalogPool;

/// Key of the PostgreSQL advisory lock of the scheduler (an arbitrary constant, "tgsched" in
/// ASCII), in the catalog database's own key space.
const SCHEDULER_LOCK_KEY: i64 = 0x7467_7363_6865_64;

/// The scheduler lock, held until [`SchedulerLock::release`] (or the drop, which closes the
/// connection that holds it, releasing it too).
#[derive(Debug)]
pub struct SchedulerLock {
    /// The session holding the advisory lock on PostgreSQL; none on SQLite.
    session: Option<PoolConnection<Postgres>>,
}

impl Catalog {
    /// Take the scheduler lock, waiting while another process holds it (that process is
    /// queueing due work; once it is done, what it queued is no longer due).
    ///
    /// On PostgreSQL this is a session advisory lock on a pooled connection of its own, so a
    /// process that dies while holding it releases it with its connection. On SQLite the
    /// catalog belongs to one admin process, and the lock is granted at once.
    pub async fn lock_scheduler(&self) -> Result<SchedulerLock, CatalogError> {
        let CatalogPool::Postgres(pool) = self.pool() else {
            return Ok(SchedulerLock { session: None });
        };
        let mut session = pool.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(SCHEDULER_LOCK_KEY)
            .execute(&mut *session)
            .await?;
        Ok(SchedulerLock {
            session: Some(session),
        })
    }
}

impl SchedulerLock {
    /// Release the lock and return its connection to the pool.
    pub async fn release(mut self) {
        if let Some(mut session) = self.session.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(SCHEDULER_LOCK_KEY)
                .execute(&mut *session)
                .await;
            if unlocked.is_err() {
                // A pooled connection must never keep the lock: close it instead.
                session.close_on_drop();
            }
        }
    }
}

impl Drop for SchedulerLock {
    fn drop(&mut self) {
        // Dropped without `release` (an error or a cancelled tick): the lock goes with the
        // connection rather than staying on one returned to the pool.
        if let Some(session) = self.session.as_mut() {
            session.close_on_drop();
        }
    }
}
