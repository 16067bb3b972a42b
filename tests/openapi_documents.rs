//! Both OpenAPI documents, as a client fetches them from a running `tenantgate dev`: the admin
//! API's at `/openapi.json` and the tenant API's at `/api/openapi.json` through the edge. Each
//! must be a well-formed OpenAPI 3.1 document (every `$ref` resolves, every schema is valid JSON
//! Schema 2020-12, every path parameter is declared, operation ids are unique), list the routes
//! DESIGN names, and every operation it lists must be routed: a route added to a table without
//! its documentation cannot exist (the router is built from the same table), and one documented
//! but not served fails here.

use std::collections::BTreeSet;

use serde_json::Value;
use tenantgate_testkit::process::DevProcess;

/// Structural checks of an OpenAPI 3.1 document; panics naming the first problem.
fn check_openapi_31(doc: &Value, which: &str) {
    assert_eq!(doc["openapi"], "3.1.0", "{which}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let schemas = doc["components"]["schemas"]
        .as_object()
        .expect("components.schemas");
    for (name, schema) in schemas {
        assert!(
            jsonschema::meta::is_valid(schema),
            "{which}: schema {name} is not valid JSON Schema: {schema}"
        );
    }
    // Every reference points at a component.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{which}: $ref {r} is not a component schema"));
        assert!(
            schemas.contains_key(name),
            "{which}: $ref {r} does not resolve"
        );
    }
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        assert!(path.starts_with('/'), "{which}: {path}");
        let templated: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        for (method, op) in item.as_object().unwrap() {
            assert!(
                ["get", "put", "post", "delete", "patch"].contains(&method.as_str()),
                "{which}: {method} {path}"
            );
            let id = op["operationId"].as_str().expect("operationId");
            assert!(
                ids.insert(id.to_string()),
                "{which}: operationId {id} twice"
            );
            let declared: BTreeSet<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path")
                .map(|p| {
                    assert_eq!(p["required"], true, "{which}: {method} {path}");
                    p["name"].as_str().unwrap()
                })
                .collect();
            assert_eq!(
                declared, templated,
                "{which}: path parameters of {method} {path}"
            );
            let responses = op["responses"].as_object().expect("responses");
            assert!(!responses.is_empty(), "{which}: {method} {path}");
            for (status, r) in responses {
                assert!(
                    status.len() == 3 && status.parse::<u16>().is_ok(),
                    "{which}: status {status} of {method} {path}"
                );
                assert!(
                    r["description"].is_string(),
                    "{which}: {method} {path} {status}"
                );
            }
            if let Some(links) = op["responses"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(|r| r["links"].as_object())
                .next()
            {
                for link in links.values() {
                    assert!(link["operationId"].is_string());
                }
            }
        }
    }
}

/// The (method, path) pairs of a document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect()
}

/// A request to every documented operation reaches a route: not a router's "no such route"
/// 404 (the admin's JSON one, or the app's empty one) and not 405.
async fn every_operation_is_routed(
    client: &reqwest::Client,
    base: &str,
    host: Option<&str>,
    doc: &Value,
) {
    for (method, path) in operations(doc) {
        let concrete = path
            .replace("{name}", "x")
            .replace("{id}", "01a2263b-0000-7000-8000-000000000000")
            .replace("{domain}", "x.example.com");
        let mut req = client.request(
            method.to_uppercase().parse().unwrap(),
            format!("{base}{concrete}"),
        );
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path}");
        // Our JSON 404s name what was not found; the routers' fallbacks do not.
        assert!(
            !(status == 404 && (body.is_null() || body["error"]["message"] == "route not found")),
            "{method} {path} is documented but not routed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_documents_are_openapi_31_and_list_every_route() {
    let data = tempfile::tempdir().unwrap();
    let dev = DevProcess::start(env!("CARGO_BIN_EXE_tenantgate"), data.path(), &[]);
    let client = reqwest::Client::new();

    let admin: Value = client
        .get(format!("{}/openapi.json", dev.admin()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    check_openapi_31(&admin, "admin");
    let ops = operations(&admin);
    for (method, path) in [
        ("post", "/v1/shards"),
        ("patch", "/v1/shards/{name}"),
        ("post", "/v1/tenants"),
        ("get", "/v1/tenants/{id}"),
        ("delete", "/v1/tenants/{id}/domains/{domain}"),
        ("post", "/v1/tenants/{id}/tokens"),
        ("post", "/v1/tenants/{id}/restore"),
        ("get", "/v1/backups/{id}"),
        ("post", "/v1/jobs/{id}/retry"),
        ("get", "/v1/audit"),
        ("get", "/v1/tenants/{id}/audit"),
        ("get", "/v1/tokens"),
        ("delete", "/v1/tokens/{id}"),
    ] {
        assert!(
            ops.contains(&(method.to_string(), path.to_string())),
            "admin: {method} {path} is not documented"
        );
    }
    // Every authenticated route documents the admin rate limit's 429.
    for (path, item) in admin["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if path.starts_with("/v1/") {
                assert!(
                    op["responses"]["429"].is_object(),
                    "admin: {method} {path} does not document 429"
                );
            }
        }
    }
    // The settings' retention bounds are the contract's.
    let settings = &admin["components"]["schemas"]["TenantSettings"]["properties"];
    assert_eq!(
        settings["data_retention_days"]["maximum"],
        tenantgate_contract::settings::MAX_RETENTION_DAYS
    );
    let keep = &admin["components"]["schemas"]["BackupRetention"]["properties"];
    let max = tenantgate_contract::settings::MAX_KEEP;
    assert_eq!(keep["keep_daily"]["maximum"], max.0, "{keep}");
    assert_eq!(keep["keep_weekly"]["maximum"], max.1, "{keep}");
    assert_eq!(keep["keep_monthly"]["maximum"], max.2, "{keep}");
    every_operation_is_routed(&client, &dev.admin(), None, &admin).await;

    // The tenant API, through the edge at a tenant's host.
    let r = client
        .get(format!("{}/api/openapi.json", dev.edge()))
        .header("host", "acme.localhost")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let app: Value = r.json().await.unwrap();
    check_openapi_31(&app, "app");
    let ops = operations(&app);
    let design: BTreeSet<(String, String)> = [
        ("get", "/api/items"),
        ("post", "/api/items"),
        ("get", "/api/items/{id}"),
        ("put", "/api/items/{id}"),
        ("delete", "/api/items/{id}"),
        ("get", "/api/export"),
        ("get", "/api/users"),
        ("post", "/api/users"),
        ("patch", "/api/users/{id}"),
        ("delete", "/api/users/{id}"),
        ("get", "/api/tokens"),
        ("delete", "/api/tokens/{id}"),
        ("get", "/api/roles"),
        ("post", "/api/roles"),
        ("patch", "/api/roles/{name}"),
        ("delete", "/api/roles/{name}"),
        ("get", "/api/audit"),
        ("get", "/api/usage"),
        ("get", "/api/openapi.json"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(
        ops, design,
        "the tenant API documents exactly DESIGN's /api routes"
    );
    every_operation_is_routed(&client, &dev.edge(), Some("acme.localhost"), &app).await;
}
