//! The tenant API under `/api`: one route table builds its router, its OpenAPI document
//! (`GET /api/openapi.json`, through the edge like every tenant route) and the checks of its
//! request bodies and queries, so no `/api` route exists undocumented and none accepts what
//! its document forbids.

use std::sync::{Arc, OnceLock};

use axum::routing::{self, MethodRouter};
use axum::{Extension, Json, Router};
use serde_json::Value;
use tenantgate_openapi::{Access, Api, Document, Operation as Op};

use crate::error::ErrorBody;
use crate::items::{self, Item, ItemInput, ItemPage, ListQuery};
use crate::state::AppState;
use crate::{audit, roles, usage, users};

/// Answers any tenant route may give: the edge's own (a malformed request, the rate limit, the
/// tenant unavailable) and the app's (no or bad user token, tenant database unavailable).
const COMMON: &[(u16, &str)] = &[
    (
        400,
        "malformed: the edge refuses some paths and headers outright",
    ),
    (
        401,
        "no user token (or session), or an invalid or expired one",
    ),
    (429, "the tenant is over its rate limit (from the edge)"),
    (
        503,
        "the tenant or its database is unavailable for now; see Retry-After",
    ),
];
/// Answers of routes with a body, besides [`COMMON`] (whose 400 also means "not JSON").
const BODY: &[(u16, &str)] = &[(422, "the body breaks its schema; `fields` names each field")];

/// The streamed body of `GET /api/export`, as the document shows it.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct Export {
    tenant: ExportTenant,
    #[schema(format = DateTime)]
    exported_at: String,
    items: Vec<Item>,
    /// Without tokens or sessions.
    users: Vec<users::UserView>,
    roles: Vec<roles::RoleView>,
    /// Oldest first.
    audit: Vec<tenantgate_catalog::tenant_audit::Entry>,
}

/// The exporting tenant.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub(crate) struct ExportTenant {
    #[schema(format = Uuid)]
    id: String,
    slug: String,
    name: String,
}

/// Item and user ids are UUIDs.
fn uuid() -> Value {
    serde_json::json!({ "type": "string", "format": "uuid" })
}

/// Role names as `POST /api/roles` takes them; other names are no role (404).
fn role_name() -> Value {
    serde_json::json!({ "type": "string", "maxLength": 64 })
}

/// Every `/api` route with its handler.
pub(crate) fn table() -> Vec<(Op, MethodRouter<AppState>)> {
    let read = Access::Bearer("items:read");
    let write = Access::Bearer("items:write");
    let manage = Access::Bearer("users:manage");
    let forbidden = (403, "the user's role lacks the permission");
    let item_links = |op: Op, status: u16| {
        op.link(
            status,
            "GetItem",
            "getItem",
            &[("id", "$response.body#/id")],
        )
        .link(
            status,
            "ReplaceItem",
            "replaceItem",
            &[("id", "$response.body#/id")],
        )
        .link(
            status,
            "DeleteItem",
            "deleteItem",
            &[("id", "$response.body#/id")],
        )
    };
    vec![
        (
            Op::get("/api/items", "The tenant's items, oldest first")
                .access(read)
                .query::<ListQuery>()
                .reply::<ItemPage>(200, "a page of items")
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(&[
                    forbidden,
                    (404, "the cursor names no page"),
                    (422, "a query parameter breaks its schema"),
                ]),
            routing::get(items::list),
        ),
        (
            item_links(
                Op::post("/api/items", "Create an item")
                    .id("createItem")
                    .access(write)
                    .body::<ItemInput>()
                    .reply::<Item>(201, "the item"),
                201,
            )
            .errors_as::<ErrorBody>(COMMON)
            .errors_as::<ErrorBody>(BODY)
            .errors_as::<ErrorBody>(&[forbidden]),
            routing::post(items::create),
        ),
        (
            Op::get("/api/items/{id}", "Get an item")
                .path_param("id", uuid())
                .id("getItem")
                .access(read)
                .reply::<Item>(200, "the item")
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(&[forbidden, (404, "no such item")]),
            routing::get(items::read),
        ),
        (
            Op::put("/api/items/{id}", "Replace an item's title and body")
                .path_param("id", uuid())
                .id("replaceItem")
                .access(write)
                .body::<ItemInput>()
                .reply::<Item>(200, "the item after the change")
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(BODY)
                .errors_as::<ErrorBody>(&[forbidden, (404, "no such item")]),
            routing::put(items::replace),
        ),
        (
            Op::delete("/api/items/{id}", "Delete an item")
                .path_param("id", uuid())
                .id("deleteItem")
                .access(write)
                .empty(204, "deleted")
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(&[forbidden, (404, "no such item")]),
            routing::delete(items::remove),
        ),
        (
            Op::get(
                "/api/export",
                "All of the tenant's data (items, users, roles, audit trail) as one JSON document",
            )
            .access(Access::Bearer("export:run"))
            .reply::<Export>(200, "the export, streamed")
            .errors_as::<ErrorBody>(COMMON)
            .errors_as::<ErrorBody>(&[forbidden]),
            routing::get(crate::export::export),
        ),
        (
            Op::get("/api/users", "The tenant's users, oldest first")
                .access(manage)
                .query::<ListQuery>()
                .reply::<users::UserPage>(200, "a page of users")
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(&[
                    forbidden,
                    (404, "the cursor names no page"),
                    (422, "a query parameter breaks its schema"),
                ]),
            routing::get(users::list),
        ),
        (
            Op::post(
                "/api/users",
                "Invite a user: create them with a role and mint their first token (shown once)",
            )
            .id("inviteUser")
            .access(manage)
            .body::<users::Invite>()
            .reply::<users::Invited>(201, "the user and the token")
            .link(
                201,
                "PatchUser",
                "patchUser",
                &[("id", "$response.body#/user/id")],
            )
            .errors_as::<ErrorBody>(COMMON)
            .errors_as::<ErrorBody>(BODY)
            .errors_as::<ErrorBody>(&[
                (
                    403,
                    "the user's role lacks users:manage, or a permission of the role given",
                ),
                (404, "the tenant has no such role"),
                (409, "a user with this email exists"),
            ]),
            routing::post(users::invite),
        ),
        (
            Op::patch(
                "/api/users/{id}",
                "Change a user's role, or disable or enable the user",
            )
            .path_param("id", uuid())
            .id("patchUser")
            .access(manage)
            .body::<users::UserPatch>()
            .reply::<users::UserView>(200, "the user after the change")
            .errors_as::<ErrorBody>(COMMON)
            .errors_as::<ErrorBody>(BODY)
            .errors_as::<ErrorBody>(&[
                (
                    403,
                    "the user's role lacks users:manage, or a permission of a role involved",
                ),
                (404, "no such user, or the tenant has no such role"),
                (
                    409,
                    "the tenant would have no active owner, or the user is erased",
                ),
            ]),
            routing::patch(users::patch),
        ),
        (
            Op::delete(
                "/api/users/{id}",
                "Delete a user, or with erase=true erase their personal data",
            )
            .path_param("id", uuid())
            .id("deleteUser")
            .access(manage)
            .query::<users::DeleteQuery>()
            .empty(
                204,
                "deleted or erased; the user's tokens and sessions are revoked",
            )
            .errors_as::<ErrorBody>(COMMON)
            .errors_as::<ErrorBody>(&[
                (
                    403,
                    "the user's role lacks users:manage, or a permission of the user's role",
                ),
                (404, "no such user"),
                (
                    409,
                    "the tenant would have no active owner, or the user is already erased",
                ),
                (422, "a query parameter breaks its schema"),
            ]),
            routing::delete(users::remove),
        ),
        (
            Op::get(
                "/api/tokens",
                "The tenant's user tokens, oldest first (never their secrets)",
            )
            .access(manage)
            .query::<ListQuery>()
            .reply::<users::TokenPage>(200, "a page of tokens")
            .errors_as::<ErrorBody>(COMMON)
            .errors_as::<ErrorBody>(&[
                forbidden,
                (404, "the cursor names no page"),
                (422, "a query parameter breaks its schema"),
            ]),
            routing::get(users::list_tokens),
        ),
        (
            Op::delete(
                "/api/tokens/{id}",
                "Revoke a token and end the sessions opened with it",
            )
            .path_param(
                "id",
                serde_json::json!({ "type": "string", "maxLength": 64 }),
            )
            .id("revokeToken")
            .access(manage)
            .empty(
                204,
                "revoked; the token is refused from the next request on",
            )
            .errors_as::<ErrorBody>(COMMON)
            .errors_as::<ErrorBody>(&[
                (
                    403,
                    "the user's role lacks users:manage, or a permission of the token's role",
                ),
                (404, "no such token"),
            ]),
            routing::delete(users::revoke_token),
        ),
        (
            Op::get("/api/roles", "The tenant's roles and their permissions")
                .access(manage)
                .reply::<roles::RoleList>(200, "every role")
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(&[forbidden]),
            routing::get(roles::list),
        ),
        (
            Op::post("/api/roles", "Create a role")
                .id("createRole")
                .access(manage)
                .body::<roles::NewRole>()
                .reply::<roles::RoleView>(201, "the role")
                .link(
                    201,
                    "PatchRole",
                    "patchRole",
                    &[("name", "$response.body#/name")],
                )
                .link(
                    201,
                    "DeleteRole",
                    "deleteRole",
                    &[("name", "$response.body#/name")],
                )
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(BODY)
                .errors_as::<ErrorBody>(&[
                    (
                        403,
                        "the user's role lacks users:manage, or a permission it would grant",
                    ),
                    (409, "a role of this name exists"),
                ]),
            routing::post(roles::create),
        ),
        (
            Op::patch("/api/roles/{name}", "Replace a role's permissions")
                .path_param("name", role_name())
                .id("patchRole")
                .access(manage)
                .body::<roles::RolePatch>()
                .reply::<roles::RoleView>(200, "the role after the change")
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(BODY)
                .errors_as::<ErrorBody>(&[
                    (
                        403,
                        "the user's role lacks users:manage, or a permission involved",
                    ),
                    (404, "no such role"),
                    (409, "a built-in role cannot be changed"),
                ]),
            routing::patch(roles::patch),
        ),
        (
            Op::delete("/api/roles/{name}", "Remove a role no user has")
                .path_param("name", role_name())
                .id("deleteRole")
                .access(manage)
                .empty(204, "removed")
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(&[
                    (
                        403,
                        "the user's role lacks users:manage, or a permission of the role",
                    ),
                    (404, "no such role"),
                    (409, "a built-in role, or one that users still have"),
                ]),
            routing::delete(roles::remove),
        ),
        (
            Op::get("/api/audit", "The tenant's audit trail, newest first")
                .access(Access::Bearer("audit:read"))
                .query::<audit::AuditQuery>()
                .reply::<audit::AuditPage>(200, "a page of the trail")
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(&[forbidden, (422, "a query parameter breaks its schema")]),
            routing::get(audit::list),
        ),
        (
            Op::get(
                "/api/usage",
                "The tenant's requests, errors, 429s and response bytes per step, as the edges counted them",
            )
            .access(Access::Bearer("audit:read"))
            .query::<tenantgate_catalog::store::usage::UsageQuery>()
            .reply::<tenantgate_catalog::store::usage::UsageSeries>(200, "one point per step, empty steps included")
            .errors_as::<ErrorBody>(COMMON)
            .errors_as::<ErrorBody>(&[forbidden, (422, "a query parameter breaks its schema, or the range is too long for the step")]),
            routing::get(usage::series),
        ),
        (
            Op::get("/api/openapi.json", "This document")
                .reply::<Document>(200, "the OpenAPI 3.1 document"),
            routing::get(document_handler),
        ),
    ]
}

/// The tenant API as the route table describes it.
pub(crate) fn api() -> Api {
    Api {
        title: "tenantgate tenant API",
        description: "A tenant's own data, through the edge at the tenant's host. Routes need \
            `Authorization: Bearer <tenant user token>` (minted by the admin API) or the \
            session cookie of `POST /login`; each needs the permission named in `x-scope`.",
        operations: table().into_iter().map(|(op, _)| op).collect(),
    }
}

async fn document_handler() -> Json<Value> {
    // The table is fixed at build time: generate the document once.
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    Json(DOCUMENT.get_or_init(|| api().document()).clone())
}

/// The `/api` routes (to be mounted behind [`crate::require_tenant`]), with their checks.
pub(crate) fn router() -> Router<AppState> {
    let mut router = Router::new();
    for (op, handler) in table() {
        router = router.route(op.path, handler);
    }
    router.layer(Extension::<items::Checks>(Arc::new(api().checker())))
}
