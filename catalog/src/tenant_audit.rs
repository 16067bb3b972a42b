//! The audit trail kept in each tenant's own database (table `audit`, tenant migration
//! `0005_self_service`): sign-ins, user, role and token changes, exports and deletions, by the
//! tenant's users (the app tier) and by operators (the admin API).
//!
//! Both components write and read it through this module, so the rows and their JSON look the
//! same wherever they are read (`GET /api/audit` in the app, `GET /v1/tenants/{id}/audit` in
//! the admin API).
//!
//! Personal data lives only in `actor_email`, `subject_email` and `client`; `detail` must hold
//! none (role names, token ids, counts), so that [`pseudonymise`] can erase a user from the
//! trail without rewriting JSON.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use tenantgate_contract::time::{now_ms, rfc3339};

/// Who acted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor<'a> {
    /// A tenant user (id and email at the time).
    User { id: &'a str, email: &'a str },
    /// An operator through the admin API, by admin token name.
    Admin(&'a str),
    /// Nobody known: a sign-in with an unknown token.
    Anonymous,
}

/// A record to append.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub actor: Actor<'a>,
    /// Dotted name: `login.succeeded`, `user.invited`, `role.updated`, `token.revoked`, ...
    pub action: &'a str,
    /// What was acted on: a user id, token id, role name, ...
    pub subject_id: Option<&'a str>,
    /// The email of the subject when it is a user (pseudonymised when that user is erased).
    pub subject_email: Option<&'a str>,
    /// Facts without personal data (role names, token ids, counts).
    pub detail: serde_json::Value,
    /// The client's address as the edge saw it.
    pub client: Option<String>,
}

impl<'a> NewEntry<'a> {
    /// A record of `action` by `actor` with no subject, detail or address yet.
    pub fn new(actor: Actor<'a>, action: &'a str) -> NewEntry<'a> {
        NewEntry {
            actor,
            action,
            subject_id: None,
            subject_email: None,
            detail: serde_json::json!({}),
            client: None,
        }
    }

    /// With the subject: its id and, for a user, the email.
    pub fn subject(mut self, id: &'a str, email: Option<&'a str>) -> NewEntry<'a> {
        self.subject_id = Some(id);
        self.subject_email = email;
        self
    }

    /// With `detail` (no personal data in it).
    pub fn detail(mut self, detail: serde_json::Value) -> NewEntry<'a> {
        self.detail = detail;
        self
    }

    /// With the client's address.
    pub fn client(mut self, client: Option<impl ToString>) -> NewEntry<'a> {
        self.client = client.map(|c| c.to_string());
        self
    }
}

/// Append `entry`; on the caller's connection, so it commits with the change it records.
pub async fn append(db: &mut AnyConnection, entry: &NewEntry<'_>) -> Result<(), sqlx::Error> {
    let (kind, actor_id, actor_email) = match entry.actor {
        Actor::User { id, email } => ("user", Some(id), Some(email)),
        Actor::Admin(name) => ("admin", Some(name), None),
        Actor::Anonymous => ("anonymous", None, None),
    };
    sqlx::query(
        "INSERT INTO audit (at, actor_kind, actor_id, actor_email, action, subject_id,
                            subject_email, detail, client)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(now_ms())
    .bind(kind)
    .bind(actor_id)
    .bind(actor_email)
    .bind(entry.action)
    .bind(entry.subject_id)
    .bind(entry.subject_email)
    .bind(entry.detail.to_string())
    .bind(entry.client.as_deref())
    .execute(&mut *db)
    .await?;
    Ok(())
}

/// A record as the APIs show it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = TenantAuditEntry))]
pub struct Entry {
    /// Increasing; a page's `next_cursor` is the last id of the page.
    pub id: i64,
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub at: String,
    pub actor: EntryActor,
    pub action: String,
    pub subject: Option<EntrySubject>,
    /// Facts of the change (role names, token ids, counts).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
    /// The client's address as the edge saw it.
    pub client: Option<String>,
}

/// Who acted: a tenant user, an operator (`id` is the admin token's name) or nobody known.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = TenantAuditActor))]
pub struct EntryActor {
    #[cfg_attr(feature = "openapi", schema(pattern = "^(user|admin|anonymous)$"))]
    pub kind: String,
    pub id: Option<String>,
    pub email: Option<String>,
}

/// What was acted on.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = TenantAuditSubject))]
pub struct EntrySubject {
    pub id: String,
    pub email: Option<String>,
}

fn from_row(r: &AnyRow) -> Result<Entry, sqlx::Error> {
    let detail: String = r.try_get("detail")?;
    let subject_id: Option<String> = r.try_get("subject_id")?;
    Ok(Entry {
        id: r.try_get("id")?,
        at: rfc3339(r.try_get("at")?),
        actor: EntryActor {
            kind: r.try_get("actor_kind")?,
            id: r.try_get("actor_id")?,
            email: r.try_get("actor_email")?,
        },
        action: r.try_get("action")?,
        subject: match subject_id {
            Some(id) => Some(EntrySubject {
                id,
                email: r.try_get("subject_email")?,
            }),
            None => None,
        },
        detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
        client: r.try_get("client")?,
    })
}

const COLUMNS: &str =
    "id, at, actor_kind, actor_id, actor_email, action, subject_id, subject_email, detail, client";

/// Up to `limit` records older than record `before` (all when `None`), newest first.
pub async fn page(
    db: &mut AnyConnection,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2"
    ))
    .bind(before.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(&mut *db)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Up to `limit` records newer than record `after` (all when `None`), oldest first: the order
/// of an export.
pub async fn page_ascending(
    db: &mut AnyConnection,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM audit WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after.unwrap_or(0))
    .bind(limit)
    .fetch_all(&mut *db)
    .await?;
    rows.iter().map(from_row).collect()
}

/// A page of `limit` records before `cursor` and the cursor of the next page: the one listing
/// rule of both APIs.
pub async fn list(
    db: &mut AnyConnection,
    cursor: Option<i64>,
    limit: i64,
) -> Result<(Vec<Entry>, Option<i64>), sqlx::Error> {
    let mut entries = page(db, cursor, limit + 1).await?;
    let next = if entries.len() as i64 > limit {
        entries.truncate(limit as usize);
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok((entries, next))
}

/// Replace user `user_id`'s email by `pseudonym` in every record naming them, and drop the
/// client addresses of what they did: after this the trail still tells that one person did
/// these things, not who. Returns the number of records changed.
pub async fn pseudonymise(
    db: &mut AnyConnection,
    user_id: &str,
    pseudonym: &str,
) -> Result<u64, sqlx::Error> {
    let acted = sqlx::query(
        "UPDATE audit SET actor_email = $2, client = NULL
         WHERE actor_kind = 'user' AND actor_id = $1",
    )
    .bind(user_id)
    .bind(pseudonym)
    .execute(&mut *db)
    .await?
    .rows_affected();
    let subject = sqlx::query(
        "UPDATE audit SET subject_email = $2 WHERE subject_id = $1 AND subject_email IS NOT NULL",
    )
    .bind(user_id)
    .bind(pseudonym)
    .execute(&mut *db)
    .await?
    .rows_affected();
    Ok(acted + subject)
}
