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

/// Item ids are UUIDs.
fn item_id() -> Value {
    serde_json::json!({ "type": "string", "format": "uuid" })
}

/// Every `/api` route with its handler.
pub(crate) fn table() -> Vec<(Op, MethodRouter<AppState>)> {
    let read = Access::Bearer("items:read");
    let write = Access::Bearer("items:write");
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
                .path_param("id", item_id())
                .id("getItem")
                .access(read)
                .reply::<Item>(200, "the item")
                .errors_as::<ErrorBody>(COMMON)
                .errors_as::<ErrorBody>(&[forbidden, (404, "no such item")]),
            routing::get(items::read),
        ),
        (
            Op::put("/api/items/{id}", "Replace an item's title and body")
                .path_param("id", item_id())
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
                .path_param("id", item_id())
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
                "All of the tenant's items as one JSON document",
            )
            .access(Access::Bearer("export"))
            .reply::<Export>(200, "the export, streamed")
            .errors_as::<ErrorBody>(COMMON)
            .errors_as::<ErrorBody>(&[forbidden]),
            routing::get(crate::export::export),
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
