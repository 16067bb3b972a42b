//! The verified tenant of a request: [`require_tenant`] middleware and the [`TenantContext`]
//! extractor.
//!
//! The edge signs the tenant headers (DESIGN §5). [`require_tenant`] checks the signature with
//! any configured key within the allowed clock skew, checks that the request is for the shard
//! this process serves, loads the tenant from the (cached) catalog and puts a [`TenantContext`]
//! in the request. A request that fails any check is answered here, before any handler runs and
//! before any tenant database is touched.
//!
//! A handler takes `ctx: TenantContext` as an argument and gets the tenant's database only via
//! [`TenantContext::db`] / [`TenantContext::read_db`]: there is no other way to a [`TenantDb`],
//! so a handler that forgot the tenant does not compile.

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OriginalUri, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tenantgate_catalog::{CatalogError, Shard, Tenant};
use tenantgate_contract::signing::{
    TenantClaims, VerifyRules, HEADER_REQUEST_ID, HEADER_TENANT_EPOCH, HEADER_TENANT_ID,
    HEADER_TENANT_SHARD, HEADER_TENANT_SIGNATURE, HEADER_TENANT_SLUG,
};
use tenantgate_contract::TenantSettings;
use tracing::Instrument;
use uuid::Uuid;

use crate::cookies;
use crate::directory::{refusal, servable};
use crate::error::{AppError, Unavailable};
use crate::login::{self, Attempt, LoginThrottle};
use crate::metrics::{TenantLabel, VerifiedSlug};
use crate::pools::{DbRole, PoolManager, TenantDb};
use crate::replicas;
use crate::state::AppState;

/// The verified tenant of a request. Cheap to clone.
///
/// Made only by [`require_tenant`] after the signature checked out; take it as a handler
/// argument (it is an axum extractor). Without the middleware in front, extracting it fails
/// with 401 `invalid_signature`, never with a guessed tenant.
#[derive(Clone)]
pub struct TenantContext {
    inner: Arc<ContextInner>,
}

struct ContextInner {
    request_id: String,
    epoch: i64,
    settings: TenantSettings,
    tenant: Arc<Tenant>,
    shard: Arc<Shard>,
    pools: PoolManager,
    /// The client wrote recently: its reads go to the primary (read-your-writes).
    sticky_primary: bool,
    /// The tenant's path prefix on a shared host (`/acme`), empty on a whole host.
    base_path: String,
    /// The client's address as the edge saw it (`x-forwarded-for`).
    client: Option<IpAddr>,
    login_throttle: LoginThrottle,
}

impl std::fmt::Debug for TenantContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantContext")
            .field("tenant_id", &self.tenant_id())
            .field("slug", &self.slug())
            .field("shard", &self.shard())
            .field("epoch", &self.epoch())
            .field("request_id", &self.request_id())
            .finish_non_exhaustive()
    }
}

impl TenantContext {
    /// The tenant's id (signed by the edge).
    pub fn tenant_id(&self) -> Uuid {
        self.inner.tenant.id
    }

    /// The tenant's slug (signed by the edge).
    pub fn slug(&self) -> &str {
        &self.inner.tenant.slug
    }

    /// The tenant's display name (from the catalog).
    pub fn name(&self) -> &str {
        &self.inner.tenant.name
    }

    /// The shard serving the request (this process's shard).
    pub fn shard(&self) -> &str {
        &self.inner.shard.name
    }

    /// The tenant's route epoch as the edge signed it.
    pub fn epoch(&self) -> i64 {
        self.inner.epoch
    }

    /// The edge's request id (`x-request-id`), for logs.
    pub fn request_id(&self) -> &str {
        &self.inner.request_id
    }

    /// The tenant's settings (locale, timezone, theme, feature flags).
    pub fn settings(&self) -> &TenantSettings {
        &self.inner.settings
    }

    /// The tenant's path prefix on a shared host (`/acme`, from `x-forwarded-prefix`), empty on
    /// a whole-host domain: links and cookies of this tenant live under it.
    pub fn base_path(&self) -> &str {
        &self.inner.base_path
    }

    /// The client's address as the edge saw it (`x-forwarded-for`), if it sent one.
    pub fn client_address(&self) -> Option<IpAddr> {
        self.inner.client
    }

    /// Start checking a credential of this request against the failed-login budgets of the
    /// tenant and the client address: 429 `login_throttled` when they are spent (see
    /// [`crate::login`]). [`crate::Credential`] does this; call it when checking a credential
    /// some other way.
    pub fn login_attempt(&self) -> Result<Attempt, AppError> {
        self.inner
            .login_throttle
            .attempt(self.tenant_id(), self.inner.client)
    }

    /// True when reads of this request go to the primary although the shard has replicas,
    /// because the client wrote within the read-your-writes window.
    pub fn reads_from_primary(&self) -> bool {
        self.inner.sticky_primary || self.inner.shard.replicas.is_empty()
    }

    /// A connection to the tenant's primary database: for writes, and reads that must be
    /// current. Waits at most the configured acquire timeout; 503 `tenant_db_unavailable` then.
    pub async fn db(&self) -> Result<TenantDb, AppError> {
        let inner = &self.inner;
        inner
            .pools
            .acquire(&inner.tenant, &inner.shard, DbRole::Primary, inner.epoch)
            .await
    }

    /// A connection for read-only work: a replica when the shard has one and the client has
    /// not written within the read-your-writes window, else the primary. A replica that cannot
    /// be reached falls back to the primary.
    pub async fn read_db(&self) -> Result<TenantDb, AppError> {
        if self.reads_from_primary() {
            return self.db().await;
        }
        let inner = &self.inner;
        match inner
            .pools
            .acquire(&inner.tenant, &inner.shard, DbRole::Replica, inner.epoch)
            .await
        {
            Ok(db) => Ok(db),
            // Waiting again for the primary would double the bounded wait.
            Err(e @ AppError::TenantDbUnavailable(Unavailable::Budget)) => Err(e),
            Err(e) => {
                tracing::warn!(tenant = %self.slug(), error = %e, "replica unavailable; reading from the primary");
                self.db().await
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TenantContext {
    type Rejection = AppError;

    /// Runs per handler argument: hands out the context [`require_tenant`] stored.
    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .ok_or(AppError::InvalidSignature)
    }
}

/// Middleware for every tenant route: verify the signed tenant headers, build the
/// [`TenantContext`], run the handler, and after a successful write mark the client for
/// read-your-writes. Rejections (401, 421, 404, 403, 410, 503) open no tenant database.
///
/// Install with `router.route_layer(axum::middleware::from_fn_with_state(state, require_tenant))`.
pub async fn require_tenant(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    // The target as the edge signed it: the URI this process received, before any router
    // nesting rewrote it.
    let target = req
        .extensions()
        .get::<OriginalUri>()
        .map_or(req.uri(), |o| &o.0)
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let ctx = match verify(&state, req.headers(), req.method(), &target).await {
        Ok(ctx) => ctx,
        Err(e) => return e.into_response(),
    };
    let label = TenantLabel(state.labels().label(ctx.slug()));
    let slug = VerifiedSlug(ctx.slug().to_owned());
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let base_path = ctx.base_path().to_owned();
    let span = tracing::info_span!("tenant", tenant = %ctx.slug(), request_id = %ctx.request_id());
    req.extensions_mut().insert(ctx);
    let mut response = next.run(req).instrument(span).await;
    if write && response.status().is_success() {
        replicas::mark_wrote(
            &mut response,
            state.config().app.read_your_writes,
            &base_path,
        );
    }
    response.extensions_mut().insert(label);
    response.extensions_mut().insert(slug);
    response
}

/// Check the signed headers (for this method and target, never seen before) and build the
/// context. No tenant database is touched.
async fn verify(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    target: &str,
) -> Result<TenantContext, AppError> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let signature = text(HEADER_TENANT_SIGNATURE).ok_or(AppError::InvalidSignature)?;
    let tenant_id = text(HEADER_TENANT_ID)
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or(AppError::InvalidSignature)?;
    let slug = text(HEADER_TENANT_SLUG).ok_or(AppError::InvalidSignature)?;
    let shard = text(HEADER_TENANT_SHARD).ok_or(AppError::InvalidSignature)?;
    let epoch = text(HEADER_TENANT_EPOCH)
        .and_then(|v| v.parse::<i64>().ok())
        .ok_or(AppError::InvalidSignature)?;
    // The replay cache is keyed by it: a request without one cannot be told from a replay.
    let request_id = text(HEADER_REQUEST_ID)
        .filter(|id| !id.is_empty())
        .ok_or(AppError::InvalidSignature)?;
    let claims = TenantClaims {
        tenant_id,
        slug,
        shard,
        epoch,
        request_id,
        method: method.as_str(),
        target,
    };
    let security = &state.config().security;
    let rules = VerifyRules {
        max_skew_secs: security.max_skew_secs,
        accept_v1: security.accept_v1,
    };
    if let Err(e) = security.signing.verify(
        signature,
        &claims,
        tenantgate_contract::time::now_secs(),
        rules,
    ) {
        tracing::debug!(reason = %e, "tenant signature refused");
        return Err(AppError::InvalidSignature);
    }
    // Only after the signature verified: nobody without the key can fill the cache.
    if !state
        .replay()
        .first_use(request_id, std::time::Instant::now())
    {
        tracing::info!(request_id, "replayed tenant signature refused");
        return Err(AppError::ReplayedRequest);
    }
    let served = &state.config().app.shard;
    if shard != served {
        return Err(AppError::WrongShard);
    }
    let mut tenant = state
        .directory()
        .tenant(tenant_id)
        .await?
        .ok_or(AppError::UnknownTenant)?;
    if epoch > tenant.epoch || !servable(tenant.status) {
        // The edge follows the same feed and may be ahead of this process: before refusing or
        // serving with an outdated row, read it again (rare: only right after a change).
        state.directory().forget_tenant(tenant_id).await;
        tenant = state
            .directory()
            .tenant(tenant_id)
            .await?
            .ok_or(AppError::UnknownTenant)?;
    }
    if let Some(refused) = refusal(tenant.status) {
        return Err(AppError::TenantRefused(refused));
    }
    if &tenant.shard != served {
        // Moved away: the copy here is stale as of the catalog's epoch (epoch fencing, the
        // catalog's view; the database's own record is checked when a connection is handed
        // out). A request signed with that epoch or newer names this shard by mistake.
        crate::fence::check(epoch, tenant.epoch)?;
        return Err(AppError::WrongShard);
    }
    if tenant.slug != slug {
        tracing::warn!(tenant = %tenant_id, "signed slug differs from the catalog's");
    }
    let shard_row = state
        .directory()
        .shard(served)
        .await?
        .ok_or(CatalogError::NotFound("shard of this app"))?;
    Ok(TenantContext {
        inner: Arc::new(ContextInner {
            request_id: request_id.to_string(),
            epoch,
            settings: TenantSettings::read_stored(&tenant.settings),
            sticky_primary: replicas::wrote_recently(headers),
            base_path: cookies::base_path(headers),
            client: login::client_address(headers),
            login_throttle: state.login_throttle().clone(),
            tenant,
            shard: shard_row,
            pools: state.pools().clone(),
        }),
    })
}
