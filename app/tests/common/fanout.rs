//! A client for the `broadcast` mode, run by the stack's kernel dialer: `n` WebSocket sessions;
//! once every one of them is open, the senders each send `k` messages, and every session checks
//! that it receives each sender's messages exactly once and in the order sent.
//!
//! The client starts the senders with the push API itself: the session whose handshake completes
//! last writes the senders' first messages to every sender's connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hioload_ws::stack::kernel::dialer::{self, DialConfig, DialReport};
use hioload_ws::stack::meter::{WorkerMeter, WorkerRecorder};
use hioload_ws::stack::{CloseCause, ConnCtx, ConnId, Ctx, Service, Verdict};
use hioload_ws::ws::frame::write_frame;
use hioload_ws::ws::handshake;
use hioload_ws::ws::{CloseCode, Event, Limits, Message, OpCode, Role, Session};

/// What to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Sessions.
    pub sessions: usize,
    /// The sessions that send (by index in opening order).
    pub senders: Vec<usize>,
    /// Messages each sender sends.
    pub messages: usize,
    /// Bytes of each message (at least enough for its "sender:seq" label).
    pub size: usize,
    /// Messages in flight at most: sent, and not yet received by every session; `None`: all at
    /// once. A broadcast drops what a session too far behind cannot take, so a test whose
    /// sessions must all get everything paces its senders by the slowest session.
    pub window: Option<usize>,
}

/// What the sessions saw.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    /// Sessions whose handshake completed.
    pub ready: usize,
    /// Messages received, per session.
    pub received: Vec<u64>,
    /// Messages that arrived twice, out of order, from no sender, or corrupted.
    pub errors: u64,
    /// The first error, described.
    pub first_error: Option<String>,
    /// Sessions that ended before they were done.
    pub failed: u64,
    /// The dialer's report.
    pub dial: Option<DialReport>,
}

struct Client {
    plan: Plan,
    /// Sessions opened so far (gives each its index).
    opened: usize,
    ready: usize,
    /// Connections by index, once open.
    ids: Vec<Option<ConnId>>,
    /// Sessions that have received everything.
    done_sessions: usize,
    /// Messages sent so far, over all senders (round robin).
    sent: usize,
    out: Outcome,
    stop: Arc<AtomicBool>,
    pad: Vec<u8>,
}

struct Conn {
    index: usize,
    session: Session,
    /// The key and the response head so far, until the handshake completes.
    handshake: Option<(String, Vec<u8>)>,
    /// Next expected sequence number per sender.
    next: HashMap<usize, usize>,
    received: u64,
    done: bool,
}

impl Client {
    fn expected(&self) -> u64 {
        (self.plan.senders.len() * self.plan.messages) as u64
    }

    fn error(&mut self, why: String) {
        self.out.errors += 1;
        if self.out.first_error.is_none() {
            self.out.first_error = Some(why);
        }
    }

    /// Message `seq` of sender `sender`, masked, as a client frame.
    fn frame(&self, sender: usize, seq: usize) -> Vec<u8> {
        let mut text = format!("{sender}:{seq}:").into_bytes();
        let fill = self.plan.size.saturating_sub(text.len());
        text.extend_from_slice(&self.pad[..fill]);
        let mut f = Vec::with_capacity(text.len() + 14);
        write_frame(&mut f, true, OpCode::Text, &text, Some([1, 2, 3, 4]));
        f
    }

    /// Send what the window allows now: the senders' next messages, round robin, until as many
    /// are in flight as the window holds (all of them without a window). The last session to
    /// be ready and every receiving session call this, so it writes to the senders' connections
    /// by pushing.
    fn send_more(&mut self, cx: &mut ConnCtx<'_, ()>) {
        if self.ready < self.plan.sessions {
            return; // not everyone is listening yet
        }
        let total = self.plan.senders.len() * self.plan.messages;
        let allowed = match self.plan.window {
            Some(w) => {
                let slowest = self.out.received.iter().copied().min().unwrap_or(0) as usize;
                (slowest + w).min(total)
            }
            None => total,
        };
        while self.sent < allowed {
            let s = self.plan.senders[self.sent % self.plan.senders.len()];
            let seq = self.sent / self.plan.senders.len();
            self.sent += 1;
            let Some(id) = self.ids[s] else { continue };
            let f = self.frame(s, seq);
            if let Err(e) = cx.push_bytes(id, &f) {
                self.error(format!("cannot send from sender {s}: {e}"));
            }
        }
    }

    /// Check one received message.
    fn receive(&mut self, conn: &mut Conn, text: &str) {
        let mut parts = text.splitn(3, ':');
        let (Some(s), Some(q), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            return self.error(format!("session {}: malformed {text:.40}", conn.index));
        };
        let (Ok(sender), Ok(seq)) = (s.parse::<usize>(), q.parse::<usize>()) else {
            return self.error(format!("session {}: malformed {text:.40}", conn.index));
        };
        if !self.plan.senders.contains(&sender) {
            return self.error(format!("session {}: from no sender: {sender}", conn.index));
        }
        if rest.len() != self.plan.size.saturating_sub(s.len() + q.len() + 2) {
            return self.error(format!("session {}: {sender}:{seq} is corrupt", conn.index));
        }
        let next = conn.next.entry(sender).or_insert(0);
        if seq != *next {
            let want = *next;
            return self.error(format!(
                "session {}: from sender {sender} got {seq}, expected {want}",
                conn.index
            ));
        }
        *next += 1;
        conn.received += 1;
        self.out.received[conn.index] = conn.received;
        if conn.received == self.expected() && !conn.done {
            conn.done = true;
            self.done_sessions += 1;
            if self.done_sessions == self.plan.sessions {
                self.stop.store(true, Ordering::Relaxed);
            }
        }
    }
}

impl Service for Client {
    type Conn = Conn;
    type Message = ();

    fn open(&mut self, id: ConnId, _: SocketAddr, cx: &mut ConnCtx<'_, ()>) -> Conn {
        let index = self.opened;
        self.opened += 1;
        self.ids[index] = Some(id);
        // The last session to be ready writes to the senders' connections.
        cx.accept_pushes(true);
        let key = handshake::client_key((index as u128 + 1).to_le_bytes());
        handshake::write_client_request(cx.out().tail(), "test", "/fanout", &key, &[], None);
        Conn {
            index,
            session: Session::new(
                Role::Client {
                    mask_seed: index as u32 + 1,
                },
                Limits::default(),
            ),
            handshake: Some((key, Vec::new())),
            next: HashMap::new(),
            received: 0,
            done: false,
        }
    }

    fn on_data(&mut self, conn: &mut Conn, input: &mut [u8], cx: &mut ConnCtx<'_, ()>) -> Verdict {
        let mut rest: Vec<u8>;
        let input: &mut [u8] = if let Some((key, head)) = conn.handshake.as_mut() {
            head.extend_from_slice(input);
            match handshake::parse_response(head, key) {
                Ok(None) => return Verdict::Continue,
                Ok(Some(accepted)) => {
                    rest = head.split_off(accepted.head_len);
                    conn.handshake = None;
                    self.ready += 1;
                    self.out.ready = self.ready;
                    if self.ready == self.plan.sessions {
                        // Everyone is listening: the senders start.
                        self.send_more(cx);
                    }
                    &mut rest
                }
                Err(e) => {
                    self.out.failed += 1;
                    self.error(format!("handshake refused: {e}"));
                    return Verdict::Close;
                }
            }
        } else {
            input
        };
        let mut texts = Vec::new();
        let mut closed = false;
        let result = conn.session.feed(input, cx.out().tail(), |ev, _| match ev {
            Event::Message(Message::Text(t)) => texts.push(t.to_string()),
            Event::Message(Message::Binary(_)) => texts.push(String::from("binary")),
            Event::Close(_) => closed = true,
            Event::Ping(_) | Event::Pong(_) => {}
        });
        for t in texts {
            self.receive(conn, &t);
        }
        if self.plan.window.is_some() {
            self.send_more(cx);
        }
        if let Err(e) = result {
            self.error(format!("session {}: protocol error {e}", conn.index));
            return Verdict::Close;
        }
        if closed && !conn.done {
            self.out.failed += 1;
            self.error(format!(
                "session {}: the server closed it early",
                conn.index
            ));
        }
        if closed {
            Verdict::Close
        } else {
            Verdict::Continue
        }
    }

    fn on_shutdown(&mut self, conn: &mut Conn, cx: &mut ConnCtx<'_, ()>) -> Verdict {
        if conn.handshake.is_some() {
            return Verdict::Close;
        }
        conn.session
            .sender(cx.out().tail())
            .close(CloseCode::NORMAL, "done");
        Verdict::Continue
    }

    fn on_close(&mut self, _: ConnId, conn: Conn, cause: CloseCause, _: &mut Ctx<'_, ()>) {
        if cause == CloseCause::Error && !conn.done {
            self.out.failed += 1;
            self.error(format!("session {}: reset before it was done", conn.index));
        }
    }
}

/// Run `plan` against `server` (a `broadcast` appliance) until every session has everything or
/// `limit` passes.
pub fn run(server: SocketAddr, plan: Plan, limit: Duration) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let client = Client {
        out: Outcome {
            received: vec![0; plan.sessions],
            ..Outcome::default()
        },
        ids: vec![None; plan.sessions],
        opened: 0,
        ready: 0,
        done_sessions: 0,
        sent: 0,
        pad: vec![b'x'; plan.size],
        plan: plan.clone(),
        stop: Arc::clone(&stop),
    };
    let cfg = DialConfig {
        remote: server,
        connections: plan.sessions,
        sources: None,
        max_connecting: 64,
        read_buffer: 64 * 1024,
        busy_poll: false,
        grace: Duration::from_secs(3),
        worker: 0,
    };
    let timer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
            stop.store(true, Ordering::Relaxed);
        })
    };
    let (client, report) = dialer::run(
        &cfg,
        client,
        &stop,
        WorkerRecorder::new(WorkerMeter::for_workers(0), 0),
    );
    let _ = timer.join();
    let mut out = client.out;
    out.dial = Some(report);
    out
}

/// A WebSocket session that completes its handshake and then never reads again, with a small
/// receive buffer so the kernel holds little for it.
pub fn silent_session(server: SocketAddr) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::STREAM,
        None,
    )
    .expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect_timeout(&server.into(), Duration::from_secs(5))
        .expect("connect");
    let mut s: std::net::TcpStream = socket.into();
    let key = handshake::client_key([7; 16]);
    let mut req = Vec::new();
    handshake::write_client_request(&mut req, "test", "/silent", &key, &[], None);
    s.write_all(&req).expect("send the upgrade request");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Read the 101 one byte at a time, so nothing after it is taken off the socket.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("the 101 answer");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// Assert that every session of `out` received every message of `plan`, once and in order.
pub fn assert_complete(plan: &Plan, out: &Outcome) {
    let want = (plan.senders.len() * plan.messages) as u64;
    assert_eq!(out.ready, plan.sessions, "sessions ready; {out:?}");
    assert_eq!(
        (out.errors, out.failed),
        (0, 0),
        "first error: {:?}",
        out.first_error
    );
    let short: Vec<(usize, u64)> = out
        .received
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, n)| *n != want)
        .take(5)
        .collect();
    assert!(
        short.is_empty(),
        "sessions that did not get all {want} messages (index, received): {short:?}"
    );
}
