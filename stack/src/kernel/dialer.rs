//! The client side of the kernel transport: open outgoing connections and drive a [`Service`]
//! over them on the calling thread, with one `mio` poller (the load generator's kernel path).
//!
//! Connects are non-blocking and bounded (`max_connecting` at once), so a server with a full
//! accept queue slows the dialer down instead of being flooded. Each connection can be bound to
//! its own source address, spreading connections over a range (127.0.0.0/8 on loopback) so their
//! number is not capped by one address's ephemeral ports. Service deadlines are not run here:
//! the dialer serves clients that keep no timers.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use crate::meter::{LoopSnapshot, WorkerRecorder};
use crate::service::{CloseCause, ConnId, Service, Verdict};

/// What to dial.
#[derive(Debug, Clone)]
pub struct DialConfig {
    /// The server.
    pub remote: SocketAddr,
    /// Connections to open.
    pub connections: usize,
    /// Source addresses: connection `i` binds to `first + i % count`; `None` lets the OS choose.
    pub sources: Option<(Ipv4Addr, u32)>,
    /// Connects in progress at most.
    pub max_connecting: usize,
    /// Read buffer shared by all connections.
    pub read_buffer: usize,
    /// Poll without sleeping (lowest latency; the thread's core stays busy).
    pub busy_poll: bool,
    /// After `stop`, how long to wait for servers to answer the services' shutdown.
    pub grace: Duration,
    /// Worker index used in connection ids.
    pub worker: u16,
}

/// What a dialer did.
#[derive(Debug, Clone, Default)]
pub struct DialReport {
    /// Connections established.
    pub connected: u64,
    /// Connections that could not be established, with the first reason seen.
    pub connect_failed: u64,
    /// The first connect error, for the user.
    pub first_error: Option<String>,
    /// Connections that ended by reset or I/O error after being established.
    pub errors: u64,
    /// Loop iterations and busy time.
    pub loops: LoopSnapshot,
}

struct Conn<C> {
    stream: TcpStream,
    /// `None` while connecting.
    state: Option<C>,
    out: Vec<u8>,
    out_pos: usize,
    /// The service asked to close: flush, then shut down our side.
    closing: bool,
    eof: bool,
}

/// `EINPROGRESS`: a non-blocking connect has started (std has no stable `ErrorKind` for it).
#[cfg(target_os = "linux")]
const EINPROGRESS: i32 = 115;
#[cfg(not(target_os = "linux"))]
const EINPROGRESS: i32 = 36;

/// Open `cfg.connections` connections and run `service` over them until `stop` is set; then ask
/// the service to shut each down and wait up to `cfg.grace` for the servers to finish.
pub fn run<S: Service>(
    cfg: &DialConfig,
    service: &mut S,
    stop: &AtomicBool,
    mut meter: WorkerRecorder,
) -> DialReport {
    let mut report = DialReport::default();
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            report.first_error = Some(format!("cannot create a poller: {e}"));
            return report;
        }
    };
    let mut conns: Slab<Conn<S::Conn>> = Slab::with_capacity(cfg.connections);
    let mut events = Events::with_capacity(1024);
    let mut rbuf = vec![0u8; cfg.read_buffer.max(4096)];
    let (mut started, mut connecting) = (0usize, 0usize);
    let mut shutdown_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if shutdown_at.is_none() && stop.load(Ordering::Relaxed) {
            shutdown_at = Some(now);
            let slots: Vec<usize> = conns.iter().map(|(s, _)| s).collect();
            for slot in slots {
                let c = &mut conns[slot];
                match c.state.as_mut() {
                    Some(state) => {
                        if service.on_shutdown(state, &mut c.out, now) == Verdict::Close {
                            c.closing = true;
                        }
                        after_output(c);
                    }
                    None => {
                        connecting -= 1;
                        conns.remove(slot);
                    }
                }
            }
        }
        if let Some(t) = shutdown_at {
            if conns.is_empty() || now.duration_since(t) >= cfg.grace {
                break;
            }
        }
        // Start connects, a bounded number at a time.
        while shutdown_at.is_none() && started < cfg.connections && connecting < cfg.max_connecting
        {
            let i = started;
            started += 1;
            match connect(cfg, i) {
                Ok(mut stream) => {
                    let entry = conns.vacant_entry();
                    if let Err(e) = poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        fail(&mut report, format!("cannot register a connection: {e}"));
                        continue;
                    }
                    entry.insert(Conn {
                        stream,
                        state: None,
                        out: Vec::new(),
                        out_pos: 0,
                        closing: false,
                        eof: false,
                    });
                    connecting += 1;
                }
                Err(e) => fail(&mut report, e),
            }
        }
        let timeout = if cfg.busy_poll {
            Duration::ZERO
        } else {
            Duration::from_millis(10)
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                fail(&mut report, format!("poll failed: {e}"));
                break;
            }
        }
        let now = Instant::now();
        for ev in events.iter() {
            let slot = ev.token().0;
            let Some(c) = conns.get_mut(slot) else {
                continue;
            };
            if c.state.is_none() {
                if !(ev.is_writable() || ev.is_error() || ev.is_write_closed()) {
                    continue;
                }
                connecting -= 1;
                let error = match c.stream.take_error() {
                    Ok(Some(e)) | Err(e) => Some(e.to_string()),
                    Ok(None) => c.stream.peer_addr().err().map(|e| e.to_string()),
                };
                if let Some(e) = error {
                    fail(&mut report, format!("connect to {}: {e}", cfg.remote));
                    let mut c = conns.remove(slot);
                    let _ = poll.registry().deregister(&mut c.stream);
                    continue;
                }
                let _ = c.stream.set_nodelay(true);
                report.connected += 1;
                let id = ConnId {
                    worker: cfg.worker,
                    slot: slot as u32,
                };
                let mut state = service.open(id, cfg.remote, now);
                if service.greet(&mut state, &mut c.out, now) == Verdict::Close {
                    c.closing = true;
                }
                c.state = Some(state);
            }
            let mut cause = None;
            if ev.is_readable() || ev.is_read_closed() {
                cause = read(c, service, &mut rbuf, now);
            }
            if cause.is_none() {
                cause = write(c);
            }
            if let Some(cause) = cause.or_else(|| (c.eof && c.closing).then_some(CloseCause::Done))
            {
                if cause == CloseCause::Error {
                    report.errors += 1;
                }
                let mut c = conns.remove(slot);
                let _ = poll.registry().deregister(&mut c.stream);
                if let Some(state) = c.state {
                    service.on_close(state, cause);
                }
            }
        }
        if events.is_empty() {
            meter.idle();
        } else {
            meter.busy(now, Instant::now());
        }
    }
    for (_, c) in conns {
        if let Some(state) = c.state {
            service.on_close(state, CloseCause::Shutdown);
        }
    }
    report.loops = meter.totals();
    report
}

/// Count a failed connection and keep the first reason.
fn fail(report: &mut DialReport, error: String) {
    report.connect_failed += 1;
    if report.first_error.is_none() {
        tracing::warn!(%error, "connection failed");
        report.first_error = Some(error);
    }
}

/// Start a non-blocking connect for connection `i`.
fn connect(cfg: &DialConfig, i: usize) -> Result<TcpStream, String> {
    let socket = Socket::new(
        Domain::for_address(cfg.remote),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(|e| format!("cannot create a socket: {e}"))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("cannot make a socket non-blocking: {e}"))?;
    if let Some((first, count)) = cfg.sources {
        let ip = Ipv4Addr::from(u32::from(first).wrapping_add(i as u32 % count.max(1)));
        socket
            .bind(&SocketAddr::V4(SocketAddrV4::new(ip, 0)).into())
            .map_err(|e| format!("cannot bind to source address {ip}: {e}"))?;
    }
    match socket.connect(&cfg.remote.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) || e.kind() == ErrorKind::WouldBlock => {}
        Err(e) => return Err(format!("connect to {}: {e}", cfg.remote)),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Read everything available and hand it to the service.
fn read<S: Service>(
    c: &mut Conn<S::Conn>,
    service: &mut S,
    rbuf: &mut [u8],
    now: Instant,
) -> Option<CloseCause> {
    let state = c.state.as_mut()?;
    loop {
        match c.stream.read(rbuf) {
            Ok(0) => {
                c.eof = true;
                if service.on_eof(state, &mut c.out, now) == Verdict::Close {
                    c.closing = true;
                }
                return None;
            }
            Ok(n) => {
                if !c.closing
                    && service.on_data(state, &mut rbuf[..n], &mut c.out, now) == Verdict::Close
                {
                    c.closing = true;
                }
                if n < rbuf.len() {
                    return None;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(CloseCause::Error),
        }
    }
}

/// Write what the service produced; shut down our side once a closing connection is flushed.
fn write<C>(c: &mut Conn<C>) -> Option<CloseCause> {
    while c.out_pos < c.out.len() {
        match c.stream.write(&c.out[c.out_pos..]) {
            Ok(n) => c.out_pos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(CloseCause::Error),
        }
    }
    c.out.clear();
    c.out_pos = 0;
    if c.closing {
        let _ = c.stream.shutdown(Shutdown::Write);
    }
    None
}

/// Output was produced outside an event (shutdown): try to send it now.
fn after_output<C>(c: &mut Conn<C>) {
    let _ = write(c);
}
