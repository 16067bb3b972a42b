//! OpenAPI route tables shared by the admin API and the app.
//!
//! A component lists its routes once as [`Operation`]s, each naming the Rust types of its
//! request body, query and answers (utoipa `ToSchema`/`IntoParams` derives). From that one table
//! come the OpenAPI 3.1 document ([`Api::document`]) and the request checks ([`Checker`]): a
//! body or query is checked against the document's own JSON schema before it is deserialised, so
//! what the document says a route accepts is exactly what the route accepts. A request that
//! breaks the schema is a [`Rejection`]: 400 when the body is not JSON, 422 naming each field.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{MatchedPath, Query};
use http::request::Parts;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, ToSchema};

pub use utoipa;

/// The HTTP methods the tables use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// Lower-case, as OpenAPI path items name operations.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Patch => "patch",
            Method::Delete => "delete",
        }
    }

    fn of(method: &http::Method) -> Option<Method> {
        Some(match *method {
            http::Method::GET => Method::Get,
            http::Method::POST => Method::Post,
            http::Method::PUT => Method::Put,
            http::Method::PATCH => Method::Patch,
            http::Method::DELETE => Method::Delete,
            _ => return None,
        })
    }
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials.
    Public,
    /// A bearer token; the text names what it must allow (an admin scope, a permission), shown
    /// as the operation's `x-scope`.
    Bearer(&'static str),
}

/// The error body every route answers with: `{"error":{"code","message","fields"?}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code (`validation_failed`, `not_found`, ...).
    pub code: String,
    pub message: String,
    /// With `validation_failed`: each invalid field and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub fields: Option<Vec<FieldError>>,
}

/// One invalid field of a request: its path (`domains[1]`, `rate_limit.rps`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A request refused by its operation's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not JSON, or not `application/json`: 400.
    BadRequest(String),
    /// JSON that breaks the schema: 422, each field and why.
    Invalid(Vec<FieldError>),
}

/// What an answer carries.
#[derive(Debug, Clone)]
enum Content {
    /// `application/json` with this schema.
    Json(Value),
    /// `text/plain`.
    Text,
    /// No body.
    Empty,
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    description: String,
    content: Content,
    links: Map<String, Value>,
}

/// One route: method, path, what it takes and what it answers.
#[derive(Debug, Clone)]
pub struct Operation {
    pub method: Method,
    /// axum path syntax (`{id}`, `{*domain}`); the document drops the `*`.
    pub path: &'static str,
    /// Where the router mounts the operation when that differs from `path` (see
    /// [`Operation::mounted_at`]).
    mount: Option<&'static str>,
    summary: &'static str,
    operation_id: Option<&'static str>,
    access: Access,
    body: Option<Value>,
    query: Vec<Value>,
    path_params: BTreeMap<String, Value>,
    answers: Vec<Answer>,
    /// The components the operation's schemas refer to, serialised.
    schemas: Vec<(String, Value)>,
}

fn reference<T: ToSchema>(schemas: &mut Vec<(String, Value)>) -> Value {
    let name = T::name().into_owned();
    let mut found: Vec<(String, RefOr<Schema>)> = vec![(name.clone(), T::schema())];
    T::schemas(&mut found);
    schemas.extend(
        found
            .into_iter()
            .map(|(n, s)| (n, serde_json::to_value(s).expect("schema serialises"))),
    );
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

impl Operation {
    pub fn new(method: Method, path: &'static str, summary: &'static str) -> Operation {
        Operation {
            method,
            path,
            mount: None,
            summary,
            operation_id: None,
            access: Access::Public,
            body: None,
            query: Vec::new(),
            path_params: BTreeMap::new(),
            answers: Vec::new(),
            schemas: Vec::new(),
        }
    }

    pub fn get(path: &'static str, summary: &'static str) -> Operation {
        Operation::new(Method::Get, path, summary)
    }

    pub fn post(path: &'static str, summary: &'static str) -> Operation {
        Operation::new(Method::Post, path, summary)
    }

    pub fn put(path: &'static str, summary: &'static str) -> Operation {
        Operation::new(Method::Put, path, summary)
    }

    pub fn patch(path: &'static str, summary: &'static str) -> Operation {
        Operation::new(Method::Patch, path, summary)
    }

    pub fn delete(path: &'static str, summary: &'static str) -> Operation {
        Operation::new(Method::Delete, path, summary)
    }

    /// Mount the handler at `route` rather than at the documented path: for a documented path
    /// that axum's router cannot hold beside another, such as `/domains/{domain}/certificate`
    /// next to the catch-all `/domains/{*domain}` (the handler then receives the catch-all and
    /// parses the rest itself).
    pub fn mounted_at(mut self, route: &'static str) -> Operation {
        self.mount = Some(route);
        self
    }

    /// The path the router mounts the operation at (and the request checks find it by).
    pub fn route_path(&self) -> &'static str {
        self.mount.unwrap_or(self.path)
    }

    /// The operation's id (links name operations by it); default: method and path.
    pub fn id(mut self, id: &'static str) -> Operation {
        self.operation_id = Some(id);
        self
    }

    pub fn access(mut self, access: Access) -> Operation {
        self.access = access;
        self
    }

    /// A JSON request body of type `T`.
    pub fn body<T: ToSchema>(mut self) -> Operation {
        self.body = Some(reference::<T>(&mut self.schemas));
        self
    }

    /// Query parameters of `Q`.
    pub fn query<Q: IntoParams>(mut self) -> Operation {
        for p in Q::into_params(|| Some(ParameterIn::Query)) {
            self.query
                .push(serde_json::to_value(p).expect("parameter serialises"));
        }
        self
    }

    /// The schema of path parameter `name` (default: a string).
    pub fn path_param(mut self, name: &str, schema: Value) -> Operation {
        self.path_params.insert(name.to_string(), schema);
        self
    }

    /// A JSON answer of type `T`.
    pub fn reply<T: ToSchema>(mut self, status: u16, description: &str) -> Operation {
        let schema = reference::<T>(&mut self.schemas);
        self.answers.push(Answer {
            status,
            description: description.into(),
            content: Content::Json(schema),
            links: Map::new(),
        });
        self
    }

    /// A `text/plain` answer.
    pub fn text(mut self, status: u16, description: &str) -> Operation {
        self.answers.push(Answer {
            status,
            description: description.into(),
            content: Content::Text,
            links: Map::new(),
        });
        self
    }

    /// An answer without a body.
    pub fn empty(mut self, status: u16, description: &str) -> Operation {
        self.answers.push(Answer {
            status,
            description: description.into(),
            content: Content::Empty,
            links: Map::new(),
        });
        self
    }

    /// Error answers (the [`ErrorBody`] schema), each with what it means here.
    pub fn errors(self, errors: &[(u16, &str)]) -> Operation {
        self.errors_as::<ErrorBody>(errors)
    }

    /// Error answers with a component's own error body `E`.
    pub fn errors_as<E: ToSchema>(mut self, errors: &[(u16, &str)]) -> Operation {
        let schema = reference::<E>(&mut self.schemas);
        for (status, description) in errors {
            self.answers.push(Answer {
                status: *status,
                description: (*description).into(),
                content: Content::Json(schema.clone()),
                links: Map::new(),
            });
        }
        self
    }

    /// An OpenAPI link from the answer `status` to operation `operation_id`, its parameters
    /// taken from this answer (`("id", "$response.body#/tenant/id")`).
    pub fn link(
        mut self,
        status: u16,
        name: &str,
        operation_id: &str,
        parameters: &[(&str, &str)],
    ) -> Operation {
        let answer = self
            .answers
            .iter_mut()
            .find(|a| a.status == status)
            .expect("link from a listed answer");
        let parameters: Map<String, Value> = parameters
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        answer.links.insert(
            name.into(),
            json!({ "operationId": operation_id, "parameters": parameters }),
        );
        self
    }

    /// The document's path (`{*domain}` → `{domain}`).
    pub fn openapi_path(&self) -> String {
        self.path.replace("{*", "{")
    }

    fn operation_id(&self) -> String {
        match self.operation_id {
            Some(id) => id.to_string(),
            None => format!(
                "{}{}",
                self.method.as_str(),
                self.openapi_path()
                    .replace(['/', '{', '}', '.', '-'], "_")
                    .trim_end_matches('_')
            ),
        }
    }

    fn to_json(&self) -> Value {
        let path = self.openapi_path();
        let mut parameters: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                let schema = self
                    .path_params
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| json!({ "type": "string" }));
                json!({ "name": name, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        parameters.extend(self.query.iter().cloned());
        let mut responses = Map::new();
        for a in &self.answers {
            let mut r = json!({ "description": a.description });
            match &a.content {
                Content::Json(schema) => {
                    r["content"] = json!({ "application/json": { "schema": schema } })
                }
                Content::Text => {
                    r["content"] = json!({ "text/plain": { "schema": { "type": "string" } } })
                }
                Content::Empty => {}
            }
            if !a.links.is_empty() {
                r["links"] = Value::Object(a.links.clone());
            }
            responses.insert(a.status.to_string(), r);
        }
        let mut op = json!({
            "summary": self.summary,
            "operationId": self.operation_id(),
            "parameters": parameters,
            "responses": responses,
        });
        match self.access {
            Access::Public => op["security"] = json!([]),
            Access::Bearer(scope) => {
                op["security"] = json!([{ "bearer": [] }]);
                op["x-scope"] = json!(scope);
            }
        }
        if let Some(body) = &self.body {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": body } },
            });
        }
        op
    }
}

/// A component's API: its description and its operations.
pub struct Api {
    pub title: &'static str,
    pub description: &'static str,
    pub operations: Vec<Operation>,
}

impl Api {
    /// The OpenAPI 3.1 document.
    pub fn document(&self) -> Value {
        let mut paths = Map::new();
        let mut schemas = BTreeMap::new();
        for op in &self.operations {
            let item = paths
                .entry(op.openapi_path())
                .or_insert_with(|| Value::Object(Map::new()));
            item[op.method.as_str()] = op.to_json();
            for (name, schema) in &op.schemas {
                schemas.insert(name.clone(), schema.clone());
            }
        }
        json!({
            "openapi": "3.1.0",
            "info": {
                "title": self.title,
                "version": env!("CARGO_PKG_VERSION"),
                "description": self.description,
            },
            "paths": paths,
            "components": {
                "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
                "schemas": schemas,
            },
        })
    }

    /// The request checks of every operation, compiled from [`Api::document`].
    pub fn checker(&self) -> Checker {
        let document = self.document();
        let components = document["components"].clone();
        let compile = |schema: &Value| compile(schema, &components);
        let mut checks = HashMap::new();
        for op in &self.operations {
            let body = op.body.as_ref().map(&compile);
            let query = (!op.query.is_empty()).then(|| {
                let mut properties = Map::new();
                let mut required = Vec::new();
                let mut kinds = HashMap::new();
                for p in &op.query {
                    let name = p["name"].as_str().expect("parameter name").to_string();
                    if p["required"] == json!(true) {
                        required.push(name.clone());
                    }
                    kinds.insert(name.clone(), scalar_kind(&p["schema"]));
                    properties.insert(name, p["schema"].clone());
                }
                let schema = json!({
                    "type": "object",
                    "properties": properties,
                    "required": required,
                    "additionalProperties": false,
                });
                QueryCheck {
                    validator: compile(&schema),
                    kinds,
                }
            });
            checks.insert((op.method, op.route_path()), OperationCheck { body, query });
        }
        Checker { checks, components }
    }
}

fn compile(schema: &Value, components: &Value) -> jsonschema::Validator {
    let mut root = schema.clone();
    if let Some(o) = root.as_object_mut() {
        o.insert("components".into(), components.clone());
    }
    jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("schema {schema} does not compile: {e}"))
}

/// How a query parameter's text becomes JSON before its schema is checked.
#[derive(Debug, Clone, Copy)]
enum Scalar {
    Integer,
    Number,
    Boolean,
    Text,
}

fn scalar_kind(schema: &Value) -> Scalar {
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if types.contains(&"integer") {
        Scalar::Integer
    } else if types.contains(&"number") {
        Scalar::Number
    } else if types.contains(&"boolean") {
        Scalar::Boolean
    } else {
        Scalar::Text
    }
}

struct QueryCheck {
    validator: jsonschema::Validator,
    kinds: HashMap<String, Scalar>,
}

struct OperationCheck {
    body: Option<jsonschema::Validator>,
    query: Option<QueryCheck>,
}

/// Checks requests against their operation's schemas.
pub struct Checker {
    checks: HashMap<(Method, &'static str), OperationCheck>,
    components: Value,
}

impl std::fmt::Debug for Checker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("operations", &self.checks.len())
            .finish()
    }
}

/// `/rate_limit/rps` → `rate_limit.rps`, `/domains/1` → `domains[1]`, `` → `body`.
fn field_name(pointer: &str, root: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    if out.is_empty() {
        root.to_string()
    } else {
        out
    }
}

fn errors_of(validator: &jsonschema::Validator, instance: &Value, root: &str) -> Vec<FieldError> {
    let mut out = Vec::new();
    for e in validator.iter_errors(instance) {
        field_errors(&e, root, &mut out);
    }
    out
}

/// The fields one schema error is about: an unknown or missing property is named itself, and
/// a value that matches none of `oneOf`'s choices (`rate_limit`: null or a limit) is reported
/// by the choice it comes closest to (of its own JSON type, with the fewest errors), so the
/// field named is the one at fault (`rate_limit.rps`).
fn field_errors(e: &jsonschema::ValidationError<'_>, root: &str, out: &mut Vec<FieldError>) {
    use jsonschema::error::ValidationErrorKind as Kind;
    let path = e.instance_path().to_string();
    let child = |name: &str| {
        let pointer = format!("{path}/{}", name.replace('~', "~0").replace('/', "~1"));
        field_name(&pointer, root)
    };
    match e.kind() {
        Kind::AdditionalProperties { unexpected } => {
            for name in unexpected {
                out.push(FieldError::new(child(name), "is not a known field"));
            }
        }
        Kind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            out.push(FieldError::new(child(name), "is required"));
        }
        Kind::OneOfNotValid { context } | Kind::AnyOf { context } => {
            // The choices that failed on more than the value's JSON type.
            let near: Vec<&Vec<jsonschema::ValidationError<'static>>> = context
                .iter()
                .filter(|errors| {
                    !errors.iter().any(|c| {
                        matches!(c.kind(), Kind::Type { .. })
                            && c.instance_path().to_string() == path
                    })
                })
                .collect();
            match near.into_iter().min_by_key(|errors| errors.len()) {
                Some(closest) => closest.iter().for_each(|c| field_errors(c, root, out)),
                None => out.push(FieldError::new(field_name(&path, root), e.to_string())),
            }
        }
        // A string's own text is left out of the message: it may be a database URL with a
        // password, and the message is logged and echoed.
        Kind::Pattern { pattern } => out.push(FieldError::new(
            field_name(&path, root),
            format!("does not match {pattern}"),
        )),
        Kind::MaxLength { limit } => out.push(FieldError::new(
            field_name(&path, root),
            format!("is longer than {limit} characters"),
        )),
        Kind::MinLength { limit } => out.push(FieldError::new(
            field_name(&path, root),
            format!(
                "is shorter than {limit} character{}",
                if *limit == 1 { "" } else { "s" }
            ),
        )),
        _ => out.push(FieldError::new(field_name(&path, root), e.to_string())),
    }
}

impl Checker {
    fn find(&self, parts: &Parts) -> Option<&OperationCheck> {
        let method = Method::of(&parts.method)?;
        let path = parts.extensions.get::<MatchedPath>()?.as_str();
        self.checks
            .iter()
            .find(|((m, p), _)| *m == method && *p == path)
            .map(|(_, c)| c)
    }

    /// Check `value` against the document's schema of `T` (for requests that do not come over
    /// HTTP, such as the CLI's).
    pub fn component<T: ToSchema>(&self, value: &Value) -> Result<(), Rejection> {
        let schema = json!({ "$ref": format!("#/components/schemas/{}", T::name()) });
        let errors = errors_of(&compile(&schema, &self.components), value, "body");
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Rejection::Invalid(errors))
        }
    }

    /// The body of the request `parts` (its operation's body schema checked), as JSON.
    pub fn body(&self, parts: &Parts, bytes: &[u8]) -> Result<Value, Rejection> {
        let is_json = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                let mime = ct.split(';').next().unwrap_or("").trim();
                mime.eq_ignore_ascii_case("application/json")
            });
        if !is_json {
            return Err(Rejection::BadRequest(
                "expected a body with content-type application/json".into(),
            ));
        }
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Rejection::BadRequest(format!("invalid JSON: {e}")))?;
        let check = self
            .find(parts)
            .and_then(|c| c.body.as_ref())
            .expect("a route that reads a body documents it");
        let errors = errors_of(check, &value, "body");
        if errors.is_empty() {
            Ok(integral(value))
        } else {
            Err(Rejection::Invalid(errors))
        }
    }

    /// The query of the request `parts` as a JSON object (its operation's parameters checked):
    /// integers and booleans are parsed where the schema says so.
    pub fn query(&self, parts: &Parts) -> Result<Value, Rejection> {
        let pairs: Vec<(String, String)> = Query::try_from_uri(&parts.uri)
            .map(|q: Query<Vec<(String, String)>>| q.0)
            .map_err(|e| Rejection::Invalid(vec![FieldError::new("query", e.body_text())]))?;
        let check = self
            .find(parts)
            .and_then(|c| c.query.as_ref())
            .expect("a route that reads a query documents it");
        let mut object = Map::new();
        let mut errors = Vec::new();
        for (name, text) in pairs {
            let value = match check.kinds.get(&name).copied().unwrap_or(Scalar::Text) {
                Scalar::Integer => text.parse::<i64>().map(Value::from).ok(),
                Scalar::Number => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number),
                Scalar::Boolean => match text.as_str() {
                    "true" => Some(Value::Bool(true)),
                    "false" => Some(Value::Bool(false)),
                    _ => None,
                },
                Scalar::Text => Some(Value::String(text.clone())),
            };
            let value = value.unwrap_or(Value::String(text));
            if object.insert(name.clone(), value).is_some() {
                errors.push(FieldError::new(name, "is given more than once"));
            }
        }
        let object = Value::Object(object);
        errors.extend(errors_of(&check.validator, &object, "query"));
        if errors.is_empty() {
            Ok(object)
        } else {
            Err(Rejection::Invalid(errors))
        }
    }
}

/// JSON Schema counts `23.0` as an integer, serde's integer types do not: integral numbers
/// become integers (no request field of these APIs is fractional).
fn integral(value: Value) -> Value {
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(integral).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, integral(v))).collect())
        }
        other => other,
    }
}

/// The schema of an OpenAPI document, for the route that serves it.
pub struct Document;

impl utoipa::PartialSchema for Document {
    fn schema() -> RefOr<Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Object)
            .description(Some("an OpenAPI 3.1 document"))
            .into()
    }
}

impl ToSchema for Document {
    fn name() -> std::borrow::Cow<'static, str> {
        "OpenApiDocument".into()
    }
}

/// The largest request body read (axum's default limit).
const MAX_BODY: usize = 2 * 1024 * 1024;

impl Checker {
    /// Read the JSON body of `req`, check it against its operation's schema and deserialise it.
    pub async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        req: axum::extract::Request,
    ) -> Result<T, Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY)
            .await
            .map_err(|e| Rejection::BadRequest(format!("could not read the body: {e}")))?;
        decode(self.body(&parts, &bytes)?, "body")
    }

    /// Check the query of `parts` against its operation's parameters and deserialise it.
    pub fn read_query<T: serde::de::DeserializeOwned>(
        &self,
        parts: &Parts,
    ) -> Result<T, Rejection> {
        decode(self.query(parts)?, "query")
    }
}

/// Deserialise checked JSON into `T`; a mismatch the schema let through is a 422 naming the
/// field.
pub fn decode<T: serde::de::DeserializeOwned>(value: Value, root: &str) -> Result<T, Rejection> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { root.to_string() } else { path };
        Rejection::Invalid(vec![FieldError::new(field, e.into_inner().to_string())])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integral_numbers_become_integers() {
        assert_eq!(
            integral(json!({ "a": [23.0, 1.5, -2.0] })),
            json!({ "a": [23, 1.5, -2] })
        );
    }

    #[test]
    fn field_names() {
        assert_eq!(field_name("", "body"), "body");
        assert_eq!(field_name("/rate_limit/rps", "body"), "rate_limit.rps");
        assert_eq!(field_name("/domains/1", "body"), "domains[1]");
        assert_eq!(field_name("/a~1b", "body"), "a/b");
    }
}
