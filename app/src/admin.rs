//! The admin endpoint: a small HTTP server on a kernel socket, on its own thread, away from the
//! workers (also in DPDK mode). Workers publish counters without locks; this thread only reads.
//!
//! - `GET /metrics`: Prometheus text exposition (format 0.0.4).
//! - `GET /healthz`: `ok`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use hioload_ws::middleware::Counters;
use hioload_ws::stack::meter::LoopMeter;

/// What the endpoint reports.
#[derive(Clone)]
pub struct Sources {
    /// Loop counters per worker.
    pub meters: Arc<[LoopMeter]>,
    /// WebSocket counters per worker, if the service keeps them.
    pub sessions: Vec<Arc<Counters>>,
}

/// Bind `addr` and serve from a background thread; returns the bound address.
pub fn start(addr: SocketAddr, sources: Sources) -> Result<SocketAddr, String> {
    let listener = TcpListener::bind(addr).map_err(|e| {
        format!("--admin {addr}: {e} (pass --admin off, or another address such as 127.0.0.1:0)")
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("--admin {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("hioload-admin".into())
        .spawn(move || {
            for stream in listener.incoming() {
                match stream {
                    Ok(s) => {
                        if let Err(e) = handle(s, &sources) {
                            tracing::debug!(error = %e, "admin request failed");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "admin accept failed"),
                }
            }
        })
        .map_err(|e| format!("cannot start the admin thread: {e}"))?;
    Ok(bound)
}

/// Answer one request (one per connection; the endpoint is for scrapers and operators).
fn handle(mut s: TcpStream, sources: &Sources) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 8192];
    let mut len = 0;
    let (method, path) = loop {
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                break (
                    req.method.unwrap_or_default().to_string(),
                    req.path.unwrap_or_default().to_string(),
                )
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            _ => return respond(&mut s, "400 Bad Request", "text/plain", "bad request\n"),
        }
    };
    match (method.as_str(), path.as_str()) {
        ("GET", "/metrics") => respond(
            &mut s,
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &metrics(sources),
        ),
        ("GET", "/healthz") => respond(&mut s, "200 OK", "text/plain", "ok\n"),
        ("GET", _) => respond(&mut s, "404 Not Found", "text/plain", "not found\n"),
        _ => respond(
            &mut s,
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n",
        ),
    }
}

fn respond(s: &mut TcpStream, status: &str, content_type: &str, body: &str) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The Prometheus text exposition of everything in `sources`.
pub fn metrics(sources: &Sources) -> String {
    use std::fmt::Write as _;
    let mut m = String::with_capacity(4096);
    let _ = writeln!(
        m,
        "# HELP hioload_build_info Build of the running appliance.\n# TYPE hioload_build_info gauge\n\
         hioload_build_info{{version=\"{}\"}} 1",
        hioload_ws::build_info().replace('"', "'")
    );
    let snaps: Vec<_> = sources.meters.iter().map(LoopMeter::snapshot).collect();
    let mut family = |name: &str, kind: &str, help: &str, value: &dyn Fn(usize) -> String| {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for w in 0..snaps.len() {
            let _ = writeln!(m, "{name}{{worker=\"{w}\"}} {}", value(w));
        }
    };
    family(
        "hioload_worker_loop_iterations_total",
        "counter",
        "Event loop iterations.",
        &|w| snaps[w].iterations.to_string(),
    );
    family(
        "hioload_worker_busy_iterations_total",
        "counter",
        "Event loop iterations that received, sent or ran timers.",
        &|w| snaps[w].busy_iterations.to_string(),
    );
    family(
        "hioload_worker_busy_seconds_total",
        "counter",
        "Time spent in busy loop iterations (on DPDK the core spins regardless; this is its load).",
        &|w| format!("{:.9}", snaps[w].busy.as_secs_f64()),
    );
    let sessions = &sources.sessions;
    let mut counter = |name: &str, help: &str, get: &dyn Fn(&Counters) -> u64| {
        if sessions.is_empty() {
            return;
        }
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} counter");
        for (w, c) in sessions.iter().enumerate() {
            let _ = writeln!(m, "{name}{{worker=\"{w}\"}} {}", get(c));
        }
    };
    counter(
        "hioload_ws_sessions_opened_total",
        "WebSocket sessions opened.",
        &|c| Counters::get(&c.sessions_opened),
    );
    counter(
        "hioload_ws_sessions_closed_total",
        "WebSocket sessions closed.",
        &|c| Counters::get(&c.sessions_closed),
    );
    counter(
        "hioload_ws_messages_received_total",
        "WebSocket messages received.",
        &|c| Counters::get(&c.messages_in),
    );
    counter(
        "hioload_ws_received_bytes_total",
        "WebSocket payload bytes received.",
        &|c| Counters::get(&c.bytes_in),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use hioload_ws::stack::meter::LoopRecorder;
    use std::time::Instant;

    #[test]
    fn exposition_has_every_worker_and_parses_back() {
        let meters = LoopMeter::for_workers(2);
        let mut r = LoopRecorder::new(Arc::clone(&meters), 1);
        let t = Instant::now();
        r.busy(t, t + Duration::from_millis(1500));
        let sessions = vec![Arc::new(Counters::default()), Arc::new(Counters::default())];
        sessions[0]
            .messages_in
            .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        let text = metrics(&Sources { meters, sessions });
        assert!(text.contains("hioload_worker_busy_seconds_total{worker=\"1\"} 1.500000000"));
        assert!(text.contains("hioload_worker_loop_iterations_total{worker=\"0\"} 0"));
        assert!(text.contains("hioload_ws_messages_received_total{worker=\"0\"} 7"));
        assert_eq!(
            crate::bench::server::sum_metric(&text, "hioload_worker_busy_seconds_total"),
            Some(1.5)
        );
        // Every sample line is NAME{LABELS} VALUE, and every family has HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("a value");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert_eq!(
            text.matches("# HELP").count(),
            text.matches("# TYPE").count()
        );
    }

    #[test]
    fn serves_metrics_and_health_over_http() {
        let sources = Sources {
            meters: LoopMeter::for_workers(1),
            sessions: Vec::new(),
        };
        let addr = start(SocketAddr::from(([127, 0, 0, 1], 0)), sources).expect("binds");
        let body = crate::bench::server::http_get(addr, "/metrics").expect("metrics");
        assert!(body.contains("hioload_worker_busy_seconds_total{worker=\"0\"}"));
        assert_eq!(
            crate::bench::server::http_get(addr, "/healthz").as_deref(),
            Ok("ok\n")
        );
        let missing = crate::bench::server::http_get(addr, "/nope").unwrap_err();
        assert!(missing.contains("404"), "{missing}");
    }
}
