//! `GET /api/export` (permission `export`): all of the tenant's items as one JSON document,
//! streamed page by page so memory stays flat however many items a tenant has.
//!
//! ```json
//! {"tenant":{"id":"…","slug":"…","name":"…"},"exported_at":"…","items":[{…},{…}]}
//! ```
//!
//! The connection is held until the last page is sent. A database error mid-stream aborts the
//! response (the client sees a truncated body, never a document that looks complete).

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{stream, StreamExt};
use tenantgate_contract::time::{now_ms, rfc3339};

use crate::context::TenantContext;
use crate::error::AppError;
use crate::items::{self, Cursor};
use crate::pools::TenantDb;
use crate::rbac::{Credential, Permission};

/// Items per database round trip.
const PAGE: i64 = 500;

enum Step {
    Page {
        db: TenantDb,
        after: Option<Cursor>,
        first: bool,
    },
    Done,
}

pub(crate) async fn export(ctx: TenantContext, cred: Credential) -> Result<Response, AppError> {
    let (_user, db) = cred.read(&ctx, Permission::Export).await?;
    let head = serde_json::json!({
        "id": ctx.tenant_id(),
        "slug": ctx.slug(),
        "name": ctx.name(),
    });
    let opening = format!(
        "{{\"tenant\":{head},\"exported_at\":\"{}\",\"items\":[",
        rfc3339(now_ms())
    );
    let pages = stream::try_unfold(
        Step::Page {
            db,
            after: None,
            first: true,
        },
        |step| async move {
            let Step::Page {
                mut db,
                after,
                first,
            } = step
            else {
                return Ok::<_, sqlx::Error>(None);
            };
            let page = items::page(&mut db, after.as_ref(), PAGE).await?;
            let mut chunk = String::new();
            for (i, item) in page.iter().enumerate() {
                if !(first && i == 0) {
                    chunk.push(',');
                }
                chunk.push_str(&serde_json::to_string(item).expect("items serialise"));
            }
            let next = match page.last() {
                Some(last) if page.len() as i64 == PAGE => Step::Page {
                    db,
                    after: Some(Cursor {
                        created_at: last.created_ms,
                        id: last.id.clone(),
                    }),
                    first: false,
                },
                _ => {
                    chunk.push_str("]}");
                    Step::Done
                }
            };
            Ok(Some((Bytes::from(chunk), next)))
        },
    );
    let body = stream::once(async move { Ok::<_, sqlx::Error>(Bytes::from(opening)) }).chain(pages);
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"export.json\"",
            ),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
