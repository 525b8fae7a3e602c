//! [`WsService`]: the WebSocket protocol for a [`Handler`], as a transport [`Service`].
//!
//! Per connection: the handshake (buffered only if the request spans reads, bounded by the
//! header limit and the handshake timeout), then a [`Session`] whose messages go to the handler.
//! Timers: handshake timeout, idle timeout, server pings, and the close timeout that ends a
//! closing handshake the peer does not finish. A session takes pushes from other sessions'
//! handlers from its 101 answer until its close frame is out.
//!
//! Frames are encoded straight into the connection's output ([`ConnOut`]). A large payload that
//! lies in the bytes just read (an echo) is queued by reference where the transport allows it,
//! so the kernel path writes it from the read buffer without copying it first.
//!
//! permessage-deflate ([`WsConfig::deflate`]) is negotiated in the handshake. The worker's
//! [`Codecs`] serve every session without context takeover; a session's push tag is the window
//! of the shared compressed frames it takes, so a broadcast picks its encoding per session.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hioload_stack::{CloseCause, ConnCtx, ConnId, Ctx, Service, Verdict};
use hioload_wsproto::handshake::{self, HandshakeError};
use hioload_wsproto::{
    deflate, deflate::DeflateStats, CloseCode, Codecs, DeflateConfig, Event, Limits, Message, Role,
    Sender, Session, SessionState, Transmit,
};

use crate::handler::{Context, Decision, Handler, SessionOps, WorkerContext};
use crate::ws_metrics::{self, WsMeter, WsTally};

/// Payloads at least this large that lie in the input are queued by reference rather than
/// copied (below it, a copy is cheaper than another piece in a vectored write).
pub const INPUT_REF_MIN: usize = 1024;

/// A connection's output as a frame sink: what a session's [`Sender`] writes goes to the
/// connection, and a payload that lies in the input being decoded is queued by reference.
pub struct ConnOut<'c, 'a, M> {
    cx: &'c mut ConnCtx<'a, M>,
    /// The input being decoded: start address and length (0 and 0 when it is not the
    /// transport's buffer).
    input: (usize, usize),
}

impl<'c, 'a, M> ConnOut<'c, 'a, M> {
    /// A sink for `cx`'s connection; `input` is the transport's input being decoded, if the
    /// frames written may reference it.
    pub fn new(cx: &'c mut ConnCtx<'a, M>, input: Option<&[u8]>) -> Self {
        let input = input.map_or((0, 0), |i| (i.as_ptr() as usize, i.len()));
        Self { cx, input }
    }

    /// The connection's context.
    pub fn cx(&mut self) -> &mut ConnCtx<'a, M> {
        self.cx
    }
}

impl<M> Transmit for ConnOut<'_, '_, M> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.cx.out().put(bytes);
    }

    fn put_payload(&mut self, payload: &[u8]) {
        let (base, len) = self.input;
        let at = (payload.as_ptr() as usize).wrapping_sub(base);
        if payload.len() >= INPUT_REF_MIN
            && at <= len
            && payload.len() <= len - at
            && self.cx.put_input(at, payload.len())
        {
            return;
        }
        self.cx.out().put(payload);
    }
}

/// The session being served, as the handler's [`Context`] sees it: its id and its sender.
struct Served<'s, 'x, 'c, 'a, M> {
    id: ConnId,
    sender: &'s mut Sender<'x, ConnOut<'c, 'a, M>>,
}

impl<M> SessionOps<M> for Served<'_, '_, '_, '_, M> {
    fn conn(&self) -> ConnId {
        self.id
    }

    fn reply(&mut self, message: Message<'_>) {
        self.sender.message(message);
    }

    fn ping(&mut self, payload: &[u8]) {
        self.sender.ping(payload);
    }

    fn close(&mut self, code: CloseCode, reason: &str) {
        self.sender.close(code, reason);
    }

    fn close_sent(&self) -> bool {
        self.sender.close_sent()
    }

    fn worker(&mut self) -> WorkerContext<'_, M> {
        let (sink, sent, compress) = self.sender.parts();
        WorkerContext::new(Ctx::reborrow(&mut **sink.cx), sent, compress)
    }
}

/// Run `f` with a handler [`Context`] for session `id`.
fn with_context<M, R>(
    id: ConnId,
    sender: &mut Sender<'_, ConnOut<'_, '_, M>>,
    f: impl FnOnce(&mut Context<'_, M>) -> R,
) -> R {
    let mut served = Served { id, sender };
    f(&mut Context::new(&mut served))
}

/// Pings a peer may leave unanswered in a row before the session is closed.
const MAX_MISSED_PONGS: u8 = 2;

/// WebSocket settings shared by every session of a worker.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Frame and message size limits.
    pub limits: Limits,
    /// Largest request head accepted (431 beyond).
    pub max_header_bytes: usize,
    /// Time from accept to a complete upgrade request.
    pub handshake_timeout: Duration,
    /// Close sessions that receive nothing for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Send a ping at this interval (`None`: never); close after missed pongs.
    pub ping_interval: Option<Duration>,
    /// How long to wait for the peer's close frame after sending ours.
    pub close_timeout: Duration,
    /// Largest body of a plain HTTP request the handler may answer ([`Handler::on_http`]);
    /// larger ones get 413.
    pub max_http_body: usize,
    /// permessage-deflate policy (`None`: never negotiated). Inflated messages are bounded by
    /// [`Limits::max_message`].
    pub deflate: Option<DeflateConfig>,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_header_bytes: handshake::DEFAULT_MAX_HEADER_BYTES,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(120)),
            ping_interval: None,
            close_timeout: Duration::from_secs(5),
            max_http_body: 64 << 10,
            deflate: Some(DeflateConfig::default()),
        }
    }
}

/// Runs WebSocket sessions for a handler on one worker.
#[derive(Debug)]
pub struct WsService<H> {
    handler: H,
    config: WsConfig,
    /// Zero of the service's millisecond clock.
    epoch: Instant,
    /// Frames, close codes and handshake failures counted so far.
    tally: WsTally,
    /// Where the tally is published, if anywhere.
    meter: Option<Arc<WsMeter>>,
    /// The tally changed since it was last published.
    dirty: bool,
    /// Settings that may change while serving, and the generation last applied.
    live: Option<(Arc<crate::live::LiveWs>, u64)>,
    /// The deflate state lent to sessions without context takeover (with deflate on).
    codecs: Option<Codecs>,
}

impl<H: Handler> WsService<H> {
    /// A service running `handler` with `config`.
    pub fn new(handler: H, config: WsConfig) -> Self {
        Self {
            handler,
            codecs: config
                .deflate
                .as_ref()
                .map(|d| Codecs::new(d.level, d.min_size)),
            config,
            epoch: Instant::now(),
            tally: WsTally::default(),
            meter: None,
            dirty: false,
            live: None,
        }
    }

    /// Take changes of the timeouts and size limits from `live` (checked once per loop
    /// iteration).
    pub fn with_live(mut self, live: Arc<crate::live::LiveWs>) -> Self {
        self.live = Some((live, 0));
        self
    }

    /// The settings in force.
    pub fn config(&self) -> &WsConfig {
        &self.config
    }

    /// Publish the service's counts into `meter` (the worker's, read by the admin endpoint).
    pub fn with_meter(mut self, meter: Arc<WsMeter>) -> Self {
        self.meter = Some(meter);
        self
    }

    /// What has been counted so far (its deflate figures as of the last tick: see
    /// [`WsService::deflate_stats`]).
    pub fn tally(&self) -> &WsTally {
        &self.tally
    }

    /// What the worker's deflate codecs have compressed and inflated so far (zero with deflate
    /// off).
    pub fn deflate_stats(&self) -> DeflateStats {
        self.codecs.as_ref().map(Codecs::stats).unwrap_or_default()
    }

    /// Count a failed handshake by the status sent (or `ws_metrics::HANDSHAKE_TIMEOUT`).
    fn handshake_failed(&mut self, slot: usize) {
        self.tally.handshake_failures[slot] += 1;
        self.dirty = true;
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }
}

/// Milliseconds since the service's epoch. Eight bytes instead of an `Instant`'s sixteen: it is
/// stored several times per connection, and idle connections are meant to cost little.
type Millis = u64;
/// "No timer".
const NEVER: Millis = Millis::MAX;

/// One connection's WebSocket state.
#[derive(Debug)]
pub struct WsConn {
    phase: Phase,
    /// When the peer last sent anything.
    last_rx: Millis,
    /// The phase's own timer: the handshake deadline while handshaking, the close deadline once
    /// our close frame is out, otherwise the next ping (if pings are on).
    timer: Millis,
    missed_pongs: u8,
    /// Our close frame is out and `timer` is the close deadline.
    closing: bool,
    close_code: Option<CloseCode>,
}

#[derive(Debug)]
enum Phase {
    /// Waiting for the upgrade request; `buf` holds it only if it spans reads.
    Handshake {
        buf: Vec<u8>,
    },
    Open(Session),
    /// Rejected or finished: input is ignored while the transport closes.
    Done,
}

impl<H: Handler> WsService<H> {
    fn ms(&self, t: Instant) -> Millis {
        t.saturating_duration_since(self.epoch).as_millis() as Millis
    }

    fn instant(&self, ms: Millis) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Parse the upgrade request in `data`; on success open the session and return the length
    /// of the request head. `Err` carries the verdict for a finished handshake attempt.
    fn handshake(
        &mut self,
        conn: &mut WsConn,
        data: &[u8],
        cx: &mut ConnCtx<'_, H::Message>,
    ) -> Result<Option<usize>, Verdict> {
        let id = cx.id();
        let (req, head_len) = match handshake::parse_request(data, self.config.max_header_bytes) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(
                e @ (HandshakeError::NotGet
                | HandshakeError::NotUpgrade
                | HandshakeError::NotHttp11),
            ) => return self.plain_http(conn, data, e, cx),
            Err(e) => {
                tracing::debug!(conn = %id, error = %e, status = e.status(), "handshake refused");
                self.handshake_failed(ws_metrics::handshake_slot(e.status()));
                cx.out().put(&e.response());
                conn.phase = Phase::Done;
                return Err(Verdict::Close);
            }
        };
        match self.handler.on_open(id, &req) {
            Decision::Accept { protocol } => {
                if let Some(p) = protocol.as_deref() {
                    if !req.protocols.contains(&p) {
                        tracing::error!(conn = %id, protocol = p, "handler chose a subprotocol the client did not offer");
                        self.handshake_failed(ws_metrics::handshake_slot(500));
                        cx.out()
                            .put(&handshake::error_response(500, "internal error", ""));
                        conn.phase = Phase::Done;
                        return Err(Verdict::Close);
                    }
                }
                let agreed = self
                    .config
                    .deflate
                    .as_ref()
                    .and_then(|d| deflate::negotiate(&req.extensions, d));
                let extensions = agreed.as_ref().map(|a| a.response.as_str());
                cx.out().put(&handshake::accept_response(
                    &req,
                    protocol.as_deref(),
                    extensions,
                ));
                let mut session = Session::new(Role::Server, self.config.limits);
                if let Some(a) = agreed {
                    tracing::trace!(conn = %id, extension = %a.response, "permessage-deflate");
                    session = session.with_deflate(a.params);
                    cx.set_tag(a.params.shared_window_bits());
                    self.tally.deflate_sessions += 1;
                }
                conn.phase = Phase::Open(session);
                let now = self.ms(cx.now());
                conn.last_rx = now;
                conn.timer = self
                    .config
                    .ping_interval
                    .map_or(NEVER, |i| now + i.as_millis() as Millis);
                cx.accept_pushes(true);
                if let Phase::Open(session) = &mut conn.phase {
                    let handler = &mut self.handler;
                    let mut out = ConnOut::new(cx, None);
                    let compress = self.codecs.as_mut().map(|c| &mut c.compress);
                    let mut sender =
                        session.sender_with(&mut out, Some(&mut self.tally.frames.sent), compress);
                    with_context(id, &mut sender, |c| handler.on_ready(id, c));
                }
                Ok(Some(head_len))
            }
            Decision::Reject { status, reason } => {
                let e = HandshakeError::Rejected { status, reason };
                tracing::debug!(conn = %id, error = %e, "handshake rejected by handler");
                self.handshake_failed(ws_metrics::handshake_slot(status));
                cx.out().put(&e.response());
                conn.phase = Phase::Done;
                Err(Verdict::Close)
            }
        }
    }

    /// A request that is not a WebSocket upgrade: once its body is in, the handler may answer it
    /// ([`Handler::on_http`]); otherwise it is refused with `refusal`'s response. Either way the
    /// connection closes after the answer.
    fn plain_http(
        &mut self,
        conn: &mut WsConn,
        data: &[u8],
        refusal: HandshakeError,
        cx: &mut ConnCtx<'_, H::Message>,
    ) -> Result<Option<usize>, Verdict> {
        let id = cx.id();
        let answer = match handshake::parse_http(data, self.config.max_header_bytes) {
            Ok(None) => return Ok(None),
            Ok(Some((req, _))) if req.content_length > self.config.max_http_body => {
                self.handshake_failed(ws_metrics::handshake_slot(413));
                handshake::error_response(413, "request body too large", "")
            }
            Ok(Some((req, head))) => {
                let Some(body) = data.get(head..head + req.content_length) else {
                    return Ok(None); // the body is still on its way
                };
                match self.handler.on_http(id, &req, body) {
                    Some(answer) => answer,
                    None => {
                        tracing::debug!(conn = %id, error = %refusal, "handshake refused");
                        self.handshake_failed(ws_metrics::handshake_slot(refusal.status()));
                        refusal.response()
                    }
                }
            }
            Err(e) => {
                tracing::debug!(conn = %id, error = %e, "malformed HTTP request");
                self.handshake_failed(ws_metrics::handshake_slot(e.status()));
                e.response()
            }
        };
        cx.out().put(&answer);
        conn.phase = Phase::Done;
        Err(Verdict::Close)
    }

    /// Feed frames to the open session and map its state to a verdict. `from_transport`: the
    /// bytes are the transport's own input (payloads may be queued by reference).
    fn frames(
        &mut self,
        conn: &mut WsConn,
        input: &mut [u8],
        from_transport: bool,
        cx: &mut ConnCtx<'_, H::Message>,
    ) -> Verdict {
        let Phase::Open(session) = &mut conn.phase else {
            return Verdict::Continue;
        };
        let handler = &mut self.handler;
        let id = cx.id();
        let mut peer_code = None;
        let mut peer_closed = false;
        let closes = self.tally.closes_sent();
        let mut out = ConnOut::new(cx, from_transport.then_some(&*input));
        let result = session.feed_with(
            input,
            &mut out,
            &mut self.tally.frames,
            self.codecs.as_mut(),
            |ev, sender| match ev {
                Event::Message(m) => with_context(id, sender, |c| handler.on_message(id, m, c)),
                Event::Close(frame) => {
                    peer_closed = true;
                    peer_code = frame.map(|f| f.code);
                }
                Event::Ping(_) | Event::Pong(_) => {}
            },
        );
        if peer_closed {
            self.tally.close_received[ws_metrics::close_slot(peer_code)] += 1;
        }
        self.tally
            .count_close_sent(closes, session.close_code_sent());
        self.dirty = true;
        if let Err(e) = result {
            tracing::debug!(conn = %id, error = %e, code = e.close_code().0, "protocol violation; failing the connection");
            conn.close_code = Some(e.close_code());
        } else if peer_code.is_some() {
            conn.close_code = peer_code;
        }
        self.after_session_step(conn, cx)
    }

    fn after_session_step(
        &mut self,
        conn: &mut WsConn,
        cx: &mut ConnCtx<'_, H::Message>,
    ) -> Verdict {
        let Phase::Open(session) = &conn.phase else {
            return Verdict::Continue;
        };
        match session.state() {
            SessionState::Open => Verdict::Continue,
            SessionState::CloseSent => {
                if !conn.closing {
                    // No data frame may follow our close frame: no more pushes either.
                    cx.accept_pushes(false);
                    conn.closing = true;
                    conn.timer = self.ms(cx.now() + self.config.close_timeout);
                }
                Verdict::Continue
            }
            SessionState::Closed => {
                cx.accept_pushes(false);
                Verdict::Close
            }
        }
    }

    fn start_close(
        &mut self,
        conn: &mut WsConn,
        code: CloseCode,
        reason: &str,
        cx: &mut ConnCtx<'_, H::Message>,
    ) -> Verdict {
        match &mut conn.phase {
            Phase::Open(session) => {
                let closes = self.tally.closes_sent();
                let mut out = ConnOut::new(cx, None);
                session
                    .sender_tallied(&mut out, &mut self.tally.frames.sent)
                    .close(code, reason);
                self.tally
                    .count_close_sent(closes, session.close_code_sent());
                self.dirty = true;
                conn.close_code.get_or_insert(code);
                self.after_session_step(conn, cx)
            }
            Phase::Handshake { .. } | Phase::Done => Verdict::Close,
        }
    }

    /// The handler's view of its worker outside any session's turn.
    fn worker_cx<'c>(
        &'c mut self,
        cx: &'c mut Ctx<'_, H::Message>,
    ) -> (&'c mut H, WorkerContext<'c, H::Message>) {
        (
            &mut self.handler,
            WorkerContext::new(
                cx.reborrow(),
                Some(&mut self.tally.frames.sent),
                self.codecs.as_mut().map(|c| &mut c.compress),
            ),
        )
    }
}

impl<H: Handler> Service for WsService<H> {
    type Conn = WsConn;
    type Message = H::Message;

    fn open(&mut self, id: ConnId, _peer: SocketAddr, cx: &mut ConnCtx<'_, H::Message>) -> WsConn {
        let now = cx.now();
        let _ = id;
        WsConn {
            phase: Phase::Handshake { buf: Vec::new() },
            last_rx: self.ms(now),
            timer: self.ms(now + self.config.handshake_timeout),
            missed_pongs: 0,
            closing: false,
            close_code: None,
        }
    }

    fn on_data(
        &mut self,
        conn: &mut WsConn,
        input: &mut [u8],
        cx: &mut ConnCtx<'_, H::Message>,
    ) -> Verdict {
        conn.last_rx = self.ms(cx.now());
        conn.missed_pongs = 0;
        match &mut conn.phase {
            Phase::Open(_) => self.frames(conn, input, true, cx),
            Phase::Done => Verdict::Continue,
            Phase::Handshake { buf } if buf.is_empty() => match self.handshake(conn, input, cx) {
                // The whole request was in this read: frames after it are decoded in place.
                Ok(Some(head)) => self.frames(conn, &mut input[head..], true, cx),
                Ok(None) => {
                    if let Phase::Handshake { buf } = &mut conn.phase {
                        buf.extend_from_slice(input);
                    }
                    Verdict::Continue
                }
                Err(v) => v,
            },
            Phase::Handshake { buf } => {
                let mut data = std::mem::take(buf);
                data.extend_from_slice(input);
                match self.handshake(conn, &data, cx) {
                    Ok(Some(head)) => self.frames(conn, &mut data[head..], false, cx),
                    Ok(None) => {
                        if let Phase::Handshake { buf } = &mut conn.phase {
                            *buf = data;
                        }
                        Verdict::Continue
                    }
                    Err(v) => v,
                }
            }
        }
    }

    fn on_eof(&mut self, conn: &mut WsConn, cx: &mut ConnCtx<'_, H::Message>) -> Verdict {
        let id = cx.id();
        if let Phase::Open(session) = &mut conn.phase {
            if session.state() != SessionState::Closed {
                tracing::debug!(conn = %id, "peer closed TCP without a close handshake");
                session.abort();
            }
        }
        cx.accept_pushes(false);
        Verdict::Close
    }

    fn deadline(&self, conn: &WsConn) -> Option<Instant> {
        let due = match &conn.phase {
            Phase::Done => return None,
            Phase::Handshake { .. } => conn.timer,
            Phase::Open(_) if conn.closing => conn.timer,
            Phase::Open(_) => {
                let idle = self
                    .config
                    .idle_timeout
                    .map_or(NEVER, |t| conn.last_rx + t.as_millis() as Millis);
                conn.timer.min(idle)
            }
        };
        (due != NEVER).then(|| self.instant(due))
    }

    fn on_deadline(&mut self, conn: &mut WsConn, cx: &mut ConnCtx<'_, H::Message>) -> Verdict {
        let id = cx.id();
        let at = self.ms(cx.now());
        match &mut conn.phase {
            Phase::Done => return Verdict::Continue,
            Phase::Handshake { .. } if at >= conn.timer => {
                tracing::debug!(conn = %id, "handshake timeout");
                self.handshake_failed(ws_metrics::HANDSHAKE_TIMEOUT);
                conn.phase = Phase::Done;
                return Verdict::Close;
            }
            Phase::Handshake { .. } => return Verdict::Continue,
            Phase::Open(session) if conn.closing => {
                if at >= conn.timer {
                    tracing::debug!(conn = %id, "close timeout: peer did not answer our close frame");
                    session.abort();
                    return Verdict::Close;
                }
                return Verdict::Continue;
            }
            Phase::Open(_) => {}
        }
        if self
            .config
            .idle_timeout
            .is_some_and(|t| at >= conn.last_rx + t.as_millis() as Millis)
        {
            tracing::debug!(conn = %id, "idle timeout");
            return self.start_close(conn, CloseCode::GOING_AWAY, "idle timeout", cx);
        }
        if let Some(interval) = self.config.ping_interval {
            if at >= conn.timer {
                if conn.missed_pongs >= MAX_MISSED_PONGS {
                    // The peer looks dead: say why, but do not wait for a close reply.
                    tracing::debug!(conn = %id, "peer missed {MAX_MISSED_PONGS} pongs");
                    self.start_close(conn, CloseCode::GOING_AWAY, "ping timeout", cx);
                    if let Phase::Open(session) = &mut conn.phase {
                        session.abort();
                    }
                    return Verdict::Close;
                }
                if let Phase::Open(session) = &mut conn.phase {
                    let mut out = ConnOut::new(cx, None);
                    session
                        .sender_tallied(&mut out, &mut self.tally.frames.sent)
                        .ping(b"");
                    self.dirty = true;
                }
                conn.missed_pongs += 1;
                conn.timer = at + interval.as_millis() as Millis;
            }
        }
        Verdict::Continue
    }

    fn on_slow(&mut self, conn: &mut WsConn, cx: &mut ConnCtx<'_, H::Message>) -> Verdict {
        let id = cx.id();
        tracing::debug!(conn = %id, "closing a slow consumer with 1008");
        self.start_close(
            conn,
            CloseCode::POLICY_VIOLATION,
            "slow consumer: output limit exceeded",
            cx,
        )
    }

    fn on_shutdown(&mut self, conn: &mut WsConn, cx: &mut ConnCtx<'_, H::Message>) -> Verdict {
        self.start_close(conn, CloseCode::GOING_AWAY, "server shutdown", cx)
    }

    fn on_close(
        &mut self,
        id: ConnId,
        conn: WsConn,
        _cause: CloseCause,
        cx: &mut Ctx<'_, H::Message>,
    ) {
        if matches!(conn.phase, Phase::Open(_)) {
            let (handler, mut w) = self.worker_cx(cx);
            handler.on_close(id, conn.close_code, &mut w);
            self.dirty = true;
        }
    }

    fn on_message(&mut self, message: H::Message, cx: &mut Ctx<'_, H::Message>) {
        let (handler, mut w) = self.worker_cx(cx);
        handler.on_post(message, &mut w);
        self.dirty = true;
    }

    fn on_timer(&mut self, token: u64, cx: &mut Ctx<'_, H::Message>) {
        let (handler, mut w) = self.worker_cx(cx);
        handler.on_timer(token, &mut w);
        self.dirty = true;
    }

    fn on_tick(&mut self, _cx: &mut Ctx<'_, H::Message>) -> bool {
        if self.dirty {
            self.dirty = false;
            if let Some(c) = &mut self.codecs {
                self.tally.deflate = c.stats();
                c.compress.trim();
            }
            if let Some(m) = &self.meter {
                m.publish(&self.tally);
            }
        }
        let Some(s) = self
            .live
            .as_mut()
            .and_then(|(live, seen)| live.changed(seen))
        else {
            return false;
        };
        let moved = s.idle_timeout != self.config.idle_timeout;
        self.config.idle_timeout = s.idle_timeout;
        self.config.ping_interval = s.ping_interval;
        self.config.limits = s.limits;
        moved
    }
}
