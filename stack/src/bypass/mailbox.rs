//! Mailbox: what workers tell each other. Neighbours learned from the wire go to every other
//! worker (ARP replies land on whichever queue the NIC picks); letters posted to this worker are
//! taken, a bounded number per iteration, without a system call.

use std::time::Instant;

use super::transmit::TxPath;
use crate::mailbox::{Letter, Mailbox, Postboxes, DRAIN_PER_ITERATION};
use crate::net::engine::Engine;
use crate::service::Service;

/// Share what ARP taught worker `me` this iteration, then take what was posted to it. Returns
/// whether any letter arrived.
pub fn exchange<S: Service>(
    me: usize,
    tx: &mut TxPath<'_>,
    mailbox: &mut Mailbox<S::Message>,
    posts: &Postboxes<S::Message>,
    engine: &mut Engine<S>,
    now: Instant,
) -> bool {
    for (ip, mac) in tx.arp.drain_learned() {
        for p in posts.iter().filter(|p| p.worker() != me) {
            // A full mailbox (counted there) or a stopped worker: that worker will ask itself.
            let _ = p.send(Letter::Neighbour(ip, mac));
        }
    }
    let mut any = false;
    for _ in 0..DRAIN_PER_ITERATION {
        let Some(letter) = mailbox.take() else {
            break;
        };
        any = true;
        match letter {
            Letter::Service(m) => engine.message(m, now),
            Letter::Neighbour(ip, mac) => tx.arp.learn_from_peer(ip, mac, now),
            Letter::Adopt(..) => {}
        }
    }
    any
}
