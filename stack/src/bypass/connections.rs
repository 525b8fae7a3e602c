//! Connections: the TCP engine's work of one iteration, in order: the connections that received
//! packets (their services run, answers go out), timers (retransmissions, service deadlines), the
//! next connections a load generator opens, and the service's tick; everything emitted lands in
//! this iteration's transmit batch.

use std::time::Instant;

use super::transmit::TxPath;
use crate::net::engine::Engine;
use crate::service::Service;

/// SYNs a dialing worker sends per iteration, so established connections keep being served.
const DIAL_BURST: usize = 32;

/// Run the engine's iteration. `dialing` is cleared once every connection to open is opened.
pub fn run<S: Service>(
    engine: &mut Engine<S>,
    tx: &mut TxPath<'_>,
    dialing: &mut bool,
    now: Instant,
) {
    tx.retry();
    let mut sink = tx.sink(now);
    engine.process(&mut sink, now);
    engine.run_timers(&mut sink, now);
    if *dialing {
        *dialing = engine.dial(DIAL_BURST, &mut sink, now) > 0;
    }
    engine.tick(&mut sink, now);
}
