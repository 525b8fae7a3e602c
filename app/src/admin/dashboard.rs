//! The live dashboard: a self-contained page (`GET /`) that opens a WebSocket (`GET /ws`) on
//! which this side pushes a JSON snapshot of the workers' figures twice a second. The page
//! computes rates from consecutive snapshots.
//!
//! Each dashboard socket gets its own thread that only writes; it ends when a write fails (the
//! browser went away). The WebSocket handshake and framing are the appliance's own
//! (`hioload_wsproto`), as a server: frames unmasked.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hioload_ws::stack::meter::{Stat, WorkerMeter};
use hioload_ws::ws::frame::write_frame;
use hioload_ws::ws::handshake;
use hioload_ws::ws::OpCode;

use super::Sources;

/// The page.
pub const PAGE: &str = include_str!("../dashboard.html");

/// How often a snapshot is pushed.
pub const INTERVAL: Duration = Duration::from_millis(500);

/// Complete the WebSocket handshake in `request` (a whole request head) and push snapshots from
/// a thread of its own until the browser goes away.
pub fn serve(mut s: TcpStream, request: &[u8], sources: &Sources) -> std::io::Result<()> {
    let req = match handshake::parse_request(request, request.len().max(1024)) {
        Ok(Some((req, _))) => req,
        Ok(None) => return Ok(()),
        Err(e) => return s.write_all(&e.response()),
    };
    s.write_all(&handshake::accept_response(&req, None))?;
    let sources = sources.clone();
    std::thread::Builder::new()
        .name("hioload-dash".into())
        .spawn(move || {
            let start = Instant::now();
            let mut frame = Vec::with_capacity(4096);
            loop {
                frame.clear();
                let json = snapshot(&sources, start.elapsed());
                write_frame(&mut frame, true, OpCode::Text, json.as_bytes(), None);
                if s.write_all(&frame).is_err() {
                    return; // the browser went away
                }
                std::thread::sleep(INTERVAL);
            }
        })?;
    Ok(())
}

/// One JSON snapshot: totals, and per worker its busy seconds, iterations and open connections.
pub fn snapshot(sources: &Sources, t: Duration) -> String {
    let meters: &[WorkerMeter] = &sources.meters;
    let sum = |stat: Stat| meters.iter().map(|m| m.stat(stat)).sum::<u64>();
    let (mut messages_in, mut messages_out, mut bytes_in, mut bytes_out) = (0u64, 0u64, 0u64, 0u64);
    for w in &sources.ws {
        let t = w.snapshot();
        for op in [OpCode::Text, OpCode::Binary] {
            messages_in += t.frames.received.frames[op.index()];
            messages_out += t.frames.sent.frames[op.index()];
        }
        bytes_in += t.frames.received.bytes.iter().sum::<u64>();
        bytes_out += t.frames.sent.bytes.iter().sum::<u64>();
    }
    let mbufs = if sources.dpdk {
        // One pool per NUMA socket: count each once.
        let mut seen = Vec::new();
        let mut in_use = 0;
        for m in meters {
            let socket = m.stat(Stat::NumaSocket);
            if !seen.contains(&socket) {
                seen.push(socket);
                in_use += m.stat(Stat::MbufsInUse);
            }
        }
        in_use.to_string()
    } else {
        "null".to_string()
    };
    let mut json = String::with_capacity(512);
    let _ = write!(
        json,
        "{{\"t\":{},\"build\":\"{}\",\"transport\":\"{}\",\"open\":{},\"accepted\":{},\
         \"messages_in\":{messages_in},\"messages_out\":{messages_out},\"bytes_in\":{bytes_in},\
         \"bytes_out\":{bytes_out},\"mbufs_in_use\":{mbufs},\"workers\":[",
        t.as_millis(),
        hioload_ws::build_info().replace(['"', '\\'], "'"),
        if sources.dpdk {
            "dpdk"
        } else {
            "kernel sockets"
        },
        sum(Stat::ConnectionsOpen),
        sum(Stat::ConnectionsAccepted),
    );
    for (i, m) in meters.iter().enumerate() {
        let l = m.snapshot();
        let _ = write!(
            json,
            "{}{{\"busy_seconds\":{:.6},\"iterations\":{},\"open\":{}}}",
            if i > 0 { "," } else { "" },
            l.busy.as_secs_f64(),
            l.iterations,
            m.stat(Stat::ConnectionsOpen)
        );
    }
    json.push_str("]}");
    json
}

#[cfg(test)]
mod tests {
    use super::*;
    use hioload_ws::stack::meter::WorkerRecorder;
    use std::sync::Arc;

    #[test]
    fn snapshot_has_totals_and_every_worker() {
        let meters = WorkerMeter::for_workers(2);
        WorkerRecorder::new(Arc::clone(&meters), 1).set(Stat::ConnectionsOpen, 3);
        let json = snapshot(&Sources::bare(meters, false), Duration::from_millis(1500));
        assert!(json.starts_with("{\"t\":1500,"), "{json}");
        assert!(json.contains("\"open\":3,"), "{json}");
        assert!(json.contains("\"mbufs_in_use\":null"), "{json}");
        assert_eq!(json.matches("\"busy_seconds\"").count(), 2, "{json}");
        assert!(json.ends_with("]}"));
        // Balanced braces and brackets: a cheap check that it is one JSON object.
        assert_eq!(json.matches('{').count(), json.matches('}').count());
        assert_eq!(json.matches('[').count(), json.matches(']').count());
    }

    #[test]
    fn the_page_opens_the_socket_it_is_fed_by() {
        assert!(PAGE.contains("/ws"));
        assert!(PAGE.contains("id=\"rate\"") && PAGE.contains("id=\"conns\""));
    }
}
