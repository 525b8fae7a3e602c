//! One worker's event loop on kernel sockets: accept, read into the worker's buffer, hand bytes
//! to the [`Driver`], write every connection written to once per iteration, run timers, drain
//! the mailbox. Everything a worker touches is its own; the only shared state is the connection
//! counter (touched on accept and close, never per message) and the mailboxes.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use super::{write_output, KernelConfig, Stop};
use crate::driver::{Driver, DriverConfig, Flushed};
use crate::mailbox::{Letter, Mailbox, Postboxes, DRAIN_PER_ITERATION};
use crate::meter::{most_queued, Queued, Stat, WorkerRecorder};
use crate::report::WorkerReport;
use crate::service::{CloseCause, Service};

/// Token of the worker's waker (a post, a shutdown or a settings change).
pub(super) const WAKER: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);
/// Reads per connection per turn, so one busy client cannot starve the others.
const READS_PER_TURN: usize = 4;
/// Pushes (output queued for other connections: a publish fanned out) one loop iteration may
/// make before its reads wait for the next: what was queued gets written first. Without it one
/// turn's reads of a publisher to a big channel could queue millions of messages, and the
/// iteration would last seconds with nothing written.
const PUSH_BUDGET: u64 = 250_000;
/// A read that made more pushes than this makes the connection's next reads small
/// ([`FANOUT_READ`]), so that one read's fan-out stays within a fraction of the budget.
const FANOUT_PUSHES: u64 = PUSH_BUDGET / 4;
/// Read size for a connection whose input fans out ([`FANOUT_PUSHES`]).
const FANOUT_READ: usize = 4096;

/// The transport's part of a connection.
pub(super) struct Sock {
    stream: TcpStream,
    /// The socket may hold unread bytes (readiness is edge-triggered).
    readable: bool,
    /// In the ready list.
    queued: bool,
    /// Its last read fanned out to many connections: read it in small pieces.
    fans_out: bool,
}

/// A worker: its poller, listener (if it has one), mailbox and connections.
pub(super) struct Worker<S: Service> {
    index: usize,
    cfg: KernelConfig,
    poll: Poll,
    mailbox: Mailbox<S::Message>,
    listener: Option<TcpListener>,
    /// In shared accept mode, worker 0 hands connections to these (itself included).
    peers: Option<Postboxes<S::Message>>,
    next_peer: usize,
    active: Arc<AtomicUsize>,
    stop: Arc<Stop>,
    driver: Driver<S, Sock>,
    rbuf: Vec<u8>,
    /// Pushes made before this iteration (for [`PUSH_BUDGET`]).
    pushes_mark: u64,
    /// Where the part of an answer the socket did not take is laid out when it referenced the
    /// read buffer (its storage is swapped in and out, never reallocated in steady state).
    spare: Vec<u8>,
    ready: VecDeque<usize>,
    /// Scratch lists kept for their allocations.
    flush: Vec<u32>,
    fired: Vec<(usize, bool)>,
    shutdown: Option<Instant>,
    /// When the poller last returned events (for `busy_poll`).
    last_activity: Instant,
    report: WorkerReport,
    last_accept_warning: Option<Instant>,
    meter: WorkerRecorder,
    /// When the most-queued connections were last published.
    last_probe: Instant,
    /// The generation of `cfg.live` last applied.
    live_seen: u64,
}

impl<S: Service> Worker<S> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        index: usize,
        cfg: KernelConfig,
        poll: Poll,
        mailbox: Mailbox<S::Message>,
        posts: Postboxes<S::Message>,
        listener: Option<TcpListener>,
        active: Arc<AtomicUsize>,
        stop: Arc<Stop>,
        service: S,
        meter: WorkerRecorder,
    ) -> Self {
        let shared_acceptor = cfg.accept_mode == super::AcceptMode::Shared && index == 0;
        let driver = Driver::new(
            DriverConfig {
                worker: index as u16,
                backpressure_limit: cfg.backpressure_limit,
                slow_consumer: cfg.slow_consumer,
                close_linger: cfg.close_linger,
            },
            service,
            posts.clone(),
        )
        .with_capacity(cfg.max_connections.min(1 << 20));
        Self {
            index,
            rbuf: vec![0; cfg.read_buffer.max(1024)],
            pushes_mark: 0,
            spare: Vec::new(),
            cfg,
            poll,
            mailbox,
            listener,
            peers: shared_acceptor.then_some(posts),
            next_peer: 0,
            active,
            stop,
            driver,
            ready: VecDeque::new(),
            flush: Vec::new(),
            fired: Vec::new(),
            shutdown: None,
            last_activity: Instant::now(),
            report: WorkerReport {
                worker: index,
                ..WorkerReport::default()
            },
            last_accept_warning: None,
            meter,
            last_probe: Instant::now(),
            live_seen: 0,
        }
    }

    /// Serve until shut down; returns what was done.
    pub(super) fn run(mut self) -> WorkerReport {
        if let Some(l) = &mut self.listener {
            if let Err(e) = self
                .poll
                .registry()
                .register(l, LISTENER, Interest::READABLE)
            {
                tracing::error!(worker = self.index, error = %e, "cannot register listener; worker exits");
                return self.report;
            }
        }
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            // Posts wake a worker only while it says it sleeps; a letter already waiting keeps it
            // from sleeping at all.
            let timeout = if timeout != Some(Duration::ZERO) && !self.mailbox.sleep() {
                Some(Duration::ZERO)
            } else {
                timeout
            };
            let polled = self.poll.poll(&mut events, timeout);
            self.mailbox.wake();
            if let Err(e) = polled {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(worker = self.index, error = %e, "poll failed; worker exits");
                break;
            }
            let now = Instant::now();
            let mut busy = !events.is_empty() || !self.ready.is_empty();
            if !events.is_empty() {
                self.last_activity = now;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => {}
                    LISTENER => self.accept(now),
                    Token(slot) => {
                        let Some(sock) = self.driver.io(slot) else {
                            continue;
                        };
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            sock.readable = true;
                            if !sock.queued {
                                sock.queued = true;
                                self.ready.push_back(slot);
                            }
                        }
                        if ev.is_writable() {
                            self.driver.mark_dirty(slot);
                        }
                    }
                }
            }
            if self.shutdown.is_none() {
                if let Some(grace) = self.stop.requested() {
                    self.begin_shutdown(now + grace, now);
                }
            }
            self.pushes_mark = self.driver.stats().pushes.queued;
            busy |= self.drain_mailbox(now);
            self.process_ready(now);
            self.run_timers(now);
            self.driver.tick(now);
            // Everything this iteration wrote (answers, pushes, timers, the tick) goes out once.
            self.flush_dirty(now);
            self.publish(now);
            if let Some(l) = self
                .cfg
                .live
                .as_ref()
                .and_then(|l| l.changed(&mut self.live_seen))
            {
                self.cfg.backpressure_limit =
                    usize::try_from(l.backpressure_limit).unwrap_or(usize::MAX);
                self.driver.set_limit(self.cfg.backpressure_limit);
                self.cfg.max_connections = usize::try_from(l.max_connections).unwrap_or(usize::MAX);
            }
            if busy {
                self.meter.busy(now, Instant::now());
            } else {
                self.meter.idle();
            }
            if let Some(deadline) = self.shutdown {
                if self.driver.is_empty() {
                    break;
                }
                if now >= deadline {
                    self.abandon_all(now);
                    break;
                }
            }
        }
        self.finish_report();
        tracing::debug!(worker = self.index, report = ?self.report, "worker exits");
        self.report
    }

    fn finish_report(&mut self) {
        let d = self.driver.stats();
        let r = &mut self.report;
        r.closed = d.closed;
        r.errors = d.errors;
        r.abandoned = d.abandoned;
        r.slow_closed = d.slow_closed;
        r.pushes = d.pushes;
        r.messages = self.mailbox.received();
        r.mailbox_refused = self.mailbox.refused();
        r.loops = self.meter.totals();
    }

    /// Copy the counters out for the admin endpoint; about once a second, also the connections
    /// with the most unsent output (a scan of every connection, so not more often).
    fn publish(&mut self, now: Instant) {
        if now.duration_since(self.last_probe) >= Duration::from_secs(1) {
            self.last_probe = now;
            self.meter
                .set_most_queued(most_queued(self.driver.unsent_by_slot().map(
                    |(slot, bytes, dropped)| Queued {
                        slot: slot as u32,
                        bytes: bytes as u64,
                        dropped,
                    },
                )));
        }
        self.finish_report();
        self.report.publish(&mut self.meter);
        self.meter
            .set(Stat::ConnectionsOpen, self.driver.len() as u64);
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty()
            || !self.mailbox.is_empty()
            || now.duration_since(self.last_activity) < self.cfg.busy_poll
        {
            return Some(Duration::ZERO);
        }
        let next = match (self.driver.next_timer(), self.shutdown) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Round up so a timer is never polled for just before it is due.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    /// Take what other threads posted (a bounded number per iteration). Returns whether there was
    /// anything.
    fn drain_mailbox(&mut self, now: Instant) -> bool {
        let mut any = false;
        for _ in 0..DRAIN_PER_ITERATION {
            let Some(letter) = self.mailbox.take() else {
                break;
            };
            any = true;
            match letter {
                Letter::Service(m) => self.driver.message(m, now),
                Letter::Adopt(stream, peer) => self.adopt(stream, peer, now),
                Letter::Neighbour(..) => {}
            }
        }
        any
    }

    fn accept(&mut self, now: Instant) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.dispatch(stream, peer, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the connection waits in the backlog. Say so, but not
                    // once per attempt.
                    if self
                        .last_accept_warning
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
                    {
                        tracing::warn!(worker = self.index, error = %e, "accept failed");
                        self.last_accept_warning = Some(now);
                    }
                    return;
                }
            }
        }
    }

    /// Serve an accepted connection here, or hand it to the next worker (shared accept mode).
    fn dispatch(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        if let Some(peers) = self.peers.as_ref().filter(|p| p.len() > 1) {
            let target = self.next_peer % peers.len();
            self.next_peer = self.next_peer.wrapping_add(1);
            if target != self.index {
                if let Some(p) = peers.get(target) {
                    if let Err((_, full)) = p.send(Letter::Adopt(stream, peer)) {
                        // Dropping the stream closes it: the client sees a reset, not a hang.
                        self.report.rejected += 1;
                        tracing::debug!(worker = target, full, %peer, "cannot hand a connection over; closed");
                    }
                }
                return;
            }
        }
        self.adopt(stream, peer, now);
    }

    fn adopt(&mut self, stream: TcpStream, peer: SocketAddr, now: Instant) {
        if self.shutdown.is_some()
            || self.active.fetch_add(1, Ordering::Relaxed) >= self.cfg.max_connections
        {
            if self.shutdown.is_none() {
                self.active.fetch_sub(1, Ordering::Relaxed);
            }
            self.report.rejected += 1;
            tracing::debug!(worker = self.index, %peer, "connection refused: limit reached or shutting down");
            return;
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let slot = self.driver.insert(Sock {
            stream,
            readable: true,
            queued: true,
            fans_out: false,
        });
        let registered = match self.driver.io(slot) {
            Some(sock) => self.poll.registry().register(
                &mut sock.stream,
                Token(slot),
                Interest::READABLE | Interest::WRITABLE,
            ),
            None => return,
        };
        if let Err(e) = registered {
            self.driver.close(slot, CloseCause::Error, now);
            self.active.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, error = %e, "cannot register connection");
            return;
        }
        self.report.accepted += 1;
        self.ready.push_back(slot);
        self.driver.open(slot, peer, now);
    }

    fn process_ready(&mut self, now: Instant) {
        for _ in 0..self.ready.len() {
            let Some(slot) = self.ready.pop_front() else {
                break;
            };
            if let Some(sock) = self.driver.io(slot) {
                sock.queued = false;
                self.read(slot, now);
            }
        }
    }

    /// Read from one connection, up to the per-turn budget, and feed the service.
    fn read(&mut self, slot: usize, now: Instant) {
        for _ in 0..READS_PER_TURN {
            let pushes = self.driver.stats().pushes.queued;
            if pushes.saturating_sub(self.pushes_mark) >= PUSH_BUDGET {
                // Enough fan-out for one iteration: write it, then read on (requeued below).
                break;
            }
            let open = self.driver.wants_input(slot);
            if open && self.driver.over_limit(slot) {
                // Paused: the flush that drains the output re-queues this connection.
                self.report.backpressure_pauses += 1;
                break;
            }
            let Some(sock) = self.driver.io(slot) else {
                return;
            };
            if !sock.readable {
                break;
            }
            let len = if sock.fans_out {
                FANOUT_READ.min(self.rbuf.len())
            } else {
                self.rbuf.len()
            };
            match sock.stream.read(&mut self.rbuf[..len]) {
                Ok(0) => {
                    sock.readable = false;
                    if self.driver.eof(slot, now) {
                        return self.close(slot, CloseCause::Done, now);
                    }
                    break;
                }
                Ok(n) => {
                    // Input after the service is done (closing, draining) is discarded.
                    if open {
                        self.driver.input(slot, &mut self.rbuf[..n], true, now);
                        let made = self.driver.stats().pushes.queued - pushes;
                        if let Some(sock) = self.driver.io(slot) {
                            sock.fans_out = made > FANOUT_PUSHES;
                        }
                        if self.driver.holds_input(slot) {
                            // The answer references this read's bytes: write it before the
                            // buffer is read into again, and copy only what the socket refused.
                            if self.write(slot, n).is_err() {
                                return self.close(slot, CloseCause::Error, now);
                            }
                            self.driver
                                .detach_input(slot, &self.rbuf[..n], &mut self.spare);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    sock.readable = false;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(conn = slot, error = %e, "read failed");
                    return self.close(slot, CloseCause::Error, now);
                }
            }
        }
        self.requeue(slot);
    }

    /// Budget used up with more to read, or output drained below the limit: continue next turn.
    fn requeue(&mut self, slot: usize) {
        let over = self.driver.wants_input(slot) && self.driver.over_limit(slot);
        if let Some(sock) = self.driver.io(slot) {
            if sock.readable && !sock.queued && !over {
                sock.queued = true;
                self.ready.push_back(slot);
            }
        }
    }

    /// Write what the connection has queued (`input_len` bytes of the read buffer may be
    /// referenced). `Err` if the socket failed.
    fn write(&mut self, slot: usize, input_len: usize) -> Result<(), ()> {
        let Some((sock, out)) = self.driver.output(slot) else {
            return Ok(());
        };
        write_output(&mut sock.stream, out, &self.rbuf[..input_len]).map_err(|e| {
            tracing::debug!(conn = slot, error = %e, "write failed");
        })
    }

    fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.flush);
        self.driver.take_dirty(&mut dirty);
        for &slot in &dirty {
            self.flush(slot as usize, now);
        }
        dirty.clear();
        self.flush = dirty;
    }

    /// Write a connection's pending output; move its close on once everything is out.
    fn flush(&mut self, slot: usize, now: Instant) {
        if self.write(slot, 0).is_err() {
            return self.close(slot, CloseCause::Error, now);
        }
        self.driver.release(slot);
        match self.driver.flushed(slot, now) {
            Flushed::Continue => {}
            Flushed::ShutDown => {
                if let Some(sock) = self.driver.io(slot) {
                    // Best effort: if the socket is already gone, the drain read will say so.
                    let _ = sock.stream.shutdown(Shutdown::Write);
                }
            }
            Flushed::Close => return self.close(slot, CloseCause::Done, now),
        }
        // Output drained below the limit: resume a paused reader.
        self.requeue(slot);
    }

    fn run_timers(&mut self, now: Instant) {
        let mut fired = std::mem::take(&mut self.fired);
        self.driver.expire(now, &mut fired);
        for (slot, expired) in fired.drain(..) {
            if expired {
                self.close(slot, CloseCause::Done, now);
            } else {
                self.driver.arm(slot, None);
            }
        }
        self.fired = fired;
    }

    fn begin_shutdown(&mut self, deadline: Instant, now: Instant) {
        self.shutdown = Some(deadline);
        if let Some(mut l) = self.listener.take() {
            // Dropping the listener closes it; deregistering first keeps the poller tidy.
            let _ = self.poll.registry().deregister(&mut l);
        }
        // Serve what already arrived before saying goodbye.
        for slot in self.driver.slots() {
            self.read(slot, now);
        }
        self.driver.shutdown(now);
        tracing::debug!(
            worker = self.index,
            open = self.driver.len(),
            "worker shutting down"
        );
    }

    fn abandon_all(&mut self, now: Instant) {
        for slot in self.driver.slots() {
            self.close(slot, CloseCause::Shutdown, now);
        }
    }

    fn close(&mut self, slot: usize, cause: CloseCause, now: Instant) {
        if let Some(mut sock) = self.driver.close(slot, cause, now) {
            let _ = self.poll.registry().deregister(&mut sock.stream);
            self.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
