//! Backups and restores of a tenant's database:
//!
//! ```text
//! POST /v1/tenants/{id}/backups                → 202 {backup, job_id}
//! GET  /v1/tenants/{id}/backups?limit=&cursor= → {"backups":[…], "next_cursor":…}
//! GET  /v1/backups/{id}                        → a backup
//! POST /v1/tenants/{id}/restore {backup_id, mode: "in_place"|"copy", slug?} → 202 {job_id, tenant_id}
//! ```
//!
//! The request and response types carry their OpenAPI schemas. [`create`] and [`restore`] are
//! shared with the CLI (`tenantgate backup`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::backups::{
    self, Backup, BackupFormat, BackupKind, BackupStatus, NewBackup,
};
use tenantgate_catalog::store::jobs::NewJob;
use tenantgate_catalog::store::tenants::{self, NewTenant, TenantPatch};
use tenantgate_catalog::tenant_db::db_name;
use tenantgate_catalog::{Shard, Tenant};
use tenantgate_config::db_url::Engine;
use tenantgate_contract::time::{rfc3339, serde_rfc3339};
use tenantgate_contract::TenantStatus;
use uuid::Uuid;

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use super::fields::{Name, Slug};
use super::tenants::{begin_for, find, find_any};
use crate::auth::{ScopedReader, TenantReader, TenantWriter};
use crate::backup::BackupError;
use crate::error::AdminError;
use crate::extract::{ApiJson, ApiQuery};
use crate::jobs::kind;
use crate::jobs::restore::{fresh_database, RestoreMode, RestorePayload};
use crate::state::AdminState;
use crate::write::Write;

/// A backup as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Backup)]
pub struct BackupView {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub status: BackupStatus,
    pub kind: BackupKind,
    /// `pg_custom` (a `pg_dump --format=custom` archive) or `sqlite` (a database file).
    pub format: BackupFormat,
    /// Size of the stored (encrypted) object.
    pub size_bytes: Option<i64>,
    /// SHA-256 (hex) of the stored (encrypted) object.
    pub sha256: Option<String>,
    /// The object's key in the backup store.
    pub location: Option<String>,
    pub schema_version: Option<i64>,
    pub job_id: Option<Uuid>,
    #[serde(with = "serde_rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: i64,
    #[schema(format = DateTime)]
    pub started_at: Option<String>,
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
    pub error: Option<String>,
}

impl From<Backup> for BackupView {
    fn from(b: Backup) -> BackupView {
        BackupView {
            id: b.id,
            tenant_id: b.tenant_id,
            status: b.status,
            kind: b.kind,
            format: b.format,
            size_bytes: b.size_bytes,
            sha256: b.sha256,
            location: b.location,
            schema_version: b.schema_version,
            job_id: b.job_id,
            created_at: b.created_at,
            started_at: b.started_at.map(rfc3339),
            completed_at: b.completed_at.map(rfc3339),
            error: b.error,
        }
    }
}

/// `POST /v1/tenants/{id}/backups` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BackupJob {
    backup: BackupView,
    job_id: Uuid,
}

/// `GET /v1/tenants/{id}/backups` answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BackupPage {
    backups: Vec<BackupView>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 500, nullable = false)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page (a backup id).
    #[param(nullable = false)]
    cursor: Option<Uuid>,
}

/// `POST /v1/tenants/{id}/restore` body: `{backup_id, mode: "in_place"}` or
/// `{backup_id, mode: "copy", slug}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRestore {
    pub(crate) backup_id: Uuid,
    pub(crate) mode: RestoreMode,
    /// The new tenant's slug (copy only).
    #[serde(default)]
    pub(crate) slug: Option<Slug>,
}

impl PartialSchema for StartRestore {
    fn schema() -> RefOr<Schema> {
        let shape = |mode: &str, slug: bool| {
            let o = ObjectBuilder::new()
                .schema_type(Type::Object)
                .property("backup_id", super::fields::uuid())
                .required("backup_id")
                .property(
                    "mode",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some([mode])),
                )
                .required("mode")
                .additional_properties(Some(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ));
            if slug {
                o.property("slug", Slug::schema()).required("slug")
            } else {
                o
            }
        };
        OneOfBuilder::new()
            .item(shape("in_place", false))
            .item(shape("copy", true))
            .description(Some(
                "in place (the tenant answers 503 tenant_restoring meanwhile), or as a copy: a \
                 new tenant with the given slug",
            ))
            .into()
    }
}

impl ToSchema for StartRestore {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((Slug::name().into(), Slug::schema()));
    }
}

/// `POST /v1/tenants/{id}/restore` answer: the job, and the tenant it restores (the same
/// tenant in place, the new one for a copy).
#[derive(Debug, Serialize, ToSchema)]
pub struct RestoreJob {
    pub job_id: Uuid,
    pub tenant_id: Uuid,
}

const MAX_PAGE: i64 = 500;
const DEFAULT_PAGE: i64 = 50;

/// The backup format of a tenant's shard.
async fn format_of(state: &AdminState, tenant: &Tenant) -> Result<BackupFormat, AdminError> {
    let shard = state
        .catalog
        .shard(&tenant.shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    format_of_shard(&shard)
}

/// The backup format of a shard's databases.
pub(crate) fn format_of_shard(shard: &Shard) -> Result<BackupFormat, AdminError> {
    Ok(match Engine::of_url(&shard.database_url)? {
        Engine::Postgres => BackupFormat::PgCustom,
        Engine::Sqlite => BackupFormat::Sqlite,
    })
}

/// Queue a backup of a tenant (by id or slug): the backup row (`queued`), its job and the
/// audit record in one write.
pub(crate) async fn create(
    state: &AdminState,
    actor: &str,
    id_or_slug: &str,
    kind_of: BackupKind,
) -> Result<(Backup, Uuid), AdminError> {
    let tenant = find(state, id_or_slug).await?;
    let now = tenantgate_contract::time::now_ms();
    queue(state, actor, &tenant, kind_of, now)
        .await?
        .ok_or_else(|| AdminError::Conflict("this backup is queued already".into()))
}

/// Queue a backup of `tenant` recorded as asked for at `created_at` (a scheduled backup: its
/// slot). `None` when a scheduled backup for that slot exists already.
pub(crate) async fn queue(
    state: &AdminState,
    actor: &str,
    tenant: &Tenant,
    kind_of: BackupKind,
    created_at: i64,
) -> Result<Option<(Backup, Uuid)>, AdminError> {
    if !matches!(
        tenant.status,
        TenantStatus::Active | TenantStatus::Suspended
    ) {
        return Err(AdminError::Conflict(format!(
            "a tenant in status {} cannot be backed up",
            tenant.status
        )));
    }
    if state.config.backups.recipient.is_none() {
        return Err(BackupError::NotConfigured("backups.recipient").into());
    }
    let format = format_of(state, tenant).await?;
    let (id, job_id) = (Uuid::now_v7(), Uuid::now_v7());
    let mut w = begin_for(state, tenant).await?;
    let inserted = backups::insert(
        w.conn(),
        &NewBackup {
            id,
            tenant_id: tenant.id,
            kind: kind_of,
            format,
            job_id,
            created_at,
        },
    )
    .await?;
    if !inserted {
        return Ok(None);
    }
    w.job(&NewJob {
        id: job_id,
        kind: kind::BACKUP,
        tenant_id: Some(tenant.id),
        payload: json!({ "backup_id": id }),
        max_attempts: i64::from(state.config.admin.job_max_attempts),
        run_at: tenantgate_contract::time::now_ms(),
    })
    .await?;
    w.audit(NewAudit {
        actor,
        action: "backup.create",
        target: &format!("tenant:{}", tenant.slug),
        tenant_id: Some(tenant.id),
        before: None,
        after: Some(json!({ "backup": id, "kind": kind_of, "status": "queued", "job": job_id })),
    })
    .await?;
    let backup = backups::get(w.conn(), id)
        .await?
        .ok_or(AdminError::NotFound("backup"))?;
    w.commit().await?;
    Ok(Some((backup, job_id)))
}

/// Start restoring backup `req.backup_id` of a tenant, in place (the tenant is `restoring`
/// until the job swaps the restored database in) or as a copy (a new tenant, no domains).
pub(crate) async fn restore(
    state: &AdminState,
    actor: &str,
    id_or_slug: &str,
    req: StartRestore,
) -> Result<RestoreJob, AdminError> {
    // The schema ties `slug` to the mode; these hold for requests checked against it.
    match (req.mode, &req.slug) {
        (RestoreMode::Copy, None) => {
            return Err(AdminError::field("slug", "is required for a copy"))
        }
        (RestoreMode::InPlace, Some(_)) => {
            return Err(AdminError::field("slug", "applies only to mode \"copy\""))
        }
        _ => {}
    }
    let (backup_id, mode) = (req.backup_id, req.mode);
    // A deleted tenant's backups (taken before the drop) can still be restored as a copy.
    let tenant = match mode {
        RestoreMode::Copy => find_any(state, id_or_slug).await?,
        RestoreMode::InPlace => find(state, id_or_slug).await?,
    };
    let backup = state
        .catalog
        .backup(backup_id)
        .await?
        .filter(|b| b.tenant_id == tenant.id)
        // The tenant (the route's resource) exists; a backup id in the body that is not one of
        // its backups is a conflict with what it has, not a missing route resource.
        .ok_or_else(|| AdminError::Conflict("the tenant has no such backup".into()))?;
    if backup.status != BackupStatus::Completed {
        return Err(AdminError::Conflict(format!(
            "the backup is {}; only a completed backup can be restored",
            backup.status
        )));
    }
    if state.config.backups.identity_file.is_none() {
        return Err(BackupError::NotConfigured("backups.identity_file").into());
    }
    if format_of(state, &tenant).await? != backup.format {
        return Err(AdminError::Conflict(
            "the backup was taken on another kind of database than the tenant's shard".into(),
        ));
    }
    let job_id = Uuid::now_v7();
    let now = tenantgate_contract::time::now_ms();
    let max_attempts = i64::from(state.config.admin.job_max_attempts);
    match mode {
        RestoreMode::InPlace => {
            if !matches!(
                tenant.status,
                TenantStatus::Active | TenantStatus::Suspended
            ) {
                return Err(AdminError::Conflict(format!(
                    "a tenant in status {} cannot be restored",
                    tenant.status
                )));
            }
            let payload = RestorePayload {
                backup_id,
                mode,
                database: fresh_database(tenant.id, job_id),
                resume: Some(tenant.status),
            };
            let mut w = begin_for(state, &tenant).await?;
            let patch = TenantPatch {
                status: Some(TenantStatus::Restoring),
                bump_epoch: true,
                ..TenantPatch::default()
            };
            tenants::update(w.conn(), tenant.id, &patch).await?;
            w.tenant_change(tenant.id, &[]).await?;
            w.job(&NewJob {
                id: job_id,
                kind: kind::RESTORE,
                tenant_id: Some(tenant.id),
                payload: serde_json::to_value(&payload).expect("payload serialises"),
                max_attempts,
                run_at: now,
            })
            .await?;
            w.audit(NewAudit {
                actor,
                action: "tenant.restore",
                target: &format!("tenant:{}", tenant.slug),
                tenant_id: Some(tenant.id),
                before: Some(json!({ "status": tenant.status, "database": tenant.db_name })),
                after: Some(json!({
                    "status": "restoring", "backup": backup.id, "mode": "in_place", "job": job_id,
                })),
            })
            .await?;
            w.commit().await?;
            Ok(RestoreJob {
                job_id,
                tenant_id: tenant.id,
            })
        }
        RestoreMode::Copy => {
            let slug = req.slug.expect("checked above").0;
            if state.catalog.tenant(&slug).await?.is_some() {
                return Err(AdminError::Conflict(format!("slug {slug} is taken")));
            }
            let id = Uuid::now_v7();
            let name: String = format!("{} (restored)", tenant.name)
                .chars()
                .take(Name::MAX_CHARS)
                .collect();
            let new = NewTenant {
                id,
                slug: slug.clone(),
                name,
                status: TenantStatus::Provisioning,
                shard: tenant.shard.clone(),
                domains: Vec::new(),
                rate_limit: tenant.rate_limit,
                settings: tenant.settings.clone(),
                db_name: db_name(id),
            };
            let payload = RestorePayload {
                backup_id,
                mode,
                database: new.db_name.clone(),
                resume: None,
            };
            let mut w = Write::begin(state).await?;
            tenants::insert(w.conn(), &new).await?;
            w.tenant_change(id, &[]).await?;
            w.job(&NewJob {
                id: job_id,
                kind: kind::RESTORE,
                tenant_id: Some(id),
                payload: serde_json::to_value(&payload).expect("payload serialises"),
                max_attempts,
                run_at: now,
            })
            .await?;
            w.audit(NewAudit {
                actor,
                action: "tenant.restore_copy",
                target: &format!("tenant:{slug}"),
                tenant_id: Some(id),
                before: None,
                after: Some(json!({
                    "slug": slug, "status": "provisioning", "shard": new.shard,
                    "source_tenant": tenant.id, "backup": backup.id, "job": job_id,
                })),
            })
            .await?;
            w.commit().await?;
            Ok(RestoreJob {
                job_id,
                tenant_id: id,
            })
        }
    }
}

/// A page of a tenant's backups, newest first.
pub(crate) async fn list(
    state: &AdminState,
    id_or_slug: &str,
    limit: Option<i64>,
    cursor: Option<Uuid>,
) -> Result<(Vec<Backup>, Option<String>), AdminError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AdminError::field(
            "limit",
            format!("must be between 1 and {MAX_PAGE}"),
        ));
    }
    // Backups of a deleted tenant stay listed: they are what a copy is restored from.
    let tenant = find_any(state, id_or_slug).await?;
    // One row more than asked tells whether another page follows.
    let mut page = state
        .catalog
        .backups_of_tenant(tenant.id, cursor, limit + 1)
        .await?;
    let next = if page.len() as i64 > limit {
        page.truncate(limit as usize);
        page.last().map(|b| b.id.to_string())
    } else {
        None
    };
    Ok((page, next))
}

pub(crate) async fn create_handler(
    State(state): State<AdminState>,
    TenantWriter(actor): TenantWriter,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<BackupJob>), AdminError> {
    let (backup, job_id) = create(&state, &actor.name, &id, BackupKind::Manual).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(BackupJob {
            backup: backup.into(),
            job_id,
        }),
    ))
}

pub(crate) async fn list_handler(
    State(state): State<AdminState>,
    _: TenantReader,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<BackupPage>, AdminError> {
    let (page, next_cursor) = list(&state, &id, q.limit, q.cursor).await?;
    Ok(Json(BackupPage {
        backups: page.into_iter().map(BackupView::from).collect(),
        next_cursor,
    }))
}

pub(crate) async fn get_handler(
    State(state): State<AdminState>,
    ScopedReader(actor): ScopedReader,
    Path(id): Path<String>,
) -> Result<Json<BackupView>, AdminError> {
    let backup = match Uuid::parse_str(&id) {
        Ok(id) => state.catalog.backup(id).await?,
        Err(_) => None,
    };
    // A restricted token gets 403 for a backup that does not exist too: it learns nothing
    // about backups outside its tenants.
    actor
        .reach
        .check(backup.as_ref().map(|b| b.tenant_id), "backup")?;
    Ok(Json(backup.ok_or(AdminError::NotFound("backup"))?.into()))
}

pub(crate) async fn restore_handler(
    State(state): State<AdminState>,
    TenantWriter(actor): TenantWriter,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<StartRestore>,
) -> Result<(StatusCode, Json<RestoreJob>), AdminError> {
    // A copy creates a tenant, which is fleet-wide like `POST /v1/tenants`.
    if req.mode == RestoreMode::Copy && actor.reach.ids().is_some() {
        return Err(AdminError::OutsideScope(
            "restore as a copy (creates a tenant)",
        ));
    }
    let started = restore(&state, &actor.name, &id, req).await?;
    Ok((StatusCode::ACCEPTED, Json(started)))
}
