//! Certificate uploads over HTTP on both backends: a valid upload is recorded (key sealed,
//! never shown) and listed with the tenant's domains; each kind of unusable upload gets its own
//! 400/422 code; hosts the tenant does not own whole are refused.

use serde_json::json;
use tenantgate_catalog::store::certificates::key_context;
use tenantgate_testkit::admin::Harness;
use tenantgate_testkit::tls::{Leaf, TestCa};
use tenantgate_testkit::{both_backends, Engine};

/// The admin's `/metrics` page.
async fn metrics_text(h: &Harness) -> String {
    match h.call("GET", "/metrics", None, None).await.body {
        serde_json::Value::String(text) => text,
        other => panic!("metrics are text: {other}"),
    }
}

both_backends!(uploads_are_checked_sealed_and_listed);
async fn uploads_are_checked_sealed_and_listed(backend: Engine) {
    let h = Harness::started(backend).await;
    h.shard("shard-a").await;
    let (id, _) = h.tenant("acme", Some("shard-a")).await;
    // Provisioning changes the tenant when it finishes; a domain change racing it would get
    // 409 "changed concurrently" (the answer an operator gets too).
    h.wait_status(&id, "active").await;
    for domain in ["shop.acme.test", "app.shared.test/acme"] {
        let r = h
            .post(
                &format!("/v1/tenants/{id}/domains"),
                json!({ "domain": domain }),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
    }
    let ca = TestCa::new("Upload Test CA");
    let put = |host: &str, cert: String, key: String| {
        let path = format!("/v1/tenants/{id}/domains/{host}/certificate");
        let h = &h;
        async move {
            h.call(
                "PUT",
                &path,
                Some(tenantgate_testkit::admin::BOOTSTRAP),
                Some(json!({ "cert_pem": cert, "key_pem": key })),
            )
            .await
        }
    };

    // Before any upload every domain shows status none.
    let r = h.get(&format!("/v1/tenants/{id}/domains")).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let domains = r.body["domains"].as_array().unwrap();
    assert_eq!(domains.len(), 3, "{:?}", r.body);
    assert!(domains.iter().all(|d| d["certificate"]["status"] == "none"));
    let shared = domains
        .iter()
        .find(|d| d["domain"] == "app.shared.test")
        .unwrap();
    assert_eq!(shared["path_prefix"], "acme");

    let metrics = metrics_text(&h).await;
    assert!(
        metrics.contains("tenantgate_certificates{state=\"none\"} 3"),
        "{metrics}"
    );
    assert!(!metrics.contains("tenantgate_certificate_expiry_timestamp_seconds "));

    // A wildcard leaf with its CA appended: accepted, the key sealed and never shown.
    let Leaf {
        cert_pem: leaf,
        key_pem: key,
        ..
    } = ca.issue_valid(&["*.acme.test"], 2025, 2035);
    let chain = leaf.clone() + &ca.ca_pem();
    let r = put("shop.acme.test", chain.clone(), key.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["domain"], "shop.acme.test");
    assert_eq!(r.body["certificate"]["status"], "issued");
    assert_eq!(r.body["certificate"]["source"], "upload");
    assert_eq!(r.body["certificate"]["issuer"], "CN=Upload Test CA");
    assert!(r.body["certificate"]["not_after"]
        .as_str()
        .unwrap()
        .starts_with("2035-01-01"));
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!r.body.to_string().contains(&key_body[..40]));

    let r = h.get(&format!("/v1/tenants/{id}/domains")).await;
    let listed = r.body["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["domain"] == "shop.acme.test")
        .unwrap()
        .clone();
    assert_eq!(listed["certificate"]["status"], "issued");
    assert_eq!(listed["certificate"]["issuer"], "CN=Upload Test CA");
    let audit = h.get(&format!("/v1/audit?tenant={id}")).await;
    assert_eq!(audit.status, 200, "{:?}", audit.body);
    let audit_text = audit.body.to_string();
    assert!(
        audit_text.contains("tenant.certificate_put"),
        "{audit_text}"
    );
    assert!(!audit_text.contains(&key_body[..40]));

    // Metrics: one issued, and the soonest expiry (2035-01-01T00:00:00Z).
    let metrics = metrics_text(&h).await;
    assert!(
        metrics.contains("tenantgate_certificates{state=\"issued\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tenantgate_certificates{state=\"none\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tenantgate_certificate_expiry_timestamp_seconds 2051222400"),
        "{metrics}"
    );

    // Stored sealed, bound to tenant and host.
    let stored = h.catalog.served_certificates(None).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].key_sealed.contains(&key_body[..40]));
    let tenant_id: uuid::Uuid = id.parse().unwrap();
    let opened = h
        .config
        .security
        .credential_key
        .open(
            &stored[0].key_sealed,
            &key_context(tenant_id, "shop.acme.test"),
        )
        .unwrap();
    assert_eq!(opened, key.as_bytes());
    assert!(h
        .config
        .security
        .credential_key
        .open(
            &stored[0].key_sealed,
            &key_context(tenant_id, "acme.example.com")
        )
        .is_err());

    // Each unusable upload has its own code.
    let Leaf {
        cert_pem: other_leaf,
        key_pem: other_key,
        ..
    } = ca.issue_valid(&["shop.acme.test"], 2025, 2035);
    let with_ca = |leaf: &str| leaf.to_string() + &ca.ca_pem();
    let cases = [
        (
            "shop.acme.test",
            with_ca(&leaf),
            other_key.clone(),
            422,
            "key_mismatch",
        ),
        (
            "shop.acme.test",
            other_leaf.clone(),
            other_key.clone(),
            422,
            "chain_incomplete",
        ),
        (
            "acme.example.com",
            with_ca(&other_leaf),
            other_key.clone(),
            422,
            "name_mismatch",
        ),
        (
            "shop.acme.test",
            "not a certificate".into(),
            other_key.clone(),
            400,
            "invalid_pem",
        ),
        (
            "shop.acme.test",
            with_ca(&other_leaf),
            "garbage".into(),
            400,
            "invalid_pem",
        ),
    ];
    for (host, cert, key, status, code) in cases {
        let r = put(host, cert, key).await;
        assert_eq!(r.status, status, "{code}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], code, "{:?}", r.body);
        assert!(r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let Leaf {
        cert_pem: expired,
        key_pem: expired_key,
        ..
    } = ca.issue_valid(&["shop.acme.test"], 2020, 2022);
    let r = put("shop.acme.test", with_ca(&expired), expired_key).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (422, Some("certificate_expired"))
    );
    let Leaf {
        cert_pem: future,
        key_pem: future_key,
        ..
    } = ca.issue_valid(&["shop.acme.test"], 2090, 2095);
    let r = put("shop.acme.test", with_ca(&future), future_key).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (422, Some("certificate_not_yet_valid"))
    );
    // A refused upload left the recorded certificate as it was.
    let stored = h.catalog.served_certificates(None).await.unwrap();
    assert_eq!(stored[0].cert_pem, chain);

    // Hosts the tenant does not own whole.
    let Leaf {
        cert_pem: shared_leaf,
        key_pem: shared_key,
        ..
    } = ca.issue_valid(&["app.shared.test"], 2025, 2035);
    let r = put("app.shared.test", with_ca(&shared_leaf), shared_key.clone()).await;
    assert_eq!(r.status, 409, "{:?}", r.body);
    let r = put("other.test", with_ca(&shared_leaf), shared_key.clone()).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let r = h
        .call(
            "PUT",
            "/v1/tenants/nobody/domains/shop.acme.test/certificate",
            Some(tenantgate_testkit::admin::BOOTSTRAP),
            Some(json!({ "cert_pem": "x", "key_pem": "y" })),
        )
        .await;
    assert_eq!(r.status, 404);

    // An unknown host is 404 whatever the body; other methods are 405 on both resources that
    // share the catch-all route.
    let r = put("other.test", "garbage".into(), "garbage".into()).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    let cert_path = format!("/v1/tenants/{id}/domains/shop.acme.test/certificate");
    for (method, path) in [
        ("DELETE", cert_path.as_str()),
        ("GET", cert_path.as_str()),
        ("PUT", &format!("/v1/tenants/{id}/domains/shop.acme.test")),
    ] {
        let r = h
            .call(
                method,
                path,
                Some(tenantgate_testkit::admin::BOOTSTRAP),
                Some(json!({})),
            )
            .await;
        assert_eq!(r.status, 405, "{method} {path}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], "method_not_allowed");
    }

    // Removing the domain removes its certificate.
    let r = h
        .delete(&format!("/v1/tenants/{id}/domains/shop.acme.test"))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(h
        .catalog
        .served_certificates(None)
        .await
        .unwrap()
        .is_empty());
}
