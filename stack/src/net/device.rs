//! The smoltcp `Device` of a worker: it offers smoltcp at most one received IP packet per call
//! (the one the flow table routed to this connection's socket set) and hands every IP packet
//! smoltcp emits to an [`IpSink`], which frames it for the wire.

use smoltcp::phy::{Checksum, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;

/// Where emitted IP packets go.
pub trait IpSink {
    /// Provide `len` bytes for `fill` to write an IP packet into, then send it. Must call `fill`
    /// exactly once, even if the packet will be dropped (e.g. no buffer available).
    fn emit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R;

    /// Whether a packet sent now would be taken. When not (the NIC's transmit ring is full),
    /// sockets keep their data and the engine gives them another turn once there is room,
    /// rather than framing packets the NIC would refuse.
    fn has_room(&self) -> bool {
        true
    }
}

/// A device over one optional received packet and a sink.
pub struct PacketDevice<'a, S: IpSink> {
    rx: Option<&'a [u8]>,
    sink: &'a mut S,
    mtu: usize,
    tx_checksum_offload: bool,
}

impl<'a, S: IpSink> PacketDevice<'a, S> {
    /// A device that will deliver `rx` (if any) once and send through `sink`. `mtu` is the IP
    /// MTU; with `tx_checksum_offload` smoltcp leaves IPv4 and TCP checksums to the NIC.
    pub fn new(
        rx: Option<&'a [u8]>,
        sink: &'a mut S,
        mtu: usize,
        tx_checksum_offload: bool,
    ) -> Self {
        Self {
            rx,
            sink,
            mtu,
            tx_checksum_offload,
        }
    }
}

/// Receive half: the one packet.
pub struct PacketRx<'a>(&'a [u8]);

/// Transmit half: a reference to the sink.
pub struct PacketTx<'a, S: IpSink>(&'a mut S);

impl RxToken for PacketRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

impl<S: IpSink> TxToken for PacketTx<'_, S> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        self.0.emit(len, f)
    }
}

impl<S: IpSink> PacketDevice<'_, S> {
    /// Whether the sink would take a packet now.
    pub fn has_room(&self) -> bool {
        self.sink.has_room()
    }
}

impl<S: IpSink> Device for PacketDevice<'_, S> {
    type RxToken<'b>
        = PacketRx<'b>
    where
        Self: 'b;
    type TxToken<'b>
        = PacketTx<'b, S>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let packet = self.rx.take()?;
        Some((PacketRx(packet), PacketTx(self.sink)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Self::TxToken<'_>> {
        // No room: smoltcp keeps the segment unsent (its state does not move) and tries again on
        // the socket's next poll.
        self.sink.has_room().then_some(PacketTx(&mut *self.sink))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = None;
        if self.tx_checksum_offload {
            caps.checksum.ipv4 = Checksum::Rx;
            caps.checksum.tcp = Checksum::Rx;
        }
        caps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::iface::{Config, Interface, SocketSet};
    use smoltcp::wire::{
        HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpProtocol, Ipv4Packet,
        Ipv4Repr,
    };
    use std::net::Ipv4Addr;

    /// Collects emitted packets.
    #[derive(Default)]
    struct Collect(Vec<Vec<u8>>);

    impl IpSink for Collect {
        fn emit<R>(&mut self, len: usize, fill: impl FnOnce(&mut [u8]) -> R) -> R {
            let mut buf = vec![0; len];
            let r = fill(&mut buf);
            self.0.push(buf);
            r
        }
    }

    fn echo_request(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
        let icmp = Icmpv4Repr::EchoRequest {
            ident: 7,
            seq_no: 1,
            data: b"hello",
        };
        let ip = Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0; ip.buffer_len() + icmp.buffer_len()];
        let caps = smoltcp::phy::ChecksumCapabilities::default();
        ip.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]), &caps);
        icmp.emit(
            &mut Icmpv4Packet::new_unchecked(&mut buf[ip.buffer_len()..]),
            &caps,
        );
        buf
    }

    #[test]
    fn smoltcp_answers_ping_through_an_empty_socket_set() {
        let ours = Ipv4Addr::new(10, 0, 0, 2);
        let peer = Ipv4Addr::new(10, 0, 0, 9);
        let mut sink = Collect::default();
        let now = Instant::from_millis(0);
        let mut iface = {
            let mut dev = PacketDevice::new(None, &mut sink, 1500, false);
            Interface::new(Config::new(HardwareAddress::Ip), &mut dev, now)
        };
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::Ipv4(ours), 24))
                .expect("room for an address")
        });
        let mut sockets = SocketSet::new(Vec::new());
        let req = echo_request(peer, ours);
        let mut dev = PacketDevice::new(Some(&req), &mut sink, 1500, false);
        iface.poll_ingress_single(now, &mut dev, &mut sockets);
        assert_eq!(sink.0.len(), 1, "one reply");
        let reply = Ipv4Packet::new_checked(&sink.0[0][..]).unwrap();
        assert_eq!((reply.src_addr(), reply.dst_addr()), (ours, peer));
        let icmp = Icmpv4Packet::new_checked(reply.payload()).unwrap();
        let repr = Icmpv4Repr::parse(&icmp, &Default::default()).unwrap();
        assert_eq!(
            repr,
            Icmpv4Repr::EchoReply {
                ident: 7,
                seq_no: 1,
                data: b"hello"
            }
        );
    }
}
