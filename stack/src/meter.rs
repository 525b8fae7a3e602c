//! Worker loop accounting, published without locks: loop iterations, the iterations that did
//! work, and the time those took.
//!
//! A DPDK worker's core spins whether or not there is traffic, so the operating system's CPU time
//! says nothing about load; busy time does. It is what server CPU per message is computed from
//! (`hioload_worker_busy_seconds_total` on the admin endpoint), on both transports alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One worker's published loop counters. Written by that worker only (plain relaxed stores), read
/// by anyone; aligned to a cache line so workers never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct LoopMeter {
    iterations: AtomicU64,
    busy_iterations: AtomicU64,
    busy_nanos: AtomicU64,
}

/// A reading of a [`LoopMeter`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoopSnapshot {
    /// Loop iterations run.
    pub iterations: u64,
    /// Iterations that received, sent or ran timers.
    pub busy_iterations: u64,
    /// Time spent in busy iterations.
    pub busy: Duration,
}

impl LoopMeter {
    /// Meters for `workers` workers.
    pub fn for_workers(workers: usize) -> Arc<[LoopMeter]> {
        (0..workers).map(|_| LoopMeter::default()).collect()
    }

    /// The current values.
    pub fn snapshot(&self) -> LoopSnapshot {
        LoopSnapshot {
            iterations: self.iterations.load(Ordering::Relaxed),
            busy_iterations: self.busy_iterations.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// The owning worker's side of a [`LoopMeter`]: counts locally, publishes with stores.
#[derive(Debug)]
pub struct LoopRecorder {
    meters: Arc<[LoopMeter]>,
    index: usize,
    now: LoopSnapshot,
}

impl LoopRecorder {
    /// Record into `meters[index]` (counted but published nowhere if there is no such meter).
    pub fn new(meters: Arc<[LoopMeter]>, index: usize) -> Self {
        Self {
            meters,
            index,
            now: LoopSnapshot::default(),
        }
    }

    /// An iteration that found nothing to do.
    pub fn idle(&mut self) {
        self.now.iterations += 1;
        if let Some(m) = self.meters.get(self.index) {
            m.iterations.store(self.now.iterations, Ordering::Relaxed);
        }
    }

    /// An iteration that did work, from `started` until `ended`.
    pub fn busy(&mut self, started: Instant, ended: Instant) {
        self.now.iterations += 1;
        self.now.busy_iterations += 1;
        self.now.busy += ended.saturating_duration_since(started);
        if let Some(m) = self.meters.get(self.index) {
            m.iterations.store(self.now.iterations, Ordering::Relaxed);
            m.busy_iterations
                .store(self.now.busy_iterations, Ordering::Relaxed);
            m.busy_nanos
                .store(self.now.busy.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// What has been recorded.
    pub fn totals(&self) -> LoopSnapshot {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_publishes() {
        let meters = LoopMeter::for_workers(2);
        let mut r = LoopRecorder::new(Arc::clone(&meters), 1);
        let t = Instant::now();
        r.idle();
        r.busy(t, t + Duration::from_micros(3));
        r.busy(t, t + Duration::from_micros(4));
        let want = LoopSnapshot {
            iterations: 3,
            busy_iterations: 2,
            busy: Duration::from_micros(7),
        };
        assert_eq!(meters[1].snapshot(), want);
        assert_eq!(r.totals(), want);
        assert_eq!(meters[0].snapshot(), LoopSnapshot::default());
        assert_eq!(std::mem::align_of::<LoopMeter>(), 64);
    }

    #[test]
    fn works_without_a_meter() {
        let mut r = LoopRecorder::new(LoopMeter::for_workers(0), 0);
        r.idle();
        assert_eq!(r.totals().iterations, 1);
    }
}
