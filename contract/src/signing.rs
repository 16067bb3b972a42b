//! The signed tenant header: the contract between the edge and the app tier (DESIGN §5).
//!
//! The edge sends `x-tenant-id`, `x-tenant-slug`, `x-tenant-shard`, `x-tenant-epoch`,
//! `x-request-id` and `x-tenant-signature: v1;kid=<key id>;ts=<unix seconds>;sig=<base64url
//! HMAC-SHA256>`. The MAC covers the tenant id, slug, shard, epoch, timestamp and request id, each
//! on its own line after a `v1` line, so no field can be shifted into another. The edge signs with
//! one key; the app accepts any configured key, which is how keys rotate.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use thiserror::Error;
use uuid::Uuid;

pub const HEADER_TENANT_ID: &str = "x-tenant-id";
pub const HEADER_TENANT_SLUG: &str = "x-tenant-slug";
pub const HEADER_TENANT_SHARD: &str = "x-tenant-shard";
pub const HEADER_TENANT_EPOCH: &str = "x-tenant-epoch";
pub const HEADER_TENANT_SIGNATURE: &str = "x-tenant-signature";
pub const HEADER_REQUEST_ID: &str = "x-request-id";
/// Every internal header starts with this; the edge strips inbound ones.
pub const INTERNAL_PREFIX: &str = "x-tenant-";

type HmacSha256 = Hmac<Sha256>;

/// The fields the signature covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantClaims<'a> {
    pub tenant_id: Uuid,
    pub slug: &'a str,
    pub shard: &'a str,
    pub epoch: i64,
    pub request_id: &'a str,
}

/// Why a signature was refused. Deliberately coarse: the client learns only "401".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("signature header missing")]
    Missing,
    #[error("signature header malformed")]
    Malformed,
    #[error("signature key id not accepted")]
    UnknownKey,
    #[error("signature timestamp outside the allowed skew")]
    Expired,
    #[error("signature does not match")]
    Mismatch,
}

/// Signing and verification keys. Cheap to clone; holds prepared HMAC states.
#[derive(Clone)]
pub struct SigningKeys {
    current: String,
    /// The prepared state of the current key, so signing needs no map lookup.
    current_key: HmacSha256,
    keys: HashMap<String, HmacSha256>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("current", &self.current)
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl SigningKeys {
    /// `current` must be one of `keys` (checked by config validation).
    pub fn new(current: &str, keys: &[(String, Vec<u8>)]) -> Option<SigningKeys> {
        let keys: HashMap<String, HmacSha256> = keys
            .iter()
            .map(|(kid, secret)| {
                let mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
                (kid.clone(), mac)
            })
            .collect();
        let current_key = keys.get(current)?.clone();
        Some(SigningKeys {
            current: current.to_string(),
            current_key,
            keys,
        })
    }

    pub fn current_kid(&self) -> &str {
        &self.current
    }

    /// The `x-tenant-signature` value for `claims` at unix time `ts`.
    pub fn sign(&self, claims: &TenantClaims<'_>, ts: i64) -> String {
        let mac = self.mac(&self.current_key, claims, ts);
        // Pieces instead of `format!`: this runs for every request the edge forwards.
        let mut out = String::with_capacity(64 + self.current.len());
        out.push_str("v1;kid=");
        out.push_str(&self.current);
        out.push_str(";ts=");
        out.push_str(itoa::Buffer::new().format(ts));
        out.push_str(";sig=");
        URL_SAFE_NO_PAD.encode_string(mac, &mut out);
        out
    }

    /// Check `header` against `claims`: known key, `|now - ts| <= max_skew_secs`, matching MAC.
    pub fn verify(
        &self,
        header: &str,
        claims: &TenantClaims<'_>,
        now: i64,
        max_skew_secs: i64,
    ) -> Result<(), SignatureError> {
        let parsed = ParsedSignature::parse(header)?;
        let key = self
            .keys
            .get(parsed.kid)
            .ok_or(SignatureError::UnknownKey)?;
        if (now - parsed.ts).abs() > max_skew_secs {
            return Err(SignatureError::Expired);
        }
        let expected = self.mac(key, claims, parsed.ts);
        let given = URL_SAFE_NO_PAD
            .decode(parsed.sig)
            .map_err(|_| SignatureError::Malformed)?;
        if crate::crypto::constant_time_eq(&expected, &given) {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        }
    }

    fn mac(&self, key: &HmacSha256, c: &TenantClaims<'_>, ts: i64) -> [u8; 32] {
        let mut mac = key.clone();
        let mut id = Uuid::encode_buffer();
        mac.update(b"v1\n");
        mac.update(c.tenant_id.hyphenated().encode_lower(&mut id).as_bytes());
        for part in [c.slug.as_bytes(), c.shard.as_bytes()] {
            mac.update(b"\n");
            mac.update(part);
        }
        mac.update(b"\n");
        mac.update(itoa::Buffer::new().format(c.epoch).as_bytes());
        mac.update(b"\n");
        mac.update(itoa::Buffer::new().format(ts).as_bytes());
        mac.update(b"\n");
        mac.update(c.request_id.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

struct ParsedSignature<'a> {
    kid: &'a str,
    ts: i64,
    sig: &'a str,
}

impl<'a> ParsedSignature<'a> {
    fn parse(header: &'a str) -> Result<Self, SignatureError> {
        let mut parts = header.split(';');
        if parts.next() != Some("v1") {
            return Err(SignatureError::Malformed);
        }
        let mut field = |name: &str| {
            parts
                .next()
                .and_then(|p| p.strip_prefix(name))
                .and_then(|p| p.strip_prefix('='))
                .ok_or(SignatureError::Malformed)
        };
        let kid = field("kid")?;
        let ts = field("ts")?
            .parse()
            .map_err(|_| SignatureError::Malformed)?;
        let sig = field("sig")?;
        if parts.next().is_some() {
            return Err(SignatureError::Malformed);
        }
        Ok(ParsedSignature { kid, ts, sig })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(current: &str) -> SigningKeys {
        SigningKeys::new(
            current,
            &[
                ("k1".into(), b"one".to_vec()),
                ("k2".into(), b"two".to_vec()),
            ],
        )
        .unwrap()
    }

    fn claims() -> TenantClaims<'static> {
        TenantClaims {
            tenant_id: Uuid::from_u128(42),
            slug: "acme",
            shard: "shard-a",
            epoch: 3,
            request_id: "req-1",
        }
    }

    #[test]
    fn signs_and_verifies_with_rotation() {
        let edge = keys("k2");
        let header = edge.sign(&claims(), 1000);
        assert!(header.starts_with("v1;kid=k2;ts=1000;sig="));
        // The app knows both keys and accepts the new one.
        assert_eq!(keys("k1").verify(&header, &claims(), 1010, 30), Ok(()));
        // An app that only knows k1 does not.
        let old = SigningKeys::new("k1", &[("k1".into(), b"one".to_vec())]).unwrap();
        assert_eq!(
            old.verify(&header, &claims(), 1000, 30),
            Err(SignatureError::UnknownKey)
        );
    }

    #[test]
    fn rejects_tampering_and_expiry() {
        let k = keys("k1");
        let header = k.sign(&claims(), 1000);
        assert_eq!(
            k.verify(&header, &claims(), 1031, 30),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            k.verify(&header, &claims(), 969, 30),
            Err(SignatureError::Expired)
        );
        for tampered in [
            TenantClaims {
                slug: "globex",
                ..claims()
            },
            TenantClaims {
                shard: "shard-b",
                ..claims()
            },
            TenantClaims {
                epoch: 4,
                ..claims()
            },
            TenantClaims {
                request_id: "req-2",
                ..claims()
            },
            TenantClaims {
                tenant_id: Uuid::from_u128(43),
                ..claims()
            },
        ] {
            assert_eq!(
                k.verify(&header, &tampered, 1000, 30),
                Err(SignatureError::Mismatch)
            );
        }
        let moved_ts = header.replace("ts=1000", "ts=1001");
        assert_eq!(
            k.verify(&moved_ts, &claims(), 1000, 30),
            Err(SignatureError::Mismatch)
        );
        for bad in [
            "",
            "v2;kid=k1;ts=1;sig=x",
            "v1;kid=k1;ts=x;sig=x",
            "v1;kid=k1;ts=1",
        ] {
            assert_eq!(
                k.verify(bad, &claims(), 1000, 30),
                Err(SignatureError::Malformed)
            );
        }
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let k = keys("k1");
        let a = TenantClaims {
            slug: "ab",
            shard: "c",
            ..claims()
        };
        let b = TenantClaims {
            slug: "a",
            shard: "bc",
            ..claims()
        };
        let header = k.sign(&a, 1000);
        assert_eq!(
            k.verify(&header, &b, 1000, 30),
            Err(SignatureError::Mismatch)
        );
    }
}
