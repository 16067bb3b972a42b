//! Certificates by ACME (RFC 8555) for tenant domains: one order per host, validated by
//! HTTP-01 through the edges.
//!
//! The admin does not answer challenges itself: it records each challenge's key authorization
//! in the catalog (`acme_challenges`, with a feed entry), and every edge answers
//! `/.well-known/acme-challenge/{token}` on its plain listener from memory once the feed
//! announces it. The CA is told the challenge is ready only once the edges are seen serving it
//! ([`confirm_served`]). The account is registered once per CA directory and kept, sealed, in
//! the catalog ([`AcmeClient`]). The new private key is generated here, sealed at once like an
//! uploaded one, and never logged.

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
    /// The account kept in the catalog could not be stored or resumed.
    #[error("ACME account: {0}")]
    Account(String),
    /// An edge in `acme.confirm_addrs` did not serve a challenge answer in time.
    #[error("edge {addr} did not serve the challenge for {host} within {waited:?}")]
    NotServed {
        host: String,
        addr: String,
        waited: Duration,
    },
}

/// The ACME account this admin process uses, loaded on first use.
///
/// One account per CA directory for every admin process and across restarts: the first process
/// to need one registers it and keeps its credentials in the catalog (`acme_accounts`), sealed
/// with the credential key like a database credential; every other process, and this one after
/// a restart, opens the kept one. Two processes registering at the same moment both store
/// conditionally; the loser drops its account and uses the winner's (the CA keeps one unused
/// account, which costs nothing).
#[derive(Default)]
pub(crate) struct AcmeClient {
    account: OnceCell<Account>,
}

impl AcmeClient {
    async fn account(
        &self,
        state: &AdminState,
        config: &AcmeConfig,
    ) -> Result<&Account, AdminError> {
        self.account
            .get_or_try_init(|| async {
                let directory = config.directory_url.as_str();
                if let Some(kept) = state.catalog.acme_account(directory).await? {
                    return open_account(state, config, &kept).await;
                }
                let contact: Vec<&str> = config.contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder(config)?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.to_string(),
                        None,
                    )
                    .await
                    .map_err(AcmeError::from)?;
                let json = serde_json::to_vec(&credentials).map_err(|e| {
                    AcmeError::Account(format!("credentials do not serialise: {e}"))
                })?;
                let kept = acme::StoredAccount {
                    account_url: account.id().to_string(),
                    credentials_sealed: state
                        .config
                        .security
                        .credential_key
                        .seal(&json, &acme::account_context(directory)),
                };
                let mut w = Write::begin(state).await?;
                let stored = acme::put_account_if_absent(w.conn(), directory, &kept).await?;
                w.commit().await?;
                if stored {
                    tracing::info!(account = %kept.account_url, "registered an ACME account");
                    return Ok(account);
                }
                // Another process registered one first: use it, so all share one account.
                let winner = state
                    .catalog
                    .acme_account(directory)
                    .await?
                    .ok_or_else(|| AcmeError::Account("the kept account vanished".into()))?;
                open_account(state, config, &winner).await
            })
            .await
    }
}

/// An account builder trusting the configured roots for the CA's HTTPS.
fn builder(config: &AcmeConfig) -> Result<instant_acme::AccountBuilder, AcmeError> {
    Ok(match &config.ca_bundle {
        Some(pem) => Account::builder_with_root(pem)?,
        None => Account::builder()?,
    })
}

/// Open the kept account's credentials (never logged) and resume it.
async fn open_account(
    state: &AdminState,
    config: &AcmeConfig,
    kept: &acme::StoredAccount,
) -> Result<Account, AdminError> {
    let directory = config.directory_url.as_str();
    let json = state
        .config
        .security
        .credential_key
        .open(&kept.credentials_sealed, &acme::account_context(directory))
        .map_err(|e| AcmeError::Account(format!("the kept account does not open: {e}")))?;
    let credentials: instant_acme::AccountCredentials = serde_json::from_slice(&json)
        .map_err(|e| AcmeError::Account(format!("the kept account does not parse: {e}")))?;
    let account = builder(config)?
        .from_credentials(credentials)
        .await
        .map_err(AcmeError::from)?;
    Ok(account)
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
    let account = state.acme.account(state, config).await?;
    let identifiers = [Identifier::Dns(host.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .map_err(AcmeError::from)?;

    let mut tokens = Vec::new();
    let published = publish_challenges(state, config, &mut order, host, &mut tokens).await;
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

/// Record the HTTP-01 answer of every pending authorization, confirm the edges serve them
/// ([`confirm_served`]), and tell the CA they are ready.
async fn publish_challenges(
    state: &AdminState,
    config: &AcmeConfig,
    order: &mut instant_acme::Order,
    host: &str,
    tokens: &mut Vec<String>,
) -> Result<(), AdminError> {
    let mut ready = Vec::new();
    let mut answers = Vec::new();
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
            answers.push((
                challenge.token.clone(),
                key_authorization.as_str().to_string(),
            ));
            ready.push(challenge.url.clone());
        }
    }
    if ready.is_empty() {
        return Ok(());
    }
    // The edges load challenges from the change feed, a poll interval or so after the commit.
    // Telling the CA before they serve it would let it validate against an edge that does not
    // know the token yet, and a failed validation fails the whole order.
    confirm_served(config, host, &answers).await?;
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

/// How often [`confirm_served`] asks an edge again.
const CONFIRM_INTERVAL: Duration = Duration::from_millis(50);
/// The longest one confirmation request may take.
const CONFIRM_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Wait until every challenge in `answers` (token, key authorization) is served for `host`.
///
/// With `acme.confirm_addrs`, each listed edge is asked directly (`Host: <host>`), and all must
/// answer with the key authorization within `acme.confirm_timeout`, else the attempt fails
/// (and the job retries with backoff) rather than let the CA fail the order. Without it, the
/// admin asks `http://<host>/…` as the CA will; that may not reach the edges from inside the
/// network (no hairpin routing, split DNS), so a timeout only logs a warning and goes ahead.
async fn confirm_served(
    config: &AcmeConfig,
    host: &str,
    answers: &[(String, String)],
) -> Result<(), AdminError> {
    let through_domain = config.confirm_addrs.is_empty();
    let targets: Vec<&str> = if through_domain {
        vec![host]
    } else {
        config.confirm_addrs.iter().map(String::as_str).collect()
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CONFIRM_REQUEST_TIMEOUT)
        .build()
        .map_err(|e| AdminError::Job(format!("HTTP client: {e}")))?;
    let deadline = tokio::time::Instant::now() + config.confirm_timeout;
    for target in targets {
        for (token, key_authorization) in answers {
            let url = format!("http://{target}{}{token}", acme::CHALLENGE_PREFIX);
            loop {
                if serves(&client, &url, host, key_authorization).await {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    if through_domain {
                        tracing::warn!(%host, "could not confirm the challenge through the domain; telling the CA anyway");
                        return Ok(());
                    }
                    return Err(AcmeError::NotServed {
                        host: host.to_string(),
                        addr: target.to_string(),
                        waited: config.confirm_timeout,
                    }
                    .into());
                }
                tokio::time::sleep(CONFIRM_INTERVAL).await;
            }
        }
    }
    Ok(())
}

/// Whether `url` (asked with `Host: host`) answers 200 with exactly `key_authorization`.
async fn serves(client: &reqwest::Client, url: &str, host: &str, key_authorization: &str) -> bool {
    let Ok(response) = client
        .get(url)
        .header(reqwest::header::HOST, host)
        .send()
        .await
    else {
        return false;
    };
    response.status() == reqwest::StatusCode::OK
        && response
            .text()
            .await
            .is_ok_and(|body| body.trim() == key_authorization)
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
