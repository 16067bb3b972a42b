//! Client mistakes are not errors: the real binary's log during a run of hostile and broken
//! requests holds no ERROR line (Pingora writes those at error level; the edge demotes them).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{binary, DevProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Write `bytes`, then read what comes back for at most 3 s, or not at all (`read: false`:
/// the client goes away without waiting).
async fn send(edge: SocketAddr, bytes: &[u8], read: bool) -> String {
    let mut s = TcpStream::connect(edge).await.unwrap();
    let _ = s.write_all(bytes).await;
    if !read {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn client_mistakes_are_not_logged_as_errors() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut dev =
        DevProcess::start_with_stderr(binary(), &dir.path().join("data"), &[], log.into());
    let edge = dev.addr("edge");

    let big = "a".repeat(40 * 1024);
    let many: String = (0..300).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("malformed request line", b"GARBAGE\r\n\r\n".to_vec(), true),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: acme.localhost\rX: y\r\n\r\n".to_vec(), true),
        ("NUL in header", b"GET / HTTP/1.1\r\nHost: acme.localhost\r\nX: a\0b\r\n\r\n".to_vec(), true),
        ("oversized header", format!("GET / HTTP/1.1\r\nHost: acme.localhost\r\nX-Big: {big}\r\n\r\n").into_bytes(), true),
        ("too many headers", format!("GET / HTTP/1.1\r\nHost: acme.localhost\r\n{many}\r\n").into_bytes(), true),
        ("gone mid-header", b"GET / HTTP/1.1\r\nHost: acme.loc".to_vec(), false),
        ("gone mid-body", b"POST /api/items HTTP/1.1\r\nHost: acme.localhost\r\nContent-Length: 100\r\n\r\n{\"na".to_vec(), false),
        ("gone before the answer", b"GET /whoami HTTP/1.1\r\nHost: acme.localhost\r\n\r\n".to_vec(), false),
        ("duplicate content length", b"POST / HTTP/1.1\r\nHost: acme.localhost\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx".to_vec(), true),
        ("smuggling", b"POST / HTTP/1.1\r\nHost: acme.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /x HTTP/1.1\r\n\r\n".to_vec(), true),
        ("unknown host", b"GET / HTTP/1.1\r\nHost: nobody.localhost\r\nConnection: close\r\n\r\n".to_vec(), true),
    ];
    for round in 0..3 {
        for (what, bytes, read) in &cases {
            let answer = send(edge, bytes, *read).await;
            if *read && round == 0 {
                // Every refusal the edge can still write is an answer, never a hang.
                assert!(
                    answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
                    "{what}: {answer}"
                );
            }
        }
    }
    // The edge still serves.
    let ok = send(
        edge,
        b"GET /whoami HTTP/1.1\r\nHost: acme.localhost\r\nConnection: close\r\n\r\n",
        true,
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let status = dev.stop("TERM", Duration::from_secs(10));
    assert!(status.success(), "dev exited with {status}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    let access = text
        .lines()
        .filter(|l| l.contains("tenantgate::access"))
        .count();
    println!(
        "{} hostile requests: {} log lines, {} access lines, {} ERROR lines",
        cases.len() * 3,
        text.lines().count(),
        access,
        errors.len()
    );
    assert!(access > 0, "the log was not captured: {text}");
    assert!(
        errors.is_empty(),
        "client mistakes logged as errors:\n{}",
        errors.join("\n")
    );
}
