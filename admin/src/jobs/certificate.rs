//! The `issue_certificate` job: obtain (or renew) the certificate of one host of a tenant by
//! ACME (see [`crate::acme`]) and record it like an upload, so every edge serves it by SNI.
//!
//! Queued when a tenant gets a whole-host domain while `[acme]` is enabled, and by an edge at
//! the first TLS handshake for a host that has none (`acme.on_demand`, see
//! `tenantgate_catalog::store::on_demand`). The host's
//! certificate reads `pending` while the job runs (an issued one being renewed stays issued and
//! served) and `failed` when the job gives up; each failed attempt is retried with the worker's
//! backoff. A host whose certificate was uploaded is left alone: the operator chose it.
//!
//! Renewal: the scheduler ([`queue_renewals`]) queues the job again for an ACME certificate
//! past two thirds of its lifetime; after a renewal that gave up it waits [`RENEWAL_RETRY_MS`]
//! before trying again, so a CA that keeps refusing is not asked every tick.

use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::certificates::{
    self, key_context, CertSource, CertStatus, IssuePayload, NewCertificate,
};
use tenantgate_catalog::store::changes::NewChange;
use tenantgate_catalog::store::jobs::{Job, NewJob};
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::TenantStatus;
use uuid::Uuid;

use super::{kind, succeed};
use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// After an issuance job of a tenant gave up (all its attempts, with backoff), renewal waits
/// this long before queueing another: the certificate still has a third of its lifetime.
pub(crate) const RENEWAL_RETRY_MS: i64 = 3_600_000;

/// When a certificate valid from `not_before_ms` to `not_after_ms` is renewed: at two thirds
/// of its lifetime (30 days before the end of a 90-day certificate), leaving a third for
/// retries and for the CA to be down.
pub(crate) fn renewal_at(not_before_ms: i64, not_after_ms: i64) -> i64 {
    not_before_ms + (not_after_ms - not_before_ms) / 3 * 2
}

/// Queue the renewal of every ACME certificate due at `now_ms` (see the module docs); the
/// ids of the jobs queued. Nothing when ACME is disabled.
pub(crate) async fn queue_renewals(
    state: &AdminState,
    now_ms: i64,
) -> Result<Vec<Uuid>, AdminError> {
    if state.config.acme.is_none() {
        return Ok(Vec::new());
    }
    let mut queued = Vec::new();
    for c in state
        .catalog
        .renewal_candidates(kind::ISSUE_CERTIFICATE)
        .await?
    {
        let due = match tenantgate_contract::tls::leaf_validity(&c.cert_pem) {
            Ok((not_before, not_after)) => now_ms >= renewal_at(not_before, not_after),
            Err(e) => {
                tracing::warn!(host = %c.host, error = %e, "an issued certificate does not parse; renewing it");
                true
            }
        };
        let resting = c
            .last_failure
            .is_some_and(|failed| now_ms - failed < RENEWAL_RETRY_MS);
        if !due || resting {
            continue;
        }
        let spec = DomainSpec {
            host: c.host,
            path_prefix: None,
        };
        let mut w = Write::begin(state).await?;
        let id = enqueue(&mut w, state, c.tenant_id, &spec).await?;
        w.commit().await?;
        queued.extend(id);
    }
    Ok(queued)
}

/// Queue issuance for `spec` of `tenant_id` inside `w`, when ACME is enabled and the domain is
/// a whole host (a path-prefix host is served with the edge's fallback certificate); the job's
/// id when one was queued.
pub(crate) async fn enqueue(
    w: &mut Write<'_>,
    state: &AdminState,
    tenant_id: Uuid,
    spec: &DomainSpec,
) -> Result<Option<Uuid>, AdminError> {
    if state.config.acme.is_none() || spec.path_prefix.is_some() {
        return Ok(None);
    }
    let id = Uuid::now_v7();
    w.job(&NewJob {
        id,
        kind: kind::ISSUE_CERTIFICATE,
        tenant_id: Some(tenant_id),
        payload: serde_json::to_value(IssuePayload {
            host: spec.host.clone(),
            on_demand: false,
        })
        .expect("payload serialises"),
        max_attempts: i64::from(state.config.admin.job_max_attempts),
        run_at: tenantgate_contract::time::now_ms(),
    })
    .await?;
    Ok(Some(id))
}

/// Run the job (see the module docs).
pub(crate) async fn run(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let tenant_id = job
        .tenant_id
        .ok_or_else(|| AdminError::Job("certificate job without a tenant".into()))?;
    let payload: IssuePayload = serde_json::from_value(job.payload.clone())
        .map_err(|e| AdminError::Job(format!("bad certificate job payload: {e}")))?;
    let host = payload.host;
    let tenant = state
        .catalog
        .tenant(&tenant_id.to_string())
        .await?
        .filter(|t| t.status != TenantStatus::Deleted);
    let uploaded = state
        .catalog
        .certificates_of(tenant_id)
        .await?
        .into_iter()
        .any(|c| c.host == host && c.source == CertSource::Upload);
    let (Some(config), Some(tenant), false) = (&state.config.acme, tenant, uploaded) else {
        // ACME disabled since, tenant deleted, or an upload replaced ACME: nothing to do.
        return done(state, worker, job).await;
    };

    let mut w = Write::begin(state).await?;
    if !certificates::mark_acme(w.conn(), tenant_id, &host, CertStatus::Pending, None).await? {
        drop(w);
        return done(state, worker, job).await; // The domain was removed meanwhile.
    }
    w.commit().await?;

    let issued = crate::acme::issue(state, config, &host).await?;
    // The CA's chain passes the same checks as an upload (names, key, validity) before any
    // edge may serve it.
    let checked = tenantgate_contract::tls::check_upload(
        &issued.cert_pem,
        &issued.key_pem,
        &host,
        tenantgate_contract::time::now_ms(),
    )
    .map_err(crate::acme::AcmeError::from)?;
    let key_sealed = state
        .config
        .security
        .credential_key
        .seal(issued.key_pem.as_bytes(), &key_context(tenant_id, &host));

    let mut w = Write::begin(state).await?;
    // An upload that landed while the order ran wins: the operator chose it.
    if certificates::source_of(w.conn(), &host).await? == Some(CertSource::Upload) {
        drop(w);
        return done(state, worker, job).await;
    }
    match certificates::put_issued(
        w.conn(),
        &NewCertificate {
            host: &host,
            tenant_id,
            source: CertSource::Acme,
            cert_pem: &issued.cert_pem,
            key_sealed: &key_sealed,
            not_after: checked.not_after_ms,
            issuer: &checked.issuer,
        },
    )
    .await
    {
        Ok(()) => {}
        // Removed meanwhile: the certificate has no host to serve.
        Err(tenantgate_catalog::CatalogError::NotFound(_)) => {
            drop(w);
            return done(state, worker, job).await;
        }
        Err(e) => return Err(e.into()),
    }
    w.change(&NewChange {
        kind: "certificate",
        tenant_id: Some(tenant_id),
        shard: None,
        hosts: vec![host.clone()],
    })
    .await?;
    w.audit(NewAudit {
        actor: "worker",
        action: "tenant.certificate_issued",
        target: &format!("tenant:{}", tenant.slug),
        tenant_id: Some(tenant_id),
        before: None,
        after: Some(serde_json::json!({
            "host": host,
            "source": "acme",
            "issuer": checked.issuer,
            "not_after": tenantgate_contract::time::rfc3339(checked.not_after_ms),
        })),
    })
    .await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    w.commit().await?;
    tracing::info!(%host, tenant = %tenant.slug, "certificate issued by ACME");
    Ok(())
}

/// Record the host's certificate as failed after the job's last attempt (an issued one being
/// renewed keeps being served, with the error noted), in the failure's write.
pub(crate) async fn record_failed(
    w: &mut Write<'_>,
    job: &Job,
    message: &str,
) -> Result<(), AdminError> {
    let (Some(tenant_id), Ok(payload)) = (
        job.tenant_id,
        serde_json::from_value::<IssuePayload>(job.payload.clone()),
    ) else {
        return Ok(());
    };
    certificates::mark_acme(
        w.conn(),
        tenant_id,
        &payload.host,
        CertStatus::Failed,
        Some(message),
    )
    .await?;
    Ok(())
}

async fn done(state: &AdminState, worker: &str, job: &Job) -> Result<(), AdminError> {
    let mut w = Write::begin(state).await?;
    if !succeed(&mut w, job, worker).await? {
        return Err(AdminError::Job("lost the job's lease".into()));
    }
    w.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_starts_at_two_thirds_of_the_lifetime() {
        const DAY: i64 = 86_400_000;
        assert_eq!(renewal_at(0, 90 * DAY), 60 * DAY);
        assert_eq!(renewal_at(10 * DAY, 100 * DAY), 70 * DAY);
    }
}
