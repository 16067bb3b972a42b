//! Epoch fencing (DESIGN §5, issue 14): the one rule that keeps a request signed with a stale
//! route away from a copy of the tenant's database that is no longer (or not yet) its own.
//!
//! Every copy of a tenant database records the route epoch that made it the tenant's current
//! copy (`tenantgate_epoch`, written by provisioning, restore and moves). A request whose signed
//! epoch is older than the epoch of the copy it would use was routed by an edge that has not
//! seen the change: it is refused with 503 `tenant_moved` (retryable; the edge's retry carries
//! the new route once its feed catches up). The copy's epoch is known two ways, and both go
//! through [`check`]:
//!
//! - from the catalog, before any database is opened: when the catalog (as this process last
//!   read it) has the tenant on another shard, the copy here is stale as of the tenant's catalog
//!   epoch ([`crate::context`]);
//! - from the database itself, when a tenant pool hands out a connection
//!   ([`crate::pools`]): this catches a process whose catalog cache has not caught up yet,
//!   which is the case the catalog check cannot see.

use crate::error::AppError;

/// Refuse a request signed with `signed` that would use a copy current as of `copy_epoch`.
pub(crate) fn check(signed: i64, copy_epoch: i64) -> Result<(), AppError> {
    if signed < copy_epoch {
        return Err(AppError::TenantMoved);
    }
    Ok(())
}

/// The epoch a tenant database records, 0 when it records none (a tenant provisioned before
/// the epoch table existed, not moved or restored since: nothing to fence against).
pub(crate) async fn recorded(conn: &mut sqlx::AnyConnection) -> Result<i64, sqlx::Error> {
    let read = sqlx::query_scalar::<_, i64>("SELECT epoch FROM tenantgate_epoch WHERE id = 1")
        .fetch_optional(conn)
        .await;
    match read {
        Ok(epoch) => Ok(epoch.unwrap_or(0)),
        // A schema older than tenant migration 0003 (the fleet migration has not reached it).
        Err(sqlx::Error::Database(e))
            if e.code().as_deref() == Some("42P01") || e.message().contains("no such table") =>
        {
            Ok(0)
        }
        Err(e) => Err(e),
    }
}
