//! Raw TCP echo as a transport service: bytes in, the same bytes out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hioload_stack::{ConnCtx, ConnId, Service, Verdict};

/// TCP echo on one worker.
#[derive(Debug, Clone)]
pub struct TcpEchoService {
    idle_timeout: Option<Duration>,
}

/// Per-connection state: when the peer last sent something.
#[derive(Debug)]
pub struct TcpEchoConn {
    last_rx: Instant,
}

impl TcpEchoService {
    /// Echo service closing connections idle for `idle_timeout` (if set).
    pub fn new(idle_timeout: Option<Duration>) -> Self {
        Self { idle_timeout }
    }
}

impl Service for TcpEchoService {
    type Conn = TcpEchoConn;
    type Message = ();

    fn open(&mut self, _id: ConnId, _peer: SocketAddr, cx: &mut ConnCtx<'_, ()>) -> TcpEchoConn {
        TcpEchoConn { last_rx: cx.now() }
    }

    fn on_data(
        &mut self,
        conn: &mut TcpEchoConn,
        input: &mut [u8],
        cx: &mut ConnCtx<'_, ()>,
    ) -> Verdict {
        conn.last_rx = cx.now();
        // Where the transport allows it, a large read goes back out from its own buffer.
        if input.len() < crate::websocket::INPUT_REF_MIN || !cx.put_input(0, input.len()) {
            cx.out().put(input);
        }
        Verdict::Continue
    }

    fn deadline(&self, conn: &TcpEchoConn) -> Option<Instant> {
        self.idle_timeout.map(|t| conn.last_rx + t)
    }

    fn on_deadline(&mut self, _conn: &mut TcpEchoConn, _cx: &mut ConnCtx<'_, ()>) -> Verdict {
        Verdict::Close
    }
}
