//! The connection driver: everything about a worker's connections that does not depend on how
//! bytes reach the network. The kernel worker, the kernel dialer and the DPDK engine each keep
//! only their own I/O and drive their connections through one [`Driver`]:
//!
//! - the connections' slots, each with the service's state and the transport's I/O object `T`;
//! - their output lines ([`lines`]): output buffers lent from the worker's pool, pushes from any
//!   service code with the limit and the slow-consumer policy;
//! - each connection's phase: `Open` (input goes to the service), `Closing` (the service is done:
//!   flush, then the transport shuts its side down), `Draining` (wait for the peer, briefly);
//! - deadline arming (one timer entry per connection: the service's deadline, the phase's, the
//!   slow-consumer grace and whatever the transport adds), verdicts, shutdown;
//! - the service's own timers, its mailbox messages, and its once-per-iteration tick.
//!
//! The transport tells the driver what happened (a connection, input, end of input, a write) and
//! asks it what to do (what to write, whether to shut down, when to wake up).

pub mod lines;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::mailbox::{Letter, Mailbox, Postboxes, DRAIN_PER_ITERATION};
use crate::output::Output;
use crate::service::{CloseCause, ConnCtx, ConnId, Ctx, Service, Verdict};
use crate::timer::{Clock, Entry, Millis, ServiceTimers, Timers, NEVER};
use lines::{Line, Lines, PushStats};

pub use lines::SlowConsumer;

/// Settings of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// The worker's index (goes into connection ids).
    pub worker: u16,
    /// Unsent output per connection beyond which its input is not read and pushes are dropped.
    pub backpressure_limit: usize,
    /// What happens to connections that pushes would take over that limit.
    pub slow_consumer: SlowConsumer,
    /// How long a closing connection may take to flush its output, and then to see the peer
    /// close, before it is closed anyway.
    pub close_linger: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            worker: 0,
            backpressure_limit: 1 << 20,
            slow_consumer: SlowConsumer::Drop,
            close_linger: Duration::from_secs(2),
        }
    }
}

/// Where a connection is in its life, as far as the transport is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Input goes to the service (once it knows the connection).
    Open,
    /// The service is done: write what is left, then shut down our side.
    Closing,
    /// Our side is shut down: discard input until the peer's end or the linger runs out.
    Draining,
}

/// What the transport does after writing a connection's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// Nothing more.
    Continue,
    /// Everything is out and the service is done: shut down our sending side now.
    ShutDown,
    /// Everything is out and both sides are done: close the connection.
    Close,
}

/// Counters of a driver.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DriverStats {
    /// Connections the service was given.
    pub opened: u64,
    /// Connections that ended with a completed close.
    pub closed: u64,
    /// Connections that ended by error or reset.
    pub errors: u64,
    /// Connections still open when the worker stopped.
    pub abandoned: u64,
    /// Connections closed as slow consumers.
    pub slow_closed: u64,
    /// Messages delivered to the service from the mailbox.
    pub messages: u64,
    /// Pushes, by outcome.
    pub pushes: PushStats,
}

/// What the driver knows of a connection, as [`Driver::peek`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// The service knows the connection.
    pub open: bool,
    /// Its phase.
    pub phase: Phase,
    /// Its unsent output.
    pub unsent: usize,
    /// The unsent output is over the backpressure limit.
    pub over_limit: bool,
}

impl View {
    /// Input on the connection would go to the service.
    #[inline]
    pub fn wants_input(&self) -> bool {
        self.open && self.phase == Phase::Open
    }
}

/// A connection's slot: the transport's I/O object and the service's state.
pub struct Slot<C, T> {
    /// The transport's part.
    pub io: T,
    /// `None` until the service is given the connection (e.g. while a DPDK handshake is on).
    state: Option<C>,
    phase: Phase,
    /// While Closing or Draining: when to give up.
    until: Millis,
    /// The earliest timer entry armed (`NEVER` if none).
    armed: Millis,
    /// The peer has ended its side.
    peer_eof: bool,
}

/// One worker's connections and service, transport-independent.
pub struct Driver<S: Service, T> {
    service: S,
    slots: Slab<Slot<S::Conn, T>>,
    lines: Lines,
    posts: Postboxes<S::Message>,
    timers: Timers,
    /// Scratch list of timer entries being run (kept for its allocation).
    due: Vec<Entry>,
    service_timers: ServiceTimers,
    clock: Clock,
    generation: u32,
    stats: DriverStats,
    close_linger: Duration,
    /// A driver's own mailbox when it runs alone ([`Driver::detached`]); drained by the tick.
    own_mail: Option<Mailbox<S::Message>>,
}

/// Build a [`ConnCtx`] for `$slot` from the driver's fields (a macro, so that the borrow checker
/// sees the disjoint fields).
macro_rules! conn_cx {
    ($d:expr, $slot:expr, $now:expr) => {
        ConnCtx {
            cx: Ctx {
                now: $now,
                lines: &mut $d.lines,
                posts: &$d.posts,
                timers: &mut $d.service_timers,
            },
            slot: $slot as u32,
        }
    };
}

macro_rules! worker_cx {
    ($d:expr, $now:expr) => {
        Ctx {
            now: $now,
            lines: &mut $d.lines,
            posts: &$d.posts,
            timers: &mut $d.service_timers,
        }
    };
}

impl<S: Service, T> Driver<S, T> {
    /// A driver for `service`; `posts` reaches every worker's mailbox (for [`Ctx::post`]).
    pub fn new(cfg: DriverConfig, service: S, posts: Postboxes<S::Message>) -> Self {
        let clock = Clock::new();
        Self {
            service,
            slots: Slab::new(),
            lines: Lines::new(cfg.worker, cfg.backpressure_limit, cfg.slow_consumer, clock),
            posts,
            timers: Timers::default(),
            due: Vec::new(),
            service_timers: ServiceTimers::default(),
            clock,
            generation: 0,
            stats: DriverStats::default(),
            close_linger: cfg.close_linger,
            own_mail: None,
        }
    }

    /// A driver that is not one worker of many (a load generator's thread, a test, a tool): it
    /// has a mailbox of its own, which [`Driver::tick`] drains, so its service can post to
    /// itself like on any worker.
    pub fn detached(cfg: DriverConfig, service: S) -> Self {
        let (posts, mut boxes) = crate::mailbox::mailboxes(1024, vec![None]);
        let mut d = Self::new(cfg, service, posts);
        d.own_mail = boxes.pop();
        d
    }

    /// Reserve address space for `n` connections (pages are touched as connections arrive, and
    /// the slab never has to move every connection while accepting).
    pub fn with_capacity(mut self, n: usize) -> Self {
        self.slots.reserve(n);
        // The lines too: grown by doubling, they would leave copies behind in the heap.
        self.lines.lines.reserve(n);
        self
    }

    /// Count time from `epoch` (the transport's first instant, which may lie before the
    /// driver was made, as in a simulation); before any connection arrives.
    pub fn with_epoch(mut self, epoch: Instant) -> Self {
        debug_assert!(self.slots.is_empty(), "the clock moves under armed timers");
        self.clock = Clock::starting_at(epoch);
        self.lines.clock = self.clock;
        self
    }

    /// The service.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// Give up the driver and keep its service (connections still open are dropped unannounced).
    pub fn into_service(self) -> S {
        self.service
    }

    /// Counters.
    pub fn stats(&self) -> DriverStats {
        DriverStats {
            pushes: self.lines.stats,
            ..self.stats
        }
    }

    /// The worker's millisecond clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Connections in slots (including those the service does not know yet).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The occupied slots (a copy: for passes that change the set).
    pub fn slots(&self) -> Vec<usize> {
        self.slots.iter().map(|(slot, _)| slot).collect()
    }

    /// The transport's part of a connection.
    #[inline]
    pub fn io(&mut self, slot: usize) -> Option<&mut T> {
        self.slots.get_mut(slot).map(|s| &mut s.io)
    }

    /// The transport's part of every connection.
    pub fn ios(&self) -> impl Iterator<Item = (usize, &T)> + '_ {
        self.slots.iter().map(|(slot, s)| (slot, &s.io))
    }

    /// The transport's part of a connection with what the driver knows of it, in one look-up
    /// (for a transport's per-connection turn).
    #[inline]
    pub fn peek(&mut self, slot: usize) -> Option<(&mut T, View)> {
        let s = self.slots.get_mut(slot)?;
        let unsent = self.lines.lines.get(slot).map_or(0, |l| l.out.unsent());
        Some((
            &mut s.io,
            View {
                open: s.state.is_some(),
                phase: s.phase,
                unsent,
                over_limit: unsent > self.lines.limit,
            },
        ))
    }

    /// Whether the service knows the connection.
    #[inline]
    pub fn is_open(&self, slot: usize) -> bool {
        self.slots.get(slot).is_some_and(|s| s.state.is_some())
    }

    /// The connection's phase.
    #[inline]
    pub fn phase(&self, slot: usize) -> Option<Phase> {
        self.slots.get(slot).map(|s| s.phase)
    }

    /// Whether input on the connection would go to the service (open, not closing).
    #[inline]
    pub fn wants_input(&self, slot: usize) -> bool {
        self.slots
            .get(slot)
            .is_some_and(|s| s.phase == Phase::Open && s.state.is_some())
    }

    /// Unsent output of the connection.
    #[inline]
    pub fn unsent(&self, slot: usize) -> usize {
        self.lines.lines.get(slot).map_or(0, |l| l.out.unsent())
    }

    /// Whether the connection's unsent output is over the backpressure limit (its input waits).
    #[inline]
    pub fn over_limit(&self, slot: usize) -> bool {
        self.unsent(slot) > self.lines.limit
    }

    /// Pushes dropped for the connection so far.
    pub fn dropped(&self, slot: usize) -> u32 {
        self.lines.dropped(slot)
    }

    /// Change the backpressure (and push) limit while serving.
    pub fn set_limit(&mut self, backpressure_limit: usize) {
        self.lines.limit = backpressure_limit;
    }

    /// A connection the transport has (e.g. a DPDK handshake under way); the service is given it
    /// by [`Driver::open`]. Returns its slot.
    pub fn insert(&mut self, io: T) -> usize {
        let slot = self.slots.insert(Slot {
            io,
            state: None,
            phase: Phase::Open,
            until: NEVER,
            armed: NEVER,
            peer_eof: false,
        });
        self.generation = self.generation.wrapping_add(1);
        self.lines.start(slot, self.generation);
        slot
    }

    /// Give the service the connection in `slot` (`open`, then `greet`).
    pub fn open(&mut self, slot: usize, peer: SocketAddr, now: Instant) {
        if !self.slots.contains(slot) {
            return;
        }
        let line = &mut self.lines.lines[slot];
        line.live = true;
        let id = ConnId {
            worker: self.lines.worker,
            slot: slot as u32,
            generation: line.generation,
        };
        let mut cx = conn_cx!(self, slot, now);
        let mut state = self.service.open(id, peer, &mut cx);
        let verdict = self.service.greet(&mut state, &mut cx);
        self.slots[slot].state = Some(state);
        self.stats.opened += 1;
        self.after(slot, verdict, now);
    }

    /// Hand `input` to the service (discarded unless the connection [`Driver::wants_input`]).
    /// With `by_ref`, the service may queue references into `input`: the transport must then
    /// write them or [`Driver::detach_input`] before it reuses the buffer.
    pub fn input(&mut self, slot: usize, input: &mut [u8], by_ref: bool, now: Instant) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let Some(state) = s.state.as_mut().filter(|_| s.phase == Phase::Open) else {
            return;
        };
        if by_ref {
            self.lines.lines[slot].input_refs = true;
        }
        let mut cx = conn_cx!(self, slot, now);
        let verdict = self.service.on_data(state, input, &mut cx);
        if by_ref {
            self.lines.lines[slot].input_refs = false;
        }
        self.after(slot, verdict, now);
    }

    /// Hand the service input that lives in the connection's own I/O object (a smoltcp receive
    /// ring, decoded in place): `read` gets that object and a `deliver` function to call with
    /// the bytes. Nothing is delivered unless the connection [`Driver::wants_input`].
    pub fn input_in_place(
        &mut self,
        slot: usize,
        now: Instant,
        read: impl FnOnce(&mut T, &mut dyn FnMut(&mut [u8])),
    ) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.phase != Phase::Open {
            return;
        }
        let Some(state) = s.state.as_mut() else {
            return;
        };
        let service = &mut self.service;
        let mut cx = conn_cx!(self, slot, now);
        let mut verdict = Verdict::Continue;
        let mut deliver = |input: &mut [u8]| {
            if verdict == Verdict::Continue {
                verdict = service.on_data(state, input, &mut cx);
            }
        };
        read(&mut s.io, &mut deliver);
        // No arm here: the transport arms the connection once its step is over, with its own
        // deadline (smoltcp's) beside the service's. Nor is the connection listed as written
        // to: the transport writes it in the same step.
        if verdict == Verdict::Close {
            self.begin_close(slot, now);
        }
        if !self.lines.newly_slow.is_empty() {
            self.arm_slow();
        }
    }

    /// Whether the connection's output holds references to the input just handed over.
    #[inline]
    pub fn holds_input(&self, slot: usize) -> bool {
        self.lines
            .lines
            .get(slot)
            .is_some_and(|l| l.out.holds_input())
    }

    /// Copy what the connection's output still references of `input`, so it can be reused
    /// (`scratch`: the transport's spare buffer, see [`Output::detach_input`]).
    pub fn detach_input(&mut self, slot: usize, input: &[u8], scratch: &mut Vec<u8>) {
        if let Some(l) = self.lines.lines.get_mut(slot) {
            l.out.detach_input(input, scratch);
        }
    }

    /// The peer ended its side. Returns `true` when the connection should be closed now
    /// (it was already draining); otherwise the service has been told and the close, if any,
    /// proceeds through the flush.
    pub fn eof(&mut self, slot: usize, now: Instant) -> bool {
        let Some(s) = self.slots.get_mut(slot) else {
            return false;
        };
        if s.peer_eof {
            return s.phase == Phase::Draining;
        }
        s.peer_eof = true;
        match s.phase {
            Phase::Draining => true,
            Phase::Closing => false,
            Phase::Open => {
                if let Some(state) = s.state.as_mut() {
                    let mut cx = conn_cx!(self, slot, now);
                    let verdict = self.service.on_eof(state, &mut cx);
                    self.after(slot, verdict, now);
                }
                false
            }
        }
    }

    /// The transport's part and the output of a connection, to write.
    #[inline]
    pub fn output(&mut self, slot: usize) -> Option<(&mut T, &mut Output)> {
        let s = self.slots.get_mut(slot)?;
        Some((&mut s.io, &mut self.lines.lines[slot].out))
    }

    /// The transport wrote (some of) the connection's output: what now. (The buffer stays with
    /// the connection: see [`Driver::release`].)
    pub fn flushed(&mut self, slot: usize, now: Instant) -> Flushed {
        let Some(s) = self.slots.get_mut(slot) else {
            return Flushed::Continue;
        };
        let line: &mut Line = &mut self.lines.lines[slot];
        let empty = line.out.is_empty();
        if line.slow {
            self.lines.check_recovered(slot);
        }
        match s.phase {
            Phase::Closing if empty && s.peer_eof => Flushed::Close,
            Phase::Closing if empty => {
                s.phase = Phase::Draining;
                s.until = self.clock.ceil(now + self.close_linger);
                self.arm(slot, None);
                Flushed::ShutDown
            }
            _ => Flushed::Continue,
        }
    }

    /// Give the connection's output buffer back to the worker's pool if nothing is queued in it,
    /// so that a connection holds output memory only while it has output. The kernel path
    /// does this after every write; the DPDK engine, whose writes go to a socket ring at once,
    /// when the connection goes quiet (sparing a pool round trip per message).
    #[inline]
    pub fn release(&mut self, slot: usize) {
        if let Some(line) = self.lines.lines.get_mut(slot) {
            line.out.reclaim(&mut self.lines.pool);
        }
    }

    /// Move the slots written to since the last call (or since their [`Driver::clean`]) into
    /// `into`, each once (the transport writes each, then calls [`Driver::flushed`]).
    pub fn take_dirty(&mut self, into: &mut Vec<u32>) {
        std::mem::swap(into, &mut self.lines.dirty);
        self.lines.dirty.clear();
        let lines = &mut self.lines.lines;
        into.retain(|&slot| match lines.get_mut(slot as usize) {
            // Cleaned since it was listed, or listed twice: nothing new to write.
            Some(l) if l.dirty => {
                l.dirty = false;
                true
            }
            _ => false,
        });
    }

    /// The transport has just written the connection in a step of its own: it need not be
    /// written again for what was queued so far (it is written again if more is queued).
    #[inline]
    pub fn clean(&mut self, slot: usize) {
        if let Some(l) = self.lines.lines.get_mut(slot) {
            l.dirty = false;
        }
    }

    /// Whether any connection was written to since the last [`Driver::take_dirty`].
    #[inline]
    pub fn has_dirty(&self) -> bool {
        !self.lines.dirty.is_empty()
    }

    /// Mark a connection for the next flush (e.g. its socket became writable again).
    pub fn mark_dirty(&mut self, slot: usize) {
        if self.slots.contains(slot) {
            self.lines.mark(slot);
        }
    }

    /// Ask for the connection to be closed, as if its service had answered [`Verdict::Close`].
    pub fn close_gracefully(&mut self, slot: usize, now: Instant) {
        self.begin_close(slot, now);
        self.arm(slot, None);
    }

    /// Make sure a timer entry exists at or before the connection's next deadline: the
    /// service's, its phase's, the slow-consumer grace's, or `extra` (the transport's own, in
    /// milliseconds of [`Driver::clock`], rounded up).
    pub fn arm(&mut self, slot: usize, extra: Option<Millis>) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        let (service, phase_until) = match (s.phase, &s.state) {
            (Phase::Open, Some(state)) => (self.service.deadline(state), NEVER),
            (Phase::Open, None) => (None, NEVER),
            (Phase::Closing | Phase::Draining, _) => (None, s.until),
        };
        let mut at = extra.unwrap_or(NEVER).min(phase_until);
        if let Some(t) = service {
            at = at.min(self.clock.ceil(t));
        }
        if s.phase == Phase::Open {
            if let Some(slow) = self.lines.slow_deadline(slot) {
                at = at.min(slow);
            }
        }
        if at < s.armed {
            s.armed = at;
            self.timers.push(Entry {
                at,
                slot: slot as u32,
                generation: self.lines.lines[slot].generation,
            });
        }
    }

    /// The earliest timer of any connection or of the service.
    pub fn next_timer(&self) -> Option<Instant> {
        let conn = self.timers.next();
        let svc = self.service_timers.next();
        let ms = match (conn, svc) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(self.clock.instant(ms))
    }

    /// Run what is due at `now`: the services' deadlines, slow-consumer checks, and the phases'
    /// time limits. `fired` receives every connection whose timer fired and that is still
    /// there, with `true` if its close has run out of time (the transport then closes it).
    /// The others are not re-armed here: the transport arms each ([`Driver::arm`]), with its
    /// own deadline if it has one (one heap entry per firing, not two).
    pub fn expire(&mut self, now: Instant, fired: &mut Vec<(usize, bool)>) {
        let mut due = std::mem::take(&mut self.due);
        let now_ms = self.clock.floor(now);
        self.timers.take_due(now_ms, &mut due);
        for e in due.drain(..) {
            let slot = e.slot as usize;
            let Some(s) = self.slots.get_mut(slot) else {
                continue;
            };
            if self.lines.lines[slot].generation != e.generation || s.armed != e.at {
                continue; // stale: a newer entry covers this connection
            }
            s.armed = NEVER;
            match s.phase {
                Phase::Closing | Phase::Draining if s.until <= now_ms => {
                    fired.push((slot, true));
                    continue;
                }
                Phase::Closing | Phase::Draining => {}
                Phase::Open => {
                    if let Some(slow) = self.lines.slow_deadline(slot) {
                        if slow <= now_ms {
                            self.slow(slot, now);
                        }
                    }
                    let s = &mut self.slots[slot];
                    if let Some(state) = s.state.as_mut().filter(|_| s.phase == Phase::Open) {
                        if self.service.deadline(state).is_some_and(|d| d <= now) {
                            let mut cx = conn_cx!(self, slot, now);
                            let verdict = self.service.on_deadline(state, &mut cx);
                            self.note(slot, verdict, now);
                        }
                    }
                }
            }
            fired.push((slot, false));
        }
        self.due = due;
    }

    /// The slow-consumer grace of `slot` has passed and it has not caught up since.
    fn slow(&mut self, slot: usize, now: Instant) {
        self.lines.clear_slow(slot);
        let Some(state) = self.slots[slot].state.as_mut() else {
            return;
        };
        self.stats.slow_closed += 1;
        tracing::debug!(
            worker = self.lines.worker,
            conn = slot,
            unsent = self.lines.lines[slot].out.unsent(),
            "slow consumer: over its output limit for the grace period"
        );
        let mut cx = conn_cx!(self, slot, now);
        let verdict = self.service.on_slow(state, &mut cx);
        self.after(slot, verdict, now);
        // Whatever the service queued, the connection is not to take more pushes.
        self.lines.set_pushable(slot as u32, false);
    }

    /// Close the connection now: the service is told (if it knew it) and the transport gets its
    /// part back to release.
    pub fn close(&mut self, slot: usize, cause: CloseCause, now: Instant) -> Option<T> {
        let s = self.slots.try_remove(slot)?;
        let line = &mut self.lines.lines[slot];
        line.out.clear();
        line.out.reclaim(&mut self.lines.pool);
        line.live = false;
        line.pushable = false;
        let id = ConnId {
            worker: self.lines.worker,
            slot: slot as u32,
            generation: line.generation,
        };
        self.lines.forget(slot);
        if let Some(state) = s.state {
            match cause {
                CloseCause::Done => self.stats.closed += 1,
                CloseCause::Error => self.stats.errors += 1,
                CloseCause::Shutdown => self.stats.abandoned += 1,
            }
            let mut cx = worker_cx!(self, now);
            self.service.on_close(id, state, cause, &mut cx);
            self.arm_slow();
        }
        Some(s.io)
    }

    /// Ask the service to close every connection it knows that is still open (server shutdown).
    pub fn shutdown(&mut self, now: Instant) {
        for slot in self.slots() {
            let s = &mut self.slots[slot];
            if s.phase != Phase::Open {
                continue;
            }
            let Some(state) = s.state.as_mut() else {
                continue;
            };
            let mut cx = conn_cx!(self, slot, now);
            let verdict = self.service.on_shutdown(state, &mut cx);
            self.after(slot, verdict, now);
            self.lines.mark(slot);
        }
    }

    /// A message from the mailbox, for the service.
    pub fn message(&mut self, message: S::Message, now: Instant) {
        self.stats.messages += 1;
        let mut cx = worker_cx!(self, now);
        self.service.on_message(message, &mut cx);
        self.arm_slow();
    }

    /// Once per loop iteration: the service's due timers, then its tick. Returns `true` when the
    /// service's deadlines may have moved (every connection has then been re-armed; a transport
    /// with deadlines of its own re-arms those too).
    pub fn tick(&mut self, now: Instant) -> bool {
        if let Some(mut mail) = self.own_mail.take() {
            for _ in 0..DRAIN_PER_ITERATION {
                match mail.take() {
                    Some(Letter::Service(m)) => self.message(m, now),
                    Some(_) => {}
                    None => break,
                }
            }
            self.own_mail = Some(mail);
        }
        let now_ms = self.clock.floor(now);
        // Only what is due now: a timer set for the past by `on_timer` waits for the next tick.
        let mut due = self.service_timers.len();
        while due > 0 {
            let Some(token) = self.service_timers.pop_due(now_ms) else {
                break;
            };
            due -= 1;
            let mut cx = worker_cx!(self, now);
            self.service.on_timer(token, &mut cx);
        }
        let mut cx = worker_cx!(self, now);
        let moved = self.service.on_tick(&mut cx);
        self.arm_slow();
        if moved {
            for slot in self.slots() {
                self.arm(slot, None);
            }
        }
        moved
    }

    /// After a call on one connection: note its output, act on the verdict, arm its timer.
    fn after(&mut self, slot: usize, verdict: Verdict, now: Instant) {
        self.note(slot, verdict, now);
        self.arm(slot, None);
    }

    /// [`Driver::after`] without arming the connection's timer.
    #[inline]
    fn note(&mut self, slot: usize, verdict: Verdict, now: Instant) {
        self.lines.mark(slot);
        if verdict == Verdict::Close {
            self.begin_close(slot, now);
        }
        if !self.lines.newly_slow.is_empty() {
            self.arm_slow();
        }
    }

    /// Connections that pushes just took over their limit get their grace timer.
    fn arm_slow(&mut self) {
        while let Some(slot) = self.lines.newly_slow.pop() {
            self.arm(slot as usize, None);
        }
    }

    fn begin_close(&mut self, slot: usize, now: Instant) {
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        if s.phase == Phase::Open {
            s.phase = Phase::Closing;
            s.until = self.clock.ceil(now + self.close_linger);
            self.lines.set_pushable(slot as u32, false);
            // The flush is what moves a closing connection on, even with nothing left to write.
            let line = &mut self.lines.lines[slot];
            if !line.dirty {
                line.dirty = true;
                self.lines.dirty.push(slot as u32);
            }
        }
    }

    /// The service's next deadline for the connection, if it has one.
    pub fn deadline(&self, slot: usize) -> Option<Instant> {
        let s = self.slots.get(slot)?;
        self.service.deadline(s.state.as_ref()?)
    }

    /// Everything the connection has queued, taken out as one buffer (for tools and tests that
    /// drive a service without a network).
    pub fn take_output(&mut self, slot: usize) -> Vec<u8> {
        let mut all = Vec::new();
        if let Some(line) = self.lines.lines.get_mut(slot) {
            while !line.out.is_empty() {
                let run = line.out.front(&[]);
                let n = run.len();
                all.extend_from_slice(run);
                line.out.advance(n);
            }
        }
        all
    }

    /// Every connection's unsent output and pushes dropped so far (for probes: a scan).
    pub fn unsent_by_slot(&self) -> impl Iterator<Item = (usize, usize, u32)> + '_ {
        self.slots.iter().map(|(slot, _)| {
            (
                slot,
                self.lines.lines[slot].out.unsent(),
                self.lines.dropped(slot),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes input; by reference when allowed. Closes on "bye".
    #[derive(Default)]
    struct Svc {
        by_ref: Vec<bool>,
    }

    impl Service for Svc {
        type Conn = ();
        type Message = ();
        fn open(&mut self, _: ConnId, _: SocketAddr, _: &mut ConnCtx<'_, ()>) {}
        fn on_data(&mut self, _: &mut (), input: &mut [u8], cx: &mut ConnCtx<'_, ()>) -> Verdict {
            if input == b"bye" {
                return Verdict::Close;
            }
            let referenced = cx.put_input(0, input.len());
            if !referenced {
                cx.out().put(input);
            }
            self.by_ref.push(referenced);
            Verdict::Continue
        }
    }

    fn driver() -> (Driver<Svc, ()>, usize, Instant) {
        let mut d = Driver::detached(DriverConfig::default(), Svc::default());
        let now = Instant::now();
        let s = d.insert(());
        d.open(s, SocketAddr::from(([127, 0, 0, 1], 1)), now);
        (d, s, now)
    }

    #[test]
    fn input_references_only_where_the_transport_allows_them() {
        let (mut d, s, now) = driver();
        d.input(s, &mut b"copied".to_vec(), false, now);
        assert!(!d.holds_input(s));
        let mut input = b"referenced".to_vec();
        d.input(s, &mut input, true, now);
        assert!(d.holds_input(s));
        let mut spare = Vec::new();
        d.detach_input(s, &input, &mut spare);
        input.fill(b'x');
        assert_eq!(d.take_output(s), b"copiedreferenced");
        assert_eq!(d.service().by_ref, [false, true]);
        // Not after the call either: the permission is for one call.
        d.input(s, &mut b"again".to_vec(), false, now);
        assert_eq!(d.service().by_ref, [false, true, false]);
    }

    #[test]
    fn a_close_flushes_shuts_down_then_waits_for_the_peer_until_the_linger_ends() {
        let (mut d, s, now) = driver();
        d.input(s, &mut b"last".to_vec(), false, now);
        d.input(s, &mut b"bye".to_vec(), false, now);
        assert_eq!(d.phase(s), Some(Phase::Closing));
        d.input(s, &mut b"ignored".to_vec(), false, now);
        assert_eq!(
            d.service().by_ref.len(),
            1,
            "no input after the service is done"
        );
        assert_eq!(d.flushed(s, now), Flushed::Continue, "output still queued");
        assert_eq!(d.take_output(s), b"last");
        assert_eq!(d.flushed(s, now), Flushed::ShutDown);
        assert_eq!(d.phase(s), Some(Phase::Draining));
        // The peer never answers: the linger runs out.
        let mut fired = Vec::new();
        d.expire(now + Duration::from_secs(1), &mut fired);
        assert!(fired.is_empty());
        d.expire(
            now + DriverConfig::default().close_linger + Duration::from_millis(2),
            &mut fired,
        );
        assert_eq!(fired, [(s, true)]);
        assert!(d.close(s, CloseCause::Done, now).is_some());
        assert_eq!(d.stats().closed, 1);
        // The peer's end after our shut down closes at once.
        let (mut d, s, now) = driver();
        d.input(s, &mut b"bye".to_vec(), false, now);
        assert_eq!(d.flushed(s, now), Flushed::ShutDown);
        assert!(d.eof(s, now), "draining and the peer is done");
    }

    #[test]
    fn the_peers_end_with_output_queued_closes_once_it_is_out() {
        let (mut d, s, now) = driver();
        d.input(s, &mut b"tail".to_vec(), false, now);
        assert!(
            !d.eof(s, now),
            "the service (default on_eof) closes; output first"
        );
        assert_eq!(d.phase(s), Some(Phase::Closing));
        assert_eq!(d.take_output(s), b"tail");
        assert_eq!(d.flushed(s, now), Flushed::Close);
    }
}
