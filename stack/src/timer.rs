//! Per-worker deadlines.
//!
//! A min-heap of `(millisecond, slot, generation)`. An entry is only a hint: when it fires, the
//! owner checks the slot's current deadline and re-arms if that moved later. So a deadline that
//! only moves later (an idle timeout refreshed by traffic) costs no heap operation per message;
//! a new entry is pushed only when a connection's deadline moves earlier than what is armed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// Milliseconds since a worker's epoch. Eight bytes instead of an `Instant`'s sixteen: times are
/// stored per connection, and a million idle connections are meant to fit in little memory.
pub type Millis = u64;

/// "No time": a deadline that never comes.
pub const NEVER: Millis = Millis::MAX;

/// A worker's millisecond clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
        }
    }

    /// A clock whose zero is `epoch`.
    pub fn starting_at(epoch: Instant) -> Self {
        Self { epoch }
    }

    /// The instant this clock counts from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// `t` rounded down: for "now", so nothing counts as due before it is.
    pub fn floor(&self, t: Instant) -> Millis {
        t.saturating_duration_since(self.epoch).as_millis() as Millis
    }

    /// `t` rounded up: for deadlines, so a timer never fires before its deadline.
    pub fn ceil(&self, t: Instant) -> Millis {
        let d = t.saturating_duration_since(self.epoch);
        let ms = d.as_millis() as Millis;
        if d > Duration::from_millis(ms) {
            ms + 1
        } else {
            ms
        }
    }

    /// The instant of a millisecond value.
    pub fn instant(&self, ms: Millis) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// A timer entry: which connection slot (and which incarnation of it) to look at, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// When to look.
    pub at: Millis,
    /// The connection slot (`u32` keeps an entry at 24 bytes; a worker never has 4 billion).
    pub slot: u32,
    /// The slot's generation when the entry was made.
    pub generation: u32,
}

/// Deadlines of one worker's connections.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    /// Arm an entry.
    pub fn push(&mut self, entry: Entry) {
        self.heap.push(Reverse(entry));
    }

    /// The earliest armed time.
    pub fn next(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Remove and return an entry due at or before `now`.
    pub fn pop_due(&mut self, now: Millis) -> Option<Entry> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
        }
    }

    /// Move every entry due at `now` into `into`. Only these: an entry re-armed in the past
    /// while they are being handled waits for the next call, so a service that keeps asking for
    /// past deadlines cannot keep its worker from doing I/O.
    pub fn take_due(&mut self, now: Millis, into: &mut Vec<Entry>) {
        while let Some(e) = self.pop_due(now) {
            into.push(e);
        }
    }

    /// Number of armed entries (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// Timers a service sets for itself, not tied to a connection ([`crate::Ctx::set_timer`]):
/// one-shot, identified by the service's own token, bounded in number.
#[derive(Debug)]
pub struct ServiceTimers {
    heap: BinaryHeap<Reverse<(Millis, u64, u64)>>,
    /// Tie-breaker: timers due at the same millisecond fire in the order they were set.
    seq: u64,
    cap: usize,
}

/// Service timers a worker holds at most.
pub const MAX_SERVICE_TIMERS: usize = 65_536;

/// A service asked for more than [`MAX_SERVICE_TIMERS`] timers at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the worker already holds {0} service timers")]
pub struct TimersFull(pub usize);

impl Default for ServiceTimers {
    fn default() -> Self {
        Self::with_capacity(MAX_SERVICE_TIMERS)
    }
}

impl ServiceTimers {
    /// Room for `cap` timers.
    pub fn with_capacity(cap: usize) -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
            cap,
        }
    }

    /// Fire `token` at `at`.
    pub fn set(&mut self, at: Millis, token: u64) -> Result<(), TimersFull> {
        if self.heap.len() >= self.cap {
            return Err(TimersFull(self.cap));
        }
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, token)));
        Ok(())
    }

    /// The earliest timer.
    pub fn next(&self) -> Option<Millis> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The token of a timer due at `now`, removed.
    pub fn pop_due(&mut self, now: Millis) -> Option<u64> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(t)| t.2),
            _ => None,
        }
    }

    /// Timers set.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none is set.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_timers_fire_in_order_and_are_bounded() {
        let mut t = ServiceTimers::with_capacity(3);
        t.set(20, 1).unwrap();
        t.set(10, 2).unwrap();
        t.set(10, 3).unwrap();
        assert_eq!(t.set(5, 4), Err(TimersFull(3)));
        assert_eq!(t.next(), Some(10));
        assert_eq!(t.pop_due(9), None);
        let fired: Vec<u64> = std::iter::from_fn(|| t.pop_due(15)).collect();
        assert_eq!(fired, [2, 3], "same millisecond: in the order set");
        assert_eq!(t.pop_due(20), Some(1));
        assert!(t.is_empty());
    }

    #[test]
    fn pops_in_order_and_only_when_due() {
        let mut t = Timers::default();
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            t.push(Entry {
                at: 100 + ms,
                slot: i as u32,
                generation: 0,
            });
        }
        assert_eq!(t.next(), Some(110));
        assert_eq!(t.pop_due(100), None);
        let due: Vec<u32> = std::iter::from_fn(|| t.pop_due(125))
            .map(|e| e.slot)
            .collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn take_due_moves_what_is_due_in_order() {
        let mut t = Timers::default();
        for (slot, at) in [(0u32, 30u64), (1, 10), (2, 50)] {
            t.push(Entry {
                at,
                slot,
                generation: 0,
            });
        }
        let mut due = Vec::new();
        t.take_due(40, &mut due);
        assert_eq!(due.iter().map(|e| e.slot).collect::<Vec<_>>(), [1, 0]);
        // Re-armed in the past after the pass: picked up by the next one, not this one.
        t.push(Entry {
            at: 5,
            slot: 3,
            generation: 0,
        });
        due.clear();
        t.take_due(40, &mut due);
        assert_eq!(due.iter().map(|e| e.slot).collect::<Vec<_>>(), [3]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn deadlines_round_up_and_now_rounds_down() {
        let clock = Clock::new();
        let t = clock.instant(5) + Duration::from_micros(300);
        assert_eq!((clock.floor(t), clock.ceil(t)), (5, 6));
        assert_eq!(
            (clock.floor(clock.instant(7)), clock.ceil(clock.instant(7))),
            (7, 7)
        );
        assert!(
            clock.instant(clock.ceil(t)) >= t,
            "a timer never fires before its deadline"
        );
    }
}
