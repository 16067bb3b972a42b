//! Items, the sample resource: `/api/items` CRUD in the tenant's own database.
//!
//! ```text
//! GET    /api/items?limit=&cursor=   items:read   {"items":[…], "next_cursor": "…"|null}
//! POST   /api/items {title, body?}    items:write  201 item
//! GET    /api/items/{id}              items:read   item
//! PUT    /api/items/{id} {title, body?} items:write item
//! DELETE /api/items/{id}              items:write  204 (recorded in the audit trail)
//! ```
//!
//! `title` is 1..=200 characters (after trimming), `body` at most 10,000; violations are 422 with
//! `error.fields`. Lists are ordered by creation; `limit` is 1..=100 (default 20) and `cursor` is
//! the opaque `next_cursor` of the previous page.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};
use tenantgate_catalog::tenant_audit::{self, NewEntry};
use tenantgate_contract::time::{now_ms, rfc3339};
use uuid::Uuid;

use crate::context::TenantContext;
use crate::error::{AppError, FieldErrors};
use crate::rbac::{Credential, Permission};

pub const TITLE_MAX_CHARS: usize = 200;
pub const BODY_MAX_CHARS: usize = 10_000;
pub const DEFAULT_LIMIT: i64 = 20;
pub const MAX_LIMIT: i64 = 100;

/// An item as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Item {
    #[schema(format = Uuid)]
    pub id: String,
    pub title: String,
    pub body: String,
    /// The user who created it.
    pub created_by: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    #[serde(skip)]
    pub created_ms: i64,
}

/// Body of `POST` and `PUT`. Its schema states the rules [`ItemInput::validate`] checks, so
/// the document and the check agree (the title is trimmed, so it needs a non-space).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ItemInput {
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = "\\S"
    )]
    pub title: Option<String>,
    #[schema(nullable = false, max_length = 10_000)]
    pub body: Option<String>,
}

impl ItemInput {
    /// The trimmed title and the body, or every field error at once.
    pub fn validate(self) -> Result<(String, String), AppError> {
        let mut errors = FieldErrors::new();
        let title = self.title.unwrap_or_default().trim().to_string();
        let chars = title.chars().count();
        if chars == 0 {
            errors.insert("title".into(), "is required".into());
        } else if chars > TITLE_MAX_CHARS {
            errors.insert(
                "title".into(),
                format!("must be at most {TITLE_MAX_CHARS} characters"),
            );
        }
        let body = self.body.unwrap_or_default();
        if body.chars().count() > BODY_MAX_CHARS {
            errors.insert(
                "body".into(),
                format!("must be at most {BODY_MAX_CHARS} characters"),
            );
        }
        if errors.is_empty() {
            Ok((title, body))
        } else {
            Err(AppError::Validation(errors))
        }
    }
}

/// The route table's request checks, an `Extension` of the `/api` routes (see
/// [`crate::api`]).
pub type Checks = Arc<tenantgate_openapi::Checker>;

fn checks(parts: &Parts) -> Result<Checks, AppError> {
    parts
        .extensions
        .get::<Checks>()
        .cloned()
        .ok_or_else(|| AppError::BadRequest("this route takes no checked input".into()))
}

/// A JSON body of type `T`, checked against the route's documented schema first: 400 when it
/// is not JSON, 422 naming each field that breaks the schema.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, AppError> {
        let checks = req
            .extensions()
            .get::<Checks>()
            .cloned()
            .ok_or_else(|| AppError::BadRequest("this route takes no body".into()))?;
        Ok(ApiJson(checks.read_json(req).await?))
    }
}

/// Query parameters of type `T`, checked against the route's documented parameters.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, AppError> {
        Ok(ApiQuery(checks(parts)?.read_query(parts)?))
    }
}

/// Query of `GET /api/items`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, default 20.
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(nullable = false)]
    pub cursor: Option<String>,
}

/// A position in the creation order: after (`created_at`, `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: i64,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{}:{}", self.created_at, self.id))
    }

    /// `None` for anything [`Cursor::encode`] did not make.
    pub fn decode(text: &str) -> Option<Cursor> {
        let raw = String::from_utf8(URL_SAFE_NO_PAD.decode(text).ok()?).ok()?;
        let (at, id) = raw.split_once(':')?;
        Uuid::parse_str(id).ok()?;
        Some(Cursor {
            created_at: at.parse().ok()?,
            id: id.to_string(),
        })
    }
}

impl ListQuery {
    /// The validated page size and cursor.
    ///
    /// The document bounds `limit`; a cursor that no page gave names no page: 404.
    pub fn parse(&self) -> Result<(i64, Option<Cursor>), AppError> {
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                return Err(AppError::field(
                    "limit",
                    format!("must be a number from 1 to {MAX_LIMIT}"),
                ))
            }
        };
        let cursor = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => Some(Cursor::decode(text).ok_or(AppError::NotFound)?),
        };
        Ok((limit, cursor))
    }
}

const COLUMNS: &str = "id, title, body, created_by, created_at, updated_at";

fn from_row(r: &AnyRow) -> Result<Item, sqlx::Error> {
    let created_ms: i64 = r.try_get("created_at")?;
    Ok(Item {
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        body: r.try_get("body")?,
        created_by: r.try_get("created_by")?,
        created_at: rfc3339(created_ms),
        updated_at: rfc3339(r.try_get("updated_at")?),
        created_ms,
    })
}

/// Up to `limit` items after `after`, oldest first.
pub async fn page(
    db: &mut AnyConnection,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Item>, sqlx::Error> {
    let rows = match after {
        None => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM items ORDER BY created_at, id LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(&mut *db)
            .await?
        }
        Some(c) => {
            sqlx::query(&format!(
                "SELECT {COLUMNS} FROM items
                 WHERE created_at > $1 OR (created_at = $1 AND id > $2)
                 ORDER BY created_at, id LIMIT $3"
            ))
            .bind(c.created_at)
            .bind(&c.id)
            .bind(limit)
            .fetch_all(&mut *db)
            .await?
        }
    };
    rows.iter().map(from_row).collect()
}

/// The `n` newest items, newest first.
pub async fn recent(db: &mut AnyConnection, n: i64) -> Result<Vec<Item>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM items ORDER BY created_at DESC, id DESC LIMIT $1"
    ))
    .bind(n)
    .fetch_all(&mut *db)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Number of items.
pub async fn count(db: &mut AnyConnection) -> Result<i64, sqlx::Error> {
    let row = sqlx::query("SELECT COUNT(*) FROM items")
        .fetch_one(&mut *db)
        .await?;
    row.try_get(0)
}

async fn fetch(db: &mut AnyConnection, id: &str) -> Result<Option<Item>, sqlx::Error> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM items WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *db)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Item ids are UUIDs; anything else cannot exist (404 without a query).
fn item_id(raw: &str) -> Result<String, AppError> {
    Uuid::parse_str(raw)
        .map(|u| u.to_string())
        .map_err(|_| AppError::NotFound)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct ItemPage {
    items: Vec<Item>,
    next_cursor: Option<String>,
}

pub(crate) async fn list(
    ctx: TenantContext,
    cred: Credential,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, AppError> {
    let (limit, cursor) = query.parse()?;
    let (_user, mut db) = cred.read(&ctx, Permission::ItemsRead).await?;
    let mut items = page(&mut db, cursor.as_ref(), limit + 1).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|last| {
            Cursor {
                created_at: last.created_ms,
                id: last.id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(Json(ItemPage { items, next_cursor }).into_response())
}

pub(crate) async fn create(
    ctx: TenantContext,
    cred: Credential,
    ApiJson(input): ApiJson<ItemInput>,
) -> Result<Response, AppError> {
    let (user, mut db) = cred.write(&ctx, Permission::ItemsWrite).await?;
    let (title, body) = input.validate()?;
    let id = Uuid::now_v7().to_string();
    let now = now_ms();
    sqlx::query(
        "INSERT INTO items (id, title, body, created_by, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $5)",
    )
    .bind(&id)
    .bind(&title)
    .bind(&body)
    .bind(&user.id)
    .bind(now)
    .execute(&mut *db)
    .await?;
    let item = Item {
        id: id.clone(),
        title,
        body,
        created_by: Some(user.id),
        created_at: rfc3339(now),
        updated_at: rfc3339(now),
        created_ms: now,
    };
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api/items/{id}"))],
        Json(item),
    )
        .into_response())
}

pub(crate) async fn read(
    ctx: TenantContext,
    cred: Credential,
    Path(id): Path<String>,
) -> Result<Json<Item>, AppError> {
    let (_user, mut db) = cred.read(&ctx, Permission::ItemsRead).await?;
    let id = item_id(&id)?;
    fetch(&mut db, &id)
        .await?
        .map(Json)
        .ok_or(AppError::NotFound)
}

pub(crate) async fn replace(
    ctx: TenantContext,
    cred: Credential,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<ItemInput>,
) -> Result<Json<Item>, AppError> {
    let (_user, mut db) = cred.write(&ctx, Permission::ItemsWrite).await?;
    let (title, body) = input.validate()?;
    let id = item_id(&id)?;
    let result =
        sqlx::query("UPDATE items SET title = $2, body = $3, updated_at = $4 WHERE id = $1")
            .bind(&id)
            .bind(&title)
            .bind(&body)
            .bind(now_ms())
            .execute(&mut *db)
            .await?;
    if result.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    fetch(&mut db, &id)
        .await?
        .map(Json)
        .ok_or(AppError::NotFound)
}

pub(crate) async fn remove(
    ctx: TenantContext,
    cred: Credential,
    Path(id): Path<String>,
) -> Result<StatusCode, AppError> {
    let (user, mut db) = cred.write(&ctx, Permission::ItemsWrite).await?;
    let id = item_id(&id)?;
    let mut tx = db.begin().await?;
    let result = sqlx::query("DELETE FROM items WHERE id = $1")
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    if result.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    // Deletions are audited (the item's id only: its text may hold personal data).
    let entry = NewEntry::new(crate::users::actor(&user), "item.deleted")
        .subject(&id, None)
        .client(ctx.client_address());
    tenant_audit::append(&mut tx, &entry).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_reports_every_field() {
        let long = "x".repeat(201);
        let err = ItemInput {
            title: Some(long),
            body: Some("é".repeat(10_001)),
        }
        .validate()
        .unwrap_err();
        let AppError::Validation(fields) = err else {
            panic!("{err}")
        };
        assert_eq!(fields.len(), 2);
        assert!(ItemInput {
            title: Some("  ".into()),
            body: None
        }
        .validate()
        .is_err());
        let ok = ItemInput {
            title: Some(format!(" {} ", "é".repeat(200))),
            body: Some("b".repeat(10_000)),
        };
        assert_eq!(ok.validate().unwrap().0.chars().count(), 200);
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at: 1_700_000_000_000,
            id: Uuid::now_v7().to_string(),
        };
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        assert_eq!(Cursor::decode("nope"), None);
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode("1:not-a-uuid")),
            None
        );
    }

    #[test]
    fn limits() {
        let q = |l: i64| ListQuery {
            limit: Some(l),
            cursor: None,
        };
        assert_eq!(ListQuery::default().parse().unwrap().0, DEFAULT_LIMIT);
        assert_eq!(q(100).parse().unwrap().0, 100);
        for bad in [0, 101, -1] {
            assert!(q(bad).parse().is_err(), "{bad}");
        }
    }
}
