//! The connection API: what a transport asks of the protocol running on each connection.
//!
//! A transport owns sockets (or smoltcp sockets, on the DPDK path) and buffers; a [`Service`] owns
//! per-worker protocol state and, through [`Service::Conn`], per-connection state. The transport
//! hands over received bytes mutably (so a WebSocket decoder can unmask in place) and an output
//! buffer to append to; it writes that buffer once per loop iteration. Nothing here knows about
//! WebSocket, and nothing in a service knows about sockets.

use std::net::SocketAddr;
use std::time::Instant;

/// A connection's identity within the process: worker index and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// The worker that owns the connection.
    pub worker: u16,
    /// The worker-local slot (reused after the connection closes).
    pub slot: u32,
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.worker, self.slot)
    }
}

/// What the transport should do with a connection after a service call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep the connection open.
    Continue,
    /// Stop delivering input, flush the output, shut down the write side, wait briefly for the
    /// peer to close, then close.
    Close,
}

/// Why a connection ended, as reported to [`Service::on_close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCause {
    /// The service asked for it and the close completed.
    Done,
    /// The peer reset the connection or an I/O error occurred.
    Error,
    /// The worker stopped (shutdown deadline passed) with the connection still open.
    Shutdown,
}

/// A protocol served on connections; one instance per worker, never shared between threads.
pub trait Service {
    /// Per-connection state.
    type Conn;

    /// A connection was accepted.
    fn open(&mut self, id: ConnId, peer: SocketAddr, now: Instant) -> Self::Conn;

    /// Right after [`Service::open`]: what this side says first, appended to `out` (a client's
    /// request, or a server that speaks first). Servers that wait for the peer need not implement
    /// it.
    fn greet(&mut self, conn: &mut Self::Conn, out: &mut Vec<u8>, now: Instant) -> Verdict {
        let _ = (conn, out, now);
        Verdict::Continue
    }

    /// Bytes arrived. `input` may be modified in place; append replies to `out`.
    fn on_data(
        &mut self,
        conn: &mut Self::Conn,
        input: &mut [u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Verdict;

    /// The peer shut down its sending side (no more input will come).
    fn on_eof(&mut self, conn: &mut Self::Conn, out: &mut Vec<u8>, now: Instant) -> Verdict;

    /// The next instant at which [`Service::on_deadline`] must run, if any.
    fn deadline(&self, conn: &Self::Conn) -> Option<Instant>;

    /// A deadline returned by [`Service::deadline`] has passed.
    fn on_deadline(&mut self, conn: &mut Self::Conn, out: &mut Vec<u8>, now: Instant) -> Verdict;

    /// The server is shutting down: start closing (e.g. send close 1001).
    fn on_shutdown(&mut self, conn: &mut Self::Conn, out: &mut Vec<u8>, now: Instant) -> Verdict;

    /// The connection is gone; release its state.
    fn on_close(&mut self, conn: Self::Conn, cause: CloseCause);

    /// Once per transport loop iteration, after every connection's turn: a place to publish
    /// per-worker figures without doing it per message, or to take changed settings. Returns
    /// `true` when every connection's [`Service::deadline`] may have moved (a timeout was
    /// changed); the transport then re-arms them all.
    fn on_tick(&mut self, now: Instant) -> bool {
        let _ = now;
        false
    }
}
