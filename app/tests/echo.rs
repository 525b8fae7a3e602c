//! The WebSocket echo appliance, driven through real sockets by tungstenite and by raw bytes.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::Appliance;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

fn connect(app: &Appliance) -> Ws {
    let stream = TcpStream::connect(app.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let url = format!("ws://{}/any/path?q=1", app.addr);
    let (ws, resp) = tungstenite::client(url, stream).expect("handshake");
    assert_eq!(resp.status(), 101);
    ws
}

fn expect_close(ws: &mut Ws) -> (CloseCode, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return (f.code, f.reason.to_string()),
            Ok(Message::Close(None)) => panic!("close without code"),
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(other) => panic!("expected close, got {other:?}"),
            Err(e) => panic!("expected close, got error {e}"),
        }
    }
}

/// Send raw bytes, read the answer until the server closes (or 5 s pass).
fn raw_exchange(app: &Appliance, request: &[u8]) -> String {
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn echoes_text_binary_and_large_messages() {
    let app = Appliance::start("echo", &["--workers", "2"]);
    let mut ws = connect(&app);
    ws.send(Message::text("héllo wörld")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("héllo wörld"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i * 31 % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    ws.send(Message::text("")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(""));
    // Pipelined: many messages before reading any.
    for i in 0..500 {
        ws.write(Message::text(format!("m{i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..500 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("m{i}")));
    }
    ws.close(None).unwrap();
    assert!(matches!(ws.read(), Ok(Message::Close(_))));
}

#[test]
fn fragmented_message_with_ping_in_between() {
    let app = Appliance::start("echo", &[]);
    let mut ws = connect(&app);
    ws.write(Message::Frame(Frame::message(
        b"frag".to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .unwrap();
    ws.write(Message::Ping(b"p".to_vec())).unwrap();
    ws.write(Message::Frame(Frame::message(
        b"men".to_vec(),
        OpCode::Data(Data::Continue),
        false,
    )))
    .unwrap();
    ws.write(Message::Frame(Frame::message(
        b"ted".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    ws.flush().unwrap();
    assert_eq!(ws.read().unwrap(), Message::Pong(b"p".to_vec()));
    assert_eq!(ws.read().unwrap(), Message::text("fragmented"));
}

#[test]
fn close_handshake_echoes_code_and_server_closes_tcp() {
    let app = Appliance::start("echo", &[]);
    let mut ws = connect(&app);
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    }))
    .unwrap();
    let (code, _) = expect_close(&mut ws);
    assert_eq!(code, CloseCode::Away);
    // Then the server closes TCP: the next read ends the stream.
    match ws.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected the connection to be closed, got {other:?}"),
    }
}

#[test]
fn message_over_limit_closes_1009() {
    let app = Appliance::start("echo", &["--max-message", "1KiB"]);
    let mut ws = connect(&app);
    ws.send(Message::binary(vec![1u8; 1024])).unwrap();
    assert_eq!(ws.read().unwrap().len(), 1024);
    ws.send(Message::binary(vec![1u8; 1025])).unwrap();
    assert_eq!(expect_close(&mut ws).0, CloseCode::Size);
}

#[test]
fn invalid_utf8_closes_1007_and_protocol_errors_1002() {
    let app = Appliance::start("echo", &[]);
    let mut ws = connect(&app);
    ws.send(Message::Frame(Frame::message(
        vec![0xce, 0xba, 0xff],
        OpCode::Data(Data::Text),
        true,
    )))
    .unwrap();
    assert_eq!(expect_close(&mut ws).0, CloseCode::Invalid);
    let mut ws = connect(&app);
    ws.send(Message::Frame(Frame::message(
        b"x".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    assert_eq!(expect_close(&mut ws).0, CloseCode::Protocol);
}

#[test]
fn unmasked_client_frame_closes_1002() {
    let app = Appliance::start("echo", &[]);
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x02hi",
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let head_end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    assert!(out.starts_with(b"HTTP/1.1 101"));
    assert_eq!(
        &out[head_end..],
        [0x88, 0x02, 0x03, 0xea],
        "close 1002 then TCP close"
    );
}

#[test]
fn handshake_faults_get_http_errors() {
    let app = Appliance::start("echo", &[]);
    let plain = raw_exchange(&app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(plain.starts_with("HTTP/1.1 426 "), "{plain}");
    assert!(plain.contains("Upgrade: websocket\r\n"));
    let base = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let version = raw_exchange(
        &app,
        format!(
            "{base}Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
        )
        .as_bytes(),
    );
    assert!(version.starts_with("HTTP/1.1 426 "), "{version}");
    assert!(version.contains("Sec-WebSocket-Version: 13\r\n"));
    let nokey = raw_exchange(
        &app,
        format!("{base}Sec-WebSocket-Version: 13\r\n\r\n").as_bytes(),
    );
    assert!(
        nokey.starts_with("HTTP/1.1 400 ") && nokey.contains("Sec-WebSocket-Key"),
        "{nokey}"
    );
    let post = raw_exchange(&app, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(post.starts_with("HTTP/1.1 400 "), "{post}");
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(10_000)
    );
    let huge = raw_exchange(&app, huge.as_bytes());
    assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
    let garbage = raw_exchange(
        &app,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n",
    );
    assert!(garbage.starts_with("HTTP/1.1 400 "), "{garbage}");
}

#[test]
fn request_split_across_reads_and_frames_pipelined_with_it() {
    let app = Appliance::start("echo", &[]);
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.write_all(&req[..20]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    // The rest of the request and a masked "hi" in one write.
    let mut rest = req[20..].to_vec();
    rest.extend_from_slice(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2]);
    s.write_all(&rest).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"\x81\x02hi") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
}

#[test]
fn handshake_timeout_closes_silent_connections() {
    let app = Appliance::start("echo", &["--handshake-timeout", "300ms"]);
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n").unwrap(); // and then nothing
    let start = Instant::now();
    let mut buf = [0u8; 64];
    assert_eq!(s.read(&mut buf).expect("EOF, not a timeout"), 0);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[test]
fn idle_timeout_sends_1001() {
    let app = Appliance::start("echo", &["--idle-timeout", "300ms"]);
    let mut ws = connect(&app);
    let start = Instant::now();
    let (code, reason) = expect_close(&mut ws);
    assert_eq!((code, reason.as_str()), (CloseCode::Away, "idle timeout"));
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[test]
fn server_pings_and_closes_after_missed_pongs() {
    let app = Appliance::start("echo", &["--ping-interval", "200ms", "--idle-timeout", "0"]);
    // A client that reads gets pings (tungstenite answers them) and stays connected.
    let mut ws = connect(&app);
    let stream = ws.get_mut();
    stream
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut pings = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                break
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(pings >= 3, "saw {pings} pings");
    // A client that never answers is closed with 1001 after two unanswered pings.
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let close_at = out
        .windows(2)
        .rposition(|w| w == [0x88, 2 + "ping timeout".len() as u8])
        .expect(&text);
    assert_eq!(&out[close_at + 2..close_at + 4], &1001u16.to_be_bytes());
    assert_eq!(
        out.windows(2).filter(|w| *w == [0x89, 0x00]).count(),
        2,
        "two pings before giving up"
    );
}

#[test]
fn sigterm_sends_1001_to_every_session_and_loses_no_echo() {
    let mut app = Appliance::start("echo", &["--workers", "2"]);
    let mut clients: Vec<Ws> = (0..1000).map(|_| connect(&app)).collect();
    common::sigterm_with_messages_in_flight(&app, &mut clients, |ws| {
        let (code, _) = expect_close(ws);
        assert_eq!(code, CloseCode::Away);
        ws.close(None).ok();
        ws.flush().ok();
    });
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)),
        Some(0),
        "log:\n{}",
        app.log_text()
    );
    app.wait_for_log(&[
        "stopped: connections accepted 1000",
        "abandoned at deadline 0",
    ]);
    // New connections are refused once shutdown began.
    assert!(TcpStream::connect(app.addr).is_err());
}

#[test]
fn shutdown_deadline_bounds_the_wait_for_silent_clients() {
    let mut app = Appliance::start(
        "echo",
        &["--shutdown-timeout", "500ms", "--close-timeout", "30s"],
    );
    // A client that completes the handshake and then never reads or answers.
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    app.signal("INT");
    assert_eq!(app.wait_exit(Duration::from_secs(5)), Some(0));
    assert!(start.elapsed() < Duration::from_secs(3));
    app.wait_for_log(&["abandoned at deadline 1"]);
}

#[test]
fn max_connections_refuses_the_excess() {
    let app = Appliance::start("echo", &["--max-connections", "2", "--workers", "1"]);
    let mut a = connect(&app);
    let _b = connect(&app);
    let mut c = TcpStream::connect(app.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c.write_all(b"GET / HTTP/1.1\r\n\r\n");
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("third connection should be closed, got {other:?}"),
    }
    // The first two still work.
    a.send(Message::text("still here")).unwrap();
    assert_eq!(a.read().unwrap(), Message::text("still here"));
}

#[test]
fn shared_accept_mode_spreads_connections_over_workers() {
    let app = Appliance::start(
        "echo",
        &[
            "--accept-mode",
            "shared",
            "--workers",
            "2",
            "--log-level",
            "debug",
        ],
    );
    let mut clients: Vec<Ws> = (0..8).map(|_| connect(&app)).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::binary(vec![i as u8; 100])).unwrap();
        assert_eq!(ws.read().unwrap(), Message::binary(vec![i as u8; 100]));
    }
    // Connection ids are worker.slot; both workers must have handshakes.
    app.wait_for_log(&["conn=0.", "conn=1."]);
}

#[test]
fn client_that_does_not_read_is_throttled_without_hurting_others() {
    let app = Appliance::start("echo", &["--backpressure-limit", "256KiB"]);
    let baseline = app.rss();
    let mut hog = connect(&app);
    hog.get_mut()
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // Write 64 KiB messages and never read the echoes, until the server stops reading from us.
    let payload = vec![7u8; 64 * 1024];
    let mut sent = 0usize;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        match hog.send(Message::binary(payload.clone())) {
            Ok(()) => sent += payload.len(),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                break
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the server kept reading: {sent} bytes accepted"
    );
    // What the server held back is bounded by the limit plus socket buffers, not by what was sent.
    let grown = app.rss().saturating_sub(baseline);
    assert!(
        grown < 16 << 20,
        "server grew by {grown} bytes after the client pushed {sent}"
    );
    // Another client is served promptly meanwhile.
    let mut other = connect(&app);
    let t = Instant::now();
    for i in 0..50 {
        other.send(Message::text(format!("{i}"))).unwrap();
        assert_eq!(other.read().unwrap(), Message::text(format!("{i}")));
    }
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "other client slowed: {:?}",
        t.elapsed()
    );
    // Once the hog reads, it gets every echo back intact.
    hog.get_mut()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut echoed = 0usize;
    while echoed < sent {
        match hog.read().unwrap() {
            Message::Binary(b) => {
                assert!(b.iter().all(|&x| x == 7));
                echoed += b.len();
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(echoed, sent);
}

#[test]
fn idle_server_uses_no_cpu() {
    let app = Appliance::start("echo", &["--workers", "2"]);
    let _ws = connect(&app); // an idle session, with its idle timer armed
    std::thread::sleep(Duration::from_millis(300));
    let before = app.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = app.cpu_ticks() - before;
    // Clock ticks are 10 ms: a polling loop would burn dozens in 2 s.
    assert!(used <= 1, "idle server used {used} ticks of CPU in 2 s");
}

#[test]
fn peer_vanishing_mid_session_is_cleaned_up() {
    let app = Appliance::start("echo", &["--log-level", "debug"]);
    let ws = connect(&app);
    ws.get_ref().shutdown(Shutdown::Both).unwrap();
    drop(ws);
    app.wait_for_log(&["session closed"]);
    // And the server still serves.
    let mut ws = connect(&app);
    ws.send(Message::text("ok")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("ok"));
}
