//! Secrets: random tokens, token hashes, and the AEAD that seals tenant database credentials.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;

/// A fresh random token: `prefix` followed by 32 random bytes in base64url.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A random secret of `len` bytes, base64-encoded (for generated keys and passwords).
pub fn random_secret(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The stored form of a bearer token: hex SHA-256. Tokens are 256-bit random values, so a fast
/// hash is enough (there is nothing to brute-force) and lookups by hash stay cheap.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// SHA-256 of `data` in standard base64: the form of a Content-Security-Policy hash source
/// (`'sha256-…'`).
pub fn sha256_base64(data: &[u8]) -> String {
    STANDARD.encode(Sha256::digest(data))
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Decode a base64 key (standard or url-safe alphabet, padding optional).
pub fn decode_key(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()
        .or_else(|| STANDARD.decode(text).ok())
}

#[derive(Debug, Error)]
pub enum SealError {
    #[error("sealed value is not valid base64 or too short")]
    Malformed,
    #[error("sealed value does not open with this key (wrong key or tampered)")]
    Open,
}

/// Key for sealing tenant database credentials in the catalog (XChaCha20-Poly1305).
#[derive(Clone)]
pub struct CredentialKey(XChaCha20Poly1305);

impl std::fmt::Debug for CredentialKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialKey(..)")
    }
}

impl CredentialKey {
    /// Build from 32 key bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<CredentialKey> {
        XChaCha20Poly1305::new_from_slice(bytes)
            .ok()
            .map(CredentialKey)
    }

    /// Seal `plain`, bound to `context` (the tenant id), as base64(nonce ‖ ciphertext).
    pub fn seal(&self, plain: &[u8], context: &[u8]) -> String {
        let mut nonce = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut nonce);
        let ct = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context,
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        STANDARD.encode(out)
    }

    /// Open a value made by [`CredentialKey::seal`] with the same `context`.
    pub fn open(&self, sealed: &str, context: &[u8]) -> Result<Vec<u8>, SealError> {
        let raw = STANDARD.decode(sealed).map_err(|_| SealError::Malformed)?;
        if raw.len() < 24 + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = raw.split_at(24);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: context,
                },
            )
            .map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_binds_context() {
        let key = CredentialKey::from_bytes(&[7u8; 32]).unwrap();
        let sealed = key.seal(b"s3cret", b"tenant-1");
        assert!(!sealed.contains("s3cret"));
        assert_eq!(key.open(&sealed, b"tenant-1").unwrap(), b"s3cret");
        assert!(matches!(
            key.open(&sealed, b"tenant-2"),
            Err(SealError::Open)
        ));
        let other = CredentialKey::from_bytes(&[8u8; 32]).unwrap();
        assert!(matches!(
            other.open(&sealed, b"tenant-1"),
            Err(SealError::Open)
        ));
        assert!(matches!(key.open("!!", b"x"), Err(SealError::Malformed)));
    }

    #[test]
    fn token_hash_is_stable_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(random_token("t_"), random_token("t_"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
