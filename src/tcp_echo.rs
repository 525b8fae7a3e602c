//! Raw TCP echo as a transport service: bytes in, the same bytes out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hioload_stack::{CloseCause, ConnId, Service, Verdict};

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

    fn open(&mut self, _id: ConnId, _peer: SocketAddr, now: Instant) -> TcpEchoConn {
        TcpEchoConn { last_rx: now }
    }

    fn on_data(
        &mut self,
        conn: &mut TcpEchoConn,
        input: &mut [u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Verdict {
        conn.last_rx = now;
        out.extend_from_slice(input);
        Verdict::Continue
    }

    fn on_eof(&mut self, _conn: &mut TcpEchoConn, _out: &mut Vec<u8>, _now: Instant) -> Verdict {
        Verdict::Close
    }

    fn deadline(&self, conn: &TcpEchoConn) -> Option<Instant> {
        self.idle_timeout.map(|t| conn.last_rx + t)
    }

    fn on_deadline(
        &mut self,
        _conn: &mut TcpEchoConn,
        _out: &mut Vec<u8>,
        _now: Instant,
    ) -> Verdict {
        Verdict::Close
    }

    fn on_shutdown(
        &mut self,
        _conn: &mut TcpEchoConn,
        _out: &mut Vec<u8>,
        _now: Instant,
    ) -> Verdict {
        Verdict::Close
    }

    fn on_close(&mut self, _conn: TcpEchoConn, _cause: CloseCause) {}
}
