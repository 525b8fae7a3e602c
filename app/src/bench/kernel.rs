//! The generator over kernel sockets: one thread per worker, each running the kernel dialer with
//! its own [`LoadClient`] over its share of the connections.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use hioload_ws::stack::kernel::dialer::{self, DialConfig};
use hioload_ws::stack::meter::{WorkerMeter, WorkerRecorder};

use super::client::{Live, LoadClient};
use super::{Driven, Run, Timeline, Window};

/// Run `run` on `workers` threads until `monitor` (on this thread) sets `stop`.
#[allow(clippy::too_many_arguments)]
pub fn drive(
    run: &Run,
    workers: usize,
    cpus: &[usize],
    sources: Option<(std::net::Ipv4Addr, u32)>,
    max_connecting: usize,
    stop: &AtomicBool,
    monitor: impl FnOnce(Arc<[Live]>, Arc<[WorkerMeter]>, Timeline) -> Window,
) -> Result<(Driven, Window), String> {
    hioload_ws::stack::affinity::validate(cpus).map_err(|e| e.to_string())?;
    let (timeline, plan) = run.begin();
    let plan = &plan;
    let live: Arc<[Live]> = (0..workers).map(|_| Live::default()).collect();
    let meters = WorkerMeter::for_workers(workers);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let remotes = run.more_remotes.len() + 1;
                let remote = match w % remotes {
                    0 => run.remote,
                    i => run.more_remotes[i - 1],
                };
                let cfg = DialConfig {
                    remote,
                    connections: run.connections / workers
                        + usize::from(w < run.connections % workers),
                    // Each worker starts at its own address of the range.
                    sources: sources.map(|(first, n)| {
                        (
                            std::net::Ipv4Addr::from(u32::from(first) + (w as u32 % n.max(1))),
                            n,
                        )
                    }),
                    max_connecting,
                    read_buffer: 256 * 1024,
                    busy_poll: true,
                    grace: Duration::from_secs(2),
                    worker: w as u16,
                };
                let cpu = (!cpus.is_empty()).then(|| cpus[w % cpus.len()]);
                let (plan, live, meters) =
                    (Arc::clone(plan), Arc::clone(&live), Arc::clone(&meters));
                s.spawn(move || {
                    if let Some(cpu) = cpu {
                        if !hioload_ws::stack::affinity::pin_current(cpu) {
                            tracing::warn!(cpu, "cannot pin generator worker");
                        }
                    }
                    let client = LoadClient::new(plan, live, w);
                    let (client, report) =
                        dialer::run(&cfg, client, stop, WorkerRecorder::new(meters, w));
                    (client.into_tally(), report)
                })
            })
            .collect();
        let window = monitor(Arc::clone(&live), Arc::clone(&meters), timeline);
        let mut driven = Driven {
            tallies: Vec::new(),
            connect_failed: 0,
            first_error: None,
        };
        for h in handles {
            let (tally, report) = h
                .join()
                .map_err(|_| "a generator worker panicked".to_string())?;
            driven.tallies.push(tally);
            driven.connect_failed += report.connect_failed;
            if driven.first_error.is_none() {
                driven.first_error = report.first_error;
            }
        }
        Ok((driven, window))
    })
}
