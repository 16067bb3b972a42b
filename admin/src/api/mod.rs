//! The HTTP API: one route table that builds both the router and the OpenAPI document, so no
//! route can exist undocumented.

pub(crate) mod admin_tokens;
pub(crate) mod audit;
pub(crate) mod backups;
pub(crate) mod domains;
pub(crate) mod fields;
pub(crate) mod jobs;
pub(crate) mod migrations;
pub(crate) mod openapi;
pub(crate) mod ops;
pub(crate) mod resolve;
pub(crate) mod shards;
pub(crate) mod tenants;
pub(crate) mod usage;
pub(crate) mod user_tokens;

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{self, MethodRouter};
use axum::Router;
use tenantgate_catalog::Tenant;
use tenantgate_openapi::{Access, Api, Checker, Operation};
use tracing::Instrument;

use crate::error::AdminError;
use crate::state::AdminState;

const READ: Access = Access::Bearer("read");
const WRITE: Access = Access::Bearer("write");

/// Every authenticated route may answer 429 (see `crate::limits`).
const RATE_LIMITED: &str =
    "over the admin rate limit of the client address or the token; Retry-After says when to retry";

/// A tenant-restricted token (`token create --tenant`) outside its tenants.
const OUTSIDE_SCOPE: &str = "`outside_scope`: the token is restricted to some tenants, and this \
    route is fleet-wide or the object (or the tenant named, whether it exists or not) is not one \
    of its tenants'";

/// Error answers of routes that need a read token / a write token.
const READ_ERRORS: &[(u16, &str)] = &[
    (401, "missing or invalid bearer token"),
    (403, OUTSIDE_SCOPE),
    (429, RATE_LIMITED),
    (503, "the catalog is unavailable"),
];
const WRITE_ERRORS: &[(u16, &str)] = &[
    (401, "missing or invalid bearer token"),
    (
        403,
        "the token is not write-scoped (`forbidden`), or it is restricted to some tenants and \
         this route or object is outside them (`outside_scope`)",
    ),
    (429, RATE_LIMITED),
    (503, "the catalog is unavailable"),
];
const BODY_ERRORS: &[(u16, &str)] = &[
    (400, "the body is not JSON or not application/json"),
    (
        422,
        "the body breaks its schema; `fields` names each invalid field",
    ),
];
const QUERY_ERRORS: &[(u16, &str)] = &[(
    422,
    "a query parameter breaks its schema; `fields` names it",
)];

/// Every route of the admin API with its handler: the router, the OpenAPI document and the
/// request checks all come from this table.
pub(crate) fn table() -> Vec<(Operation, MethodRouter<AdminState>)> {
    use tenantgate_openapi::Operation as Op;
    let tenant_links = |op: Op, status: u16, id: &str| {
        op.link(status, "GetTenant", "getTenant", &[("id", id)])
            .link(status, "PatchTenant", "patchTenant", &[("id", id)])
            .link(status, "DeleteTenant", "deleteTenant", &[("id", id)])
    };
    vec![
        (
            Op::post("/v1/shards", "Create a shard")
                .id("createShard")
                .access(WRITE)
                .body::<shards::CreateShard>()
                .reply::<shards::ShardView>(201, "the shard")
                .link(201, "GetShard", "getShard", &[("name", "$response.body#/name")])
                .link(201, "PatchShard", "patchShard", &[("name", "$response.body#/name")])
                .errors(WRITE_ERRORS)
                .errors(BODY_ERRORS)
                .errors(&[(409, "a shard of this name exists, or a SQLite shard was given replicas")]),
            routing::post(shards::create_handler),
        ),
        (
            Op::get("/v1/shards", "List shards")
                .access(READ)
                .reply::<shards::ShardList>(200, "every shard")
                .errors(READ_ERRORS),
            routing::get(shards::list_handler),
        ),
        (
            Op::get("/v1/shards/{name}", "Get a shard")
                .id("getShard")
                .access(READ)
                .reply::<shards::ShardView>(200, "the shard")
                .errors(READ_ERRORS)
                .errors(&[(404, "no such shard")]),
            routing::get(shards::get_handler),
        ),
        (
            Op::patch("/v1/shards/{name}", "Change a shard's status, app upstreams or replicas")
                .id("patchShard")
                .access(WRITE)
                .body::<shards::PatchShard>()
                .reply::<shards::ShardView>(200, "the shard after the change")
                .errors(WRITE_ERRORS)
                .errors(BODY_ERRORS)
                .errors(&[(404, "no such shard"), (409, "a SQLite shard was given replicas")]),
            routing::patch(shards::patch_handler),
        ),
        (
            tenant_links(
                Op::post("/v1/tenants", "Create a tenant; provisioning runs as a job")
                    .id("createTenant")
                    .access(WRITE)
                    .body::<tenants::CreateTenant>()
                    .reply::<tenants::TenantJob>(202, "the tenant (provisioning) and its job"),
                202,
                "$response.body#/tenant/id",
            )
            .link(202, "GetJob", "getJob", &[("id", "$response.body#/job_id")])
            .link(202, "RemoveDomain", "removeDomain", &[
                ("id", "$response.body#/tenant/id"),
                ("domain", "$response.body#/tenant/domains/0"),
            ])
            .link(202, "CreateBackup", "createBackup", &[("id", "$response.body#/tenant/id")])
            .link(202, "Restore", "restore", &[("id", "$response.body#/tenant/id")])
            .errors(WRITE_ERRORS)
            .errors(BODY_ERRORS)
            .errors(&[
                (404, "the requested shard does not exist"),
                (409, "the slug or a domain is taken, or the shard takes no new tenants"),
            ]),
            routing::post(tenants::create_handler),
        ),
        (
            Op::get("/v1/tenants", "List tenants")
                .access(READ)
                .query::<tenants::ListQuery>()
                .reply::<tenants::TenantPage>(200, "a page of tenants, by slug")
                .errors(READ_ERRORS)
                .errors(QUERY_ERRORS),
            routing::get(tenants::list_handler),
        ),
        (
            Op::get("/v1/tenants/{id}", "Get a tenant by id or slug")
                .id("getTenant")
                .access(READ)
                .reply::<Tenant>(200, "the tenant")
                .errors(READ_ERRORS)
                .errors(&[(404, "no such tenant, or it is deleted")]),
            routing::get(tenants::get_handler),
        ),
        (
            Op::patch("/v1/tenants/{id}", "Rename, activate/suspend, set rate limit or settings")
                .id("patchTenant")
                .access(WRITE)
                .body::<tenants::PatchTenant>()
                .reply::<Tenant>(200, "the tenant after the change")
                .errors(WRITE_ERRORS)
                .errors(BODY_ERRORS)
                .errors(&[
                    (404, "no such tenant, or it is deleted"),
                    (409, "the tenant's status forbids this, or it changed concurrently"),
                ]),
            routing::patch(tenants::patch_handler),
        ),
        (
            Op::delete(
                "/v1/tenants/{id}",
                "Delete a tenant; its database is dropped after the grace period (or now with purge)",
            )
            .id("deleteTenant")
            .access(WRITE)
            .query::<tenants::DeleteQuery>()
            .reply::<tenants::TenantJob>(202, "the deleted tenant and the job that drops its database")
            .errors(WRITE_ERRORS)
            .errors(QUERY_ERRORS)
            .errors(&[
                (404, "no such tenant"),
                (409, "already deleted (without purge), or it changed concurrently"),
            ]),
            routing::delete(tenants::delete_handler),
        ),
        (
            Op::post("/v1/tenants/{id}/domains", "Add a domain to a tenant")
                .access(WRITE)
                .body::<tenants::AddDomain>()
                .reply::<Tenant>(201, "the tenant with the domain")
                .errors(WRITE_ERRORS)
                .errors(BODY_ERRORS)
                .errors(&[
                    (404, "no such tenant, or it is deleted"),
                    (409, "the domain is taken, or it changed concurrently"),
                ]),
            routing::post(tenants::add_domain_handler),
        ),
        (
            Op::get("/v1/tenants/{id}/domains", "A tenant's domains and their certificates")
                .id("listDomains")
                .access(READ)
                .reply::<domains::DomainList>(200, "the domains, each with its host's certificate")
                .errors(READ_ERRORS)
                .errors(&[(404, "no such tenant")]),
            routing::get(domains::list_handler),
        ),
        (
            Op::put(
                "/v1/tenants/{id}/domains/{domain}/certificate",
                "Upload or replace the TLS certificate of a tenant's host",
            )
            .id("putCertificate")
            // axum's router holds no `{domain}/certificate` beside the catch-all below, whose
            // handler serves this operation too.
            .mounted_at("/v1/tenants/{id}/domains/{*domain}")
            .access(WRITE)
            .body::<domains::UploadCertificate>()
            .reply::<domains::DomainView>(200, "the domain with its new certificate")
            .errors(WRITE_ERRORS)
            .errors(&[
                (400, "the body is not JSON, or cert_pem / key_pem do not parse (`invalid_pem`)"),
                (404, "no such tenant, or the tenant has no such host"),
                (409, "the host is shared by path-prefix tenants, or the tenant changed concurrently"),
                (
                    422,
                    "the body breaks its schema, or the certificate cannot be used: \
                     `key_mismatch`, `chain_incomplete`, `name_mismatch`, \
                     `certificate_expired`, `certificate_not_yet_valid`",
                ),
            ]),
            MethodRouter::new(),
        ),
        (
            Op::delete("/v1/tenants/{id}/domains/{*domain}", "Remove a domain from a tenant")
                .id("removeDomain")
                .access(WRITE)
                .reply::<Tenant>(200, "the tenant without the domain")
                .errors(WRITE_ERRORS)
                .errors(&[
                    (404, "no such tenant, or the tenant has no such domain"),
                    (409, "it is the tenant's last domain, or the tenant changed concurrently"),
                ]),
            routing::any(domains::domain_subresource),
        ),
        (
            Op::post("/v1/tenants/{id}/tokens", "Mint a tenant user token (shown once)")
                .access(WRITE)
                .body::<user_tokens::MintToken>()
                .reply::<user_tokens::MintedToken>(201, "the token")
                .errors(WRITE_ERRORS)
                .errors(BODY_ERRORS)
                .errors(&[
                    (404, "no such tenant, or the tenant has no such role"),
                    (
                        409,
                        "the tenant is not active or suspended, or the user exists with another \
                         role (a token never changes its user's role)",
                    ),
                ]),
            routing::post(user_tokens::handler),
        ),
        (
            Op::post("/v1/tenants/{id}/move", "Move a tenant to another shard")
                .access(WRITE)
                .body::<tenants::MoveTenant>()
                .reply::<tenants::MoveJob>(202, "the move job")
                .link(202, "GetJob", "getJob", &[("id", "$response.body#/job_id")])
                .errors(WRITE_ERRORS)
                .errors(BODY_ERRORS)
                .errors(&[
                    (404, "no such tenant or shard"),
                    (409, "the tenant cannot move now, or not to that shard"),
                ]),
            routing::post(tenants::move_handler),
        ),
        (
            Op::post("/v1/tenants/{id}/backups", "Back up a tenant's database, as a job")
                .id("createBackup")
                .access(WRITE)
                .reply::<backups::BackupJob>(202, "the backup (queued) and its job")
                .link(202, "GetBackup", "getBackup", &[("id", "$response.body#/backup/id")])
                .link(202, "GetJob", "getJob", &[("id", "$response.body#/job_id")])
                .errors(WRITE_ERRORS)
                .errors(&[
                    (404, "no such tenant, or it is deleted"),
                    (409, "the tenant cannot be backed up now, or backups are not configured"),
                ]),
            routing::post(backups::create_handler),
        ),
        (
            Op::get("/v1/tenants/{id}/backups", "A tenant's backups, newest first")
                .access(READ)
                .query::<backups::ListQuery>()
                .reply::<backups::BackupPage>(200, "a page of backups")
                .errors(READ_ERRORS)
                .errors(QUERY_ERRORS)
                .errors(&[(404, "no such tenant")]),
            routing::get(backups::list_handler),
        ),
        (
            Op::get("/v1/backups/{id}", "Get a backup")
                .id("getBackup")
                .access(READ)
                .reply::<backups::BackupView>(200, "the backup")
                .errors(READ_ERRORS)
                .errors(&[(404, "no such backup")]),
            routing::get(backups::get_handler),
        ),
        (
            Op::post(
                "/v1/tenants/{id}/restore",
                "Restore a backup in place or as a new tenant, as a job",
            )
            .id("restore")
            .access(WRITE)
            .body::<backups::StartRestore>()
            .reply::<backups::RestoreJob>(202, "the restore job and the tenant it restores")
            .link(202, "GetJob", "getJob", &[("id", "$response.body#/job_id")])
            .errors(WRITE_ERRORS)
            .errors(BODY_ERRORS)
            .errors(&[
                (404, "no such tenant"),
                (409, "the tenant has no such backup, the backup or the tenant cannot be restored now, the slug is taken, or restores are not configured"),
            ]),
            routing::post(backups::restore_handler),
        ),
        (
            Op::get("/v1/jobs/{id}", "Get a job")
                .id("getJob")
                .access(READ)
                .reply::<jobs::JobView>(200, "the job")
                .link(200, "RetryJob", "retryJob", &[("id", "$response.body#/id")])
                .errors(READ_ERRORS)
                .errors(&[(404, "no such job")]),
            routing::get(jobs::get_handler),
        ),
        (
            Op::post("/v1/jobs/{id}/retry", "Retry a failed job")
                .id("retryJob")
                .access(WRITE)
                .reply::<jobs::JobView>(202, "the job, queued again")
                .errors(WRITE_ERRORS)
                .errors(&[(404, "no such job"), (409, "the job has not failed")]),
            routing::post(jobs::retry_handler),
        ),
        (
            Op::post(
                "/v1/migrations",
                "Migrate tenant databases to the latest tenant schema, as a job",
            )
            .access(WRITE)
            .body::<migrations::StartMigration>()
            .reply::<migrations::MigrationJob>(202, "the migration job")
            .link(202, "GetJob", "getJob", &[("id", "$response.body#/job_id")])
            .errors(WRITE_ERRORS)
            .errors(BODY_ERRORS)
            .errors(&[(404, "a listed tenant does not exist")]),
            routing::post(migrations::handler),
        ),
        (
            Op::get("/v1/resolve", "What the edge would do for a host")
                .access(READ)
                .query::<resolve::ResolveQuery>()
                .reply::<resolve::Resolution>(200, "the edge's answer and why")
                .errors(READ_ERRORS)
                .errors(QUERY_ERRORS),
            routing::get(resolve::handler),
        ),
        (
            Op::get(
                "/v1/tenants/{id}/usage",
                "A tenant's requests, errors, 429s and response bytes per step, as the edges counted them",
            )
            .access(READ)
            .query::<tenantgate_catalog::store::usage::UsageQuery>()
            .reply::<tenantgate_catalog::store::usage::UsageSeries>(200, "one point per step, empty steps included")
            .errors(READ_ERRORS)
            .errors(QUERY_ERRORS)
            .errors(&[(404, "no such tenant")]),
            routing::get(usage::handler),
        ),
        (
            Op::get("/v1/audit", "The audit log, newest first")
                .access(READ)
                .query::<audit::AuditQuery>()
                .reply::<audit::AuditPage>(200, "a page of audit records")
                .errors(READ_ERRORS)
                .errors(QUERY_ERRORS)
                .errors(&[(404, "no such tenant")]),
            routing::get(audit::list_handler),
        ),
        (
            Op::get("/v1/tenants/{id}/audit", "A tenant's own audit trail (in its database), newest first")
                .access(READ)
                .query::<audit::TenantAuditQuery>()
                .reply::<audit::TenantAuditPage>(200, "a page of the tenant's audit trail")
                .errors(READ_ERRORS)
                .errors(QUERY_ERRORS)
                .errors(&[
                    (404, "no such tenant"),
                    (409, "the tenant has no database to read now (not active or suspended)"),
                ]),
            routing::get(audit::tenant_handler),
        ),
        (
            Op::get("/v1/tokens", "List admin tokens (never their secrets), oldest first")
                .access(READ)
                .query::<admin_tokens::ListQuery>()
                .reply::<admin_tokens::TokenPage>(200, "a page of admin tokens")
                .errors(READ_ERRORS)
                .errors(QUERY_ERRORS)
                .errors(&[(400, "`limit` is not an integer from 1 to 500")]),
            routing::get(admin_tokens::list_handler),
        ),
        (
            Op::delete("/v1/tokens/{id}", "Revoke an admin token; it answers 401 from then on")
                .access(WRITE)
                .reply::<admin_tokens::TokenView>(200, "the token, revoked")
                .errors(WRITE_ERRORS)
                .errors(&[(404, "no such admin token")]),
            routing::delete(admin_tokens::revoke_handler),
        ),
        (
            Op::get("/openapi.json", "This document")
                .reply::<tenantgate_openapi::Document>(200, "the OpenAPI 3.1 document"),
            routing::get(openapi::handler),
        ),
        (
            Op::get("/healthz", "Liveness").reply::<ops::Health>(200, "the process serves"),
            routing::get(ops::healthz),
        ),
        (
            Op::get("/readyz", "Readiness: the catalog answers")
                .reply::<ops::Health>(200, "ready")
                .reply::<ops::Health>(503, "the catalog does not answer"),
            routing::get(ops::readyz),
        ),
        (
            Op::get("/metrics", "Prometheus metrics").text(200, "Prometheus text format"),
            routing::get(ops::metrics),
        ),
    ]
}

/// The admin API as the route table describes it.
pub(crate) fn api() -> Api {
    Api {
        title: "tenantgate admin API",
        description: "Shards, tenants, domains, tokens, jobs, backups and the audit log of \
            tenantgate. Every /v1 route needs `Authorization: Bearer <token>`; write routes need \
            a write-scoped token. A token restricted to some tenants sees and changes only those \
            (lists are filtered to them) and gets 403 `outside_scope` elsewhere, including on \
            fleet-wide routes (shards, tokens, resolve, migrations, creating or moving tenants).",
        operations: table().into_iter().map(|(op, _)| op).collect(),
    }
}

/// A request that does not come over HTTP (the CLI's, `dev`'s), checked against the
/// document's schema of `T` like a body would be, then read.
pub(crate) fn checked<T: utoipa::ToSchema + serde::de::DeserializeOwned>(
    state: &AdminState,
    value: serde_json::Value,
) -> Result<T, AdminError> {
    state.api.component::<T>(&value)?;
    Ok(tenantgate_openapi::decode(value, "body")?)
}

/// The request checks of the route table (built once per [`AdminState`]).
pub(crate) fn checker() -> Arc<Checker> {
    Arc::new(api().checker())
}

/// The admin API router over `state`. Unknown paths and methods answer our JSON error.
pub(crate) fn router(state: AdminState) -> Router {
    let mut router = Router::new();
    for (op, handler) in table() {
        // An operation mounted at another's path is served by that one's handler.
        if op.route_path() == op.path {
            router = router.route(op.route_path(), handler);
        }
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
