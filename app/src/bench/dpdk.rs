//! The generator over DPDK: our own smoltcp engine opens the connections (active open) on every
//! worker lcore, each worker running a [`LoadClient`] over its share. Two DPDK processes joined by
//! `net_memif` measure each other this way, with no kernel on either side.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hioload_ws::stack::bypass::{DpdkConfig, DpdkTransport};
use hioload_ws::stack::meter::WorkerMeter;

use super::client::{Live, LoadClient};
use super::{Driven, Run, Timeline, Window};

/// Start EAL and the port, then run until `monitor` (on its own thread) sets `stop`.
pub fn drive(
    run: &Run,
    cfg: &DpdkConfig,
    stop: &AtomicBool,
    monitor: impl FnOnce(Arc<[Live]>, Arc<[WorkerMeter]>, Timeline) -> Window + Send,
) -> Result<(Driven, Window), String> {
    let transport = DpdkTransport::start(cfg.clone()).map_err(|e| e.to_string())?;
    if !transport.link_up() {
        // Measuring over a dead link would only report failed connections.
        return Err(format!(
            "port {}'s link is down after 10 s (with net_memif the server side must be running before \
             the client starts)",
            cfg.port
        ));
    }
    let (timeline, plan) = run.begin();
    let plan = &plan;
    let workers = transport.lcores().len();
    if transport.rss() && workers > 1 {
        // Replies must reach the worker that opened their connection; on memif queue pairs map one
        // to one, but an RSS port picks the queue by its own hash.
        return Err(format!(
            "port {} spreads received flows over its {workers} queues by RSS, and the generator does \
             not yet choose source ports by the device's hash: run it on one lcore, or over net_memif \
             (queue pairs map one to one)",
            cfg.port
        ));
    }
    tracing::info!(
        "generator on DPDK {}: port {} ({}), {workers} worker(s) on lcores {:?}, {} address(es) from {}",
        transport.version(),
        cfg.port,
        transport.mac(),
        transport.lcores(),
        cfg.engine.ip_count,
        cfg.engine.ip,
    );
    let live: Arc<[Live]> = (0..workers).map(|_| Live::default()).collect();
    let meters = transport.meters();
    let tallies = Mutex::new((0..workers).map(|_| None).collect::<Vec<_>>());
    let (report, window) = std::thread::scope(|s| {
        let mon = {
            let (live, meters) = (Arc::clone(&live), Arc::clone(&meters));
            s.spawn(move || monitor(live, meters, timeline))
        };
        let report = transport.serve_with(
            transport.mailboxes(),
            |i| LoadClient::new(Arc::clone(plan), Arc::clone(&live), i),
            |i, client: LoadClient| {
                if let Ok(mut t) = tallies.lock() {
                    t[i] = Some(client.into_tally());
                }
            },
            stop,
            Duration::from_secs(2),
        );
        (report, mon.join())
    });
    let window = window.map_err(|_| "the progress thread panicked".to_string())?;
    if !report.failed_workers.is_empty() {
        return Err(format!(
            "generator workers {:?} failed (see the log above)",
            report.failed_workers
        ));
    }
    let connect_failed =
        report.total(|w| w.packets.as_ref().map_or(0, |p| p.engine.handshake_failed));
    Ok((
        Driven {
            tallies: tallies
                .into_inner()
                .map_err(|_| "a generator worker panicked".to_string())?
                .into_iter()
                .flatten()
                .collect(),
            connect_failed,
            first_error: (connect_failed > 0).then(|| {
                format!(
                    "{connect_failed} connections were not established (SYN unanswered, refused, or timed out)"
                )
            }),
        },
        window,
    ))
}
