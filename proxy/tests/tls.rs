//! The TLS listener end to end, on both catalog backends: the certificate for each SNI name
//! from the catalog, unknown names refused (or given the fallback), a replaced certificate
//! served to new connections while established ones continue, HTTP/2 by ALPN, and the
//! per-tenant `https_only` redirect, HSTS and `x-forwarded-proto` as the app sees them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tenantgate_contract::TenantStatus;
use tenantgate_testkit::edge::Harness;
use tenantgate_testkit::tls::TestCa;
use tenantgate_testkit::{both_backends, wait_until, TestCatalog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A client trusting `ca`, offering `alpn`.
fn connector(ca: &TestCa, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca.ca_der())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// Handshake with `addr` for SNI `name`; the handshake's error when refused.
async fn connect(
    ca: &TestCa,
    addr: SocketAddr,
    name: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        connector(ca, alpn).connect(name, tcp),
    )
    .await
    .expect("handshake finishes")
}

/// The leaf certificate the server presented.
fn presented(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let (_, conn) = stream.get_ref();
    let chain: &[CertificateDer<'_>] = conn.peer_certificates().expect("a certificate");
    chain[0].to_vec()
}

/// One keep-alive HTTP/1.1 GET on `stream`: status, lower-cased headers and the JSON body.
async fn get(
    stream: &mut TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> (u16, Vec<(String, String)>, Value) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before the response header");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed inside the body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

both_backends!(certificate_per_sni_follows_the_feed);
async fn certificate_per_sni_follows_the_feed(tc: TestCatalog) {
    let ca = TestCa::new("tenantgate test CA");
    let mut h = Harness::new(tc, "tls_listen = \"127.0.0.1:0\"", "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    let acme = h
        .add_tenant(
            "acme",
            "shard-a",
            &["acme.test"],
            TenantStatus::Active,
            None,
        )
        .await;
    let globex = h
        .add_tenant(
            "globex",
            "shard-a",
            &["globex.test"],
            TenantStatus::Active,
            None,
        )
        .await;
    let acme_cert = ca.issue(&["acme.test"]);
    let globex_cert = ca.issue(&["globex.test"]);
    h.put_certificate(acme, "acme.test", &acme_cert.chain_pem, &acme_cert.key_pem)
        .await;
    h.start().await;
    h.wait_ready().await;
    let tls = h.tls.expect("the edge reports its TLS address");

    // Each name gets its own certificate, loaded from the catalog at the first resync.
    let mut first = wait_until(
        "acme's certificate is served",
        Duration::from_secs(10),
        || async { connect(&ca, tls, "acme.test", &[b"http/1.1"]).await.ok() },
    )
    .await;
    assert_eq!(presented(&first), acme_cert.der);
    let (status, _, body) = get(&mut first, "acme.test", "/whoami").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(body["headers"]["x-tenant-slug"][0], "acme");

    // globex has no certificate yet and there is no fallback: refused, never acme's.
    assert!(connect(&ca, tls, "globex.test", &[]).await.is_err());
    assert!(connect(&ca, tls, "nobody.test", &[]).await.is_err());

    // A certificate added through the feed is served without a restart.
    h.put_certificate(
        globex,
        "globex.test",
        &globex_cert.chain_pem,
        &globex_cert.key_pem,
    )
    .await;
    let globex_conn = wait_until(
        "globex's certificate is served",
        Duration::from_secs(10),
        || async { connect(&ca, tls, "globex.test", &[]).await.ok() },
    )
    .await;
    assert_eq!(presented(&globex_conn), globex_cert.der);

    // Replacing acme's certificate: new connections get the new one, the established
    // connection keeps working on the session it negotiated.
    let renewed = ca.issue(&["acme.test"]);
    h.put_certificate(acme, "acme.test", &renewed.chain_pem, &renewed.key_pem)
        .await;
    wait_until(
        "the renewed certificate is served",
        Duration::from_secs(10),
        || async {
            let conn = connect(&ca, tls, "acme.test", &[]).await.ok()?;
            (presented(&conn) == renewed.der).then_some(())
        },
    )
    .await;
    let (status, _, _) = get(&mut first, "acme.test", "/whoami").await;
    assert_eq!(status, 200);
    assert_eq!(presented(&first), acme_cert.der);

    // HTTP/2 by ALPN, proxied like HTTP/1.1.
    let h2_conn = connect(&ca, tls, "acme.test", &[b"h2", b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(h2_conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut client, connection) = h2::client::handshake(h2_conn).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("https://acme.test/whoami")
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        bytes.extend_from_slice(&chunk.unwrap());
    }
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(body["headers"]["x-tenant-slug"][0], "acme");

    // A removed domain takes its certificate with it.
    h.add_domain(globex, "www.globex.test").await;
    let mut tx = h.catalog.begin_write().await.unwrap();
    let spec = tenantgate_contract::host::DomainSpec::parse("globex.test").unwrap();
    tenantgate_catalog::store::tenants::delete_domain(&mut tx, globex, &spec)
        .await
        .unwrap();
    let change = tenantgate_catalog::store::tenants::tenant_change(
        &mut tx,
        globex,
        &["globex.test".to_string()],
    )
    .await
    .unwrap();
    tenantgate_catalog::store::changes::append(&mut tx, &change)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    wait_until(
        "globex's certificate is dropped",
        Duration::from_secs(10),
        || async {
            connect(&ca, tls, "globex.test", &[])
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    h.stop().await;
}

both_backends!(fallback_https_only_and_hsts);
async fn fallback_https_only_and_hsts(tc: TestCatalog) {
    let ca = TestCa::new("tenantgate test CA");
    // The operator's fallback (say, for hosts whose own certificate is not issued yet) names
    // the test hosts, so the client's verification passes and the test sees which was sent.
    let fallback = ca.issue(&["acme.test", "plain.test", "nobody.test"]);
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("edge.crt"), dir.path().join("edge.key"));
    std::fs::write(&cert_file, &fallback.chain_pem).unwrap();
    std::fs::write(&key_file, &fallback.key_pem).unwrap();
    let edge = format!(
        "tls_listen = \"127.0.0.1:0\"\ntls_fallback_cert = {:?}\ntls_fallback_key = {:?}",
        cert_file.display().to_string(),
        key_file.display().to_string()
    );
    let mut h = Harness::new(tc, &edge, "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    let acme = h
        .add_tenant(
            "acme",
            "shard-a",
            &["acme.test"],
            TenantStatus::Active,
            None,
        )
        .await;
    let plain = h
        .add_tenant(
            "plain",
            "shard-a",
            &["plain.test"],
            TenantStatus::Active,
            None,
        )
        .await;
    h.set_settings(acme, json!({"https_only": true, "hsts_max_age": 600}))
        .await;
    h.start().await;
    h.wait_ready().await;
    let tls = h.tls.unwrap();

    // Names without a certificate of their own get the fallback.
    let mut conn = connect(&ca, tls, "acme.test", &[]).await.unwrap();
    assert_eq!(presented(&conn), fallback.der);
    assert_eq!(
        presented(&connect(&ca, tls, "nobody.test", &[]).await.unwrap()),
        fallback.der
    );

    // Over TLS: proxied, with HSTS; x-forwarded-proto https.
    let (status, headers, body) = get(&mut conn, "acme.test", "/items?x=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "strict-transport-security"),
        Some("max-age=600")
    );
    assert_eq!(body["headers"]["x-forwarded-proto"][0], "https");

    // Plain HTTP of an https_only tenant: 308 to the same target over https, nothing proxied.
    let hits = backend.hits.load(std::sync::atomic::Ordering::Relaxed);
    let r = h.get("acme.test", "/items?x=1", &[]).await;
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://acme.test/items?x=1"));
    assert_eq!(r.header("strict-transport-security"), None);
    assert_eq!(
        backend.hits.load(std::sync::atomic::Ordering::Relaxed),
        hits
    );
    // ... except ACME HTTP-01 challenges, which the CA fetches over plain HTTP.
    let r = h
        .get("acme.test", "/.well-known/acme-challenge/tok", &[])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-forwarded-proto"), Some("http"));

    // A tenant without the settings: plain HTTP is proxied, TLS responses carry no HSTS.
    let r = h.get("plain.test", "/x", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-forwarded-proto"), Some("http"));
    let mut conn = connect(&ca, tls, "plain.test", &[]).await.unwrap();
    let (status, headers, _) = get(&mut conn, "plain.test", "/x").await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "strict-transport-security"), None);

    // Turning https_only off through the feed stops the redirect without a restart.
    h.set_settings(acme, json!({})).await;
    wait_until("https_only is lifted", Duration::from_secs(10), || async {
        (h.get("acme.test", "/items", &[]).await.status == 200).then_some(())
    })
    .await;
    let _ = plain;
    h.stop().await;
}
