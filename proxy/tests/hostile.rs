//! Hostile input, sent as raw bytes: the edge answers with the right 4xx, never forwards what it
//! must not, never panics, and keeps serving other requests afterwards.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tenantgate_testkit::edge::Harness;
use tenantgate_testkit::{both_backends, TestCatalog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Send `bytes` on a fresh connection and read until the edge closes it (or 5 s pass).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The edge may answer and close before it has read everything: ignore write errors.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn status(resp: &str) -> Option<u16> {
    resp.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

fn request(head: &str) -> Vec<u8> {
    format!("{head}Connection: close\r\n\r\n").into_bytes()
}

both_backends!(answers_hostile_input);
async fn answers_hostile_input(tc: TestCatalog) {
    let mut h = Harness::new(tc, "", "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    h.add_active_tenant("acme", "shard-a", &["acme.test", "app.test/beta"])
        .await;
    h.start().await;
    let edge = h.edge;

    let big = "a".repeat(40 * 1024);
    let many: String = (0..150).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_uri = format!("/{}", "a".repeat(10 * 1024));
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("no host", request("GET / HTTP/1.1\r\n"), &[400]),
        ("empty host", request("GET / HTTP/1.1\r\nHost: \r\n"), &[400]),
        ("two hosts", request("GET / HTTP/1.1\r\nHost: acme.test\r\nHost: other.test\r\n"), &[400]),
        ("host with slash", request("GET / HTTP/1.1\r\nHost: acme.test/../x\r\n"), &[400]),
        ("host with backslash", request("GET / HTTP/1.1\r\nHost: acme\\test\r\n"), &[400]),
        ("host with at", request("GET / HTTP/1.1\r\nHost: evil@acme.test\r\n"), &[400]),
        ("host with dots", request("GET / HTTP/1.1\r\nHost: acme..test\r\n"), &[400]),
        ("host with control byte", request("GET / HTTP/1.1\r\nHost: acme\x01.test\r\n"), &[400]),
        ("non-utf8 host", [b"GET / HTTP/1.1\r\nHost: acm\xff.test\r\nConnection: close\r\n\r\n".as_slice()].concat(), &[400]),
        ("non-utf8 header", [b"GET / HTTP/1.1\r\nHost: acme.test\r\nX-Note: \xc3\x28\r\nConnection: close\r\n\r\n".as_slice()].concat(), &[400]),
        ("underscore tenant header", request("GET / HTTP/1.1\r\nHost: acme.test\r\nX_Tenant_Id: x\r\n"), &[400]),
        ("underscore forwarded header", request("GET / HTTP/1.1\r\nHost: acme.test\r\nX_Forwarded_For: 1.2.3.4\r\n"), &[400]),
        ("oversized header", request(&format!("GET / HTTP/1.1\r\nHost: acme.test\r\nX-Big: {big}\r\n")), &[431]),
        ("too many headers", request(&format!("GET / HTTP/1.1\r\nHost: acme.test\r\n{many}")), &[431]),
        ("long uri", request(&format!("GET {long_uri} HTTP/1.1\r\nHost: acme.test\r\n")), &[414]),
        ("asterisk target", request("GET * HTTP/1.1\r\nHost: acme.test\r\n"), &[400]),
        ("space in path", request("GET /a b HTTP/1.1\r\nHost: acme.test\r\n"), &[400]),
        ("tab in path", request("GET /a\tb HTTP/1.1\r\nHost: acme.test\r\n"), &[400]),
        ("host with invalid label", request("GET / HTTP/1.1\r\nHost: -acme.test\r\n"), &[400]),
        ("host with bad port", request("GET / HTTP/1.1\r\nHost: acme.test:http\r\n"), &[400]),
        ("host with space", request("GET / HTTP/1.1\r\nHost: acme test\r\n"), &[400]),
        ("dot-dot path", request("GET /beta/../x HTTP/1.1\r\nHost: app.test\r\n"), &[400]),
        ("encoded dot-dot", request("GET /beta/%2e%2e/x HTTP/1.1\r\nHost: app.test\r\n"), &[400]),
        ("encoded slash", request("GET /beta%2F..%2Fx HTTP/1.1\r\nHost: app.test\r\n"), &[400]),
        ("te chunked twice", b"POST / HTTP/1.1\r\nHost: acme.test\r\nTransfer-Encoding: chunked, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n".to_vec(), &[400]),
        ("differing content lengths", b"POST / HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello!".to_vec(), &[400]),
        ("list-valued content length", b"POST / HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 5, 5\r\nConnection: close\r\n\r\nhello".to_vec(), &[400]),
        ("two equal content lengths", b"POST / HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello".to_vec(), &[400]),
        ("malformed request line", b"GARBAGE\r\n\r\n".to_vec(), &[400]),
        ("obs-fold", request("GET / HTTP/1.1\r\nHost: acme.test\r\nX-A: b\r\n c\r\n"), &[400]),
        ("upper-case host with trailing dot", request("GET / HTTP/1.1\r\nHost: ACME.Test.\r\n"), &[200]),
        ("host with port", request("GET / HTTP/1.1\r\nHost: acme.test:80\r\n"), &[200]),
        // Naming the edge's headers in Connection must not strip them on the way up (the app
        // answers 401 without a valid signature).
        (
            "connection naming internal headers",
            b"GET / HTTP/1.1\r\nHost: acme.test\r\nConnection: close, x-tenant-id, x-tenant-signature, x-request-id\r\n\r\n".to_vec(),
            &[200],
        ),
    ];
    for (what, bytes, expected) in &cases {
        let resp = raw(edge, bytes).await;
        let got = status(&resp);
        assert!(
            got.is_some_and(|s| expected.contains(&s)),
            "{what}: expected {expected:?}, got {got:?}: {}",
            resp.lines().next().unwrap_or("")
        );
        if got == Some(200) {
            // Only requests for acme.test (in any of its spellings) are answered: by acme.
            assert!(
                resp.contains(r#""x-tenant-slug":["acme"]"#),
                "{what}: {resp}"
            );
        }
        if got.is_some_and(|s| s >= 400) && resp.contains("application/json") {
            assert!(resp.contains(r#"{"error":{"code":"#), "{what}: {resp}");
        }
    }

    // Content-Length and Transfer-Encoding together, with a second request smuggled in the
    // body: either refused, or framed by TE with the connection closed; the app never sees the
    // smuggled request.
    for order in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
    ] {
        let smuggle = format!(
            "POST / HTTP/1.1\r\nHost: acme.test\r\n{order}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: acme.test\r\n\r\n"
        );
        let resp = raw(edge, smuggle.as_bytes()).await;
        let got = status(&resp);
        assert!(matches!(got, Some(400) | Some(200)), "CL+TE: {resp}");
        assert_eq!(
            resp.matches("HTTP/1.1 ").count(),
            1,
            "one response only: {resp}"
        );
    }
    let seen = backend.seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|r| r.contains("smuggled")),
        "smuggled request reached the app: {seen:?}"
    );
    assert!(!seen.iter().any(|r| r.contains("..")), "{seen:?}");

    // Only the three valid GETs (and at most the POSTs that may be answered) reached the app.
    assert_eq!(
        seen.iter().filter(|r| r.starts_with("GET")).count(),
        3,
        "{seen:?}"
    );
    assert!(
        seen.iter().all(|r| r == "GET /" || r == "POST /"),
        "{seen:?}"
    );
    // The edge still serves normally.
    let r = h.get("acme.test", "/after", &[]).await;
    assert_eq!(r.status, 200);
    let r = h.get("app.test", "/beta/ok", &[]).await;
    assert_eq!((r.status, r.body["path"].as_str()), (200, Some("/ok")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_hit_the_total_deadline() {
    let mut h = Harness::new(TestCatalog::sqlite(), "", "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    h.add_active_tenant("acme", "shard-a", &["acme.test"]).await;
    h.start().await;

    let began = Instant::now();
    let mut s = TcpStream::connect(h.edge).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: acme.test\r\n")
        .await
        .unwrap();
    // One header line a second, forever: the connection must be closed at the deadline.
    let closed_after = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let write = s.write_all(b"X-Slow: 1\r\n").await;
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_millis(10), s.read(&mut buf)).await;
        if write.is_err() || matches!(read, Ok(Ok(0)) | Ok(Err(_))) {
            break began.elapsed();
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "slow client still connected"
        );
    };
    let deadline = tenantgate_edge::guard::HEADER_DEADLINE;
    assert!(
        closed_after >= deadline - Duration::from_secs(1)
            && closed_after < deadline + Duration::from_secs(4),
        "closed after {closed_after:?}"
    );
    assert_eq!(backend.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
    // And the edge serves others.
    assert_eq!(h.get("acme.test", "/", &[]).await.status, 200);
}

/// An edge with one tenant `acme.test` on one backend; `extra_edge` as for [`Harness::new`].
async fn one_tenant(extra_edge: &str) -> (Harness, tenantgate_testkit::edge::TestBackend) {
    let mut h = Harness::new(TestCatalog::sqlite(), extra_edge, "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    h.add_active_tenant("acme", "shard-a", &["acme.test"]).await;
    h.start().await;
    (h, backend)
}

fn hits(backend: &tenantgate_testkit::edge::TestBackend) -> u64 {
    backend.hits.load(std::sync::atomic::Ordering::Relaxed)
}

/// Duplicate or list-valued Content-Length is refused at the edge with a JSON 400 and the
/// connection closed; the app never sees the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_content_length_never_reaches_the_app() {
    let (h, backend) = one_tenant("").await;
    for (what, cl) in [
        ("list", "Content-Length: 5, 5\r\n"),
        ("list without space", "Content-Length: 5,5\r\n"),
        ("two lines", "Content-Length: 5\r\nContent-Length: 5\r\n"),
    ] {
        let before = hits(&backend);
        // No `Connection: close`: the edge must close by itself.
        let resp = raw(
            h.edge,
            format!("POST / HTTP/1.1\r\nHost: acme.test\r\n{cl}\r\nhelloGET /next HTTP/1.1\r\nHost: acme.test\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&resp), Some(400), "{what}: {resp}");
        assert!(
            resp.contains(r#"{"error":{"code":"malformed_request""#),
            "{what}: {resp}"
        );
        assert!(
            resp.to_ascii_lowercase().contains("connection: close"),
            "{what}: {resp}"
        );
        assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "{what}: {resp}");
        assert_eq!(hits(&backend), before, "{what}: the app saw the request");
    }
    // One plain Content-Length still works.
    let resp = raw(
        h.edge,
        b"POST / HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(status(&resp), Some(200), "{resp}");
    assert!(resp.contains(r#""body_bytes":5"#), "{resp}");
}

/// The edge's header-count limit leaves room for the headers it adds: every request it
/// accepts fits the app's limit (hyper's 100), so the app never answers 431 (a bare, non-JSON
/// one) to what the edge let through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_leave_room_for_the_edges_headers() {
    let (h, backend) = one_tenant("").await;
    let limit = tenantgate_edge::headers::MAX_HEADERS;
    let (mut accepted, mut refused) = (0, 0);
    for total in 85..=101 {
        // Host and Connection, and the rest custom headers.
        let extra: String = (0..total - 2).map(|i| format!("X-H{i}: v\r\n")).collect();
        let resp = raw(
            h.edge,
            format!("GET / HTTP/1.1\r\nHost: acme.test\r\n{extra}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        match status(&resp) {
            Some(200) => {
                assert!(resp.contains(r#""backend":"a1""#), "{total}: {resp}");
                assert!(total <= limit, "{total} headers accepted, over {limit}");
                accepted += 1;
            }
            Some(431) => {
                // The edge's answer (JSON), not the app's.
                assert!(
                    resp.contains(r#"{"error":{"code":"headers_too_large""#),
                    "{total}: {resp}"
                );
                assert!(total > limit, "{total} headers refused, within {limit}");
                refused += 1;
            }
            other => panic!("{total} headers: {other:?}: {resp}"),
        }
    }
    println!("85..=101 client headers: {accepted} answered by the app, {refused} refused by the edge (limit {limit})");
    assert_eq!(accepted + refused, 17);
    assert_eq!(hits(&backend), accepted);
}

/// `edge.body_timeout_ms`: a body trickled in slower than the deadline, or stalled, is cut off
/// with 408 `body_timeout` (or a close) at about the deadline, and the edge keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_hit_the_body_deadline() {
    let (h, _backend) = one_tenant("body_timeout_ms = 1000").await;
    for (what, trickle) in [("trickled", true), ("stalled", false)] {
        let began = Instant::now();
        let s = TcpStream::connect(h.edge).await.unwrap();
        let (mut rd, mut wr) = s.into_split();
        wr.write_all(b"POST / HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 100\r\n\r\nab")
            .await
            .unwrap();
        // The input pattern, not a wait for a condition: one byte every 200 ms (the whole body
        // would take 20 s), or nothing more at all.
        let writer = tokio::spawn(async move {
            for _ in 0..100 {
                if !trickle {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if wr.write_all(b"x").await.is_err() {
                    break;
                }
            }
            wr
        });
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut out)).await;
        let took = began.elapsed();
        assert!(read.is_ok(), "{what}: still connected after 10 s");
        let resp = String::from_utf8_lossy(&out);
        if !resp.is_empty() {
            assert_eq!(status(&resp), Some(408), "{what}: {resp}");
            assert!(
                resp.contains(r#"{"error":{"code":"body_timeout""#),
                "{what}: {resp}"
            );
        }
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(4),
            "{what}: cut off after {took:?}"
        );
        println!(
            "{what} body: {} after {took:?}",
            status(&resp).map_or("closed".into(), |s| s.to_string())
        );
        writer.abort();
    }
    // A body that arrives in time passes, and the edge serves others.
    let resp = raw(
        h.edge,
        b"POST / HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(status(&resp), Some(200), "{resp}");
    assert_eq!(h.get("acme.test", "/", &[]).await.status, 200);
}

/// Several requests in one write, for two tenants, with a body and an edge refusal in between:
/// each is answered, in order, by the right tenant; none is swallowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let mut h = Harness::new(TestCatalog::sqlite(), "", "").await;
    let backend = h.backend("a1").await;
    h.add_shard("shard-a", &[backend.addr]).await;
    for slug in ["acme", "globex"] {
        let host = format!("{slug}.test");
        h.add_active_tenant(slug, "shard-a", &[host.as_str()]).await;
    }
    h.start().await;
    let pipelined = concat!(
        "GET /one HTTP/1.1\r\nHost: acme.test\r\n\r\n",
        "POST /two HTTP/1.1\r\nHost: globex.test\r\nContent-Length: 5\r\n\r\nhello",
        "GET /three HTTP/1.1\r\nHost: acme.test\r\n\r\n",
        "GET /unknown HTTP/1.1\r\nHost: nobody.test\r\n\r\n",
        "GET /four HTTP/1.1\r\nHost: globex.test\r\nConnection: close\r\n\r\n",
    );
    let resp = raw(h.edge, pipelined.as_bytes()).await;
    let answers: Vec<&str> = resp.split("HTTP/1.1 ").skip(1).collect();
    let expected = [
        ("/one", "acme", 0),
        ("/two", "globex", 5),
        ("/three", "acme", 0),
        ("/unknown", "", 0),
        ("/four", "globex", 0),
    ];
    assert_eq!(answers.len(), expected.len(), "{resp}");
    for (answer, (path, slug, body)) in answers.iter().zip(expected) {
        if slug.is_empty() {
            // The edge's own answer, in its place; the connection stays usable.
            assert!(answer.starts_with("404"), "{path}: {answer}");
            assert!(answer.contains(r#""code":"unknown_tenant""#), "{answer}");
            continue;
        }
        assert!(answer.starts_with("200"), "{path}: {answer}");
        let json: serde_json::Value =
            serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(json["path"], path, "{answer}");
        assert_eq!(json["headers"]["x-tenant-slug"][0], slug, "{answer}");
        assert_eq!(json["body_bytes"], body, "{answer}");
    }
    assert_eq!(
        backend.seen.lock().unwrap().as_slice(),
        ["GET /one", "POST /two", "GET /three", "GET /four"]
    );
}

/// Client-sent `X-Tenant-*`, `X-Forwarded-*`, `Forwarded`, `X-Real-IP` and `X-Request-Id`, in
/// any case and also named in `Connection`: the app receives only the edge's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_internal_headers_never_reach_the_app() {
    let (h, _backend) = one_tenant("").await;
    let resp = raw(
        h.edge,
        concat!(
            "GET /x HTTP/1.1\r\nHost: acme.test\r\n",
            "X-Tenant-Id: 00000000-0000-0000-0000-000000000001\r\nx-tenant-slug: globex\r\n",
            "X-TENANT-SHARD: shard-z\r\nX-Tenant-Epoch: 99\r\nX-Tenant-Signature: v2;kid=k1;ts=1;sig=x\r\n",
            "X-Tenant-Role: owner\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil.test\r\n",
            "X-Forwarded-Proto: https\r\nX-Forwarded-Prefix: /admin\r\nForwarded: for=6.6.6.6\r\n",
            "X-Real-IP: 6.6.6.6\r\nX-Request-Id: mine\r\n",
            // (Pingora refuses `Connection` naming X-Forwarded-*, with 400.)
            "Connection: close, x-tenant-id, x-tenant-slug, x-request-id\r\n\r\n",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status(&resp), Some(200), "{resp}");
    let body: serde_json::Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let got = &body["headers"];
    let one = |name: &str| {
        let values = got[name].as_array().cloned().unwrap_or_default();
        assert!(values.len() <= 1, "{name}: {values:?}");
        values.first().and_then(|v| v.as_str()).map(str::to_owned)
    };
    assert_eq!(one("x-tenant-slug").as_deref(), Some("acme"));
    assert_eq!(one("x-tenant-shard").as_deref(), Some("shard-a"));
    assert_ne!(one("x-tenant-epoch").as_deref(), Some("99"));
    assert_ne!(
        one("x-tenant-id").as_deref(),
        Some("00000000-0000-0000-0000-000000000001")
    );
    assert!(one("x-tenant-signature")
        .unwrap()
        .starts_with("v2;kid=k1;ts="));
    assert_eq!(one("x-tenant-role"), None);
    assert_eq!(one("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(one("x-forwarded-host").as_deref(), Some("acme.test"));
    assert_eq!(one("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(one("x-forwarded-prefix"), None);
    assert_eq!(one("forwarded"), None);
    assert_eq!(one("x-real-ip"), None);
    assert_ne!(one("x-request-id").as_deref(), Some("mine"));
}
