//! `/v1/shards`: create, list, read, patch. Database URLs are shown with passwords redacted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::shards::{self, shard_change, NewShard};
use tenantgate_catalog::{Shard, ShardStatus};
use tenantgate_config::db_url::redact;

use crate::auth::{Reader, Writer};
use crate::error::AdminError;
use crate::extract::ApiJson;
use crate::state::AdminState;
use crate::validate::{self, Errors};
use crate::write::Write;

/// `POST /v1/shards` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateShard {
    name: String,
    app_upstreams: Vec<String>,
    database_url: String,
    #[serde(default)]
    replicas: Vec<String>,
}

/// `PATCH /v1/shards/{name}` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatchShard {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    app_upstreams: Option<Vec<String>>,
    #[serde(default)]
    replicas: Option<Vec<String>>,
}

/// A shard as the API shows it: secrets in URLs redacted.
#[derive(Debug, Serialize)]
pub(crate) struct ShardView(Shard);

impl From<Shard> for ShardView {
    fn from(mut s: Shard) -> ShardView {
        s.database_url = redact(&s.database_url);
        s.replicas = s.replicas.iter().map(|r| redact(r)).collect();
        ShardView(s)
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct ShardList {
    shards: Vec<ShardView>,
}

fn view_json(s: &Shard) -> serde_json::Value {
    serde_json::to_value(ShardView::from(s.clone())).expect("shard serialises")
}

/// Create a validated shard (audited, announced). Used by the API and [`crate::ensure_shard`].
pub(crate) async fn create(
    state: &AdminState,
    actor: &str,
    name: &str,
    app_upstreams: Vec<String>,
    database_url: &str,
    replicas: Vec<String>,
) -> Result<Shard, AdminError> {
    let mut errors = Errors::default();
    validate::slug(&mut errors, "name", name);
    validate::upstreams(&mut errors, &app_upstreams);
    let backend = validate::database_url(&mut errors, database_url);
    validate::replicas(&mut errors, backend, &replicas);
    errors.finish()?;
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
    let mut errors = Errors::default();
    if let Some(u) = &app_upstreams {
        validate::upstreams(&mut errors, u);
    }
    if let Some(r) = &replicas {
        let backend = tenantgate_config::db_url::Engine::of_url(&before.database_url).ok();
        validate::replicas(&mut errors, backend, r);
    }
    errors.finish()?;
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
    let shard = create(
        &state,
        &actor.name,
        &req.name,
        req.app_upstreams,
        &req.database_url,
        req.replicas,
    )
    .await?;
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
    let status = match req.status.as_deref().map(str::parse::<ShardStatus>) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            return Err(AdminError::field(
                "status",
                "must be one of \"active\", \"draining\", \"disabled\"",
            ))
        }
    };
    let shard = update(
        &state,
        &actor.name,
        &name,
        status,
        req.app_upstreams,
        req.replicas,
    )
    .await?;
    Ok(Json(shard.into()))
}
