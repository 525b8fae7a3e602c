//! What a worker did, on either transport: returned when it stops, and copied into its
//! [`WorkerMeter`](crate::meter::WorkerMeter) while it serves.

use crate::driver::lines::PushStats;
use crate::meter::{LoopSnapshot, Stat, WorkerRecorder};
use crate::net::engine::EngineStats;

/// What one worker did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Worker index.
    pub worker: usize,
    /// Connections established (accepted, or dialed by a load generator).
    pub accepted: u64,
    /// Connections refused because `max_connections` was reached (kernel sockets: closed after
    /// accept; DPDK: SYNs dropped).
    pub rejected: u64,
    /// Connections that ended with a completed close.
    pub closed: u64,
    /// Connections that ended by error or reset.
    pub errors: u64,
    /// Connections still open when the shutdown deadline passed.
    pub abandoned: u64,
    /// Read turns cut short because the connection's unsent output was over the limit.
    pub backpressure_pauses: u64,
    /// Connections closed as slow consumers.
    pub slow_closed: u64,
    /// Pushes, by outcome.
    pub pushes: PushStats,
    /// Messages the service received from the mailbox.
    pub messages: u64,
    /// Posts to this worker refused because its mailbox was full.
    pub mailbox_refused: u64,
    /// Loop iterations and busy time.
    pub loops: LoopSnapshot,
    /// The DPDK path's packet-level figures (`None` on kernel sockets).
    pub packets: Option<PacketReport>,
}

/// Packet-level figures of a DPDK worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketReport {
    /// The TCP engine's counters.
    pub engine: EngineStats,
    /// Packets received from the port.
    pub received: u64,
    /// Packets the port accepted for sending.
    pub sent: u64,
    /// Packets not sent: no free mbuf.
    pub no_mbuf: u64,
    /// Packets not sent: next hop not resolved yet (an ARP request went out instead).
    pub no_neighbour: u64,
    /// Packets not sent: no route.
    pub no_route: u64,
    /// Packets the NIC would not take.
    pub tx_refused: u64,
}

impl WorkerReport {
    /// Copy the counters into the worker's meter (gauges such as open connections are the
    /// transport's to set).
    pub fn publish(&self, meter: &mut WorkerRecorder) {
        for (stat, value) in [
            (Stat::ConnectionsAccepted, self.accepted),
            (Stat::ConnectionsClosed, self.closed),
            (Stat::ConnectionErrors, self.errors),
            (Stat::RejectedMaxConnections, self.rejected),
            (Stat::BackpressurePauses, self.backpressure_pauses),
            (Stat::PushesQueued, self.pushes.queued),
            (Stat::PushesDropped, self.pushes.dropped),
            (Stat::PushesStale, self.pushes.stale),
            (Stat::PushesRefused, self.pushes.refused),
            (Stat::SlowConsumersClosed, self.slow_closed),
            (Stat::MailboxReceived, self.messages),
            (Stat::MailboxRefused, self.mailbox_refused),
        ] {
            meter.set(stat, value);
        }
        if let Some(p) = &self.packets {
            for (stat, value) in [
                (Stat::RejectedHalfOpen, p.engine.syn_dropped_half_open),
                (Stat::RejectedMemory, p.engine.syn_dropped_memory),
                (Stat::PacketsReceived, p.received),
                (Stat::PacketsSent, p.sent),
                (Stat::DroppedNoMbuf, p.no_mbuf),
                (Stat::DroppedNoNeighbour, p.no_neighbour),
                (Stat::DroppedNoRoute, p.no_route),
                (Stat::DroppedTxFull, p.tx_refused),
                (Stat::TxDeferred, p.engine.egress_deferred),
            ] {
                meter.set(stat, value);
            }
        }
    }

    /// Sum of a counter over reports.
    pub fn total(reports: &[WorkerReport], f: impl Fn(&WorkerReport) -> u64) -> u64 {
        reports.iter().map(f).sum()
    }
}
