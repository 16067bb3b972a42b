//! Isolation as a property: for random requests (host spellings, ports, trailing dots, path
//! prefixes, forged `x-tenant-*`, `Forwarded` and `X-Forwarded-*` headers), the tenant and shard
//! the app verifies are always the ones a model of the routing rules expects, or the request is
//! refused as the model says. On both catalog backends.
//!
//! `TENANTGATE_PROPERTY_CASES` sets the number of random requests (default 300).

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::edge::Harness;
use tenantgate_testkit::{both_backends, TestCatalog};
use uuid::Uuid;

/// One random request.
#[derive(Debug, Clone)]
struct Case {
    host: String,
    path: String,
    forged: Vec<(String, String)>,
}

/// Hosts the model knows, and some it must not confuse with them.
const BASES: &[&str] = &[
    "alpha.test",
    "beta.test",
    "shared.test",
    "gamma.test",
    "unknown.test",
    "alpha.test.evil",
    "xalpha.test",
    "alpha.tes",
];

const PATHS: &[&str] = &[
    "/",
    "/p1",
    "/p1/",
    "/p1/items?q=1",
    "/p2/x/y",
    "/P1/x",
    "/p3/x",
    "/p1p2",
    "/items?to=/p2",
];

fn case() -> impl Strategy<Value = Case> {
    let host = (
        prop::sample::select(BASES),
        prop::collection::vec(any::<bool>(), 16),
        any::<bool>(),
        prop::option::of(prop::sample::select(&[80u16, 8080, 443][..])),
    )
        .prop_map(|(base, upper, dot, port)| {
            let mut host: String = base
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c })
                .collect();
            if dot {
                host.push('.');
            }
            if let Some(port) = port {
                host.push_str(&format!(":{port}"));
            }
            host
        });
    let forged = prop::collection::vec(
        prop::sample::select(
            &[
                ("x-tenant-id", "00000000-0000-0000-0000-000000000001"),
                ("X-Tenant-Slug", "beta"),
                ("x-tenant-shard", "shard-b"),
                ("x-tenant-epoch", "99"),
                ("x-tenant-signature", "v2;kid=k1;ts=1;sig=AAAA"),
                ("x-forwarded-host", "beta.test"),
                ("x-forwarded-prefix", "/p2"),
                ("forwarded", "host=beta.test;proto=https"),
                ("x-real-ip", "10.0.0.1"),
                ("X_Tenant_Id", "00000000-0000-0000-0000-000000000001"),
            ][..],
        ),
        0..4,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    });
    (host, prop::sample::select(PATHS), forged).prop_map(|(host, path, forged)| Case {
        host,
        path: path.to_string(),
        forged,
    })
}

/// What the model expects: a status, and for 200 the tenant, its shard and the path the app
/// receives.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Refused(u16),
    Routed {
        tenant: Uuid,
        shard: &'static str,
        path: String,
    },
}

struct Model {
    tenants: HashMap<&'static str, (Uuid, &'static str)>,
}

impl Model {
    fn expect(&self, case: &Case) -> Expected {
        if case.forged.iter().any(|(n, _)| n.contains('_')) {
            return Expected::Refused(400);
        }
        // The model's own normalisation: ASCII lower case, no port, no trailing dot.
        let host = case.host.split(':').next().unwrap().to_ascii_lowercase();
        let host = host.strip_suffix('.').unwrap_or(&host);
        let whole = |slug: &str, path: &str| {
            let (id, shard) = self.tenants[slug];
            Expected::Routed {
                tenant: id,
                shard,
                path: path.to_string(),
            }
        };
        match host {
            "alpha.test" => whole("alpha", &case.path),
            "beta.test" => whole("beta", &case.path),
            "gamma.test" => Expected::Refused(403),
            "shared.test" => {
                let rest = case.path.strip_prefix('/').unwrap_or(&case.path);
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                let (first, after) = rest.split_at(end);
                let forwarded = match after {
                    "" => "/".to_string(),
                    a if a.starts_with('?') => format!("/{a}"),
                    a => a.to_string(),
                };
                match first {
                    "p1" => whole("p1", &forwarded),
                    "p2" => whole("p2", &forwarded),
                    _ => Expected::Refused(404),
                }
            }
            _ => Expected::Refused(404),
        }
    }
}

async fn routing_matches_the_model(tc: TestCatalog) {
    let mut h = Harness::new(tc, "", "").await;
    let a = h.backend("a1").await;
    let b = h.backend("b1").await;
    h.add_shard("shard-a", &[a.addr]).await;
    h.add_shard("shard-b", &[b.addr]).await;
    let mut tenants = HashMap::new();
    for (slug, shard, domain) in [
        ("alpha", "shard-a", "alpha.test"),
        ("beta", "shard-b", "beta.test"),
        ("p1", "shard-a", "shared.test/p1"),
        ("p2", "shard-b", "shared.test/p2"),
    ] {
        let id = h.add_active_tenant(slug, shard, &[domain]).await;
        tenants.insert(slug, (id, shard));
    }
    h.add_tenant(
        "gamma",
        "shard-a",
        &["gamma.test"],
        TenantStatus::Suspended,
        None,
    )
    .await;
    h.start().await;
    h.wait_ready().await;
    let model = Model { tenants };
    let backends = HashMap::from([("a1", "shard-a"), ("b1", "shard-b")]);

    let cases: usize = std::env::var("TENANTGATE_PROPERTY_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let mut runner = TestRunner::deterministic();
    let strategy = case();
    let mut routed = 0;
    for _ in 0..cases {
        let case = strategy.new_tree(&mut runner).unwrap().current();
        let mut req = h
            .client
            .get(h.url(&case.path))
            .header("host", case.host.as_str());
        for (name, value) in &case.forged {
            req = req.header(name.as_str(), value.as_str());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        let seen = match status {
            200 => {
                let header = |n: &str| body["headers"][n][0].as_str().unwrap_or("").to_string();
                // The backend answered 200 only because the signature verified for exactly
                // these headers, this method and this target.
                let backend = body["backend"].as_str().unwrap_or("");
                assert_eq!(
                    backends.get(backend).copied(),
                    Some(header("x-tenant-shard").as_str()),
                    "a backend of another shard served {case:?}"
                );
                assert_eq!(header("x-tenant-id").len(), 36, "{case:?}: {body}");
                assert!(
                    body["headers"]["x-real-ip"].is_null()
                        && body["headers"]["forwarded"].is_null(),
                    "{case:?}: forged headers reached the app: {body}"
                );
                routed += 1;
                Expected::Routed {
                    tenant: header("x-tenant-id").parse().unwrap(),
                    shard: if header("x-tenant-shard") == "shard-a" {
                        "shard-a"
                    } else {
                        "shard-b"
                    },
                    path: body["path"].as_str().unwrap_or("").to_string(),
                }
            }
            other => Expected::Refused(other),
        };
        assert_eq!(seen, model.expect(&case), "{case:?}");
    }
    println!("{cases} random requests, {routed} routed, all as the model expects");
    // The generator must reach both outcomes, or the property says little.
    assert!(
        routed > cases / 5 && routed < cases,
        "{routed} of {cases} routed"
    );
    h.stop().await;
}

both_backends!(routing_matches_the_model);
