//! The userspace TCP engine of one worker: IP packets in, IP packets out, a [`Service`] on top.
//!
//! One smoltcp `Interface` (`Medium::Ip`) per worker, and one single-socket `SocketSet` per
//! connection behind our own flow table, so the cost per packet does not grow with the number of
//! connections (smoltcp scans every socket of a set per packet; ours hold one). A SYN to the
//! listening port creates a connection, up to `max_half_open` not yet established; any other
//! segment without a flow meets an empty set, and smoltcp answers it with RST (and answers ICMP
//! echo the same way).
//!
//! The engine also opens connections itself ([`Dial`]), for the load generator: the same flow
//! table and per-connection sets, with smoltcp doing the active open.
//!
//! Sending is paced by the sink's room ([`IpSink::has_room`]): a connection whose segments do
//! not fit this iteration keeps them in its socket and joins a first-in, first-out list of
//! connections waiting to send, served before anything else once there is room. A publish to
//! 10,000 members thus goes out as fast as the NIC takes it, instead of being framed at once,
//! mostly refused, and recovered by retransmission timeouts.
//!
//! The engine never touches a NIC: the DPDK worker feeds it packets from mbufs and gives it a sink
//! that frames what it emits. Tests drive it with plain byte buffers.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Packet, TcpPacket};

use super::device::{IpSink, PacketDevice};
use super::rings::{ArenaSocket, RingArena};
use crate::driver::{Driver, DriverConfig, DriverStats, Flushed, Phase, SlowConsumer};
use crate::mailbox::Postboxes;
use crate::service::{CloseCause, Service};
use crate::timer::Millis;

/// How long a connection may stay half-open (SYN received, handshake not completed).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sent data may stay unacknowledged before the connection is reset.
pub const UNACKED_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection must be quiet, with both rings empty, before its ring pages go back to
/// the kernel.
pub const IDLE_TRIM: Duration = Duration::from_secs(1);
/// Segments one connection may emit in one turn before the others waiting to send get theirs.
const EGRESS_TURN: usize = 16;

/// Settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Worker index (goes into connection ids).
    pub worker: u16,
    /// Our (first) address.
    pub ip: Ipv4Addr,
    /// Consecutive addresses from `ip` that are ours (at most 8; 1 for a server).
    pub ip_count: u8,
    /// Prefix length.
    pub prefix: u8,
    /// The TCP port we accept connections on; 0 accepts none.
    pub listen_port: u16,
    /// smoltcp receive buffer per connection: its receive window.
    pub tcp_rx_buf: usize,
    /// smoltcp send buffer per connection.
    pub tcp_tx_buf: usize,
    /// Connections not yet established, at most; SYNs beyond are dropped.
    pub max_half_open: usize,
    /// Connections at most; SYNs beyond are dropped.
    pub max_connections: usize,
    /// Unsent output per connection beyond which the engine stops reading it.
    pub backpressure_limit: usize,
    /// IP MTU.
    pub mtu: usize,
    /// Leave IPv4 and TCP checksums of outgoing packets to the NIC.
    pub tx_checksum_offload: bool,
    /// Connections to open, if this engine is a client.
    pub dial: Option<Dial>,
    /// How long a closing connection may take to flush and see the peer's FIN before it is
    /// reset.
    pub close_linger: Duration,
    /// What happens to connections that pushes would take over `backpressure_limit`.
    pub slow_consumer: SlowConsumer,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            worker: 0,
            ip: Ipv4Addr::new(10, 0, 0, 2),
            ip_count: 1,
            prefix: 24,
            listen_port: 0,
            tcp_rx_buf: 16 << 10,
            tcp_tx_buf: 16 << 10,
            max_half_open: 4096,
            max_connections: 1_000_000,
            backpressure_limit: 1 << 20,
            mtu: 1500,
            tx_checksum_offload: false,
            dial: None,
            close_linger: Duration::from_secs(2),
            slow_consumer: SlowConsumer::Drop,
        }
    }
}

impl EngineConfig {
    /// The smoltcp device for one call: `packet` to receive, if any, and `sink` for what is sent.
    fn device<'a, S: IpSink>(
        &self,
        packet: Option<&'a [u8]>,
        sink: &'a mut S,
    ) -> PacketDevice<'a, S> {
        PacketDevice::new(packet, sink, self.mtu, self.tx_checksum_offload)
    }
}

/// Connections an engine opens to one server (the load generator's side).
///
/// Local endpoints are numbered over our addresses and the ports in [`Dial::PORTS`]: endpoint
/// `g` is address `ip + g / ports` and port `PORTS.start + g % ports`. This engine uses endpoints
/// `first`, `first + stride`, ... so engines of different workers never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dial {
    /// The server.
    pub remote: SocketAddrV4,
    /// Connections this engine opens.
    pub count: usize,
    /// This engine's first endpoint number.
    pub first: usize,
    /// Distance between this engine's endpoint numbers.
    pub stride: usize,
}

impl Dial {
    /// Local ports a client uses (those below are commonly reserved).
    pub const PORTS: Range<u16> = 1024..u16::MAX;

    /// The local endpoint of this engine's `k`-th connection, if the range has one.
    pub fn endpoint(&self, k: usize, ip: Ipv4Addr, ip_count: u8) -> Option<SocketAddrV4> {
        let ports = usize::from(Self::PORTS.end - Self::PORTS.start);
        let g = self.first.checked_add(k.checked_mul(self.stride.max(1))?)?;
        let addr = g / ports;
        if addr >= usize::from(ip_count.max(1)) {
            return None;
        }
        let ip = Ipv4Addr::from(u32::from(ip).wrapping_add(addr as u32));
        Some(SocketAddrV4::new(
            ip,
            Self::PORTS.start + (g % ports) as u16,
        ))
    }
}

/// Counters of an engine.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    /// Connections established.
    pub accepted: u64,
    /// Connections ended.
    pub closed: u64,
    /// SYNs dropped because `max_half_open` connections were pending.
    pub syn_dropped_half_open: u64,
    /// SYNs dropped because `max_connections` were open.
    pub syn_dropped_full: u64,
    /// Packets that were not IPv4/TCP for us (answered or dropped by smoltcp).
    pub other_packets: u64,
    /// SYNs dropped because no memory could be mapped for the connection's rings.
    pub syn_dropped_memory: u64,
    /// Times an idle connection's ring pages went back to the kernel.
    pub rings_trimmed: u64,
    /// Times a connection's input was left unread because its unsent output was over the limit.
    pub backpressure_pauses: u64,
    /// Connections opened by us (SYN sent).
    pub dialed: u64,
    /// Turns in which a connection had more to send than the sink had room for (it waited for
    /// a later iteration).
    pub egress_deferred: u64,
    /// Connections that ended before they were established (timeout, RST, refused).
    pub handshake_failed: u64,
}

/// The key of a flow: the peer's address and port, and ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Peer address.
    pub peer: Ipv4Addr,
    /// Peer port.
    pub peer_port: u16,
    /// Our address (one of the engine's).
    pub local: Ipv4Addr,
    /// Our port.
    pub port: u16,
}

/// One reading of the clock in the units a connection's turn needs. Taken once per call and
/// reused for every connection of it (and for every packet of a burst, which share an instant):
/// converting an `Instant` costs as much as a small step of the stack.
#[derive(Debug, Clone, Copy)]
struct Now {
    at: Instant,
    /// On the driver's clock, whose zero is also smoltcp's.
    ms: Millis,
    smol: smoltcp::time::Instant,
}

/// A TCP segment's place in its sender's sequence space.
#[derive(Debug, Clone, Copy)]
struct Segment {
    seq: u32,
    syn: bool,
    len: u32,
}

/// What became of a segment that matched no flow.
enum Admission {
    /// A SYN to the listening port: this slot now holds its connection.
    Accepted(usize),
    /// A SYN over a limit: dropped without an answer.
    Dropped,
    /// Not a connection request for us: smoltcp answers it (RST).
    NoListener,
}

/// The engine's part of a connection: its flow key and its smoltcp socket.
pub struct Flow {
    key: FlowKey,
    socket: ArenaSocket,
    /// In this round's list of flows that received packets.
    received: bool,
    /// In the list of flows waiting for room to send.
    waiting: bool,
    /// The last round in which it received a packet (for the idle trim).
    active: Millis,
    /// The ring pages were handed back since the last activity.
    trimmed: bool,
    /// Receive sequence space, to tell whether the receive ring may hold out-of-order data
    /// (smoltcp keeps segments beyond a hole in the ring, uncounted by `recv_queue`; trimming
    /// would turn them into zeros): see [`RxSpace`].
    rx: RxSpace,
}

/// What a flow has received, in the peer's sequence numbers: the first payload byte's number,
/// the end of the furthest payload seen, and how many bytes the service has taken. The ring
/// holds no data beyond what `recv_queue` counts when `end == base + taken + recv_queue`.
#[derive(Debug, Default, Clone, Copy)]
struct RxSpace {
    base: u32,
    end: u32,
    taken: u32,
    /// The peer's SYN has been seen (`base` is known).
    known: bool,
}

impl RxSpace {
    /// A segment arrived: its sequence number, SYN flag and payload length.
    #[inline]
    fn seen(&mut self, seq: u32, syn: bool, len: u32) {
        if syn {
            let first = seq.wrapping_add(1);
            *self = Self {
                base: first,
                end: first.wrapping_add(len),
                taken: 0,
                known: true,
            };
        } else if len > 0 {
            let end = seq.wrapping_add(len);
            // Later in sequence space (modulo 2^32): the furthest so far.
            if (end.wrapping_sub(self.end) as i32) > 0 {
                self.end = end;
            }
        }
    }

    /// Whether nothing was received beyond the `queued` contiguous bytes not yet taken.
    fn nothing_beyond(&self, queued: usize) -> bool {
        self.known
            && self.end
                == self
                    .base
                    .wrapping_add(self.taken)
                    .wrapping_add(queued as u32)
    }
}

/// One worker's TCP engine.
pub struct Engine<S: Service> {
    cfg: EngineConfig,
    iface: Interface,
    driver: Driver<S, Flow>,
    table: HashMap<FlowKey, usize>,
    empty: SocketSet<'static>,
    /// Flows that received packets this round.
    received: Vec<usize>,
    /// Flows with segments to send that did not fit the sink, oldest first (each at most once).
    waiting: VecDeque<u32>,
    /// Scratch lists kept for their allocations.
    flush: Vec<u32>,
    fired: Vec<(usize, bool)>,
    half_open: usize,
    /// Zero of smoltcp's clock: the driver's clock's zero, so both count from the same instant.
    epoch: Instant,
    /// The last clock reading (see [`Now`]).
    last: Now,
    stats: EngineStats,
    shutting_down: bool,
    /// Connections of [`EngineConfig::dial`] opened so far.
    dialed: usize,
    arena: RingArena,
}

impl<S: Service> Engine<S> {
    /// An engine on its own (a mailbox of its own, drained by [`Engine::tick`]); `sink` is only
    /// used to ask smoltcp's device capabilities.
    pub fn new(cfg: EngineConfig, service: S, sink: &mut impl IpSink, now: Instant) -> Self {
        Self::build(cfg, sink, now, |c| Driver::detached(c, service))
    }

    /// An engine that is one worker of a transport: `posts` reaches every worker's mailbox.
    pub fn with_posts(
        cfg: EngineConfig,
        service: S,
        posts: Postboxes<S::Message>,
        sink: &mut impl IpSink,
        now: Instant,
    ) -> Self {
        Self::build(cfg, sink, now, |c| Driver::new(c, service, posts))
    }

    fn build(
        cfg: EngineConfig,
        sink: &mut impl IpSink,
        now: Instant,
        driver: impl FnOnce(DriverConfig) -> Driver<S, Flow>,
    ) -> Self {
        let arena = RingArena::new(cfg.tcp_rx_buf, cfg.tcp_tx_buf);
        // Address space for every connection up front (pages are touched as they come): the
        // tables never move every connection while they grow.
        let driver = driver(DriverConfig {
            worker: cfg.worker,
            backpressure_limit: cfg.backpressure_limit,
            slow_consumer: cfg.slow_consumer,
            close_linger: cfg.close_linger,
        })
        .with_capacity(cfg.max_connections.min(1 << 20))
        .with_epoch(now);
        let epoch = now;
        let mut iface = {
            let mut dev = cfg.device(None, sink);
            let mut config = Config::new(HardwareAddress::Ip);
            config.random_seed =
                u64::from(cfg.worker) ^ 0x9e37_79b9_7f4a_7c15 ^ now.elapsed().as_nanos() as u64;
            Interface::new(config, &mut dev, smol(epoch, now))
        };
        iface.update_ip_addrs(|a| {
            // smoltcp is built with room for 8 addresses; `ip_count` is documented as at most 8.
            for i in 0..u32::from(cfg.ip_count.clamp(1, 8)) {
                let ip = Ipv4Addr::from(u32::from(cfg.ip).wrapping_add(i));
                let _ = a.push(IpCidr::new(IpAddress::Ipv4(ip), cfg.prefix));
            }
        });
        Self {
            cfg,
            iface,
            driver,
            table: HashMap::new(),
            empty: SocketSet::new(Vec::new()),
            received: Vec::new(),
            waiting: VecDeque::new(),
            flush: Vec::new(),
            fired: Vec::new(),
            half_open: 0,
            epoch,
            last: Now {
                at: epoch,
                ms: 0,
                smol: smoltcp::time::Instant::from_micros(0),
            },
            stats: EngineStats::default(),
            shutting_down: false,
            dialed: 0,
            arena,
        }
    }

    /// Counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// The connection driver's counters (closes, pushes, mailbox messages).
    pub fn driver_stats(&self) -> DriverStats {
        self.driver.stats()
    }

    /// Open connections (established or not).
    pub fn connections(&self) -> usize {
        self.driver.len()
    }

    /// Connections not yet established.
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// The service.
    pub fn service(&self) -> &S {
        self.driver.service()
    }

    /// Every connection's queued output: unsent by the service, plus sent and unacknowledged in
    /// its socket. A scan of every connection: for probes, about once a second.
    pub fn queued(&self) -> impl Iterator<Item = crate::meter::Queued> + '_ {
        self.driver.ios().map(|(slot, f)| crate::meter::Queued {
            slot: slot as u32,
            bytes: (self.driver.unsent(slot) + f.socket.tcp().send_queue()) as u64,
            dropped: self.driver.dropped(slot),
        })
    }

    /// Change the limits while serving: unsent output per connection before its input waits
    /// (and pushes are dropped), and connections at most (existing ones above a lowered limit
    /// stay).
    pub fn set_limits(&mut self, backpressure_limit: usize, max_connections: usize) {
        self.cfg.backpressure_limit = backpressure_limit;
        self.cfg.max_connections = max_connections;
        self.driver.set_limit(backpressure_limit);
    }

    /// Once per loop iteration: the service's timers and tick ([`Service::on_tick`]) (and, for
    /// an engine on its own, its mailbox); if the service's deadlines moved, every connection
    /// gets a turn so its timer is armed anew. Then whatever was written goes out.
    pub fn tick(&mut self, sink: &mut impl IpSink, now: Instant) {
        if self.driver.tick(now) {
            let now = self.now(now);
            for slot in self.driver.slots() {
                self.turn(slot, sink, now);
            }
        }
        self.flush(sink, now);
    }

    /// A message from the worker's mailbox, for the service (what it writes goes out with the
    /// next [`Engine::process`] or [`Engine::tick`]).
    pub fn message(&mut self, message: S::Message, now: Instant) {
        self.driver.message(message, now);
    }

    /// Give up the engine and keep its service (connections still open are dropped unannounced).
    pub fn into_service(self) -> S {
        self.driver.into_service()
    }

    /// The earliest timer, if any.
    pub fn next_timer(&self) -> Option<Instant> {
        self.driver.next_timer()
    }

    /// Handle one received IP packet.
    pub fn ingress(&mut self, packet: &[u8], sink: &mut impl IpSink, now: Instant) {
        let t = self.now(now).smol;
        let Some((key, seg)) = self.tcp_key(packet) else {
            self.stats.other_packets += 1;
            return self.without_socket(packet, sink, t);
        };
        let slot = match self.table.get(&key) {
            Some(&slot) => slot,
            None => match self.accept(packet, key, now) {
                Admission::Accepted(slot) => slot,
                Admission::Dropped => return,
                Admission::NoListener => return self.without_socket(packet, sink, t),
            },
        };
        let Some(f) = self.driver.io(slot) else {
            return;
        };
        let mut dev = self.cfg.device(Some(packet), sink);
        f.socket.poll_ingress(&mut self.iface, t, &mut dev);
        f.rx.seen(seg.seq, seg.syn, seg.len);
        if !f.received {
            f.received = true;
            self.received.push(slot);
        }
    }

    /// Let every connection that received something run its service and send, then send what
    /// was written to any other connection.
    pub fn process(&mut self, sink: &mut impl IpSink, now: Instant) {
        let mut received = std::mem::take(&mut self.received);
        let now = self.now(now);
        for slot in received.drain(..) {
            if let Some(f) = self.driver.io(slot) {
                f.received = false;
                // Received something this round: active (for the idle trim).
                f.active = now.ms;
                f.trimmed = false;
                self.turn(slot, sink, now);
            }
        }
        if self.received.is_empty() {
            self.received = received;
        }
        self.flush(sink, now.at);
    }

    /// Send what was written to connections outside their own turn (pushes, mailbox, tick), and
    /// move closing connections on.
    pub fn flush(&mut self, sink: &mut impl IpSink, now: Instant) {
        if !self.waiting.is_empty() && sink.has_room() {
            let now = self.now(now);
            self.send_waiting(sink, now, true);
        }
        if !self.driver.has_dirty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.flush);
        self.driver.take_dirty(&mut dirty);
        let now = self.now(now);
        // Only connections written to since their last step are listed (a step cleans its
        // connection). Without room, a connection's turn waits in line: its output stays queued
        // (and counts against its limit) until the NIC takes more.
        for &slot in &dirty {
            self.turn(slot as usize, sink, now);
        }
        dirty.clear();
        self.flush = dirty;
    }

    /// Connections waiting for room to send.
    pub fn waiting_to_send(&self) -> usize {
        self.waiting.len()
    }

    /// Give the connections waiting for room their turns, oldest first: while there is room,
    /// or (`while_room` false, at shutdown, so that each one's input reaches the service) all
    /// of them. One pass: a connection that still has more goes to the back of the line.
    fn send_waiting(&mut self, sink: &mut impl IpSink, now: Now, while_room: bool) {
        for _ in 0..self.waiting.len() {
            if while_room && !sink.has_room() {
                break;
            }
            let Some(slot) = self.waiting.pop_front() else {
                break;
            };
            let slot = slot as usize;
            // An entry left by a connection that closed while waiting finds its slot free, or
            // reused by a connection that is not waiting (or is, further back): skipped.
            match self.driver.io(slot) {
                Some(f) if f.waiting => f.waiting = false,
                _ => continue,
            }
            self.step(slot, sink, now);
        }
    }

    /// A connection's step now if the sink has room, else its place in the line: a step
    /// without room would take its input and leave its answer unsent, and be needed again.
    #[inline]
    fn turn(&mut self, slot: usize, sink: &mut impl IpSink, now: Now) {
        if sink.has_room() {
            self.step(slot, sink, now);
        } else {
            self.wait_for_room(slot);
        }
    }

    /// Put a connection in the line of those waiting for room to send (once).
    fn wait_for_room(&mut self, slot: usize) {
        if let Some(f) = self.driver.io(slot) {
            if !f.waiting {
                f.waiting = true;
                self.waiting.push_back(slot as u32);
                self.stats.egress_deferred += 1;
            }
        }
    }

    /// Run what is due: smoltcp's retransmissions and the service's deadlines.
    pub fn run_timers(&mut self, sink: &mut impl IpSink, now: Instant) {
        let mut fired = std::mem::take(&mut self.fired);
        self.driver.expire(now, &mut fired);
        let now = self.now(now);
        for (slot, expired) in fired.drain(..) {
            if expired {
                // Closing took longer than the linger: reset.
                if let Some(f) = self.driver.io(slot) {
                    f.socket.abort();
                }
            }
            self.turn(slot, sink, now);
        }
        self.fired = fired;
        self.flush(sink, now.at);
    }

    /// Open more of the connections of [`EngineConfig::dial`]: at most `burst` now, and never
    /// more than `max_half_open` pending. Returns how many are still to be opened.
    pub fn dial(&mut self, burst: usize, sink: &mut impl IpSink, now: Instant) -> usize {
        let Some(dial) = self.cfg.dial else {
            return 0;
        };
        let mut opened = 0;
        while self.dialed < dial.count
            && opened < burst
            && self.half_open < self.cfg.max_half_open
            && self.driver.len() < self.cfg.max_connections
            && !self.shutting_down
        {
            let Some(local) = dial.endpoint(self.dialed, self.cfg.ip, self.cfg.ip_count) else {
                tracing::warn!(
                    worker = self.cfg.worker,
                    opened = self.dialed,
                    "out of local addresses and ports: give the generator more addresses"
                );
                self.dialed = dial.count;
                break;
            };
            self.dialed += 1;
            let key = FlowKey {
                peer: *dial.remote.ip(),
                peer_port: dial.remote.port(),
                local: *local.ip(),
                port: local.port(),
            };
            if self.table.contains_key(&key) {
                continue; // still in use from an earlier round
            }
            let Some(mut socket) = self.new_socket() else {
                break;
            };
            if let Err(e) = socket.connect(&mut self.iface, dial.remote, local) {
                tracing::warn!(%local, remote = %dial.remote, error = %e, "cannot connect");
                self.stats.handshake_failed += 1;
                continue;
            }
            let slot = self.insert_flow(key, socket, now);
            self.stats.dialed += 1;
            opened += 1;
            let now = self.now(now);
            self.step(slot, sink, now);
        }
        dial.count - self.dialed
    }

    /// Stop accepting, drop handshakes under way, and ask the service to close every
    /// established connection.
    pub fn shutdown(&mut self, sink: &mut impl IpSink, now: Instant) {
        self.shutting_down = true;
        let at = now;
        let now = self.now(at);
        // Connections waiting for room may hold input not yet handed to the service: it is
        // answered before the service is asked to close (a step takes input whether or not
        // there is room; what it sends waits in line as before).
        self.send_waiting(sink, now, false);
        for slot in self.driver.slots() {
            if !self.driver.is_open(slot) {
                if let Some(f) = self.driver.io(slot) {
                    f.socket.abort();
                }
                self.step(slot, sink, now);
            }
        }
        self.driver.shutdown(at);
        self.flush(sink, at);
    }

    /// Let smoltcp handle a packet no connection owns, through the empty socket set: it answers
    /// TCP with RST (or drops a RST) and ICMP echo with a reply.
    fn without_socket(&mut self, packet: &[u8], sink: &mut impl IpSink, t: smoltcp::time::Instant) {
        let mut dev = self.cfg.device(Some(packet), sink);
        self.iface.poll_ingress_single(t, &mut dev, &mut self.empty);
    }

    /// The 4-tuple of a TCP segment addressed to us, if it is one, and where it sits in the
    /// sender's sequence space.
    fn tcp_key(&self, packet: &[u8]) -> Option<(FlowKey, Segment)> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        let ours = u32::from(ip.dst_addr()).wrapping_sub(u32::from(self.cfg.ip))
            < u32::from(self.cfg.ip_count.clamp(1, 8));
        if ip.next_header() != IpProtocol::Tcp || !ours || ip.more_frags() || ip.frag_offset() != 0
        {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        let header = usize::from(tcp.header_len());
        let key = FlowKey {
            peer: ip.src_addr(),
            peer_port: tcp.src_port(),
            local: ip.dst_addr(),
            port: tcp.dst_port(),
        };
        let seg = Segment {
            seq: tcp.seq_number().0 as u32,
            syn: tcp.syn(),
            len: ip.payload().len().saturating_sub(header) as u32,
        };
        Some((key, seg))
    }

    /// A SYN to the listening port: make a connection for it, if limits allow.
    fn accept(&mut self, packet: &[u8], key: FlowKey, now: Instant) -> Admission {
        let Some(tcp) = Ipv4Packet::new_checked(packet).ok().and_then(|ip| {
            TcpPacket::new_checked(ip.payload())
                .ok()
                .map(|t| (t.syn(), t.ack(), t.rst()))
        }) else {
            return Admission::NoListener;
        };
        if tcp != (true, false, false)
            || self.cfg.listen_port == 0
            || key.port != self.cfg.listen_port
            || self.shutting_down
        {
            return Admission::NoListener;
        }
        // Over a limit, say nothing (like a full accept queue): the client retransmits its SYN.
        if self.half_open >= self.cfg.max_half_open {
            self.stats.syn_dropped_half_open += 1;
            return Admission::Dropped;
        }
        if self.driver.len() >= self.cfg.max_connections {
            self.stats.syn_dropped_full += 1;
            return Admission::Dropped;
        }
        let Some(mut socket) = self.new_socket() else {
            return Admission::Dropped;
        };
        if socket.listen(self.cfg.listen_port).is_err() {
            return Admission::NoListener;
        }
        Admission::Accepted(self.insert_flow(key, socket, now))
    }

    /// A socket with our settings and rings from the arena, not yet listening or connecting;
    /// `None` (counted) if the rings' memory cannot be mapped.
    fn new_socket(&mut self) -> Option<ArenaSocket> {
        match self.arena.socket() {
            Ok(mut s) => {
                // A handshake nobody completes (a spoofed SYN) frees its half-open slot after
                // this.
                s.configure(HANDSHAKE_TIMEOUT);
                Some(s)
            }
            Err(e) => {
                self.stats.syn_dropped_memory += 1;
                tracing::warn!(error = %e, "cannot map memory for a connection's rings");
                None
            }
        }
    }

    /// Give a new, not yet established connection a slot and a flow table entry.
    fn insert_flow(&mut self, key: FlowKey, socket: ArenaSocket, now: Instant) -> usize {
        let active = self.driver.clock().floor(now);
        let slot = self.driver.insert(Flow {
            key,
            socket,
            received: false,
            waiting: false,
            active,
            trimmed: false,
            rx: RxSpace::default(),
        });
        self.table.insert(key, slot);
        self.half_open += 1;
        slot
    }

    /// The clock read at `at`; the last reading again if `at` is the same instant (a burst of
    /// packets, the connections of one call).
    #[inline]
    fn now(&mut self, at: Instant) -> Now {
        if at != self.last.at {
            let d = at.saturating_duration_since(self.epoch);
            self.last = Now {
                at,
                ms: d.as_millis() as Millis,
                smol: smoltcp::time::Instant::from_micros(d.as_micros() as i64),
            };
        }
        self.last
    }

    /// Move one connection forward: establishment, output into its socket, input to the
    /// service, end of input, egress, removal once closed, and its next timer.
    fn step(&mut self, slot: usize, sink: &mut impl IpSink, now: Now) {
        let Some((f, view)) = self.driver.peek(slot) else {
            return;
        };
        let mut open = view.open;
        if !open && f.socket.state() == tcp::State::Established {
            // From now on the timeout only ends connections whose sent data goes unacknowledged.
            f.socket.set_timeout(UNACKED_TIMEOUT);
            let peer = SocketAddr::V4(SocketAddrV4::new(f.key.peer, f.key.peer_port));
            self.half_open -= 1;
            self.stats.accepted += 1;
            self.driver.open(slot, peer, now.at);
            open = true;
        }
        if open {
            self.write(slot, now.at);
            loop {
                let Some((f, view)) = self.driver.peek(slot) else {
                    return;
                };
                if !view.wants_input() || !f.socket.tcp().can_recv() {
                    break;
                }
                if view.over_limit {
                    self.stats.backpressure_pauses += 1;
                    break;
                }
                // The service decodes in place in the socket's receive ring.
                self.driver.input_in_place(slot, now.at, |f, deliver| {
                    let taken = f.socket.recv(|buf| {
                        deliver(buf);
                        (buf.len(), buf.len())
                    });
                    f.rx.taken = f.rx.taken.wrapping_add(taken.unwrap_or(0) as u32);
                });
                self.write(slot, now.at);
            }
            let Some(f) = self.driver.io(slot) else {
                return;
            };
            let s = f.socket.tcp();
            if !s.may_recv() && !s.can_recv() && s.state() != tcp::State::Listen {
                // Already draining: smoltcp completes the close on its own.
                self.driver.eof(slot, now.at);
                self.write(slot, now.at);
            }
        }
        let Some((f, view)) = self.driver.peek(slot) else {
            return;
        };
        // Egress: every segment the socket has ready, up to a turn's worth and while the sink
        // has room; what is left waits in line.
        let mut more = false;
        {
            let mut dev = self.cfg.device(None, sink);
            let mut sent = 0;
            while f.socket.poll_egress(&mut self.iface, now.smol, &mut dev) {
                sent += 1;
                if sent == EGRESS_TURN || !dev.has_room() {
                    more = true;
                    break;
                }
            }
            if sent == 0 && !dev.has_room() {
                // Refused before its first segment (or had none): look again with room.
                more = true;
            }
        }
        // TIME-WAIT holds nothing we need: the server closed last, the peer has its answer.
        if matches!(f.socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
            return self.remove(slot, now.at);
        }
        // Quiet for IDLE_TRIM with nothing in either ring: hand the ring pages (and the output
        // buffer) back.
        let mut trim_at = (!f.trimmed).then(|| f.active.saturating_add(IDLE_TRIM_MS));
        let mut quiet = false;
        if trim_at.is_some_and(|at| at <= now.ms) {
            let s = f.socket.tcp();
            // Empty means also nothing held beyond a hole: smoltcp keeps out-of-order segments
            // in the ring without counting them, and zeroed pages would become their bytes.
            if s.recv_queue() == 0
                && s.send_queue() == 0
                && view.unsent == 0
                && f.rx.nothing_beyond(0)
            {
                match self.arena.trim(&f.socket) {
                    Ok(()) => self.stats.rings_trimmed += 1,
                    Err(e) => tracing::debug!(error = %e, "cannot trim a connection's rings"),
                }
                f.trimmed = true;
                trim_at = None;
                quiet = true;
            } else {
                // Not empty yet: look again a little later.
                trim_at = Some(now.ms + IDLE_TRIM_MS);
            }
        }
        // Arm the earliest of smoltcp's next action and the trim (the driver adds the
        // service's deadline).
        // smoltcp's clock and the driver's share their zero: microseconds rounded up to
        // milliseconds, so the timer never fires before smoltcp's instant.
        // A connection waiting for room is stepped from the line, not by a timer: smoltcp would
        // ask for "now" (it has data to send) on every millisecond while the NIC is full.
        let smol_at = if more {
            None
        } else {
            f.socket
                .poll_at(&mut self.iface, now.smol)
                .map(|at| (at.total_micros().max(0) as u64).div_ceil(1000) as Millis)
        };
        let extra = match (smol_at, trim_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if more {
            self.wait_for_room(slot);
        }
        if quiet {
            self.driver.release(slot);
        }
        self.driver.arm(slot, extra);
        // Everything queued so far went to the socket (or waits for room the peer's ACKs make,
        // which step it again): the flush pass need not step it again.
        self.driver.clean(slot);
    }

    /// Move the connection's output into its socket's send ring; shut down our side once the
    /// service is done and everything is in.
    fn write(&mut self, slot: usize, now: Instant) {
        // Nothing to write and not closing: nothing to do (most calls, before input).
        match self.driver.peek(slot) {
            Some((_, view)) if view.unsent > 0 || view.phase != Phase::Open => {}
            _ => return,
        }
        let Some((f, out)) = self.driver.output(slot) else {
            return;
        };
        if f.socket.tcp().may_send() {
            while !out.is_empty() {
                let run = out.front(&[]);
                let len = run.len();
                let n = f.socket.send_slice(run);
                out.advance(n);
                if n < len {
                    break;
                }
            }
        }
        match self.driver.flushed(slot, now) {
            Flushed::Continue => {}
            Flushed::ShutDown | Flushed::Close => {
                if let Some(f) = self.driver.io(slot) {
                    f.socket.close();
                }
            }
        }
    }

    /// The socket is closed: release the connection.
    fn remove(&mut self, slot: usize, now: Instant) {
        let established = self.driver.is_open(slot);
        // Closed while the service still wanted it open: a reset or a timeout.
        let cause = match self.driver.phase(slot) {
            Some(Phase::Open) => CloseCause::Error,
            _ => CloseCause::Done,
        };
        if let Some(f) = self.driver.close(slot, cause, now) {
            self.table.remove(&f.key);
        }
        if established {
            self.stats.closed += 1;
        } else {
            self.half_open -= 1;
            self.stats.handshake_failed += 1;
        }
    }
}

/// [`IDLE_TRIM`] on the driver's millisecond clock.
const IDLE_TRIM_MS: Millis = IDLE_TRIM.as_millis() as Millis;

fn smol(epoch: Instant, now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(epoch).as_micros() as i64)
}
