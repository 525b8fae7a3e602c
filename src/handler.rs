//! The application API: what runs on each WebSocket session, and what it can reach.
//!
//! A [`Handler`] is per worker. Besides answering the session that sent a message, it can, from
//! any of its callbacks:
//! - send to any other session of its worker, by [`ConnId`] ([`WorkerContext::send`]);
//! - send one [`PreparedFrame`] (encoded once, shared by reference) to many sessions
//!   ([`WorkerContext::broadcast`]); with permessage-deflate a [`Preparer`] also compresses it
//!   once, and each session takes the encoding it negotiated;
//! - post a message to another worker's handler ([`WorkerContext::post`], arriving in
//!   [`Handler::on_post`]);
//! - set timers of its own ([`WorkerContext::set_timer`], arriving in [`Handler::on_timer`]).
//!
//! Pushes to a session over its output limit are dropped (counted); see the transport's
//! slow-consumer policy.

use std::time::Instant;

use hioload_stack::{ConnId, Ctx, Fanout, PostError, Prepared, PushError};
use hioload_wsproto::deflate::Compressors;
use hioload_wsproto::frame::{FrameHeader, FrameTally, MAX_HEADER_LEN};
use hioload_wsproto::handshake::{HttpRequest, Request};
use hioload_wsproto::session::RSV1;
use hioload_wsproto::{CloseCode, DeflateConfig, Message, OpCode};

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
/// number of sessions on any worker without being encoded or copied again. A frame from a
/// [`Preparer`] with deflate on also holds the message compressed once (RFC 7692, without
/// context): sessions that negotiated a window at least as large take that encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedFrame {
    bytes: Prepared,
    opcode: OpCode,
    payload: u64,
    deflated: Option<Deflated>,
}

/// The compressed encoding of a [`PreparedFrame`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct Deflated {
    bytes: Prepared,
    /// The compressor's window: sessions whose tag is at least this take it.
    window_bits: u8,
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
        Self {
            bytes: Prepared::from(frame_bytes(opcode, 0, payload)),
            opcode,
            payload: payload.len() as u64,
            deflated: None,
        }
    }

    /// The encoded frame, uncompressed.
    pub fn bytes(&self) -> &Prepared {
        &self.bytes
    }

    /// The encoding a session with push tag `tag` takes (the window of the compressed frames it
    /// can take, 0 for none; see `DeflateParams::shared_window_bits`), and its payload length.
    pub fn for_tag(&self, tag: u8) -> (&Prepared, u64) {
        match &self.deflated {
            Some(d) if tag >= d.window_bits => (&d.bytes, d.payload),
            _ => (&self.bytes, self.payload),
        }
    }

    /// Whether the frame also holds a compressed encoding.
    pub fn is_deflated(&self) -> bool {
        self.deflated.is_some()
    }

    /// The same frame without its compressed encoding (to keep it, say in a history, without
    /// the extra bytes).
    pub fn uncompressed(&self) -> Self {
        Self {
            deflated: None,
            ..self.clone()
        }
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
fn header(opcode: OpCode, rsv: u8, len: usize) -> ([u8; MAX_HEADER_LEN], usize) {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = FrameHeader {
        fin: true,
        rsv,
        opcode,
        mask: None,
        len: len as u64,
    }
    .encode(&mut hdr);
    (hdr, n)
}

/// A whole unmasked, final server frame.
fn frame_bytes(opcode: OpCode, rsv: u8, payload: &[u8]) -> Vec<u8> {
    let (hdr, n) = header(opcode, rsv, payload.len());
    let mut frame = Vec::with_capacity(n + payload.len());
    frame.extend_from_slice(&hdr[..n]);
    frame.extend_from_slice(payload);
    frame
}

/// Makes [`PreparedFrame`]s for broadcasts. With permessage-deflate on, each message is also
/// compressed once, without context, with the server's window: every session that negotiated
/// that window (and no server context takeover) takes those bytes, so a fan-out to many costs
/// one compression. One per worker (or per hub); its compressor is made at first use.
#[derive(Debug, Default)]
pub struct Preparer {
    deflate: Option<(Compressors, u8)>,
}

impl Preparer {
    /// A preparer that compresses as `deflate` says (`None`: never).
    pub fn new(deflate: Option<&DeflateConfig>) -> Self {
        Self {
            deflate: deflate.map(|c| (Compressors::new(c.level, c.min_size), c.server_window_bits)),
        }
    }

    /// A text message.
    pub fn text(&mut self, text: &str) -> PreparedFrame {
        self.prepare(OpCode::Text, text.as_bytes())
    }

    /// A message of the same type as `message`.
    pub fn message(&mut self, message: Message<'_>) -> PreparedFrame {
        match message {
            Message::Text(t) => self.prepare(OpCode::Text, t.as_bytes()),
            Message::Binary(b) => self.prepare(OpCode::Binary, b),
        }
    }

    fn prepare(&mut self, opcode: OpCode, payload: &[u8]) -> PreparedFrame {
        let mut frame = PreparedFrame::encode(opcode, payload);
        if let Some((z, window_bits)) = &mut self.deflate {
            frame.deflated = z.compress(*window_bits, payload).map(|c| Deflated {
                bytes: Prepared::from(frame_bytes(opcode, RSV1, c)),
                window_bits: *window_bits,
                payload: c.len() as u64,
            });
        }
        frame
    }

    /// What was compressed so far.
    pub fn stats(&self) -> Option<hioload_wsproto::deflate::DeflateStats> {
        self.deflate.as_ref().map(|(z, _)| z.stats())
    }
}

/// What a handler can reach from any callback: the sessions of its worker, the other workers'
/// handlers, its timers.
pub struct WorkerContext<'a, M> {
    cx: Ctx<'a, M>,
    /// Where frames sent are counted (the worker's WebSocket figures).
    sent: Option<&'a mut FrameTally>,
    /// The worker's compressors, for messages to sessions that take compressed frames.
    compress: Option<&'a mut Compressors>,
}

impl<'a, M> WorkerContext<'a, M> {
    pub(crate) fn new(
        cx: Ctx<'a, M>,
        sent: Option<&'a mut FrameTally>,
        compress: Option<&'a mut Compressors>,
    ) -> Self {
        Self { cx, sent, compress }
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

    /// Send `message` to session `to` of this worker (encoded for it, compressed if it takes
    /// compressed frames and it pays; one copy into its output).
    pub fn send(&mut self, to: ConnId, message: Message<'_>) -> Result<(), PushError> {
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.as_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        let window_bits = self.cx.tag(to).unwrap_or(0);
        let compressed = match self.compress.as_deref_mut() {
            Some(z) if window_bits > 0 => z.compress(window_bits, payload),
            _ => None,
        };
        let (rsv, payload) = match compressed {
            Some(c) => (RSV1, c),
            None => (0, payload),
        };
        let (hdr, n) = header(opcode, rsv, payload.len());
        let out = self.cx.push_with(to, n + payload.len())?;
        out.put(&hdr[..n]);
        out.put(payload);
        if let Some(t) = self.sent.as_deref_mut() {
            t.add(opcode, payload.len() as u64);
        }
        Ok(())
    }

    /// Send a prepared frame to session `to` of this worker, by reference, in the encoding it
    /// takes.
    pub fn send_prepared(&mut self, to: ConnId, frame: &PreparedFrame) -> Result<(), PushError> {
        let (bytes, payload) = frame.for_tag(self.cx.tag(to).unwrap_or(0));
        self.cx.push(to, bytes)?;
        if let Some(t) = self.sent.as_deref_mut() {
            t.add(frame.opcode, payload);
        }
        Ok(())
    }

    /// Send a prepared frame to each of `to` (sessions of this worker; others are refused),
    /// each in the encoding it takes.
    pub fn broadcast(&mut self, to: &[ConnId], frame: &PreparedFrame) -> Fanout {
        if !frame.is_deflated() {
            let f = self.cx.push_all(to, &frame.bytes);
            if let Some(t) = self.sent.as_deref_mut() {
                t.add_many(frame.opcode, frame.payload, f.queued as u64);
            }
            return f;
        }
        let mut f = Fanout::default();
        for &id in to {
            match self.send_prepared(id, frame) {
                Ok(()) => f.queued += 1,
                Err(PushError::Full(_)) => f.dropped += 1,
                Err(_) => f.refused += 1,
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
