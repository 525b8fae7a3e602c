//! The live dashboard: a self-contained page (`GET /`) that opens a WebSocket (`GET /ws`) on
//! which the admin endpoint pushes a JSON snapshot of the workers' figures twice a second, the
//! same encoded frame to every viewer ([`super::AdminHandler`]). The page computes rates from
//! consecutive snapshots.

use std::fmt::Write as _;
use std::time::Duration;

use hioload_ws::stack::meter::{Stat, WorkerMeter};
use hioload_ws::ws::OpCode;

use super::Sources;

/// The page.
pub const PAGE: &str = include_str!("../dashboard.html");

/// How often a snapshot is pushed.
pub const INTERVAL: Duration = Duration::from_millis(500);

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
