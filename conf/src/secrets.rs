//! Secrets: the header signing keys, the credential key and the webhook secret.
//!
//! In production every secret must be given, in the file or (better) in the environment. In dev
//! mode a missing key is generated for the process, with a warning. `check-config` can defer
//! production secrets to the environment it will run in ([`SecretPolicy::Defer`]).

use tenantgate_contract::crypto::{decode_key, random_secret, CredentialKey};
use tenantgate_contract::signing::SigningKeys;

use crate::raw::RawSecurity;
use crate::validate::{key_bytes, range};
use crate::{ConfigError, Mode, SecurityConfig};

/// What a production configuration without its secrets is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretPolicy {
    /// An error naming the first missing secret (what a process about to run needs).
    Require,
    /// Valid; the missing secrets are listed, to be set in the environment.
    Defer,
}

/// A random base64 key of `len` bytes, decoded.
fn generated_key(len: usize) -> Vec<u8> {
    decode_key(&random_secret(len)).expect("fresh key decodes")
}

pub(crate) fn security(
    s: &RawSecurity,
    mode: Mode,
    policy: SecretPolicy,
    warnings: &mut Vec<String>,
    deferred: &mut Vec<String>,
) -> Result<SecurityConfig, ConfigError> {
    // A production secret that is absent: an error, or (deferred) a throwaway value.
    let mut missing = |key: &str| {
        match policy {
        SecretPolicy::Require => Err(ConfigError::new(
            key,
            "is required in production mode (it is a secret: set it in the file or in the environment)",
        )),
        SecretPolicy::Defer => {
            deferred.push(key.to_string());
            Ok(())
        }
    }
    };
    let mut signing_keys = Vec::new();
    for (kid, secret) in &s.signing_keys {
        if kid.is_empty()
            || !kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ConfigError::new(
                format!("security.signing_keys.{kid}"),
                "key ids are letters, digits, '-' and '_'",
            ));
        }
        let bytes = key_bytes(&format!("security.signing_keys.{kid}"), secret, 32)?;
        signing_keys.push((kid.clone(), bytes));
    }
    let signing = if signing_keys.is_empty() {
        if mode == Mode::Production {
            missing("security.signing_keys")?;
        } else {
            warnings.push(
                "no security.signing_keys configured: generated a random key for this process only"
                    .into(),
            );
        }
        SigningKeys::new("dev", &[("dev".into(), generated_key(32))])
            .expect("current key is present")
    } else {
        let kid = match &s.signing_key_id {
            Some(kid) => kid.clone(),
            None if signing_keys.len() == 1 => signing_keys[0].0.clone(),
            None => {
                return Err(ConfigError::new(
                    "security.signing_key_id",
                    "is required when more than one signing key is configured",
                ))
            }
        };
        SigningKeys::new(&kid, &signing_keys).ok_or_else(|| {
            ConfigError::new(
                "security.signing_key_id",
                format!("{kid:?} is not in security.signing_keys"),
            )
        })?
    };
    let credential_key = match &s.credential_key {
        Some(text) => {
            let bytes = key_bytes("security.credential_key", text, 32)?;
            if bytes.len() != 32 {
                return Err(ConfigError::new(
                    "security.credential_key",
                    "must decode to exactly 32 bytes",
                ));
            }
            CredentialKey::from_bytes(&bytes).expect("32-byte key")
        }
        None => {
            if mode == Mode::Production {
                missing("security.credential_key")?;
            } else {
                warnings.push("no security.credential_key configured: generated one for this process only; sealed tenant credentials will not open after a restart".into());
            }
            CredentialKey::from_bytes(&generated_key(32)).expect("32-byte key")
        }
    };
    let max_skew_secs = range(
        "security.max_skew_secs",
        s.max_skew_secs.unwrap_or(30),
        1,
        3600,
    )?;
    let replay_cache_capacity = range(
        "security.replay_cache_capacity",
        s.replay_cache_capacity.unwrap_or(500_000),
        1_000,
        100_000_000,
    )?;
    Ok(SecurityConfig {
        signing,
        max_skew_secs: max_skew_secs as i64,
        accept_v1: s.accept_v1.unwrap_or(false),
        replay_cache_capacity,
        credential_key,
    })
}
