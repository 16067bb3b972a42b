//! Helpers for end-to-end tests that run the real `tenantgate` binary: its path, and the test
//! kit's process helpers, which take that path.

#![allow(dead_code, unused_imports)] // not every test binary uses every helper

pub(crate) mod fleet;

pub(crate) use tenantgate_testkit::net::{ok_upstream, RefusedAddr};
pub(crate) use tenantgate_testkit::process::{get_with_host, ComponentProcess, DevProcess};
pub(crate) use tenantgate_testkit::wait_until;

/// The binary under test.
pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_tenantgate")
}

/// Every webhook delivery a [`webhook_receiver`] got: (`x-tenantgate-delivery`,
/// `x-tenantgate-event`), in arrival order.
pub(crate) type Deliveries = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A webhook receiver on 127.0.0.1:0 answering 200 to every `POST /hook`: its URL and what it
/// received.
pub(crate) async fn webhook_receiver() -> (String, Deliveries) {
    let deliveries = Deliveries::default();
    let seen = deliveries.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let seen = seen.clone();
            async move {
                let h = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                seen.lock()
                    .unwrap()
                    .push((h("x-tenantgate-delivery"), h("x-tenantgate-event")));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{hook}/hook"), deliveries)
}

/// `tenantgate edge --config CONFIG --pid-file PID_FILE [--upgrade]` with its upgrade socket in
/// `tmp` (the unit's private TMPDIR), once it logs `edge running`; with `upgrade`, that is once
/// it owns the sockets the edge named in `pid_file` handed over. This is what
/// `systemctl reload tenantgate-edge` runs (`deploy/systemd/tenantgate-edge-reload`).
pub(crate) async fn edge_process(
    config: &std::path::Path,
    pid_file: &std::path::Path,
    tmp: &std::path::Path,
    upgrade: bool,
) -> ComponentProcess {
    let mut args = vec![
        "edge".to_string(),
        "--config".into(),
        config.display().to_string(),
        "--pid-file".into(),
        pid_file.display().to_string(),
    ];
    if upgrade {
        args.push("--upgrade".into());
    }
    let tmp = tmp.display().to_string();
    tokio::task::spawn_blocking(move || {
        ComponentProcess::start_with_env(binary(), &args, &[("TMPDIR", &tmp)], "edge running")
    })
    .await
    .unwrap()
}
