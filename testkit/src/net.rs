//! Addresses and stand-in servers for tests that need a peer: an upstream that answers, and an
//! address that refuses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// How long [`ok_upstream`] takes to answer a request for `/slow…`.
pub const SLOW_ANSWER: Duration = Duration::from_secs(2);

/// An HTTP/1.1 server on 127.0.0.1:0 that answers every request with 200 `ok` (keep-alive),
/// standing in for an app backend where only the edge is under test; a request for `/slow…` is
/// answered after [`SLOW_ANSWER`] (a long request in flight). Runs until the process ends.
pub fn ok_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Answer each complete request head; requests here have no body.
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let slow = buf.starts_with(b"GET /slow");
                        buf.drain(..end + 4);
                        if slow {
                            std::thread::sleep(SLOW_ANSWER);
                        }
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
                        if stream.write_all(reply).is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// An address on 127.0.0.1 where connections are refused for as long as this value lives: a
/// backend that is down from the start.
///
/// The port is bound but not listening, so nothing answers it and no other socket (another
/// test's `bind("127.0.0.1:0")` included) can take it meanwhile, unlike a port found free and
/// released.
pub struct RefusedAddr {
    addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl RefusedAddr {
    /// Bind a fresh port without listening on it.
    pub fn new() -> RefusedAddr {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind a port");
        RefusedAddr {
            addr: socket.local_addr().expect("bound address"),
            _socket: socket,
        }
    }

    /// The refusing address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for RefusedAddr {
    fn default() -> Self {
        RefusedAddr::new()
    }
}

/// An address on 127.0.0.1 that never answers a connection attempt, as a host behind a
/// firewall that drops packets: connects hang until the client's own timeout.
///
/// A listening socket with a backlog of zero, whose one queue slot is taken by a connection
/// that is never accepted: the kernel then drops every further SYN.
pub struct BlackHole {
    addr: SocketAddr,
    _listener: tokio::net::TcpListener,
    _filler: std::net::TcpStream,
}

impl BlackHole {
    /// Bind a fresh port and fill its accept queue. Needs a Tokio runtime.
    pub fn new() -> BlackHole {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind a port");
        let addr = socket.local_addr().expect("bound address");
        let listener = socket.listen(0).expect("listen");
        let filler = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))
            .expect("the one queue slot takes a connection");
        BlackHole {
            addr,
            _listener: listener,
            _filler: filler,
        }
    }

    /// The address that swallows connection attempts.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for BlackHole {
    fn default() -> Self {
        BlackHole::new()
    }
}

/// What a [`FaultProxy`] does to the bytes it forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything at once.
    Pass,
    /// Hold each chunk sent towards the server this long before forwarding it: every round
    /// trip takes at least this much longer. Answers flow back undelayed.
    Delay(std::time::Duration),
    /// Forward nothing, in either direction, and answer nothing: a network partition without
    /// RST. Held bytes flow again once the fault is lifted, as TCP retransmission would
    /// deliver them after the partition heals. New connections are accepted and then held.
    Partition,
    /// The server is down: open connections are closed and new ones closed as soon as they
    /// are accepted.
    Down,
}

/// A TCP proxy on 127.0.0.1:0 in front of one server, whose faults a test switches at run time:
/// a slow network, a partition without RST, a connection that went silently half-open, or a
/// hard reset. Runs on its own runtime thread, so a test's own runtime cannot stall it.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: std::sync::Arc<FaultShared>,
    stop: tokio_util::sync::CancellationToken,
}

struct FaultShared {
    /// The fault for new connections and for every connection not frozen on its own.
    fault: tokio::sync::watch::Sender<Fault>,
    /// Each open connection's own fault, so a test can freeze only the ones open now.
    conns: std::sync::Mutex<Vec<ConnFault>>,
}

impl FaultShared {
    /// The connections still open (closed ones are dropped from the list here).
    fn open(&self) -> std::sync::MutexGuard<'_, Vec<ConnFault>> {
        let mut conns = self.conns.lock().unwrap();
        conns.retain(|conn| !conn.reset.is_cancelled());
        conns
    }
}

struct ConnFault {
    own: std::sync::Arc<tokio::sync::watch::Sender<Option<Fault>>>,
    reset: tokio_util::sync::CancellationToken,
}

impl FaultProxy {
    /// Start forwarding to `server`, without faults.
    pub fn start(server: SocketAddr) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("bound address");
        let shared = std::sync::Arc::new(FaultShared {
            fault: tokio::sync::watch::Sender::new(Fault::Pass),
            conns: std::sync::Mutex::new(Vec::new()),
        });
        let stop = tokio_util::sync::CancellationToken::new();
        let (task_shared, task_stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fault proxy runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (client, _) = tokio::select! {
                        _ = task_stop.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok(accepted) => accepted,
                            Err(_) => continue,
                        },
                    };
                    if *task_shared.fault.borrow() == Fault::Down {
                        continue;
                    }
                    let own = std::sync::Arc::new(tokio::sync::watch::Sender::new(None));
                    let reset = task_stop.child_token();
                    task_shared.open().push(ConnFault {
                        own: own.clone(),
                        reset: reset.clone(),
                    });
                    let global = task_shared.fault.subscribe();
                    tokio::spawn(async move {
                        let Ok(server) = tokio::net::TcpStream::connect(server).await else {
                            return;
                        };
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        let up = pump(
                            client_read,
                            server_write,
                            global.clone(),
                            own.subscribe(),
                            true,
                        );
                        let down = pump(server_read, client_write, global, own.subscribe(), false);
                        tokio::select! {
                            _ = reset.cancelled() => {}
                            _ = async { tokio::join!(up, down) } => {}
                        }
                        // Marks the connection closed, for `FaultShared::open`.
                        reset.cancel();
                    });
                }
            });
        });
        FaultProxy { addr, shared, stop }
    }

    /// Start in front of the server of a `postgres://` URL; returns the proxy and the URL that
    /// reaches the same database through it.
    pub fn in_front_of_url(url: &str) -> (FaultProxy, String) {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, authority),
        };
        let host_port = if host_port.contains(':') {
            host_port.to_string()
        } else {
            format!("{host_port}:5432")
        };
        let server = std::net::ToSocketAddrs::to_socket_addrs(&host_port)
            .expect("resolvable server")
            .next()
            .expect("an address");
        let proxy = FaultProxy::start(server);
        let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
        let proxied = format!("{scheme}://{userinfo}{}/{path}", proxy.addr());
        (proxy, proxied)
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Apply `fault` to every connection, open or new (lifting any freeze).
    pub fn set(&self, fault: Fault) {
        self.shared.fault.send_replace(fault);
        if fault == Fault::Down {
            self.reset_open_connections();
        }
        for conn in self.shared.open().iter() {
            conn.own.send_replace(None);
        }
    }

    /// Partition the connections open now, and only those: new connections pass. What a client
    /// sees when the server side of its pooled connections vanished without a RST (a server
    /// failover, a NAT that forgot them) while the server itself is reachable again.
    pub fn freeze_open_connections(&self) {
        for conn in self.shared.open().iter() {
            conn.own.send_replace(Some(Fault::Partition));
        }
    }

    /// Close every open connection at once (a server restart as the client sees it); new
    /// connections still pass.
    pub fn reset_open_connections(&self) {
        for conn in self.shared.open().drain(..) {
            conn.reset.cancel();
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copy `from` to `to` chunk by chunk, applying the connection's fault (its own if set, else
/// the proxy's) to each chunk before it is written.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut global: tokio::sync::watch::Receiver<Fault>,
    mut own: tokio::sync::watch::Receiver<Option<Fault>>,
    towards_server: bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        loop {
            let fault = (*own.borrow_and_update()).unwrap_or(*global.borrow_and_update());
            match fault {
                Fault::Pass => break,
                Fault::Delay(delay) if towards_server => {
                    // A fault lifted meanwhile lets the chunk through at once.
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => break,
                        changed = own.changed() => if changed.is_err() { return },
                        changed = global.changed() => if changed.is_err() { return },
                    }
                }
                Fault::Delay(_) => break,
                Fault::Down => return,
                Fault::Partition => {
                    // Wait for either fault to change, then look again.
                    tokio::select! {
                        changed = own.changed() => if changed.is_err() { return },
                        changed = global.changed() => if changed.is_err() { return },
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
