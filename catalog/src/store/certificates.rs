//! TLS certificates of tenant hosts (`certificates`): what the admin API records and the edge
//! serves by SNI.
//!
//! One certificate per host, owned by the tenant that owns the host. The private key is stored
//! sealed (see [`key_context`]); this module never sees it in the clear.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::driver::{on, CatalogRow, Id, Millis};
use super::{Catalog, WriteTx};
use crate::error::CatalogError;

/// Where a certificate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CertSource {
    Acme,
    Upload,
}

impl CertSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CertSource::Acme => "acme",
            CertSource::Upload => "upload",
        }
    }

    fn parse(text: &str) -> Result<CertSource, CatalogError> {
        match text {
            "acme" => Ok(CertSource::Acme),
            "upload" => Ok(CertSource::Upload),
            other => Err(crate::error::corrupt("certificates.source", other)),
        }
    }
}

/// Where a host's certificate stands. `None` is a host without a certificate row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CertStatus {
    None,
    Pending,
    Issued,
    Failed,
}

impl CertStatus {
    /// Every status, for metrics that report each (zero included).
    pub const ALL: [CertStatus; 4] = [
        CertStatus::None,
        CertStatus::Pending,
        CertStatus::Issued,
        CertStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CertStatus::None => "none",
            CertStatus::Pending => "pending",
            CertStatus::Issued => "issued",
            CertStatus::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Result<CertStatus, CatalogError> {
        match text {
            "pending" => Ok(CertStatus::Pending),
            "issued" => Ok(CertStatus::Issued),
            "failed" => Ok(CertStatus::Failed),
            other => Err(crate::error::corrupt("certificates.status", other)),
        }
    }
}

/// What may be shown about a host's certificate (never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub host: String,
    pub tenant_id: Uuid,
    pub source: CertSource,
    pub status: CertStatus,
    /// Milliseconds since the epoch.
    pub not_after: Option<i64>,
    /// The issuer's distinguished name.
    pub issuer: Option<String>,
}

/// A certificate the edge can serve: the chain and the sealed key.
#[derive(Clone)]
pub struct ServedCertificate {
    pub host: String,
    pub tenant_id: Uuid,
    pub cert_pem: String,
    /// Sealed with the credential key under [`key_context`].
    pub key_sealed: String,
}

impl std::fmt::Debug for ServedCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedCertificate")
            .field("host", &self.host)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

/// An issued certificate to record (replacing the host's previous one).
pub struct NewCertificate<'a> {
    pub host: &'a str,
    pub tenant_id: Uuid,
    pub source: CertSource,
    pub cert_pem: &'a str,
    pub key_sealed: &'a str,
    pub not_after: i64,
    pub issuer: &'a str,
}

/// The job kind that obtains or renews a host's certificate by ACME (run by the admin's worker,
/// queued by the admin and, on demand, by the edges).
pub const ISSUE_JOB_KIND: &str = "issue_certificate";

/// The payload of an [`ISSUE_JOB_KIND`] job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuePayload {
    /// The host to certify (a whole-host domain of the job's tenant).
    pub host: String,
    /// Queued by an edge at the first TLS handshake for the host (see `on_demand`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_demand: bool,
}

/// The sealing context of a host's private key: binds the sealed key to its tenant and host,
/// so a sealed value copied into another row (or another tenant's) does not open.
pub fn key_context(tenant_id: Uuid, host: &str) -> Vec<u8> {
    format!("tls-key:{tenant_id}:{host}").into_bytes()
}

/// Record an issued certificate for `host` in the caller's write transaction. The tenant must
/// own the host whole (a domain without path prefix), checked under the write lock so a domain
/// removed concurrently leaves no certificate behind: else [`CatalogError::NotFound`]. A host
/// whose certificate belongs to another tenant is a [`CatalogError::Conflict`].
pub async fn put_issued(tx: &mut WriteTx, cert: &NewCertificate<'_>) -> Result<(), CatalogError> {
    let owned = on!(tx.db(), db => {
        sqlx::query(
            "SELECT 1 AS one FROM tenant_domains
             WHERE host = $1 AND tenant_id = $2 AND path_prefix = ''",
        )
        .bind(cert.host)
        .bind(Id(cert.tenant_id))
        .fetch_optional(db)
        .await?
        .is_some()
    });
    if !owned {
        return Err(CatalogError::NotFound("domain"));
    }
    let updated = on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO certificates
                (host, tenant_id, source, status, cert_pem, key_sealed, not_after, issuer, error,
                 updated_at)
             VALUES ($1, $2, $3, 'issued', $4, $5, $6, $7, NULL, $8)
             ON CONFLICT (host) DO UPDATE SET
                source = excluded.source, status = 'issued', cert_pem = excluded.cert_pem,
                key_sealed = excluded.key_sealed, not_after = excluded.not_after,
                issuer = excluded.issuer, error = NULL, updated_at = excluded.updated_at
             WHERE certificates.tenant_id = excluded.tenant_id",
        )
        .bind(cert.host)
        .bind(Id(cert.tenant_id))
        .bind(cert.source.as_str())
        .bind(cert.cert_pem)
        .bind(cert.key_sealed)
        .bind(Millis(cert.not_after))
        .bind(cert.issuer)
        .bind(Millis::now())
        .execute(db)
        .await?
        .rows_affected()
    });
    if updated == 0 {
        return Err(CatalogError::Conflict(format!(
            "the certificate of {} belongs to another tenant",
            cert.host
        )));
    }
    Ok(())
}

/// Record that ACME issuance for `host` of `tenant_id` is under way (`Pending`) or gave up
/// (`Failed`, with `error`), in the caller's write transaction. An issued certificate (being
/// renewed) keeps its status and stays served; only `error` is set on it. A host whose
/// certificate belongs to another tenant is left alone. False when the tenant no longer owns
/// the host whole (removed meanwhile): then nothing is written.
pub async fn mark_acme(
    tx: &mut WriteTx,
    tenant_id: Uuid,
    host: &str,
    status: CertStatus,
    error: Option<&str>,
) -> Result<bool, CatalogError> {
    debug_assert!(matches!(status, CertStatus::Pending | CertStatus::Failed));
    let owned = on!(tx.db(), db => {
        sqlx::query(
            "SELECT 1 AS one FROM tenant_domains
             WHERE host = $1 AND tenant_id = $2 AND path_prefix = ''",
        )
        .bind(host)
        .bind(Id(tenant_id))
        .fetch_optional(db)
        .await?
        .is_some()
    });
    if !owned {
        return Ok(false);
    }
    on!(tx.db(), db => {
        sqlx::query(
            "INSERT INTO certificates (host, tenant_id, source, status, error, updated_at)
             VALUES ($1, $2, 'acme', $3, $4, $5)
             ON CONFLICT (host) DO UPDATE SET
                status = CASE WHEN certificates.status = 'issued' THEN 'issued'
                              ELSE excluded.status END,
                error = excluded.error, updated_at = excluded.updated_at
             WHERE certificates.tenant_id = excluded.tenant_id",
        )
        .bind(host)
        .bind(Id(tenant_id))
        .bind(status.as_str())
        .bind(error)
        .bind(Millis::now())
        .execute(db)
        .await?;
    });
    Ok(true)
}

/// Where the recorded certificate of `host` came from (`None`: no row), read in the caller's
/// write transaction, so a decision on it holds until commit.
pub async fn source_of(tx: &mut WriteTx, host: &str) -> Result<Option<CertSource>, CatalogError> {
    let source: Option<String> = on!(tx.db(), db => {
        match sqlx::query("SELECT source FROM certificates WHERE host = $1")
            .bind(host)
            .fetch_optional(db)
            .await?
        {
            Some(r) => Some(r.get("source")?),
            None => None,
        }
    });
    source.as_deref().map(CertSource::parse).transpose()
}

/// Remove the certificate of `host` if `tenant_id` no longer has a domain on it (after a domain
/// was deleted), in the caller's write transaction.
pub async fn drop_orphaned(
    tx: &mut WriteTx,
    tenant_id: Uuid,
    host: &str,
) -> Result<(), CatalogError> {
    on!(tx.db(), db => {
        sqlx::query(
            "DELETE FROM certificates WHERE tenant_id = $1 AND host = $2
             AND NOT EXISTS (SELECT 1 FROM tenant_domains WHERE tenant_id = $1 AND host = $2)",
        )
        .bind(Id(tenant_id))
        .bind(host)
        .execute(db)
        .await?;
    });
    Ok(())
}

fn info_from_row(r: &impl CatalogRow) -> Result<CertificateInfo, CatalogError> {
    Ok(CertificateInfo {
        host: r.get("host")?,
        tenant_id: r.id("tenant_id")?,
        source: CertSource::parse(&r.get::<String>("source")?)?,
        status: CertStatus::parse(&r.get::<String>("status")?)?,
        not_after: r.opt_millis("not_after")?,
        issuer: r.get("issuer")?,
    })
}

fn served_from_row(r: &impl CatalogRow) -> Result<ServedCertificate, CatalogError> {
    Ok(ServedCertificate {
        host: r.get("host")?,
        tenant_id: r.id("tenant_id")?,
        cert_pem: r.get("cert_pem")?,
        key_sealed: r.get("key_sealed")?,
    })
}

/// An issued ACME certificate that renewal looks at.
#[derive(Debug, Clone)]
pub struct RenewalCandidate {
    pub tenant_id: Uuid,
    pub host: String,
    /// The chain, to read the leaf's validity from.
    pub cert_pem: String,
    /// When the tenant's latest failed issuance job gave up (milliseconds), if any.
    pub last_failure: Option<i64>,
}

/// Certificates by status across the catalog, and the soonest expiry of an issued one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateSummary {
    /// Hosts per status; `none` counts hosts (of tenants not deleted) without a certificate.
    pub by_status: Vec<(CertStatus, i64)>,
    /// Milliseconds since the epoch.
    pub soonest_not_after: Option<i64>,
}

impl Catalog {
    /// The certificates of a tenant's hosts.
    pub async fn certificates_of(
        &self,
        tenant_id: Uuid,
    ) -> Result<Vec<CertificateInfo>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT host, tenant_id, source, status, not_after, issuer FROM certificates
                 WHERE tenant_id = $1 ORDER BY host",
            )
            .bind(Id(tenant_id))
            .fetch_all(db)
            .await?
            .iter()
            .map(info_from_row)
            .collect()
        })
    }

    /// The servable (issued) certificates: of `hosts`, or all of them when `None` (the edge's
    /// resync). Hosts of deleted tenants are left out.
    pub async fn served_certificates(
        &self,
        hosts: Option<&[String]>,
    ) -> Result<Vec<ServedCertificate>, CatalogError> {
        let base = "SELECT c.host, c.tenant_id, c.cert_pem, c.key_sealed FROM certificates c
             JOIN tenants t ON t.id = c.tenant_id
             WHERE c.status = 'issued' AND c.cert_pem IS NOT NULL AND c.key_sealed IS NOT NULL
             AND t.status <> 'deleted'";
        let Some(hosts) = hosts else {
            return on!(self.db(), db => {
                sqlx::query(base)
                    .fetch_all(db)
                    .await?
                    .iter()
                    .map(served_from_row)
                    .collect()
            });
        };
        let mut out = Vec::new();
        for chunk in hosts.chunks(super::tenants::HOSTS_PER_QUERY) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!("{base} AND c.host IN ({})", placeholders.join(", "));
            let found = on!(self.db(), db => {
                let mut query = sqlx::query(&sql);
                for host in chunk {
                    query = query.bind(host.as_str());
                }
                query
                    .fetch_all(db)
                    .await?
                    .iter()
                    .map(served_from_row)
                    .collect::<Result<Vec<_>, _>>()?
            });
            out.extend(found);
        }
        Ok(out)
    }

    /// The issued ACME certificates of tenants not deleted that have no issuance job (of kind
    /// `job_kind`) queued or running: what renewal considers.
    pub async fn renewal_candidates(
        &self,
        job_kind: &str,
    ) -> Result<Vec<RenewalCandidate>, CatalogError> {
        on!(self.db(), db => {
            sqlx::query(
                "SELECT c.tenant_id, c.host, c.cert_pem,
                    (SELECT MAX(j.updated_at) FROM jobs j WHERE j.tenant_id = c.tenant_id
                     AND j.kind = $1 AND j.status = 'failed') AS last_failure
                 FROM certificates c JOIN tenants t ON t.id = c.tenant_id
                 WHERE c.source = 'acme' AND c.status = 'issued' AND c.cert_pem IS NOT NULL
                 AND t.status <> 'deleted'
                 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.tenant_id = c.tenant_id
                     AND j.kind = $1 AND j.status IN ('queued', 'running'))
                 ORDER BY c.host",
            )
            .bind(job_kind)
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| {
                Ok(RenewalCandidate {
                    tenant_id: r.id("tenant_id")?,
                    host: r.get("host")?,
                    cert_pem: r.get("cert_pem")?,
                    last_failure: r.opt_millis("last_failure")?,
                })
            })
            .collect()
        })
    }

    /// Counts per status and the soonest expiry, for the admin's metrics.
    pub async fn certificate_summary(&self) -> Result<CertificateSummary, CatalogError> {
        let mut summary = on!(self.db(), db => {
            let by_status = sqlx::query(
                "SELECT status, COUNT(*) AS n FROM certificates GROUP BY status",
            )
            .fetch_all(db)
            .await?
            .iter()
            .map(|r| Ok((CertStatus::parse(&r.get::<String>("status")?)?, r.get::<i64>("n")?)))
            .collect::<Result<Vec<_>, CatalogError>>()?;
            let soonest = sqlx::query(
                "SELECT MIN(not_after) AS soonest FROM certificates WHERE status = 'issued'",
            )
            .fetch_one(db)
            .await?
            .opt_millis("soonest")?;
            let without: i64 = sqlx::query(
                "SELECT COUNT(DISTINCT d.host) AS n FROM tenant_domains d
                 JOIN tenants t ON t.id = d.tenant_id
                 WHERE t.status <> 'deleted'
                 AND NOT EXISTS (SELECT 1 FROM certificates c WHERE c.host = d.host)",
            )
            .fetch_one(db)
            .await?
            .get("n")?;
            CertificateSummary {
                by_status,
                soonest_not_after: soonest,
            }
            .with_none(without)
        });
        summary.by_status.sort_by_key(|(s, _)| s.as_str());
        Ok(summary)
    }
}

impl CertificateSummary {
    fn with_none(mut self, without: i64) -> CertificateSummary {
        self.by_status.push((CertStatus::None, without));
        self
    }
}
