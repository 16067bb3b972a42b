//! Reads of a tenant's state inside a write transaction, for checks that must not race.

use tenantgate_contract::TenantStatus;
use uuid::Uuid;

use super::driver::{on, CatalogRow, Id};
use super::WriteTx;
use crate::error::CatalogError;

/// The tenant's status as the caller's transaction sees it (`None` when it does not exist).
///
/// Inside [`super::Catalog::begin_write`] no other catalog writer runs, so a status read here
/// stays true until commit: use it to make "only if still provisioning" style updates atomic.
pub async fn status(tx: &mut WriteTx, id: Uuid) -> Result<Option<TenantStatus>, CatalogError> {
    let text: Option<String> = on!(tx.db(), db => {
        sqlx::query("SELECT status FROM tenants WHERE id = $1")
            .bind(Id(id))
            .fetch_optional(db)
            .await?
            .map(|r| r.get("status"))
            .transpose()?
    });
    text.map(|text| {
        text.parse()
            .map_err(|e| crate::error::corrupt("tenants.status", e))
    })
    .transpose()
}

/// The tenant's route epoch as the caller's transaction sees it (`None` when it does not
/// exist). A job that wrote the epoch a change will produce into a tenant database checks
/// here, before committing the change, that the epoch is still the one it counted from.
pub async fn epoch(tx: &mut WriteTx, id: Uuid) -> Result<Option<i64>, CatalogError> {
    Ok(on!(tx.db(), db => {
        sqlx::query("SELECT epoch FROM tenants WHERE id = $1")
            .bind(Id(id))
            .fetch_optional(db)
            .await?
            .map(|r| r.get::<i64>("epoch"))
            .transpose()?
    }))
}
