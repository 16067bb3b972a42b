//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the route table.

use axum::Json;
use serde_json::{json, Map, Value};

use super::{table, Access};

pub(crate) async fn handler() -> Json<Value> {
    Json(document())
}

/// The OpenAPI path of an axum path (`{*domain}` → `{domain}`).
pub(crate) fn openapi_path(axum_path: &str) -> String {
    axum_path.replace("{*", "{")
}

fn path_params(path: &str) -> Vec<String> {
    path.split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}').map(str::to_string))
        .collect()
}

/// The whole document.
pub(crate) fn document() -> Value {
    let mut paths = Map::new();
    for (doc, _) in table() {
        let path = openapi_path(doc.path);
        let mut parameters: Vec<Value> = path_params(&path)
            .into_iter()
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        for (name, ty, description) in doc.query {
            parameters.push(json!({
                "name": name, "in": "query", "required": *name == "host" && doc.path == "/v1/resolve",
                "description": description, "schema": { "type": ty },
            }));
        }
        let (status, schema) = doc.success;
        let content = if schema == "Metrics" {
            json!({ "text/plain": { "schema": { "type": "string" } } })
        } else {
            json!({ "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } })
        };
        let mut responses = Map::new();
        responses.insert(
            status.to_string(),
            json!({ "description": "success", "content": content }),
        );
        let error = |description: &str| {
            json!({ "description": description,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } })
        };
        if doc.access != Access::Public {
            responses.insert("401".into(), error("missing or invalid bearer token"));
            responses.insert("403".into(), error("the token lacks the scope"));
            responses.insert("404".into(), error("not found"));
            responses.insert(
                "429".into(),
                error("over the admin rate limit of the token or client address; see Retry-After"),
            );
        }
        if doc.request.is_some() || !doc.query.is_empty() {
            responses.insert("400".into(), error("the body is not JSON"));
            responses.insert(
                "422".into(),
                error("validation failed; `fields` names each invalid field"),
            );
        }
        if doc.access == Access::Write {
            responses.insert(
                "409".into(),
                error("conflict: a name or domain is taken, or the object's state forbids this"),
            );
        }
        let mut operation = json!({
            "summary": doc.summary,
            "operationId": format!("{}_{}", doc.method, path.trim_start_matches('/').replace(['/', '{', '}', '.'], "_")),
            "parameters": parameters,
            "responses": responses,
        });
        match doc.access {
            Access::Public => operation["security"] = json!([]),
            Access::Read => operation["x-scope"] = json!("read"),
            Access::Write => operation["x-scope"] = json!("write"),
        }
        if let Some(request) = doc.request {
            operation["requestBody"] = json!({ "required": true, "content": {
                "application/json": { "schema": { "$ref": format!("#/components/schemas/{request}") } } } });
        }
        let item = paths
            .entry(path)
            .or_insert_with(|| Value::Object(Map::new()));
        item[doc.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tenantgate admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Shards, tenants, domains, tokens, jobs and the audit log of tenantgate. \
                Every /v1 route needs `Authorization: Bearer <token>`; write routes need a write-scoped token.",
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": merged(merged(schemas(), super::backups::schemas()), super::admin_tokens::schemas()),
        },
    })
}

/// `base` with the schemas of `more` added.
fn merged(mut base: Value, more: Value) -> Value {
    if let (Some(base), Value::Object(more)) = (base.as_object_mut(), more) {
        base.extend(more);
    }
    base
}

fn obj(required: &[&str], properties: Value) -> Value {
    json!({ "type": "object", "additionalProperties": false, "required": required, "properties": properties })
}

fn schemas() -> Value {
    let string = json!({ "type": "string" });
    let strings = json!({ "type": "array", "items": { "type": "string" } });
    let time = json!({ "type": "string", "format": "date-time" });
    let rate_limit = obj(
        &["rps", "burst"],
        json!({
            "rps": { "type": "integer", "minimum": 1, "maximum": crate::validate::MAX_RPS },
            "burst": { "type": "integer", "minimum": 1, "maximum": crate::validate::MAX_BURST },
        }),
    );
    let settings = obj(
        &[],
        json!({
            "locale": { "type": "string", "examples": ["en", "pt-BR"] },
            "timezone": { "type": "string", "examples": ["Europe/Berlin"] },
            "theme": { "enum": ["light", "dark", "system"] },
            "features": { "type": "object", "additionalProperties": { "type": "boolean" } },
            "data_retention_days": { "type": "integer", "minimum": 1,
                "maximum": tenantgate_contract::settings::MAX_RETENTION_DAYS },
            "backup_retention": { "type": "object", "additionalProperties": false,
                "required": ["keep_daily", "keep_weekly", "keep_monthly"], "properties": {
                "keep_daily": { "type": "integer", "minimum": 0, "maximum": tenantgate_contract::settings::MAX_KEEP.0 },
                "keep_weekly": { "type": "integer", "minimum": 0, "maximum": tenantgate_contract::settings::MAX_KEEP.1 },
                "keep_monthly": { "type": "integer", "minimum": 0, "maximum": tenantgate_contract::settings::MAX_KEEP.2 } } },
        }),
    );
    let tenant_status = json!({ "enum": ["provisioning", "active", "suspended", "moving", "restoring", "deleted", "failed"] });
    let shard = json!({ "type": "object", "properties": {
        "name": string, "status": { "enum": ["active", "draining", "disabled"] },
        "app_upstreams": strings, "database_url": { "type": "string", "description": "password redacted" },
        "replicas": strings, "created_at": time, "updated_at": time,
    }});
    let tenant = json!({ "type": "object", "properties": {
        "id": { "type": "string", "format": "uuid" }, "slug": string, "name": string,
        "status": tenant_status, "shard": string, "epoch": { "type": "integer" }, "domains": strings,
        "rate_limit": { "oneOf": [rate_limit, { "type": "null" }] }, "settings": settings,
        "schema_version": { "type": "integer" }, "last_error": string, "migration_error": string,
        "created_at": time, "updated_at": time,
    }});
    let job = json!({ "type": "object", "properties": {
        "id": { "type": "string", "format": "uuid" }, "kind": string,
        "tenant_id": { "type": ["string", "null"] },
        "status": { "enum": ["queued", "running", "succeeded", "failed"] },
        "attempts": { "type": "integer" }, "max_attempts": { "type": "integer" },
        "error": { "type": ["string", "null"] }, "run_at": time, "created_at": time, "updated_at": time,
        "progress": { "type": ["object", "null"], "description": "for migrate_tenants: done, total, failed, and at the end migrated, current and failures" },
    }});
    json!({
        "Error": { "type": "object", "properties": { "error": { "type": "object", "required": ["code", "message"], "properties": {
            "code": string, "message": string,
            "fields": { "type": "array", "items": { "type": "object", "properties": { "field": string, "message": string } } },
        }}}},
        "RateLimit": rate_limit,
        "Settings": settings,
        "CreateShard": obj(&["name", "app_upstreams", "database_url"], json!({
            "name": { "type": "string", "pattern": "^[a-z][a-z0-9-]{0,61}[a-z0-9]$" },
            "app_upstreams": { "type": "array", "items": { "type": "string", "description": "host:port" }, "minItems": 1 },
            "database_url": { "type": "string", "description": "postgres://… server URL or sqlite://DIR" },
            "replicas": strings,
        })),
        "PatchShard": obj(&[], json!({
            "status": { "enum": ["active", "draining", "disabled"] }, "app_upstreams": strings, "replicas": strings,
        })),
        "Shard": shard,
        "ShardList": { "type": "object", "properties": { "shards": { "type": "array", "items": { "$ref": "#/components/schemas/Shard" } } } },
        "CreateTenant": obj(&["slug", "name", "domains"], json!({
            "slug": { "type": "string", "pattern": "^[a-z][a-z0-9-]{0,61}[a-z0-9]$" },
            "name": string,
            "domains": { "type": "array", "items": { "type": "string", "description": "host or host/prefix" }, "minItems": 1 },
            "shard": string, "rate_limit": rate_limit, "settings": settings,
        })),
        "PatchTenant": obj(&[], json!({
            "name": string, "status": { "enum": ["active", "suspended"] },
            "rate_limit": { "oneOf": [rate_limit, { "type": "null" }] },
            "settings": { "type": "object", "description": "merged into the current settings; null removes a key" },
        })),
        "Tenant": tenant,
        "TenantJob": { "type": "object", "properties": { "tenant": { "$ref": "#/components/schemas/Tenant" }, "job_id": { "type": "string", "format": "uuid" } } },
        "TenantPage": { "type": "object", "properties": {
            "tenants": { "type": "array", "items": { "$ref": "#/components/schemas/Tenant" } },
            "next_cursor": { "type": ["string", "null"] } } },
        "MoveTenant": obj(&["shard"], json!({ "shard": string })),
        "MoveJob": { "type": "object", "properties": { "job_id": { "type": "string", "format": "uuid" } } },
        "StartMigration": obj(&[], json!({
            "tenants": { "type": "array", "items": string, "description": "slugs or ids; empty or absent means every tenant" },
            "concurrency": { "type": "integer", "minimum": 1, "maximum": 64, "description": "databases at once per database server, default 8" },
        })),
        "MigrationJob": { "type": "object", "properties": { "job_id": { "type": "string", "format": "uuid" } } },
        "AddDomain": obj(&["domain"], json!({ "domain": string })),
        "MintToken": obj(&["email", "role"], json!({
            "email": string, "role": { "type": "string", "examples": ["owner", "member", "viewer"] },
            "ttl_secs": { "type": "integer", "minimum": 1 },
        })),
        "MintedToken": { "type": "object", "properties": { "token": string, "role": string, "expires_at": { "type": ["string", "null"] } } },
        "Job": job,
        "Resolution": { "type": "object", "properties": {
            "host": string, "path_prefix": string, "tenant": { "type": "object" }, "shard": { "type": "object" },
            "backends": strings, "rate_limit": { "type": "object" },
            "edge": { "type": "object", "properties": { "status": { "type": "integer" }, "code": string, "reason": string } } } },
        "AuditPage": { "type": "object", "properties": {
            "entries": { "type": "array", "items": { "type": "object", "properties": {
                "id": { "type": "integer" }, "at": time, "actor": string, "action": string, "target": string,
                "tenant_id": string, "before": {}, "after": {} } } },
            "next_cursor": { "type": ["integer", "null"] } } },
        "Status": { "type": "object", "properties": { "status": string } },
        "OpenApi": { "type": "object" },
    })
}
