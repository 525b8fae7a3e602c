//! The TCP engine against a smoltcp client, packets carried in memory: no NIC needed.

mod common;

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::{Echo, Greeter, GREETING};

use hioload_stack::net::device::IpSink;
use hioload_stack::net::engine::{Dial, Engine, EngineConfig};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Packet, TcpControl, TcpPacket};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);
const PORT: u16 = 7000;

/// Packets in flight one way. With a budget it plays a NIC whose transmit ring takes only that
/// many packets per round: it never drops, but says it has no room once the round's are taken.
#[derive(Default)]
struct Queue(VecDeque<Vec<u8>>, Budget);

#[derive(Default)]
struct Budget {
    /// Packets per round; 0: no limit.
    per_round: usize,
    /// Packets emitted this round.
    this_round: usize,
    /// Packets emitted although the round's budget was spent.
    over: usize,
}

impl IpSink for Queue {
    fn emit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        if !self.has_room() {
            self.1.over += 1;
        }
        let mut buf = vec![0; len];
        let r = fill(&mut buf);
        self.0.push_back(buf);
        self.1.this_round += 1;
        r
    }

    fn has_room(&self) -> bool {
        self.1.per_round == 0 || self.1.this_round < self.1.per_round
    }
}

/// The client's device: receives from one queue, sends into another.
struct ClientDev<'a> {
    rx: &'a mut Queue,
    tx: &'a mut Queue,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Queue);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.emit(len, f)
    }
}

impl Device for ClientDev<'_> {
    type RxToken<'b>
        = Rx
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;
    fn receive(&mut self, _: smoltcp::time::Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.0.pop_front()?;
        Some((Rx(p), Tx(self.tx)))
    }
    fn transmit(&mut self, _: smoltcp::time::Instant) -> Option<Tx<'_>> {
        Some(Tx(self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ip;
        c.max_transmission_unit = 1500;
        c
    }
}

fn config(max_half_open: usize) -> EngineConfig {
    EngineConfig {
        worker: 0,
        ip: SERVER,
        ip_count: 1,
        prefix: 24,
        listen_port: PORT,
        tcp_rx_buf: 4096,
        tcp_tx_buf: 4096,
        max_half_open,
        max_connections: 1000,
        backpressure_limit: 1 << 20,
        mtu: 1500,
        tx_checksum_offload: false,
        dial: None,
        ..EngineConfig::default()
    }
}

struct World {
    engine: Engine<Echo>,
    client: Interface,
    sockets: SocketSet<'static>,
    c2s: Queue,
    s2c: Queue,
    t0: Instant,
    now: Instant,
}

impl World {
    fn new(max_half_open: usize) -> Self {
        let t0 = Instant::now();
        let mut s2c = Queue::default();
        let mut c2s = Queue::default();
        let engine = Engine::new(config(max_half_open), Echo, &mut s2c, t0);
        let mut client = {
            let mut dev = ClientDev {
                rx: &mut s2c,
                tx: &mut c2s,
            };
            Interface::new(
                Config::new(HardwareAddress::Ip),
                &mut dev,
                smoltcp::time::Instant::from_millis(0),
            )
        };
        client.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(CLIENT), 24)).unwrap());
        Self {
            engine,
            client,
            sockets: SocketSet::new(Vec::new()),
            c2s,
            s2c,
            t0,
            now: t0,
        }
    }

    /// Exchange packets until nothing moves, advancing virtual time by 1 ms per round.
    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.round();
        }
    }

    /// One round of 1 ms.
    fn round(&mut self) {
        self.s2c.1.this_round = 0;
        {
            self.now += Duration::from_millis(1);
            let t = smoltcp::time::Instant::from_micros((self.now - self.t0).as_micros() as i64);
            let mut dev = ClientDev {
                rx: &mut self.s2c,
                tx: &mut self.c2s,
            };
            self.client.poll(t, &mut dev, &mut self.sockets);
            while let Some(p) = self.c2s.0.pop_front() {
                self.engine.ingress(&p, &mut self.s2c, self.now);
            }
            self.engine.process(&mut self.s2c, self.now);
            self.engine.run_timers(&mut self.s2c, self.now);
        }
    }

    fn connect(&mut self, local_port: u16) -> smoltcp::iface::SocketHandle {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        );
        s.connect(
            self.client.context(),
            (IpAddress::Ipv4(SERVER), PORT),
            local_port,
        )
        .unwrap();
        self.sockets.add(s)
    }
}

/// Move what `s` has received into `got`.
fn drain(s: &mut tcp::Socket, got: &mut Vec<u8>) {
    while s.can_recv() {
        s.recv(|b| {
            got.extend_from_slice(b);
            (b.len(), ())
        })
        .unwrap();
    }
}

#[test]
fn echo_half_close_and_cleanup() {
    let mut w = World::new(16);
    let h = w.connect(40000);
    w.run(5);
    assert_eq!(
        w.sockets.get::<tcp::Socket>(h).state(),
        tcp::State::Established
    );
    assert_eq!((w.engine.connections(), w.engine.half_open()), (1, 0));
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    for _ in 0..2000 {
        let s = w.sockets.get_mut::<tcp::Socket>(h);
        if sent < payload.len() {
            sent += s.send_slice(&payload[sent..]).unwrap();
        }
        drain(s, &mut got);
        if got.len() == payload.len() {
            break;
        }
        w.run(1);
    }
    assert!(
        got == payload,
        "echoed {} of {} bytes",
        got.len(),
        payload.len()
    );
    // Half-close: the engine finishes and closes; the flow is removed.
    w.sockets.get_mut::<tcp::Socket>(h).close();
    w.run(50);
    assert_eq!(w.engine.connections(), 0, "flow removed after the close");
    assert_eq!((w.engine.stats().accepted, w.engine.stats().closed), (1, 1));
    assert!(matches!(
        w.sockets.get::<tcp::Socket>(h).state(),
        tcp::State::TimeWait | tcp::State::Closed
    ));
}

#[test]
fn many_connections_each_get_their_own_echo() {
    let mut w = World::new(1000);
    let handles: Vec<_> = (0..200).map(|i| w.connect(41000 + i)).collect();
    w.run(10);
    assert_eq!(w.engine.connections(), 200);
    for (i, h) in handles.iter().enumerate() {
        w.sockets
            .get_mut::<tcp::Socket>(*h)
            .send_slice(format!("conn {i}").as_bytes())
            .unwrap();
    }
    w.run(10);
    for (i, h) in handles.iter().enumerate() {
        let s = w.sockets.get_mut::<tcp::Socket>(*h);
        let mut got = Vec::new();
        s.recv(|b| {
            got.extend_from_slice(b);
            (b.len(), ())
        })
        .unwrap();
        assert_eq!(got, format!("conn {i}").as_bytes());
    }
}

/// A raw TCP segment from the client.
fn segment(src_port: u16, dst_port: u16, syn: bool, payload: &[u8]) -> Vec<u8> {
    let control = if syn {
        TcpControl::Syn
    } else {
        TcpControl::None
    };
    common::tcp_segment(
        (CLIENT, src_port),
        (SERVER, dst_port),
        control,
        1000,
        payload,
    )
}

#[test]
fn unknown_segments_get_rst_and_syn_floods_stop_at_the_half_open_cap() {
    let mut w = World::new(8);
    let mut out = Queue::default();
    // A data segment with no connection: RST.
    w.engine
        .ingress(&segment(5555, PORT, false, b"stray"), &mut out, w.now);
    let rst = out.0.pop_front().expect("an answer");
    let ip = Ipv4Packet::new_checked(&rst[..]).unwrap();
    assert!(TcpPacket::new_checked(ip.payload()).unwrap().rst());
    // A SYN to a port nobody listens on: RST too.
    w.engine
        .ingress(&segment(5556, PORT + 1, true, b""), &mut out, w.now);
    assert!(out.0.pop_front().is_some_and(|p| TcpPacket::new_checked(
        Ipv4Packet::new_checked(&p[..]).unwrap().payload()
    )
    .unwrap()
    .rst()));
    // A flood of SYNs that never complete: only 8 connections are made.
    for port in 0..1000u16 {
        w.engine
            .ingress(&segment(20000 + port, PORT, true, b""), &mut out, w.now);
    }
    w.engine.process(&mut out, w.now);
    // SYNs over the cap are dropped silently (the client retries), not answered with RST.
    let rsts = out
        .0
        .iter()
        .filter(|p| {
            TcpPacket::new_checked(Ipv4Packet::new_checked(&p[..]).unwrap().payload())
                .unwrap()
                .rst()
        })
        .count();
    assert_eq!((rsts, out.0.len()), (0, 8), "only the 8 SYN-ACKs go out");
    out.0.clear();
    assert_eq!((w.engine.connections(), w.engine.half_open()), (8, 8));
    assert_eq!(w.engine.stats().syn_dropped_half_open, 992);
    // Nobody completes those handshakes: after the handshake timeout the slots are free again,
    // and a real client gets in.
    for _ in 0..(hioload_stack::net::engine::HANDSHAKE_TIMEOUT.as_millis() / 100 + 20) {
        w.now += Duration::from_millis(100);
        w.engine.run_timers(&mut out, w.now);
    }
    assert_eq!((w.engine.connections(), w.engine.half_open()), (0, 0));
    let h = w.connect(40001);
    w.run(5);
    assert_eq!(
        w.sockets.get::<tcp::Socket>(h).state(),
        tcp::State::Established
    );
}

#[test]
fn a_dialing_engine_reaches_a_listening_one_from_several_addresses() {
    const COUNT: usize = 40;
    let t0 = Instant::now();
    let (mut c2s, mut s2c) = (Queue::default(), Queue::default());
    let mut server = Engine::new(config(64), Echo, &mut s2c, t0);
    let dial = Dial {
        remote: SocketAddrV4::new(SERVER, PORT),
        count: COUNT,
        // Start 10 endpoints before the end of the first address's ports: the rest use the second.
        first: usize::from(Dial::PORTS.end - Dial::PORTS.start) - 10,
        stride: 1,
    };
    let mut client = Engine::new(
        EngineConfig {
            ip: CLIENT,
            ip_count: 2,
            listen_port: 0,
            max_half_open: 8,
            dial: Some(dial),
            ..config(8)
        },
        Greeter::default(),
        &mut c2s,
        t0,
    );
    let mut sources = std::collections::BTreeSet::new();
    let mut now = t0;
    for _ in 0..400 {
        now += Duration::from_millis(1);
        client.dial(4, &mut c2s, now);
        while let Some(p) = c2s.0.pop_front() {
            sources.insert(Ipv4Packet::new_checked(&p[..]).unwrap().src_addr());
            server.ingress(&p, &mut s2c, now);
        }
        server.process(&mut s2c, now);
        server.run_timers(&mut s2c, now);
        while let Some(p) = s2c.0.pop_front() {
            client.ingress(&p, &mut c2s, now);
        }
        client.process(&mut c2s, now);
        client.run_timers(&mut c2s, now);
        assert!(
            client.half_open() <= 8,
            "the half-open cap holds for dialing"
        );
        if client.service().closed == COUNT && server.connections() == 0 {
            break;
        }
    }
    let g = client.service();
    assert_eq!(
        (g.peers.len(), g.echoed, g.closed),
        (COUNT, COUNT * GREETING.len(), COUNT)
    );
    assert!(g.peers.iter().all(|p| *p == (SERVER, PORT).into()));
    assert_eq!(client.stats().dialed, COUNT as u64);
    assert_eq!(client.stats().handshake_failed, 0);
    assert_eq!(server.stats().accepted, COUNT as u64);
    assert_eq!(
        sources.into_iter().collect::<Vec<_>>(),
        [CLIENT, Ipv4Addr::new(10, 0, 0, 10)],
        "both client addresses were used"
    );
    assert_eq!(client.dial(4, &mut c2s, now), 0, "nothing left to dial");
}

#[test]
fn dial_endpoints_run_out_instead_of_wrapping() {
    let dial = Dial {
        remote: SocketAddrV4::new(SERVER, PORT),
        count: 1,
        first: 3,
        stride: 2,
    };
    let ports = usize::from(Dial::PORTS.end - Dial::PORTS.start);
    assert_eq!(
        dial.endpoint(0, CLIENT, 1),
        Some(SocketAddrV4::new(CLIENT, Dial::PORTS.start + 3))
    );
    // Endpoint 3 + 2k = ports is the second address's first port.
    let k = (ports - 3) / 2;
    assert_eq!(
        dial.endpoint(k, CLIENT, 2),
        Some(SocketAddrV4::new(
            Ipv4Addr::new(10, 0, 0, 10),
            Dial::PORTS.start
        ))
    );
    assert_eq!(
        dial.endpoint(k - 1, CLIENT, 1),
        Some(SocketAddrV4::new(CLIENT, Dial::PORTS.end - 2))
    );
    assert_eq!(dial.endpoint(k, CLIENT, 1), None);
    assert_eq!(dial.endpoint(usize::MAX, CLIENT, 8), None);
}

/// Echo `data` over the connection `h`; returns what came back.
fn echo_round(w: &mut World, h: smoltcp::iface::SocketHandle, data: &[u8]) -> Vec<u8> {
    let mut got = Vec::new();
    w.sockets
        .get_mut::<tcp::Socket>(h)
        .send_slice(data)
        .unwrap();
    for _ in 0..100 {
        w.run(1);
        let s = w.sockets.get_mut::<tcp::Socket>(h);
        drain(s, &mut got);
        if got.len() >= data.len() {
            break;
        }
    }
    got
}

#[test]
fn idle_connections_give_their_ring_pages_back_and_keep_working() {
    let mut w = World::new(16);
    let h = w.connect(40001);
    w.run(5);
    assert_eq!(echo_round(&mut w, h, b"before idling"), b"before idling");
    assert_eq!(
        w.engine.stats().rings_trimmed,
        0,
        "busy connections keep their rings"
    );
    // Quiet for longer than IDLE_TRIM (virtual time: 1 ms per round).
    w.run(1100);
    assert_eq!(w.engine.stats().rings_trimmed, 1, "trimmed once while idle");
    w.run(1100);
    assert_eq!(
        w.engine.stats().rings_trimmed,
        1,
        "and not again until it has been used"
    );
    let big: Vec<u8> = (0..3000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(
        echo_round(&mut w, h, &big),
        big,
        "the rings work after the trim"
    );
    w.run(1100);
    assert_eq!(
        w.engine.stats().rings_trimmed,
        2,
        "idle again, trimmed again"
    );
}

/// The sequence number of a TCP segment from the client with a payload, if it is one.
fn data_seq(packet: &[u8]) -> Option<u32> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    (ip.payload().len() > usize::from(tcp.header_len())).then(|| tcp.seq_number().0 as u32)
}

#[test]
fn a_connection_holding_data_beyond_a_hole_is_not_trimmed_and_loses_nothing() {
    let mut w = World::new(16);
    let h = w.connect(40002);
    w.run(5);
    assert_eq!(echo_round(&mut w, h, b"warm"), b"warm");
    // Segments of which the first is lost, and so are its retransmissions for 2 s (virtual,
    // 1 ms per round): the server holds the rest beyond a hole, and between the client's
    // backed-off retransmissions it hears nothing for longer than IDLE_TRIM.
    let data: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8 + 1).collect();
    w.sockets
        .get_mut::<tcp::Socket>(h)
        .send_slice(&data)
        .unwrap();
    let mut hole = None;
    for _ in 0..2000 {
        w.now += Duration::from_millis(1);
        let t = smoltcp::time::Instant::from_micros((w.now - w.t0).as_micros() as i64);
        let mut dev = ClientDev {
            rx: &mut w.s2c,
            tx: &mut w.c2s,
        };
        w.client.poll(t, &mut dev, &mut w.sockets);
        while let Some(p) = w.c2s.0.pop_front() {
            let seq = data_seq(&p);
            if hole.is_none() {
                hole = seq;
            }
            if seq.is_some() && seq == hole {
                continue; // lost
            }
            w.engine.ingress(&p, &mut w.s2c, w.now);
        }
        w.engine.process(&mut w.s2c, w.now);
        w.engine.run_timers(&mut w.s2c, w.now);
    }
    assert!(hole.is_some(), "the client sent data");
    // The next retransmission fills the hole: everything comes back, byte for byte.
    let mut got = Vec::new();
    for _ in 0..10_000 {
        w.run(1);
        let s = w.sockets.get_mut::<tcp::Socket>(h);
        drain(s, &mut got);
        if got.len() >= data.len() {
            break;
        }
    }
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the echo differs from what was sent");
    assert_eq!(
        w.engine.stats().rings_trimmed,
        0,
        "quiet for over IDLE_TRIM, but holding data beyond a hole: never trimmed"
    );
}

#[test]
fn a_full_transmit_ring_paces_connections_in_turn_and_loses_nothing() {
    // 100 connections each send 3,000 bytes at once; the "NIC" takes 8 packets per round. Every
    // echo must come back whole, no connection may starve, and the engine must not send once
    // the round's budget is spent (in-order segments need no immediate answer from smoltcp).
    const BUDGET: usize = 8;
    let mut w = World::new(1000);
    let handles: Vec<_> = (0..100).map(|i| w.connect(43000 + i)).collect();
    w.run(10);
    assert_eq!(w.engine.connections(), 100);
    w.s2c.1.per_round = BUDGET;
    let payload = |i: usize| -> Vec<u8> { (0..3000).map(|k| ((k * 7 + i) % 251) as u8).collect() };
    for (i, h) in handles.iter().enumerate() {
        let sent = w
            .sockets
            .get_mut::<tcp::Socket>(*h)
            .send_slice(&payload(i))
            .unwrap();
        assert_eq!(sent, 3000);
    }
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); handles.len()];
    let mut most_waiting = 0;
    for round in 0..20_000 {
        w.round();
        assert_eq!(w.s2c.1.over, 0, "round {round}: packets sent without room");
        most_waiting = most_waiting.max(w.engine.waiting_to_send());
        for (i, h) in handles.iter().enumerate() {
            let s = w.sockets.get_mut::<tcp::Socket>(*h);
            drain(s, &mut got[i]);
        }
        if got.iter().all(|g| g.len() == 3000) {
            break;
        }
    }
    for (i, g) in got.iter().enumerate() {
        assert!(
            *g == payload(i),
            "connection {i}: {} of 3000 bytes echoed intact",
            g.len()
        );
    }
    assert!(
        most_waiting > 10,
        "the ring was full: connections waited in line ({most_waiting})"
    );
    assert!(w.engine.stats().egress_deferred > 0);
    // With room again, the line empties and nothing is left behind.
    w.s2c.1.per_round = 0;
    w.run(20);
    assert_eq!(w.engine.waiting_to_send(), 0);
}

#[test]
fn shutdown_answers_input_held_by_connections_waiting_for_room() {
    // Connections in line for transmit room hold input the service has not seen yet; a
    // shutdown must hand it over (and send the answer) before it asks the service to close.
    let mut w = World::new(1000);
    let handles: Vec<_> = (0..50).map(|i| w.connect(44000 + i)).collect();
    w.run(10);
    assert_eq!(w.engine.connections(), 50);
    w.s2c.1.per_round = 4;
    let payload = |i: usize| -> Vec<u8> { (0..1000).map(|k| ((k * 3 + i) % 251) as u8).collect() };
    for (i, h) in handles.iter().enumerate() {
        let s = w.sockets.get_mut::<tcp::Socket>(*h);
        assert_eq!(s.send_slice(&payload(i)).unwrap(), 1000);
    }
    // The client sends, the engine takes in what arrives but can answer only a few.
    let mut rounds = 0;
    while w.engine.waiting_to_send() < 20 {
        w.round();
        rounds += 1;
        assert!(rounds < 50, "connections never waited for room");
    }
    w.s2c.1.this_round = 0;
    w.engine.shutdown(&mut w.s2c, w.now);
    w.s2c.1.per_round = 0;
    let mut got: Vec<Vec<u8>> = vec![Vec::new(); handles.len()];
    for _ in 0..2_000 {
        w.round();
        for (i, h) in handles.iter().enumerate() {
            let s = w.sockets.get_mut::<tcp::Socket>(*h);
            drain(s, &mut got[i]);
            if !s.may_recv() {
                s.close(); // the server's FIN came: answer it
            }
        }
        if w.engine.connections() == 0 {
            break;
        }
    }
    for (i, g) in got.iter().enumerate() {
        assert!(
            *g == payload(i),
            "connection {i}: {} of 1000 bytes echoed before the close",
            g.len()
        );
    }
    assert_eq!(w.engine.connections(), 0, "every connection closed");
}
