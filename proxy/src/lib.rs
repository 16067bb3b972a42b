//! The tenantgate edge: a Pingora proxy that routes each request to its tenant's shard.
//!
//! Start-up, in order: bind the proxy and metrics listeners (so a taken address is an error
//! before anything runs, and port 0 yields the port the system chose), start the *control* runtime (catalog pool, feed
//! follower, health checks, metrics listener), load the shard pools, then hand the proxy to a
//! Pingora server running on its own runtimes, which takes over the bound proxy socket. The request path never waits on catalog I/O for a
//! known host; misses are spawned onto the control runtime and awaited across runtimes.
//!
//! Modules, one per concern: [`acme`] (HTTP-01 answers), [`headers`] (request checks, upstream headers), [`resolve`] (route
//! cache over the catalog), [`rate_limit`], [`redis_limits`] (fleet-wide limits settled with
//! Redis off the request path), [`pools`] (shard backends and
//! health), [`metrics`], [`phases`] (the Pingora phase hooks), [`guard`] (total header deadline),
//! `server` (Pingora server and shutdown), `pidfile` (`--pid-file`, for supervisors), [`tls`]
//! (certificates by SNI), [`on_demand`] (issuance at the first TLS handshake), [`usage`] (usage
//! per tenant, flushed to the catalog). The status gate is the tenant contract's
//! `TenantStatus::admission`, shared with the admin API and the app.

pub mod acme;
pub mod error;
pub mod guard;
pub mod headers;
pub mod metrics;
pub mod on_demand;
pub mod phases;
mod pidfile;
pub mod pools;
pub mod rate_limit;
pub mod redis_limits;
pub mod resolve;
mod server;
pub mod tls;
pub mod usage;

pub use error::{EdgeError, Reject};
pub use server::{upgrade_paths, EdgeAddrs, Launch, EMBEDDED_MAX_GRACE};

use std::sync::Arc;

use tenantgate_config::Config;
use tokio_util::sync::CancellationToken;

/// A running edge inside this process.
pub struct EdgeHandle {
    thread: std::thread::JoinHandle<()>,
    addrs: EdgeAddrs,
}

impl EdgeHandle {
    /// The addresses the edge listens on: with port 0 in the configuration, the ports it got.
    pub fn addrs(&self) -> EdgeAddrs {
        self.addrs
    }

    /// Wait until the edge has stopped (after `shutdown` was cancelled): in-flight requests were
    /// given the grace period, the listeners are closed and the control runtime is down.
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// Start the edge on its own threads: listens on `config.edge.listen` (proxy) and
/// `config.edge.metrics_listen` (`/metrics`, `/healthz`, `/readyz`), follows the catalog, and
/// stops gracefully when `shutdown` is cancelled (grace period `edge.grace_period`, at most
/// [`EMBEDDED_MAX_GRACE`] in this embedded mode).
///
/// Either address may have port 0: the system picks a free port and [`EdgeHandle::addrs`]
/// says which, so that tests and `tenantgate dev` never race for a port.
///
/// Returns once the proxy accepts connections. A taken address, an unreachable catalog or a
/// proxy that does not come up is an error, never a panic or an exit.
pub fn start(config: Arc<Config>, shutdown: CancellationToken) -> Result<EdgeHandle, EdgeError> {
    let (thread, addrs) = server::start_embedded(config, shutdown)?;
    Ok(EdgeHandle { thread, addrs })
}

/// Run the edge in the foreground until a signal stops it (`tenantgate edge`).
///
/// `on_listening` is called with the bound addresses (see [`start`] for port 0) once the edge
/// owns its listening sockets, before it serves; the edge also logs them (`edge running`).
///
/// - SIGTERM: stop accepting, give in-flight requests `edge.grace_period`, exit.
/// - SIGINT: exit at once.
/// - SIGQUIT: graceful upgrade. A new process started with [`Launch::upgrade`] (`tenantgate
///   edge --upgrade`) waits on the upgrade socket ([`upgrade_paths`]); SIGQUIT to the old
///   process hands it the listening socket, then the old one drains and exits. With
///   [`Launch::pid_file`] the new process sends that SIGQUIT itself, to the pid in the file,
///   once it is ready, and then records its own pid there (what `systemctl reload` runs).
///
/// A graceful upgrade needs the running edge's actual ports in `edge.listen` and
/// `edge.metrics_listen`; port 0 there is an error with `upgrade`.
pub fn run_standalone(
    config: Arc<Config>,
    launch: Launch,
    on_listening: impl FnOnce(EdgeAddrs),
) -> Result<(), EdgeError> {
    server::run_standalone(config, launch, on_listening)
}
