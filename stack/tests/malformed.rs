//! Whatever arrives at ingress, nothing panics: random bytes, and valid Ethernet/ARP/IPv4/TCP
//! frames with random corruption, fed to ARP and to the TCP engine.

mod common;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::Echo;

use hioload_stack::net::arp::{self, ArpCache};
use hioload_stack::net::device::IpSink;
use hioload_stack::net::engine::{Engine, EngineConfig};
use hioload_stack::net::ethernet::{self, HEADER_LEN};
use hioload_stack::net::NetConfig;
use proptest::prelude::*;
use smoltcp::wire::TcpControl;

#[derive(Default)]
struct Count(usize);

impl IpSink for Count {
    fn emit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
        self.0 += 1;
        fill(&mut vec![0; len])
    }
}

const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn engine(sink: &mut Count) -> Engine<Echo> {
    let cfg = EngineConfig {
        worker: 0,
        ip: US,
        ip_count: 1,
        prefix: 24,
        listen_port: 80,
        tcp_rx_buf: 2048,
        tcp_tx_buf: 2048,
        max_half_open: 64,
        max_connections: 128,
        backpressure_limit: 1 << 16,
        mtu: 1500,
        tx_checksum_offload: false,
        dial: None,
        ..EngineConfig::default()
    };
    Engine::new(cfg, Echo, sink, Instant::now())
}

/// A valid TCP/IPv4 packet to us (SYN or data), as a base to corrupt.
fn tcp_packet(src_port: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let control = match flags % 4 {
        0 => TcpControl::Syn,
        1 => TcpControl::Fin,
        2 => TcpControl::Rst,
        _ => TcpControl::None,
    };
    common::tcp_segment(
        (Ipv4Addr::new(10, 0, 0, 9), src_port),
        (US, 80),
        control,
        i32::from(flags) * 1000,
        payload,
    )
}

fn net() -> NetConfig {
    NetConfig {
        mac: [2, 0, 0, 0, 0, 2],
        ip: US,
        ip_count: 1,
        prefix: 24,
        gateway: None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(frames in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 1..20)) {
        let mut sink = Count::default();
        let mut e = engine(&mut sink);
        let mut cache = ArpCache::default();
        let now = Instant::now();
        for f in &frames {
            let _ = ethernet::parse(f);
            let _ = arp::process(f, &net(), &mut cache, now, &mut [0; arp::FRAME_LEN]);
            e.ingress(f, &mut sink, now);
            if f.len() > HEADER_LEN {
                e.ingress(&f[HEADER_LEN..], &mut sink, now);
            }
        }
        e.process(&mut sink, now);
        e.run_timers(&mut sink, now + Duration::from_secs(5));
    }

    #[test]
    fn corrupted_tcp_and_arp_never_panic(
        ports in prop::collection::vec((any::<u16>(), any::<u8>()), 1..12),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        truncate in any::<usize>(),
    ) {
        let mut sink = Count::default();
        let mut e = engine(&mut sink);
        let mut cache = ArpCache::default();
        let now = Instant::now();
        for (port, flags) in &ports {
            let mut p = tcp_packet(*port, *flags, b"payload bytes");
            for (at, x) in &flips {
                let i = at % p.len();
                p[i] ^= x;
            }
            let cut = truncate % (p.len() + 1);
            e.ingress(&p[..cut], &mut sink, now);
            e.ingress(&p, &mut sink, now);
            // And the same bytes as an ARP frame behind an Ethernet header.
            let mut frame = vec![0u8; HEADER_LEN];
            ethernet::write(&mut frame, [0xff; 6], [2, 0, 0, 0, 0, 9], ethernet::ETHERTYPE_ARP);
            frame.extend_from_slice(&p);
            let _ = arp::process(&frame, &net(), &mut cache, now, &mut [0; arp::FRAME_LEN]);
        }
        e.process(&mut sink, now);
        e.run_timers(&mut sink, now + Duration::from_secs(10));
        prop_assert!(e.half_open() <= 64 && e.connections() <= 128);
    }
}
