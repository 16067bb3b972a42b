//! The properties the fuzz targets in `fuzz/` check, kept here so that the corpus they grow is
//! replayed by an ordinary test (`contract/tests/fuzz_corpus.rs`) in every CI run, on stable.
//!
//! Each function takes arbitrary bytes, must never panic, and asserts what must hold for every
//! input.

use uuid::Uuid;

use crate::host::{normalize_host, split_first_segment, DomainSpec};
use crate::signing::{SignatureError, SigningKeys, TenantClaims, VerifyRules};

/// The "now" signatures are checked at: fixed, so a corpus replays the same way every day.
const NOW: i64 = 1_800_000_000;

/// Host normalisation and domain parsing.
pub fn host(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(host) = normalize_host(raw) {
        // What comes out is a host the edge can compare byte for byte: normal already, so a
        // second pass changes nothing, and free of anything that could smuggle a second
        // authority, a path or a port into a route key.
        assert_eq!(normalize_host(&host).as_deref(), Ok(&*host), "{raw:?}");
        assert!(!host.is_empty() && host.len() <= crate::host::MAX_HOST_LEN + 2);
        assert!(!host.ends_with('.'), "{raw:?} → {host:?}");
        let bracketed = host.starts_with('[') && host.ends_with(']');
        assert!(
            host.bytes().all(|b| b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(b, b'-' | b'.' | b'_')
                || (bracketed && matches!(b, b'[' | b']' | b':' | b'a'..=b'f'))),
            "{raw:?} → {host:?}"
        );
    }
    if let Ok(spec) = DomainSpec::parse(raw) {
        // What an operator typed, once accepted, reads back as the same domain.
        assert_eq!(
            DomainSpec::parse(&spec.to_string()),
            Ok(spec.clone()),
            "{raw:?}"
        );
    }
    let (first, rest) = split_first_segment(raw);
    assert!(!first.contains(['/', '?']), "{raw:?}");
    assert!(rest.starts_with('/'), "{raw:?} → {rest:?}");
}

/// Parsing and verifying the signed tenant header, and signing arbitrary claims.
pub fn signature(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let keys = SigningKeys::new(
        "k1",
        &[
            ("k1".into(), b"fuzz-key-one".to_vec()),
            ("k2".into(), b"fuzz-key-two".to_vec()),
        ],
    )
    .expect("valid keys");
    let rules = VerifyRules {
        max_skew_secs: 30,
        accept_v1: true,
    };
    let fixed = TenantClaims {
        tenant_id: Uuid::from_u128(7),
        slug: "acme",
        shard: "shard-a",
        epoch: 1,
        request_id: "req",
        method: "GET",
        target: "/",
    };
    // An arbitrary header never verifies by accident (the fuzzer cannot forge the MAC), and
    // never panics whatever its fields hold.
    let verdict = keys.verify(text, &fixed, NOW, rules);
    assert!(verdict.is_err(), "{text:?} verified without the key");

    // Arbitrary claims sign and verify, and changing any covered field breaks the signature.
    let claims = TenantClaims {
        slug: text,
        request_id: text,
        target: text,
        ..fixed
    };
    let header = keys.sign(&claims, NOW);
    assert_eq!(
        keys.verify(&header, &claims, NOW, rules),
        Ok(crate::signing::SignatureVersion::V2)
    );
    let other_method = TenantClaims {
        method: "POST",
        ..claims
    };
    assert_eq!(
        keys.verify(&header, &other_method, NOW, rules),
        Err(SignatureError::Mismatch)
    );
    let other_tenant = TenantClaims {
        tenant_id: Uuid::from_u128(8),
        ..claims
    };
    assert_eq!(
        keys.verify(&header, &other_tenant, NOW, rules),
        Err(SignatureError::Mismatch)
    );
}
