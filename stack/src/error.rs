//! Transport errors that reach the user: each names what failed and on what.

use std::net::SocketAddr;

/// A transport could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// Creating a poller, waker or thread failed.
    #[error("cannot start worker {worker}: {source}")]
    Worker {
        /// Worker index.
        worker: usize,
        /// The OS error.
        source: std::io::Error,
    },
    /// A CPU named by `--cpus` cannot be used by this process.
    #[error("CPU {cpu} is not available to this process (available: {available})")]
    CpuUnavailable {
        /// The CPU requested.
        cpu: usize,
        /// The CPUs this process may run on.
        available: String,
    },
    /// A worker thread panicked.
    #[error("worker {0} panicked")]
    WorkerPanicked(usize),
}
