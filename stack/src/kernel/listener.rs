//! Listening sockets: `SO_REUSEPORT` per worker on Linux, one shared listener otherwise.

use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

use super::AcceptMode;
use crate::error::TransportError;

/// Accept queue length requested from the kernel (capped by `net.core.somaxconn`).
const BACKLOG: i32 = 4096;

/// Bind one listener per worker (ReusePort) or a single one (Shared).
pub(super) fn bind(
    addr: SocketAddr,
    mode: AcceptMode,
    workers: usize,
) -> Result<Vec<TcpListener>, TransportError> {
    let count = if mode == AcceptMode::ReusePort {
        workers
    } else {
        1
    };
    let mut listeners = Vec::with_capacity(count);
    let mut bound = addr;
    for _ in 0..count {
        let l = bind_one(bound, mode == AcceptMode::ReusePort)
            .map_err(|source| TransportError::Bind { addr, source })?;
        // With port 0, later workers join the port the first one got.
        bound = l
            .local_addr()
            .map_err(|source| TransportError::Bind { addr, source })?;
        listeners.push(l);
    }
    Ok(listeners)
}

fn bind_one(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(target_os = "linux")]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = reuse_port;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}
