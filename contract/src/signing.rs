//! The signed tenant header: the contract between the edge and the app tier (DESIGN §5, §9).
//!
//! The edge sends `x-tenant-id`, `x-tenant-slug`, `x-tenant-shard`, `x-tenant-epoch`,
//! `x-request-id` and `x-tenant-signature: v2;kid=<key id>;ts=<unix seconds>;sig=<base64url
//! HMAC-SHA256>`. The edge signs with one key; the app accepts any configured key, which is how
//! keys rotate.
//!
//! The v2 MAC is over these lines, joined by `\n`, so no field can be shifted into another:
//!
//! ```text
//! v2
//! <tenant id, lower-case hyphenated uuid>
//! <slug>
//! <shard>
//! <epoch, decimal>
//! <ts, decimal unix seconds>
//! <request id>
//! <method, as on the request line, e.g. GET>
//! <target>
//! ```
//!
//! The **target** is the request target in origin form exactly as the app receives it: the
//! path *after* the edge stripped a matched path prefix (`/acme/items?x=1` on
//! `app.example.com/acme` is signed as `/items?x=1`), with the query string, byte for byte, no
//! decoding or normalisation (`/` when empty). The query is covered because it changes what a
//! request does (`?cursor=`, filters). A captured header is therefore good for one method and
//! one target only, and the app refuses a request id it has seen within the skew window
//! (see `tenantgate_app`'s replay cache), so it cannot be replayed at all.
//!
//! `v1` (no method, no target) is the format of older edges. It covers `v1`, tenant id, slug,
//! shard, epoch, ts and request id; it is verified only when [`VerifyRules::accept_v1`] is set
//! (`security.accept_v1`, for a rolling upgrade from an older edge) and is never produced by
//! the edge.

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
    /// The request method (`GET`, `POST`, ...), as on the request line.
    pub method: &'a str,
    /// The origin-form target the app receives: path after prefix stripping, with the query
    /// (see the module documentation). Not covered by `v1`.
    pub target: &'a str,
}

/// The format of a signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// Older edges: no method, no target.
    V1,
    /// Current: covers the method and the target too.
    V2,
}

/// What [`SigningKeys::verify`] accepts besides a matching MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyRules {
    /// Seconds a signature's `ts` may be away from now, either way (`security.max_skew_secs`).
    pub max_skew_secs: i64,
    /// Whether `v1` headers are accepted (`security.accept_v1`).
    pub accept_v1: bool,
}

/// Why a signature was refused. Deliberately coarse: the client learns only "401".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    #[error("signature header missing")]
    Missing,
    #[error("signature header malformed")]
    Malformed,
    #[error("signature version v1 is not accepted (security.accept_v1 is off)")]
    VersionRefused,
    #[error("signature key id not accepted")]
    UnknownKey,
    #[error("signature timestamp outside the allowed skew")]
    Expired,
    #[error("signature does not match")]
    Mismatch,
}

/// Signing and verification keys. Cheap to clone; holds prepared HMAC states (the key's inner
/// and outer pads are hashed once, so a signature costs only the message's blocks).
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

    /// The `x-tenant-signature` value (`v2`) for `claims` at unix time `ts`.
    pub fn sign(&self, claims: &TenantClaims<'_>, ts: i64) -> String {
        self.sign_version(SignatureVersion::V2, claims, ts)
    }

    /// A `v1` header, as older edges sent it: only for tests of `security.accept_v1` and of
    /// rolling upgrades; the edge never sends one.
    pub fn sign_v1(&self, claims: &TenantClaims<'_>, ts: i64) -> String {
        self.sign_version(SignatureVersion::V1, claims, ts)
    }

    fn sign_version(
        &self,
        version: SignatureVersion,
        claims: &TenantClaims<'_>,
        ts: i64,
    ) -> String {
        let mac = mac(&self.current_key, version, claims, ts);
        // Pieces instead of `format!`: this runs for every request the edge forwards.
        let mut out = String::with_capacity(64 + self.current.len());
        out.push_str(match version {
            SignatureVersion::V1 => "v1;kid=",
            SignatureVersion::V2 => "v2;kid=",
        });
        out.push_str(&self.current);
        out.push_str(";ts=");
        out.push_str(itoa::Buffer::new().format(ts));
        out.push_str(";sig=");
        URL_SAFE_NO_PAD.encode_string(mac, &mut out);
        out
    }

    /// Check `header` against `claims`: a version `rules` accept, a known key,
    /// `|now - ts| <= rules.max_skew_secs`, a matching MAC. Returns the header's version.
    pub fn verify(
        &self,
        header: &str,
        claims: &TenantClaims<'_>,
        now: i64,
        rules: VerifyRules,
    ) -> Result<SignatureVersion, SignatureError> {
        let parsed = ParsedSignature::parse(header)?;
        if parsed.version == SignatureVersion::V1 && !rules.accept_v1 {
            return Err(SignatureError::VersionRefused);
        }
        let key = self
            .keys
            .get(parsed.kid)
            .ok_or(SignatureError::UnknownKey)?;
        // `abs_diff`: a `ts` near `i64::MIN` or `MAX` must not overflow the subtraction.
        if now.abs_diff(parsed.ts) > rules.max_skew_secs.unsigned_abs() {
            return Err(SignatureError::Expired);
        }
        let expected = mac(key, parsed.version, claims, parsed.ts);
        let given = URL_SAFE_NO_PAD
            .decode(parsed.sig)
            .map_err(|_| SignatureError::Malformed)?;
        if crate::crypto::constant_time_eq(&expected, &given) {
            Ok(parsed.version)
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

/// The MAC of `claims` at `ts` in the given format (see the module documentation).
fn mac(key: &HmacSha256, version: SignatureVersion, c: &TenantClaims<'_>, ts: i64) -> [u8; 32] {
    let mut mac = key.clone();
    let mut id = Uuid::encode_buffer();
    mac.update(match version {
        SignatureVersion::V1 => b"v1\n",
        SignatureVersion::V2 => b"v2\n",
    });
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
    if version == SignatureVersion::V2 {
        mac.update(b"\n");
        mac.update(c.method.as_bytes());
        mac.update(b"\n");
        mac.update(if c.target.is_empty() { "/" } else { c.target }.as_bytes());
    }
    mac.finalize().into_bytes().into()
}

struct ParsedSignature<'a> {
    version: SignatureVersion,
    kid: &'a str,
    ts: i64,
    sig: &'a str,
}

impl<'a> ParsedSignature<'a> {
    fn parse(header: &'a str) -> Result<Self, SignatureError> {
        let mut parts = header.split(';');
        let version = match parts.next() {
            Some("v2") => SignatureVersion::V2,
            Some("v1") => SignatureVersion::V1,
            _ => return Err(SignatureError::Malformed),
        };
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
        Ok(ParsedSignature {
            version,
            kid,
            ts,
            sig,
        })
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
            method: "GET",
            target: "/whoami?x=1",
        }
    }

    const RULES: VerifyRules = VerifyRules {
        max_skew_secs: 30,
        accept_v1: false,
    };

    #[test]
    fn signs_and_verifies_with_rotation() {
        let edge = keys("k2");
        let header = edge.sign(&claims(), 1000);
        assert!(header.starts_with("v2;kid=k2;ts=1000;sig="));
        // The app knows both keys and accepts the new one.
        assert_eq!(
            keys("k1").verify(&header, &claims(), 1010, RULES),
            Ok(SignatureVersion::V2)
        );
        // An app that only knows k1 does not.
        let old = SigningKeys::new("k1", &[("k1".into(), b"one".to_vec())]).unwrap();
        assert_eq!(
            old.verify(&header, &claims(), 1000, RULES),
            Err(SignatureError::UnknownKey)
        );
    }

    #[test]
    fn rejects_tampering_and_expiry() {
        let k = keys("k1");
        let header = k.sign(&claims(), 1000);
        assert_eq!(
            k.verify(&header, &claims(), 1031, RULES),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            k.verify(&header, &claims(), 969, RULES),
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
            TenantClaims {
                method: "POST",
                ..claims()
            },
            TenantClaims {
                target: "/whoami",
                ..claims()
            },
            TenantClaims {
                target: "/api/export",
                ..claims()
            },
        ] {
            assert_eq!(
                k.verify(&header, &tampered, 1000, RULES),
                Err(SignatureError::Mismatch)
            );
        }
        let moved_ts = header.replace("ts=1000", "ts=1001");
        assert_eq!(
            k.verify(&moved_ts, &claims(), 1000, RULES),
            Err(SignatureError::Mismatch)
        );
        for bad in [
            "",
            "v3;kid=k1;ts=1;sig=x",
            "v2;kid=k1;ts=x;sig=x",
            "v2;kid=k1;ts=1",
            "v2;kid=k1;ts=1;sig=x;extra=1",
        ] {
            assert_eq!(
                k.verify(bad, &claims(), 1000, RULES),
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
            k.verify(&header, &b, 1000, RULES),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn v1_only_when_accepted() {
        let k = keys("k1");
        let v1 = k.sign_v1(&claims(), 1000);
        assert!(v1.starts_with("v1;kid=k1;ts=1000;sig="));
        assert_eq!(
            k.verify(&v1, &claims(), 1000, RULES),
            Err(SignatureError::VersionRefused)
        );
        let lenient = VerifyRules {
            accept_v1: true,
            ..RULES
        };
        // v1 does not cover the method or the target: that is why it is off by default.
        let other_request = TenantClaims {
            method: "DELETE",
            target: "/api/items/1",
            ..claims()
        };
        assert_eq!(
            k.verify(&v1, &other_request, 1000, lenient),
            Ok(SignatureVersion::V1)
        );
        // A v2 MAC relabelled as v1 (or the reverse) does not verify.
        let v2 = k.sign(&claims(), 1000);
        let relabelled = v2.replacen("v2;", "v1;", 1);
        assert_eq!(
            k.verify(&relabelled, &claims(), 1000, lenient),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            k.verify(&v1.replacen("v1;", "v2;", 1), &claims(), 1000, lenient),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn empty_target_is_the_root() {
        let k = keys("k1");
        let root = TenantClaims {
            target: "/",
            ..claims()
        };
        let empty = TenantClaims {
            target: "",
            ..claims()
        };
        let header = k.sign(&empty, 1000);
        assert_eq!(
            k.verify(&header, &root, 1000, RULES),
            Ok(SignatureVersion::V2)
        );
    }
}
