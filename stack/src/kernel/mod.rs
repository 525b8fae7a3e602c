//! The kernel-socket transport: one thread per worker, each with its own `mio` poller.
//!
//! On Linux every worker has its own `SO_REUSEPORT` listener, so the kernel spreads new
//! connections over workers and accept never crosses threads ([`AcceptMode::ReusePort`]).
//! Elsewhere (and on request) worker 0 owns the only listener and hands accepted connections
//! round-robin to the others through their inboxes ([`AcceptMode::Shared`]).

pub mod dialer;
mod listener;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::error::TransportError;
use crate::meter::{WorkerMeter, WorkerRecorder};
use crate::service::Service;
use worker::{Command, Worker};

pub use worker::WorkerReport;

/// How accepted connections reach workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptMode {
    /// One `SO_REUSEPORT` listener per worker (Linux).
    ReusePort,
    /// One listener on worker 0, connections handed to workers round-robin.
    Shared,
}

impl Default for AcceptMode {
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            Self::ReusePort
        } else {
            Self::Shared
        }
    }
}

/// Settings of the kernel transport.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Address to listen on (port 0 picks a free port, the same for every worker).
    pub listen: SocketAddr,
    /// Number of worker threads.
    pub workers: usize,
    /// CPUs to pin workers to, worker `i` on `cpus[i % len]`; empty leaves scheduling to the OS.
    pub cpus: Vec<usize>,
    /// Connections open at once, across workers; more are closed right after accept.
    pub max_connections: usize,
    /// Unsent output per connection above which the worker stops reading from it.
    pub backpressure_limit: usize,
    /// Size of each worker's shared read buffer.
    pub read_buffer: usize,
    /// How long to wait for the peer's FIN after our side has shut down.
    pub close_linger: Duration,
    /// How accepted connections reach workers.
    pub accept_mode: AcceptMode,
    /// After the last event, keep polling without blocking for this long before sleeping in the
    /// poller. Trades CPU for latency: a sleeping worker pays a wake-up (expensive on VMs) per
    /// batch of events. Zero always blocks; an idle worker sleeps once this has passed.
    pub busy_poll: Duration,
    /// Limits that may change while serving (`backpressure_limit`, `max_connections`).
    pub live: Option<Arc<crate::live::LiveLimits>>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 1,
            cpus: Vec::new(),
            max_connections: 100_000,
            backpressure_limit: 1 << 20,
            read_buffer: 64 * 1024,
            close_linger: Duration::from_secs(2),
            accept_mode: AcceptMode::default(),
            busy_poll: Duration::ZERO,
            live: None,
        }
    }
}

/// A running kernel-socket server.
pub struct Server {
    local_addr: SocketAddr,
    meters: Arc<[WorkerMeter]>,
    inboxes: Vec<(Sender<Command>, Arc<mio::Waker>)>,
    threads: Vec<JoinHandle<WorkerReport>>,
}

impl Server {
    /// Bind the listeners and start the workers. `make_service(i)` runs on worker `i`'s thread.
    pub fn start<S, F>(config: KernelConfig, make_service: F) -> Result<Self, TransportError>
    where
        S: Service + 'static,
        F: Fn(usize) -> S + Send + Sync + 'static,
    {
        crate::affinity::validate(&config.cpus)?;
        let workers = config.workers.max(1);
        let listeners = listener::bind(config.listen, config.accept_mode, workers)?;
        let local_addr = listeners[0]
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let active = Arc::new(AtomicUsize::new(0));
        let meters = WorkerMeter::for_workers(workers);
        let make_service = Arc::new(make_service);

        let mut pending = Vec::with_capacity(workers);
        let mut inboxes = Vec::with_capacity(workers);
        let mut listeners = listeners.into_iter();
        for i in 0..workers {
            let poll =
                mio::Poll::new().map_err(|source| TransportError::Worker { worker: i, source })?;
            let waker = Arc::new(
                mio::Waker::new(poll.registry(), worker::WAKER)
                    .map_err(|source| TransportError::Worker { worker: i, source })?,
            );
            let (tx, rx) = crossbeam_channel::unbounded();
            inboxes.push((tx, waker));
            pending.push((poll, rx, listeners.next()));
        }
        let mut threads = Vec::with_capacity(workers);
        for (i, (poll, rx, listener)) in pending.into_iter().enumerate() {
            let cfg = config.clone();
            let peers = if config.accept_mode == AcceptMode::Shared && i == 0 {
                inboxes.clone()
            } else {
                Vec::new()
            };
            let active = Arc::clone(&active);
            let make_service = Arc::clone(&make_service);
            let meter = WorkerRecorder::new(Arc::clone(&meters), i);
            let cpu = (!cfg.cpus.is_empty()).then(|| cfg.cpus[i % cfg.cpus.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("hioload-w{i}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        if !crate::affinity::pin_current(cpu) {
                            tracing::warn!(
                                worker = i,
                                cpu,
                                "could not pin worker to CPU; running unpinned"
                            );
                        }
                    }
                    let service = make_service(i);
                    Worker::new(i, cfg, poll, rx, listener, peers, active, service, meter).run()
                })
                .map_err(|source| TransportError::Worker { worker: i, source })?;
            threads.push(thread);
        }
        Ok(Self {
            local_addr,
            meters,
            inboxes,
            threads,
        })
    }

    /// The address the listeners are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every worker's loop counters, in worker order, readable while serving.
    pub fn meters(&self) -> Arc<[WorkerMeter]> {
        Arc::clone(&self.meters)
    }

    /// A handle that wakes every worker (after live settings changed).
    pub fn nudge(&self) -> Nudge {
        Nudge {
            wakers: self.inboxes.iter().map(|(_, w)| Arc::clone(w)).collect(),
        }
    }

    /// A handle that can start the shutdown from another thread (e.g. a signal handler).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            inboxes: self.inboxes.clone(),
        }
    }

    /// Ask every worker to stop accepting and close its connections gracefully within `grace`.
    pub fn shutdown(&self, grace: Duration) {
        self.shutdown_handle().shutdown(grace);
    }

    /// Wait for every worker to exit and collect their reports.
    pub fn join(self) -> Result<Vec<WorkerReport>, TransportError> {
        self.threads
            .into_iter()
            .enumerate()
            .map(|(i, t)| t.join().map_err(|_| TransportError::WorkerPanicked(i)))
            .collect()
    }
}

/// Wakes every worker of a [`Server`] from any thread, so that a change of live settings
/// ([`crate::live`]) is taken at once rather than at the next event.
#[derive(Clone)]
pub struct Nudge {
    wakers: Vec<Arc<mio::Waker>>,
}

impl Nudge {
    /// Wake every worker for one loop iteration.
    pub fn nudge(&self) {
        for w in &self.wakers {
            if let Err(e) = w.wake() {
                tracing::debug!(error = %e, "cannot wake a worker");
            }
        }
    }
}

/// Starts a graceful shutdown of a [`Server`] from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    inboxes: Vec<(Sender<Command>, Arc<mio::Waker>)>,
}

impl ShutdownHandle {
    /// Ask every worker to stop accepting and close its connections gracefully within `grace`.
    pub fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        for (tx, waker) in &self.inboxes {
            // A worker that has already exited has dropped its receiver; nothing to tell it.
            let _ = tx.send(Command::Shutdown { deadline });
            if let Err(e) = waker.wake() {
                tracing::warn!(error = %e, "cannot wake worker for shutdown");
            }
        }
    }
}

/// Raise the soft open-file limit to the hard limit (stock systems start many processes at
/// 1,024) and return how many connections fit under it, leaving room for the listeners, pollers
/// and wakers of `workers` workers. `None` where the platform has no such limit to read.
pub fn raise_fd_limit(workers: usize) -> Option<usize> {
    let reserved = 3 * workers as u64 + 64;
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => {
                tracing::debug!(limit, "open-file limit");
                Some(usize::try_from(limit.saturating_sub(reserved)).unwrap_or(usize::MAX))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or raise the open-file limit");
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reserved;
        None
    }
}
