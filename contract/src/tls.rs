//! TLS certificates: how an uploaded certificate is checked (admin) and turned into what the
//! edge serves (rustls `CertifiedKey`), in one place so both agree.
//!
//! An upload `{cert_pem, key_pem}` for a domain is accepted when:
//! - `cert_pem` holds the leaf certificate first, then its intermediates (PEM `CERTIFICATE`
//!   blocks), and `key_pem` one private key (PKCS#8, PKCS#1 or SEC1);
//! - the key belongs to the leaf (same public key);
//! - the chain is *internally complete*: every certificate is signed by the next one in the
//!   bundle, up to the last one, which is taken as the anchor (a self-signed root, or the top
//!   intermediate whose root browsers already hold). The edge does not keep a root store of
//!   its own, so it cannot check the last link to a public root; what it does refuse is the
//!   common mistake of a leaf without its intermediates (a lone leaf must be self-signed);
//! - the leaf is for TLS servers (extended key usage `serverAuth`, when present) and names the
//!   domain, with the wildcard rules of RFC 6125 as webpki applies them (`*.example.com` covers
//!   `a.example.com`, not `example.com` nor `a.b.example.com`);
//! - every certificate in the chain is valid now (not expired, not before its start).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use thiserror::Error;

/// Why a certificate upload was refused. [`CertError::code`] is the API error code.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CertError {
    /// `cert_pem` has no certificate, or a block that does not parse.
    #[error("cert_pem: {0}")]
    BadCertificatePem(String),
    /// `key_pem` has no private key, or one that cannot be used.
    #[error("key_pem: {0}")]
    BadKeyPem(String),
    #[error("the private key does not belong to the certificate")]
    KeyMismatch,
    #[error("the certificate chain is incomplete or inconsistent: {0}")]
    ChainIncomplete(String),
    #[error("the certificate does not cover {0}")]
    NameMismatch(String),
    #[error("a certificate in the chain has expired")]
    Expired,
    #[error("a certificate in the chain is not valid yet")]
    NotYetValid,
}

impl CertError {
    /// The API error code: `invalid_pem` for input that does not parse (400), otherwise the
    /// reason the certificate cannot be used (422).
    pub fn code(&self) -> &'static str {
        match self {
            CertError::BadCertificatePem(_) | CertError::BadKeyPem(_) => "invalid_pem",
            CertError::KeyMismatch => "key_mismatch",
            CertError::ChainIncomplete(_) => "chain_incomplete",
            CertError::NameMismatch(_) => "name_mismatch",
            CertError::Expired => "certificate_expired",
            CertError::NotYetValid => "certificate_not_yet_valid",
        }
    }

    /// True for input that does not parse at all (400 rather than 422).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            CertError::BadCertificatePem(_) | CertError::BadKeyPem(_)
        )
    }
}

/// An upload that passed [`check_upload`].
#[derive(Debug, Clone)]
pub struct CheckedCertificate {
    /// The leaf's `notAfter`, milliseconds since the epoch.
    pub not_after_ms: i64,
    /// The leaf issuer's distinguished name (`CN=..., O=...`).
    pub issuer: String,
}

/// The crypto provider of the edge's TLS (Pingora's rustls backend uses ring).
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn parse_chain(cert_pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::BadCertificatePem(format!("not PEM certificates ({e})")))?;
    if chain.is_empty() {
        return Err(CertError::BadCertificatePem(
            "no CERTIFICATE block found".into(),
        ));
    }
    Ok(chain)
}

fn parse_key(key_pem: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    // The parse error is not shown: its text could quote key material.
    PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| CertError::BadKeyPem("no usable PRIVATE KEY block found".into()))
}

/// The validity of the chain's leaf: `(notBefore, notAfter)` in milliseconds since the epoch.
pub fn leaf_validity(cert_pem: &str) -> Result<(i64, i64), CertError> {
    let chain = parse_chain(cert_pem)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| CertError::BadCertificatePem(format!("leaf certificate: {e}")))?;
    let v = parsed.validity();
    Ok((
        v.not_before.timestamp().saturating_mul(1000),
        v.not_after.timestamp().saturating_mul(1000),
    ))
}

/// The certificate and key as the edge serves them. Checks that the key parses and belongs
/// to the leaf; nothing else (that was checked at upload).
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, CertError> {
    let chain = parse_chain(cert_pem)?;
    let key = parse_key(key_pem)?;
    match CertifiedKey::from_der(chain, key, &provider()) {
        Ok(certified) => Ok(Arc::new(certified)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(CertError::KeyMismatch),
        Err(_) => Err(CertError::BadKeyPem(
            "the key type is not supported (RSA, ECDSA P-256/P-384 or Ed25519)".into(),
        )),
    }
}

/// Check an upload for `domain` (a normalised host) at `now_ms` (see the module docs).
pub fn check_upload(
    cert_pem: &str,
    key_pem: &str,
    domain: &str,
    now_ms: i64,
) -> Result<CheckedCertificate, CertError> {
    let certified = certified_key(cert_pem, key_pem)?;
    let chain = &certified.cert;
    let leaf = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| CertError::BadCertificatePem(format!("leaf certificate: {e}")))?;
    let last = chain.last().expect("a parsed chain is never empty");
    let anchor = webpki::anchor_from_trusted_cert(last)
        .map_err(|e| CertError::ChainIncomplete(format!("last certificate: {e}")))?
        .to_owned();
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_millis(
        u64::try_from(now_ms).unwrap_or(0),
    ));
    let algorithms = provider().signature_verification_algorithms.all;
    leaf.verify_for_usage(
        algorithms,
        &[anchor],
        &chain[1..],
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => CertError::Expired,
        webpki::Error::CertNotValidYet { .. } => CertError::NotYetValid,
        webpki::Error::UnknownIssuer => CertError::ChainIncomplete(
            "a certificate's issuer is not in the bundle; append the intermediates".into(),
        ),
        other => CertError::ChainIncomplete(format!("{other:?}")),
    })?;
    let name = ServerName::try_from(domain.to_string())
        .map_err(|_| CertError::NameMismatch(domain.to_string()))?;
    leaf.verify_is_valid_for_subject_name(&name)
        .map_err(|_| CertError::NameMismatch(domain.to_string()))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&chain[0])
        .map_err(|e| CertError::BadCertificatePem(format!("leaf certificate: {e}")))?;
    Ok(CheckedCertificate {
        not_after_ms: parsed.validity().not_after.timestamp().saturating_mul(1000),
        issuer: parsed.issuer().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

    const NOW: i64 = 1_800_000_000_000;

    fn ca() -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Test Root");
        (params.self_signed(&key).unwrap(), key)
    }

    fn leaf(names: &[&str], ca: &(rcgen::Certificate, KeyPair)) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        // Valid from 2026 to 2028; `NOW` is in January 2027.
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2028, 1, 1);
        let cert = params.signed_by(&key, &ca.0, &ca.1).unwrap();
        (cert.pem() + &ca.0.pem(), key.serialize_pem())
    }

    #[test]
    fn accepts_a_complete_chain_and_reports_issuer_and_expiry() {
        let root = ca();
        let (cert, key) = leaf(&["shop.example.com"], &root);
        let checked = check_upload(&cert, &key, "shop.example.com", NOW).unwrap();
        assert!(checked.issuer.contains("Test Root"), "{}", checked.issuer);
        assert!(checked.not_after_ms > NOW);
    }

    #[test]
    fn leaf_validity_reads_the_leaf_not_the_root() {
        let root = ca();
        let (cert, _) = leaf(&["shop.example.com"], &root);
        // 2026-01-01 and 2028-01-01 UTC.
        assert_eq!(
            leaf_validity(&cert).unwrap(),
            (1_767_225_600_000, 1_830_297_600_000)
        );
        assert!(matches!(
            leaf_validity("no pem here"),
            Err(CertError::BadCertificatePem(_))
        ));
    }

    #[test]
    fn wildcards_cover_one_label_only() {
        let root = ca();
        let (cert, key) = leaf(&["*.example.com"], &root);
        assert!(check_upload(&cert, &key, "a.example.com", NOW).is_ok());
        for other in ["example.com", "a.b.example.com", "a.example.org"] {
            assert_eq!(
                check_upload(&cert, &key, other, NOW).unwrap_err(),
                CertError::NameMismatch(other.into())
            );
        }
    }

    #[test]
    fn refuses_wrong_key_missing_intermediate_and_bad_time() {
        let root = ca();
        let (cert, _) = leaf(&["a.example.com"], &root);
        let (_, other_key) = leaf(&["a.example.com"], &root);
        assert_eq!(
            check_upload(&cert, &other_key, "a.example.com", NOW).unwrap_err(),
            CertError::KeyMismatch
        );
        let (cert, key) = leaf(&["a.example.com"], &root);
        let leaf_only: String = cert
            .split_inclusive("-----END CERTIFICATE-----")
            .next()
            .unwrap()
            .into();
        assert_eq!(
            check_upload(&leaf_only, &key, "a.example.com", NOW)
                .unwrap_err()
                .code(),
            "chain_incomplete"
        );
        assert_eq!(
            check_upload(&cert, &key, "a.example.com", 1_700_000_000_000).unwrap_err(),
            CertError::NotYetValid
        );
        assert_eq!(
            check_upload(&cert, &key, "a.example.com", 1_900_000_000_000).unwrap_err(),
            CertError::Expired
        );
        let err = check_upload("nonsense", &key, "a.example.com", NOW).unwrap_err();
        assert!(err.is_malformed() && err.code() == "invalid_pem");
        let err = check_upload(
            &cert,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "a.example.com",
            NOW,
        )
        .unwrap_err();
        assert_eq!(err.code(), "invalid_pem");
        assert!(!err.to_string().contains("AAAA"));
    }
}
