//! `WsService` driven without sockets: handshake, timers on a virtual clock, panic recovery.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hioload_ws::broadcast::Broadcast;
use hioload_ws::echo::Echo;
use hioload_ws::handler::{Context, Decision, Handler, WorkerContext};
use hioload_ws::middleware::Recover;
use hioload_ws::stack::driver::{Driver, DriverConfig, Phase};
use hioload_ws::stack::mailbox::{self, Mailbox};
use hioload_ws::stack::{CloseCause, ConnId};
use hioload_ws::ws::deflate::{self, DeflateConfig, DeflateParams};
use hioload_ws::ws::frame::{write_frame, FrameHeader};
use hioload_ws::ws::handshake::Request;
use hioload_ws::ws::{Event, Limits, Message, OpCode, Role, Session};
use hioload_ws::{PreparedFrame, WsConfig, WsService};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\n\r\n";

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

/// A `WsService` on a driver without a network: bytes in, bytes out, time given by the test.
struct Harness<H: Handler> {
    d: Driver<WsService<H>, ()>,
    _mail: Vec<Mailbox<H::Message>>,
}

impl<H: Handler> Harness<H> {
    fn new(handler: H, cfg: WsConfig) -> Self {
        let (posts, mail) = mailbox::mailboxes(16, vec![None]);
        Self {
            d: Driver::new(DriverConfig::default(), WsService::new(handler, cfg), posts),
            _mail: mail,
        }
    }

    /// A connection that has sent `request`; returns its slot.
    fn connect(&mut self, request: &[u8], now: Instant) -> usize {
        let slot = self.d.insert(());
        self.d.open(slot, peer(), now);
        self.feed(slot, request, now);
        slot
    }

    /// A session past its handshake; returns its slot and the 101 answer.
    fn open(&mut self, now: Instant) -> (usize, Vec<u8>) {
        let slot = self.connect(REQUEST, now);
        let out = self.d.take_output(slot);
        assert!(
            out.starts_with(b"HTTP/1.1 101 "),
            "{}",
            String::from_utf8_lossy(&out)
        );
        (slot, out)
    }

    fn feed(&mut self, slot: usize, bytes: &[u8], now: Instant) {
        let mut input = bytes.to_vec();
        self.d.input(slot, &mut input, false, now);
    }

    /// Run the timers due at `at`. Timers work in whole milliseconds and never fire early, so
    /// this runs them at `at` rounded up to the next millisecond, and returns that time.
    fn expire(&mut self, at: Instant) -> Instant {
        let clock = *self.d.clock();
        let now = clock.instant(clock.ceil(at));
        let mut fired = Vec::new();
        self.d.expire(now, &mut fired);
        // As a transport does: re-arm what fired.
        for (slot, _) in fired {
            self.d.arm(slot, None);
        }
        now
    }

    fn closing(&self, slot: usize) -> bool {
        self.d.phase(slot) != Some(Phase::Open)
    }
}

fn masked(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    write_frame(&mut v, true, op, payload, Some([9, 8, 7, 6]));
    v
}

/// Frames the server wrote after its handshake response, decoded as a client would.
fn frames_after_head(out: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let head = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    let mut client = Session::new(Role::Client { mask_seed: 3 }, Limits::default());
    let mut buf = out[head..].to_vec();
    let mut frames = Vec::new();
    client
        .feed(&mut buf, &mut Vec::new(), |ev, _| {
            frames.push(match ev {
                Event::Message(Message::Text(t)) => (OpCode::Text, t.as_bytes().to_vec()),
                Event::Message(Message::Binary(b)) => (OpCode::Binary, b.to_vec()),
                Event::Ping(p) => (OpCode::Ping, p.to_vec()),
                Event::Pong(p) => (OpCode::Pong, p.to_vec()),
                Event::Close(f) => (
                    OpCode::Close,
                    f.map(|f| f.code.0.to_be_bytes().to_vec())
                        .unwrap_or_default(),
                ),
            })
        })
        .expect("server output decodes");
    frames
}

/// Deadlines are kept to the millisecond: due no more than 1 ms before `nominal`, never after.
fn assert_due(deadline: Option<Instant>, nominal: Instant) {
    let d = deadline.expect("a deadline");
    assert!(
        d <= nominal && nominal - d < Duration::from_millis(1),
        "{d:?} vs {nominal:?}"
    );
}

#[test]
fn idle_timeout_sends_close_1001_then_waits_for_the_reply() {
    let cfg = WsConfig {
        idle_timeout: Some(Duration::from_secs(1)),
        ..WsConfig::default()
    };
    let mut h = Harness::new(Echo, cfg.clone());
    let t0 = Instant::now();
    let (s, _) = h.open(t0);
    assert_due(h.d.deadline(s), t0 + Duration::from_secs(1));
    let t1 = h.expire(t0 + Duration::from_secs(1));
    assert_eq!(
        frames_after_head(&h.d.take_output(s)),
        [(OpCode::Close, 1001u16.to_be_bytes().to_vec())]
    );
    assert!(!h.closing(s), "waiting for the peer's close");
    // Now only the close timeout is pending; when it passes the transport is told to close.
    let close_at = t1 + cfg.close_timeout;
    assert_due(h.d.deadline(s), close_at);
    h.expire(close_at);
    assert!(h.closing(s));
}

#[test]
fn handshake_timeout_closes() {
    let mut h = Harness::new(Echo, WsConfig::default());
    let t0 = Instant::now();
    let s = h.connect(&REQUEST[..10], t0);
    assert!(!h.closing(s));
    let due = h.d.deadline(s).expect("handshake deadline");
    assert_due(Some(due), t0 + Duration::from_secs(5));
    h.expire(due);
    assert!(h.closing(s));
    assert!(h.d.take_output(s).is_empty());
}

#[test]
fn pings_then_close_after_two_missed_pongs() {
    let cfg = WsConfig {
        ping_interval: Some(Duration::from_secs(1)),
        idle_timeout: None,
        ..WsConfig::default()
    };
    let mut h = Harness::new(Echo, cfg);
    let t0 = Instant::now();
    let (s, _) = h.open(t0);
    let mut t = t0;
    let mut out = Vec::new();
    for _ in 0..2 {
        t += Duration::from_secs(1);
        assert_due(h.d.deadline(s), t);
        t = h.expire(t);
        assert!(!h.closing(s));
        out.extend(h.d.take_output(s));
    }
    t += Duration::from_secs(1);
    h.expire(t);
    assert!(h.closing(s), "no close timeout for a dead peer");
    out.extend(h.d.take_output(s));
    let frames = frames_after_head(&out);
    assert_eq!(frames.iter().filter(|f| f.0 == OpCode::Ping).count(), 2);
    assert_eq!(
        frames.last(),
        Some(&(OpCode::Close, 1001u16.to_be_bytes().to_vec()))
    );
}

#[test]
fn pong_keeps_the_session_alive() {
    let cfg = WsConfig {
        ping_interval: Some(Duration::from_secs(1)),
        idle_timeout: None,
        ..WsConfig::default()
    };
    let mut h = Harness::new(Echo, cfg);
    let t0 = Instant::now();
    let (s, _) = h.open(t0);
    let mut out = Vec::new();
    for i in 1..=5u64 {
        let t = t0 + Duration::from_secs(i);
        h.expire(t);
        h.feed(s, &masked(OpCode::Pong, b""), t + Duration::from_millis(2));
        assert!(!h.closing(s));
        out.extend(h.d.take_output(s));
    }
    let frames = frames_after_head(&out);
    assert_eq!(frames.len(), 5);
    assert!(frames.iter().all(|f| f.0 == OpCode::Ping));
}

#[test]
fn shutdown_sends_1001_and_the_reply_completes_the_close() {
    let mut h = Harness::new(Echo, WsConfig::default());
    let t0 = Instant::now();
    let (s, _) = h.open(t0);
    h.d.shutdown(t0);
    assert!(!h.closing(s), "waits for the peer's close frame");
    h.feed(s, &masked(OpCode::Close, &1001u16.to_be_bytes()), t0);
    assert!(h.closing(s));
    assert_eq!(
        frames_after_head(&h.d.take_output(s)),
        [(OpCode::Close, 1001u16.to_be_bytes().to_vec())]
    );
}

struct Panicky;

impl Handler for Panicky {
    type Message = ();
    fn on_message(&mut self, _conn: ConnId, message: Message<'_>, cx: &mut Context<'_, ()>) {
        if message.as_bytes() == b"boom" {
            panic!("handler bug");
        }
        cx.reply(message);
    }
}

#[test]
fn panicking_handler_closes_only_its_session_with_1011() {
    let mut h = Harness::new(Recover::new(Panicky), WsConfig::default());
    let t0 = Instant::now();
    let (a, _) = h.open(t0);
    let (b, _) = h.open(t0);
    h.feed(a, &masked(OpCode::Text, b"boom"), t0);
    assert_eq!(
        frames_after_head(&h.d.take_output(a)),
        [(OpCode::Close, 1011u16.to_be_bytes().to_vec())]
    );
    h.feed(b, &masked(OpCode::Text, b"fine"), t0);
    assert_eq!(
        frames_after_head(&h.d.take_output(b)),
        [(OpCode::Text, b"fine".to_vec())]
    );
}

struct Picky;

impl Handler for Picky {
    type Message = ();
    fn on_open(&mut self, _conn: ConnId, request: &Request<'_>) -> Decision {
        match request.origin {
            Some("https://evil.example") => Decision::Reject {
                status: 403,
                reason: "origin not allowed",
            },
            _ => Decision::Accept {
                protocol: request.protocols.last().map(|p| p.to_string()),
            },
        }
    }
    fn on_message(&mut self, _conn: ConnId, _message: Message<'_>, _cx: &mut Context<'_, ()>) {}
}

#[test]
fn origin_policy_and_subprotocol_hooks() {
    let mut h = Harness::new(Picky, WsConfig::default());
    let t0 = Instant::now();
    let (_, out) = h.open(t0);
    assert!(String::from_utf8_lossy(&out).contains("Sec-WebSocket-Protocol: b\r\n"));
    let req = String::from_utf8_lossy(REQUEST)
        .replace("\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n");
    let s = h.connect(req.as_bytes(), t0);
    assert!(h.closing(s));
    let out = h.d.take_output(s);
    assert!(
        out.starts_with(b"HTTP/1.1 403 Forbidden\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn eof_without_close_is_reported_to_the_handler() {
    struct Watch(Vec<Option<u16>>);
    impl Handler for Watch {
        type Message = ();
        fn on_message(&mut self, _: ConnId, _: Message<'_>, _: &mut Context<'_, ()>) {}
        fn on_close(
            &mut self,
            _: ConnId,
            code: Option<hioload_ws::ws::CloseCode>,
            _: &mut WorkerContext<'_, ()>,
        ) {
            self.0.push(code.map(|c| c.0));
        }
    }
    let mut h = Harness::new(Watch(Vec::new()), WsConfig::default());
    let t0 = Instant::now();
    let (s, _) = h.open(t0);
    h.d.eof(s, t0);
    assert!(h.closing(s));
    h.d.close(s, CloseCause::Done, t0);
    assert_eq!(h.d.service().handler().0, [None]);
}

/// Relays every message to every session of its worker it knows (the sender included), as one
/// prepared frame; sessions are known from `on_ready` to `on_close`.
#[derive(Default)]
struct Relay {
    sessions: Vec<ConnId>,
    frames: Vec<PreparedFrame>,
}

impl Handler for Relay {
    type Message = ();
    fn on_ready(&mut self, conn: ConnId, _: &mut Context<'_, ()>) {
        self.sessions.push(conn);
    }
    fn on_message(&mut self, _: ConnId, message: Message<'_>, cx: &mut Context<'_, ()>) {
        let frame = PreparedFrame::message(message);
        let f = cx.broadcast(&self.sessions, &frame);
        assert_eq!(f.queued, self.sessions.len());
        self.frames.push(frame);
    }
    fn on_close(
        &mut self,
        conn: ConnId,
        _: Option<hioload_ws::ws::CloseCode>,
        _: &mut WorkerContext<'_, ()>,
    ) {
        self.sessions.retain(|c| *c != conn);
    }
}

#[test]
fn a_prepared_frame_written_to_10000_sessions_is_encoded_once() {
    let mut h = Harness::new(Relay::default(), WsConfig::default());
    let t0 = Instant::now();
    let slots: Vec<usize> = (0..10_000).map(|_| h.open(t0).0).collect();
    h.feed(slots[17], &masked(OpCode::Text, b"to everyone"), t0);
    let frame = h.d.service().handler().frames[0].clone();
    assert_eq!(
        frame.bytes().holders(),
        10_002,
        "every output holds the one encoding (the handler and this test keep it too)"
    );
    let first = frame.bytes().as_bytes().as_ptr();
    for &s in &slots {
        assert_eq!(h.d.unsent(s), frame.len());
        let (_, out) = h.d.output(s).expect("open");
        assert_eq!(out.front(&[]).as_ptr(), first, "referenced, not copied");
    }
    for &s in slots.iter().step_by(997) {
        assert_eq!(
            frames_after_head(&h.d.take_output(s)),
            [(OpCode::Text, b"to everyone".to_vec())]
        );
    }
    // A closed session's id is stale: the next broadcast skips it and its slot's next owner.
    h.d.close(slots[3], CloseCause::Done, t0);
    let (reused, _) = h.open(t0);
    assert_eq!(reused, slots[3], "the slot is reused");
    h.feed(slots[0], &masked(OpCode::Binary, b"again"), t0);
    assert_eq!(
        frames_after_head(&h.d.take_output(reused)),
        [(OpCode::Binary, b"again".to_vec())],
        "the new session gets it once, as itself"
    );
    assert_eq!(
        h.d.stats().pushes.stale,
        0,
        "the handler forgot the closed one"
    );
}

/// An upgrade request offering `extensions`.
fn request_offering(extensions: &str) -> Vec<u8> {
    let plain = String::from_utf8_lossy(REQUEST);
    plain
        .replace(
            "\r\n\r\n",
            &format!("\r\nSec-WebSocket-Extensions: {extensions}\r\n\r\n"),
        )
        .into_bytes()
}

/// The frames a server wrote (after its head, if any): each one's first byte, and the messages
/// as a client with `params` decodes them.
fn decode_as_client(out: &[u8], params: Option<DeflateParams>) -> (Vec<u8>, Vec<String>) {
    let head = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |p| p + 4);
    let mut firsts = Vec::new();
    let mut rest = &out[head..];
    while let Ok(Some((h, n))) = FrameHeader::parse(rest) {
        firsts.push(rest[0]);
        rest = &rest[n + h.len as usize..];
    }
    let mut client = Session::new(Role::Client { mask_seed: 5 }, Limits::default());
    if let Some(p) = params {
        client.set_deflate(p);
    }
    let mut texts = Vec::new();
    let mut buf = out[head..].to_vec();
    client
        .feed(&mut buf, &mut Vec::new(), |ev, _| {
            if let Event::Message(m) = ev {
                texts.push(String::from_utf8_lossy(m.as_bytes()).into_owned());
            }
        })
        .expect("server output decodes");
    (firsts, texts)
}

fn chat(n: usize) -> String {
    let mut s = String::new();
    let mut i = 0u32;
    while s.len() < n {
        i += 1;
        s.push_str(&format!(
            "{{\"type\":\"message\",\"user\":\"u{}\",\"text\":\"hello number {i}\"}}",
            i % 9
        ));
    }
    s.truncate(n);
    s
}

#[test]
fn each_session_takes_its_own_encoding_of_a_deflated_broadcast() {
    let config = DeflateConfig::default();
    let mut h = Harness::new(Broadcast::new(Some(&config)), WsConfig::default());
    let t0 = Instant::now();
    let offers = [
        Some("permessage-deflate; client_max_window_bits"),
        Some("permessage-deflate; server_max_window_bits=10"),
        None,
    ];
    let mut sessions = Vec::new();
    for offer in offers {
        let request = offer.map_or(REQUEST.to_vec(), request_offering);
        let slot = h.connect(&request, t0);
        let head = String::from_utf8(h.d.take_output(slot)).expect("ASCII head");
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        let answer = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
            .map(str::to_owned);
        assert_eq!(answer.is_some(), offer.is_some(), "{head}");
        let params = answer.map(|a| {
            deflate::accept(
                &a,
                &DeflateConfig {
                    server_window_bits: if offer.is_some_and(|o| o.contains("=10")) {
                        10
                    } else {
                        15
                    },
                    ..DeflateConfig::default()
                },
            )
            .expect("a valid answer")
        });
        sessions.push((slot, params));
    }
    assert_eq!(h.d.service().tally().deflate_sessions, 2);
    // The plain session sends; then the deflate one sends a compressed message.
    let text = chat(1_000);
    h.feed(sessions[2].0, &masked(OpCode::Text, text.as_bytes()), t0);
    let mut compressed = Vec::new();
    Session::new(Role::Client { mask_seed: 7 }, Limits::default())
        .with_deflate(sessions[0].1.expect("negotiated"))
        .sender(&mut compressed)
        .text(&text);
    assert_eq!(compressed[0], 0xc1, "the client compressed it");
    h.feed(sessions[0].0, &compressed, t0);
    for (i, (slot, params)) in sessions.iter().enumerate() {
        let (firsts, texts) = decode_as_client(&h.d.take_output(*slot), *params);
        assert_eq!(texts, [text.clone(), text.clone()], "session {i}");
        // Only the session with the server's full window takes the shared compressed bytes.
        let expected = if i == 0 { 0xc1 } else { 0x81 };
        assert_eq!(firsts, [expected, expected], "session {i}");
    }
    let d = h.d.service().deflate_stats();
    assert_eq!(d.inflated, 1, "{d:?}");
    assert_eq!(d.inflated_out, 1_000, "{d:?}");
}

#[test]
fn echo_compresses_per_session_and_deflate_off_declines_every_offer() {
    let offer = request_offering("permessage-deflate; client_max_window_bits");
    let text = chat(2_000);
    for takeover in [false, true] {
        let cfg = WsConfig {
            deflate: Some(DeflateConfig {
                server_takeover: takeover,
                ..DeflateConfig::default()
            }),
            ..WsConfig::default()
        };
        let mut h = Harness::new(Echo, cfg);
        let t0 = Instant::now();
        let s = h.connect(&offer, t0);
        let head = String::from_utf8(h.d.take_output(s)).expect("ASCII head");
        let answer = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
            .expect("deflate accepted");
        assert_eq!(answer.contains("server_no_context_takeover"), !takeover);
        let params = deflate::accept(
            answer,
            &DeflateConfig {
                server_takeover: true,
                ..DeflateConfig::default()
            },
        )
        .expect("valid answer");
        for _ in 0..3 {
            h.feed(s, &masked(OpCode::Text, text.as_bytes()), t0);
        }
        let out = h.d.take_output(s);
        let (firsts, texts) = decode_as_client(&out, Some(params));
        assert_eq!(firsts, [0xc1; 3]);
        assert_eq!(texts, [text.clone(), text.clone(), text.clone()]);
        if takeover {
            // With context, the second and third echoes refer to the first.
            assert!(out.len() < 1_000, "{} bytes for 3 echoes", out.len());
        }
    }
    let cfg = WsConfig {
        deflate: None,
        ..WsConfig::default()
    };
    let mut h = Harness::new(Echo, cfg);
    let t0 = Instant::now();
    let s = h.connect(&offer, t0);
    let head = String::from_utf8(h.d.take_output(s)).expect("ASCII head");
    assert!(!head.contains("Sec-WebSocket-Extensions"), "{head}");
    let mut rsv1 = masked(OpCode::Text, b"x");
    rsv1[0] |= 0x40;
    h.feed(s, &rsv1, t0);
    assert_eq!(
        frames_after_head(&h.d.take_output(s)),
        [(OpCode::Close, 1002u16.to_be_bytes().to_vec())]
    );
}
