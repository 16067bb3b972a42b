//! Addresses and stand-in servers for tests that need a peer: an upstream that answers, and an
//! address that refuses.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

/// An HTTP/1.1 server on 127.0.0.1:0 that answers every request with 200 `ok` (keep-alive),
/// standing in for an app backend where only the edge is under test. Runs until the process ends.
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
                        buf.drain(..end + 4);
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
