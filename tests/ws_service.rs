//! `WsService` driven without sockets: handshake, timers on a virtual clock, panic recovery.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hioload_ws::echo::Echo;
use hioload_ws::handler::{Decision, Handler};
use hioload_ws::middleware::Recover;
use hioload_ws::stack::{CloseCause, ConnId, Service, Verdict};
use hioload_ws::ws::frame::write_frame;
use hioload_ws::ws::handshake::Request;
use hioload_ws::ws::{Event, Limits, Message, OpCode, Role, Sender, Session};
use hioload_ws::{WsConfig, WsService};

const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: a, b\r\n\r\n";

fn id() -> ConnId {
    ConnId { worker: 0, slot: 7 }
}

fn peer() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
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

fn open<H: Handler>(
    svc: &mut WsService<H>,
    now: Instant,
) -> (hioload_ws::websocket::WsConn, Vec<u8>) {
    let mut conn = svc.open(id(), peer(), now);
    let mut out = Vec::new();
    let mut req = REQUEST.to_vec();
    assert_eq!(
        svc.on_data(&mut conn, &mut req, &mut out, now),
        Verdict::Continue
    );
    assert!(
        out.starts_with(b"HTTP/1.1 101 "),
        "{}",
        String::from_utf8_lossy(&out)
    );
    (conn, out)
}

#[test]
fn idle_timeout_sends_close_1001_then_waits_for_the_reply() {
    let cfg = WsConfig {
        idle_timeout: Some(Duration::from_secs(1)),
        ..WsConfig::default()
    };
    let mut svc = WsService::new(Echo, cfg.clone());
    let t0 = Instant::now();
    let (mut conn, mut out) = open(&mut svc, t0);
    assert_due(svc.deadline(&conn), t0 + Duration::from_secs(1));
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(svc.on_deadline(&mut conn, &mut out, t1), Verdict::Continue);
    assert_eq!(
        frames_after_head(&out),
        [(OpCode::Close, 1001u16.to_be_bytes().to_vec())]
    );
    // Now only the close timeout is pending; when it passes the transport is told to close.
    let close_at = t1 + cfg.close_timeout;
    assert_due(svc.deadline(&conn), close_at);
    assert_eq!(
        svc.on_deadline(&mut conn, &mut out, close_at),
        Verdict::Close
    );
}

#[test]
fn handshake_timeout_closes() {
    let mut svc = WsService::new(Echo, WsConfig::default());
    let t0 = Instant::now();
    let mut conn = svc.open(id(), peer(), t0);
    let mut out = Vec::new();
    let mut part = REQUEST[..10].to_vec();
    assert_eq!(
        svc.on_data(&mut conn, &mut part, &mut out, t0),
        Verdict::Continue
    );
    let due = svc.deadline(&conn).expect("handshake deadline");
    assert_due(Some(due), t0 + Duration::from_secs(5));
    assert_eq!(svc.on_deadline(&mut conn, &mut out, due), Verdict::Close);
    assert!(out.is_empty());
}

#[test]
fn pings_then_close_after_two_missed_pongs() {
    let cfg = WsConfig {
        ping_interval: Some(Duration::from_secs(1)),
        idle_timeout: None,
        ..WsConfig::default()
    };
    let mut svc = WsService::new(Echo, cfg);
    let t0 = Instant::now();
    let (mut conn, mut out) = open(&mut svc, t0);
    let mut t = t0;
    for _ in 0..2 {
        t += Duration::from_secs(1);
        assert_due(svc.deadline(&conn), t);
        assert_eq!(svc.on_deadline(&mut conn, &mut out, t), Verdict::Continue);
    }
    t += Duration::from_secs(1);
    assert_eq!(
        svc.on_deadline(&mut conn, &mut out, t),
        Verdict::Close,
        "no close timeout for a dead peer"
    );
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
    let mut svc = WsService::new(Echo, cfg);
    let t0 = Instant::now();
    let (mut conn, mut out) = open(&mut svc, t0);
    for i in 1..=5u64 {
        let t = t0 + Duration::from_secs(i);
        svc.on_deadline(&mut conn, &mut out, t);
        let mut pong = masked(OpCode::Pong, b"");
        assert_eq!(
            svc.on_data(&mut conn, &mut pong, &mut out, t),
            Verdict::Continue
        );
    }
    assert!(frames_after_head(&out).iter().all(|f| f.0 == OpCode::Ping));
}

#[test]
fn shutdown_sends_1001_and_the_reply_completes_the_close() {
    let mut svc = WsService::new(Echo, WsConfig::default());
    let t0 = Instant::now();
    let (mut conn, mut out) = open(&mut svc, t0);
    assert_eq!(svc.on_shutdown(&mut conn, &mut out, t0), Verdict::Continue);
    let mut reply = masked(OpCode::Close, &1001u16.to_be_bytes());
    assert_eq!(
        svc.on_data(&mut conn, &mut reply, &mut out, t0),
        Verdict::Close
    );
    assert_eq!(
        frames_after_head(&out),
        [(OpCode::Close, 1001u16.to_be_bytes().to_vec())]
    );
}

struct Panicky;

impl Handler for Panicky {
    fn on_message(&mut self, _conn: ConnId, message: Message<'_>, reply: &mut Sender<'_>) {
        if message.as_bytes() == b"boom" {
            panic!("handler bug");
        }
        reply.message(message);
    }
}

#[test]
fn panicking_handler_closes_only_its_session_with_1011() {
    let mut svc = WsService::new(Recover::new(Panicky), WsConfig::default());
    let t0 = Instant::now();
    let (mut a, mut out_a) = open(&mut svc, t0);
    let (mut b, mut out_b) = open(&mut svc, t0);
    let mut boom = masked(OpCode::Text, b"boom");
    assert_eq!(
        svc.on_data(&mut a, &mut boom, &mut out_a, t0),
        Verdict::Continue
    );
    assert_eq!(
        frames_after_head(&out_a),
        [(OpCode::Close, 1011u16.to_be_bytes().to_vec())]
    );
    let mut fine = masked(OpCode::Text, b"fine");
    svc.on_data(&mut b, &mut fine, &mut out_b, t0);
    assert_eq!(
        frames_after_head(&out_b),
        [(OpCode::Text, b"fine".to_vec())]
    );
}

struct Picky;

impl Handler for Picky {
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
    fn on_message(&mut self, _conn: ConnId, _message: Message<'_>, _reply: &mut Sender<'_>) {}
}

#[test]
fn origin_policy_and_subprotocol_hooks() {
    let mut svc = WsService::new(Picky, WsConfig::default());
    let t0 = Instant::now();
    let (_, out) = open(&mut svc, t0);
    assert!(String::from_utf8_lossy(&out).contains("Sec-WebSocket-Protocol: b\r\n"));
    let mut conn = svc.open(id(), peer(), t0);
    let mut out = Vec::new();
    let req = String::from_utf8_lossy(REQUEST)
        .replace("\r\n\r\n", "\r\nOrigin: https://evil.example\r\n\r\n");
    let mut req = req.into_bytes();
    assert_eq!(
        svc.on_data(&mut conn, &mut req, &mut out, t0),
        Verdict::Close
    );
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
        fn on_message(&mut self, _: ConnId, _: Message<'_>, _: &mut Sender<'_>) {}
        fn on_close(&mut self, _: ConnId, code: Option<hioload_ws::ws::CloseCode>) {
            self.0.push(code.map(|c| c.0));
        }
    }
    let mut svc = WsService::new(Watch(Vec::new()), WsConfig::default());
    let t0 = Instant::now();
    let (mut conn, mut out) = open(&mut svc, t0);
    assert_eq!(svc.on_eof(&mut conn, &mut out, t0), Verdict::Close);
    svc.on_close(conn, CloseCause::Done);
    assert_eq!(svc.handler().0, [None]);
}
