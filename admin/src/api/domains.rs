//! `/v1/tenants/{id}/domains` (list with certificate state) and
//! `/v1/tenants/{id}/domains/{domain}/certificate` (upload).
//!
//! An upload is checked by the contract's [`check_upload`] (the rules are listed there), its
//! key sealed with `security.credential_key` under the tenant and host, and recorded with its
//! audit entry and a `certificate` feed change in one transaction, so every edge picks it up
//! from the feed. Private keys never appear in answers, audit entries or logs.

use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tenantgate_catalog::store::audit::NewAudit;
use tenantgate_catalog::store::certificates::{
    self, key_context, CertSource, CertStatus, CertificateInfo, NewCertificate,
};
use tenantgate_catalog::store::changes::NewChange;
use tenantgate_contract::host::DomainSpec;
use tenantgate_contract::tls::check_upload;
use utoipa::ToSchema;

use super::tenants::find;
use crate::auth::{TenantReader, TenantWriter};
use crate::error::AdminError;
use crate::extract::ApiJson;
use crate::state::AdminState;
use crate::write::Write;
use tenantgate_catalog::Tenant;

/// `PUT /v1/tenants/{id}/domains/{domain}/certificate` body.
///
/// No length or pattern in the schema: a schema error quotes the value, and this one holds a
/// private key. The checks happen in code, with messages that never quote it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UploadCertificate {
    /// The leaf certificate followed by its intermediates, PEM.
    cert_pem: String,
    /// The leaf's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    key_pem: String,
}

/// A domain of a tenant and the state of its host's certificate.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DomainView {
    /// The host.
    domain: String,
    path_prefix: Option<String>,
    certificate: CertificateView,
}

/// What is known about a host's certificate.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CertificateView {
    status: CertStatus,
    /// When the certificate expires (RFC 3339).
    #[schema(format = DateTime)]
    not_after: Option<String>,
    /// The issuer's distinguished name.
    issuer: Option<String>,
    source: Option<CertSource>,
}

impl CertificateView {
    fn of(info: Option<&CertificateInfo>) -> CertificateView {
        match info {
            None => CertificateView {
                status: CertStatus::None,
                not_after: None,
                issuer: None,
                source: None,
            },
            Some(c) => CertificateView {
                status: c.status,
                not_after: c.not_after.map(tenantgate_contract::time::rfc3339),
                issuer: c.issuer.clone(),
                source: Some(c.source),
            },
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DomainList {
    domains: Vec<DomainView>,
}

/// The tenant's domains, each with its host's certificate.
pub(crate) async fn list_handler(
    State(state): State<AdminState>,
    _reader: TenantReader,
    Path(id): Path<String>,
) -> Result<Json<DomainList>, AdminError> {
    let tenant = find(&state, &id).await?;
    let domains = state.catalog.domains_of(tenant.id).await?;
    let certs = state.catalog.certificates_of(tenant.id).await?;
    let domains = domains
        .into_iter()
        .map(|d| {
            let cert = certs.iter().find(|c| c.host == d.host);
            DomainView {
                certificate: CertificateView::of(cert),
                domain: d.host,
                path_prefix: d.path_prefix,
            }
        })
        .collect();
    Ok(Json(DomainList { domains }))
}

/// Everything under the catch-all `/v1/tenants/{id}/domains/{*domain}`: `DELETE` of a domain
/// (`{domain}` may be `host/prefix`) and `PUT` of `{host}/certificate`, which axum's router
/// cannot hold as a route of its own beside the catch-all. Dispatches by method and path, and
/// answers other methods with 405 and the `Allow` of the resource actually addressed.
pub(crate) async fn domain_subresource(
    State(state): State<AdminState>,
    Path((id, rest)): Path<(String, String)>,
    request: Request,
) -> Response {
    let method = request.method().clone();
    let (mut parts, body) = request.into_parts();
    if let Some(host) = rest.strip_suffix("/certificate") {
        if method != Method::PUT {
            return method_not_allowed("PUT");
        }
        let answer = async {
            let TenantWriter(actor) = TenantWriter::from_request_parts(&mut parts, &state).await?;
            // Which tenant and host, before the body: an unknown one is 404 whatever was sent.
            let (tenant, host) = owned_host(&state, &id, host).await?;
            let ApiJson(req) = ApiJson::<UploadCertificate>::from_request(
                Request::from_parts(parts, body),
                &state,
            )
            .await?;
            put_certificate(&state, &actor.name, &tenant, host, req).await
        };
        return answer.await.into_response();
    }
    if method != Method::DELETE {
        return method_not_allowed("DELETE");
    }
    let answer = async {
        let writer = TenantWriter::from_request_parts(&mut parts, &state).await?;
        super::tenants::remove_domain_handler(State(state.clone()), writer, Path((id, rest))).await
    };
    answer.await.into_response()
}

fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(serde_json::json!({
            "error": { "code": "method_not_allowed", "message": "method not allowed on this route" }
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allow));
    response
}

/// The tenant and the host named in the path, when the tenant owns that host whole: 404 for an
/// unknown tenant or a host it does not have, 409 for a host shared by path-prefix tenants.
async fn owned_host(
    state: &AdminState,
    id: &str,
    domain: &str,
) -> Result<(Tenant, String), AdminError> {
    // A path that is no valid host names no domain of the tenant.
    let spec = DomainSpec::parse(domain).map_err(|_| AdminError::NotFound("domain"))?;
    if spec.path_prefix.is_some() {
        return Err(AdminError::NotFound("domain"));
    }
    let host = spec.host;
    let tenant = find(state, id).await?;
    let domains = state.catalog.domains_of(tenant.id).await?;
    let mine: Vec<_> = domains.iter().filter(|d| d.host == host).collect();
    if mine.is_empty() {
        return Err(AdminError::NotFound("domain"));
    }
    if mine.iter().all(|d| d.path_prefix.is_some()) {
        // A host shared by path-prefix tenants is served with the edge's fallback
        // certificate: no single tenant may decide what every tenant on it presents.
        return Err(AdminError::Conflict(format!(
            "{host} is shared by path-prefix tenants; its certificate is the edge's fallback"
        )));
    }
    Ok((tenant, host))
}

/// Check, seal and record an upload for `host` of `tenant`.
async fn put_certificate(
    state: &AdminState,
    actor: &str,
    tenant: &Tenant,
    host: String,
    req: UploadCertificate,
) -> Result<Json<DomainView>, AdminError> {
    let checked = check_upload(
        &req.cert_pem,
        &req.key_pem,
        &host,
        tenantgate_contract::time::now_ms(),
    )?;
    let key_sealed = state
        .config
        .security
        .credential_key
        .seal(req.key_pem.as_bytes(), &key_context(tenant.id, &host));
    let before = state
        .catalog
        .certificates_of(tenant.id)
        .await?
        .into_iter()
        .find(|c| c.host == host);
    // The domain is checked again under the write lock (`put_issued`); the tenant's status may
    // change meanwhile (provisioning → active) without making the upload wrong.
    let mut w = Write::begin(state).await?;
    certificates::put_issued(
        w.conn(),
        &NewCertificate {
            host: &host,
            tenant_id: tenant.id,
            source: CertSource::Upload,
            cert_pem: &req.cert_pem,
            key_sealed: &key_sealed,
            not_after: checked.not_after_ms,
            issuer: &checked.issuer,
        },
    )
    .await?;
    w.change(&NewChange {
        kind: "certificate",
        tenant_id: Some(tenant.id),
        shard: None,
        hosts: vec![host.clone()],
    })
    .await?;
    let after = CertificateInfo {
        host: host.clone(),
        tenant_id: tenant.id,
        source: CertSource::Upload,
        status: CertStatus::Issued,
        not_after: Some(checked.not_after_ms),
        issuer: Some(checked.issuer),
    };
    let audit_view = |c: Option<&CertificateInfo>| serde_json::json!({ "host": host, "certificate": CertificateView::of(c) });
    w.audit(NewAudit {
        actor,
        action: "tenant.certificate_put",
        target: &format!("tenant:{}", tenant.slug),
        tenant_id: Some(tenant.id),
        before: Some(audit_view(before.as_ref())),
        after: Some(audit_view(Some(&after))),
    })
    .await?;
    w.commit().await?;
    Ok(Json(DomainView {
        domain: host,
        path_prefix: None,
        certificate: CertificateView::of(Some(&after)),
    }))
}
