//! The load generator's client, sans-IO: a [`Service`] that speaks first, so the same code runs
//! over the kernel dialer and over the DPDK engine's active open.
//!
//! Each connection keeps `depth` messages in flight. Every echo is compared byte for byte with
//! what was sent (the payload is derived from the message's sequence number, so nothing is stored
//! per message), and its round trip goes into an HDR histogram. Nothing is allocated per message:
//! the in-flight queue is sized at open and payloads are slices of one pattern.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hioload_ws::stack::{CloseCause, ConnCtx, ConnId, Ctx, Service, Verdict};
use hioload_ws::ws::handshake;
use hioload_ws::ws::{
    deflate, CloseCode, Codecs, DeflateConfig, Event, FrameTallies, Limits, OpCode, Role, Session,
};

use crate::cli::PayloadKind;

/// What the client speaks.
#[derive(Debug, Clone)]
pub enum Protocol {
    /// WebSocket: handshake with this Host header and path, then messages.
    WebSocket {
        /// Host header.
        host: String,
        /// Request path.
        path: String,
        /// Text messages (ASCII payloads) rather than binary.
        text: bool,
    },
    /// Raw TCP: a message is `size` bytes of the stream.
    Tcp,
    /// Pub/sub (docs/PROTOCOL.md): each connection joins one channel; the first `publishers`
    /// connections also publish to theirs; a message is a delivery to a member.
    PubSub(PubSubPlan),
}

/// The shape of a pub/sub load.
#[derive(Debug, Clone)]
pub struct PubSubPlan {
    /// Host header.
    pub host: String,
    /// Request path.
    pub path: String,
    /// Channels (`bench-0` ...); connection i joins channel i mod channels.
    pub channels: usize,
    /// Connections that publish (the first of each worker's share).
    pub publishers: usize,
    /// Publishes per second over all publishers; `None`: each keeps `depth` unacknowledged.
    pub rate: Option<f64>,
    /// Connections that join and leave a channel in turn (after the publishers of each
    /// worker's share); they count churn replies, not deliveries.
    pub churners: usize,
    /// Joins plus leaves per second over all churners.
    pub churn_rate: f64,
}

/// What every connection does, shared by the workers of a run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The protocol.
    pub protocol: Protocol,
    /// Messages in flight per connection (0: connect and stay idle).
    pub depth: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Start of the measured window.
    pub measure_from: Instant,
    /// End of the measured window.
    pub end: Instant,
    /// The run's start: pub/sub messages carry their send time relative to it.
    pub epoch: Instant,
    /// Offer permessage-deflate with this policy, and compress what is sent when accepted.
    pub deflate: Option<DeflateConfig>,
    /// What payloads look like.
    pub payload: PayloadKind,
}

/// Counters a worker publishes for the progress line, without locks (one writer each).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct Live {
    /// Echoes received (whole run).
    pub messages: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Sessions that failed.
    pub failed: AtomicU64,
    /// Echoes that differed from what was sent.
    pub mismatches: AtomicU64,
    /// 99th percentile round trip so far in the window, nanoseconds (published once a second).
    pub p99_ns: AtomicU64,
}

/// What one worker's client measured.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Echoes received in the window.
    pub messages: u64,
    /// Echoes that differed from what was sent (whole run).
    pub mismatches: u64,
    /// Sessions that failed: handshake refused, protocol error, closed by the server early.
    pub failed: u64,
    /// Connections opened (TCP established) over the run.
    pub opened: u64,
    /// Sessions ready for messages (handshake done) over the run.
    pub ready: u64,
    /// When the first connection opened.
    pub first_open: Option<Instant>,
    /// When the last session became ready.
    pub last_ready: Option<Instant>,
    /// Round trips in the window, nanoseconds.
    pub latency: Histogram<u64>,
    /// First failure, for the user.
    pub first_failure: Option<String>,
    /// Pub/sub: messages a member never got (gaps in seq), whole run.
    pub gaps: u64,
    /// Pub/sub: messages published (whole run).
    pub publishes: u64,
    /// Pub/sub: churners' joins and leaves answered in the window.
    pub churn_ops: u64,
    /// Pub/sub: their reply times in the window, nanoseconds.
    pub churn_latency: Histogram<u64>,
    /// Pub/sub: presence events members received in the window.
    pub presence_events: u64,
}

/// The client of one worker.
pub struct LoadClient {
    plan: Arc<Plan>,
    pattern: Vec<u8>,
    tally: Tally,
    /// Messages received before the window began (subtracted at the end).
    before_window: u64,
    total_messages: u64,
    in_window: bool,
    live: Arc<[Live]>,
    worker: usize,
    next_publish: Instant,
    open: u64,
    /// Connections opened by this worker so far (pub/sub roles and channels follow it).
    opened: usize,
    /// Frames of one read, parsed after the session has decoded them (kept for its capacity).
    scratch: Vec<Frame>,
    /// Deflate state lent to every connection (with `--deflate`).
    codecs: Option<Codecs>,
    /// Text pub/sub publishes are padded with (a slice of it).
    prose: Vec<u8>,
}

/// A pub/sub frame as the client cares about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// A delivery: its seq and when it was published (ns since the epoch).
    Delivery { seq: u64, sent_ns: u64 },
    /// The channel's seq when joined.
    Joined { seq: u64 },
    /// A publish was acknowledged.
    Ack,
    /// A leave was answered.
    Left,
    /// A presence change in a joined channel.
    Presence,
    /// An error from the server.
    Error,
    /// Presence and the like.
    Other,
}

/// A connection's part in a pub/sub load.
#[derive(Debug, Clone, Copy)]
pub struct Member {
    /// Its channel.
    channel: usize,
    /// It publishes too.
    publisher: bool,
    /// Joined: deliveries count from here.
    joined: bool,
    /// The last seq received.
    last_seq: u64,
    /// Messages it published.
    published: u64,
    /// With a rate: when the next publish (or churn step) is due.
    next_due: Option<Instant>,
    /// It joins and leaves its channel in turn instead of staying a member.
    churner: bool,
    /// A churner's join or leave waiting for its reply: when it was sent.
    churn_sent: Option<Instant>,
}

/// Where a connection is.
enum Phase {
    /// WebSocket request sent; the response head is collected here.
    Handshake { key: String, head: Vec<u8> },
    /// Messages flow.
    Open,
    /// Failed or closing; input is ignored.
    Done,
}

/// One connection's state.
pub struct ClientConn {
    phase: Phase,
    session: Session,
    /// Sequence numbers and send times of the messages in flight, oldest first.
    inflight: VecDeque<(u64, Instant)>,
    next_seq: u64,
    /// TCP: bytes of the oldest message in flight received so far.
    partial: usize,
    /// TCP: a byte of that message differed.
    corrupt: bool,
    /// We are closing on purpose (end of the run); a close now is not a failure.
    leaving: bool,
    /// Pub/sub: its role.
    member: Option<Member>,
}

impl LoadClient {
    /// The client of worker `worker`, publishing into `live[worker]`.
    pub fn new(plan: Arc<Plan>, live: Arc<[Live]>, worker: usize) -> Self {
        let pattern = match plan.payload {
            PayloadKind::Letters => (0..plan.size + 26).map(|i| b'a' + (i % 26) as u8).collect(),
            PayloadKind::Json => json_pattern(plan.size + 26),
        };
        let prose = match plan.payload {
            PayloadKind::Letters => vec![b'x'; plan.size],
            PayloadKind::Json => prose_pattern(plan.size),
        };
        let next_publish = plan.measure_from;
        Self {
            codecs: plan.deflate.map(|d| Codecs::new(d.level, d.min_size)),
            prose,
            pattern,
            tally: Tally {
                messages: 0,
                mismatches: 0,
                failed: 0,
                opened: 0,
                ready: 0,
                first_open: None,
                last_ready: None,
                // 1 µs to 60 s at 3 significant digits; cannot fail for these bounds.
                latency: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
                    .unwrap_or_else(|_| unreachable!("valid histogram bounds")),
                first_failure: None,
                gaps: 0,
                publishes: 0,
                churn_ops: 0,
                churn_latency: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
                    .unwrap_or_else(|_| unreachable!("valid histogram bounds")),
                presence_events: 0,
            },
            plan,
            before_window: 0,
            total_messages: 0,
            in_window: false,
            live,
            worker,
            next_publish,
            open: 0,
            opened: 0,
            scratch: Vec::new(),
        }
    }

    /// What was measured.
    pub fn into_tally(mut self) -> Tally {
        let end = if self.in_window {
            self.total_messages
        } else {
            self.before_window
        };
        self.tally.messages = end - self.before_window;
        self.tally
    }

    /// The payload of message `seq`: printable ASCII shifted by the sequence number, so an echo
    /// of another message or with any byte changed is caught.
    fn payload(&self, seq: u64) -> &[u8] {
        payload_of(&self.pattern, self.plan.size, seq)
    }

    fn live(&self) -> Option<&Live> {
        self.live.get(self.worker)
    }

    fn fail(&mut self, conn: &mut ClientConn, why: impl FnOnce() -> String) -> Verdict {
        if !matches!(conn.phase, Phase::Done) && !conn.leaving {
            self.tally.failed += 1;
            if self.tally.first_failure.is_none() {
                let why = why();
                tracing::warn!(reason = %why, "session failed");
                self.tally.first_failure = Some(why);
            }
            if let Some(l) = self.live() {
                l.failed.store(self.tally.failed, Ordering::Relaxed);
            }
        }
        conn.phase = Phase::Done;
        Verdict::Close
    }

    /// Note the time; start the window and publish the progress figures when due.
    fn tick(&mut self, now: Instant) {
        if !self.in_window && now >= self.plan.measure_from {
            self.in_window = true;
            self.before_window = self.total_messages;
            self.tally.latency.reset();
            self.tally.churn_latency.reset();
            self.tally.churn_ops = 0;
            self.tally.presence_events = 0;
        }
        if now >= self.next_publish {
            // Often enough that the once-a-second progress line shows a recent figure.
            self.next_publish = now + Duration::from_millis(250);
            let p99 = self.tally.latency.value_at_quantile(0.99);
            if let Some(l) = self.live() {
                l.p99_ns.store(p99, Ordering::Relaxed);
            }
        }
    }

    /// The session is ready: fill its pipeline (pub/sub: join its channel first).
    fn start(&mut self, conn: &mut ClientConn, out: &mut Vec<u8>, now: Instant) {
        if conn.member.is_some_and(|m| m.churner) {
            // Ready at once; its first join is due when publishing starts, at a phase of its
            // own within a step's interval (spread by the golden ratio over its number), so
            // the churners' steps are spread in time rather than all due at once.
            self.tally.ready += 1;
            self.tally.last_ready = Some(now);
            let phase = ((conn.next_seq >> 32) as f64 * 0.618_033_988_749_895).fract();
            let offset = self.churn_interval().unwrap_or_default().mul_f64(phase);
            let first = self.load_start(now) + offset;
            if let Some(m) = conn.member.as_mut() {
                m.next_due = Some(first);
            }
            return;
        }
        if let Some(m) = &conn.member {
            let join = format!(
                r#"{{"type":"join","channel":"bench-{}","user":"b{}-{}","id":0}}"#,
                m.channel,
                self.worker,
                conn.next_seq >> 32
            );
            send_message(
                &mut conn.session,
                self.codecs.as_mut(),
                out,
                OpCode::Text,
                join.as_bytes(),
            );
            return;
        }
        self.tally.ready += 1;
        self.tally.last_ready = Some(now);
        for _ in 0..self.plan.depth {
            self.send(conn, out, now);
        }
    }

    fn send(&mut self, conn: &mut ClientConn, out: &mut Vec<u8>, now: Instant) {
        if let Some(m) = &mut conn.member {
            return self.publish(m, &mut conn.session, out, now);
        }
        let seq = conn.next_seq;
        conn.next_seq += 1;
        conn.inflight.push_back((seq, now));
        let payload = payload_of(&self.pattern, self.plan.size, seq);
        match &self.plan.protocol {
            Protocol::WebSocket { text, .. } => {
                let op = if *text { OpCode::Text } else { OpCode::Binary };
                send_message(&mut conn.session, self.codecs.as_mut(), out, op, payload);
            }
            Protocol::Tcp | Protocol::PubSub(_) => out.extend_from_slice(payload),
        }
    }

    /// Publish one message: its text is the send time (ns since the epoch), who sent it and
    /// its number, padded to `size` bytes. With no rate it asks for an ack (an id), which
    /// sends the next.
    fn publish(&mut self, m: &mut Member, session: &mut Session, out: &mut Vec<u8>, now: Instant) {
        use std::fmt::Write as _;
        let Protocol::PubSub(p) = &self.plan.protocol else {
            return;
        };
        let sent_ns = now.saturating_duration_since(self.plan.epoch).as_nanos() as u64;
        let mut text = String::with_capacity(self.plan.size + 96);
        let _ = write!(
            text,
            r#"{{"type":"message","channel":"bench-{}","text":""#,
            m.channel
        );
        let start = text.len();
        let _ = write!(text, "{sent_ns}:{}:{}:", self.worker, m.published);
        let pad = self.plan.size.saturating_sub(text.len() - start);
        // The prose pattern is ASCII without quotes or backslashes: valid inside a JSON string.
        let pad = &self.prose[..pad.min(self.prose.len())];
        text.push_str(std::str::from_utf8(pad).unwrap_or_default());
        text.push('"');
        if p.rate.is_none() {
            let _ = write!(text, r#","id":{}"#, m.published);
        }
        text.push('}');
        m.published += 1;
        self.tally.publishes += 1;
        send_message(
            session,
            self.codecs.as_mut(),
            out,
            OpCode::Text,
            text.as_bytes(),
        );
    }

    /// `n` echoes differed from what was sent.
    fn mismatched(&mut self, n: u64) {
        if n > 0 {
            self.tally.mismatches += n;
            if let Some(l) = self.live() {
                l.mismatches.store(self.tally.mismatches, Ordering::Relaxed);
            }
        }
    }

    /// The echo of the oldest message in flight arrived whole (its bytes were checked already).
    fn echoed(&mut self, conn: &mut ClientConn, now: Instant) {
        let Some((_, sent)) = conn.inflight.pop_front() else {
            return;
        };
        self.total_messages += 1;
        if self.in_window && now < self.plan.end {
            let _ = self
                .tally
                .latency
                .record(now.saturating_duration_since(sent).as_nanos() as u64);
        }
        if let Some(l) = self.live() {
            l.messages.store(self.total_messages, Ordering::Relaxed);
        }
    }

    fn on_ws_data(
        &mut self,
        conn: &mut ClientConn,
        input: &mut [u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Verdict {
        let Phase::Handshake { key, head } = &mut conn.phase else {
            return self.on_frames(conn, input, out, now);
        };
        head.extend_from_slice(input);
        match handshake::parse_response(head, key) {
            Ok(None) => Verdict::Continue,
            Ok(Some(accepted)) => {
                if let (Some(config), Some(answer)) = (&self.plan.deflate, accepted.extensions) {
                    match deflate::accept(answer, config) {
                        Ok(params) => conn.session.set_deflate(params),
                        Err(e) => {
                            return self
                                .fail(conn, || format!("bad permessage-deflate answer: {e}"))
                        }
                    }
                }
                let mut rest = head.split_off(accepted.head_len);
                conn.phase = Phase::Open;
                self.start(conn, out, now);
                if rest.is_empty() {
                    Verdict::Continue
                } else {
                    self.on_frames(conn, &mut rest, out, now)
                }
            }
            Err(e) => self.fail(conn, || format!("handshake refused: {e}")),
        }
    }

    /// WebSocket frames after the handshake: check each echo, then refill the pipeline.
    fn on_frames(
        &mut self,
        conn: &mut ClientConn,
        input: &mut [u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Verdict {
        if conn.member.is_some() {
            return self.on_pubsub_frames(conn, input, out, now);
        }
        let mut unexpected = None;
        let mut closed = false;
        let (session, inflight) = (&mut conn.session, &mut conn.inflight);
        let (mut completed, mut bad) = (0usize, 0u64);
        let mut codecs = self.codecs.take();
        let mut tally = FrameTallies::default();
        let result = session.feed_with(input, out, &mut tally, codecs.as_mut(), |ev, _| match ev {
            Event::Message(m) => match inflight.get(completed).map(|(seq, _)| self.payload(*seq)) {
                Some(want) => {
                    bad += u64::from(want != m.as_bytes());
                    completed += 1;
                }
                None => unexpected = Some("an echo of a message never sent"),
            },
            Event::Close(_) => closed = true,
            Event::Ping(_) | Event::Pong(_) => {}
        });
        self.codecs = codecs;
        // Count the echoes in order, then refill the pipeline with as many new messages.
        self.mismatched(bad);
        for _ in 0..completed {
            self.echoed(conn, now);
            if !conn.leaving {
                self.send(conn, out, now);
            }
        }
        if let Err(e) = result {
            return self.fail(conn, || format!("protocol error from the server: {e}"));
        }
        if let Some(why) = unexpected {
            return self.fail(conn, || why.to_string());
        }
        if closed {
            return self.close_received(conn);
        }
        Verdict::Continue
    }

    /// The server's close frame arrived: the end of a run we asked for, else a failure.
    fn close_received(&mut self, conn: &mut ClientConn) -> Verdict {
        if conn.leaving {
            conn.phase = Phase::Done;
            Verdict::Close
        } else {
            self.fail(conn, || "the server closed the session".to_string())
        }
    }

    /// Pub/sub frames: deliveries are checked for order and timed; `joined` makes the member
    /// ready (and a publisher start); an ack sends the next publish.
    fn on_pubsub_frames(
        &mut self,
        conn: &mut ClientConn,
        input: &mut [u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Verdict {
        let mut frames = std::mem::take(&mut self.scratch);
        let mut closed = false;
        let mut tally = FrameTallies::default();
        let codecs = self.codecs.as_mut();
        let result = conn
            .session
            .feed_with(input, out, &mut tally, codecs, |ev, _| match ev {
                Event::Message(m) => frames.push(classify(m.as_bytes())),
                Event::Close(_) => closed = true,
                Event::Ping(_) | Event::Pong(_) => {}
            });
        let mut verdict = Verdict::Continue;
        let now_ns = now.saturating_duration_since(self.plan.epoch).as_nanos() as u64;
        for f in frames.drain(..) {
            let Some(mut m) = conn.member else { break };
            match f {
                Frame::Delivery { seq, sent_ns } if m.joined && !m.churner => {
                    if seq > m.last_seq + 1 {
                        self.tally.gaps += seq - m.last_seq - 1;
                    } else if seq <= m.last_seq {
                        self.mismatched(1);
                    }
                    m.last_seq = m.last_seq.max(seq);
                    self.total_messages += 1;
                    if self.in_window && now < self.plan.end {
                        let _ = self
                            .tally
                            .latency
                            .record(now_ns.saturating_sub(sent_ns).max(1));
                    }
                }
                Frame::Delivery { .. } => {}
                Frame::Joined { seq } if !m.joined => {
                    m.joined = true;
                    m.last_seq = seq;
                    self.tally.ready += 1;
                    self.tally.last_ready = Some(now);
                    if m.publisher {
                        let from = self.load_start(now);
                        if from <= now && self.publish_interval().is_none() {
                            for _ in 0..self.plan.depth {
                                self.publish(&mut m, &mut conn.session, out, now);
                            }
                        } else {
                            m.next_due = Some(from.max(now));
                        }
                    }
                }
                Frame::Ack if m.publisher && !conn.leaving => {
                    self.publish(&mut m, &mut conn.session, out, now);
                }
                Frame::Error => {
                    conn.member = Some(m);
                    verdict = self.fail(conn, || "the server answered an error".to_string());
                    break;
                }
                Frame::Joined { .. } | Frame::Left if m.churner => {
                    if let Some(sent) = m.churn_sent.take() {
                        if self.in_window && now < self.plan.end {
                            self.tally.churn_ops += 1;
                            let _ = self
                                .tally
                                .churn_latency
                                .record(now.saturating_duration_since(sent).as_nanos() as u64);
                        }
                    }
                }
                Frame::Presence if m.joined && !m.churner => {
                    if self.in_window && now < self.plan.end {
                        self.tally.presence_events += 1;
                    }
                }
                Frame::Joined { .. }
                | Frame::Ack
                | Frame::Left
                | Frame::Presence
                | Frame::Other => {}
            }
            conn.member = Some(m);
        }
        self.scratch = frames;
        if let Some(l) = self.live() {
            l.messages.store(self.total_messages, Ordering::Relaxed);
        }
        if let Err(e) = result {
            return self.fail(conn, || format!("protocol error from the server: {e}"));
        }
        if closed {
            return self.close_received(conn);
        }
        verdict
    }

    /// When publishing and churning start: in the warmup's last second (members join before),
    /// or at once if that has passed.
    fn load_start(&self, now: Instant) -> Instant {
        self.plan
            .measure_from
            .checked_sub(Duration::from_secs(1))
            .map_or(now, |f| f.max(self.plan.epoch))
            .max(now)
    }

    /// A churner's next step: join its channel if it is out, leave it if it is in. One at a
    /// time: a step falls due while the last is unanswered is skipped (the report shows the
    /// steps actually answered).
    fn churn(
        &mut self,
        m: &mut Member,
        conn_user: u64,
        session: &mut Session,
        out: &mut Vec<u8>,
        now: Instant,
    ) {
        if m.churn_sent.is_some() {
            return;
        }
        let text = if m.joined {
            format!(
                r#"{{"type":"leave","channel":"bench-{}","id":1}}"#,
                m.channel
            )
        } else {
            format!(
                r#"{{"type":"join","channel":"bench-{}","user":"churn-{}-{}","id":1}}"#,
                m.channel, self.worker, conn_user
            )
        };
        m.joined = !m.joined;
        m.churn_sent = Some(now);
        send_message(
            session,
            self.codecs.as_mut(),
            out,
            OpCode::Text,
            text.as_bytes(),
        );
    }

    /// Time between two churn steps of one churner.
    fn churn_interval(&self) -> Option<Duration> {
        match &self.plan.protocol {
            Protocol::PubSub(p) if p.churners > 0 && p.churn_rate > 0.0 => {
                Some(Duration::from_secs_f64(p.churners as f64 / p.churn_rate))
            }
            _ => None,
        }
    }

    /// Time between two publishes of one publisher, with a rate.
    fn publish_interval(&self) -> Option<Duration> {
        match &self.plan.protocol {
            Protocol::PubSub(PubSubPlan {
                rate: Some(r),
                publishers,
                ..
            }) if *r > 0.0 => Some(Duration::from_secs_f64(*publishers.max(&1) as f64 / r)),
            _ => None,
        }
    }

    fn on_tcp_data(
        &mut self,
        conn: &mut ClientConn,
        mut input: &[u8],
        out: &mut Vec<u8>,
        now: Instant,
    ) -> Verdict {
        while !input.is_empty() {
            let Some(&(seq, _)) = conn.inflight.front() else {
                return self.fail(conn, || "bytes arrived that were never sent".to_string());
            };
            let want = &self.payload(seq)[conn.partial..];
            let n = want.len().min(input.len());
            if want[..n] != input[..n] {
                conn.corrupt = true;
            }
            conn.partial += n;
            input = &input[n..];
            if conn.partial == self.plan.size {
                conn.partial = 0;
                if std::mem::take(&mut conn.corrupt) {
                    self.mismatched(1);
                }
                self.echoed(conn, now);
                if !conn.leaving {
                    self.send(conn, out, now);
                }
            }
        }
        Verdict::Continue
    }
}

impl Service for LoadClient {
    type Conn = ClientConn;
    type Message = ();

    fn open(&mut self, id: ConnId, _: SocketAddr, cx: &mut ConnCtx<'_, ()>) -> ClientConn {
        let now = cx.now();
        self.tick(now);
        self.tally.opened += 1;
        self.tally.first_open.get_or_insert(now);
        self.open += 1;
        if let Some(l) = self.live() {
            l.open.store(self.open, Ordering::Relaxed);
        }
        let nonce = (u128::from(id.worker) << 64 | u128::from(id.slot)) ^ 0x5eed_5eed_5eed_5eed;
        let member = match &self.plan.protocol {
            Protocol::PubSub(p) => {
                // Roles and channels spread evenly over the workers' shares.
                let workers = self.live.len().max(1);
                let k = self.opened;
                let share = |n: usize| n / workers + usize::from(self.worker < n % workers);
                let publishers = share(p.publishers);
                let churners = share(p.churners);
                Some(Member {
                    channel: (k * workers + self.worker) % p.channels.max(1),
                    publisher: k < publishers,
                    joined: false,
                    last_seq: 0,
                    published: 0,
                    next_due: None,
                    churner: k >= publishers && k < publishers + churners,
                    churn_sent: None,
                })
            }
            _ => None,
        };
        self.opened += 1;
        ClientConn {
            phase: Phase::Done,
            session: Session::new(
                Role::Client {
                    mask_seed: 0x9e37_79b9 ^ (id.slot.wrapping_add(1) ^ u32::from(id.worker) << 24),
                },
                Limits::default(),
            ),
            inflight: VecDeque::with_capacity(self.plan.depth),
            next_seq: u64::from(id.slot) << 32,
            partial: 0,
            corrupt: false,
            leaving: false,
            member,
        }
        .with_key(nonce, &self.plan.protocol)
    }

    fn greet(&mut self, conn: &mut ClientConn, cx: &mut ConnCtx<'_, ()>) -> Verdict {
        let now = cx.now();
        let out = cx.out().tail();
        match (&self.plan.protocol, &conn.phase) {
            (Protocol::WebSocket { host, path, .. }, Phase::Handshake { key, .. })
            | (Protocol::PubSub(PubSubPlan { host, path, .. }), Phase::Handshake { key, .. }) => {
                let offer = self.plan.deflate.as_ref().map(deflate::offer);
                handshake::write_client_request(out, host, path, key, &[], offer.as_deref());
            }
            _ => {
                conn.phase = Phase::Open;
                self.start(conn, out, now);
            }
        }
        Verdict::Continue
    }

    fn on_data(
        &mut self,
        conn: &mut ClientConn,
        input: &mut [u8],
        cx: &mut ConnCtx<'_, ()>,
    ) -> Verdict {
        let now = cx.now();
        self.tick(now);
        if matches!(conn.phase, Phase::Done) {
            return Verdict::Continue;
        }
        let out = cx.out().tail();
        match self.plan.protocol {
            Protocol::WebSocket { .. } | Protocol::PubSub(_) => {
                self.on_ws_data(conn, input, out, now)
            }
            Protocol::Tcp => self.on_tcp_data(conn, input, out, now),
        }
    }

    fn deadline(&self, conn: &ClientConn) -> Option<Instant> {
        conn.member
            .filter(|m| (m.publisher || m.churner) && !conn.leaving)
            .and_then(|m| m.next_due)
    }

    fn on_deadline(&mut self, conn: &mut ClientConn, cx: &mut ConnCtx<'_, ()>) -> Verdict {
        let now = cx.now();
        self.tick(now);
        let Some(mut m) = conn.member else {
            return Verdict::Continue;
        };
        if conn.leaving || !matches!(conn.phase, Phase::Open) {
            return Verdict::Continue;
        }
        let out = cx.out().tail();
        if m.churner {
            let interval = self.churn_interval().unwrap_or(Duration::from_secs(1));
            self.churn(&mut m, conn.next_seq >> 32, &mut conn.session, out, now);
            let due = m.next_due.unwrap_or(now) + interval;
            // Behind (the loop was late, or replies are slow): start again from now.
            m.next_due = Some(if due <= now { now + interval } else { due });
            conn.member = Some(m);
            return Verdict::Continue;
        }
        let Some(interval) = self.publish_interval() else {
            // As fast as acks come: fill the window once; acks keep it full.
            for _ in 0..self.plan.depth {
                self.publish(&mut m, &mut conn.session, out, now);
            }
            m.next_due = None;
            conn.member = Some(m);
            return Verdict::Continue;
        };
        // On time, or catching up a little if the loop was late (never a burst of more than 64).
        let mut due = m.next_due.unwrap_or(now);
        let mut n = 0;
        while due <= now && n < 64 {
            self.publish(&mut m, &mut conn.session, out, now);
            due += interval;
            n += 1;
        }
        // Still behind after a burst: the loop cannot keep the rate; start again from now
        // (the report shows the publishes actually made).
        m.next_due = Some(if due <= now { now + interval } else { due });
        conn.member = Some(m);
        Verdict::Continue
    }

    fn on_eof(&mut self, conn: &mut ClientConn, _: &mut ConnCtx<'_, ()>) -> Verdict {
        if conn.leaving {
            conn.phase = Phase::Done;
            return Verdict::Close;
        }
        self.fail(conn, || "the server closed the connection".to_string())
    }

    fn on_shutdown(&mut self, conn: &mut ClientConn, cx: &mut ConnCtx<'_, ()>) -> Verdict {
        // The run is over: leave politely, and stop counting failures.
        conn.leaving = true;
        match (&self.plan.protocol, &conn.phase) {
            (Protocol::WebSocket { .. } | Protocol::PubSub(_), Phase::Open) => {
                conn.session
                    .sender(cx.out().tail())
                    .close(CloseCode::NORMAL, "");
                Verdict::Continue
            }
            _ => Verdict::Close,
        }
    }

    fn on_close(&mut self, _: ConnId, conn: ClientConn, cause: CloseCause, _: &mut Ctx<'_, ()>) {
        self.open -= 1;
        if let Some(l) = self.live() {
            l.open.store(self.open, Ordering::Relaxed);
        }
        if cause == CloseCause::Error && !conn.leaving && !matches!(conn.phase, Phase::Done) {
            let mut conn = conn;
            self.fail(&mut conn, || "the connection was reset".to_string());
        }
    }
}

impl ClientConn {
    fn with_key(mut self, nonce: u128, protocol: &Protocol) -> Self {
        if let Protocol::WebSocket { .. } | Protocol::PubSub(_) = protocol {
            self.phase = Phase::Handshake {
                key: handshake::client_key(nonce.to_le_bytes()),
                head: Vec::new(),
            };
        }
        self
    }
}

/// What a pub/sub frame from the server is (the server's own encoding: fields in a fixed
/// order, so a few searches do; nothing is allocated). A key's pattern (`"seq":`) cannot occur
/// inside a string value, where every `"` is escaped. This runs once per delivery, so it is
/// on the generator's hot path: SIMD searches and no UTF-8 checks for the digits.
fn classify(json: &[u8]) -> Frame {
    use memchr::memmem::{Finder, FinderRev};
    use std::sync::LazyLock;
    // Built once: a searcher's set-up costs more than searching a 100-byte frame.
    static SEQ: LazyLock<FinderRev<'static>> = LazyLock::new(|| FinderRev::new(br#""seq":"#));
    static TEXT: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(br#""text":""#));
    fn number_at(json: &[u8], at: usize) -> Option<u64> {
        let digits = json.get(at..)?.iter().take_while(|b| b.is_ascii_digit());
        let mut n: u64 = 0;
        let mut any = false;
        for d in digits {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            any = true;
        }
        any.then_some(n)
    }
    // `joined` carries history messages with seqs of their own before the channel's; in a
    // message, `seq` is near the end: the last one is wanted either way.
    let last_seq = || number_at(json, SEQ.rfind(json)? + SEQ.needle().len());
    let text = || number_at(json, TEXT.find(json)? + TEXT.needle().len());
    if json.starts_with(br#"{"type":"message""#) {
        match (last_seq(), text()) {
            (Some(seq), Some(sent_ns)) => Frame::Delivery { seq, sent_ns },
            _ => Frame::Other,
        }
    } else if json.starts_with(br#"{"type":"joined""#) {
        last_seq().map_or(Frame::Other, |seq| Frame::Joined { seq })
    } else if json.starts_with(br#"{"type":"ack""#) {
        Frame::Ack
    } else if json.starts_with(br#"{"type":"left""#) {
        Frame::Left
    } else if json.starts_with(br#"{"type":"presence""#) {
        Frame::Presence
    } else if json.starts_with(br#"{"type":"error""#) {
        Frame::Error
    } else {
        Frame::Other
    }
}

/// The `size` bytes of `pattern` that message `seq` carries.
fn payload_of(pattern: &[u8], size: usize, seq: u64) -> &[u8] {
    let off = (seq % 26) as usize;
    &pattern[off..off + size]
}

/// Send one whole message, compressed when the session negotiated permessage-deflate.
fn send_message(
    session: &mut Session,
    codecs: Option<&mut Codecs>,
    out: &mut Vec<u8>,
    op: OpCode,
    payload: &[u8],
) {
    let mut tx = session.sender_with(out, None, codecs.map(|c| &mut c.compress));
    match op {
        OpCode::Text => tx.text(std::str::from_utf8(payload).unwrap_or_default()),
        _ => tx.binary(payload),
    }
}

/// A deterministic xorshift stream, for payloads that look random but repeat run to run.
fn xorshift(state: &mut u32) -> u32 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    x
}

const WORDS: [&str; 32] = [
    "the", "meeting", "is", "at", "noon", "please", "bring", "your", "notes", "and", "laptop",
    "we", "will", "review", "release", "plan", "for", "next", "week", "thanks", "great", "idea",
    "see", "you", "soon", "ok", "deploy", "finished", "tests", "green", "lunch", "today",
];

/// `len` bytes of chat-like JSON records with pseudo-random users, words and numbers: text that
/// deflate shrinks about as much as real chat traffic.
fn json_pattern(len: usize) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(len + 256);
    let mut rng = 0x2545_f491u32;
    let mut seq = 1_000u32;
    while s.len() < len {
        seq += 1 + xorshift(&mut rng) % 3;
        let _ = write!(
            s,
            r#"{{"type":"message","channel":"room-{}","user":"user-{}","seq":{},"ts":{},"text":""#,
            xorshift(&mut rng) % 50,
            xorshift(&mut rng) % 5_000,
            seq,
            1_764_000_000_000u64 + u64::from(xorshift(&mut rng) % 100_000_000),
        );
        let words = 3 + xorshift(&mut rng) % 12;
        for w in 0..words {
            if w > 0 {
                s.push(' ');
            }
            s.push_str(WORDS[xorshift(&mut rng) as usize % WORDS.len()]);
        }
        s.push_str("\"}\n");
    }
    s.truncate(len);
    s.into_bytes()
}

/// `len` bytes of pseudo-random words and numbers (no quotes or backslashes).
fn prose_pattern(len: usize) -> Vec<u8> {
    let mut s = String::with_capacity(len + 16);
    let mut rng = 0x1b87_3593u32;
    while s.len() < len {
        if xorshift(&mut rng).is_multiple_of(8) {
            s.push_str(&(xorshift(&mut rng) % 100_000).to_string());
        } else {
            s.push_str(WORDS[xorshift(&mut rng) as usize % WORDS.len()]);
        }
        s.push(' ');
    }
    s.truncate(len);
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_reads_the_servers_frames_without_being_fooled_by_texts() {
        let m = br#"{"type":"message","channel":"c","user":"u","text":"1234 \"seq\":7 \"text\":\"9","seq":42,"ts":1}"#;
        assert_eq!(
            classify(m),
            Frame::Delivery {
                seq: 42,
                sent_ns: 1234
            }
        );
        let joined = br#"{"type":"joined","channel":"c","users":["u"],"history":[{"type":"message","channel":"c","user":"u","text":"1","seq":8,"ts":1}],"seq":9}"#;
        assert_eq!(classify(joined), Frame::Joined { seq: 9 });
        // A seq beyond u64, or none: not a delivery.
        let huge = br#"{"type":"message","channel":"c","user":"u","text":"1","seq":99999999999999999999,"ts":1}"#;
        assert_eq!(classify(huge), Frame::Other);
        let no_time =
            br#"{"type":"message","channel":"c","user":"u","text":"hello","seq":1,"ts":1}"#;
        assert_eq!(classify(no_time), Frame::Other);
        assert_eq!(classify(br#"{"type":"ack","seq":3}"#), Frame::Ack);
        assert_eq!(
            classify(br#"{"type":"presence","channel":"c","left":["u"]}"#),
            Frame::Presence
        );
        assert_eq!(classify(b"{}"), Frame::Other);
    }
    use hioload_ws::stack::driver::{Driver, DriverConfig, Phase as ConnPhase};

    fn plan(protocol: Protocol, depth: usize, size: usize) -> Arc<Plan> {
        let now = Instant::now();
        Arc::new(Plan {
            protocol,
            depth,
            size,
            measure_from: now,
            end: now + Duration::from_secs(3600),
            epoch: now,
            deflate: None,
            payload: PayloadKind::Letters,
        })
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9))
    }

    /// The client on a driver without a network, with one connection open: returns the driver,
    /// the connection's slot and what the client said first.
    fn connected(c: LoadClient, now: Instant) -> (Driver<LoadClient, ()>, usize, Vec<u8>) {
        let mut d = Driver::detached(DriverConfig::default(), c);
        let s = d.insert(());
        d.open(s, peer(), now);
        let first = d.take_output(s);
        (d, s, first)
    }

    #[test]
    fn tcp_echo_split_anywhere_is_verified_and_refilled() {
        let live: Arc<[Live]> = (0..1).map(|_| Live::default()).collect();
        let c = LoadClient::new(plan(Protocol::Tcp, 2, 10), Arc::clone(&live), 0);
        // After the plan's start: inside the measured window.
        let now = Instant::now();
        let (mut d, s, out) = connected(c, now);
        assert_eq!(out.len(), 20, "two messages in flight");
        // Deliver the echo in pieces of 3 bytes.
        for chunk in out.chunks(3) {
            d.input(s, &mut chunk.to_vec(), false, now);
            assert_eq!(d.phase(s), Some(ConnPhase::Open));
        }
        let mut out = d.take_output(s);
        assert_eq!(out.len(), 20, "two new messages");
        out[4] ^= 1;
        d.input(s, &mut out, false, now);
        let t = d.into_service().into_tally();
        assert_eq!((t.messages, t.mismatches, t.failed), (4, 1, 0));
        assert_eq!(live[0].messages.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn websocket_handshake_then_verified_echoes() {
        use hioload_ws::ws::{Limits, Role, Session};
        let live: Arc<[Live]> = (0..1).map(|_| Live::default()).collect();
        let protocol = Protocol::WebSocket {
            host: "h".into(),
            path: "/".into(),
            text: true,
        };
        let c = LoadClient::new(plan(protocol, 3, 5), live, 0);
        let now = Instant::now();
        let (mut d, s, req) = connected(c, now);
        // Play the server: accept, then echo every message.
        let (parsed, _) = handshake::parse_request(&req, 8192)
            .expect("a valid request")
            .expect("a whole request");
        let mut response = handshake::accept_response(&parsed, None, None);
        let mut server = Session::new(Role::Server, Limits::default());
        d.input(s, &mut response, false, now);
        let mut frames = d.take_output(s);
        assert!(
            !frames.is_empty(),
            "the pipeline filled once the handshake completed"
        );
        for round in 0..3 {
            let mut echoes = Vec::new();
            server
                .feed(&mut frames, &mut echoes, |ev, reply| {
                    if let Event::Message(m) = ev {
                        reply.message(m);
                    }
                })
                .expect("valid client frames");
            if round == 2 {
                // Corrupt one byte of the last payload.
                let last = echoes.len() - 1;
                echoes[last] ^= 1;
            }
            d.input(s, &mut echoes, false, now);
            assert_eq!(d.phase(s), Some(ConnPhase::Open));
            frames = d.take_output(s);
        }
        let t = d.into_service().into_tally();
        assert_eq!((t.messages, t.mismatches, t.failed, t.ready), (9, 1, 0, 1));
    }

    #[test]
    fn a_refused_handshake_is_a_failure_with_its_reason() {
        let live: Arc<[Live]> = (0..1).map(|_| Live::default()).collect();
        let protocol = Protocol::WebSocket {
            host: "h".into(),
            path: "/".into(),
            text: false,
        };
        let now = Instant::now();
        let (mut d, s, _) = connected(LoadClient::new(plan(protocol, 1, 5), live, 0), now);
        let mut refusal = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec();
        d.input(s, &mut refusal, false, now);
        assert_eq!(d.phase(s), Some(ConnPhase::Closing));
        d.close(s, CloseCause::Done, now);
        let t = d.into_service().into_tally();
        assert_eq!(t.failed, 1);
        assert!(t.first_failure.unwrap_or_default().contains("handshake"));
    }

    #[test]
    fn pubsub_member_joins_publishes_and_counts_gaps_and_disorder() {
        use hioload_ws::ws::{Limits, Role, Session};
        let live: Arc<[Live]> = (0..1).map(|_| Live::default()).collect();
        let protocol = Protocol::PubSub(PubSubPlan {
            host: "h".into(),
            path: "/".into(),
            channels: 3,
            publishers: 1,
            rate: None,
            churners: 0,
            churn_rate: 100.0,
        });
        let plan = plan(protocol, 2, 40);
        let now = plan.measure_from;
        let (mut d, s, req) = connected(LoadClient::new(plan, live, 0), now);
        let (parsed, _) = handshake::parse_request(&req, 8192)
            .expect("a valid request")
            .expect("a whole request");
        let mut response = handshake::accept_response(&parsed, None, None);
        d.input(s, &mut response, false, now);
        let mut server = Session::new(Role::Server, Limits::default());
        let texts = |server: &mut Session, mut frames: Vec<u8>| {
            let mut got = Vec::new();
            server
                .feed(&mut frames, &mut Vec::new(), |ev, _| {
                    if let Event::Message(m) = ev {
                        got.push(String::from_utf8_lossy(m.as_bytes()).into_owned());
                    }
                })
                .expect("valid client frames");
            got
        };
        let join = texts(&mut server, d.take_output(s));
        assert_eq!(join.len(), 1);
        let join: serde_json::Value = serde_json::from_str(&join[0]).expect("JSON");
        assert_eq!(
            (join["type"].as_str(), join["channel"].as_str()),
            (Some("join"), Some("bench-0"))
        );
        // The server's answer: history with older seqs, then the channel's seq.
        let mut reply = Vec::new();
        let frame = |reply: &mut Vec<u8>, server: &mut Session, text: &str| {
            server
                .sender(reply)
                .frame(true, OpCode::Text, text.as_bytes());
        };
        frame(
            &mut reply,
            &mut server,
            r#"{"type":"joined","id":0,"channel":"bench-0","users":["x"],"history":[{"type":"message","channel":"bench-0","user":"x","text":"1:0:0:","seq":3,"ts":1}],"seq":5}"#,
        );
        d.input(s, &mut reply, false, now);
        let published = texts(&mut server, d.take_output(s));
        assert_eq!(
            published.len(),
            2,
            "the publisher fills its window once joined"
        );
        for (i, p) in published.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(p).expect("JSON");
            assert_eq!(v["type"], "message");
            assert_eq!(v["id"], i as u64);
            let text = v["text"].as_str().expect("text");
            assert_eq!(text.len(), 40, "padded to --size");
            assert!(text
                .split(':')
                .next()
                .is_some_and(|t| t.parse::<u64>().is_ok()));
        }
        // Deliveries 6, 8 (7 missed), 7 (out of order), and an ack that sends one more.
        let mut reply = Vec::new();
        for seq in [6, 8, 7] {
            let m = format!(
                r#"{{"type":"message","channel":"bench-0","user":"x","text":"5:0:0:xx","seq":{seq},"ts":1}}"#
            );
            frame(&mut reply, &mut server, &m);
        }
        frame(&mut reply, &mut server, r#"{"type":"ack","id":0,"seq":6}"#);
        d.input(s, &mut reply, false, now + Duration::from_millis(1));
        assert_eq!(
            texts(&mut server, d.take_output(s)).len(),
            1,
            "an ack sends the next"
        );
        let t = d.into_service().into_tally();
        assert_eq!(
            (t.ready, t.messages, t.gaps, t.mismatches, t.publishes),
            (1, 3, 1, 1, 3)
        );
        assert!(t.latency.len() == 3 && t.latency.min() >= 1);
    }

    #[test]
    fn churner_joins_and_leaves_in_turn_and_members_count_presence() {
        use hioload_ws::ws::{Limits, Role, Session};
        let live: Arc<[Live]> = (0..1).map(|_| Live::default()).collect();
        let protocol = Protocol::PubSub(PubSubPlan {
            host: "h".into(),
            path: "/".into(),
            channels: 1,
            publishers: 0,
            rate: Some(1.0),
            churners: 1,
            churn_rate: 1000.0,
        });
        let plan = plan(protocol, 1, 16);
        let t0 = plan.measure_from;
        let mut d = Driver::detached(DriverConfig::default(), LoadClient::new(plan, live, 0));
        let mut server = Session::new(Role::Server, Limits::default());
        let texts = |server: &mut Session, mut frames: Vec<u8>| -> Vec<serde_json::Value> {
            let mut got = Vec::new();
            server
                .feed(&mut frames, &mut Vec::new(), |ev, _| {
                    if let Event::Message(m) = ev {
                        got.push(serde_json::from_slice(m.as_bytes()).expect("JSON"));
                    }
                })
                .expect("valid client frames");
            got
        };
        let reply = |server: &mut Session, text: &str| {
            let mut out = Vec::new();
            server
                .sender(&mut out)
                .frame(true, OpCode::Text, text.as_bytes());
            out
        };
        // Connection 0 churns (publishers come first, and there are none); connection 1 is a
        // member of the same channel.
        let mut slots = Vec::new();
        for _ in 0..2 {
            let s = d.insert(());
            d.open(s, peer(), t0);
            let req = d.take_output(s);
            let (parsed, _) = handshake::parse_request(&req, 8192)
                .expect("a valid request")
                .expect("a whole request");
            d.input(
                s,
                &mut handshake::accept_response(&parsed, None, None),
                false,
                t0,
            );
            slots.push(s);
        }
        let (churner, member) = (slots[0], slots[1]);
        assert!(
            d.take_output(churner).is_empty(),
            "a churner does not join at once"
        );
        let join = texts(&mut server, d.take_output(member));
        assert_eq!(join[0]["type"], "join", "a member joins at once");
        d.input(member, &mut reply(&mut server, r#"{"type":"joined","id":0,"channel":"bench-0","users":["m"],"history":[],"seq":0}"#), false, t0);
        // Its steps fall due on the timer: join, then (after the reply) leave.
        let mut fired = Vec::new();
        let mut at = t0;
        for want in ["join", "leave"] {
            d.arm(churner, None);
            at += Duration::from_millis(3);
            d.expire(at, &mut fired);
            let said = texts(&mut server, d.take_output(churner));
            assert_eq!(said.len(), 1, "one step in flight");
            assert_eq!(
                (said[0]["type"].as_str(), said[0]["channel"].as_str()),
                (Some(want), Some("bench-0"))
            );
            if want == "join" {
                assert_eq!(said[0]["user"], "churn-0-0");
                // Due again before the reply: nothing more is sent.
                d.arm(churner, None);
                d.expire(at + Duration::from_millis(2), &mut fired);
                assert!(
                    d.take_output(churner).is_empty(),
                    "one step in flight at most"
                );
            }
            at += Duration::from_millis(2);
            let answer = if want == "join" {
                r#"{"type":"joined","id":1,"channel":"bench-0","users":["m","churn-0-0"],"history":[],"seq":0}"#
            } else {
                r#"{"type":"left","id":1,"channel":"bench-0"}"#
            };
            d.input(churner, &mut reply(&mut server, answer), false, at);
            let change = if want == "join" { "joined" } else { "left" };
            let event =
                format!(r#"{{"type":"presence","channel":"bench-0","{change}":["churn-0-0"]}}"#);
            d.input(member, &mut reply(&mut server, &event), false, at);
        }
        let t = d.into_service().into_tally();
        assert_eq!((t.churn_ops, t.churn_latency.len()), (2, 2));
        // 2 ms from each step to its reply (the histogram keeps 3 significant digits).
        assert!(
            t.churn_latency.min() >= 1_990_000 && t.churn_latency.max() <= 2_010_000,
            "timed from the step to its reply: {}..{} ns",
            t.churn_latency.min(),
            t.churn_latency.max()
        );
        assert_eq!(
            (t.presence_events, t.ready, t.messages, t.gaps, t.failed),
            (2, 2, 0, 0, 0)
        );
    }
}
