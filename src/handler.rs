//! The application API: what runs on each WebSocket session, and what it can reach.
//!
//! A [`Handler`] is per worker. Besides answering the session that sent a message, it can, from
//! any of its callbacks:
//! - send to any other session of its worker, by [`ConnId`] ([`WorkerContext::send`]);
//! - send one [`PreparedFrame`] (encoded once, shared by reference) to many sessions
//!   ([`WorkerContext::broadcast`]);
//! - post a message to another worker's handler ([`WorkerContext::post`], arriving in
//!   [`Handler::on_post`]);
//! - set timers of its own ([`WorkerContext::set_timer`], arriving in [`Handler::on_timer`]).
//!
//! Pushes to a session over its output limit are dropped (counted); see the transport's
//! slow-consumer policy.

use std::time::Instant;

use hioload_stack::{ConnId, Ctx, Fanout, PostError, Prepared, PushError};
use hioload_wsproto::frame::{FrameHeader, FrameTally, MAX_HEADER_LEN};
use hioload_wsproto::handshake::{HttpRequest, Request};
use hioload_wsproto::{CloseCode, Message, OpCode};

pub use hioload_stack::timer::TimersFull;

/// The answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accept, optionally choosing one of the subprotocols the client offered.
    Accept {
        /// The chosen subprotocol; it must be one the client offered.
        protocol: Option<String>,
    },
    /// Refuse with an HTTP status and a short reason (e.g. 403 for a foreign Origin).
    Reject {
        /// HTTP status.
        status: u16,
        /// Short reason for the response body.
        reason: &'static str,
    },
}

impl Decision {
    /// Accept without a subprotocol.
    pub const fn accept() -> Self {
        Self::Accept { protocol: None }
    }
}

/// Application logic for WebSocket sessions. One instance per worker: it is never shared between
/// threads, and `&mut self` needs no locking. Per-session state, if any, is keyed by [`ConnId`].
///
/// Only [`Handler::on_message`] must be written.
pub trait Handler {
    /// What other workers' handlers (and other threads) post to this one; `()` if nothing.
    type Message: Send + 'static;

    /// An upgrade request arrived: accept it (choosing a subprotocol) or reject it. This is the
    /// Origin policy and subprotocol selection hook. The default accepts without a subprotocol.
    fn on_open(&mut self, conn: ConnId, request: &Request<'_>) -> Decision {
        let _ = (conn, request);
        Decision::accept()
    }

    /// A plain HTTP request (no WebSocket upgrade) arrived on the WebSocket listener, with its
    /// whole body: answer it with a complete response (see [`hioload_wsproto::handshake::response`]),
    /// or `None` to refuse it as a WebSocket server does (426 Upgrade Required; 400 for methods
    /// other than GET). The connection closes after the answer.
    fn on_http(&mut self, conn: ConnId, request: &HttpRequest<'_>, body: &[u8]) -> Option<Vec<u8>> {
        let _ = (conn, request, body);
        None
    }

    /// The session is open (the 101 answer is queued): it can be sent to from now on, until
    /// [`Handler::on_close`], which always follows.
    fn on_ready(&mut self, conn: ConnId, cx: &mut Context<'_, Self::Message>) {
        let _ = (conn, cx);
    }

    /// A complete message arrived on `conn`; reply through `cx`.
    fn on_message(
        &mut self,
        conn: ConnId,
        message: Message<'_>,
        cx: &mut Context<'_, Self::Message>,
    );

    /// The session ended, with the close code received or sent, if there was one.
    fn on_close(
        &mut self,
        conn: ConnId,
        code: Option<CloseCode>,
        cx: &mut WorkerContext<'_, Self::Message>,
    ) {
        let _ = (conn, code, cx);
    }

    /// A message posted to this worker's handler ([`WorkerContext::post`]).
    fn on_post(&mut self, message: Self::Message, cx: &mut WorkerContext<'_, Self::Message>) {
        let _ = (message, cx);
    }

    /// A timer set with [`WorkerContext::set_timer`] is due.
    fn on_timer(&mut self, token: u64, cx: &mut WorkerContext<'_, Self::Message>) {
        let _ = (token, cx);
    }
}

/// A WebSocket message encoded once as a server frame (unmasked, final), to be sent to any
/// number of sessions on any worker without being encoded or copied again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedFrame {
    bytes: Prepared,
    opcode: OpCode,
    payload: u64,
}

impl PreparedFrame {
    /// A text message.
    pub fn text(text: &str) -> Self {
        Self::encode(OpCode::Text, text.as_bytes())
    }

    /// A binary message.
    pub fn binary(data: &[u8]) -> Self {
        Self::encode(OpCode::Binary, data)
    }

    /// A message of the same type as `message`.
    pub fn message(message: Message<'_>) -> Self {
        match message {
            Message::Text(t) => Self::text(t),
            Message::Binary(b) => Self::binary(b),
        }
    }

    fn encode(opcode: OpCode, payload: &[u8]) -> Self {
        let (hdr, n) = header(opcode, payload.len());
        let mut frame = Vec::with_capacity(n + payload.len());
        frame.extend_from_slice(&hdr[..n]);
        frame.extend_from_slice(payload);
        Self {
            bytes: Prepared::from(frame),
            opcode,
            payload: payload.len() as u64,
        }
    }

    /// The encoded frame.
    pub fn bytes(&self) -> &Prepared {
        &self.bytes
    }

    /// The payload's length in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload as usize
    }

    /// The payload of a text frame (`None` for binary).
    pub fn as_text(&self) -> Option<&str> {
        if self.opcode != OpCode::Text {
            return None;
        }
        let start = self.bytes.len() - self.payload_len();
        std::str::from_utf8(&self.bytes.as_bytes()[start..]).ok()
    }

    /// The frame's length on the wire.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the frame is empty (never: a frame has a header).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// An unmasked, final server frame header for a payload of `len` bytes.
fn header(opcode: OpCode, len: usize) -> ([u8; MAX_HEADER_LEN], usize) {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = FrameHeader {
        fin: true,
        rsv: 0,
        opcode,
        mask: None,
        len: len as u64,
    }
    .encode(&mut hdr);
    (hdr, n)
}

/// What a handler can reach from any callback: the sessions of its worker, the other workers'
/// handlers, its timers.
pub struct WorkerContext<'a, M> {
    cx: Ctx<'a, M>,
    /// Where frames sent are counted (the worker's WebSocket figures).
    sent: Option<&'a mut FrameTally>,
}

impl<'a, M> WorkerContext<'a, M> {
    pub(crate) fn new(cx: Ctx<'a, M>, sent: Option<&'a mut FrameTally>) -> Self {
        Self { cx, sent }
    }

    /// The transport's "now" for this call.
    pub fn now(&self) -> Instant {
        self.cx.now()
    }

    /// This worker's index.
    pub fn worker(&self) -> usize {
        self.cx.worker()
    }

    /// How many workers there are.
    pub fn workers(&self) -> usize {
        self.cx.workers()
    }

    /// Send `message` to session `to` of this worker (encoded for it, one copy into its output).
    pub fn send(&mut self, to: ConnId, message: Message<'_>) -> Result<(), PushError> {
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.as_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        let (hdr, n) = header(opcode, payload.len());
        let out = self.cx.push_with(to, n + payload.len())?;
        out.put(&hdr[..n]);
        out.put(payload);
        if let Some(t) = self.sent.as_deref_mut() {
            t.add(opcode, payload.len() as u64);
        }
        Ok(())
    }

    /// Send a prepared frame to session `to` of this worker, by reference.
    pub fn send_prepared(&mut self, to: ConnId, frame: &PreparedFrame) -> Result<(), PushError> {
        self.cx.push(to, &frame.bytes)?;
        if let Some(t) = self.sent.as_deref_mut() {
            t.add(frame.opcode, frame.payload);
        }
        Ok(())
    }

    /// Send a prepared frame to each of `to` (sessions of this worker; others are refused).
    pub fn broadcast(&mut self, to: &[ConnId], frame: &PreparedFrame) -> Fanout {
        let f = self.cx.push_all(to, &frame.bytes);
        if let Some(t) = self.sent.as_deref_mut() {
            for _ in 0..f.queued {
                t.add(frame.opcode, frame.payload);
            }
        }
        f
    }

    /// Unsent output of session `to`, if it is a live session of this worker.
    pub fn unsent(&self, to: ConnId) -> Option<usize> {
        self.cx.unsent(to)
    }

    /// Post `message` to worker `worker`'s handler (this one included); refused when that
    /// worker's mailbox is full.
    pub fn post(&self, worker: usize, message: M) -> Result<(), PostError<M>> {
        self.cx.post(worker, message)
    }

    /// Call [`Handler::on_timer`] with `token` at `at`.
    pub fn set_timer(&mut self, at: Instant, token: u64) -> Result<(), TimersFull> {
        self.cx.set_timer(at, token)
    }
}

/// What a handler can do while a session is being served: answer it, and everything a
/// [`WorkerContext`] can do ([`Context::worker`]).
pub struct Context<'a, M> {
    ops: &'a mut (dyn SessionOps<M> + 'a),
}

/// The session-side operations behind a [`Context`], implemented by the WebSocket service for
/// its session sender (kept behind a trait object so that `Context` has one lifetime).
pub(crate) trait SessionOps<M> {
    fn conn(&self) -> ConnId;
    fn reply(&mut self, message: Message<'_>);
    fn ping(&mut self, payload: &[u8]);
    fn close(&mut self, code: CloseCode, reason: &str);
    fn close_sent(&self) -> bool;
    fn worker(&mut self) -> WorkerContext<'_, M>;
}

impl<'a, M> Context<'a, M> {
    pub(crate) fn new(ops: &'a mut (dyn SessionOps<M> + 'a)) -> Self {
        Self { ops }
    }

    /// The session being served.
    pub fn conn(&self) -> ConnId {
        self.ops.conn()
    }

    /// Send `message` back on this session (ignored once its close frame was sent).
    pub fn reply(&mut self, message: Message<'_>) {
        self.ops.reply(message);
    }

    /// Send a text message back.
    pub fn text(&mut self, text: &str) {
        self.ops.reply(Message::Text(text));
    }

    /// Send a binary message back.
    pub fn binary(&mut self, data: &[u8]) {
        self.ops.reply(Message::Binary(data));
    }

    /// Send a ping on this session.
    pub fn ping(&mut self, payload: &[u8]) {
        self.ops.ping(payload);
    }

    /// Start closing this session with `code` and `reason`.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        self.ops.close(code, reason);
    }

    /// Whether this session's close frame has been sent.
    pub fn close_sent(&self) -> bool {
        self.ops.close_sent()
    }

    /// The worker-wide context: other sessions, other workers, timers.
    pub fn worker(&mut self) -> WorkerContext<'_, M> {
        self.ops.worker()
    }

    /// Send to another session of this worker ([`WorkerContext::send`]).
    pub fn send(&mut self, to: ConnId, message: Message<'_>) -> Result<(), PushError> {
        self.worker().send(to, message)
    }

    /// Send a prepared frame to a session ([`WorkerContext::send_prepared`]).
    pub fn send_prepared(&mut self, to: ConnId, frame: &PreparedFrame) -> Result<(), PushError> {
        self.worker().send_prepared(to, frame)
    }

    /// Send a prepared frame to many sessions ([`WorkerContext::broadcast`]).
    pub fn broadcast(&mut self, to: &[ConnId], frame: &PreparedFrame) -> Fanout {
        self.worker().broadcast(to, frame)
    }

    /// Post to a worker's handler ([`WorkerContext::post`]).
    pub fn post(&mut self, worker: usize, message: M) -> Result<(), PostError<M>> {
        self.worker().post(worker, message)
    }

    /// Set a timer ([`WorkerContext::set_timer`]).
    pub fn set_timer(&mut self, at: Instant, token: u64) -> Result<(), TimersFull> {
        self.worker().set_timer(at, token)
    }

    /// The transport's "now" for this call.
    pub fn now(&mut self) -> Instant {
        self.worker().now()
    }
}
