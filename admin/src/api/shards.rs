//! `/v1/shards`: create, list, read, patch. Database URLs are shown with passwords redacted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::shards::{self, shard_change, NewShard};
use tenantgate_catalog::{Shard, ShardStatus};
use tenantgate_config::db_url::redact;

use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::fields::{DatabaseUrl, ReplicaUrl, Slug, Upstream};
use crate::auth::{Reader, Writer};
use crate::error::AdminError;
use crate::extract::ApiJson;
use crate::state::AdminState;
use crate::write::Write;

/// `POST /v1/shards` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateShard {
    pub(crate) name: Slug,
    /// `host:port` of each app backend.
    #[schema(min_items = 1, max_items = 64)]
    pub(crate) app_upstreams: Vec<Upstream>,
    pub(crate) database_url: DatabaseUrl,
    /// PostgreSQL shards only.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub(crate) replicas: Vec<ReplicaUrl>,
}

/// `PATCH /v1/shards/{name}` body.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchShard {
    #[serde(default)]
    status: Option<ShardStatus>,
    #[serde(default)]
    #[schema(min_items = 1, max_items = 64)]
    app_upstreams: Option<Vec<Upstream>>,
    #[serde(default)]
    #[schema(max_items = 16)]
    replicas: Option<Vec<ReplicaUrl>>,
}

/// A shard as the API shows it: secrets in URLs redacted.
#[derive(Debug, Serialize)]
pub(crate) struct ShardView(Shard);

/// The document shows a [`ShardView`] as the shard it is.
impl PartialSchema for ShardView {
    fn schema() -> RefOr<Schema> {
        Shard::schema()
    }
}

impl ToSchema for ShardView {
    fn name() -> std::borrow::Cow<'static, str> {
        Shard::name()
    }

    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        Shard::schemas(schemas);
    }
}

impl From<Shard> for ShardView {
    fn from(mut s: Shard) -> ShardView {
        s.database_url = redact(&s.database_url);
        s.replicas = s.replicas.iter().map(|r| redact(r)).collect();
        ShardView(s)
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ShardList {
    shards: Vec<ShardView>,
}

fn view_json(s: &Shard) -> serde_json::Value {
    serde_json::to_value(ShardView::from(s.clone())).expect("shard serialises")
}

/// Replicas only on PostgreSQL shards: 409 for a SQLite shard with replicas.
fn check_replicas(database_url: &str, replicas: &[String]) -> Result<(), AdminError> {
    if !replicas.is_empty()
        && tenantgate_config::db_url::Engine::of_url(database_url)
            .is_ok_and(|e| e == tenantgate_config::db_url::Engine::Sqlite)
    {
        return Err(AdminError::Conflict(
            "a SQLite shard has no replicas".into(),
        ));
    }
    Ok(())
}

/// Create a shard from a request checked against its schema (audited, announced). Used by the
/// API and [`crate::ensure_shard`].
pub(crate) async fn create(
    state: &AdminState,
    actor: &str,
    req: CreateShard,
) -> Result<Shard, AdminError> {
    let name = req.name.as_str();
    let app_upstreams: Vec<String> = req.app_upstreams.into_iter().map(|u| u.0).collect();
    let replicas: Vec<String> = req.replicas.into_iter().map(|u| u.0).collect();
    let database_url = req.database_url.as_str();
    check_replicas(database_url, &replicas)?;
    if state.catalog.shard(name).await?.is_some() {
        return Err(AdminError::Conflict(format!("shard {name} already exists")));
    }
    let new = NewShard {
        name: name.to_string(),
        app_upstreams,
        database_url: database_url.to_string(),
        replicas,
    };
    let mut w = Write::begin(state).await?;
    shards::insert(w.conn(), &new).await?;
    w.change(&shard_change(name)).await?;
    let now = tenantgate_contract::time::now_ms();
    let shard = Shard {
        name: new.name,
        status: ShardStatus::Active,
        app_upstreams: new.app_upstreams,
        database_url: new.database_url,
        replicas: new.replicas,
        created_at: now,
        updated_at: now,
    };
    w.audit(NewAudit {
        actor,
        action: "shard.create",
        target: &format!("shard:{name}"),
        tenant_id: None,
        before: None,
        after: Some(view_json(&shard)),
    })
    .await?;
    w.commit().await?;
    Ok(shard)
}

/// Change a shard's status, upstreams or replicas (audited, announced).
pub(crate) async fn update(
    state: &AdminState,
    actor: &str,
    name: &str,
    status: Option<ShardStatus>,
    app_upstreams: Option<Vec<String>>,
    replicas: Option<Vec<String>>,
) -> Result<Shard, AdminError> {
    let before = state
        .catalog
        .shard(name)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    if let Some(r) = &replicas {
        check_replicas(&before.database_url, r)?;
    }
    let mut after = before.clone();
    if let Some(s) = status {
        after.status = s;
    }
    if let Some(u) = &app_upstreams {
        after.app_upstreams = u.clone();
    }
    if let Some(r) = &replicas {
        after.replicas = r.clone();
    }
    after.updated_at = tenantgate_contract::time::now_ms();
    let mut w = Write::begin(state).await?;
    shards::update(
        w.conn(),
        name,
        status,
        app_upstreams.as_deref(),
        replicas.as_deref(),
    )
    .await?;
    w.change(&shard_change(name)).await?;
    w.audit(NewAudit {
        actor,
        action: "shard.update",
        target: &format!("shard:{name}"),
        tenant_id: None,
        before: Some(view_json(&before)),
        after: Some(view_json(&after)),
    })
    .await?;
    w.commit().await?;
    Ok(after)
}

pub(crate) async fn create_handler(
    State(state): State<AdminState>,
    Writer(actor): Writer,
    ApiJson(req): ApiJson<CreateShard>,
) -> Result<(StatusCode, Json<ShardView>), AdminError> {
    let shard = create(&state, &actor.name, req).await?;
    Ok((StatusCode::CREATED, Json(shard.into())))
}

pub(crate) async fn list_handler(
    State(state): State<AdminState>,
    _: Reader,
) -> Result<Json<ShardList>, AdminError> {
    let shards = state.catalog.shards().await?;
    Ok(Json(ShardList {
        shards: shards.into_iter().map(ShardView::from).collect(),
    }))
}

pub(crate) async fn get_handler(
    State(state): State<AdminState>,
    _: Reader,
    Path(name): Path<String>,
) -> Result<Json<ShardView>, AdminError> {
    let shard = state
        .catalog
        .shard(&name)
        .await?
        .ok_or(AdminError::NotFound("shard"))?;
    Ok(Json(shard.into()))
}

pub(crate) async fn patch_handler(
    State(state): State<AdminState>,
    Writer(actor): Writer,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<PatchShard>,
) -> Result<Json<ShardView>, AdminError> {
    let strings = |v: Vec<_>| {
        v.into_iter()
            .map(|s: super::fields::Upstream| s.0)
            .collect()
    };
    let shard = update(
        &state,
        &actor.name,
        &name,
        req.status,
        req.app_upstreams.map(strings),
        req.replicas
            .map(|v| v.into_iter().map(|r: ReplicaUrl| r.0).collect()),
    )
    .await?;
    Ok(Json(shard.into()))
}
