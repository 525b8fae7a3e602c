//! What a worker publishes for the admin endpoint, without locks: loop iterations, the iterations
//! that did work and the time those took, and a fixed set of [`Stat`]s (connections, drops,
//! packets, pool use) that the worker stores from its own counters now and then.
//!
//! A DPDK worker's core spins whether or not there is traffic, so the operating system's CPU time
//! says nothing about load; busy time does. It is what server CPU per message is computed from
//! (`hioload_worker_busy_seconds_total` on the admin endpoint), on both transports alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A figure a worker publishes besides its loop counters. Counters only grow; the gauges
/// (`ConnectionsOpen`, `ArpEntries`, `MbufsInUse`, `MbufsFree`, `NumaSocket`) go both ways.
/// Transports publish what they have: the packet, ARP, port and pool figures are DPDK's; the
/// port figures come from worker 0 only (one port, read once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// Connections open now.
    ConnectionsOpen,
    /// Connections established.
    ConnectionsAccepted,
    /// Connections that ended normally.
    ConnectionsClosed,
    /// Connections that ended by reset or error.
    ConnectionErrors,
    /// Connections refused at `--max-connections`.
    RejectedMaxConnections,
    /// SYNs dropped at `--max-half-open`.
    RejectedHalfOpen,
    /// SYNs dropped because no memory could be mapped for their rings.
    RejectedMemory,
    /// Times a connection's input was left unread because its unsent output was over the limit.
    BackpressurePauses,
    /// Packets received from the port.
    PacketsReceived,
    /// Packets the port accepted for sending.
    PacketsSent,
    /// Packets not sent: no free mbuf.
    DroppedNoMbuf,
    /// Packets not sent: next hop not resolved yet.
    DroppedNoNeighbour,
    /// Packets not sent: no route.
    DroppedNoRoute,
    /// Packets not sent: the port's transmit queue stayed full.
    DroppedTxFull,
    /// Turns in which a connection had more to send than the transmit ring had room for.
    TxDeferred,
    /// Connections waiting for room in the transmit ring.
    TxWaiting,
    /// Neighbours in the worker's ARP cache.
    ArpEntries,
    /// Port: packets dropped for want of an RX descriptor.
    PortRxMissed,
    /// Port: receive errors.
    PortRxErrors,
    /// Port: transmit errors.
    PortTxErrors,
    /// Port: RX mbuf allocation failures.
    PortRxNoMbuf,
    /// Mbufs in use in the pool of the worker's NUMA socket.
    MbufsInUse,
    /// Mbufs free in that pool.
    MbufsFree,
    /// The worker's NUMA socket.
    NumaSocket,
    /// Pushes queued for a connection of this worker.
    PushesQueued,
    /// Pushes dropped: the connection was over its output limit.
    PushesDropped,
    /// Pushes to connections that had closed.
    PushesStale,
    /// Pushes refused: the connection did not take pushes (or was another worker's).
    PushesRefused,
    /// Connections closed as slow consumers.
    SlowConsumersClosed,
    /// Messages taken from the worker's mailbox.
    MailboxReceived,
    /// Posts to the worker's mailbox refused because it was full.
    MailboxRefused,
}

impl Stat {
    /// Every stat, in index order.
    pub const ALL: [Stat; 31] = [
        Stat::ConnectionsOpen,
        Stat::ConnectionsAccepted,
        Stat::ConnectionsClosed,
        Stat::ConnectionErrors,
        Stat::RejectedMaxConnections,
        Stat::RejectedHalfOpen,
        Stat::RejectedMemory,
        Stat::BackpressurePauses,
        Stat::PacketsReceived,
        Stat::PacketsSent,
        Stat::DroppedNoMbuf,
        Stat::DroppedNoNeighbour,
        Stat::DroppedNoRoute,
        Stat::DroppedTxFull,
        Stat::TxDeferred,
        Stat::TxWaiting,
        Stat::ArpEntries,
        Stat::PortRxMissed,
        Stat::PortRxErrors,
        Stat::PortTxErrors,
        Stat::PortRxNoMbuf,
        Stat::MbufsInUse,
        Stat::MbufsFree,
        Stat::NumaSocket,
        Stat::PushesQueued,
        Stat::PushesDropped,
        Stat::PushesStale,
        Stat::PushesRefused,
        Stat::SlowConsumersClosed,
        Stat::MailboxReceived,
        Stat::MailboxRefused,
    ];
}

/// One worker's published figures. Written by that worker only (plain relaxed stores), read by
/// anyone; aligned to a cache line so workers never share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerMeter {
    iterations: AtomicU64,
    busy_iterations: AtomicU64,
    busy_nanos: AtomicU64,
    stats: [AtomicU64; Stat::ALL.len()],
    /// The connections with the most queued output, refreshed about once a second. A mutex,
    /// but the worker only ever `try_lock`s it, off the per-packet path: it never waits.
    most_queued: Mutex<Vec<Queued>>,
}

/// A connection and the output it has queued (unsent by us, or sent and not yet acknowledged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// The connection's slot within its worker (as in its `ConnId`).
    pub slot: u32,
    /// Bytes queued.
    pub bytes: u64,
    /// Pushes dropped for it so far (it was over its output limit).
    pub dropped: u32,
}

/// How many connections a worker reports in [`WorkerMeter::most_queued`].
pub const MOST_QUEUED: usize = 5;

/// Keep the [`MOST_QUEUED`] largest of `(slot, bytes)` pairs, largest first.
pub fn most_queued(all: impl Iterator<Item = Queued>) -> Vec<Queued> {
    let mut top: Vec<Queued> = Vec::with_capacity(MOST_QUEUED + 1);
    for q in all.filter(|q| q.bytes > 0) {
        if top.len() < MOST_QUEUED || q.bytes > top[top.len() - 1].bytes {
            let at = top.partition_point(|t| t.bytes >= q.bytes);
            top.insert(at, q);
            top.truncate(MOST_QUEUED);
        }
    }
    top
}

/// A reading of a [`WorkerMeter`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoopSnapshot {
    /// Loop iterations run.
    pub iterations: u64,
    /// Iterations that received, sent or ran timers.
    pub busy_iterations: u64,
    /// Time spent in busy iterations.
    pub busy: Duration,
}

impl WorkerMeter {
    /// Meters for `workers` workers.
    pub fn for_workers(workers: usize) -> Arc<[WorkerMeter]> {
        (0..workers).map(|_| WorkerMeter::default()).collect()
    }

    /// The current value of `stat`.
    pub fn stat(&self, stat: Stat) -> u64 {
        self.stats[stat as usize].load(Ordering::Relaxed)
    }

    /// The connections with the most queued output, as last published.
    pub fn most_queued(&self) -> Vec<Queued> {
        self.most_queued
            .lock()
            .map(|q| q.clone())
            .unwrap_or_default()
    }

    /// The current loop counters.
    pub fn snapshot(&self) -> LoopSnapshot {
        LoopSnapshot {
            iterations: self.iterations.load(Ordering::Relaxed),
            busy_iterations: self.busy_iterations.load(Ordering::Relaxed),
            busy: Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed)),
        }
    }
}

/// The owning worker's side of a [`WorkerMeter`]: counts locally, publishes with stores.
#[derive(Debug)]
pub struct WorkerRecorder {
    meters: Arc<[WorkerMeter]>,
    index: usize,
    now: LoopSnapshot,
}

impl WorkerRecorder {
    /// Record into `meters[index]` (counted but published nowhere if there is no such meter).
    pub fn new(meters: Arc<[WorkerMeter]>, index: usize) -> Self {
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

    /// Publish the connections with the most queued output (skipped if a reader holds the lock).
    pub fn set_most_queued(&self, top: Vec<Queued>) {
        if let Some(mut q) = self
            .meters
            .get(self.index)
            .and_then(|m| m.most_queued.try_lock().ok())
        {
            *q = top;
        }
    }

    /// Publish `value` for `stat` (the worker keeps its own counters; this copies them out).
    pub fn set(&self, stat: Stat, value: u64) {
        if let Some(m) = self.meters.get(self.index) {
            m.stats[stat as usize].store(value, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_publishes() {
        let meters = WorkerMeter::for_workers(2);
        let mut r = WorkerRecorder::new(Arc::clone(&meters), 1);
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
        assert_eq!(std::mem::align_of::<WorkerMeter>(), 64);
        r.set(Stat::ConnectionsOpen, 5);
        r.set(Stat::NumaSocket, 1);
        assert_eq!(meters[1].stat(Stat::ConnectionsOpen), 5);
        assert_eq!(meters[1].stat(Stat::NumaSocket), 1);
        assert_eq!(meters[0].stat(Stat::ConnectionsOpen), 0);
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i, "ALL is in index order");
        }
    }

    #[test]
    fn most_queued_keeps_the_largest_first() {
        let all = [3u64, 0, 9, 1, 7, 7, 2, 10];
        let top = most_queued(all.iter().enumerate().map(|(i, b)| Queued {
            slot: i as u32,
            bytes: *b,
            dropped: 0,
        }));
        let bytes: Vec<u64> = top.iter().map(|q| q.bytes).collect();
        assert_eq!(bytes, [10, 9, 7, 7, 3]);
        assert_eq!(top[0].slot, 7);
        assert!(most_queued(std::iter::empty()).is_empty());
        let meters = WorkerMeter::for_workers(1);
        WorkerRecorder::new(Arc::clone(&meters), 0).set_most_queued(top.clone());
        assert_eq!(meters[0].most_queued(), top);
    }

    #[test]
    fn works_without_a_meter() {
        let mut r = WorkerRecorder::new(WorkerMeter::for_workers(0), 0);
        r.idle();
        assert_eq!(r.totals().iterations, 1);
    }
}
