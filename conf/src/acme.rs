//! `[acme]`: the ACME (RFC 8555) certificate authority the admin's issuance jobs use, validated.

use std::path::PathBuf;

use crate::raw::RawAcme;
use crate::ConfigError;

/// `[acme]` as the admin uses it; present only when `acme.enabled`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The CA's directory URL (`https://`).
    pub directory_url: url::Url,
    /// Account contacts (`mailto:` URLs) given to the CA; may be empty.
    pub contact: Vec<String>,
    /// PEM file of the roots trusted for the CA's own HTTPS (a private or test CA); `None`
    /// trusts the platform's roots.
    pub ca_bundle: Option<PathBuf>,
}

/// Validate `[acme]`: `None` when disabled; when enabled the directory must be an `https://`
/// URL, contacts `mailto:` URLs, and the CA bundle a readable PEM file with a certificate.
pub(crate) fn acme(raw: &RawAcme) -> Result<Option<AcmeConfig>, ConfigError> {
    if !raw.enabled {
        return Ok(None);
    }
    let directory_url = url::Url::parse(&raw.directory_url)
        .map_err(|e| ConfigError::new("acme.directory_url", format!("not a URL: {e}")))?;
    // RFC 8555 §6.1: all ACME traffic is over HTTPS; a plain URL would send the account's
    // signed requests in the clear.
    if directory_url.scheme() != "https" || directory_url.host_str().is_none() {
        return Err(ConfigError::new(
            "acme.directory_url",
            "must be an https:// URL with a host",
        ));
    }
    for c in &raw.contact {
        if !c.starts_with("mailto:") || c.len() == "mailto:".len() {
            return Err(ConfigError::new(
                "acme.contact",
                format!("`{c}` is not a mailto: URL"),
            ));
        }
    }
    if let Some(path) = &raw.ca_bundle {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("acme.ca_bundle", format!("{}: {e}", path.display())))?;
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(ConfigError::new(
                "acme.ca_bundle",
                format!("{} holds no PEM certificate", path.display()),
            ));
        }
    }
    Ok(Some(AcmeConfig {
        directory_url,
        contact: raw.contact.clone(),
        ca_bundle: raw.ca_bundle.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawAcme {
        RawAcme {
            enabled: true,
            directory_url: url.into(),
            contact: vec![],
            ca_bundle: None,
        }
    }

    #[test]
    fn disabled_is_none_whatever_else_is_set() {
        let mut r = raw("not a url");
        r.enabled = false;
        assert_eq!(acme(&r).unwrap(), None);
    }

    #[test]
    fn bad_values_name_their_key() {
        for url in [
            "http://ca.test/dir",
            "not a url",
            "ftp://ca.test/dir",
            "https://",
        ] {
            assert_eq!(
                acme(&raw(url)).unwrap_err().key,
                "acme.directory_url",
                "{url}"
            );
        }
        let mut r = raw("https://ca.test/dir");
        r.contact = vec!["ops@example.com".into()];
        assert_eq!(acme(&r).unwrap_err().key, "acme.contact");
        let mut r = raw("https://ca.test/dir");
        r.ca_bundle = Some("/nonexistent/ca.pem".into());
        assert_eq!(acme(&r).unwrap_err().key, "acme.ca_bundle");
        let empty = tempfile::NamedTempFile::new().unwrap();
        r.ca_bundle = Some(empty.path().into());
        assert_eq!(acme(&r).unwrap_err().key, "acme.ca_bundle");
    }

    #[test]
    fn environment_overrides_reach_the_section() {
        let env = [
            ("TENANTGATE__ACME__ENABLED".to_string(), "true".to_string()),
            (
                "TENANTGATE__ACME__DIRECTORY_URL".to_string(),
                "http://ca.test/dir".to_string(),
            ),
        ];
        let raw = crate::RawConfig::parse("", env).unwrap();
        assert_eq!(acme(&raw.acme).unwrap_err().key, "acme.directory_url");
    }

    #[test]
    fn valid_section_is_kept() {
        let mut r = raw("https://acme-v02.api.letsencrypt.org/directory");
        r.contact = vec!["mailto:ops@example.com".into()];
        let c = acme(&r).unwrap().unwrap();
        assert_eq!(
            c.directory_url.as_str(),
            "https://acme-v02.api.letsencrypt.org/directory"
        );
        assert_eq!(c.contact, ["mailto:ops@example.com"]);
    }
}
