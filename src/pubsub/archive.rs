//! What a node asks of its message archive (durable history in PostgreSQL:
//! [`super::postgres`]). No I/O here: requests go into a bounded queue that the archive thread
//! polls ([`super::broker::Poller`]); answers come back to the workers through their mailboxes.
//!
//! Every message is stored once, in batches, off the workers: by the home that numbered it
//! (a node alone, or one numbering itself while Redis is away), or by the Redis bridge for the
//! messages it published. A `history` request reaching past what a home retains is answered
//! from the archive; without Redis, a channel new to a node (after a restart, say) is synced
//! from it, so that its seqs continue after the last stored one.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use hioload_stack::ConnId;

use super::broker::BrokerState;
use super::protocol::RequestId;

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The channel.
    pub channel: Arc<str>,
    /// Its seq.
    pub seq: u64,
    /// The publishing user.
    pub user: Arc<str>,
    /// The text.
    pub text: Box<str>,
    /// Publish time (ms since the Unix epoch).
    pub ts_ms: u64,
    /// The Redis epoch it was numbered in (empty without Redis).
    pub epoch: Arc<str>,
}

/// A request to the archive.
#[derive(Debug)]
pub enum Request {
    /// Store a message (again is harmless: a channel's seq is stored once).
    Store(Row),
    /// Read a channel's last seq and newest messages for its home (a node without Redis).
    Sync {
        /// The channel.
        channel: Arc<str>,
    },
    /// Answer a `history` request with the stored messages below `before` (at most `limit`),
    /// followed by `newer`, the JSON of those the home still retains.
    History {
        /// The channel.
        channel: Box<str>,
        /// Only seqs below this.
        before: u64,
        /// How many stored messages at most.
        limit: usize,
        /// The asking session.
        conn: ConnId,
        /// Its request's id.
        id: Option<RequestId>,
        /// The messages the home retains, oldest first, as they go out.
        newer: Vec<String>,
    },
}

/// The archive's state and figures, shared with the workers and the admin endpoint.
#[derive(Debug, Default)]
pub struct ArchiveState {
    up: std::sync::atomic::AtomicBool,
    /// Messages stored (written, or found stored already).
    pub stored: AtomicU64,
    /// Messages waiting to be stored (a gauge).
    pub backlog: AtomicU64,
    /// Messages dropped, oldest first, because the backlog was full while PostgreSQL was away.
    pub dropped: AtomicU64,
    /// Requests refused because the archive's queue was full.
    pub queue_full: AtomicU64,
    /// Batches written.
    pub batches: AtomicU64,
    /// `history` requests answered from the archive.
    pub reads: AtomicU64,
    /// Times the connection was lost.
    pub disconnects: AtomicU64,
    /// Statements that failed.
    pub errors: AtomicU64,
}

impl ArchiveState {
    /// Whether the archive's connection is up.
    pub fn is_up(&self) -> bool {
        self.up.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Say whether the connection is up.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A worker's (or the Redis bridge's) end of the archive: cheap to clone.
#[derive(Debug, Clone)]
pub struct ArchiveLink {
    requests: Sender<Request>,
    state: Arc<ArchiveState>,
}

impl ArchiveLink {
    /// A link queueing into `requests`.
    pub fn new(requests: Sender<Request>, state: Arc<ArchiveState>) -> Self {
        Self { requests, state }
    }

    /// The archive's state.
    pub fn state(&self) -> &ArchiveState {
        &self.state
    }

    /// Queue `request` without waiting; a full queue gives it back (counted).
    pub fn send(&self, request: Request) -> Result<(), Request> {
        self.requests.try_send(request).map_err(|e| {
            BrokerState::add(&self.state.queue_full, 1);
            match e {
                TrySendError::Full(r) | TrySendError::Disconnected(r) => r,
            }
        })
    }
}
