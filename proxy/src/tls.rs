//! The TLS listener's certificates: one per SNI name, from the catalog, kept in memory.
//!
//! [`Certificates`] is the rustls certificate resolver of the TLS listener. A handshake looks
//! its SNI name up in an in-memory map (no catalog I/O on the handshake path); a name without
//! a certificate gets the configured fallback certificate, or no certificate at all, which
//! makes rustls refuse the handshake (alert). Only the exact host's certificate is ever
//! served, so one tenant's name can never present another tenant's certificate.
//!
//! The map follows the catalog feed like the route cache: a change refreshes the hosts it
//! names (an upload, a domain removed, a tenant deleted), a resync reloads every certificate.
//! Replacing an entry affects new handshakes only; established connections keep the session
//! they negotiated. Keys are stored sealed and opened here with `security.credential_key`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tenantgate_catalog::feed::ChangeSink;
use tenantgate_catalog::store::certificates::{key_context, ServedCertificate};
use tenantgate_catalog::{Catalog, Change};
use tenantgate_contract::crypto::CredentialKey;
use tokio::sync::mpsc;

use crate::error::EdgeError;
use crate::on_demand::OnDemand;

/// Work for the refresh task, done in feed order.
#[derive(Debug)]
enum Job {
    Hosts(Vec<String>),
    All,
}

/// The certificates the TLS listener serves, by host.
pub struct Certificates {
    by_host: RwLock<HashMap<Box<str>, Arc<CertifiedKey>>>,
    fallback: Option<Arc<CertifiedKey>>,
    catalog: Catalog,
    key: CredentialKey,
    jobs: mpsc::UnboundedSender<Job>,
    /// Set once every certificate has been loaded (the first full load succeeded).
    loaded: AtomicBool,
    /// Told about names without a certificate, with `acme.on_demand`.
    on_demand: Option<Arc<OnDemand>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("hosts", &self.len())
            .field("fallback", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Start the certificate store and its refresh task; must run on the control runtime.
    /// Certificates load at the feed's first resync. With `on_demand`, a handshake for a name
    /// without a certificate requests one in the background.
    pub(crate) fn start(
        catalog: Catalog,
        key: CredentialKey,
        fallback: Option<&tenantgate_config::TlsFallback>,
        on_demand: Option<Arc<OnDemand>>,
    ) -> Result<Arc<Certificates>, EdgeError> {
        let fallback = fallback
            .map(|f| tenantgate_contract::tls::certified_key(&f.cert_pem, &f.key_pem))
            .transpose()
            .map_err(|e| EdgeError::Start(format!("edge.tls_fallback_cert: {e}")))?;
        let (jobs, rx) = mpsc::unbounded_channel();
        let certs = Arc::new(Certificates {
            by_host: RwLock::new(HashMap::new()),
            fallback,
            catalog,
            key,
            jobs,
            loaded: AtomicBool::new(false),
            on_demand,
        });
        tokio::spawn(refresh_worker(Arc::downgrade(&certs), rx));
        Ok(certs)
    }

    /// How many hosts have a certificate loaded.
    pub fn len(&self) -> usize {
        self.by_host.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no host has a certificate loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True once every certificate in the catalog has been loaded (the first full load), so
    /// `/readyz` does not send TLS traffic to an edge that would refuse every handshake.
    pub fn loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Open a stored certificate's key and build what rustls serves. A certificate that does
    /// not open (another credential key, a tampered row) is skipped and logged without its
    /// key, so one bad row never stops the others.
    fn certified(&self, stored: &ServedCertificate) -> Option<Arc<CertifiedKey>> {
        let key_pem = match self.key.open(
            &stored.key_sealed,
            &key_context(stored.tenant_id, &stored.host),
        ) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(host = %stored.host, error = %e, "certificate key does not open; not served");
                return None;
            }
        };
        let key_pem = String::from_utf8(key_pem).ok()?;
        match tenantgate_contract::tls::certified_key(&stored.cert_pem, &key_pem) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(host = %stored.host, error = %e, "stored certificate unusable; not served");
                None
            }
        }
    }

    async fn refresh(&self, hosts: Option<&[String]>) {
        let stored = match self.catalog.served_certificates(hosts).await {
            Ok(s) => s,
            Err(e) => {
                // Keep serving what we have; the feed resyncs once the catalog is back.
                tracing::warn!(error = %e, "loading certificates failed; keeping the loaded ones");
                return;
            }
        };
        let loaded: Vec<(Box<str>, Arc<CertifiedKey>)> = stored
            .iter()
            .filter_map(|s| Some((s.host.as_str().into(), self.certified(s)?)))
            .collect();
        let mut map = self.by_host.write().unwrap_or_else(|e| e.into_inner());
        match hosts {
            None => {
                *map = loaded.into_iter().collect();
                self.loaded.store(true, Ordering::Release);
            }
            Some(hosts) => {
                for host in hosts {
                    map.remove(host.as_str());
                }
                map.extend(loaded);
            }
        }
    }

    /// The feed sink that keeps these certificates current.
    pub(crate) fn sink(self: &Arc<Self>) -> Arc<dyn ChangeSink> {
        Arc::new(Sink(self.clone()))
    }
}

impl ResolvesServerCert for Certificates {
    /// Runs during each TLS handshake, on the proxy's threads: the certificate of the SNI name
    /// (lower-cased, without a trailing dot), else the fallback, else `None` (refused). A name
    /// without a certificate is handed to on-demand issuance, which never blocks.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let found = hello.server_name().and_then(|name| {
            let host = name.trim_end_matches('.').to_ascii_lowercase();
            let map = self.by_host.read().unwrap_or_else(|e| e.into_inner());
            let found = map.get(host.as_str()).cloned();
            drop(map);
            if let (None, Some(on_demand)) = (&found, &self.on_demand) {
                on_demand.notice(&host);
            }
            found
        });
        found.or_else(|| self.fallback.clone())
    }
}

async fn refresh_worker(
    certs: std::sync::Weak<Certificates>,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    while let Some(job) = rx.recv().await {
        let Some(certs) = certs.upgrade() else {
            return;
        };
        match job {
            Job::Hosts(hosts) => certs.refresh(Some(&hosts)).await,
            Job::All => certs.refresh(None).await,
        }
    }
}

struct Sink(Arc<Certificates>);

impl ChangeSink for Sink {
    fn apply(&self, change: &Change) {
        // Shard changes name no hosts; every other change names the hosts it touched.
        if !change.hosts.is_empty() {
            let _ = self.0.jobs.send(Job::Hosts(change.hosts.clone()));
        }
    }

    fn resync(&self) {
        let _ = self.0.jobs.send(Job::All);
    }
}

/// Several sinks fed from one feed follower, each in feed order.
pub(crate) struct Fanout(pub(crate) Vec<Arc<dyn ChangeSink>>);

impl ChangeSink for Fanout {
    fn apply(&self, change: &Change) {
        for sink in &self.0 {
            sink.apply(change);
        }
    }

    fn resync(&self) {
        for sink in &self.0 {
            sink.resync();
        }
    }
}
