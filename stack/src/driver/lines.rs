//! Every connection's output line on one worker: its [`Output`], the generation that makes its
//! [`ConnId`]s checkable, whether it takes pushes, and the push limit and slow-consumer policy.
//!
//! Kept apart from the connections' service state so that a service, while it holds one
//! connection's state, can still write to any other connection (a broadcast).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::bufpool::BufPool;
use crate::conn::{ConnId, PushError};
use crate::output::Output;
use crate::timer::{Clock, Millis};

/// What happens to a connection that a push would take over its output limit. Either way the
/// push is dropped (and counted), so memory stays bounded whatever the fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumer {
    /// Only drop: the connection stays, and misses what it could not take.
    Drop,
    /// Drop, and close the connection ([`crate::Service::on_slow`]) if it is still over the
    /// limit after `grace`.
    Close {
        /// How long a connection may stay over its limit.
        grace: Duration,
    },
}

/// Counters of pushes on one worker.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    /// Pushes queued.
    pub queued: u64,
    /// Pushes dropped because the connection was over its output limit.
    pub dropped: u64,
    /// Pushes to connections that had closed.
    pub stale: u64,
    /// Pushes refused because the connection did not take pushes (or belongs to another worker).
    pub refused: u64,
}

/// One connection's line.
#[derive(Debug, Default)]
pub(crate) struct Line {
    pub(crate) out: Output,
    pub(crate) generation: u32,
    /// The service knows the connection (opened and not yet closed).
    pub(crate) live: bool,
    pub(crate) pushable: bool,
    /// The service's tag for the connection ([`crate::ConnCtx::set_tag`]).
    pub(crate) tag: u8,
    /// In the dirty list.
    pub(crate) dirty: bool,
    /// During this call the service may queue references to the input
    /// ([`crate::ConnCtx::put_input`]).
    pub(crate) input_refs: bool,
    /// Under the close policy: the connection refused a push and has not caught up since
    /// (since when: [`Lines::slow_since`]).
    pub(crate) slow: bool,
}

/// The lines of one worker's connections, indexed by slot.
#[derive(Debug)]
pub(crate) struct Lines {
    pub(crate) lines: Vec<Line>,
    /// Slots written to since the transport last flushed.
    pub(crate) dirty: Vec<u32>,
    pub(crate) pool: BufPool,
    /// Unsent output beyond which pushes are dropped (the backpressure limit).
    pub(crate) limit: usize,
    pub(crate) policy: SlowConsumer,
    /// Slots that went over their limit under the close policy since the driver last looked.
    pub(crate) newly_slow: Vec<u32>,
    /// Since when each slow connection has been so (few at a time: kept out of the lines, which
    /// every connection has).
    pub(crate) slow_since: HashMap<u32, Millis>,
    /// Pushes dropped per connection, for those that had any (probes show them).
    pub(crate) drops: HashMap<u32, u32>,
    pub(crate) stats: PushStats,
    pub(crate) clock: Clock,
    pub(crate) worker: u16,
}

impl Lines {
    pub(crate) fn new(worker: u16, limit: usize, policy: SlowConsumer, clock: Clock) -> Self {
        Self {
            lines: Vec::new(),
            dirty: Vec::new(),
            // Free output buffers a worker keeps for reuse, and their total size.
            pool: BufPool::new(1024, 32 << 20),
            limit,
            policy,
            newly_slow: Vec::new(),
            slow_since: HashMap::new(),
            drops: HashMap::new(),
            stats: PushStats::default(),
            clock,
            worker,
        }
    }

    /// Make room for slot `slot` and start its next connection's generation.
    pub(crate) fn start(&mut self, slot: usize, generation: u32) {
        if slot >= self.lines.len() {
            self.lines.resize_with(slot + 1, Line::default);
        }
        let line = &mut self.lines[slot];
        line.generation = generation;
        line.live = false;
        line.pushable = false;
        line.tag = 0;
        self.forget(slot);
    }

    /// Drop what is kept on the side for a connection that is gone.
    pub(crate) fn forget(&mut self, slot: usize) {
        self.clear_slow(slot);
        self.drops.remove(&(slot as u32));
    }

    /// Pushes dropped for `slot`'s connection.
    pub(crate) fn dropped(&self, slot: usize) -> u32 {
        self.drops.get(&(slot as u32)).copied().unwrap_or(0)
    }

    /// The slot's generation.
    pub(crate) fn generation(&self, slot: u32) -> u32 {
        self.lines.get(slot as usize).map_or(0, |l| l.generation)
    }

    /// The line of `id`, if it is a live connection of this worker.
    pub(crate) fn live(&self, id: ConnId) -> Option<&Line> {
        self.lines
            .get(id.slot as usize)
            .filter(|l| id.worker == self.worker && l.live && l.generation == id.generation)
    }

    /// A connection's output, with storage lent from the pool.
    #[inline]
    pub(crate) fn out(&mut self, slot: u32) -> &mut Output {
        let line = &mut self.lines[slot as usize];
        line.out.lend(&mut self.pool);
        &mut line.out
    }

    pub(crate) fn set_pushable(&mut self, slot: u32, yes: bool) {
        if let Some(l) = self.lines.get_mut(slot as usize) {
            l.pushable = yes;
        }
    }

    /// Put `slot` on the dirty list if it has output and is not there yet.
    #[inline]
    pub(crate) fn mark(&mut self, slot: usize) {
        let line = &mut self.lines[slot];
        if !line.dirty && !line.out.is_empty() {
            line.dirty = true;
            self.dirty.push(slot as u32);
        }
    }

    /// Room for `len` bytes pushed to `to`: checks the id, the push gate and the limit, counts,
    /// and marks the line dirty. With `owned`, the output gets a buffer to copy into (a push by
    /// reference needs none).
    pub(crate) fn reserve(
        &mut self,
        to: ConnId,
        len: usize,
        owned: bool,
        now: Instant,
    ) -> Result<&mut Output, PushError> {
        if to.worker != self.worker {
            self.stats.refused += 1;
            return Err(PushError::OtherWorker(to));
        }
        let slot = to.slot as usize;
        let Some(line) = self
            .lines
            .get_mut(slot)
            .filter(|l| l.live && l.generation == to.generation)
        else {
            self.stats.stale += 1;
            return Err(PushError::Stale(to));
        };
        if !line.pushable {
            self.stats.refused += 1;
            return Err(PushError::NotAccepting(to));
        }
        let unsent = line.out.unsent();
        // A frame larger than the limit still reaches a connection that has nothing queued.
        if unsent > 0 && unsent + len > self.limit {
            self.stats.dropped += 1;
            let count = self.drops.entry(to.slot).or_insert(0);
            if *count == 0 {
                tracing::debug!(
                    worker = self.worker,
                    conn = to.slot,
                    unsent,
                    limit = self.limit,
                    "output over its limit: pushes to this connection are dropped"
                );
            }
            *count = count.saturating_add(1);
            if matches!(self.policy, SlowConsumer::Close { .. }) && !line.slow {
                line.slow = true;
                self.slow_since.insert(to.slot, self.clock.floor(now));
                self.newly_slow.push(to.slot);
            }
            return Err(PushError::Full(to));
        }
        self.stats.queued += 1;
        if !line.dirty {
            line.dirty = true;
            self.dirty.push(to.slot);
        }
        if owned {
            line.out.lend(&mut self.pool);
        }
        Ok(&mut line.out)
    }

    /// When the close policy gives up on a slow connection, if it is one.
    pub(crate) fn slow_deadline(&self, slot: usize) -> Option<Millis> {
        let SlowConsumer::Close { grace } = self.policy else {
            return None;
        };
        if !self.lines.get(slot)?.slow {
            return None;
        }
        let since = self.slow_since.get(&(slot as u32))?;
        Some(since.saturating_add(grace.as_millis() as Millis))
    }

    /// The connection is no longer slow (it caught up, or it was dealt with).
    pub(crate) fn clear_slow(&mut self, slot: usize) {
        if let Some(l) = self.lines.get_mut(slot) {
            if std::mem::take(&mut l.slow) {
                self.slow_since.remove(&(slot as u32));
            }
        }
    }

    /// After a write: a slow connection whose output has drained to half its limit has caught
    /// up, and is no longer slow. (Half, not the limit itself: pushes are refused before they
    /// would cross the limit, so a consumer that never reads sits just under it.)
    pub(crate) fn check_recovered(&mut self, slot: usize) {
        let caught_up = self
            .lines
            .get(slot)
            .is_some_and(|l| l.slow && l.out.unsent() <= self.limit / 2);
        if caught_up {
            self.clear_slow(slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::Prepared;

    fn lines(policy: SlowConsumer) -> Lines {
        let mut l = Lines::new(0, 100, policy, Clock::new());
        for slot in 0..3 {
            l.start(slot, slot as u32 + 10);
            l.lines[slot].live = true;
            l.lines[slot].pushable = true;
        }
        l
    }

    fn id(slot: u32) -> ConnId {
        ConnId {
            worker: 0,
            slot,
            generation: slot + 10,
        }
    }

    #[test]
    fn a_reused_slot_starts_without_the_old_tag() {
        let mut l = lines(SlowConsumer::Drop);
        l.lines[2].tag = 15;
        assert_eq!(l.live(id(2)).map(|line| line.tag), Some(15));
        l.start(2, 40);
        assert_eq!(l.lines[2].tag, 0);
    }

    #[test]
    fn stale_ids_are_refused_and_counted() {
        let mut l = lines(SlowConsumer::Drop);
        let now = Instant::now();
        assert!(l.reserve(id(1), 5, true, now).is_ok());
        // The connection closes and its slot gets a new one.
        l.start(1, 99);
        l.lines[1].live = true;
        l.lines[1].pushable = true;
        assert_eq!(
            l.reserve(id(1), 5, true, now).err(),
            Some(PushError::Stale(id(1)))
        );
        assert_eq!(
            l.reserve(id(7), 5, true, now).err(),
            Some(PushError::Stale(id(7))),
            "never opened"
        );
        let other = ConnId { worker: 1, ..id(0) };
        assert_eq!(
            l.reserve(other, 5, true, now).err(),
            Some(PushError::OtherWorker(other))
        );
        assert_eq!((l.stats.stale, l.stats.refused, l.stats.queued), (2, 1, 1));
        assert!(
            l.lines[1].out.is_empty(),
            "nothing reached the slot's new connection"
        );
    }

    #[test]
    fn closed_gates_refuse() {
        let mut l = lines(SlowConsumer::Drop);
        l.set_pushable(2, false);
        assert_eq!(
            l.reserve(id(2), 1, true, Instant::now()).err(),
            Some(PushError::NotAccepting(id(2)))
        );
    }

    #[test]
    fn drop_policy_drops_over_the_limit_and_counts_per_connection() {
        let mut l = lines(SlowConsumer::Drop);
        let now = Instant::now();
        let frame = Prepared::from(vec![0u8; 60]);
        l.reserve(id(0), 60, false, now)
            .unwrap()
            .put_prepared(&frame);
        assert_eq!(
            l.reserve(id(0), 60, false, now).err(),
            Some(PushError::Full(id(0)))
        );
        assert_eq!(
            l.reserve(id(0), 40, true, now).map(|o| o.unsent()).ok(),
            Some(60),
            "fits exactly"
        );
        assert_eq!((l.stats.dropped, l.dropped(0)), (1, 1));
        assert!(l.newly_slow.is_empty(), "drop policy never closes");
        // Larger than the limit, onto an empty output: delivered.
        assert!(l.reserve(id(1), 500, true, now).is_ok());
    }

    #[test]
    fn close_policy_marks_the_connection_slow_once() {
        let grace = Duration::from_millis(50);
        let mut l = lines(SlowConsumer::Close { grace });
        let now = Instant::now();
        l.reserve(id(0), 90, true, now).unwrap().put(&[0; 90]);
        for _ in 0..3 {
            assert!(l.reserve(id(0), 20, true, now).is_err());
        }
        assert_eq!(l.newly_slow, [0], "one mark, however many drops");
        let since = l.slow_since[&0];
        assert_eq!(l.slow_deadline(0), Some(since + 50));
        l.lines[0].out.advance(30);
        l.check_recovered(0);
        assert_eq!(
            l.slow_deadline(0),
            Some(since + 50),
            "60 of 100 still queued: still slow"
        );
        l.lines[0].out.advance(20);
        l.check_recovered(0);
        assert_eq!(l.slow_deadline(0), None, "drained to half: caught up");
    }
}
