//! Handler middleware: each wraps a [`Handler`] and is one itself, so they stack:
//! `Logging::new(Recover::new(Metrics::new(Echo, counters)))`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hioload_stack::ConnId;
use hioload_wsproto::handshake::{HttpRequest, Request};
use hioload_wsproto::{CloseCode, Message};

use crate::handler::{Context, Decision, Handler, WorkerContext};

/// Logs session opens and closes at debug level.
#[derive(Debug, Clone)]
pub struct Logging<H>(H);

impl<H> Logging<H> {
    /// Wrap `inner`.
    pub fn new(inner: H) -> Self {
        Self(inner)
    }
}

impl<H: Handler> Handler for Logging<H> {
    type Message = H::Message;

    fn on_open(&mut self, conn: ConnId, request: &Request<'_>) -> Decision {
        let decision = self.0.on_open(conn, request);
        tracing::debug!(%conn, path = request.path, origin = request.origin, ?decision, "handshake");
        decision
    }

    fn on_http(&mut self, conn: ConnId, request: &HttpRequest<'_>, body: &[u8]) -> Option<Vec<u8>> {
        let answer = self.0.on_http(conn, request, body);
        tracing::debug!(%conn, method = request.method, path = request.path, answered = answer.is_some(), "plain HTTP request");
        answer
    }

    fn on_ready(&mut self, conn: ConnId, cx: &mut Context<'_, H::Message>) {
        self.0.on_ready(conn, cx);
    }

    fn on_message(&mut self, conn: ConnId, message: Message<'_>, cx: &mut Context<'_, H::Message>) {
        self.0.on_message(conn, message, cx);
    }

    fn on_close(
        &mut self,
        conn: ConnId,
        code: Option<CloseCode>,
        cx: &mut WorkerContext<'_, H::Message>,
    ) {
        tracing::debug!(%conn, code = code.map(|c| c.0), "session closed");
        self.0.on_close(conn, code, cx);
    }

    fn on_post(&mut self, message: H::Message, cx: &mut WorkerContext<'_, H::Message>) {
        self.0.on_post(message, cx);
    }

    fn on_timer(&mut self, token: u64, cx: &mut WorkerContext<'_, H::Message>) {
        self.0.on_timer(token, cx);
    }
}

/// Contains a panicking handler: the panic closes only the session it happened on, with 1011
/// (or, during the handshake, answers 500). The worker and every other session carry on.
///
/// The wrapped handler is per worker, so state it was mutating when it panicked may be left
/// half-updated; handlers that keep cross-session state should keep it consistent at every
/// point where they can panic.
#[derive(Debug, Clone)]
pub struct Recover<H>(H);

impl<H> Recover<H> {
    /// Wrap `inner`.
    pub fn new(inner: H) -> Self {
        Self(inner)
    }
}

impl<H: Handler> Handler for Recover<H> {
    type Message = H::Message;

    fn on_open(&mut self, conn: ConnId, request: &Request<'_>) -> Decision {
        catch_unwind(AssertUnwindSafe(|| self.0.on_open(conn, request))).unwrap_or_else(|_| {
            tracing::error!(%conn, "handler panicked in on_open; answering 500");
            Decision::Reject {
                status: 500,
                reason: "internal error",
            }
        })
    }

    fn on_http(&mut self, conn: ConnId, request: &HttpRequest<'_>, body: &[u8]) -> Option<Vec<u8>> {
        catch_unwind(AssertUnwindSafe(|| self.0.on_http(conn, request, body))).unwrap_or_else(
            |_| {
                tracing::error!(%conn, "handler panicked in on_http; answering 500");
                Some(hioload_wsproto::handshake::error_response(
                    500,
                    "internal error",
                    "",
                ))
            },
        )
    }

    fn on_ready(&mut self, conn: ConnId, cx: &mut Context<'_, H::Message>) {
        let inner = &mut self.0;
        if catch_unwind(AssertUnwindSafe(|| inner.on_ready(conn, cx))).is_err() {
            tracing::error!(%conn, "handler panicked in on_ready; closing the session with 1011");
            cx.close(CloseCode::INTERNAL_ERROR, "internal error");
        }
    }

    fn on_message(&mut self, conn: ConnId, message: Message<'_>, cx: &mut Context<'_, H::Message>) {
        let inner = &mut self.0;
        if catch_unwind(AssertUnwindSafe(|| inner.on_message(conn, message, cx))).is_err() {
            tracing::error!(%conn, "handler panicked in on_message; closing the session with 1011");
            cx.close(CloseCode::INTERNAL_ERROR, "internal error");
        }
    }

    fn on_close(
        &mut self,
        conn: ConnId,
        code: Option<CloseCode>,
        cx: &mut WorkerContext<'_, H::Message>,
    ) {
        if catch_unwind(AssertUnwindSafe(|| self.0.on_close(conn, code, cx))).is_err() {
            tracing::error!(%conn, "handler panicked in on_close");
        }
    }

    fn on_post(&mut self, message: H::Message, cx: &mut WorkerContext<'_, H::Message>) {
        if catch_unwind(AssertUnwindSafe(|| self.0.on_post(message, cx))).is_err() {
            tracing::error!("handler panicked in on_post");
        }
    }

    fn on_timer(&mut self, token: u64, cx: &mut WorkerContext<'_, H::Message>) {
        if catch_unwind(AssertUnwindSafe(|| self.0.on_timer(token, cx))).is_err() {
            tracing::error!(token, "handler panicked in on_timer");
        }
    }
}

/// Counters of one worker's sessions. Written only by that worker (relaxed atomics, no
/// contention); read by anyone holding the `Arc`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Handshakes the handler accepted.
    pub sessions_opened: AtomicU64,
    /// Handshakes the handler rejected.
    pub sessions_rejected: AtomicU64,
    /// Sessions ended.
    pub sessions_closed: AtomicU64,
    /// Messages received.
    pub messages_in: AtomicU64,
    /// Payload bytes received in messages.
    pub bytes_in: AtomicU64,
}

impl Counters {
    /// Read one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Counts sessions and messages into [`Counters`].
#[derive(Debug, Clone)]
pub struct Metrics<H> {
    inner: H,
    counters: Arc<Counters>,
}

impl<H> Metrics<H> {
    /// Wrap `inner`, counting into `counters`.
    pub fn new(inner: H, counters: Arc<Counters>) -> Self {
        Self { inner, counters }
    }
}

fn bump(c: &AtomicU64, by: u64) {
    // Single writer per counter: a load and a store avoid the locked read-modify-write.
    c.store(
        c.load(Ordering::Relaxed).wrapping_add(by),
        Ordering::Relaxed,
    );
}

impl<H: Handler> Handler for Metrics<H> {
    type Message = H::Message;

    fn on_open(&mut self, conn: ConnId, request: &Request<'_>) -> Decision {
        let d = self.inner.on_open(conn, request);
        match d {
            Decision::Accept { .. } => bump(&self.counters.sessions_opened, 1),
            Decision::Reject { .. } => bump(&self.counters.sessions_rejected, 1),
        }
        d
    }

    fn on_http(&mut self, conn: ConnId, request: &HttpRequest<'_>, body: &[u8]) -> Option<Vec<u8>> {
        self.inner.on_http(conn, request, body)
    }

    fn on_ready(&mut self, conn: ConnId, cx: &mut Context<'_, H::Message>) {
        self.inner.on_ready(conn, cx);
    }

    fn on_message(&mut self, conn: ConnId, message: Message<'_>, cx: &mut Context<'_, H::Message>) {
        bump(&self.counters.messages_in, 1);
        bump(&self.counters.bytes_in, message.as_bytes().len() as u64);
        self.inner.on_message(conn, message, cx);
    }

    fn on_close(
        &mut self,
        conn: ConnId,
        code: Option<CloseCode>,
        cx: &mut WorkerContext<'_, H::Message>,
    ) {
        bump(&self.counters.sessions_closed, 1);
        self.inner.on_close(conn, code, cx);
    }

    fn on_post(&mut self, message: H::Message, cx: &mut WorkerContext<'_, H::Message>) {
        self.inner.on_post(message, cx);
    }

    fn on_timer(&mut self, token: u64, cx: &mut WorkerContext<'_, H::Message>) {
        self.inner.on_timer(token, cx);
    }
}
