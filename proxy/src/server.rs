//! The Pingora server around the edge, the control runtime beside it, and how both stop.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use pingora::services::listening::Service;
use tenantgate_catalog::{feed, Catalog};
use tenantgate_config::Config;
use tenantgate_contract::labels::QuietSweeper;
use tokio_util::sync::CancellationToken;

use crate::edge::Edge;
use crate::error::ProxyError;
use crate::guard::{Guarded, HEADER_DEADLINE};
use crate::metrics::{self, EdgeMetrics};
use crate::pools::{self, Pools};
use crate::resolve::Resolver;

/// Longest grace period of an edge embedded in another process (`tenantgate dev`, tests), so
/// that stopping the process takes seconds, not the production grace period.
pub const EMBEDDED_MAX_GRACE: Duration = Duration::from_secs(2);

/// How long [`start_embedded`] waits for the proxy to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The upgrade socket and pid file of a standalone edge listening on `listen`:
/// `$TMPDIR/tenantgate-edge-<port>.upgrade.sock` and `$TMPDIR/tenantgate-edge-<port>.pid`.
/// The old and the new process of a graceful upgrade find each other through the socket.
pub fn upgrade_paths(listen: SocketAddr) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir();
    let port = listen.port();
    (
        dir.join(format!("tenantgate-edge-{port}.upgrade.sock")),
        dir.join(format!("tenantgate-edge-{port}.pid")),
    )
}

/// The control side of an edge: its runtime and what runs on it.
struct Control {
    runtime: tokio::runtime::Runtime,
    edge: Edge,
    stop: CancellationToken,
}

/// Bind-check the proxy address, bind the metrics listener, connect the catalog and start the
/// control tasks. Nothing is left running when this fails.
fn prepare(config: Arc<Config>, upgrade: bool) -> Result<Control, ProxyError> {
    // Pingora binds the proxy address itself, inside its runtime, where a failure only ends
    // its listener task; checking first turns the common case (address taken) into an error
    // here. During an upgrade the old process legitimately holds it.
    if !upgrade {
        std::net::TcpListener::bind(config.edge.listen).map_err(|source| ProxyError::Bind {
            addr: config.edge.listen,
            source,
        })?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tenantgate-edge-control")
        .enable_all()
        .build()
        .map_err(|e| ProxyError::Start(format!("control runtime: {e}")))?;
    let stop = CancellationToken::new();
    let started = runtime.block_on(async {
        let metrics_listener = bind_metrics(config.edge.metrics_listen, upgrade)?;
        let catalog = Catalog::connect(&config.catalog.url, config.catalog.max_connections).await?;
        let metrics = Arc::new(EdgeMetrics::new());
        let pools = Arc::new(Pools::default());
        let resolver = Resolver::start(&config, catalog.clone(), metrics.clone(), pools.clone());
        resolver.load_shards().await?;
        let (feed, _) = feed::follow(
            catalog,
            resolver.sink(),
            config.catalog.poll_interval,
            stop.clone(),
        );
        resolver.set_feed(feed);
        tokio::spawn(pools::health_checks(
            pools.clone(),
            config.edge.clone(),
            metrics.clone(),
            stop.clone(),
        ));
        let sweeping = resolver.clone();
        tokio::spawn(QuietSweeper::run(
            config.edge.tenant_label_idle,
            stop.clone(),
            move |sweeper| sweeping.sweep_quiet_tenants(sweeper),
        ));
        tokio::spawn(metrics::serve(
            metrics_listener,
            metrics.clone(),
            resolver.clone(),
            stop.clone(),
        ));
        Ok::<_, ProxyError>(Edge {
            draining: Arc::new(AtomicBool::new(false)),
            config: config.clone(),
            resolver,
            pools,
            metrics,
        })
    });
    match started {
        Ok(edge) => Ok(Control {
            runtime,
            edge,
            stop,
        }),
        Err(e) => {
            stop.cancel();
            runtime.shutdown_timeout(Duration::from_secs(1));
            Err(e)
        }
    }
}

/// The metrics listener. During an upgrade the old process still holds the address, so both
/// bind it with `SO_REUSEPORT` for the overlap.
fn bind_metrics(addr: SocketAddr, upgrade: bool) -> Result<tokio::net::TcpListener, ProxyError> {
    let err = |source| ProxyError::Bind { addr, source };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.set_reuseport(true).map_err(err)?;
    if !upgrade {
        // Without an upgrade in progress a second edge on the same address is a mistake:
        // probe with a plain socket, which fails if anyone is listening.
        std::net::TcpListener::bind(addr).map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(1024).map_err(err)
}

/// The Pingora server hosting `edge` on `config.edge.listen`.
///
/// `no_steal` selects Pingora's runtime of one single-threaded tokio runtime per thread (the
/// most requests per CPU second, measured). It is only safe with one Pingora server per
/// process: that runtime finds its threads through a `thread_local::ThreadLocal`, whose slots
/// outlive their threads, so a server started after another stopped in the same process can
/// pick up a dead runtime's handle and stop accepting at once. Embedded edges (tests, `dev`)
/// therefore use the work-stealing runtime.
fn build_server(
    config: &Config,
    edge: Edge,
    upgrade: bool,
    grace: Duration,
    no_steal: bool,
) -> Server {
    let (upgrade_sock, pid_file) = upgrade_paths(config.edge.listen);
    let conf = ServerConf {
        threads: config.edge.threads,
        work_stealing: !no_steal,
        grace_period_seconds: Some(grace.as_secs()),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: upgrade_sock.to_string_lossy().into_owned(),
        pid_file: pid_file.to_string_lossy().into_owned(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(Some(opt), conf);
    let proxy = pingora::proxy::http_proxy(&server.configuration, edge);
    let app = Guarded::new(proxy, HEADER_DEADLINE);
    let mut service = Service::new("tenantgate edge".to_string(), app);
    service.add_tcp(&config.edge.listen.to_string());
    server.add_service(service);
    server
}

/// Ends the embedded Pingora server when the caller's token is cancelled.
struct TokenSignal {
    token: CancellationToken,
    draining: Arc<AtomicBool>,
}

#[async_trait]
impl ShutdownSignalWatch for TokenSignal {
    async fn recv(&self) -> ShutdownSignal {
        self.token.cancelled().await;
        self.draining.store(true, Ordering::Relaxed);
        ShutdownSignal::GracefulTerminate
    }
}

/// The standalone edge's signals: SIGTERM stops gracefully, SIGQUIT upgrades, SIGINT stops at
/// once. The first two mark the edge as draining before Pingora acts on them.
struct UnixSignals {
    draining: Arc<AtomicBool>,
}

#[async_trait]
impl ShutdownSignalWatch for UnixSignals {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut quit), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::quit()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stopping");
            return ShutdownSignal::FastShutdown;
        };
        let received = tokio::select! {
            _ = quit.recv() => ShutdownSignal::GracefulUpgrade,
            _ = term.recv() => ShutdownSignal::GracefulTerminate,
            _ = int.recv() => return ShutdownSignal::FastShutdown,
        };
        tracing::info!(signal = ?received, "edge draining");
        self.draining.store(true, Ordering::Relaxed);
        received
    }
}

/// Start an embedded edge on a thread of its own. Preparing (catalog connection, runtimes)
/// happens on that thread too, so this may be called from inside an async runtime; it blocks
/// the caller until the proxy listens or start-up failed.
pub(crate) fn start_embedded(
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, ProxyError> {
    let grace = config.edge.grace_period.min(EMBEDDED_MAX_GRACE);
    let listen = config.edge.listen;
    // Also cancelled by us if the proxy never comes up, without touching the caller's token.
    let stop_server = shutdown.child_token();
    let server_token = stop_server.clone();
    let (prepared_tx, prepared_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("tenantgate-edge".into())
        .spawn(move || {
            let control = match prepare(config.clone(), false) {
                Ok(control) => {
                    let _ = prepared_tx.send(Ok(()));
                    control
                }
                Err(e) => {
                    let _ = prepared_tx.send(Err(e));
                    return;
                }
            };
            let Control {
                runtime,
                edge,
                stop,
            } = control;
            let draining = edge.draining.clone();
            let server = build_server(&config, edge, false, grace, false);
            server.run(RunArgs {
                shutdown_signal: Box::new(TokenSignal {
                    token: server_token,
                    draining,
                }),
            });
            stop.cancel();
            runtime.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(|e| ProxyError::Start(format!("edge thread: {e}")))?;
    match prepared_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            return Err(ProxyError::Start(
                "the edge thread ended while starting".into(),
            ))
        }
    }
    if let Err(e) = wait_listening(listen, &thread) {
        stop_server.cancel();
        let _ = thread.join();
        return Err(e);
    }
    Ok(thread)
}

pub(crate) fn run_standalone(config: Arc<Config>, upgrade: bool) -> Result<(), ProxyError> {
    let control = prepare(config.clone(), upgrade)?;
    let Control {
        runtime,
        edge,
        stop,
    } = control;
    let draining = edge.draining.clone();
    let mut server = build_server(&config, edge, upgrade, config.edge.grace_period, true);
    // With `upgrade`, this receives the listening socket from the old process.
    server.bootstrap();
    tracing::info!(listen = %config.edge.listen, metrics = %config.edge.metrics_listen, upgrade, "edge running");
    server.run(RunArgs {
        shutdown_signal: Box::new(UnixSignals { draining }),
    });
    stop.cancel();
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// Wait until the proxy accepts connections, or fail if its thread ended or time ran out.
fn wait_listening(listen: SocketAddr, thread: &JoinHandle<()>) -> Result<(), ProxyError> {
    let target = if listen.ip().is_unspecified() {
        SocketAddr::new(
            if listen.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            },
            listen.port(),
        )
    } else {
        listen
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if thread.is_finished() {
            return Err(ProxyError::Start("the proxy stopped while starting".into()));
        }
        if TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(ProxyError::Start(format!(
        "the proxy did not listen on {listen} within {START_TIMEOUT:?}"
    )))
}
