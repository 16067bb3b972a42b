//! `/v1/tenants`: create (202 + provisioning job), read, list, patch, delete, domains.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::jobs::{self, NewJob};
use tenantgate_catalog::store::tenant_state;
use tenantgate_catalog::store::tenants::{self, NewTenant, TenantFilter, TenantPatch};
use tenantgate_catalog::tenant_db::db_name;
use tenantgate_catalog::{ShardStatus, Tenant};
use tenantgate_config::db_url::Engine;
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::{RateLimit, TenantSettings, TenantStatus};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::fields::{Domain, Name, Slug};
use crate::auth::{ScopedReader, TenantReader, TenantWriter, Writer};
use crate::error::{AdminError, FieldError};
use crate::extract::{ApiJson, ApiQuery};
use crate::jobs::kind;
use crate::state::AdminState;
use crate::write::Write;

/// `POST /v1/tenants` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateTenant {
    pub(crate) slug: Slug,
    pub(crate) name: Name,
    /// `host` or `host/prefix`; the first is the primary domain.
    #[schema(schema_with = super::fields::domain_list)]
    pub(crate) domains: Vec<Domain>,
    /// Shard to place the tenant on; default: the active shard with the fewest tenants.
    #[serde(default)]
    pub(crate) shard: Option<Slug>,
    /// The tenant's own rate limit; default: the edge's.
    #[serde(default)]
    pub(crate) rate_limit: Option<RateLimit>,
    #[serde(default)]
    #[schema(value_type = Option<TenantSettings>)]
    pub(crate) settings: Option<Value>,
}

/// What `PATCH` may set a tenant's status to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Activation {
    Active,
    Suspended,
}

/// `PATCH /v1/tenants/{id}` body. `rate_limit: null` returns the tenant to the edge default;
/// `settings` is merged into the current settings (a `null` value removes a key).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchTenant {
    #[serde(default)]
    name: Option<Name>,
    #[serde(default)]
    status: Option<Activation>,
    /// `null` returns the tenant to the edge's default limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<RateLimit>)]
    rate_limit: Option<Option<RateLimit>>,
    #[serde(default)]
    #[schema(value_type = Option<tenantgate_contract::settings::SettingsPatch>)]
    settings: Option<Value>,
}

/// Distinguishes an explicit `null` (`Some(None)`) from an absent field (`None`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    #[param(nullable = false)]
    status: Option<TenantStatus>,
    /// Shard name.
    #[param(nullable = false)]
    shard: Option<String>,
    /// Highest tenant migration applied.
    #[param(nullable = false)]
    schema_version: Option<i64>,
    /// Page size, default 50.
    #[param(minimum = 1, maximum = 500, nullable = false)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(nullable = false)]
    cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQuery {
    /// Drop the database now instead of after the grace period.
    #[param(nullable = false)]
    purge: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct MoveTenant {
    shard: Slug,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MoveJob {
    job_id: Uuid,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddDomain {
    domain: Domain,
}

/// A tenant and the job working on it (202 answers).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantJob {
    tenant: Tenant,
    job_id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TenantPage {
    tenants: Vec<Tenant>,
    next_cursor: Option<String>,
}

/// Largest page of a tenant listing.
const MAX_PAGE: i64 = 500;
const DEFAULT_PAGE: i64 = 50;

/// A tenant by id or slug, or 404; a deleted tenant is gone for the API too (404), except
/// where [`find_any`] is used.
pub(crate) async fn find(state: &AdminState, id_or_slug: &str) -> Result<Tenant, AdminError> {
    let tenant = find_any(state, id_or_slug).await?;
    if tenant.status == TenantStatus::Deleted {
        return Err(AdminError::NotFound("tenant"));
    }
    Ok(tenant)
}

/// A tenant by id or slug, deleted ones included (deleting again, freeing their domains,
/// their backups), or 404.
pub(crate) async fn find_any(state: &AdminState, id_or_slug: &str) -> Result<Tenant, AdminError> {
    state
        .catalog
        .tenant(id_or_slug)
        .await?
        .ok_or(AdminError::NotFound("tenant"))
}

/// A domain the schema let through, normalised by the edge's own parser.
fn domain_spec(field: String, domain: &Domain) -> Result<DomainSpec, FieldError> {
    DomainSpec::parse(domain.as_str()).map_err(|e| FieldError::new(field, e.to_string()))
}

fn target(t: &Tenant) -> String {
    format!("tenant:{}", t.slug)
}

fn json(t: &Tenant) -> Value {
    serde_json::to_value(t).expect("tenant serialises")
}

/// The shard a new tenant goes to: the requested one if it exists and is active, else the
/// active shard with the fewest tenants (ties broken by name, so placement is deterministic).
async fn place(state: &AdminState, requested: Option<&str>) -> Result<String, AdminError> {
    if let Some(name) = requested {
        let shard = state
            .catalog
            .shard(name)
            .await?
            .ok_or(AdminError::NotFound("shard"))?;
        if shard.status != ShardStatus::Active {
            return Err(AdminError::Conflict(format!(
                "shard {name:?} is {} and takes no new tenants",
                shard.status
            )));
        }
        return Ok(shard.name);
    }
    let active: Vec<String> = state
        .catalog
        .shards()
        .await?
        .into_iter()
        .filter(|s| s.status == ShardStatus::Active)
        .map(|s| s.name)
        .collect();
    let counts = state.catalog.tenant_counts().await?;
    counts
        .into_iter()
        .filter(|(name, _)| active.contains(name))
        .min_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)))
        .map(|(name, _)| name)
        .ok_or_else(|| {
            AdminError::Conflict("there is no active shard to place the tenant on".into())
        })
}

/// The settings a request gives (checked against their schema), read by the contract's
/// typed settings; what the schema cannot say (a merge past the flag limit) is a 422.
fn settings_of(
    parsed: Result<TenantSettings, tenantgate_contract::settings::SettingsErrors>,
) -> Result<TenantSettings, AdminError> {
    parsed.map_err(|invalid| {
        AdminError::Invalid(
            invalid
                .0
                .into_iter()
                .map(|e| FieldError::new(e.field, e.message))
                .collect(),
        )
    })
}

/// Create a tenant from a request checked against its schema, in status `provisioning` with
/// its provisioning job, in one catalog write. Returns the tenant and the job id. Used by the
/// API and by [`crate::ensure_tenant`].
pub(crate) async fn create(
    state: &AdminState,
    actor: &str,
    req: CreateTenant,
) -> Result<(Tenant, Uuid), AdminError> {
    let specs = req
        .domains
        .iter()
        .enumerate()
        .map(|(i, d)| domain_spec(format!("domains[{i}]"), d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| AdminError::Invalid(vec![e]))?;
    // The schema refuses the same text twice; two spellings of one domain are a conflict.
    for (i, spec) in specs.iter().enumerate() {
        if specs[..i].contains(spec) {
            return Err(AdminError::Conflict(format!("{spec} is listed twice")));
        }
    }
    let settings = match &req.settings {
        Some(value) => settings_of(TenantSettings::from_value(value))?,
        None => TenantSettings::default(),
    };
    let shard = place(state, req.shard.as_ref().map(Slug::as_str)).await?;
    let slug = req.slug.0;
    if state.catalog.tenant(&slug).await?.is_some() {
        return Err(AdminError::Conflict(format!("slug {slug} is taken")));
    }

    let id = Uuid::now_v7();
    let new = NewTenant {
        id,
        slug,
        name: req.name.0,
        status: TenantStatus::Provisioning,
        shard,
        domains: specs.clone(),
        rate_limit: req.rate_limit,
        settings: settings.to_value(),
        db_name: db_name(id),
    };
    let now = tenantgate_contract::time::now_ms();
    let tenant = Tenant {
        id,
        slug: new.slug.clone(),
        name: new.name.clone(),
        status: new.status,
        shard: new.shard.clone(),
        epoch: 1,
        domains: specs.iter().map(ToString::to_string).collect(),
        rate_limit: new.rate_limit,
        settings: new.settings.clone(),
        schema_version: 0,
        migration_error: None,
        last_error: None,
        db_name: new.db_name.clone(),
        db_credentials: None,
        created_at: now,
        updated_at: now,
    };
    let job_id = Uuid::now_v7();
    let mut w = Write::begin(state).await?;
    tenants::insert(w.conn(), &new).await?;
    w.job(&NewJob {
        id: job_id,
        kind: kind::PROVISION,
        tenant_id: Some(id),
        payload: serde_json::json!({}),
        max_attempts: i64::from(state.config.admin.job_max_attempts),
        run_at: now,
    })
    .await?;
    for spec in &specs {
        crate::jobs::certificate::enqueue(&mut w, state, id, spec).await?;
    }
    w.tenant_change(id, &[]).await?;
    w.audit(NewAudit {
        actor,
        action: "tenant.create",
        target: &target(&tenant),
        tenant_id: Some(id),
        before: None,
        after: Some(json(&tenant)),
    })
    .await?;
    w.event("tenant.created", &tenant).await?;
    w.commit().await?;
    tracing::info!(tenant = %tenant.slug, shard = %tenant.shard, %job_id, "tenant created");
    Ok((tenant, job_id))
}

pub(crate) async fn create_handler(
    State(state): State<AdminState>,
    Writer(actor): Writer,
    ApiJson(req): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Json<TenantJob>), AdminError> {
    let (tenant, job_id) = create(&state, &actor.name, req).await?;
    Ok((StatusCode::ACCEPTED, Json(TenantJob { tenant, job_id })))
}

pub(crate) async fn get_handler(
    State(state): State<AdminState>,
    _: TenantReader,
    Path(id): Path<String>,
) -> Result<Json<Tenant>, AdminError> {
    Ok(Json(find(&state, &id).await?))
}

pub(crate) async fn list_handler(
    State(state): State<AdminState>,
    ScopedReader(actor): ScopedReader,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<TenantPage>, AdminError> {
    let status = q.status;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
    // One row more than asked tells whether another page follows.
    let mut tenants = state
        .catalog
        .list_tenants(&TenantFilter {
            status,
            shard: q.shard,
            schema_version: q.schema_version,
            cursor: q.cursor,
            limit: limit + 1,
            ids: actor.reach.ids().map(<[_]>::to_vec),
        })
        .await?;
    let next_cursor = if tenants.len() as i64 > limit {
        tenants.truncate(limit as usize);
        tenants.last().map(|t| t.slug.clone())
    } else {
        None
    };
    Ok(Json(TenantPage {
        tenants,
        next_cursor,
    }))
}

/// Apply a validated patch to `before`, for the audit record and the response.
fn patched(before: &Tenant, patch: &TenantPatch) -> Tenant {
    let mut t = before.clone();
    if let Some(name) = &patch.name {
        t.name = name.clone();
    }
    if let Some(status) = patch.status {
        t.status = status;
    }
    if let Some(limit) = patch.rate_limit {
        t.rate_limit = limit;
    }
    if let Some(settings) = &patch.settings {
        t.settings = settings.clone();
    }
    if patch.bump_epoch {
        t.epoch += 1;
    }
    t.updated_at = tenantgate_contract::time::now_ms();
    t
}

/// Run a tenant write that requires the tenant to still be in `before.status` (checked under
/// the catalog write lock); 409 when it changed in between.
pub(crate) async fn begin_for<'a>(
    state: &'a AdminState,
    before: &Tenant,
) -> Result<Write<'a>, AdminError> {
    let mut w = Write::begin(state).await?;
    match tenant_state::status(w.conn(), before.id).await? {
        Some(s) if s == before.status => Ok(w),
        Some(_) => Err(AdminError::Conflict(
            "the tenant changed concurrently; retry".into(),
        )),
        None => Err(AdminError::NotFound("tenant")),
    }
}

pub(crate) async fn patch_handler(
    State(state): State<AdminState>,
    TenantWriter(actor): TenantWriter,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<PatchTenant>,
) -> Result<Json<Tenant>, AdminError> {
    let status = req.status.map(|s| match s {
        Activation::Active => TenantStatus::Active,
        Activation::Suspended => TenantStatus::Suspended,
    });
    let before = find(&state, &id).await?;
    let settings = match &req.settings {
        Some(patch) => Some(settings_of(TenantSettings::merge(&before.settings, patch))?),
        None => None,
    };
    if status.is_some()
        && !matches!(
            before.status,
            TenantStatus::Active | TenantStatus::Suspended
        )
    {
        return Err(AdminError::Conflict(format!(
            "a tenant in status {} cannot be activated or suspended",
            before.status
        )));
    }
    let status_changes = status.is_some_and(|s| s != before.status);
    let patch = TenantPatch {
        name: req.name.map(|n| n.0),
        status: status.filter(|_| status_changes),
        rate_limit: req.rate_limit,
        settings: settings.map(|s| s.to_value()),
        bump_epoch: status_changes,
        ..TenantPatch::default()
    };
    let after = patched(&before, &patch);
    let mut w = begin_for(&state, &before).await?;
    tenants::update(w.conn(), before.id, &patch).await?;
    w.tenant_change(before.id, &[]).await?;
    w.audit(NewAudit {
        actor: &actor.name,
        action: "tenant.update",
        target: &target(&before),
        tenant_id: Some(before.id),
        before: Some(json(&before)),
        after: Some(json(&after)),
    })
    .await?;
    if status_changes {
        let event = match after.status {
            TenantStatus::Suspended => "tenant.suspended",
            _ => "tenant.activated",
        };
        w.event(event, &after).await?;
    }
    w.commit().await?;
    Ok(Json(find(&state, &before.id.to_string()).await?))
}

/// Mark a tenant deleted now (the edge answers 410 at once) and schedule the drop of its
/// database after the deletion grace, or now with `purge`. Deleting a deleted tenant again with
/// `purge` brings its scheduled drop forward.
pub(crate) async fn delete(
    state: &AdminState,
    actor: &str,
    id_or_slug: &str,
    purge: bool,
) -> Result<(Tenant, Uuid), AdminError> {
    let before = find_any(state, id_or_slug).await?;
    let now = tenantgate_contract::time::now_ms();
    let run_at = if purge {
        now
    } else {
        now + state.config.admin.deletion_grace.as_millis() as i64
    };
    let mut w = begin_for(state, &before).await?;
    let pending = jobs::pending_for_tenant(w.conn(), before.id, kind::DROP).await?;
    // A queued provisioning job (perhaps waiting out a backoff) is brought forward: it sees
    // the deletion and ends at once, and the drop job waits for that.
    if let Some(provision) = jobs::pending_for_tenant(w.conn(), before.id, kind::PROVISION).await? {
        jobs::reschedule(w.conn(), provision.id, now).await?;
        w.wake_worker();
    }
    if before.status == TenantStatus::Deleted && !purge {
        return match pending {
            Some(job) => Ok((before, job.id)),
            None => Err(AdminError::Conflict("the tenant is already deleted".into())),
        };
    }
    let after = if before.status == TenantStatus::Deleted {
        before.clone()
    } else {
        let patch = TenantPatch {
            status: Some(TenantStatus::Deleted),
            bump_epoch: true,
            ..TenantPatch::default()
        };
        tenants::update(w.conn(), before.id, &patch).await?;
        w.tenant_change(before.id, &[]).await?;
        patched(&before, &patch)
    };
    let job_id = match pending {
        Some(job) => {
            jobs::reschedule(w.conn(), job.id, run_at.min(job.run_at)).await?;
            w.wake_worker();
            job.id
        }
        None => {
            let job_id = Uuid::now_v7();
            w.job(&NewJob {
                id: job_id,
                kind: kind::DROP,
                tenant_id: Some(before.id),
                payload: serde_json::json!({}),
                max_attempts: i64::from(state.config.admin.job_max_attempts),
                run_at,
            })
            .await?;
            job_id
        }
    };
    w.audit(NewAudit {
        actor,
        action: if purge {
            "tenant.delete_purge"
        } else {
            "tenant.delete"
        },
        target: &target(&before),
        tenant_id: Some(before.id),
        before: Some(json(&before)),
        after: Some(json(&after)),
    })
    .await?;
    if before.status != TenantStatus::Deleted {
        w.event("tenant.deleted", &after).await?;
    }
    w.commit().await?;
    Ok((after, job_id))
}

pub(crate) async fn delete_handler(
    State(state): State<AdminState>,
    TenantWriter(actor): TenantWriter,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<(StatusCode, Json<TenantJob>), AdminError> {
    let (tenant, job_id) = delete(&state, &actor.name, &id, q.purge.unwrap_or(false)).await?;
    Ok((StatusCode::ACCEPTED, Json(TenantJob { tenant, job_id })))
}

pub(crate) async fn add_domain_handler(
    State(state): State<AdminState>,
    TenantWriter(actor): TenantWriter,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<AddDomain>,
) -> Result<(StatusCode, Json<Tenant>), AdminError> {
    let spec =
        domain_spec("domain".into(), &req.domain).map_err(|e| AdminError::Invalid(vec![e]))?;
    let before = find(&state, &id).await?;
    let mut after = before.clone();
    after.domains.push(spec.to_string());
    let mut w = begin_for(&state, &before).await?;
    tenants::insert_domain(w.conn(), before.id, &spec, before.domains.is_empty()).await?;
    crate::jobs::certificate::enqueue(&mut w, &state, before.id, &spec).await?;
    w.tenant_change(before.id, &[]).await?;
    w.audit(NewAudit {
        actor: &actor.name,
        action: "tenant.domain_add",
        target: &target(&before),
        tenant_id: Some(before.id),
        before: Some(serde_json::json!({ "domains": before.domains })),
        after: Some(serde_json::json!({ "domains": after.domains })),
    })
    .await?;
    w.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(find(&state, &before.id.to_string()).await?),
    ))
}

pub(crate) async fn remove_domain_handler(
    State(state): State<AdminState>,
    TenantWriter(actor): TenantWriter,
    Path((id, domain)): Path<(String, String)>,
) -> Result<Json<Tenant>, AdminError> {
    // A path that is no valid domain names no domain of the tenant.
    let spec = DomainSpec::parse(&domain).map_err(|_| AdminError::NotFound("domain"))?;
    // A deleted tenant's domains can still be removed, to free them for another tenant.
    let before = find_any(&state, &id).await?;
    let text = spec.to_string();
    if !before.domains.contains(&text) {
        return Err(AdminError::NotFound("domain"));
    }
    if before.domains.len() == 1 && before.status != TenantStatus::Deleted {
        return Err(AdminError::Conflict(
            "a tenant keeps at least one domain; add another first".into(),
        ));
    }
    let after: Vec<&String> = before.domains.iter().filter(|d| **d != text).collect();
    let mut w = begin_for(&state, &before).await?;
    tenants::delete_domain(w.conn(), before.id, &spec).await?;
    // The removed host no longer belongs to the tenant, but caches must still forget it.
    w.tenant_change(before.id, std::slice::from_ref(&spec.host))
        .await?;
    w.audit(NewAudit {
        actor: &actor.name,
        action: "tenant.domain_remove",
        target: &target(&before),
        tenant_id: Some(before.id),
        before: Some(serde_json::json!({ "domains": before.domains })),
        after: Some(serde_json::json!({ "domains": after })),
    })
    .await?;
    w.commit().await?;
    Ok(Json(find(&state, &before.id.to_string()).await?))
}

/// Start moving a tenant to another shard: a `move_tenant` job copies it while it serves, then
/// holds it (status `moving`) for the cut-over (see `jobs::relocate`). Between two SQLite
/// shards, or two PostgreSQL shards (on one server the database stays; to another server it is
/// copied with logical replication). One move at a time per tenant.
pub(crate) async fn move_handler(
    State(state): State<AdminState>,
    Writer(actor): Writer,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<MoveTenant>,
) -> Result<(StatusCode, Json<MoveJob>), AdminError> {
    let job_id = start_move(&state, &actor.name, &id, req.shard.as_str()).await?;
    Ok((StatusCode::ACCEPTED, Json(MoveJob { job_id })))
}

/// Check and queue a move of tenant `id` to shard `shard` (the API's and `tenantgate
/// rebalance`'s one way in); the job's id.
pub(crate) async fn start_move(
    state: &AdminState,
    actor: &str,
    id: &str,
    shard: &str,
) -> Result<Uuid, AdminError> {
    let state = state.clone();
    let before = find(&state, id).await?;
    let target_shard = state
        .catalog
        .shard(shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    if target_shard.status != ShardStatus::Active {
        return Err(AdminError::Conflict(format!(
            "shard {:?} is {} and takes no new tenants",
            shard, target_shard.status
        )));
    }
    if target_shard.name == before.shard {
        return Err(AdminError::Conflict(format!(
            "the tenant is on {} already",
            before.shard
        )));
    }
    if !matches!(
        before.status,
        TenantStatus::Active | TenantStatus::Suspended
    ) {
        return Err(AdminError::Conflict(format!(
            "a tenant in status {} cannot be moved",
            before.status
        )));
    }
    let source = state
        .catalog
        .shard(&before.shard)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    let from = Engine::of_url(&source.database_url)?;
    let to = Engine::of_url(&target_shard.database_url)?;
    if from != to {
        return Err(AdminError::field(
            "shard",
            "moves are supported between SQLite shards and between PostgreSQL shards",
        ));
    }
    let job_id = Uuid::now_v7();
    let mut w = begin_for(&state, &before).await?;
    if jobs::pending_for_tenant(w.conn(), before.id, kind::MOVE)
        .await?
        .is_some()
    {
        return Err(AdminError::Conflict(
            "the tenant is being moved already".into(),
        ));
    }
    w.job(&NewJob {
        id: job_id,
        kind: kind::MOVE,
        tenant_id: Some(before.id),
        payload: serde_json::json!({ "from": before.shard, "to": target_shard.name, "resume": before.status }),
        max_attempts: i64::from(state.config.admin.job_max_attempts),
        run_at: tenantgate_contract::time::now_ms(),
    })
    .await?;
    w.audit(NewAudit {
        actor,
        action: "tenant.move",
        target: &target(&before),
        tenant_id: Some(before.id),
        before: Some(serde_json::json!({ "shard": before.shard, "status": before.status })),
        after: Some(serde_json::json!({ "shard": target_shard.name, "job_id": job_id })),
    })
    .await?;
    w.commit().await?;
    Ok(job_id)
}
