//! `[acme]`: the ACME (RFC 8555) certificate authority the admin's issuance jobs use, validated.

use std::path::PathBuf;
use std::time::Duration;

use crate::raw::RawAcme;
use crate::validate::range;
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
    /// Issuance at the first TLS hit (`acme.on_demand`); `None` when off.
    pub on_demand: Option<OnDemandLimits>,
    /// Edge plain listeners (`host:port`) that must serve a challenge before the CA is told
    /// (`acme.confirm_addrs`); empty: the admin checks through the domain itself.
    pub confirm_addrs: Vec<String>,
    /// How long the admin waits for that confirmation (`acme.confirm_timeout_ms`).
    pub confirm_timeout: Duration,
}

/// The limits of on-demand issuance, counted in the catalog across every edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnDemandLimits {
    /// Requests one tenant may cause per `window`.
    pub per_tenant: u32,
    /// Requests of all tenants together per `window`.
    pub global: u32,
    /// The counting window.
    pub window: Duration,
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
    let on_demand = match raw.on_demand {
        false => None,
        true => Some(OnDemandLimits {
            per_tenant: range(
                "acme.on_demand_per_tenant",
                raw.on_demand_per_tenant,
                1,
                100_000,
            )?,
            global: range("acme.on_demand_global", raw.on_demand_global, 1, 100_000)?,
            window: Duration::from_secs(range(
                "acme.on_demand_window_secs",
                raw.on_demand_window_secs,
                1,
                604_800,
            )?),
        }),
    };
    for a in &raw.confirm_addrs {
        host_port(a).map_err(|m| ConfigError::new("acme.confirm_addrs", format!("`{a}` {m}")))?;
    }
    Ok(Some(AcmeConfig {
        directory_url,
        contact: raw.contact.clone(),
        ca_bundle: raw.ca_bundle.clone(),
        on_demand,
        confirm_addrs: raw.confirm_addrs.clone(),
        confirm_timeout: Duration::from_millis(range(
            "acme.confirm_timeout_ms",
            raw.confirm_timeout_ms,
            100,
            600_000,
        )?),
    }))
}

/// Check that `text` is `host:port` (a name or an IP address, `[v6]:port` for IPv6): what an
/// `http://` URL's authority can be built from.
fn host_port(text: &str) -> Result<(), &'static str> {
    // The URL parser drops a default port (`:80`), so the explicit port is checked here.
    let explicit_port = text
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    let url = url::Url::parse(&format!("http://{text}/")).map_err(|_| "is not host:port")?;
    let plain = url.host_str().is_some_and(|h| !h.is_empty())
        && url.path() == "/"
        && url.username().is_empty()
        && url.query().is_none();
    if explicit_port && plain {
        Ok(())
    } else {
        Err("is not host:port (with an explicit port)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: &str) -> RawAcme {
        RawAcme {
            enabled: true,
            directory_url: url.into(),
            ..RawAcme::default()
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
        type Spoil = fn(&mut RawAcme);
        let on_demand_keys: [(&str, Spoil); 5] = [
            ("acme.on_demand_per_tenant", |r| r.on_demand_per_tenant = 0),
            ("acme.on_demand_global", |r| r.on_demand_global = 0),
            ("acme.on_demand_window_secs", |r| {
                r.on_demand_window_secs = 0
            }),
            ("acme.confirm_timeout_ms", |r| r.confirm_timeout_ms = 10),
            ("acme.confirm_addrs", |r| {
                r.confirm_addrs = vec!["edge-1".into()]
            }),
        ];
        for (key, spoil) in on_demand_keys {
            let mut r = raw("https://ca.test/dir");
            spoil(&mut r);
            assert_eq!(acme(&r).unwrap_err().key, key);
        }
        for bad in [
            "http://edge:80",
            "edge:80/x",
            "user@edge:80",
            ":80",
            "edge:http",
        ] {
            assert!(host_port(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn on_demand_defaults_and_off() {
        let c = acme(&raw("https://ca.test/dir")).unwrap().unwrap();
        assert_eq!(
            c.on_demand,
            Some(OnDemandLimits {
                per_tenant: 5,
                global: 50,
                window: Duration::from_secs(3600)
            })
        );
        assert!(c.confirm_addrs.is_empty());
        assert_eq!(c.confirm_timeout, Duration::from_secs(10));
        let mut r = raw("https://ca.test/dir");
        r.on_demand = false;
        r.on_demand_global = 0; // Not checked while off.
        r.confirm_addrs = vec!["127.0.0.1:8080".into(), "edge-2.internal:80".into()];
        let c = acme(&r).unwrap().unwrap();
        assert_eq!(c.on_demand, None);
        assert_eq!(c.confirm_addrs.len(), 2);
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
