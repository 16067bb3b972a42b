//! SCRAM-SHA-256 password verifiers (RFC 5802, RFC 7677), as PostgreSQL stores them.
//!
//! Tenant logins are created with a verifier instead of the password itself, so the password
//! never appears in a statement the database server might log (`log_statement = ddl`); the
//! server recognises the `SCRAM-SHA-256$…` form and stores it as is.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Iterations PostgreSQL uses by default (`scram_iterations`).
const ITERATIONS: u32 = 4096;

/// The verifier of `password` with a fresh random salt.
///
/// The password must need no SASLprep normalisation (ours are base64url text, which is ASCII).
pub(crate) fn verifier(password: &str) -> String {
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    verifier_with(password, &salt, ITERATIONS)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA256 with one 32-byte output block (all SCRAM-SHA-256 needs).
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

fn verifier_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let salted = salted_password(password.as_bytes(), salt, iterations);
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        STANDARD.encode(salt),
        STANDARD.encode(stored_key),
        STANDARD.encode(server_key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_implementation() {
        // Computed with Python's hashlib.pbkdf2_hmac and hmac modules.
        let salt: Vec<u8> = (0u8..16).collect();
        assert_eq!(
            verifier_with("correct horse battery staple", &salt, 4096),
            "SCRAM-SHA-256$4096:AAECAwQFBgcICQoLDA0ODw==$ONYbSJBXtKl6bP6PVqw8pm9e7EiacprLnoUQPFS80Hw=:IPOtHuGJ2HifEQg74W2XXqqCrCyQG55GbPRHa6g6n9w="
        );
    }

    #[test]
    fn salts_differ() {
        assert_ne!(verifier("x"), verifier("x"));
        assert!(!verifier("secret-password").contains("secret-password"));
    }
}
