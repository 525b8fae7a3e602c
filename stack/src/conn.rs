//! A connection's identity and what becomes of it: the vocabulary the connection API
//! ([`crate::service`]) and the connection driver ([`crate::driver`]) share.

/// A connection's identity within the process: worker, slot, and the slot's generation, so that
/// an id kept after its connection closed never reaches the slot's next connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// The worker that owns the connection.
    pub worker: u16,
    /// The worker-local slot (reused after the connection closes).
    pub slot: u32,
    /// Which of the slot's connections this is.
    pub generation: u32,
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

/// Why a push to a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The connection has closed (its slot may already serve another one).
    #[error("connection {0} is gone")]
    Stale(ConnId),
    /// The connection belongs to another worker: post to that worker instead.
    #[error("connection {0} belongs to another worker")]
    OtherWorker(ConnId),
    /// The connection does not take pushes now (its service has not opened it to them, e.g.
    /// during a handshake, or no longer does, e.g. while closing).
    #[error("connection {0} does not take pushes now")]
    NotAccepting(ConnId),
    /// The connection's unsent output is over its limit: the push was dropped (counted). Under
    /// the close policy the connection is closed if it stays over the limit.
    #[error("connection {0} is over its output limit")]
    Full(ConnId),
}
