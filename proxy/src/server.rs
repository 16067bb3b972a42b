//! The Pingora server around the edge, the control runtime beside it, and how both stop.

use std::net::SocketAddr;
use std::os::fd::IntoRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{
    ListenFds, RunArgs, RuntimeOpts, Server, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch,
};
use pingora::services::listening::Service;
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use tenantgate_catalog::{feed, Catalog};
use tenantgate_config::{Config, LimitsBackend};
use tenantgate_contract::labels::QuietSweeper;
use tokio_util::sync::CancellationToken;

use crate::acme::Challenges;
use crate::error::EdgeError;
use crate::guard::{Guarded, HEADER_DEADLINE};
use crate::metrics::{self, EdgeMetrics};
use crate::on_demand::OnDemand;
use crate::phases::Edge;
use crate::pidfile;
use crate::pools::{self, Pools};
use crate::rate_limit::Limiters;
use crate::redis_limits::{Fleet, Settler};
use crate::resolve::Resolver;
use crate::tls::{Certificates, Fanout};

/// Longest grace period of an edge embedded in another process (`tenantgate dev`, tests), so
/// that stopping the process takes seconds, not the production grace period.
pub const EMBEDDED_MAX_GRACE: Duration = Duration::from_secs(2);

/// How long [`start_embedded`] waits for the Pingora server to take over the proxy socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses an edge listens on, as bound: where the configuration says port 0, the port the
/// system chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeAddrs {
    /// Tenant traffic (`edge.listen`).
    pub proxy: SocketAddr,
    /// `/metrics`, `/healthz` and `/readyz` (`edge.metrics_listen`).
    pub metrics: SocketAddr,
    /// Tenant traffic over TLS (`edge.tls_listen`), when configured.
    pub tls: Option<SocketAddr>,
}

/// The upgrade socket and pid file of a standalone edge listening on `listen` (the address it
/// bound, so with port 0 in the configuration the port it got):
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

/// The control side of an edge: its runtime and what runs on it, and the proxy socket waiting
/// to be handed to Pingora.
struct Control {
    runtime: tokio::runtime::Runtime,
    edge: Edge,
    stop: CancellationToken,
    /// The bound proxy socket; `None` during a graceful upgrade (the old process sends its own).
    proxy_socket: Option<std::net::TcpListener>,
    /// The bound TLS socket, as `proxy_socket`; `None` also without `edge.tls_listen`.
    tls_socket: Option<std::net::TcpListener>,
    /// The TLS listener's certificates, with `edge.tls_listen`.
    certificates: Option<Arc<Certificates>>,
    addrs: EdgeAddrs,
}

impl Control {
    /// The bound sockets for Pingora, keyed by the address their listener is configured with.
    fn sockets(&mut self) -> Vec<(String, std::net::TcpListener)> {
        let mut sockets = Vec::new();
        if let Some(socket) = self.proxy_socket.take() {
            sockets.push((self.addrs.proxy.to_string(), socket));
        }
        if let (Some(socket), Some(addr)) = (self.tls_socket.take(), self.addrs.tls) {
            sockets.push((addr.to_string(), socket));
        }
        sockets
    }
}

/// The per-tenant limiters of `edge.limits_backend`; with Redis, its settler is started (after
/// one connection attempt, so the edge starts settling or falling back, never undecided).
async fn start_limits(
    config: &Config,
    metrics: &EdgeMetrics,
    stop: &CancellationToken,
) -> Result<Arc<Limiters>, EdgeError> {
    let LimitsBackend::Redis(url) = &config.edge.limits_backend else {
        return Ok(Arc::new(Limiters::default()));
    };
    let fleet = Fleet::new(config.edge.fleet_size);
    let limiters = Arc::new(Limiters::shared(fleet.clone()));
    let mut settler = Settler::new(
        url,
        fleet,
        limiters.clone(),
        metrics.limits_fallback.clone(),
    )
    .map_err(EdgeError::Start)?;
    settler.connect().await;
    tokio::spawn(settler.run(stop.clone()));
    Ok(limiters)
}

/// Bind the proxy and metrics listeners, connect the catalog and start the control tasks.
/// Nothing is left running when this fails.
fn prepare(config: Arc<Config>, upgrade: bool) -> Result<Control, EdgeError> {
    // We bind the proxy socket and hand it to Pingora ([`HandingOver`]) rather than let Pingora
    // bind it inside its runtime, where a failure only ends its listener task: a taken address
    // is an error here, and with port 0 the caller learns the port before anything runs.
    // During an upgrade the old process holds the address and hands its socket over itself.
    let proxy_socket = if upgrade {
        None
    } else {
        Some(bind_proxy(config.edge.listen)?)
    };
    let proxy_addr = match &proxy_socket {
        Some(socket) => socket.local_addr().map_err(|source| EdgeError::Bind {
            addr: config.edge.listen,
            source,
        })?,
        None => config.edge.listen,
    };
    let tls_socket = match config.edge.tls_listen {
        Some(addr) if !upgrade => Some(bind_proxy(addr)?),
        _ => None,
    };
    let tls_addr = match (&tls_socket, config.edge.tls_listen) {
        (Some(socket), Some(addr)) => Some(
            socket
                .local_addr()
                .map_err(|source| EdgeError::Bind { addr, source })?,
        ),
        (_, configured) => configured,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tenantgate-edge-control")
        .enable_all()
        .build()
        .map_err(|e| EdgeError::Start(format!("control runtime: {e}")))?;
    let stop = CancellationToken::new();
    let started = runtime.block_on(async {
        let metrics_listener = bind_metrics(config.edge.metrics_listen, upgrade)?;
        let metrics_addr = metrics_listener
            .local_addr()
            .map_err(|source| EdgeError::Bind {
                addr: config.edge.metrics_listen,
                source,
            })?;
        let catalog = Catalog::connect(&config.catalog.url, config.catalog.max_connections).await?;
        let metrics = Arc::new(EdgeMetrics::new());
        let pools = Arc::new(Pools::default());
        let limiters = start_limits(&config, &metrics, &stop).await?;
        let resolver = Resolver::start(
            &config,
            catalog.clone(),
            metrics.clone(),
            pools.clone(),
            limiters,
        );
        resolver.load_shards().await?;
        let challenges = Challenges::start(catalog.clone());
        let mut sinks = vec![resolver.sink(), challenges.sink()];
        let certificates = match config.edge.tls_listen {
            Some(_) => {
                let on_demand =
                    config
                        .acme
                        .as_ref()
                        .and_then(|acme| acme.on_demand)
                        .map(|limits| {
                            OnDemand::start(
                                catalog.clone(),
                                resolver.clone(),
                                metrics.clone(),
                                limits,
                                i64::from(config.admin.job_max_attempts),
                            )
                        });
                let certs = Certificates::start(
                    catalog.clone(),
                    config.security.credential_key.clone(),
                    config.edge.tls_fallback.as_ref(),
                    on_demand,
                )?;
                sinks.push(certs.sink());
                Some(certs)
            }
            None => None,
        };
        tokio::spawn(resolver.usage().run(
            catalog.clone(),
            config.edge.usage_flush,
            config.catalog.query_timeout,
            stop.clone(),
        ));
        let (feed, _) = feed::follow(
            catalog,
            Arc::new(Fanout(sinks)),
            (&config.catalog).into(),
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
        let clients = Arc::new(crate::rate_limit::ClientLimiters::default());
        tokio::spawn(metrics::serve(
            metrics_listener,
            metrics.clone(),
            resolver.clone(),
            certificates.clone(),
            clients.clone(),
            stop.clone(),
        ));
        let edge = Edge {
            draining: Arc::new(AtomicBool::new(false)),
            config: config.clone(),
            resolver,
            pools,
            metrics,
            clients,
            challenges,
        };
        Ok::<_, EdgeError>((edge, metrics_addr, certificates))
    });
    match started {
        Ok((edge, metrics_addr, certificates)) => Ok(Control {
            runtime,
            edge,
            stop,
            proxy_socket,
            tls_socket,
            certificates,
            addrs: EdgeAddrs {
                proxy: proxy_addr,
                metrics: metrics_addr,
                tls: tls_addr,
            },
        }),
        Err(e) => {
            stop.cancel();
            runtime.shutdown_timeout(Duration::from_secs(1));
            Err(e)
        }
    }
}

/// The proxy socket, listening, ready for Pingora's (tokio's) accept loop.
fn bind_proxy(addr: SocketAddr) -> Result<std::net::TcpListener, EdgeError> {
    let err = |source| EdgeError::Bind { addr, source };
    // Like Pingora's own bind, with SO_REUSEADDR (std sets it on Unix); Pingora raises the
    // backlog when it takes the socket over.
    let socket = std::net::TcpListener::bind(addr).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    Ok(socket)
}

/// The metrics listener. During an upgrade the old process still holds the address, so both
/// bind it with `SO_REUSEPORT` for the overlap.
fn bind_metrics(addr: SocketAddr, upgrade: bool) -> Result<tokio::net::TcpListener, EdgeError> {
    let err = |source| EdgeError::Bind { addr, source };
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

/// The Pingora server hosting `edge` on `listen` (the bound proxy address), taking over
/// `socket` when there is one.
///
/// `no_steal` selects Pingora's runtime of one single-threaded tokio runtime per thread (the
/// most requests per CPU second, measured). It is only safe with one Pingora server per
/// process: that runtime finds its threads through a `thread_local::ThreadLocal`, whose slots
/// outlive their threads, so a server started after another stopped in the same process can
/// pick up a dead runtime's handle and stop accepting at once. Embedded edges (tests, `dev`)
/// therefore use the work-stealing runtime.
#[allow(clippy::too_many_arguments)]
fn build_server(
    config: &Config,
    edge: Edge,
    addrs: EdgeAddrs,
    certificates: Option<Arc<Certificates>>,
    handover: Handover,
    upgrade: bool,
    grace: Duration,
    no_steal: bool,
) -> Server {
    let (upgrade_sock, pid_file) = upgrade_paths(addrs.proxy);
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
    service.add_tcp(&addrs.proxy.to_string());
    if let (Some(addr), Some(certificates)) = (addrs.tls, certificates) {
        service.add_tls_with_settings(&addr.to_string(), None, tls_settings(certificates));
    }
    server.add_service(HandingOver {
        inner: service,
        handover,
    });
    server
}

/// Pingora's rustls settings of the TLS listener: the certificate by SNI from `certificates`,
/// HTTP/2 or HTTP/1.1 by ALPN.
///
/// Pingora 0.9.1 offers OpenSSL, BoringSSL, s2n and rustls. With rustls, dynamic selection is
/// a rustls `ResolvesServerCert` installed on the listener (its `certificate_callback` is an
/// OpenSSL-side hook); the resolver is synchronous and answers from memory, which is what the
/// catalog-backed map does. rustls also needs no system OpenSSL and shares its parsing with
/// the admin's upload checks.
fn tls_settings(certificates: Arc<Certificates>) -> TlsSettings {
    let mut settings =
        TlsSettings::intermediate("", "").expect("building TLS settings without files cannot fail");
    settings.set_cert_resolver(certificates);
    settings.enable_h2();
    settings
}

/// The bound sockets for Pingora, keyed by the address their service listens on, and whom to
/// tell once Pingora has them.
struct Handover {
    sockets: Vec<(String, std::net::TcpListener)>,
    taken: Option<mpsc::Sender<()>>,
}

/// A Pingora service that is given its listening socket instead of binding one.
///
/// Before binding an address, Pingora's listener looks it up in the server's table of listening
/// sockets (`ListenFds`), which a graceful upgrade fills with the sockets of the old process.
/// Putting our socket into that table under the service's address, just before the service
/// starts, makes Pingora take it over the same way. The table is also what a later graceful
/// upgrade sends to the next process, so the socket travels on from there.
struct HandingOver<S> {
    inner: S,
    handover: Handover,
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for HandingOver<S> {
    /// Runs when the server starts the service: puts the socket into `fds` (ownership passes to
    /// Pingora, which wraps the descriptor in its listener), reports it taken, then runs the
    /// wrapped service until shutdown.
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        // On Unix the server always passes its table; without one the socket would be closed
        // here and Pingora would bind the address itself.
        if let Some(fds) = &fds {
            let mut table = fds.lock();
            for (addr, socket) in std::mem::take(&mut self.handover.sockets) {
                table.add(addr, socket.into_raw_fd());
            }
        }
        if let Some(taken) = self.handover.taken.take() {
            let _ = taken.send(());
        }
        self.inner
            .start_service(fds, shutdown, listeners_per_fd, ready_notifier)
            .await
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        self.inner.on_startup_delay(time_waited)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
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
/// the caller until Pingora has taken over the proxy socket or start-up failed, and returns the
/// addresses the edge listens on.
pub(crate) fn start_embedded(
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> Result<(JoinHandle<()>, EdgeAddrs), EdgeError> {
    let grace = config.edge.grace_period.min(EMBEDDED_MAX_GRACE);
    // Also cancelled by us if the proxy never comes up, without touching the caller's token.
    let stop_server = shutdown.child_token();
    let server_token = stop_server.clone();
    let (prepared_tx, prepared_rx) = mpsc::channel();
    let (taken_tx, taken_rx) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("tenantgate-edge".into())
        .spawn(move || {
            let control = match prepare(config.clone(), false) {
                Ok(control) => {
                    let _ = prepared_tx.send(Ok(control.addrs));
                    control
                }
                Err(e) => {
                    let _ = prepared_tx.send(Err(e));
                    return;
                }
            };
            let mut control = control;
            let handover = Handover {
                sockets: control.sockets(),
                taken: Some(taken_tx),
            };
            let Control {
                runtime,
                edge,
                stop,
                certificates,
                addrs,
                ..
            } = control;
            let draining = edge.draining.clone();
            let server = build_server(
                &config,
                edge,
                addrs,
                certificates,
                handover,
                false,
                grace,
                false,
            );
            server.run(RunArgs {
                shutdown_signal: Box::new(TokenSignal {
                    token: server_token,
                    draining,
                }),
            });
            stop.cancel();
            runtime.shutdown_timeout(Duration::from_secs(2));
        })
        .map_err(|e| EdgeError::Start(format!("edge thread: {e}")))?;
    let addrs = match prepared_rx.recv() {
        Ok(Ok(addrs)) => addrs,
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(e);
        }
        Err(_) => {
            return Err(EdgeError::Start(
                "the edge thread ended while starting".into(),
            ))
        }
    };
    if let Err(e) = wait_taken(&taken_rx, &thread) {
        stop_server.cancel();
        let _ = thread.join();
        return Err(e);
    }
    Ok((thread, addrs))
}

/// Run the edge in the foreground; `on_listening` is told the bound addresses once the edge
/// owns its sockets (after a graceful upgrade's handover), before it serves.
pub(crate) fn run_standalone(
    config: Arc<Config>,
    launch: Launch,
    on_listening: impl FnOnce(EdgeAddrs),
) -> Result<(), EdgeError> {
    let Launch { upgrade, pid_file } = launch;
    let tls_port_zero = config.edge.tls_listen.is_some_and(|a| a.port() == 0);
    if upgrade
        && (config.edge.listen.port() == 0
            || config.edge.metrics_listen.port() == 0
            || tls_port_zero)
    {
        // The new process finds the old one by the proxy port (`upgrade_paths`) and takes over
        // its addresses: they must be the running edge's actual ones.
        return Err(EdgeError::Start(
            "--upgrade takes over a running edge's addresses: edge.listen and \
             edge.metrics_listen (and edge.tls_listen) must name their ports, not 0"
                .into(),
        ));
    }
    let mut control = prepare(config.clone(), upgrade)?;
    let handover = Handover {
        sockets: control.sockets(),
        taken: None,
    };
    let Control {
        runtime,
        edge,
        stop,
        certificates,
        addrs,
        ..
    } = control;
    let draining = edge.draining.clone();
    let mut server = build_server(
        &config,
        edge,
        addrs,
        certificates,
        handover,
        upgrade,
        config.edge.grace_period,
        true,
    );
    if let (true, Some(path)) = (upgrade, &pid_file) {
        // Ready to serve but for the sockets: now the old edge may hand them over.
        let old = pidfile::signal_running(path)?;
        tracing::info!(
            old_pid = old,
            "asked the running edge to hand over its sockets"
        );
    }
    // With `upgrade`, this receives the listening socket from the old process.
    server.bootstrap();
    // Written only now that this process owns the sockets; removed when it exits (dropped
    // after `run`), unless a newer edge has written its own pid meanwhile.
    let _pid_file = pid_file
        .as_deref()
        .map(pidfile::PidFile::write)
        .transpose()?;
    tracing::info!(listen = %addrs.proxy, metrics = %addrs.metrics, tls = ?addrs.tls, upgrade, "edge running");
    on_listening(addrs);
    server.run(RunArgs {
        shutdown_signal: Box::new(UnixSignals { draining }),
    });
    stop.cancel();
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// How a standalone edge is started (`tenantgate edge`).
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Take over the listening sockets of a running edge on the same addresses (Pingora
    /// graceful upgrade) instead of binding them. Default: false.
    pub upgrade: bool,
    /// Write this process's pid to this file once it owns the sockets, and remove it at exit
    /// (`--pid-file`). With `upgrade`, the running edge is the one this file names, and it is
    /// sent SIGQUIT by the new process once that is ready to take over. Default: none.
    pub pid_file: Option<PathBuf>,
}

/// Wait until the Pingora server has taken over the proxy socket, or fail if its thread ended
/// or time ran out. (The socket accepts connections from the moment it is bound; this makes
/// sure someone will answer them.)
fn wait_taken(taken: &mpsc::Receiver<()>, thread: &JoinHandle<()>) -> Result<(), EdgeError> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match taken.recv_timeout(Duration::from_millis(20)) {
            Ok(()) => return Ok(()),
            Err(RecvTimeoutError::Disconnected) => {
                return Err(EdgeError::Start("the proxy stopped while starting".into()))
            }
            Err(RecvTimeoutError::Timeout) if thread.is_finished() => {
                return Err(EdgeError::Start("the proxy stopped while starting".into()))
            }
            Err(RecvTimeoutError::Timeout) if Instant::now() >= deadline => {
                return Err(EdgeError::Start(format!(
                    "the proxy did not start within {START_TIMEOUT:?}"
                )))
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}
