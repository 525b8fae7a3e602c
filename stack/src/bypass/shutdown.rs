//! Shutdown: a stopped worker first answers what is still arriving (a message sent before the
//! signal is echoed before the close), then asks every session to close, and leaves once they
//! have or the grace period is over.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::transmit::TxPath;
use crate::net::engine::Engine;
use crate::service::Service;

/// On stop, how long no packet may arrive before sessions are closed (what is still arriving was
/// sent before the stop and is answered first).
const DRAIN_QUIET: Duration = Duration::from_millis(5);
/// On stop, the longest the answering of what arrives may delay closing the sessions.
const DRAIN_MAX: Duration = Duration::from_millis(500);

/// Where a worker's shutdown stands.
#[derive(Debug, Default)]
pub struct Shutdown {
    /// Once the stop is seen: when, and when a packet last arrived since.
    draining: Option<(Instant, Instant)>,
    /// Once sessions were asked to close: when to give up on them.
    deadline: Option<Instant>,
}

impl Shutdown {
    /// One iteration's look: `received` packets arrived in it. Returns `true` when the worker
    /// should leave its loop (after sending what this iteration produced).
    pub fn step<S: Service>(
        &mut self,
        stop: &AtomicBool,
        received: usize,
        engine: &mut Engine<S>,
        tx: &mut TxPath<'_>,
        grace: Duration,
        now: Instant,
    ) -> bool {
        match self.deadline {
            None if stop.load(Ordering::Relaxed) => {
                let (since, last) = self.draining.get_or_insert((now, now));
                // Quiet means nothing arriving and nothing of ours held back for want of room:
                // a peer waiting for our ACKs cannot send what it has yet.
                if received > 0 || engine.waiting_to_send() > 0 {
                    *last = now;
                }
                if now.duration_since(*last) >= DRAIN_QUIET
                    || now.duration_since(*since) >= DRAIN_MAX
                {
                    tracing::debug!(open = engine.connections(), "DPDK worker shutting down");
                    engine.shutdown(&mut tx.sink(now), now);
                    self.deadline = Some(now + grace);
                }
                false
            }
            Some(deadline) => engine.connections() == 0 || now >= deadline,
            None => false,
        }
    }
}
