//! [`WsService`]: the WebSocket protocol for a [`Handler`], as a transport [`Service`].
//!
//! Per connection: the handshake (buffered only if the request spans reads, bounded by the
//! header limit and the handshake timeout), then a [`Session`] whose messages go to the handler.
//! Timers: handshake timeout, idle timeout, server pings, and the close timeout that ends a
//! closing handshake the peer does not finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hioload_stack::{CloseCause, ConnId, Service, Verdict};
use hioload_wsproto::handshake::{self, HandshakeError};
use hioload_wsproto::{CloseCode, Event, Limits, Role, Session, SessionState};

use crate::handler::{Decision, Handler};
use crate::ws_metrics::{self, WsMeter, WsTally};

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
}

impl<H: Handler> WsService<H> {
    /// A service running `handler` with `config`.
    pub fn new(handler: H, config: WsConfig) -> Self {
        Self {
            handler,
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

    /// What has been counted so far.
    pub fn tally(&self) -> &WsTally {
        &self.tally
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
    id: ConnId,
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

impl WsConn {
    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }
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
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Result<Option<usize>, Verdict> {
        let (req, head_len) = match handshake::parse_request(data, self.config.max_header_bytes) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::debug!(conn = %conn.id, error = %e, status = e.status(), "handshake refused");
                self.handshake_failed(ws_metrics::handshake_slot(e.status()));
                out.extend_from_slice(&e.response());
                conn.phase = Phase::Done;
                return Err(Verdict::Close);
            }
        };
        match self.handler.on_open(conn.id, &req) {
            Decision::Accept { protocol } => {
                if let Some(p) = protocol.as_deref() {
                    if !req.protocols.contains(&p) {
                        tracing::error!(conn = %conn.id, protocol = p, "handler chose a subprotocol the client did not offer");
                        self.handshake_failed(ws_metrics::handshake_slot(500));
                        out.extend_from_slice(&handshake::error_response(
                            500,
                            "internal error",
                            "",
                        ));
                        conn.phase = Phase::Done;
                        return Err(Verdict::Close);
                    }
                }
                out.extend_from_slice(&handshake::accept_response(&req, protocol.as_deref()));
                conn.phase = Phase::Open(Session::new(Role::Server, self.config.limits));
                let now = self.ms(now);
                conn.last_rx = now;
                conn.timer = self
                    .config
                    .ping_interval
                    .map_or(NEVER, |i| now + i.as_millis() as Millis);
                Ok(Some(head_len))
            }
            Decision::Reject { status, reason } => {
                let e = HandshakeError::Rejected { status, reason };
                tracing::debug!(conn = %conn.id, error = %e, "handshake rejected by handler");
                self.handshake_failed(ws_metrics::handshake_slot(status));
                out.extend_from_slice(&e.response());
                conn.phase = Phase::Done;
                Err(Verdict::Close)
            }
        }
    }

    /// Feed frames to the open session and map its state to a verdict.
    fn frames(
        &mut self,
        conn: &mut WsConn,
        input: &mut [u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Verdict {
        let Phase::Open(session) = &mut conn.phase else {
            return Verdict::Continue;
        };
        let handler = &mut self.handler;
        let id = conn.id;
        let mut peer_code = None;
        let mut peer_closed = false;
        let closes = self.tally.closes_sent();
        let result =
            session.feed_tallied(input, out, &mut self.tally.frames, |ev, reply| match ev {
                Event::Message(m) => handler.on_message(id, m, reply),
                Event::Close(frame) => {
                    peer_closed = true;
                    peer_code = frame.map(|f| f.code);
                }
                Event::Ping(_) | Event::Pong(_) => {}
            });
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
        self.after_session_step(conn, now)
    }

    fn after_session_step(&mut self, conn: &mut WsConn, now: Instant) -> Verdict {
        let Phase::Open(session) = &conn.phase else {
            return Verdict::Continue;
        };
        match session.state() {
            SessionState::Open => Verdict::Continue,
            SessionState::CloseSent => {
                if !conn.closing {
                    conn.closing = true;
                    conn.timer = self.ms(now + self.config.close_timeout);
                }
                Verdict::Continue
            }
            SessionState::Closed => Verdict::Close,
        }
    }

    fn start_close(
        &mut self,
        conn: &mut WsConn,
        out: &mut Vec<u8>,
        code: CloseCode,
        reason: &str,
        now: Instant,
    ) -> Verdict {
        match &mut conn.phase {
            Phase::Open(session) => {
                let closes = self.tally.closes_sent();
                session
                    .sender_tallied(out, &mut self.tally.frames.sent)
                    .close(code, reason);
                self.tally
                    .count_close_sent(closes, session.close_code_sent());
                self.dirty = true;
                conn.close_code.get_or_insert(code);
                self.after_session_step(conn, now)
            }
            Phase::Handshake { .. } | Phase::Done => Verdict::Close,
        }
    }
}

impl<H: Handler> Service for WsService<H> {
    type Conn = WsConn;

    fn open(&mut self, id: ConnId, _peer: SocketAddr, now: Instant) -> WsConn {
        WsConn {
            id,
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
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Verdict {
        conn.last_rx = self.ms(now);
        conn.missed_pongs = 0;
        match &mut conn.phase {
            Phase::Open(_) => self.frames(conn, input, out, now),
            Phase::Done => Verdict::Continue,
            Phase::Handshake { buf } if buf.is_empty() => {
                match self.handshake(conn, input, out, now) {
                    // The whole request was in this read: frames after it are decoded in place.
                    Ok(Some(head)) => self.frames(conn, &mut input[head..], out, now),
                    Ok(None) => {
                        if let Phase::Handshake { buf } = &mut conn.phase {
                            buf.extend_from_slice(input);
                        }
                        Verdict::Continue
                    }
                    Err(v) => v,
                }
            }
            Phase::Handshake { buf } => {
                let mut data = std::mem::take(buf);
                data.extend_from_slice(input);
                match self.handshake(conn, &data, out, now) {
                    Ok(Some(head)) => self.frames(conn, &mut data[head..], out, now),
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

    fn on_eof(&mut self, conn: &mut WsConn, _out: &mut Vec<u8>, _now: Instant) -> Verdict {
        if let Phase::Open(session) = &mut conn.phase {
            if session.state() != SessionState::Closed {
                tracing::debug!(conn = %conn.id, "peer closed TCP without a close handshake");
                session.abort();
            }
        }
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

    fn on_deadline(&mut self, conn: &mut WsConn, out: &mut Vec<u8>, now: Instant) -> Verdict {
        let at = self.ms(now);
        match &mut conn.phase {
            Phase::Done => return Verdict::Continue,
            Phase::Handshake { .. } if at >= conn.timer => {
                tracing::debug!(conn = %conn.id, "handshake timeout");
                self.handshake_failed(ws_metrics::HANDSHAKE_TIMEOUT);
                conn.phase = Phase::Done;
                return Verdict::Close;
            }
            Phase::Handshake { .. } => return Verdict::Continue,
            Phase::Open(session) if conn.closing => {
                if at >= conn.timer {
                    tracing::debug!(conn = %conn.id, "close timeout: peer did not answer our close frame");
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
            tracing::debug!(conn = %conn.id, "idle timeout");
            return self.start_close(conn, out, CloseCode::GOING_AWAY, "idle timeout", now);
        }
        if let Some(interval) = self.config.ping_interval {
            if at >= conn.timer {
                if conn.missed_pongs >= MAX_MISSED_PONGS {
                    // The peer looks dead: say why, but do not wait for a close reply.
                    tracing::debug!(conn = %conn.id, "peer missed {MAX_MISSED_PONGS} pongs");
                    self.start_close(conn, out, CloseCode::GOING_AWAY, "ping timeout", now);
                    if let Phase::Open(session) = &mut conn.phase {
                        session.abort();
                    }
                    return Verdict::Close;
                }
                if let Phase::Open(session) = &mut conn.phase {
                    session
                        .sender_tallied(out, &mut self.tally.frames.sent)
                        .ping(b"");
                    self.dirty = true;
                }
                conn.missed_pongs += 1;
                conn.timer = at + interval.as_millis() as Millis;
            }
        }
        Verdict::Continue
    }

    fn on_shutdown(&mut self, conn: &mut WsConn, out: &mut Vec<u8>, now: Instant) -> Verdict {
        self.start_close(conn, out, CloseCode::GOING_AWAY, "server shutdown", now)
    }

    fn on_close(&mut self, conn: WsConn, _cause: CloseCause) {
        if matches!(conn.phase, Phase::Open(_)) {
            self.handler.on_close(conn.id, conn.close_code);
        }
    }

    fn on_tick(&mut self, _now: Instant) -> bool {
        if self.dirty {
            self.dirty = false;
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
