//! The `data_retention` job: delete a tenant's app rows older than its
//! `settings.data_retention_days` from the tables its schema marks as retention-managed.
//!
//! The tenant schema lists those tables in `retention_managed (table_name, timestamp_column)`
//! (tenant migration 0002: `items` by `created_at`; the column holds milliseconds since the Unix
//! epoch). The job connects with the tenant's own login, like the app, deletes
//! `WHERE <column> < now - days` from each table, and audits the counts per table
//! (`tenant.data_retention`). It is queued once a day per tenant by the scheduler
//! ([`crate::scheduler`]); running it twice deletes nothing the second time.

use serde_json::json;
use sqlx::Row;
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::jobs::Job;
use tenantgate_catalog::tenant_db::TenantDbTarget;
use tenantgate_contract::{TenantSettings, TenantStatus};

use super::succeed;
use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

const DAY_MS: i64 = 86_400_000;

/// A table or column name the job may put into SQL: lower-case letters, digits and `_`,
/// starting with a letter or `_` (what the tenant migrations use), at most 63 bytes.
fn identifier(name: &str) -> Option<&str> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then_some(name)
}

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let tenant_id = job
        .tenant_id
        .ok_or_else(|| AdminError::Job("data retention job without a tenant".into()))?;
    let tenant = state
        .catalog
        .tenant(&tenant_id.to_string())
        .await?
        .filter(|t| matches!(t.status, TenantStatus::Active | TenantStatus::Suspended));
    let days = tenant.as_ref().and_then(|t| {
        TenantSettings::read_stored(&t.settings)
            .data_retention_days
            .map(|d| d.get())
    });
    let (Some(tenant), Some(days)) = (tenant, days) else {
        // Deleted, moving or restoring meanwhile, or the setting was removed: nothing to do.
        let mut w = Write::begin(state).await?;
        if !succeed(&mut w, job, worker).await? {
            return Err(AdminError::Job("lost the job's lease".into()));
        }
        return w.commit().await;
    };
    let cutoff = tenantgate_contract::time::now_ms() - i64::from(days) * DAY_MS;
    let shard = state
        .catalog
        .shard(&tenant.shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let target = TenantDbTarget::resolve(&shard, &tenant, &state.config.security.credential_key)?;
    let pool = tenantgate_catalog::db::connect(&target.primary, 1).await?;
    let deleted = async {
        let managed = sqlx::query(
            "SELECT table_name, timestamp_column FROM retention_managed ORDER BY table_name",
        )
        .fetch_all(&pool)
        .await?;
        let mut deleted = serde_json::Map::new();
        for row in managed {
            let (table, column): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let (Some(t), Some(c)) = (identifier(&table), identifier(&column)) else {
                return Err(AdminError::Job(format!(
                    "retention_managed names {table:?}.{column:?}, which is not a plain identifier"
                )));
            };
            let sql = format!("DELETE FROM \"{t}\" WHERE \"{c}\" < $1");
            let n = sqlx::query(&sql)
                .bind(cutoff)
                .execute(&pool)
                .await?
                .rows_affected();
            deleted.insert(table, json!(n));
        }
        Ok::<_, AdminError>(deleted)
    }
    .await;
    pool.close().await;
    let deleted = deleted?;
    let mut w = Write::begin(state).await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    w.audit(NewAudit {
        actor: "worker",
        action: "tenant.data_retention",
        target: &format!("tenant:{}", tenant.slug),
        tenant_id: Some(tenant.id),
        before: None,
        after: Some(json!({
            "data_retention_days": days,
            "cutoff": tenantgate_contract::time::rfc3339(cutoff),
            "deleted": deleted,
            "job": job.id,
        })),
    })
    .await?;
    w.commit().await
}

#[cfg(test)]
mod tests {
    use super::identifier;

    #[test]
    fn only_plain_identifiers() {
        for ok in ["items", "created_at", "_x1"] {
            assert_eq!(identifier(ok), Some(ok));
        }
        for bad in [
            "",
            "Items",
            "1x",
            "items; DROP TABLE users",
            "a\"b",
            "a.b",
            &"x".repeat(64),
        ] {
            assert_eq!(identifier(bad), None, "{bad}");
        }
    }
}
