//! Shared by the stack's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hioload_stack::{CloseCause, ConnCtx, ConnId, Ctx, Service, Verdict};
use smoltcp::wire::{
    IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

/// Echo: input goes back out; closes after the peer's FIN or on shutdown (the defaults).
pub struct Echo;

impl Service for Echo {
    type Conn = ();
    type Message = ();
    fn open(&mut self, _: ConnId, _: SocketAddr, _: &mut ConnCtx<'_, ()>) {}
    fn on_data(&mut self, _: &mut (), input: &mut [u8], cx: &mut ConnCtx<'_, ()>) -> Verdict {
        cx.out().put(input);
        Verdict::Continue
    }
}

/// What [`Greeter`] sends and expects back.
pub const GREETING: &[u8] = b"hello, server";

/// A client: greets on open, checks the echo byte for byte, closes once all of it came back.
/// Sets `done` once `expect` connections have closed.
#[derive(Default)]
pub struct Greeter {
    /// The peer of every connection opened.
    pub peers: Vec<SocketAddr>,
    /// Echoed bytes.
    pub echoed: usize,
    /// Connections closed.
    pub closed: usize,
    /// Connections to wait for.
    pub expect: usize,
    /// Set when `expect` connections have closed.
    pub done: Arc<AtomicBool>,
}

impl Service for Greeter {
    type Conn = usize;
    type Message = ();
    fn open(&mut self, _: ConnId, peer: SocketAddr, _: &mut ConnCtx<'_, ()>) -> usize {
        self.peers.push(peer);
        0
    }
    fn greet(&mut self, _: &mut usize, cx: &mut ConnCtx<'_, ()>) -> Verdict {
        cx.out().put(GREETING);
        Verdict::Continue
    }
    fn on_data(&mut self, got: &mut usize, input: &mut [u8], _: &mut ConnCtx<'_, ()>) -> Verdict {
        assert_eq!(input, &GREETING[*got..*got + input.len()], "echo differs");
        *got += input.len();
        self.echoed += input.len();
        if *got == GREETING.len() {
            Verdict::Close
        } else {
            Verdict::Continue
        }
    }
    fn on_close(&mut self, _: ConnId, _: usize, _: CloseCause, _: &mut Ctx<'_, ()>) {
        self.closed += 1;
        if self.closed == self.expect {
            self.done.store(true, Ordering::Relaxed);
        }
    }
}

/// A valid IPv4/TCP segment from `src:src_port` to `dst:dst_port` with `control` (an ACK of 1
/// unless it is a SYN) and sequence number `seq`.
pub fn tcp_segment(
    (src, src_port): (Ipv4Addr, u16),
    (dst, dst_port): (Ipv4Addr, u16),
    control: TcpControl,
    seq: i32,
    payload: &[u8],
) -> Vec<u8> {
    let tcp = TcpRepr {
        src_port,
        dst_port,
        control,
        seq_number: TcpSeqNumber(seq),
        ack_number: (control != TcpControl::Syn).then_some(TcpSeqNumber(1)),
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Tcp,
        payload_len: tcp.buffer_len(),
        hop_limit: 64,
    };
    let mut buf = vec![0; ip.buffer_len() + tcp.buffer_len()];
    let caps = smoltcp::phy::ChecksumCapabilities::default();
    ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut buf[ip.buffer_len()..]),
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        &caps,
    );
    buf
}
