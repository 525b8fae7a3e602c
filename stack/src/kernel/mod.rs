//! The kernel-socket transport: one thread per worker, each with its own `mio` poller.
//!
//! On Linux every worker has its own `SO_REUSEPORT` listener, so the kernel spreads new
//! connections over workers and accept never crosses threads ([`AcceptMode::ReusePort`]).
//! Elsewhere (and on request) worker 0 owns the only listener and hands accepted connections
//! round-robin to the others through their mailboxes ([`AcceptMode::Shared`]).

pub mod dialer;
mod listener;
mod worker;

use std::io::{ErrorKind, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use mio::net::TcpStream;

use crate::driver::SlowConsumer;
use crate::error::TransportError;
use crate::mailbox::{self, Postboxes};
use crate::meter::{WorkerMeter, WorkerRecorder};
use crate::output::Output;
use crate::report::WorkerReport;
use crate::service::Service;
use worker::Worker;

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
    /// What happens to connections that pushes would take over `backpressure_limit`.
    pub slow_consumer: SlowConsumer,
    /// Letters each worker's mailbox holds at most.
    pub mailbox_capacity: usize,
    /// Worker threads are named this, with their index.
    pub thread_name: String,
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
            slow_consumer: SlowConsumer::Drop,
            mailbox_capacity: 8192,
            thread_name: "hioload-w".into(),
        }
    }
}

/// A stop request shared by a server's workers: set once, seen by each worker on its next
/// iteration (its waker makes that immediate).
#[derive(Debug, Default)]
pub(crate) struct Stop {
    requested: AtomicBool,
    grace_ms: AtomicU64,
}

impl Stop {
    fn request(&self, grace: Duration) {
        self.grace_ms.store(
            u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.requested.store(true, Ordering::Release);
    }

    /// The grace period, once a stop was requested.
    pub(crate) fn requested(&self) -> Option<Duration> {
        self.requested
            .load(Ordering::Acquire)
            .then(|| Duration::from_millis(self.grace_ms.load(Ordering::Relaxed)))
    }
}

/// A running kernel-socket server.
pub struct Server<M = ()> {
    local_addr: SocketAddr,
    meters: Arc<[WorkerMeter]>,
    posts: Postboxes<M>,
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<WorkerReport>>,
}

impl<M: Send + 'static> Server<M> {
    /// Bind the listeners and start the workers. `make_service(i)` runs on worker `i`'s thread.
    pub fn start<S, F>(config: KernelConfig, make_service: F) -> Result<Self, TransportError>
    where
        S: Service<Message = M> + 'static,
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

        let stop = Arc::new(Stop::default());
        let mut polls = Vec::with_capacity(workers);
        let mut wakers = Vec::with_capacity(workers);
        for i in 0..workers {
            let poll =
                mio::Poll::new().map_err(|source| TransportError::Worker { worker: i, source })?;
            let waker = Arc::new(
                mio::Waker::new(poll.registry(), worker::WAKER)
                    .map_err(|source| TransportError::Worker { worker: i, source })?,
            );
            wakers.push(Some(waker));
            polls.push(poll);
        }
        let (posts, boxes) = mailbox::mailboxes(config.mailbox_capacity, wakers);
        let mut listeners = listeners.into_iter();
        let mut threads = Vec::with_capacity(workers);
        for (i, (poll, mailbox)) in polls.into_iter().zip(boxes).enumerate() {
            let cfg = config.clone();
            let listener = listeners.next();
            let posts = posts.clone();
            let stop = Arc::clone(&stop);
            let active = Arc::clone(&active);
            let make_service = Arc::clone(&make_service);
            let meter = WorkerRecorder::new(Arc::clone(&meters), i);
            let cpu = (!cfg.cpus.is_empty()).then(|| cfg.cpus[i % cfg.cpus.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("{}{i}", cfg.thread_name))
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
                    Worker::new(
                        i, cfg, poll, mailbox, posts, listener, active, stop, service, meter,
                    )
                    .run()
                })
                .map_err(|source| TransportError::Worker { worker: i, source })?;
            threads.push(thread);
        }
        Ok(Self {
            local_addr,
            meters,
            posts,
            stop,
            threads,
        })
    }

    /// Every worker's postbox: any thread can post to a worker's service with it.
    pub fn postboxes(&self) -> Postboxes<M> {
        self.posts.clone()
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
            wake: Arc::new(self.posts.clone()),
        }
    }

    /// A handle that can start the shutdown from another thread (e.g. a signal handler).
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            stop: Arc::clone(&self.stop),
            wake: Arc::new(self.posts.clone()),
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

/// Something that can wake every worker of a server.
trait WakeAll: Send + Sync {
    fn wake_all(&self);
}

impl<M: Send> WakeAll for Postboxes<M> {
    fn wake_all(&self) {
        for p in self.iter() {
            p.wake();
        }
    }
}

/// Wakes every worker of a [`Server`] from any thread, so that a change of live settings
/// ([`crate::live`]) is taken at once rather than at the next event.
#[derive(Clone)]
pub struct Nudge {
    wake: Arc<dyn WakeAll>,
}

impl Nudge {
    /// Wake every worker for one loop iteration.
    pub fn nudge(&self) {
        self.wake.wake_all();
    }
}

/// Starts a graceful shutdown of a [`Server`] from any thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    stop: Arc<Stop>,
    wake: Arc<dyn WakeAll>,
}

impl ShutdownHandle {
    /// Ask every worker to stop accepting and close its connections gracefully within `grace`.
    pub fn shutdown(&self, grace: Duration) {
        self.stop.request(grace);
        self.wake.wake_all();
    }
}

/// Write as much of `out` as the socket takes: one `write` for plain output, a vectored write
/// when pieces are queued by reference (`input`: the buffer input references point into).
/// `Err` only for a failed socket.
pub(crate) fn write_output(
    stream: &mut TcpStream,
    out: &mut Output,
    input: &[u8],
) -> std::io::Result<()> {
    /// Pieces per vectored write (well under every platform's IOV_MAX).
    const MAX_IOV: usize = 64;
    while !out.is_empty() {
        let written = if out.is_contiguous() {
            stream.write(out.front(input))
        } else {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let n = out.slices(input, &mut iov);
            stream.write_vectored(&iov[..n])
        };
        match written {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
