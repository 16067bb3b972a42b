//! Certificates by ACME (RFC 8555) for tenant domains: one order per host, validated by
//! HTTP-01 through the edges.
//!
//! The admin does not answer challenges itself: it records each challenge's key authorization
//! in the catalog (`acme_challenges`, with a feed entry), and every edge answers
//! `/.well-known/acme-challenge/{token}` on its plain listener from memory once the feed
//! announces it. Only then is the CA told the challenge is ready. The new private key is
//! generated here, sealed at once like an uploaded one, and never logged.

use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use tenantgate_catalog::store::acme;
use tenantgate_config::AcmeConfig;
use tokio::sync::OnceCell;

use crate::error::AdminError;
use crate::state::AdminState;
use crate::write::Write;

/// How long a recorded challenge stays answerable: longer than any validation takes, short
/// enough that an abandoned one does not linger.
const CHALLENGE_TTL: Duration = Duration::from_secs(600);
/// How long an order may take to become ready once its challenges are set ready, and then
/// to be issued. The CA validates in seconds; a slower CA fails the attempt, and the job's
/// retry with backoff starts a new order.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// What can go wrong while obtaining a certificate by ACME.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA answered with a problem document, or the exchange with it failed.
    #[error("ACME: {0}")]
    Protocol(#[from] instant_acme::Error),
    /// The CA offered no HTTP-01 challenge for the host (the only type the edges answer).
    #[error("the CA offered no http-01 challenge for {0}")]
    NoHttp01(String),
    /// The order did not become ready: a challenge failed validation.
    #[error("the order for {host} is {status}")]
    OrderFailed { host: String, status: String },
    /// The key pair or the signing request could not be made.
    #[error("key or CSR: {0}")]
    Key(#[from] rcgen::Error),
    /// The CA issued a chain that does not pass the upload checks (names, key, validity).
    #[error("issued chain unusable: {0}")]
    Chain(#[from] tenantgate_contract::tls::CertError),
}

/// The ACME account of this admin process, made on first use.
///
/// One account per process: accounts are cheap for the CA and the key never leaves memory.
/// (Reusing one account across restarts would need its sealed key in the catalog.)
#[derive(Default)]
pub(crate) struct AcmeClient {
    account: OnceCell<Account>,
}

impl AcmeClient {
    async fn account(&self, config: &AcmeConfig) -> Result<&Account, AcmeError> {
        self.account
            .get_or_try_init(|| async {
                let builder = match &config.ca_bundle {
                    Some(pem) => Account::builder_with_root(pem)?,
                    None => Account::builder()?,
                };
                let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
                let (account, _credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        config.directory_url.to_string(),
                        None,
                    )
                    .await?;
                Ok(account)
            })
            .await
    }
}

/// A certificate obtained for a host: the chain as issued and its private key (PKCS#8 PEM).
pub(crate) struct Issued {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").finish_non_exhaustive()
    }
}

/// Obtain a certificate for `host` from the configured CA: order, publish the HTTP-01 answers
/// through the catalog, wait for validation, finalize with a fresh key, download the chain.
/// The recorded challenges are removed again whatever the outcome.
pub(crate) async fn issue(
    state: &AdminState,
    config: &AcmeConfig,
    host: &str,
) -> Result<Issued, AdminError> {
    let account = state.acme.account(config).await.map_err(AdminError::from)?;
    let identifiers = [Identifier::Dns(host.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(AcmeError::from)?;

    let mut tokens = Vec::new();
    let published = publish_challenges(state, &mut order, host, &mut tokens).await;
    let result = match published {
        Ok(()) => finish_order(&mut order, host).await,
        Err(e) => Err(e),
    };
    if let Err(e) = withdraw_challenges(state, &tokens).await {
        // Expired challenges are removed by the next write anyway; not worth failing for.
        tracing::warn!(%host, error = %e, "could not remove ACME challenges");
    }
    result
}

/// Record the HTTP-01 answer of every pending authorization, wait until the edges can have
/// loaded them, and tell the CA they are ready.
async fn publish_challenges(
    state: &AdminState,
    order: &mut instant_acme::Order,
    host: &str,
    tokens: &mut Vec<String>,
) -> Result<(), AdminError> {
    let mut ready = Vec::new();
    {
        let mut authorizations = order.authorizations();
        let expires = tenantgate_contract::time::now_ms()
            + i64::try_from(CHALLENGE_TTL.as_millis()).unwrap_or(i64::MAX);
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(AcmeError::from)?;
            if authz.status != AuthorizationStatus::Pending {
                continue; // Already valid (reused by the CA).
            }
            let challenge = authz
                .challenge(ChallengeType::Http01)
                .ok_or_else(|| AcmeError::NoHttp01(host.to_string()))?;
            let key_authorization = challenge.key_authorization();
            let mut w = Write::begin(state).await?;
            acme::put_challenge(
                w.conn(),
                &challenge.token,
                key_authorization.as_str(),
                host,
                expires,
            )
            .await?;
            w.commit().await?;
            tokens.push(challenge.token.clone());
            ready.push(challenge.url.clone());
        }
    }
    if ready.is_empty() {
        return Ok(());
    }
    // The edges load challenges from the change feed; they poll it at the catalog's poll
    // interval (and on PostgreSQL are also notified). Telling the CA before that would let it
    // validate against an edge that does not know the token yet.
    tokio::time::sleep(state.config.catalog.poll_interval * 2).await;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(AcmeError::from)?;
        if let Some(mut challenge) = authz.challenge(ChallengeType::Http01) {
            if ready.contains(&challenge.url) {
                challenge.set_ready().await.map_err(AcmeError::from)?;
            }
        }
    }
    Ok(())
}

/// Wait for the order to be ready, finalize it with a new key and download the chain.
async fn finish_order(order: &mut instant_acme::Order, host: &str) -> Result<Issued, AdminError> {
    let retries = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retries).await.map_err(AcmeError::from)?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::OrderFailed {
            host: host.to_string(),
            status: format!("{status:?}").to_lowercase(),
        }
        .into());
    }
    let key = rcgen::KeyPair::generate().map_err(AcmeError::from)?;
    let mut params =
        rcgen::CertificateParams::new(vec![host.to_string()]).map_err(AcmeError::from)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).map_err(AcmeError::from)?;
    order
        .finalize_csr(csr.der())
        .await
        .map_err(AcmeError::from)?;
    let cert_pem = order
        .poll_certificate(&retries)
        .await
        .map_err(AcmeError::from)?;
    Ok(Issued {
        cert_pem,
        key_pem: key.serialize_pem(),
    })
}

/// Remove the recorded challenges (and any expired ones) once the order is done with them.
async fn withdraw_challenges(state: &AdminState, tokens: &[String]) -> Result<(), AdminError> {
    if tokens.is_empty() {
        return Ok(());
    }
    let mut w = Write::begin(state).await?;
    for token in tokens {
        acme::delete_challenge(w.conn(), token).await?;
    }
    w.commit().await
}
