//! One worker's event loop: accept, read, hand bytes to the service, write corked output,
//! run deadlines. Everything a worker touches is its own; the only shared state is the
//! connection counter (touched on accept and close, never per message).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::KernelConfig;
use crate::bufpool::BufPool;
use crate::meter::{most_queued, LoopSnapshot, Queued, Stat, WorkerRecorder};
use crate::service::{CloseCause, ConnId, Service, Verdict};
use crate::timer::{Clock, Entry, Millis, Timers, NEVER};

/// Token of the worker's waker (inbox has commands).
pub(super) const WAKER: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);
/// Reads per connection per turn, so one busy client cannot starve the others.
const READS_PER_TURN: usize = 4;
/// Free output buffers a worker keeps for reuse, and their total size.
const POOLED_BUFFERS: usize = 1024;
const POOLED_BYTES: usize = 32 << 20;

/// Messages to a worker from other threads.
pub(super) enum Command {
    /// Stop accepting and close every connection gracefully by `deadline`.
    Shutdown { deadline: Instant },
    /// A connection accepted by the shared listener, for this worker to serve.
    Adopt(TcpStream, SocketAddr),
}

/// What one worker did, returned when it exits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Worker index.
    pub worker: usize,
    /// Connections accepted and served.
    pub accepted: u64,
    /// Connections refused because `max_connections` was reached.
    pub rejected: u64,
    /// Connections that ended with a completed close.
    pub closed: u64,
    /// Connections that ended by error or reset.
    pub errors: u64,
    /// Connections still open when the shutdown deadline passed.
    pub abandoned: u64,
    /// Read turns cut short because the connection's unsent output was over the limit.
    pub backpressure_pauses: u64,
    /// Loop iterations and busy time.
    pub loops: LoopSnapshot,
}

/// What to do with a connection after a read turn.
enum AfterRead {
    Nothing,
    BeginClose,
    Close(CloseCause),
}

/// Where a connection is in its life, as far as the transport is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Input goes to the service.
    Open,
    /// The service is done: write what is left, then shut down our side (give up at `until`).
    Flushing,
    /// Our side is shut down: discard input until the peer's FIN or `until`.
    Draining,
}

struct Conn<C> {
    stream: TcpStream,
    state: C,
    out: Vec<u8>,
    out_pos: usize,
    phase: Phase,
    /// The socket may hold unread bytes (readiness is edge-triggered).
    readable: bool,
    /// The peer has shut down its side.
    peer_eof: bool,
    /// In the ready list.
    queued: bool,
    /// In the flush list.
    dirty: bool,
    /// While Flushing or Draining: when to give up and close.
    until: Millis,
    /// The earliest timer entry armed for this connection (`NEVER` if none).
    armed: Millis,
    generation: u32,
}

impl<C> Conn<C> {
    fn unsent(&self) -> usize {
        self.out.len() - self.out_pos
    }
}

/// A worker: its poller, listener (if it has one), connections and service.
pub(super) struct Worker<S: Service> {
    index: usize,
    cfg: KernelConfig,
    poll: Poll,
    inbox: Receiver<Command>,
    listener: Option<TcpListener>,
    /// In shared accept mode, worker 0 hands connections to these (itself included).
    peers: Vec<(Sender<Command>, Arc<Waker>)>,
    next_peer: usize,
    active: Arc<AtomicUsize>,
    service: S,
    conns: Slab<Conn<S::Conn>>,
    rbuf: Vec<u8>,
    pool: BufPool,
    ready: VecDeque<usize>,
    dirty: Vec<usize>,
    timers: Timers,
    /// Scratch list of timer entries being run (kept to reuse its allocation).
    due: Vec<Entry>,
    generation: u32,
    shutdown: Option<Instant>,
    clock: Clock,
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
        inbox: Receiver<Command>,
        listener: Option<TcpListener>,
        peers: Vec<(Sender<Command>, Arc<Waker>)>,
        active: Arc<AtomicUsize>,
        service: S,
        meter: WorkerRecorder,
    ) -> Self {
        let rbuf = vec![0; cfg.read_buffer.max(1024)];
        // Address space only: pages are touched as connections arrive, and the slab never has
        // to move every connection while accepting.
        let conns = Slab::with_capacity(cfg.max_connections.min(1 << 20));
        Self {
            index,
            cfg,
            poll,
            inbox,
            listener,
            peers,
            next_peer: 0,
            active,
            service,
            conns,
            rbuf,
            pool: BufPool::new(POOLED_BUFFERS, POOLED_BYTES),
            ready: VecDeque::new(),
            dirty: Vec::new(),
            timers: Timers::default(),
            due: Vec::new(),
            generation: 0,
            shutdown: None,
            clock: Clock::new(),
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
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(worker = self.index, error = %e, "poll failed; worker exits");
                break;
            }
            let now = Instant::now();
            let busy = !events.is_empty() || !self.ready.is_empty();
            if !events.is_empty() {
                self.last_activity = now;
            }
            for ev in events.iter() {
                match ev.token() {
                    WAKER => self.drain_inbox(now),
                    LISTENER => self.accept(now),
                    Token(slot) => {
                        let Some(c) = self.conns.get_mut(slot) else {
                            continue;
                        };
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            c.readable = true;
                            if !c.queued {
                                c.queued = true;
                                self.ready.push_back(slot);
                            }
                        }
                        if ev.is_writable() && c.unsent() > 0 && !c.dirty {
                            c.dirty = true;
                            self.dirty.push(slot);
                        }
                    }
                }
            }
            self.process_ready(now);
            self.flush_dirty(now);
            self.run_timers(now);
            // A few stores per iteration; an iteration costs a system call anyway.
            self.publish(now);
            if self.service.on_tick(now) {
                // A timeout changed: every connection's deadline may have moved.
                let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
                for slot in slots {
                    self.arm(slot);
                }
            }
            if let Some(l) = self
                .cfg
                .live
                .as_ref()
                .and_then(|l| l.changed(&mut self.live_seen))
            {
                self.cfg.backpressure_limit =
                    usize::try_from(l.backpressure_limit).unwrap_or(usize::MAX);
                self.cfg.max_connections = usize::try_from(l.max_connections).unwrap_or(usize::MAX);
            }
            if busy {
                self.meter.busy(now, Instant::now());
            } else {
                self.meter.idle();
            }
            if let Some(deadline) = self.shutdown {
                if self.conns.is_empty() {
                    break;
                }
                if now >= deadline {
                    self.abandon_all();
                    break;
                }
            }
        }
        self.report.loops = self.meter.totals();
        tracing::debug!(worker = self.index, report = ?self.report, "worker exits");
        self.report
    }

    /// Copy the counters out for the admin endpoint; about once a second, also the connections
    /// with the most unsent output (a scan of every connection, so not more often).
    fn publish(&mut self, now: Instant) {
        if now.duration_since(self.last_probe) >= Duration::from_secs(1) {
            self.last_probe = now;
            self.meter
                .set_most_queued(most_queued(self.conns.iter().map(|(slot, c)| Queued {
                    slot: slot as u32,
                    bytes: c.unsent() as u64,
                })));
        }
        let r = &self.report;
        for (stat, value) in [
            (Stat::ConnectionsOpen, self.conns.len() as u64),
            (Stat::ConnectionsAccepted, r.accepted),
            (Stat::ConnectionsClosed, r.closed),
            (Stat::ConnectionErrors, r.errors),
            (Stat::RejectedMaxConnections, r.rejected),
            (Stat::BackpressurePauses, r.backpressure_pauses),
        ] {
            self.meter.set(stat, value);
        }
    }

    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() || now.duration_since(self.last_activity) < self.cfg.busy_poll {
            return Some(Duration::ZERO);
        }
        let next = match (
            self.timers.next().map(|ms| self.clock.instant(ms)),
            self.shutdown,
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // Round up so a timer is never polled for just before it is due.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn drain_inbox(&mut self, now: Instant) {
        while let Ok(cmd) = self.inbox.try_recv() {
            match cmd {
                Command::Adopt(stream, peer) => self.adopt(stream, peer, now),
                Command::Shutdown { deadline } => self.begin_shutdown(deadline, now),
            }
        }
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
        if self.peers.len() > 1 {
            let target = self.next_peer % self.peers.len();
            self.next_peer = self.next_peer.wrapping_add(1);
            if target != self.index {
                let (tx, waker) = &self.peers[target];
                if tx.send(Command::Adopt(stream, peer)).is_ok() {
                    if let Err(e) = waker.wake() {
                        tracing::warn!(worker = target, error = %e, "cannot wake worker for a new connection");
                    }
                }
                return;
            }
        }
        self.adopt(stream, peer, now);
    }

    fn adopt(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Instant) {
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
        let entry = self.conns.vacant_entry();
        let slot = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(slot),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.active.fetch_sub(1, Ordering::Relaxed);
            tracing::warn!(%peer, error = %e, "cannot register connection");
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        let id = ConnId {
            worker: self.index as u16,
            slot: slot as u32,
        };
        let mut state = self.service.open(id, peer, now);
        let mut out = Vec::new();
        let verdict = self.service.greet(&mut state, &mut out, now);
        let greeted = !out.is_empty();
        entry.insert(Conn {
            stream,
            state,
            out,
            out_pos: 0,
            phase: Phase::Open,
            until: NEVER,
            readable: true,
            peer_eof: false,
            queued: true,
            dirty: greeted,
            armed: NEVER,
            generation: self.generation,
        });
        self.ready.push_back(slot);
        if greeted {
            self.dirty.push(slot);
        }
        self.report.accepted += 1;
        if verdict == Verdict::Close {
            self.begin_close(slot, now);
        }
        self.arm(slot);
    }

    fn process_ready(&mut self, now: Instant) {
        for _ in 0..self.ready.len() {
            let Some(slot) = self.ready.pop_front() else {
                break;
            };
            if let Some(c) = self.conns.get_mut(slot) {
                c.queued = false;
                self.read(slot, now);
            }
        }
    }

    /// Read from one connection, up to the per-turn budget, and feed the service.
    fn read(&mut self, slot: usize, now: Instant) {
        let mut next = AfterRead::Nothing;
        {
            let Some(c) = self.conns.get_mut(slot) else {
                return;
            };
            self.pool.lend(&mut c.out);
            for _ in 0..READS_PER_TURN {
                if !c.readable {
                    break;
                }
                if c.phase == Phase::Open && c.unsent() > self.cfg.backpressure_limit {
                    // Paused: the flush that drains the output re-queues this connection.
                    self.report.backpressure_pauses += 1;
                    break;
                }
                match c.stream.read(&mut self.rbuf) {
                    Ok(0) => {
                        c.readable = false;
                        c.peer_eof = true;
                        next = match c.phase {
                            Phase::Open => match self.service.on_eof(&mut c.state, &mut c.out, now)
                            {
                                Verdict::Close => AfterRead::BeginClose,
                                Verdict::Continue => AfterRead::Nothing,
                            },
                            // The flush closes the connection once the output is out.
                            Phase::Flushing => AfterRead::Nothing,
                            Phase::Draining => AfterRead::Close(CloseCause::Done),
                        };
                        break;
                    }
                    Ok(n) => {
                        // Input after the service is done (Flushing, Draining) is discarded.
                        if c.phase == Phase::Open
                            && self.service.on_data(
                                &mut c.state,
                                &mut self.rbuf[..n],
                                &mut c.out,
                                now,
                            ) == Verdict::Close
                        {
                            next = AfterRead::BeginClose;
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        c.readable = false;
                        break;
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::debug!(conn = slot, error = %e, "read failed");
                        next = AfterRead::Close(CloseCause::Error);
                        break;
                    }
                }
            }
            if c.unsent() > 0 && !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
            self.pool.reclaim(&mut c.out);
            if c.readable && !c.queued && c.unsent() <= self.cfg.backpressure_limit {
                // Budget used up with more to read: continue next turn, after the others.
                c.queued = true;
                self.ready.push_back(slot);
            }
        }
        match next {
            AfterRead::Nothing => {}
            AfterRead::BeginClose => self.begin_close(slot, now),
            AfterRead::Close(cause) => return self.close(slot, cause),
        }
        self.arm(slot);
    }

    fn begin_close(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        if c.phase == Phase::Open {
            c.phase = Phase::Flushing;
            c.until = self.clock.ceil(now + self.cfg.close_linger);
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for slot in dirty.drain(..) {
            if let Some(c) = self.conns.get_mut(slot) {
                c.dirty = false;
                self.flush(slot, now);
            }
        }
        // Keep the allocation for the next iteration.
        if self.dirty.is_empty() {
            self.dirty = dirty;
        }
    }

    /// Write a connection's pending output; finish a close once everything is out.
    fn flush(&mut self, slot: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        while c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::debug!(conn = slot, error = %e, "write failed");
                    self.close(slot, CloseCause::Error);
                    return;
                }
            }
        }
        if c.out_pos == c.out.len() {
            c.out.clear();
            c.out_pos = 0;
            self.pool.reclaim(&mut c.out);
        } else if c.out_pos > c.out.len() / 2 {
            c.out.drain(..c.out_pos);
            c.out_pos = 0;
        }
        if c.unsent() == 0 && c.phase == Phase::Flushing {
            if c.peer_eof {
                self.close(slot, CloseCause::Done);
                return;
            }
            // Best effort: if the socket is already gone, the drain read will say so.
            let _ = c.stream.shutdown(Shutdown::Write);
            c.phase = Phase::Draining;
            c.until = self.clock.ceil(now + self.cfg.close_linger);
        }
        // Output drained below the limit: resume a paused reader.
        if c.readable && !c.queued && c.unsent() <= self.cfg.backpressure_limit {
            c.queued = true;
            self.ready.push_back(slot);
        }
        self.arm(slot);
    }

    /// Make sure a timer entry exists at or before the connection's next deadline.
    fn arm(&mut self, slot: usize) {
        let Some(c) = self.conns.get_mut(slot) else {
            return;
        };
        let due = match c.phase {
            Phase::Open => self.service.deadline(&c.state).map(|d| self.clock.ceil(d)),
            Phase::Flushing | Phase::Draining => Some(c.until),
        };
        if let Some(at) = due {
            if at < c.armed {
                c.armed = at;
                self.timers.push(Entry {
                    at,
                    slot: slot as u32,
                    generation: c.generation,
                });
            }
        }
    }

    fn run_timers(&mut self, now: Instant) {
        let mut due = std::mem::take(&mut self.due);
        self.timers.take_due(self.clock.floor(now), &mut due);
        for e in due.drain(..) {
            let slot = e.slot as usize;
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            if c.generation != e.generation || c.armed != e.at {
                continue; // stale: a newer entry covers this connection
            }
            c.armed = NEVER;
            match c.phase {
                Phase::Open if self.service.deadline(&c.state).is_some_and(|d| d <= now) => {
                    self.pool.lend(&mut c.out);
                    let v = self.service.on_deadline(&mut c.state, &mut c.out, now);
                    self.pool.reclaim(&mut c.out);
                    if c.unsent() > 0 && !c.dirty {
                        c.dirty = true;
                        self.dirty.push(slot);
                    }
                    if v == Verdict::Close {
                        self.begin_close(slot, now);
                    }
                }
                Phase::Flushing | Phase::Draining if c.until <= self.clock.floor(now) => {
                    self.close(slot, CloseCause::Done);
                    continue;
                }
                _ => {}
            }
            self.arm(slot);
        }
        self.due = due;
        // Output queued by deadlines goes out in this iteration too.
        if !self.dirty.is_empty() {
            self.flush_dirty(now);
        }
    }

    fn begin_shutdown(&mut self, deadline: Instant, now: Instant) {
        if self.shutdown.is_some() {
            return;
        }
        self.shutdown = Some(deadline);
        if let Some(mut l) = self.listener.take() {
            // Dropping the listener closes it; deregistering first keeps the poller tidy.
            let _ = self.poll.registry().deregister(&mut l);
        }
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            // Serve what already arrived before saying goodbye.
            self.read(slot, now);
            let Some(c) = self.conns.get_mut(slot) else {
                continue;
            };
            if c.phase == Phase::Open {
                self.pool.lend(&mut c.out);
                let v = self.service.on_shutdown(&mut c.state, &mut c.out, now);
                self.pool.reclaim(&mut c.out);
                if !c.dirty {
                    c.dirty = true;
                    self.dirty.push(slot);
                }
                if v == Verdict::Close {
                    self.begin_close(slot, now);
                }
                self.arm(slot);
            }
        }
        tracing::debug!(
            worker = self.index,
            open = self.conns.len(),
            "worker shutting down"
        );
    }

    fn abandon_all(&mut self) {
        let slots: Vec<usize> = self.conns.iter().map(|(slot, _)| slot).collect();
        for slot in slots {
            self.close(slot, CloseCause::Shutdown);
        }
    }

    fn close(&mut self, slot: usize, cause: CloseCause) {
        if !self.conns.contains(slot) {
            return;
        }
        let mut c = self.conns.remove(slot);
        let _ = self.poll.registry().deregister(&mut c.stream);
        c.out.clear();
        self.pool.reclaim(&mut c.out);
        self.active.fetch_sub(1, Ordering::Relaxed);
        match cause {
            CloseCause::Done => self.report.closed += 1,
            CloseCause::Error => self.report.errors += 1,
            CloseCause::Shutdown => self.report.abandoned += 1,
        }
        self.service.on_close(c.state, cause);
    }
}
