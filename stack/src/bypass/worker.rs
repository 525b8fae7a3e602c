//! One DPDK worker: a run-to-completion loop over its queue pair, each iteration the steps in
//! order.
//!
//! ```text
//! loop {
//!     receive → dispatch: ARP answered and learned; IPv4 to us into the engine
//!     mailbox: neighbours shared; letters for the service taken
//!     connections: services read and write, timers, dialing, the tick; smoltcp emits into mbufs
//!     transmit: what is framed goes out in bursts (early ones as it is framed, the rest here)
//!     shutdown: drain, then close sessions, then leave
//!     idle? back off (unless busy-polling)
//! }
//! ```

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::shutdown::Shutdown;
use super::transmit::TxPath;
use super::{connections, dispatch, mailbox, receive, DpdkTransport};
use crate::dpdk::{eal, Mempool};
use crate::mailbox::{Mailbox, Postboxes};
use crate::meter::{most_queued, Stat, WorkerRecorder};
use crate::net::arp;
use crate::net::engine::{Dial, Engine, EngineConfig};
use crate::report::{PacketReport, WorkerReport};
use crate::service::Service;

/// How often a worker copies its counters out for the admin endpoint.
const PUBLISH_EVERY: Duration = Duration::from_millis(10);

/// Run worker `q` on its queue until its shutdown is over; returns its report and its service.
#[allow(clippy::too_many_arguments)]
pub(super) fn run<S: Service>(
    t: &DpdkTransport,
    q: usize,
    service: S,
    pool: &Mempool,
    mut mailbox: Mailbox<S::Message>,
    posts: Postboxes<S::Message>,
    stop: &AtomicBool,
    grace: Duration,
) -> (WorkerReport, S) {
    let cfg = &t.cfg;
    let workers = t.lcores.len();
    let net = t.net;
    let queue = q as u16;
    let checksum_offload = t.port.offloads().tx_checksum;
    let mut tx = TxPath::new(net, pool, &t.port, queue, checksum_offload);
    let socket = eal::lcore_socket(&t.eal, t.lcores[q]);
    let start = Instant::now();
    let mut engine = Engine::with_posts(
        EngineConfig {
            worker: queue,
            max_half_open: cfg.engine.max_half_open.div_ceil(workers).max(1),
            max_connections: cfg.engine.max_connections.div_ceil(workers).max(1),
            mtu: usize::from(cfg.mtu.unwrap_or(1500)),
            tx_checksum_offload: checksum_offload,
            dial: cfg.engine.dial.map(|d| share(d, q, workers)),
            ..cfg.engine.clone()
        },
        service,
        posts.clone(),
        &mut tx.sink(start),
        start,
    );
    if q == 0 {
        // Tell the neighbours where we are.
        for addr in net.addresses() {
            let mut frame = [0u8; arp::FRAME_LEN];
            let n = arp::gratuitous(&net, addr, &mut frame);
            tx.frame(&frame[..n]);
        }
    }
    let mut meter = WorkerRecorder::new(Arc::clone(&t.meters), q);
    let mut dialing = cfg.engine.dial.is_some();
    let mut shutdown = Shutdown::default();
    let mut received_total = 0u64;
    let mut idle_rounds = 0u32;
    let (mut last_publish, mut last_probe, mut last_expiry) = (start, start, start);
    let mut live_seen = 0u64;
    loop {
        let now = Instant::now();
        let received = receive::burst(&t.port, queue, |frame| {
            dispatch::frame(frame, &net, &mut tx, &mut engine, now)
        });
        received_total += received as u64;
        let mail = mailbox::exchange(q, &mut tx, &mut mailbox, &posts, &mut engine, now);
        connections::run(&mut engine, &mut tx, &mut dialing, now);
        let queued = tx.burst();
        if now.duration_since(last_expiry) >= Duration::from_secs(1) {
            tx.arp.expire(now);
            last_expiry = now;
        }
        if now.duration_since(last_probe) >= Duration::from_secs(1) {
            last_probe = now;
            meter.set_most_queued(most_queued(engine.queued()));
        }
        if now.duration_since(last_publish) >= PUBLISH_EVERY {
            last_publish = now;
            report(q, &engine, &tx, received_total, &mailbox, &meter).publish(&mut meter);
            for (stat, value) in [
                (Stat::ConnectionsOpen, engine.connections() as u64),
                (Stat::ArpEntries, tx.arp.len() as u64),
                (Stat::TxWaiting, engine.waiting_to_send() as u64),
                (Stat::MbufsInUse, u64::from(pool.in_use())),
                (Stat::MbufsFree, u64::from(pool.available())),
                (Stat::NumaSocket, u64::from(socket)),
            ] {
                meter.set(stat, value);
            }
            if q == 0 {
                let p = t.port.stats();
                for (stat, value) in [
                    (Stat::PortRxMissed, p.rx_missed),
                    (Stat::PortRxErrors, p.rx_errors),
                    (Stat::PortTxErrors, p.tx_errors),
                    (Stat::PortRxNoMbuf, p.rx_nombuf),
                ] {
                    meter.set(stat, value);
                }
            }
        }
        if shutdown.step(stop, received, &mut engine, &mut tx, grace, now) {
            // Send what the last round produced before leaving.
            tx.burst();
            break;
        }
        if let Some(l) = cfg.live.as_ref().and_then(|l| l.changed(&mut live_seen)) {
            engine.set_limits(
                usize::try_from(l.backpressure_limit).unwrap_or(usize::MAX),
                usize::try_from(l.max_connections.div_ceil(workers as u64).max(1))
                    .unwrap_or(usize::MAX),
            );
        }
        let idle = received == 0 && queued == 0 && !mail && engine.waiting_to_send() == 0;
        if idle {
            meter.idle();
        } else {
            meter.busy(now, Instant::now());
        }
        // Idle back-off: spin briefly, then sleep a little longer each idle round (max 100 µs).
        if idle && !cfg.busy_poll {
            idle_rounds = idle_rounds.saturating_add(1);
            if idle_rounds > 64 {
                let wait = Duration::from_micros(u64::from(idle_rounds.min(164) - 64));
                let wait = engine
                    .next_timer()
                    .map_or(wait, |t| wait.min(t.saturating_duration_since(now)));
                std::thread::sleep(wait);
            }
        } else {
            idle_rounds = 0;
        }
    }
    let report = report(q, &engine, &tx, received_total, &mailbox, &meter);
    (report, engine.into_service())
}

/// What the worker did so far.
fn report<S: Service>(
    q: usize,
    engine: &Engine<S>,
    tx: &TxPath<'_>,
    received: u64,
    mailbox: &Mailbox<S::Message>,
    meter: &WorkerRecorder,
) -> WorkerReport {
    let e = engine.stats();
    let d = engine.driver_stats();
    WorkerReport {
        worker: q,
        accepted: e.accepted,
        rejected: e.syn_dropped_full,
        closed: d.closed,
        errors: d.errors,
        abandoned: engine.connections() as u64,
        backpressure_pauses: e.backpressure_pauses,
        slow_closed: d.slow_closed,
        pushes: d.pushes,
        messages: mailbox.received(),
        mailbox_refused: mailbox.refused(),
        loops: meter.totals(),
        packets: Some(PacketReport {
            engine: e,
            received,
            sent: tx.sent,
            no_mbuf: tx.drops.no_mbuf,
            no_neighbour: tx.drops.no_neighbour,
            no_route: tx.drops.no_route,
            tx_refused: tx.drops.refused,
        }),
    }
}

/// Worker `q` of `workers`' part of `dial`: an even share of the connections, and every
/// `workers`-th local endpoint starting at its own, so workers never pick the same one. On ports
/// without RSS (memif, TAP) queue pairs map one to one, so replies come back to the worker that
/// sent the SYN.
fn share(dial: Dial, q: usize, workers: usize) -> Dial {
    let workers = workers.max(1);
    Dial {
        count: dial.count / workers + usize::from(q < dial.count % workers),
        first: dial.first + q * dial.stride.max(1),
        stride: dial.stride.max(1) * workers,
        ..dial
    }
}
