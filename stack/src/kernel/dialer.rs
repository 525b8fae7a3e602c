//! The client side of the kernel transport: open outgoing connections and drive a [`Service`]
//! over them on the calling thread, with one `mio` poller (the load generator's kernel path).
//!
//! Connects are non-blocking and bounded (`max_connecting` at once), so a server with a full
//! accept queue slows the dialer down instead of being flooded. Each connection can be bound to
//! its own source address, spreading connections over a range (127.0.0.0/8 on loopback) so their
//! number is not capped by one address's ephemeral ports. Connections run through the same
//! [`Driver`] as a server's: output, closing phases, deadlines.

use std::io::{ErrorKind, Read};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, Socket, Type};

use super::write_output;
use crate::driver::{Driver, DriverConfig, Flushed};
use crate::meter::{LoopSnapshot, WorkerRecorder};
use crate::service::{CloseCause, Service};

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

/// The dialer's part of a connection.
struct Sock {
    stream: TcpStream,
    /// The connect has not completed yet.
    connecting: bool,
}

/// `EINPROGRESS`: a non-blocking connect has started (std has no stable `ErrorKind` for it).
#[cfg(target_os = "linux")]
const EINPROGRESS: i32 = 115;
#[cfg(not(target_os = "linux"))]
const EINPROGRESS: i32 = 36;

/// Open `cfg.connections` connections and run `service` over them until `stop` is set; then ask
/// the service to shut each down and wait up to `cfg.grace` for the servers to finish. Returns
/// the service with the report.
pub fn run<S: Service>(
    cfg: &DialConfig,
    service: S,
    stop: &AtomicBool,
    mut meter: WorkerRecorder,
) -> (S, DialReport) {
    let mut report = DialReport::default();
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            report.first_error = Some(format!("cannot create a poller: {e}"));
            return (service, report);
        }
    };
    let mut d: Driver<S, Sock> = Driver::detached(
        DriverConfig {
            worker: cfg.worker,
            backpressure_limit: usize::MAX,
            close_linger: cfg.grace,
            ..DriverConfig::default()
        },
        service,
    )
    .with_capacity(cfg.connections);
    let mut events = Events::with_capacity(1024);
    let mut rbuf = vec![0u8; cfg.read_buffer.max(4096)];
    let (mut started, mut connecting) = (0usize, 0usize);
    let mut shutdown_at: Option<Instant> = None;
    let mut dirty = Vec::new();
    let mut fired = Vec::new();
    loop {
        let now = Instant::now();
        if shutdown_at.is_none() && stop.load(Ordering::Relaxed) {
            shutdown_at = Some(now);
            for slot in d.slots() {
                if !d.is_open(slot) {
                    connecting -= 1;
                    d.close(slot, CloseCause::Shutdown, now);
                }
            }
            d.shutdown(now);
            flush(&mut d, &mut dirty, &mut report, now);
        }
        if let Some(t) = shutdown_at {
            if d.is_empty() || now.duration_since(t) >= cfg.grace {
                break;
            }
        }
        // Start connects, a bounded number at a time.
        while shutdown_at.is_none() && started < cfg.connections && connecting < cfg.max_connecting
        {
            let i = started;
            started += 1;
            match connect(cfg, i) {
                Ok(stream) => {
                    let slot = d.insert(Sock {
                        stream,
                        connecting: true,
                    });
                    let registered = d.io(slot).map(|s| {
                        poll.registry().register(
                            &mut s.stream,
                            Token(slot),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                    });
                    if let Some(Err(e)) = registered {
                        d.close(slot, CloseCause::Error, now);
                        fail(&mut report, format!("cannot register a connection: {e}"));
                        continue;
                    }
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
            let Some(c) = d.io(slot) else {
                continue;
            };
            if c.connecting {
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
                    if let Some(mut c) = d.close(slot, CloseCause::Error, now) {
                        let _ = poll.registry().deregister(&mut c.stream);
                    }
                    continue;
                }
                let _ = c.stream.set_nodelay(true);
                c.connecting = false;
                report.connected += 1;
                d.open(slot, cfg.remote, now);
            }
            if ev.is_readable() || ev.is_read_closed() {
                if let Err(cause) = read(&mut d, slot, &mut rbuf, now) {
                    if cause == CloseCause::Error {
                        report.errors += 1;
                    }
                    if let Some(mut c) = d.close(slot, cause, now) {
                        let _ = poll.registry().deregister(&mut c.stream);
                    }
                    continue;
                }
            }
            if ev.is_writable() {
                d.mark_dirty(slot);
            }
        }
        d.expire(now, &mut fired);
        for (slot, expired) in fired.drain(..) {
            if expired {
                d.close(slot, CloseCause::Done, now);
            } else {
                d.arm(slot, None);
            }
        }
        d.tick(now);
        flush(&mut d, &mut dirty, &mut report, now);
        if events.is_empty() {
            meter.idle();
        } else {
            meter.busy(now, Instant::now());
        }
    }
    let now = Instant::now();
    for slot in d.slots() {
        d.close(slot, CloseCause::Shutdown, now);
    }
    report.loops = meter.totals();
    (d.into_service(), report)
}

/// Write every connection written to; shut down or close those whose service is done.
fn flush<S: Service>(
    d: &mut Driver<S, Sock>,
    dirty: &mut Vec<u32>,
    report: &mut DialReport,
    now: Instant,
) {
    d.take_dirty(dirty);
    for slot in dirty.drain(..) {
        let slot = slot as usize;
        let failed = match d.output(slot) {
            Some((c, out)) if !c.connecting => write_output(&mut c.stream, out, &[]).is_err(),
            _ => continue,
        };
        if failed {
            report.errors += 1;
            d.close(slot, CloseCause::Error, now);
            continue;
        }
        d.release(slot);
        match d.flushed(slot, now) {
            Flushed::Continue => {}
            Flushed::ShutDown => {
                if let Some(c) = d.io(slot) {
                    let _ = c.stream.shutdown(Shutdown::Write);
                }
            }
            Flushed::Close => {
                d.close(slot, CloseCause::Done, now);
            }
        }
    }
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

/// Read everything available and hand it to the service. `Err` with the cause when the
/// connection is finished.
fn read<S: Service>(
    d: &mut Driver<S, Sock>,
    slot: usize,
    rbuf: &mut [u8],
    now: Instant,
) -> Result<(), CloseCause> {
    loop {
        let Some(c) = d.io(slot) else {
            return Ok(());
        };
        match c.stream.read(rbuf) {
            Ok(0) => {
                // The service hears of it; a close it asks for completes in the flush. Already
                // draining (our side shut down): the connection is done.
                return if d.eof(slot, now) {
                    Err(CloseCause::Done)
                } else {
                    Ok(())
                };
            }
            Ok(n) => {
                d.input(slot, &mut rbuf[..n], false, now);
                if n < rbuf.len() {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(CloseCause::Error),
        }
    }
}
