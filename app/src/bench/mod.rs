//! `hioload-ws bench`: load generators that measure an appliance end to end.
//!
//! - [`client`]: the sans-IO client every connection runs (WebSocket or raw TCP echo, verified
//!   byte for byte, round trips in an HDR histogram).
//! - [`kernel`]: runs it over kernel sockets, one thread and one poller per worker.
//! - `dpdk` (feature `dpdk`): runs it over DPDK with our own smoltcp engine opening the
//!   connections, so two DPDK processes can measure each other with no kernel in between.
//! - [`server`]: what is read from the server under test (CPU, RSS, busy time).
//!
//! This module owns a run: the plan, the progress line once a second, the window, the summary.

pub mod client;
mod command;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod kernel;
pub mod server;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hioload_ws::stack::meter::WorkerMeter;

use client::{Live, Plan, Tally};
pub use command::command;

/// What the generator runs on.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Kernel sockets: `workers` threads (pinned to `cpus`, cycling, if given), connections
    /// bound to source addresses `first + i % count` if `sources` is set.
    Kernel {
        /// Worker threads.
        workers: usize,
        /// CPUs to pin them to.
        cpus: Vec<usize>,
        /// Source address range.
        sources: Option<(std::net::Ipv4Addr, u32)>,
        /// Connects in progress at once, per worker.
        max_connecting: usize,
    },
    /// DPDK, with the generator's own TCP stack.
    #[cfg(feature = "dpdk")]
    Dpdk(Box<hioload_ws::stack::bypass::DpdkConfig>),
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Run {
    /// The server.
    pub remote: SocketAddr,
    /// More nodes of the same service: kernel worker W dials `[remote, more_remotes..][W % n]`.
    pub more_remotes: Vec<SocketAddr>,
    /// Connections.
    pub connections: usize,
    /// What each connection does; its window is set when the run starts.
    pub plan: Plan,
    /// Unmeasured time first.
    pub warmup: Duration,
    /// Measured time.
    pub duration: Duration,
    /// Where the generator runs.
    pub transport: Transport,
    /// What to read from the server.
    pub server: server::Probe,
    /// Print progress lines (to standard error).
    pub progress: bool,
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Connections asked for.
    pub connections: usize,
    /// Echoes in the window.
    pub messages: u64,
    /// Window length.
    pub seconds: f64,
    /// Round trips in the window, nanoseconds.
    pub latency: Histogram<u64>,
    /// Echoes that differed.
    pub mismatches: u64,
    /// Sessions that failed after connecting.
    pub failed: u64,
    /// Connections that could not be established.
    pub connect_failed: u64,
    /// Sessions that became ready (handshake done).
    pub ready: u64,
    /// From the first connection until the last session was ready.
    pub time_to_ready: Option<Duration>,
    /// The first reason a connection or session failed.
    pub first_failure: Option<String>,
    /// Share of the window the generator's workers were busy (mean over workers).
    pub own_busy: f64,
    /// The server's figures over the window.
    pub server: server::Delta,
    /// Pub/sub: messages published (whole run).
    pub publishes: u64,
    /// Pub/sub: messages members missed (gaps in seq, whole run).
    pub gaps: u64,
    /// Pub/sub: churners' joins and leaves answered in the window.
    pub churn_ops: u64,
    /// Pub/sub: their reply times, nanoseconds.
    pub churn_latency: Histogram<u64>,
    /// Pub/sub: presence events members received in the window.
    pub presence_events: u64,
}

impl Outcome {
    /// Echoes per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }

    /// Round trip at quantile `q`, microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// Pub/sub churn: join or leave to its reply at quantile `q`, microseconds.
    pub fn churn_quantile_us(&self, q: f64) -> f64 {
        self.churn_latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// Sessions ready per second while connecting.
    pub fn connect_rate(&self) -> Option<f64> {
        self.time_to_ready
            .filter(|t| !t.is_zero())
            .map(|t| self.ready as f64 / t.as_secs_f64())
    }
}

/// The run's clock, fixed once the generator's transport is up (EAL and a memif link can take
/// seconds, which must not eat the warmup).
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    /// When connecting began.
    pub start: Instant,
    /// Start of the measured window.
    pub measure_from: Instant,
    /// End of the measured window.
    pub end: Instant,
}

impl Run {
    /// Fix the clock now; returns it and the plan with its window.
    pub fn begin(&self) -> (Timeline, Arc<Plan>) {
        let start = Instant::now();
        let measure_from = start + self.warmup;
        let end = measure_from + self.duration;
        let plan = Arc::new(Plan {
            measure_from,
            end,
            epoch: start,
            ..self.plan.clone()
        });
        (
            Timeline {
                start,
                measure_from,
                end,
            },
            plan,
        )
    }
}

/// What a transport driver gives back.
pub struct Driven {
    /// Per worker.
    pub tallies: Vec<Tally>,
    /// Connections that could not be established.
    pub connect_failed: u64,
    /// The first connect error.
    pub first_error: Option<String>,
}

/// Parse `ws://host:port/path` into address, Host header and path.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        format!("--url {url:?} must start with ws:// (wss:// is not supported by the generator)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = resolve(authority, 80).map_err(|e| format!("--url: {e}"))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

/// Resolve `host[:port]`, with `default_port` when none is given.
pub fn resolve(authority: &str, default_port: u16) -> Result<SocketAddr, String> {
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority:?} resolves to no address"))
}

/// Run the load: connect, warm up, measure, leave; progress on standard error once a second.
pub fn run(run: &Run) -> Result<Outcome, String> {
    let workers = match &run.transport {
        Transport::Kernel { workers, .. } => (*workers).max(1),
        #[cfg(feature = "dpdk")]
        Transport::Dpdk(_) => 0, // known once EAL is up
    };
    let stop = AtomicBool::new(false);
    let rss_before = run.server.rss();
    let monitor = |live: Arc<[Live]>, meters: Arc<[WorkerMeter]>, timeline: Timeline| {
        monitor(run, &live, &meters, timeline, &stop)
    };
    let (driven, window) = match &run.transport {
        Transport::Kernel {
            cpus,
            sources,
            max_connecting,
            ..
        } => kernel::drive(
            run,
            workers,
            cpus,
            *sources,
            *max_connecting,
            &stop,
            monitor,
        )?,
        #[cfg(feature = "dpdk")]
        Transport::Dpdk(cfg) => dpdk::drive(run, cfg, &stop, monitor)?,
    };
    let mut latency = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
        .map_err(|e| format!("histogram: {e}"))?;
    let mut outcome = Outcome {
        connections: run.connections,
        messages: 0,
        seconds: run.duration.as_secs_f64(),
        latency: Histogram::new(3).map_err(|e| format!("histogram: {e}"))?,
        mismatches: 0,
        failed: 0,
        connect_failed: driven.connect_failed,
        ready: 0,
        time_to_ready: None,
        first_failure: driven.first_error,
        own_busy: window.own_busy,
        server: window.server.unwrap_or_default(),
        publishes: 0,
        gaps: 0,
        churn_ops: 0,
        churn_latency: Histogram::new(3).map_err(|e| format!("histogram: {e}"))?,
        presence_events: 0,
    };
    let mut churn_latency = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)
        .map_err(|e| format!("histogram: {e}"))?;
    let (mut first_open, mut last_ready): (Option<Instant>, _) = (None, None);
    for t in driven.tallies {
        outcome.messages += t.messages;
        outcome.mismatches += t.mismatches;
        outcome.failed += t.failed;
        outcome.ready += t.ready;
        outcome.publishes += t.publishes;
        outcome.gaps += t.gaps;
        outcome.churn_ops += t.churn_ops;
        outcome.presence_events += t.presence_events;
        churn_latency
            .add(&t.churn_latency)
            .map_err(|e| format!("histogram: {e}"))?;
        last_ready = last_ready.max(t.last_ready);
        first_open = match (first_open, t.first_open) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if outcome.first_failure.is_none() {
            outcome.first_failure = t.first_failure;
        }
        latency
            .add(&t.latency)
            .map_err(|e| format!("histogram: {e}"))?;
    }
    outcome.latency = latency;
    outcome.churn_latency = churn_latency;
    outcome.time_to_ready = first_open
        .zip(last_ready)
        .map(|(a, b)| b.saturating_duration_since(a));
    if outcome.server.rss_per_conn.is_none() {
        outcome.server.rss_per_conn = rss_before
            .zip(window.rss_at_end)
            .filter(|_| outcome.ready > 0)
            .map(|(a, b)| (b as f64 - a as f64) / outcome.ready as f64);
    }
    Ok(outcome)
}

/// What the monitor saw over the window.
pub struct Window {
    /// Mean busy share of the generator's workers.
    pub own_busy: f64,
    /// The server's figures over the window.
    pub server: Option<server::Delta>,
    /// Server RSS at the end, before connections close.
    pub rss_at_end: Option<u64>,
}

/// Print progress once a second, sample the server and the generator at the window's start and
/// end, then set `stop`.
fn monitor(
    run: &Run,
    live: &[Live],
    meters: &[WorkerMeter],
    Timeline {
        start,
        measure_from,
        end,
    }: Timeline,
    stop: &AtomicBool,
) -> Window {
    let sum = |f: &dyn Fn(&Live) -> u64| live.iter().map(f).sum::<u64>();
    let busy = || -> Duration { meters.iter().map(|m| m.snapshot().busy).sum() };
    let mut next = start + Duration::from_secs(1);
    let mut last = (start, 0u64);
    let mut at_start: Option<(server::Sample, Duration)> = None;
    loop {
        let now = Instant::now();
        if at_start.is_none() && now >= measure_from {
            at_start = Some((run.server.sample(), busy()));
        }
        if now >= end {
            break;
        }
        if now >= next {
            let messages = sum(&|l| l.messages.load(Ordering::Relaxed));
            let rate = (messages - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            last = (now, messages);
            next += Duration::from_secs(1);
            if run.progress {
                let p99 = live
                    .iter()
                    .map(|l| l.p99_ns.load(Ordering::Relaxed))
                    .max()
                    .unwrap_or(0);
                eprintln!(
                    "bench: {:>5.1}s {:<7} {}/{} open  {rate:>11.0} msg/s  p99 {:>8.1} µs  mismatches {}  failed {}",
                    now.duration_since(start).as_secs_f64(),
                    if now < measure_from { "warmup" } else { "measure" },
                    sum(&|l| l.open.load(Ordering::Relaxed)),
                    run.connections,
                    p99 as f64 / 1000.0,
                    sum(&|l| l.mismatches.load(Ordering::Relaxed)),
                    sum(&|l| l.failed.load(Ordering::Relaxed)),
                );
            }
        }
        let wake = next.min(end).min(if at_start.is_none() {
            measure_from
        } else {
            end
        });
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    let server_end = run.server.sample();
    let busy_end = busy();
    stop.store(true, Ordering::Relaxed);
    let window = end.duration_since(measure_from).as_secs_f64();
    let workers = meters.len().max(1) as f64;
    Window {
        own_busy: at_start.as_ref().map_or(0.0, |(_, b)| {
            (busy_end - *b).as_secs_f64() / window / workers
        }),
        rss_at_end: server_end.rss,
        server: at_start.map(|(s, _)| s.delta(&server_end)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let (addr, host, path) = parse_url("ws://127.0.0.1:9001/x/y").unwrap();
        assert_eq!(
            (addr.port(), host.as_str(), path.as_str()),
            (9001, "127.0.0.1:9001", "/x/y")
        );
        assert_eq!(parse_url("ws://127.0.0.1").unwrap().0.port(), 80);
        assert!(parse_url("http://127.0.0.1/").is_err());
        assert_eq!(resolve("127.0.0.1", 9002).unwrap().port(), 9002);
    }
}
