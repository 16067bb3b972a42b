//! The HTTP API: one route table that builds both the router and the OpenAPI document, so no
//! route can exist undocumented.

pub(crate) mod admin_tokens;
pub(crate) mod audit;
pub(crate) mod backups;
pub(crate) mod jobs;
pub(crate) mod migrations;
pub(crate) mod openapi;
pub(crate) mod ops;
pub(crate) mod resolve;
pub(crate) mod shards;
pub(crate) mod tenants;
pub(crate) mod user_tokens;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{self, MethodRouter};
use axum::Router;
use tracing::Instrument;

use crate::error::AdminError;
use crate::state::AdminState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Public,
    Read,
    Write,
}

/// One documented route.
pub(crate) struct RouteDoc {
    pub(crate) method: &'static str,
    /// axum path syntax (`{id}`, `{*domain}`); the OpenAPI path drops the `*`.
    pub(crate) path: &'static str,
    pub(crate) summary: &'static str,
    pub(crate) access: Access,
    /// Name of the request body schema in `components.schemas`.
    pub(crate) request: Option<&'static str>,
    /// Query parameters: (name, JSON type, description).
    pub(crate) query: &'static [(&'static str, &'static str, &'static str)],
    /// Success status and the name of its body schema.
    pub(crate) success: (u16, &'static str),
}

/// Every route of the admin API with its handler.
pub(crate) fn table() -> Vec<(RouteDoc, MethodRouter<AdminState>)> {
    use Access::*;
    let doc = |method, path, summary, access, request, query, success| RouteDoc {
        method,
        path,
        summary,
        access,
        request,
        query,
        success,
    };
    vec![
        (doc("post", "/v1/shards", "Create a shard", Write, Some("CreateShard"), &[], (201, "Shard")),
            routing::post(shards::create_handler)),
        (doc("get", "/v1/shards", "List shards", Read, None, &[], (200, "ShardList")),
            routing::get(shards::list_handler)),
        (doc("get", "/v1/shards/{name}", "Get a shard", Read, None, &[], (200, "Shard")),
            routing::get(shards::get_handler)),
        (doc("patch", "/v1/shards/{name}", "Change a shard's status, app upstreams or replicas", Write, Some("PatchShard"), &[], (200, "Shard")),
            routing::patch(shards::patch_handler)),
        (doc("post", "/v1/tenants", "Create a tenant; provisioning runs as a job", Write, Some("CreateTenant"), &[], (202, "TenantJob")),
            routing::post(tenants::create_handler)),
        (doc("get", "/v1/tenants", "List tenants", Read, None, &[
            ("status", "string", "provisioning, active, suspended, moving, restoring, deleted or failed"),
            ("shard", "string", "shard name"),
            ("schema_version", "integer", "highest tenant migration applied"),
            ("limit", "integer", "page size, 1-500, default 50"),
            ("cursor", "string", "next_cursor of the previous page"),
        ], (200, "TenantPage")),
            routing::get(tenants::list_handler)),
        (doc("get", "/v1/tenants/{id}", "Get a tenant by id or slug", Read, None, &[], (200, "Tenant")),
            routing::get(tenants::get_handler)),
        (doc("patch", "/v1/tenants/{id}", "Rename, activate/suspend, set rate limit or settings", Write, Some("PatchTenant"), &[], (200, "Tenant")),
            routing::patch(tenants::patch_handler)),
        (doc("delete", "/v1/tenants/{id}", "Delete a tenant; its database is dropped after the grace period (or now with purge)", Write, None, &[
            ("purge", "boolean", "drop the database now"),
        ], (202, "TenantJob")),
            routing::delete(tenants::delete_handler)),
        (doc("post", "/v1/tenants/{id}/domains", "Add a domain to a tenant", Write, Some("AddDomain"), &[], (201, "Tenant")),
            routing::post(tenants::add_domain_handler)),
        (doc("delete", "/v1/tenants/{id}/domains/{*domain}", "Remove a domain from a tenant", Write, None, &[], (200, "Tenant")),
            routing::delete(tenants::remove_domain_handler)),
        (doc("post", "/v1/tenants/{id}/tokens", "Mint a tenant user token (shown once)", Write, Some("MintToken"), &[], (201, "MintedToken")),
            routing::post(user_tokens::handler)),
        (doc("post", "/v1/tenants/{id}/move", "Move a tenant to another shard", Write, Some("MoveTenant"), &[], (202, "MoveJob")),
            routing::post(tenants::move_handler)),
        (doc("post", "/v1/tenants/{id}/backups", "Back up a tenant's database, as a job", Write, None, &[], (202, "BackupJob")),
            routing::post(backups::create_handler)),
        (doc("get", "/v1/tenants/{id}/backups", "A tenant's backups, newest first", Read, None, &[
            ("limit", "integer", "page size, 1-500, default 50"),
            ("cursor", "string", "next_cursor of the previous page"),
        ], (200, "BackupPage")),
            routing::get(backups::list_handler)),
        (doc("get", "/v1/backups/{id}", "Get a backup", Read, None, &[], (200, "Backup")),
            routing::get(backups::get_handler)),
        (doc("post", "/v1/tenants/{id}/restore", "Restore a backup in place or as a new tenant, as a job", Write, Some("StartRestore"), &[], (202, "RestoreJob")),
            routing::post(backups::restore_handler)),
        (doc("get", "/v1/jobs/{id}", "Get a job", Read, None, &[], (200, "Job")),
            routing::get(jobs::get_handler)),
        (doc("post", "/v1/jobs/{id}/retry", "Retry a failed job", Write, None, &[], (202, "Job")),
            routing::post(jobs::retry_handler)),
        (doc("post", "/v1/migrations", "Migrate tenant databases to the latest tenant schema, as a job", Write, Some("StartMigration"), &[], (202, "MigrationJob")),
            routing::post(migrations::handler)),
        (doc("get", "/v1/resolve", "What the edge would do for a host", Read, None, &[
            ("host", "string", "Host header value (required)"),
            ("path", "string", "request path, for host + prefix domains"),
        ], (200, "Resolution")),
            routing::get(resolve::handler)),
        (doc("get", "/v1/audit", "The audit log, newest first", Read, None, &[
            ("tenant", "string", "tenant id or slug"),
            ("limit", "integer", "page size, 1-1000, default 100"),
            ("cursor", "integer", "next_cursor of the previous page"),
        ], (200, "AuditPage")),
            routing::get(audit::list_handler)),
        (doc("get", "/v1/tokens", "List admin tokens (never their secrets), oldest first", Read, None, &[
            ("limit", "integer", "page size, 1-500, default 100"),
            ("cursor", "string", "next_cursor of the previous page"),
        ], (200, "AdminTokenPage")),
            routing::get(admin_tokens::list_handler)),
        (doc("delete", "/v1/tokens/{id}", "Revoke an admin token; it answers 401 from then on", Write, None, &[], (200, "AdminToken")),
            routing::delete(admin_tokens::revoke_handler)),
        (doc("get", "/openapi.json", "This document", Public, None, &[], (200, "OpenApi")),
            routing::get(openapi::handler)),
        (doc("get", "/healthz", "Liveness", Public, None, &[], (200, "Status")),
            routing::get(ops::healthz)),
        (doc("get", "/readyz", "Readiness: the catalog answers", Public, None, &[], (200, "Status")),
            routing::get(ops::readyz)),
        (doc("get", "/metrics", "Prometheus metrics", Public, None, &[], (200, "Metrics")),
            routing::get(ops::metrics)),
    ]
}

/// The admin API router over `state`. Unknown paths and methods answer our JSON error.
pub(crate) fn router(state: AdminState) -> Router {
    let mut router = Router::new();
    for (doc, handler) in table() {
        router = router.route(doc.path, handler);
    }
    router
        .fallback(|| async { AdminError::NotFound("route") })
        .method_not_allowed_fallback(|| async {
            (
                http::StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(serde_json::json!({
                    "error": { "code": "method_not_allowed", "message": "method not allowed on this route" }
                })),
            )
        })
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// One span and one log line per request: method, path (never the query, which may name
/// hosts an operator looks up, nor headers, which carry tokens), status and duration. Errors
/// logged while handling the request land in its span.
async fn log_request(req: Request, next: Next) -> Response {
    let span =
        tracing::info_span!("admin_request", method = %req.method(), path = %req.uri().path());
    let started = std::time::Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "admin request"
        )
    });
    response
}
