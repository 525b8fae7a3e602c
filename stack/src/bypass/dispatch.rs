//! Dispatch: a received Ethernet frame goes to ARP or to the TCP engine, by its destination and
//! type; anything else is dropped here.

use std::time::Instant;

use super::transmit::TxPath;
use crate::net::arp;
use crate::net::engine::Engine;
use crate::net::ethernet::{self, BROADCAST, ETHERTYPE_ARP, ETHERTYPE_IPV4, HEADER_LEN};
use crate::net::NetConfig;
use crate::service::Service;

/// Hand `frame` to whoever it is for.
pub fn frame<S: Service>(
    frame: &[u8],
    net: &NetConfig,
    tx: &mut TxPath<'_>,
    engine: &mut Engine<S>,
    now: Instant,
) {
    let Some(eth) = ethernet::parse(frame) else {
        return;
    };
    if eth.dst != net.mac && eth.dst != BROADCAST {
        return;
    }
    match eth.ethertype {
        ETHERTYPE_ARP => {
            let mut reply = [0u8; arp::FRAME_LEN];
            if let Some(n) = arp::process(frame, net, &mut tx.arp, now, &mut reply) {
                tx.frame(&reply[..n]);
            }
        }
        ETHERTYPE_IPV4 if eth.dst == net.mac => {
            engine.ingress(&frame[HEADER_LEN..], &mut tx.sink(now), now);
        }
        _ => {}
    }
}
