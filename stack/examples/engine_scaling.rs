//! How the engine's work per message depends on the number of connections, without a NIC: a
//! client engine (active open) and a server engine (echo) exchange packets in memory, one echo
//! in flight per connection, connections served round robin.
//!
//! ```sh
//! cargo run --release -p hioload-stack --example engine_scaling -- CONNECTIONS ROUNDS
//! ```
//!
//! It prints the wall time per message. Run it under `valgrind --tool=callgrind` with two round
//! counts and subtract to get instructions per message, which (unlike time) do not depend on
//! cache misses: flat instructions with rising time means the growth is memory latency, not
//! work (docs/BENCHMARKS.md).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use hioload_stack::net::device::IpSink;
use hioload_stack::net::engine::{Dial, Engine, EngineConfig};
use hioload_stack::{ConnCtx, ConnId, Service, Verdict};

#[path = "../tests/common/mod.rs"]
mod common;
use common::Echo;

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PORT: u16 = 7000;
const MESSAGE: &[u8] = b"0123456789abcdef0123456789abcdef"; // 32 bytes

/// Packets in flight between the two engines.
#[derive(Default)]
struct Wire(VecDeque<Vec<u8>>, Vec<Vec<u8>>);

impl IpSink for Wire {
    fn emit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        // Reuse packet buffers so the example measures the engine, not the allocator.
        let mut buf = self.1.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let r = fill(&mut buf);
        self.0.push_back(buf);
        r
    }
}

/// Sends a message on open and another for every complete echo; counts echoes.
#[derive(Default)]
struct Pinger {
    echoes: u64,
}

impl Service for Pinger {
    type Conn = usize;
    type Message = ();
    fn open(&mut self, _: ConnId, _: SocketAddr, _: &mut ConnCtx<'_, ()>) -> usize {
        0
    }
    fn greet(&mut self, _: &mut usize, cx: &mut ConnCtx<'_, ()>) -> Verdict {
        cx.out().put(MESSAGE);
        Verdict::Continue
    }
    fn on_data(&mut self, got: &mut usize, input: &mut [u8], cx: &mut ConnCtx<'_, ()>) -> Verdict {
        *got += input.len();
        while *got >= MESSAGE.len() {
            *got -= MESSAGE.len();
            self.echoes += 1;
            cx.out().put(MESSAGE);
        }
        Verdict::Continue
    }
}

fn config(ip: Ipv4Addr, listen_port: u16, connections: usize, dial: Option<Dial>) -> EngineConfig {
    EngineConfig {
        worker: 0,
        ip,
        ip_count: 2,
        prefix: 24,
        listen_port,
        tcp_rx_buf: 4096,
        tcp_tx_buf: 4096,
        max_half_open: 1024,
        max_connections: connections + 16,
        backpressure_limit: 1 << 20,
        mtu: 1500,
        tx_checksum_offload: false,
        dial,
        ..EngineConfig::default()
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let parse = |v: Option<String>, default: u64| -> u64 {
        v.and_then(|s| s.parse().ok()).unwrap_or(default)
    };
    let connections = parse(args.next(), 1000) as usize;
    let rounds = parse(args.next(), 20);
    let t0 = Instant::now();
    let (mut c2s, mut s2c) = (Wire::default(), Wire::default());
    let mut server = Engine::new(config(SERVER, PORT, connections, None), Echo, &mut s2c, t0);
    let dial = Dial {
        remote: SocketAddrV4::new(SERVER, PORT),
        count: connections,
        first: 0,
        stride: 1,
    };
    let mut client = Engine::new(
        config(CLIENT, 0, connections, Some(dial)),
        Pinger::default(),
        &mut c2s,
        t0,
    );
    // Virtual time, 1 µs per step: timers never fire during the run (nothing is lost in memory).
    let mut now = t0;
    let mut step = |client: &mut Engine<Pinger>, server: &mut Engine<Echo>, now: Instant| {
        client.dial(256, &mut c2s, now);
        while let Some(p) = c2s.0.pop_front() {
            server.ingress(&p, &mut s2c, now);
            c2s.1.push(p);
        }
        server.process(&mut s2c, now);
        while let Some(p) = s2c.0.pop_front() {
            client.ingress(&p, &mut c2s, now);
            s2c.1.push(p);
        }
        client.process(&mut c2s, now);
    };
    while client.service().echoes < connections as u64 * 2 {
        now += Duration::from_micros(1);
        step(&mut client, &mut server, now);
    }
    let start_echoes = client.service().echoes;
    let target = start_echoes + rounds * connections as u64;
    let wall = Instant::now();
    while client.service().echoes < target {
        now += Duration::from_micros(1);
        step(&mut client, &mut server, now);
    }
    let took = wall.elapsed();
    let messages = client.service().echoes - start_echoes;
    println!(
        "connections {connections}: {messages} echoes, {:.3} µs per message (both engines)",
        took.as_secs_f64() * 1e6 / messages as f64
    );
}
