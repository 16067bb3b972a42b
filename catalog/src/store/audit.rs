//! The audit log: who changed what, with the value before and after.

use sqlx::types::Json;
use tenantgate_contract::time::serde_rfc3339;
use uuid::Uuid;

use super::driver::{on, CatalogRow, Id, Millis};
use super::{Catalog, WriteTx};
use crate::error::CatalogError;

/// An audit record to append.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    /// Who: the admin token's name and id, `bootstrap`, `worker`, or `cli`.
    pub actor: &'a str,
    /// What, as `resource.verb` (`tenant.create`, `shard.update`, `job.retry`, ...).
    pub action: &'a str,
    /// The object acted on (`tenant:<slug>`, `shard:<name>`, `job:<id>`).
    pub target: &'a str,
    pub tenant_id: Option<Uuid>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// One audit record as stored.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: i64,
    #[serde(with = "serde_rfc3339")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub tenant_id: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// Append an audit record in the caller's transaction, so it commits with the change it records.
pub async fn append(tx: &mut WriteTx, entry: &NewAudit<'_>) -> Result<(), CatalogError> {
    on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, target, tenant_id, before_value, after_value)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Millis::now())
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.target)
        .bind(entry.tenant_id.map(Id))
        .bind(entry.before.as_ref().map(Json))
        .bind(entry.after.as_ref().map(Json))
        .execute(db)
        .await?;
    });
    Ok(())
}

impl Catalog {
    /// Newest first: up to `limit` records, of these tenants when `tenants` is given, older than
    /// record `before_id` when given.
    pub async fn audit_log(
        &self,
        tenants: Option<&[Uuid]>,
        before_id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, CatalogError> {
        let only = match tenants {
            None => String::new(),
            Some([]) => return Ok(Vec::new()),
            // A handful of ids (one tenant, or a restricted token's), one placeholder each.
            Some(ids) => format!(
                "AND tenant_id IN ({})",
                (3..3 + ids.len())
                    .map(|i| format!("${i}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let sql = format!(
            "SELECT id, at, actor, action, target, tenant_id, before_value, after_value
             FROM audit_log
             WHERE ($1 IS NULL OR id < $1) {only}
             ORDER BY id DESC LIMIT $2"
        );
        on!(self.db(), db => {
            let mut query = sqlx::query(&sql).bind(before_id).bind(limit);
            for id in tenants.unwrap_or_default() {
                query = query.bind(Id(*id));
            }
            query
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.get("id")?,
                    at: r.millis("at")?,
                    actor: r.get("actor")?,
                    action: r.get("action")?,
                    target: r.get("target")?,
                    tenant_id: r.opt_id("tenant_id")?.map(|t| t.to_string()),
                    before: r.opt_json("before_value")?,
                    after: r.opt_json("after_value")?,
                })
            })
            .collect()
        })
    }
}
