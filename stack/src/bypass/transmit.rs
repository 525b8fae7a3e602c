//! Transmit: IP packets from smoltcp framed into mbufs behind an Ethernet header addressed to the
//! next hop ([`MbufSink`], the engine's [`IpSink`]), and handed to the NIC in bursts.
//!
//! A burst goes to the NIC as soon as [`EARLY_BURST`] packets are framed, and whatever is left at
//! the end of the iteration goes then. When the NIC's transmit ring refuses part of a burst the
//! sink reports no room ([`IpSink::has_room`]) until a later burst is taken whole: sockets keep
//! their segments meanwhile, so a fan-out to thousands of connections is paced by the ring
//! instead of being framed, refused and left to retransmission timeouts.

use std::net::Ipv4Addr;
use std::time::Instant;

use crate::dpdk::{Mbuf, Mempool, Port, TxBatch};
use crate::net::arp::{self, ArpCache, Resolution};
use crate::net::device::IpSink;
use crate::net::ethernet::{self, ETHERTYPE_IPV4, HEADER_LEN};
use crate::net::NetConfig;

/// Framed packets held back at most when the NIC refuses them; beyond, they are dropped
/// (counted) rather than hold mbufs without bound. Only packets that bypass the room check
/// (answers to received segments, ARP) can get there.
const MAX_BACKLOG: usize = 256;
/// Framed packets that are sent at once, without waiting for the end of the iteration: the
/// ring's verdict comes early, and the batch stays small.
pub const EARLY_BURST: usize = 64;

/// Counters of what could not be sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TxDrops {
    /// No mbuf was free.
    pub no_mbuf: u64,
    /// The next hop's MAC is unknown (an ARP request was sent instead).
    pub no_neighbour: u64,
    /// No route: off-link destination and no gateway.
    pub no_route: u64,
    /// The NIC's transmit queue stayed full.
    pub refused: u64,
}

/// Puts IP packets into mbufs behind an Ethernet header addressed to the next hop.
pub struct MbufSink<'a> {
    net: &'a NetConfig,
    pool: &'a Mempool,
    port: &'a Port,
    queue: u16,
    batch: &'a mut TxBatch,
    /// The NIC refused part of the last burst: no room until a burst is taken whole.
    blocked: &'a mut bool,
    sent: &'a mut u64,
    arp: &'a mut ArpCache,
    now: Instant,
    drops: &'a mut TxDrops,
    /// Room for packets that are dropped (smoltcp must be given a buffer regardless).
    scratch: &'a mut Vec<u8>,
    /// The NIC computes IPv4 and TCP checksums (smoltcp was told to leave them).
    checksum_offload: bool,
}

impl IpSink for MbufSink<'_> {
    fn emit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        let Some(mut m) = Mbuf::alloc(self.pool) else {
            self.drops.no_mbuf += 1;
            return self.discard(len, fill);
        };
        let Some(buf) = u16::try_from(HEADER_LEN + len)
            .ok()
            .and_then(|l| m.append(l))
        else {
            self.drops.no_mbuf += 1;
            return self.discard(len, fill);
        };
        let r = fill(&mut buf[HEADER_LEN..]);
        let dst = match buf.get(HEADER_LEN + 16..HEADER_LEN + 20) {
            Some(d) => Ipv4Addr::new(d[0], d[1], d[2], d[3]),
            None => return r,
        };
        let Some(hop) = self.net.next_hop(dst) else {
            self.drops.no_route += 1;
            return r;
        };
        let mut request = [0u8; arp::FRAME_LEN];
        match self.arp.resolve(self.net, hop, self.now, &mut request) {
            Resolution::Known(mac) => {
                ethernet::write(buf, mac, self.net.mac, ETHERTYPE_IPV4);
                if self.checksum_offload {
                    let ihl = u16::from(buf[HEADER_LEN] & 0x0f) * 4;
                    let is_tcp =
                        buf[HEADER_LEN + 9] == 6 && buf.len() >= HEADER_LEN + usize::from(ihl) + 20;
                    if is_tcp {
                        m.offload_ipv4_tcp_checksums(HEADER_LEN as u16, ihl);
                    } else {
                        m.offload_ipv4_checksum(HEADER_LEN as u16, ihl);
                    }
                }
                self.batch.push(m);
                if self.batch.len() >= EARLY_BURST {
                    *self.sent += burst(self.port, self.queue, self.batch, self.blocked) as u64;
                }
            }
            // TCP retransmits; meanwhile ask who has the next hop.
            Resolution::Ask(n) => {
                self.drops.no_neighbour += 1;
                drop(m);
                push_frame(self.pool, self.batch, &request[..n]);
            }
            Resolution::Wait => self.drops.no_neighbour += 1,
        }
        r
    }

    fn has_room(&self) -> bool {
        !*self.blocked && self.batch.len() < MAX_BACKLOG
    }
}

impl MbufSink<'_> {
    fn discard<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        self.scratch.clear();
        self.scratch.resize(len, 0);
        fill(self.scratch)
    }
}

/// A worker's transmit side: the batch for the next `tx_burst`, the neighbours it knows, and what
/// it had to drop. [`TxPath::sink`] lends it to smoltcp as an [`IpSink`].
pub struct TxPath<'a> {
    net: NetConfig,
    pool: &'a Mempool,
    port: &'a Port,
    queue: u16,
    /// The NIC refused part of the last burst.
    blocked: bool,
    /// Framed packets waiting for `tx_burst`.
    pub batch: TxBatch,
    /// Neighbours.
    pub arp: ArpCache,
    /// Packets not sent, by reason.
    pub drops: TxDrops,
    /// Packets the port accepted.
    pub sent: u64,
    scratch: Vec<u8>,
    checksum_offload: bool,
}

impl<'a> TxPath<'a> {
    /// A transmit side sending on `port`'s transmit queue `queue`, allocating from `pool`,
    /// addressing packets as `net`.
    pub fn new(
        net: NetConfig,
        pool: &'a Mempool,
        port: &'a Port,
        queue: u16,
        checksum_offload: bool,
    ) -> Self {
        Self {
            net,
            pool,
            port,
            queue,
            blocked: false,
            batch: TxBatch::with_capacity(512),
            arp: ArpCache::default(),
            drops: TxDrops::default(),
            sent: 0,
            scratch: Vec::new(),
            checksum_offload,
        }
    }

    /// If the NIC refused packets, offer them again, so that the sink knows whether there is
    /// room now. Once per iteration, before the connections' turns (on a TAP each offer is a
    /// system call).
    pub fn retry(&mut self) {
        if self.blocked {
            self.sent += burst(self.port, self.queue, &mut self.batch, &mut self.blocked) as u64;
        }
    }

    /// The sink smoltcp emits into, at time `now`.
    pub fn sink(&mut self, now: Instant) -> MbufSink<'_> {
        MbufSink {
            net: &self.net,
            pool: self.pool,
            port: self.port,
            queue: self.queue,
            batch: &mut self.batch,
            blocked: &mut self.blocked,
            sent: &mut self.sent,
            arp: &mut self.arp,
            now,
            drops: &mut self.drops,
            scratch: &mut self.scratch,
            checksum_offload: self.checksum_offload,
        }
    }

    /// Queue a whole Ethernet frame (ARP) as it is.
    pub fn frame(&mut self, frame: &[u8]) {
        push_frame(self.pool, &mut self.batch, frame);
    }

    /// Send what this iteration framed; what the NIC refuses waits for the next burst, up to a
    /// bound. Returns how many packets were waiting.
    pub fn burst(&mut self) -> usize {
        let queued = self.batch.len();
        if queued > 0 {
            self.sent += burst(self.port, self.queue, &mut self.batch, &mut self.blocked) as u64;
            if self.batch.len() > MAX_BACKLOG {
                // The NIC is not keeping up: drop rather than hold mbufs without bound.
                self.drops.refused += self.batch.drop_all() as u64;
            }
        }
        queued
    }
}

/// Offer `batch` to the NIC; what it refuses stays in the batch and sets `blocked`. Returns how
/// many packets it took.
fn burst(port: &Port, queue: u16, batch: &mut TxBatch, blocked: &mut bool) -> usize {
    let sent = port.tx_burst(queue, batch);
    *blocked = !batch.is_empty();
    sent
}

/// Allocate an mbuf, copy `frame` into it and queue it (dropped if no mbuf is free).
fn push_frame(pool: &Mempool, batch: &mut TxBatch, frame: &[u8]) {
    if let Some(mut m) = Mbuf::alloc(pool) {
        if let Some(buf) = u16::try_from(frame.len()).ok().and_then(|n| m.append(n)) {
            buf.copy_from_slice(frame);
            batch.push(m);
        }
    }
}
