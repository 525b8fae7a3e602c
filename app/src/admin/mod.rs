//! The admin endpoint: a small HTTP server on a kernel socket, on its own thread, away from the
//! workers (also in DPDK mode). Workers publish counters without locks; this thread only reads.
//!
//! - `GET /metrics`: Prometheus text exposition (format 0.0.4), from [`metrics`].
//! - `GET /healthz`: `ok`.
//! - `GET /debug/probes`: named live probes as JSON ([`probes`]).
//! - `GET /config`, `PUT /config`: the settings that change at run time, as TOML
//!   ([`crate::live_config`]); a bad value gets 400 with the reason and changes nothing.
//! - `GET /`: the live dashboard, fed over a WebSocket at `/ws` ([`dashboard`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub mod dashboard;
pub mod metrics;
pub mod probes;

use hioload_ws::middleware::Counters;
use hioload_ws::stack::meter::WorkerMeter;
use hioload_ws::ws_metrics::WsMeter;

use metrics::metrics;

/// What the endpoint reports.
#[derive(Clone)]
pub struct Sources {
    /// What each worker publishes.
    pub meters: Arc<[WorkerMeter]>,
    /// WebSocket session counters per worker, if the service keeps them.
    pub sessions: Vec<Arc<Counters>>,
    /// WebSocket frame, close-code and handshake figures per worker, if the service keeps them.
    pub ws: Vec<Arc<WsMeter>>,
    /// The transport is DPDK (packets, ARP, port and pool figures exist).
    pub dpdk: bool,
    /// When the appliance started serving.
    pub started: std::time::Instant,
    /// The settings that change at run time (`/config`), if any.
    pub control: Option<Arc<crate::live_config::Control>>,
}

#[cfg(test)]
impl Sources {
    /// Just workers' meters: no WebSocket figures, no run-time settings.
    pub fn bare(meters: Arc<[WorkerMeter]>, dpdk: bool) -> Self {
        Self {
            meters,
            sessions: Vec::new(),
            ws: Vec::new(),
            dpdk,
            started: std::time::Instant::now(),
            control: None,
        }
    }
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
    let (method, path, head, body_len) = loop {
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head)) => {
                let body_len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok())
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                break (
                    req.method.unwrap_or_default().to_string(),
                    req.path.unwrap_or_default().to_string(),
                    head,
                    body_len,
                );
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
        ("GET", "/config") => match &sources.control {
            Some(c) => respond(&mut s, "200 OK", "application/toml", &c.to_toml()),
            None => respond(
                &mut s,
                "404 Not Found",
                "text/plain",
                "no run-time settings\n",
            ),
        },
        ("PUT", "/config") => {
            let Some(control) = &sources.control else {
                return respond(
                    &mut s,
                    "404 Not Found",
                    "text/plain",
                    "no run-time settings\n",
                );
            };
            if head + body_len > buf.len() {
                return respond(
                    &mut s,
                    "413 Payload Too Large",
                    "text/plain",
                    "at most 8 KiB\n",
                );
            }
            while len < head + body_len {
                let n = s.read(&mut buf[len..head + body_len])?;
                if n == 0 {
                    return respond(&mut s, "400 Bad Request", "text/plain", "body cut short\n");
                }
                len += n;
            }
            let Ok(body) = std::str::from_utf8(&buf[head..head + body_len]) else {
                return respond(
                    &mut s,
                    "400 Bad Request",
                    "text/plain",
                    "the body is not UTF-8\n",
                );
            };
            match control.apply_toml(body, false) {
                Ok(_) => {
                    tracing::info!(
                        change = body.trim(),
                        "settings changed through the admin endpoint"
                    );
                    respond(&mut s, "200 OK", "application/toml", &control.to_toml())
                }
                Err(e) => respond(&mut s, "400 Bad Request", "text/plain", &format!("{e}\n")),
            }
        }
        ("GET", "/debug/probes") => respond(
            &mut s,
            "200 OK",
            "application/json",
            &probes::probes(sources, sources.started.elapsed()),
        ),
        ("GET", "/") => respond(
            &mut s,
            "200 OK",
            "text/html; charset=utf-8",
            dashboard::PAGE,
        ),
        ("GET", "/ws") => dashboard::serve(s, &buf[..len], sources),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_metrics_and_health_over_http() {
        let sources = Sources::bare(WorkerMeter::for_workers(1), false);
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
