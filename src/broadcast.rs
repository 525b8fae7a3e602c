//! The broadcast handler: every message any session sends goes to every session of the
//! appliance, on every worker, the sender included.
//!
//! The message is encoded once, as a [`PreparedFrame`], where it arrives (and, with
//! permessage-deflate, compressed once): that worker sends it to its own sessions and posts it
//! (the same shared bytes) to every other worker, which sends it to theirs. A session receives the messages of one sender in the order they were sent.
//! What cannot be delivered is dropped and counted, never queued without bound: pushes to a
//! session over its output limit (the slow-consumer policy decides what else happens to it),
//! and posts to a worker whose mailbox is full.

use std::collections::HashMap;

use hioload_stack::ConnId;
use hioload_wsproto::{CloseCode, Message};

use hioload_wsproto::DeflateConfig;

use crate::handler::{Context, Handler, PreparedFrame, Preparer, WorkerContext};

/// One worker's broadcast handler: the sessions of its worker, and what it could not pass on.
#[derive(Debug)]
pub struct Broadcast {
    preparer: Preparer,
    sessions: Vec<ConnId>,
    /// Where each session is in `sessions` (for removal in O(1)).
    index: HashMap<ConnId, usize>,
    /// Messages another worker's mailbox refused (that worker's sessions missed them).
    unposted: u64,
}

impl Default for Broadcast {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Broadcast {
    /// A handler compressing each message once as `deflate` says (`None`: never).
    pub fn new(deflate: Option<&DeflateConfig>) -> Self {
        Self {
            preparer: Preparer::new(deflate),
            sessions: Vec::new(),
            index: HashMap::new(),
            unposted: 0,
        }
    }

    /// The sessions of this worker.
    pub fn sessions(&self) -> &[ConnId] {
        &self.sessions
    }

    /// Messages that could not be passed to another worker (its mailbox was full).
    pub fn unposted(&self) -> u64 {
        self.unposted
    }
}

impl Handler for Broadcast {
    type Message = PreparedFrame;

    fn on_ready(&mut self, conn: ConnId, _cx: &mut Context<'_, PreparedFrame>) {
        self.index.insert(conn, self.sessions.len());
        self.sessions.push(conn);
    }

    fn on_message(
        &mut self,
        conn: ConnId,
        message: Message<'_>,
        cx: &mut Context<'_, PreparedFrame>,
    ) {
        let frame = self.preparer.message(message);
        let mut w = cx.worker();
        for other in (0..w.workers()).filter(|&i| i != w.worker()) {
            if let Err(e) = w.post(other, frame.clone()) {
                self.unposted += 1;
                tracing::debug!(%conn, error = %e, "broadcast not passed on");
            }
        }
        w.broadcast(&self.sessions, &frame);
    }

    fn on_post(&mut self, frame: PreparedFrame, cx: &mut WorkerContext<'_, PreparedFrame>) {
        cx.broadcast(&self.sessions, &frame);
    }

    fn on_close(
        &mut self,
        conn: ConnId,
        _code: Option<CloseCode>,
        _cx: &mut WorkerContext<'_, PreparedFrame>,
    ) {
        if let Some(i) = self.index.remove(&conn) {
            self.sessions.swap_remove(i);
            if let Some(moved) = self.sessions.get(i) {
                self.index.insert(*moved, i);
            }
        }
    }
}
