//! Per-worker deadlines.
//!
//! A min-heap of `(instant, slot, generation)`. An entry is only a hint: when it fires, the
//! owner checks the slot's current deadline and re-arms if that moved later. So a deadline that
//! only moves later (an idle timeout refreshed by traffic) costs no heap operation per message;
//! a new entry is pushed only when a connection's deadline moves earlier than what is armed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// A timer entry: which connection slot (and which incarnation of it) to look at, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    /// When to look.
    pub at: Instant,
    /// The connection slot.
    pub slot: usize,
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

    /// The earliest armed instant.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Remove and return an entry due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Entry> {
        match self.heap.peek() {
            Some(Reverse(e)) if e.at <= now => self.heap.pop().map(|Reverse(e)| e),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_order_and_only_when_due() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            t.push(Entry {
                at: t0 + Duration::from_millis(ms),
                slot: i,
                generation: 0,
            });
        }
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(t.pop_due(t0), None);
        let due: Vec<usize> = std::iter::from_fn(|| t.pop_due(t0 + Duration::from_millis(25)))
            .map(|e| e.slot)
            .collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(t.len(), 1);
    }
}
