//! `hioload-ws bench echo`: a WebSocket echo load generator.
//!
//! One thread, one `mio` poller, `--connections` sessions each keeping `--depth` messages in
//! flight. Every echo is compared byte for byte with what was sent (the payload is derived from
//! the message's sequence number, so nothing is stored per message), and its round trip goes into
//! an HDR histogram. Frames are masked as a real client must. Sends are batched: everything a
//! read triggers is written with one `write` per connection.
//!
//! It reports its own CPU time next to the server's, so a run whose generator was saturated can
//! be recognised rather than mistaken for the server's limit.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use hioload_ws::ws::handshake;
use hioload_ws::ws::{Event, Limits, Message, Role, Session};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// What to run.
#[derive(Debug, Clone)]
pub struct EchoLoad {
    /// Server address, Host header and path, from the URL.
    pub addr: SocketAddr,
    /// Host header value.
    pub host: String,
    /// Request path.
    pub path: String,
    /// Sessions.
    pub connections: usize,
    /// Messages in flight per session.
    pub depth: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Send text (ASCII) rather than binary messages.
    pub text: bool,
    /// Measured time.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// Server process to read CPU time from.
    pub server_pid: Option<u32>,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// Messages echoed in the measured window.
    pub messages: u64,
    /// Payload bytes echoed in the window.
    pub bytes: u64,
    /// Length of the window.
    pub seconds: f64,
    /// Echoes that differed from what was sent (over the whole run).
    pub mismatches: u64,
    /// Sessions that failed (connect, handshake, protocol, closed early).
    pub failed_sessions: u64,
    /// Round-trip histogram, nanoseconds.
    pub latency: Histogram<u64>,
    /// Fraction of the window the generator spent handling events rather than polling idly:
    /// near 1.0 means the generator, not the server, may be the limit.
    pub own_busy: f64,
    /// Server RSS growth per open session, bytes, if its PID was given.
    pub server_rss_per_conn: Option<f64>,
    /// Sessions open at the end.
    pub open: usize,
    /// Server CPU seconds in the window, if its PID was given.
    pub server_cpu: Option<f64>,
}

impl Report {
    /// Messages per second.
    pub fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds
    }
}

/// Parse `ws://host:port/path` into address, Host header and path.
pub fn parse_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url.strip_prefix("ws://").ok_or_else(|| {
        format!("--url {url:?} must start with ws:// (wss:// is not supported by the generator)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {authority:?} from --url: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority:?} from --url resolves to no address"))?;
    Ok((addr, authority.to_string(), path.to_string()))
}

/// Payloads of every message: printable ASCII (so text and binary use the same bytes), shifted
/// by the message's sequence number, so an echo from the wrong message or with any byte changed
/// is caught. One buffer serves all: a payload is a slice of it, and checking is a `memcmp`.
struct Payloads {
    pattern: Vec<u8>,
    size: usize,
}

impl Payloads {
    fn new(size: usize) -> Self {
        Self {
            pattern: (0..size + 26).map(|i| b'a' + (i % 26) as u8).collect(),
            size,
        }
    }

    fn get(&self, seq: u64) -> &[u8] {
        let off = (seq % 26) as usize;
        &self.pattern[off..off + self.size]
    }

    fn matches(&self, got: &[u8], seq: u64) -> bool {
        got == self.get(seq)
    }
}

enum Phase {
    Connecting,
    Handshake { key: String, buf: Vec<u8> },
    Open,
    Failed,
}

struct Conn {
    stream: TcpStream,
    phase: Phase,
    session: Session,
    out: Vec<u8>,
    out_pos: usize,
    /// Sequence numbers and send times of the messages in flight, oldest first.
    inflight: VecDeque<(u64, Instant)>,
    next_seq: u64,
}

/// CPU seconds (user + system) of a process, from /proc.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0) // USER_HZ is 100 on Linux
}

/// Resident set size of a process in bytes, from /proc.
pub fn rss_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Run the load; prints a progress line per second to standard error.
pub fn run(load: &EchoLoad) -> Result<Report, String> {
    let mut poll = Poll::new().map_err(|e| format!("cannot create poller: {e}"))?;
    let mut conns = Vec::with_capacity(load.connections);
    let start = Instant::now();
    for i in 0..load.connections {
        let mut stream =
            TcpStream::connect(load.addr).map_err(|e| format!("connect to {}: {e}", load.addr))?;
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register connection: {e}"))?;
        conns.push(Conn {
            stream,
            phase: Phase::Connecting,
            session: Session::new(
                Role::Client {
                    mask_seed: 0x9e37_79b9 ^ (i as u32 + 1),
                },
                Limits::default(),
            ),
            out: Vec::new(),
            out_pos: 0,
            inflight: VecDeque::with_capacity(load.depth),
            next_seq: (i as u64) << 40,
        });
    }
    let mut rbuf = vec![0u8; 256 * 1024];
    let payloads = Payloads::new(load.size);
    let mut events = Events::with_capacity(4096);
    let mut latency =
        Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3).map_err(|e| e.to_string())?;
    let (mut messages, mut mismatches, mut failed) = (0u64, 0u64, 0u64);
    let mut open = 0usize;
    let measure_from = start + load.warmup;
    let end = measure_from + load.duration;
    let mut window: Option<(u64, Option<f64>)> = None; // messages and server CPU at its start
    let server_pid = load.server_pid.map(|p| p.to_string());
    let rss_before = server_pid.as_deref().and_then(rss_bytes);
    let mut busy = Duration::ZERO;
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_progress = (start, 0u64);

    while Instant::now() < end {
        if let Err(e) = poll.poll(&mut events, Some(Duration::ZERO)) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(format!("poll: {e}"));
            }
        }
        let now = Instant::now();
        if window.is_none() && now >= measure_from {
            latency.reset();
            busy = Duration::ZERO;
            window = Some((messages, server_pid.as_deref().and_then(cpu_seconds)));
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let c = &mut conns[i];
            if matches!(c.phase, Phase::Failed) {
                continue;
            }
            if matches!(c.phase, Phase::Connecting) && ev.is_writable() {
                if c.stream.peer_addr().is_err() {
                    c.phase = Phase::Failed;
                    failed += 1;
                    continue;
                }
                let _ = c.stream.set_nodelay(true);
                let key = handshake::client_key((i as u128 ^ 0x5eed_5eed_5eed_5eed).to_le_bytes());
                handshake::write_client_request(&mut c.out, &load.host, &load.path, &key, &[]);
                c.phase = Phase::Handshake {
                    key,
                    buf: Vec::new(),
                };
            }
            if ev.is_readable() {
                loop {
                    let n = match c.stream.read(&mut rbuf) {
                        Ok(0) => {
                            c.phase = Phase::Failed;
                            failed += 1;
                            break;
                        }
                        Ok(n) => n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(_) => {
                            c.phase = Phase::Failed;
                            failed += 1;
                            break;
                        }
                    };
                    let mut frames = &mut rbuf[..n];
                    if let Phase::Handshake { key, buf } = &mut c.phase {
                        buf.extend_from_slice(frames);
                        match handshake::parse_response(buf, key) {
                            Ok(None) => continue,
                            Ok(Some((head, _))) => {
                                let rest = buf.split_off(head);
                                c.phase = Phase::Open;
                                open += 1;
                                // Fill the pipeline.
                                let mut sender = c.session.sender(&mut c.out);
                                for _ in 0..load.depth {
                                    send(&mut sender, payloads.get(c.next_seq), load.text);
                                    c.inflight.push_back((c.next_seq, Instant::now()));
                                    c.next_seq += 1;
                                }
                                if rest.is_empty() {
                                    continue;
                                }
                                rbuf[..rest.len()].copy_from_slice(&rest);
                                frames = &mut rbuf[..rest.len()];
                            }
                            Err(e) => {
                                tracing::warn!(conn = i, error = %e, "handshake failed");
                                c.phase = Phase::Failed;
                                failed += 1;
                                break;
                            }
                        }
                    }
                    let now = Instant::now();
                    let (inflight, next_seq) = (&mut c.inflight, &mut c.next_seq);
                    let result = c.session.feed(frames, &mut c.out, |ev, reply| {
                        if let Event::Message(m) = ev {
                            let Some((seq, sent)) = inflight.pop_front() else {
                                mismatches += 1;
                                return;
                            };
                            let bytes = match m {
                                Message::Text(t) => t.as_bytes(),
                                Message::Binary(b) => b,
                            };
                            if !payloads.matches(bytes, seq) {
                                mismatches += 1;
                            }
                            messages += 1;
                            let _ = latency.record(now.duration_since(sent).as_nanos() as u64);
                            send(reply, payloads.get(*next_seq), load.text);
                            inflight.push_back((*next_seq, now));
                            *next_seq += 1;
                        }
                    });
                    if let Err(e) = result {
                        tracing::warn!(conn = i, error = %e, "protocol error from server");
                        c.phase = Phase::Failed;
                        failed += 1;
                        break;
                    }
                    if n < rbuf.len() {
                        break; // likely drained; the next edge brings more
                    }
                }
            }
            // Write what this event produced (and what a writable event lets through).
            while c.out_pos < c.out.len() && !matches!(c.phase, Phase::Failed) {
                match c.stream.write(&c.out[c.out_pos..]) {
                    Ok(n) => c.out_pos += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.phase = Phase::Failed;
                        failed += 1;
                    }
                }
            }
            if c.out_pos == c.out.len() {
                c.out.clear();
                c.out_pos = 0;
            }
        }
        if !events.is_empty() {
            busy += now.elapsed();
        }
        if now >= next_progress {
            let (t, m) = last_progress;
            let rate = (messages - m) as f64 / now.duration_since(t).as_secs_f64();
            let phase = if now < measure_from {
                "warmup"
            } else {
                "measure"
            };
            eprintln!(
                "bench: {:>5.1}s {phase:<7} {open}/{} open  {rate:>12.0} msg/s  p99 {:>8.1} µs  mismatches {mismatches}  failed {failed}",
                now.duration_since(start).as_secs_f64(),
                load.connections,
                latency.value_at_quantile(0.99) as f64 / 1000.0,
            );
            last_progress = (now, messages);
            next_progress += Duration::from_secs(1);
        }
    }
    let (m0, srv0) = window.ok_or("the run ended before the measured window began")?;
    let server_cpu = match (srv0, server_pid.as_deref().and_then(cpu_seconds)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let measured = messages - m0;
    let server_rss_per_conn = match (rss_before, server_pid.as_deref().and_then(rss_bytes)) {
        (Some(a), Some(b)) if open > 0 => Some((b as f64 - a as f64) / open as f64),
        _ => None,
    };
    Ok(Report {
        messages: measured,
        bytes: measured * load.size as u64,
        seconds: load.duration.as_secs_f64(),
        mismatches,
        failed_sessions: failed,
        latency,
        own_busy: busy.as_secs_f64() / load.duration.as_secs_f64(),
        server_rss_per_conn,
        open,
        server_cpu,
    })
}

fn send(sender: &mut hioload_ws::ws::Sender<'_>, payload: &[u8], text: bool) {
    if text {
        // The payload is ASCII by construction.
        sender.frame(true, hioload_ws::ws::OpCode::Text, payload);
    } else {
        sender.binary(payload);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_check_exactly() {
        let p = Payloads::new(32);
        let mut buf = p.get(77).to_vec();
        assert!(p.matches(&buf, 77));
        assert!(!p.matches(&buf, 78), "an echo of another message");
        assert!(!p.matches(&buf[..31], 77), "a short echo");
        buf[5] ^= 1;
        assert!(!p.matches(&buf, 77), "a changed byte");
        assert!(p.get(0).iter().all(u8::is_ascii_lowercase));
    }

    #[test]
    fn urls() {
        let (addr, host, path) = parse_url("ws://127.0.0.1:9001/x/y").unwrap();
        assert_eq!(
            (addr.port(), host.as_str(), path.as_str()),
            (9001, "127.0.0.1:9001", "/x/y")
        );
        assert_eq!(parse_url("ws://127.0.0.1").unwrap().0.port(), 80);
        assert!(parse_url("http://127.0.0.1/").is_err());
    }
}
