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
//! The engine never touches a NIC: the DPDK worker feeds it packets from mbufs and gives it a sink
//! that frames what it emits. Tests drive it with plain byte buffers.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::time::{Duration, Instant};

use slab::Slab;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, IpProtocol, Ipv4Packet, TcpPacket};

use super::device::{IpSink, PacketDevice};
use super::rings::{RingArena, RingSlot};
use crate::service::{CloseCause, ConnId, Service, Verdict};
use crate::timer::{Clock, Entry, Millis, Timers, NEVER};

/// How long a connection may stay half-open (SYN received, handshake not completed).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long sent data may stay unacknowledged before the connection is reset.
pub const UNACKED_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a connection must be quiet, with both rings empty, before its ring pages go back to
/// the kernel.
pub const IDLE_TRIM: Duration = Duration::from_secs(1);

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

/// What became of a segment that matched no flow.
enum Admission {
    /// A SYN to the listening port: this slot now holds its connection.
    Accepted(usize),
    /// A SYN over a limit: dropped without an answer.
    Dropped,
    /// Not a connection request for us: smoltcp answers it (RST).
    NoListener,
}

struct Flow<C> {
    key: FlowKey,
    /// Holds the socket, whose rings live in `rings`: declared first, so it drops first.
    set: SocketSet<'static>,
    handle: SocketHandle,
    /// The service's state, once the connection is established.
    conn: Option<C>,
    out: Output,
    /// The service asked to close: send what is left, then FIN.
    closing: bool,
    /// The peer's FIN was reported to the service.
    eof_reported: bool,
    dirty: bool,
    armed: Millis,
    generation: u32,
    /// The last round in which it received a packet (for the idle trim).
    active: Millis,
    /// The ring pages were handed back since the last activity.
    trimmed: bool,
    /// The memory of the socket's rings; returns to the arena when the flow drops.
    rings: RingSlot,
}

/// One worker's TCP engine.
pub struct Engine<S: Service> {
    cfg: EngineConfig,
    iface: Interface,
    service: S,
    flows: Slab<Flow<S::Conn>>,
    table: HashMap<FlowKey, usize>,
    empty: SocketSet<'static>,
    dirty: Vec<usize>,
    half_open: usize,
    timers: Timers,
    due: Vec<Entry>,
    clock: Clock,
    epoch: Instant,
    generation: u32,
    stats: EngineStats,
    shutting_down: bool,
    /// Connections of [`EngineConfig::dial`] opened so far.
    dialed: usize,
    /// Declared after `flows`: every socket is gone before the arena is.
    arena: RingArena,
}

impl<S: Service> Engine<S> {
    /// An engine for `service`; `sink` is only used to ask smoltcp's device capabilities.
    pub fn new(cfg: EngineConfig, service: S, sink: &mut impl IpSink, now: Instant) -> Self {
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
        let arena = RingArena::new(cfg.tcp_rx_buf, cfg.tcp_tx_buf);
        Self {
            cfg,
            iface,
            service,
            flows: Slab::new(),
            table: HashMap::new(),
            empty: SocketSet::new(Vec::new()),
            dirty: Vec::new(),
            half_open: 0,
            timers: Timers::default(),
            due: Vec::new(),
            clock: Clock::new(),
            epoch,
            generation: 0,
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

    /// Open connections (established or not).
    pub fn connections(&self) -> usize {
        self.flows.len()
    }

    /// Connections not yet established.
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// Every connection's queued output: unsent by the service, plus sent and unacknowledged in
    /// its socket. A scan of every connection: for probes, about once a second.
    pub fn queued(&self) -> impl Iterator<Item = crate::meter::Queued> + '_ {
        self.flows.iter().map(|(slot, f)| {
            let in_socket = f.set.get::<tcp::Socket>(f.handle).send_queue();
            crate::meter::Queued {
                slot: slot as u32,
                bytes: (f.out.unsent() + in_socket) as u64,
            }
        })
    }

    /// Change the limits while serving: unsent output per connection before its input waits, and
    /// connections at most (existing ones above a lowered limit stay).
    pub fn set_limits(&mut self, backpressure_limit: usize, max_connections: usize) {
        self.cfg.backpressure_limit = backpressure_limit;
        self.cfg.max_connections = max_connections;
    }

    /// Let the service publish what this loop iteration changed ([`Service::on_tick`]); if its
    /// deadlines moved, give every connection a turn so its timer is armed anew.
    pub fn tick(&mut self, sink: &mut impl IpSink, now: Instant) {
        if self.service.on_tick(now) {
            let slots: Vec<usize> = self.flows.iter().map(|(slot, _)| slot).collect();
            for slot in slots {
                self.step(slot, sink, now);
            }
        }
    }

    /// Give up the engine and keep its service (connections still open are dropped unannounced).
    pub fn into_service(self) -> S {
        self.service
    }

    /// The earliest timer, if any.
    pub fn next_timer(&self) -> Option<Instant> {
        self.timers.next().map(|ms| self.clock.instant(ms))
    }

    /// Handle one received IP packet.
    pub fn ingress(&mut self, packet: &[u8], sink: &mut impl IpSink, now: Instant) {
        let t = smol(self.epoch, now);
        let Some(key) = self.tcp_key(packet) else {
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
        let flow = &mut self.flows[slot];
        let mut dev = self.cfg.device(Some(packet), sink);
        self.iface.poll_ingress_single(t, &mut dev, &mut flow.set);
        if !flow.dirty {
            flow.dirty = true;
            self.dirty.push(slot);
        }
    }

    /// Let every connection that received something run its service and send.
    pub fn process(&mut self, sink: &mut impl IpSink, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        // Received something this round: the connection is active (for the idle trim).
        let active = self.clock.floor(now);
        for slot in dirty.drain(..) {
            if let Some(f) = self.flows.get_mut(slot) {
                f.dirty = false;
                f.active = active;
                f.trimmed = false;
                self.step(slot, sink, now);
            }
        }
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Run what is due: smoltcp's retransmissions and the service's deadlines.
    pub fn run_timers(&mut self, sink: &mut impl IpSink, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        self.timers.take_due(self.clock.floor(now), &mut due);
        for e in due.drain(..) {
            let slot = e.slot as usize;
            let Some(f) = self.flows.get_mut(slot) else {
                continue;
            };
            if f.generation != e.generation || f.armed != e.at {
                continue;
            }
            f.armed = NEVER;
            if let Some(conn) = f.conn.as_mut() {
                if !f.closing
                    && self.service.deadline(conn).is_some_and(|d| d <= now)
                    && self.service.on_deadline(conn, &mut f.out.buf, now) == Verdict::Close
                {
                    f.closing = true;
                }
            }
            self.step(slot, sink, now);
        }
        self.due = due;
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
            && self.flows.len() < self.cfg.max_connections
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
            let Some((mut socket, rings)) = self.new_socket() else {
                break;
            };
            if let Err(e) = socket.connect(self.iface.context(), dial.remote, local) {
                tracing::warn!(%local, remote = %dial.remote, error = %e, "cannot connect");
                self.stats.handshake_failed += 1;
                continue;
            }
            let slot = self.insert_flow(key, socket, rings, now);
            self.stats.dialed += 1;
            opened += 1;
            self.step(slot, sink, now);
        }
        dial.count - self.dialed
    }

    /// Stop accepting and ask the service to close every established connection.
    pub fn shutdown(&mut self, sink: &mut impl IpSink, now: Instant) {
        self.shutting_down = true;
        let slots: Vec<usize> = self.flows.iter().map(|(s, _)| s).collect();
        for slot in slots {
            let f = &mut self.flows[slot];
            if let Some(conn) = f.conn.as_mut() {
                if self.service.on_shutdown(conn, &mut f.out.buf, now) == Verdict::Close {
                    f.closing = true;
                }
            }
            self.step(slot, sink, now);
        }
    }

    /// Let smoltcp handle a packet no connection owns, through the empty socket set: it answers
    /// TCP with RST (or drops a RST) and ICMP echo with a reply.
    fn without_socket(&mut self, packet: &[u8], sink: &mut impl IpSink, t: smoltcp::time::Instant) {
        let mut dev = self.cfg.device(Some(packet), sink);
        self.iface.poll_ingress_single(t, &mut dev, &mut self.empty);
    }

    /// The 4-tuple of a TCP segment addressed to us, if it is one.
    fn tcp_key(&self, packet: &[u8]) -> Option<FlowKey> {
        let ip = Ipv4Packet::new_checked(packet).ok()?;
        let ours = u32::from(ip.dst_addr()).wrapping_sub(u32::from(self.cfg.ip))
            < u32::from(self.cfg.ip_count.clamp(1, 8));
        if ip.next_header() != IpProtocol::Tcp || !ours || ip.more_frags() || ip.frag_offset() != 0
        {
            return None;
        }
        let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
        Some(FlowKey {
            peer: ip.src_addr(),
            peer_port: tcp.src_port(),
            local: ip.dst_addr(),
            port: tcp.dst_port(),
        })
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
        if self.flows.len() >= self.cfg.max_connections {
            self.stats.syn_dropped_full += 1;
            return Admission::Dropped;
        }
        let Some((mut socket, rings)) = self.new_socket() else {
            return Admission::Dropped;
        };
        if socket.listen(self.cfg.listen_port).is_err() {
            return Admission::NoListener;
        }
        Admission::Accepted(self.insert_flow(key, socket, rings, now))
    }

    /// A socket with our settings and rings from the arena, not yet listening or connecting;
    /// `None` (counted) if the rings' memory cannot be mapped.
    fn new_socket(&mut self) -> Option<(tcp::Socket<'static>, RingSlot)> {
        // SAFETY: the socket goes into a flow's socket set and the slot into the same flow's
        // `rings`, declared after `set`: the rings are never used after their slot is released.
        #[allow(unsafe_code)]
        let rings = match unsafe { self.arena.alloc() } {
            Ok(r) => r,
            Err(e) => {
                self.stats.syn_dropped_memory += 1;
                tracing::warn!(error = %e, "cannot map memory for a connection's rings");
                return None;
            }
        };
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(rings.rx),
            tcp::SocketBuffer::new(rings.tx),
        );
        socket.set_nagle_enabled(false);
        socket.set_congestion_control(tcp::CongestionControl::Cubic);
        // A handshake nobody completes (a spoofed SYN) frees its half-open slot after this.
        socket.set_timeout(Some(smoltcp::time::Duration::from_millis(
            HANDSHAKE_TIMEOUT.as_millis() as u64,
        )));
        Some((socket, rings.slot))
    }

    /// Give a new, not yet established connection its own socket set and a flow table entry.
    fn insert_flow(
        &mut self,
        key: FlowKey,
        socket: tcp::Socket<'static>,
        rings: RingSlot,
        now: Instant,
    ) -> usize {
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        self.generation = self.generation.wrapping_add(1);
        let slot = self.flows.insert(Flow {
            key,
            set,
            handle,
            conn: None,
            out: Output::default(),
            closing: false,
            eof_reported: false,
            dirty: false,
            armed: NEVER,
            generation: self.generation,
            active: self.clock.floor(now),
            trimmed: false,
            rings,
        });
        self.table.insert(key, slot);
        self.half_open += 1;
        slot
    }

    /// Move one connection forward: establishment, input to the service, output to the socket,
    /// close, egress, timers, and removal once closed.
    fn step(&mut self, slot: usize, sink: &mut impl IpSink, now: Instant) {
        let t = smol(self.epoch, now);
        let Some(f) = self.flows.get_mut(slot) else {
            return;
        };
        let socket = f.set.get_mut::<tcp::Socket>(f.handle);
        if f.conn.is_none() && socket.state() == tcp::State::Established {
            self.half_open -= 1;
            self.stats.accepted += 1;
            let peer = SocketAddr::V4(SocketAddrV4::new(f.key.peer, f.key.peer_port));
            let id = ConnId {
                worker: self.cfg.worker,
                slot: slot as u32,
            };
            let mut conn = self.service.open(id, peer, now);
            if self.service.greet(&mut conn, &mut f.out.buf, now) == Verdict::Close {
                f.closing = true;
            }
            f.conn = Some(conn);
            // From now on the timeout only ends connections whose sent data goes unacknowledged.
            socket.set_timeout(Some(smoltcp::time::Duration::from_millis(
                UNACKED_TIMEOUT.as_millis() as u64,
            )));
        }
        if let Some(conn) = f.conn.as_mut() {
            f.out.flush(socket);
            while !f.closing && f.out.unsent() <= self.cfg.backpressure_limit && socket.can_recv() {
                let service = &mut self.service;
                let out = &mut f.out.buf;
                let verdict = socket.recv(|buf| {
                    let n = buf.len();
                    (n, service.on_data(conn, buf, out, now))
                });
                f.out.flush(socket);
                if verdict == Ok(Verdict::Close) {
                    f.closing = true;
                }
            }
            if !f.closing && socket.can_recv() && f.out.unsent() > self.cfg.backpressure_limit {
                self.stats.backpressure_pauses += 1;
            }
            if !f.eof_reported
                && !socket.may_recv()
                && !socket.can_recv()
                && socket.state() != tcp::State::Listen
            {
                f.eof_reported = true;
                if self.service.on_eof(conn, &mut f.out.buf, now) == Verdict::Close {
                    f.closing = true;
                }
                f.out.flush(socket);
            }
            if f.closing && f.out.unsent() == 0 && socket.may_send() {
                socket.close();
            }
        }
        {
            let mut dev = self.cfg.device(None, sink);
            self.iface.poll_egress(t, &mut dev, &mut f.set);
        }
        let socket = f.set.get_mut::<tcp::Socket>(f.handle);
        // TIME-WAIT holds nothing we need: the server closed last, the peer has its answer.
        if matches!(socket.state(), tcp::State::Closed | tcp::State::TimeWait) {
            let f = self.flows.remove(slot);
            self.table.remove(&f.key);
            match f.conn {
                Some(conn) => {
                    self.stats.closed += 1;
                    self.service.on_close(conn, CloseCause::Done);
                }
                None => {
                    self.half_open -= 1;
                    self.stats.handshake_failed += 1;
                }
            }
            return;
        }
        // Quiet for IDLE_TRIM with nothing in either ring: hand the ring pages back.
        let trim_at = (!f.trimmed).then(|| self.clock.instant(f.active) + IDLE_TRIM);
        let trim_at = match trim_at {
            Some(at) if at <= now => {
                if socket.recv_queue() == 0 && socket.send_queue() == 0 && f.out.unsent() == 0 {
                    match self.arena.trim(&f.rings) {
                        Ok(()) => self.stats.rings_trimmed += 1,
                        Err(e) => tracing::debug!(error = %e, "cannot trim a connection's rings"),
                    }
                    f.trimmed = true;
                    None
                } else {
                    // Not empty yet: look again a little later.
                    Some(now + IDLE_TRIM)
                }
            }
            other => other,
        };
        // Arm the earliest of smoltcp's next action, the service's deadline and the trim.
        let smol_at = self
            .iface
            .poll_at(t, &f.set)
            .map(|at| self.epoch + Duration::from_micros(at.total_micros() as u64));
        let svc_at = f
            .conn
            .as_ref()
            .filter(|_| !f.closing)
            .and_then(|c| self.service.deadline(c));
        let at = [smol_at, svc_at, trim_at].into_iter().flatten().min();
        if let Some(at) = at {
            let at = self.clock.ceil(at);
            if at < f.armed {
                f.armed = at;
                self.timers.push(Entry {
                    at,
                    slot: slot as u32,
                    generation: f.generation,
                });
            }
        }
    }
}

/// A connection's output waiting for room in its socket's send buffer. Sent bytes are skipped
/// with an offset and compacted only once they are at least half the buffer, so a backlog larger
/// than the TCP window is not moved again on every flush (that was a third of the CPU at 16 KiB).
#[derive(Debug, Default)]
struct Output {
    /// What services append to.
    buf: Vec<u8>,
    /// Bytes of `buf` already in the socket.
    sent: usize,
}

impl Output {
    fn unsent(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Move as much as fits into the socket's send buffer.
    fn flush(&mut self, socket: &mut tcp::Socket<'_>) {
        if self.unsent() == 0 || !socket.may_send() {
            return;
        }
        if let Ok(n) = socket.send_slice(&self.buf[self.sent..]) {
            self.sent += n;
            if self.sent == self.buf.len() {
                self.buf.clear();
                self.sent = 0;
            } else if self.sent >= 4096 && self.sent * 2 >= self.buf.len() {
                self.buf.drain(..self.sent);
                self.sent = 0;
            }
        }
    }
}

fn smol(epoch: Instant, now: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(epoch).as_micros() as i64)
}
