//! `GET /api/export` (permission `export:run`): every table of the tenant's data as one JSON
//! document (GDPR access and portability), streamed page by page so memory stays flat however
//! much a tenant has.
//!
//! ```json
//! {"tenant":{"id":"…","slug":"…","name":"…"},"exported_at":"…",
//!  "items":[…],"users":[…],"roles":[…],"audit":[…]}
//! ```
//!
//! Users appear as `/api/users` shows them: without tokens, token hashes or sessions, which are
//! credentials, not data. The audit trail is oldest first. The export itself is recorded in the
//! trail before the first byte is sent (and so is part of it).
//!
//! The export reads the primary (it records itself there first). The connection is held until
//! the last page is sent. A database error mid-stream aborts the response (the client sees a
//! truncated body, never a document that looks complete).

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use futures::{stream, StreamExt};
use serde::Serialize;
use tenantgate_catalog::tenant_audit::{self, NewEntry};
use tenantgate_contract::time::{now_ms, rfc3339};

use crate::context::TenantContext;
use crate::error::AppError;
use crate::items::{self, Cursor};
use crate::pools::TenantDb;
use crate::rbac::{Credential, Permission};
use crate::{roles, users};

/// Rows per database round trip.
const PAGE: i64 = 500;

/// Where the export is: the section and the position in it.
enum Section {
    Items(Option<Cursor>),
    Users(Option<Cursor>),
    Roles,
    Audit(Option<i64>),
}

impl Section {
    /// The key of the section's array in the document.
    fn key(&self) -> &'static str {
        match self {
            Section::Items(_) => "items",
            Section::Users(_) => "users",
            Section::Roles => "roles",
            Section::Audit(_) => "audit",
        }
    }

    /// The section after this one, from its start; `None` after the last.
    fn following(&self) -> Option<Section> {
        match self {
            Section::Items(_) => Some(Section::Users(None)),
            Section::Users(_) => Some(Section::Roles),
            Section::Roles => Some(Section::Audit(None)),
            Section::Audit(_) => None,
        }
    }
}

struct Step {
    db: TenantDb,
    section: Section,
    /// No record of this section was written yet.
    first: bool,
}

/// Append `rows` to `chunk` as array elements, the first without a comma when `first`.
fn push_rows<T: Serialize>(chunk: &mut String, rows: &[T], first: bool) {
    for (i, row) in rows.iter().enumerate() {
        if !(first && i == 0) {
            chunk.push(',');
        }
        chunk.push_str(&serde_json::to_string(row).expect("rows serialise"));
    }
}

/// One page of the current section: the text, and where to go on (`None` when this page was
/// its last).
async fn next_page(step: &mut Step) -> Result<(String, Option<Section>), sqlx::Error> {
    let mut chunk = String::new();
    let full = |n: usize| n as i64 == PAGE;
    let next = match &step.section {
        Section::Items(after) => {
            let page = items::page(&mut step.db, after.as_ref(), PAGE).await?;
            push_rows(&mut chunk, &page, step.first);
            page.last().filter(|_| full(page.len())).map(|last| {
                Section::Items(Some(Cursor {
                    created_at: last.created_ms,
                    id: last.id.clone(),
                }))
            })
        }
        Section::Users(after) => {
            let page = users::page(&mut step.db, after.as_ref(), PAGE).await?;
            push_rows(&mut chunk, &page, step.first);
            page.last().filter(|_| full(page.len())).map(|last| {
                Section::Users(Some(Cursor {
                    created_at: last.created_ms,
                    id: last.id.clone(),
                }))
            })
        }
        Section::Roles => {
            push_rows(&mut chunk, &roles::all(&mut step.db).await?, step.first);
            None
        }
        Section::Audit(after) => {
            let page = tenant_audit::page_ascending(&mut step.db, *after, PAGE).await?;
            push_rows(&mut chunk, &page, step.first);
            page.last()
                .filter(|_| full(page.len()))
                .map(|last| Section::Audit(Some(last.id)))
        }
    };
    Ok((chunk, next))
}

pub(crate) async fn export(ctx: TenantContext, cred: Credential) -> Result<Response, AppError> {
    let (user, mut db) = cred.write(&ctx, Permission::Export).await?;
    let entry = NewEntry::new(users::actor(&user), "export.run").client(ctx.client_address());
    tenant_audit::append(&mut db, &entry).await?;
    let head = serde_json::json!({
        "id": ctx.tenant_id(),
        "slug": ctx.slug(),
        "name": ctx.name(),
    });
    let opening = format!(
        "{{\"tenant\":{head},\"exported_at\":\"{}\",\"items\":[",
        rfc3339(now_ms())
    );
    let first = Step {
        db,
        section: Section::Items(None),
        first: true,
    };
    let pages = stream::try_unfold(Some(first), |step| async move {
        let Some(mut step) = step else {
            return Ok::<_, sqlx::Error>(None);
        };
        let (mut chunk, next) = next_page(&mut step).await?;
        let step = match next {
            Some(section) => Some(Step {
                section,
                first: false,
                ..step
            }),
            None => match step.section.following() {
                Some(section) => {
                    chunk.push_str(&format!("],\"{}\":[", section.key()));
                    Some(Step {
                        section,
                        first: true,
                        ..step
                    })
                }
                None => {
                    chunk.push_str("]}");
                    None
                }
            },
        };
        Ok(Some((Bytes::from(chunk), step)))
    });
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
