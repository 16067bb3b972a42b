//! Reads of a tenant's state inside a write transaction, for checks that must not race.

use sqlx::{AnyConnection, Row};
use tenantgate_contract::TenantStatus;
use uuid::Uuid;

use crate::error::CatalogError;

/// The tenant's status as the caller's transaction sees it (`None` when it does not exist).
///
/// Inside [`super::Catalog::begin_write`] no other catalog writer runs, so a status read here
/// stays true until commit: use it to make "only if still provisioning" style updates atomic.
pub async fn status(
    conn: &mut AnyConnection,
    id: Uuid,
) -> Result<Option<TenantStatus>, CatalogError> {
    let row = sqlx::query("SELECT status FROM tenants WHERE id = $1")
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| {
        let text: String = r.try_get(0)?;
        text.parse()
            .map_err(|e| crate::error::corrupt("tenants.status", e))
    })
    .transpose()
}
