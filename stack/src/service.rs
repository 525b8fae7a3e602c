//! The connection API: what a transport asks of the protocol running on its connections, and
//! what that protocol may do in return.
//!
//! A transport owns sockets (or smoltcp sockets, on the DPDK path); a [`Service`] owns per-worker
//! protocol state and, through [`Service::Conn`], per-connection state. The transport hands over
//! received bytes mutably (so a WebSocket decoder can unmask in place). Whenever a service runs
//! (on data, a deadline, a mailbox message, a timer of its own, the once-per-iteration tick) it
//! gets a context ([`Ctx`], or [`ConnCtx`] on a connection's turn) through which it can:
//!
//! - write to the connection being served ([`ConnCtx::out`]);
//! - push to **any** connection of its worker by [`ConnId`] ([`Ctx::push`]): a stale id is
//!   refused, and so is output over the connection's limit (counted; the slow-consumer policy
//!   decides what else happens);
//! - post a message to any worker's service, its own included ([`Ctx::post`]);
//! - set timers of its own ([`Ctx::set_timer`]).
//!
//! The transport writes every connection written to once per loop iteration. Nothing here knows
//! about WebSocket, and nothing in a service knows about sockets.

use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use crate::driver::lines::Lines;
use crate::mailbox::{PostError, Postboxes};

pub use crate::conn::{CloseCause, ConnId, PushError, Verdict};
use crate::output::{Output, Prepared};
use crate::timer::{ServiceTimers, TimersFull};

/// What happened to a push to many connections.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fanout {
    /// Connections the output was queued for.
    pub queued: usize,
    /// Connections over their output limit (dropped).
    pub dropped: usize,
    /// Connections gone, elsewhere or not taking pushes.
    pub refused: usize,
}

/// A protocol served on connections; one instance per worker, never shared between threads.
///
/// Only [`Service::open`] and [`Service::on_data`] must be written; every other method has a
/// default that suits a service which answers what it receives.
pub trait Service {
    /// Per-connection state.
    type Conn;
    /// What other workers and threads post to this service ([`Ctx::post`]); `()` if nothing.
    type Message: Send + 'static;

    /// A connection was established.
    fn open(
        &mut self,
        id: ConnId,
        peer: SocketAddr,
        cx: &mut ConnCtx<'_, Self::Message>,
    ) -> Self::Conn;

    /// Right after [`Service::open`]: what this side says first (a client's request, or a server
    /// that speaks first).
    fn greet(&mut self, conn: &mut Self::Conn, cx: &mut ConnCtx<'_, Self::Message>) -> Verdict {
        let _ = (conn, cx);
        Verdict::Continue
    }

    /// Bytes arrived. `input` may be modified in place.
    fn on_data(
        &mut self,
        conn: &mut Self::Conn,
        input: &mut [u8],
        cx: &mut ConnCtx<'_, Self::Message>,
    ) -> Verdict;

    /// The peer shut down its sending side (no more input will come). Default: close.
    fn on_eof(&mut self, conn: &mut Self::Conn, cx: &mut ConnCtx<'_, Self::Message>) -> Verdict {
        let _ = (conn, cx);
        Verdict::Close
    }

    /// The next instant at which [`Service::on_deadline`] must run, if any.
    fn deadline(&self, conn: &Self::Conn) -> Option<Instant> {
        let _ = conn;
        None
    }

    /// A deadline returned by [`Service::deadline`] has passed.
    fn on_deadline(
        &mut self,
        conn: &mut Self::Conn,
        cx: &mut ConnCtx<'_, Self::Message>,
    ) -> Verdict {
        let _ = (conn, cx);
        Verdict::Continue
    }

    /// Under the close policy for slow consumers: the connection has stayed over its output
    /// limit for the grace period. Default: close it (what is queued is flushed if the peer
    /// reads it before the linger runs out).
    fn on_slow(&mut self, conn: &mut Self::Conn, cx: &mut ConnCtx<'_, Self::Message>) -> Verdict {
        let _ = (conn, cx);
        Verdict::Close
    }

    /// The server is shutting down: start closing (e.g. send close 1001). Default: close.
    fn on_shutdown(
        &mut self,
        conn: &mut Self::Conn,
        cx: &mut ConnCtx<'_, Self::Message>,
    ) -> Verdict {
        let _ = (conn, cx);
        Verdict::Close
    }

    /// Connection `id` is gone; release its state. `cx` can still reach the other connections.
    fn on_close(
        &mut self,
        id: ConnId,
        conn: Self::Conn,
        cause: CloseCause,
        cx: &mut Ctx<'_, Self::Message>,
    ) {
        let _ = (id, conn, cause, cx);
    }

    /// A message posted to this worker ([`Ctx::post`]).
    fn on_message(&mut self, message: Self::Message, cx: &mut Ctx<'_, Self::Message>) {
        let _ = (message, cx);
    }

    /// A timer set with [`Ctx::set_timer`] is due.
    fn on_timer(&mut self, token: u64, cx: &mut Ctx<'_, Self::Message>) {
        let _ = (token, cx);
    }

    /// Once per transport loop iteration, after every connection's turn: a place to publish
    /// per-worker figures without doing it per message, or to take changed settings. Returns
    /// `true` when every connection's [`Service::deadline`] may have moved (a timeout was
    /// changed); the transport then re-arms them all.
    fn on_tick(&mut self, cx: &mut Ctx<'_, Self::Message>) -> bool {
        let _ = cx;
        false
    }
}

/// What a service can do whenever it runs: push to its worker's connections, post to workers,
/// set timers. Made by the transport for each call.
pub struct Ctx<'a, M> {
    pub(crate) now: Instant,
    pub(crate) lines: &'a mut Lines,
    pub(crate) posts: &'a Postboxes<M>,
    pub(crate) timers: &'a mut ServiceTimers,
}

impl<'a, M> Ctx<'a, M> {
    /// The transport's "now" for this call.
    #[inline]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// This worker's index.
    #[inline]
    pub fn worker(&self) -> usize {
        usize::from(self.lines.worker)
    }

    /// How many workers the transport runs (the range of [`Ctx::post`]).
    pub fn workers(&self) -> usize {
        self.posts.len()
    }

    /// Queue `frame` (by reference: no copy on kernel sockets, one into the socket on DPDK) for
    /// connection `to` of this worker.
    pub fn push(&mut self, to: ConnId, frame: &Prepared) -> Result<(), PushError> {
        let now = self.now;
        let out = self.lines.reserve(to, frame.len(), false, now)?;
        out.put_prepared(frame);
        Ok(())
    }

    /// Queue a copy of `bytes` for connection `to` of this worker.
    pub fn push_bytes(&mut self, to: ConnId, bytes: &[u8]) -> Result<(), PushError> {
        let now = self.now;
        let out = self.lines.reserve(to, bytes.len(), true, now)?;
        out.put(bytes);
        Ok(())
    }

    /// Queue `frame` for each of `to` (ids of other workers are refused).
    pub fn push_all(&mut self, to: &[ConnId], frame: &Prepared) -> Fanout {
        let mut f = Fanout::default();
        for &id in to {
            match self.push(id, frame) {
                Ok(()) => f.queued += 1,
                Err(PushError::Full(_)) => f.dropped += 1,
                Err(_) => f.refused += 1,
            }
        }
        f
    }

    /// The tag of connection `to` ([`ConnCtx::set_tag`]), if it is a live connection of this
    /// worker.
    #[inline]
    pub fn tag(&self, to: ConnId) -> Option<u8> {
        self.lines.live(to).map(|l| l.tag)
    }

    /// Room for `len` more bytes on connection `to`'s output, within its limit, for an encoder
    /// that writes them itself into the returned output. Counted as one push.
    pub fn push_with(&mut self, to: ConnId, len: usize) -> Result<&mut Output, PushError> {
        let now = self.now;
        self.lines.reserve(to, len, true, now)
    }

    /// Unsent output of connection `to`, if it is a live connection of this worker.
    pub fn unsent(&self, to: ConnId) -> Option<usize> {
        self.lines.live(to).map(|l| l.out.unsent())
    }

    /// Post `message` to worker `worker`'s service (this one included); refused when that
    /// worker's mailbox is full.
    pub fn post(&self, worker: usize, message: M) -> Result<(), PostError<M>> {
        self.posts.post(worker, message)
    }

    /// Run [`Service::on_timer`] with `token` at `at` (or at the next iteration, if past).
    pub fn set_timer(&mut self, at: Instant, token: u64) -> Result<(), TimersFull> {
        let at = self.lines.clock.ceil(at);
        self.timers.set(at, token)
    }

    /// The same context for a shorter borrow (to hand to a helper that keeps it by value).
    pub fn reborrow(&mut self) -> Ctx<'_, M> {
        Ctx {
            now: self.now,
            lines: self.lines,
            posts: self.posts,
            timers: self.timers,
        }
    }
}

/// A [`Ctx`] during one connection's turn: also the connection's own output. Dereferences to
/// [`Ctx`] for everything else.
pub struct ConnCtx<'a, M> {
    pub(crate) cx: Ctx<'a, M>,
    pub(crate) slot: u32,
}

impl<'a, M> ConnCtx<'a, M> {
    /// The connection being served.
    pub fn id(&self) -> ConnId {
        ConnId {
            worker: self.cx.lines.worker,
            slot: self.slot,
            generation: self.cx.lines.generation(self.slot),
        }
    }

    /// The connection's output: what is appended goes out at the end of this loop iteration.
    /// Not subject to the push limit: a service's answers to what it reads are held back by
    /// reading less instead (backpressure).
    #[inline]
    pub fn out(&mut self) -> &mut Output {
        self.cx.lines.out(self.slot)
    }

    /// Queue bytes `start..start + len` of the input being handled (`on_data`'s) by reference
    /// instead of copying them, where the transport allows it (the kernel path writes them from
    /// its read buffer); `false` means copy them instead.
    pub fn put_input(&mut self, start: usize, len: usize) -> bool {
        let line = &mut self.cx.lines.lines[self.slot as usize];
        if !line.input_refs {
            return false;
        }
        line.out.put_input(start, len);
        true
    }

    /// Keep a small number with this connection that pushes from other connections' turns can
    /// read ([`Ctx::tag`]): say, which encoding of a broadcast it
    /// takes. 0 until set.
    pub fn set_tag(&mut self, tag: u8) {
        self.cx.lines.lines[self.slot as usize].tag = tag;
    }

    /// Open (or close) this connection to pushes from [`Ctx::push`]; closed until opened. A
    /// WebSocket service opens it once the handshake is answered and closes it when its close
    /// frame is out.
    pub fn accept_pushes(&mut self, yes: bool) {
        self.cx.lines.set_pushable(self.slot, yes);
    }

    /// The same context for a shorter borrow.
    pub fn reborrow(&mut self) -> ConnCtx<'_, M> {
        ConnCtx {
            cx: self.cx.reborrow(),
            slot: self.slot,
        }
    }
}

impl<'a, M> Deref for ConnCtx<'a, M> {
    type Target = Ctx<'a, M>;
    fn deref(&self) -> &Ctx<'a, M> {
        &self.cx
    }
}

impl<M> DerefMut for ConnCtx<'_, M> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.cx
    }
}
