//! `GET /debug/probes`: named live probes as one JSON object, for an operator's questions that
//! metrics answer poorly: what each worker is doing right now, and which sessions hold the most
//! queued output (slow readers, backpressure).
//!
//! - `workers`: per worker its loop counters, open connections and backpressure pauses;
//! - `most_queued`: the connections with the most queued output, over all workers, largest first
//!   (published by each worker about once a second);
//! - `websocket`: totals of frames in and out and handshake failures.

use std::fmt::Write as _;
use std::time::Duration;

use hioload_ws::stack::meter::{Queued, Stat};
use hioload_ws::ws::OpCode;

use super::Sources;

/// The probes, as JSON.
pub fn probes(sources: &Sources, uptime: Duration) -> String {
    let mut j = String::with_capacity(1024);
    let _ = write!(
        j,
        "{{\"build\":\"{}\",\"transport\":\"{}\",\"uptime_ms\":{},\"workers\":[",
        hioload_ws::build_info().replace(['"', '\\'], "'"),
        if sources.dpdk {
            "dpdk"
        } else {
            "kernel sockets"
        },
        uptime.as_millis()
    );
    let mut queued: Vec<(usize, Queued)> = Vec::new();
    for (w, m) in sources.meters.iter().enumerate() {
        let l = m.snapshot();
        let _ = write!(
            j,
            "{}{{\"worker\":{w},\"iterations\":{},\"busy_iterations\":{},\"busy_seconds\":{:.6},\
             \"open\":{},\"accepted\":{},\"closed\":{},\"backpressure_pauses\":{}}}",
            if w > 0 { "," } else { "" },
            l.iterations,
            l.busy_iterations,
            l.busy.as_secs_f64(),
            m.stat(Stat::ConnectionsOpen),
            m.stat(Stat::ConnectionsAccepted),
            m.stat(Stat::ConnectionsClosed),
            m.stat(Stat::BackpressurePauses),
        );
        queued.extend(m.most_queued().into_iter().map(|q| (w, q)));
    }
    queued.sort_by_key(|q| std::cmp::Reverse(q.1.bytes));
    queued.truncate(hioload_ws::stack::meter::MOST_QUEUED);
    j.push_str("],\"most_queued\":[");
    for (i, (w, q)) in queued.iter().enumerate() {
        let _ = write!(
            j,
            "{}{{\"conn\":\"{w}.{}\",\"bytes\":{},\"dropped\":{}}}",
            if i > 0 { "," } else { "" },
            q.slot,
            q.bytes,
            q.dropped
        );
    }
    let (mut frames_in, mut frames_out, mut refused) = (0u64, 0u64, 0u64);
    for m in &sources.ws {
        let t = m.snapshot();
        frames_in += t.frames.received.frames.iter().sum::<u64>();
        frames_out += t.frames.sent.frames.iter().sum::<u64>();
        refused += t.handshake_failures.iter().sum::<u64>();
    }
    let _ = write!(
        j,
        "],\"websocket\":{{\"frames_in\":{frames_in},\"frames_out\":{frames_out},\
         \"handshake_failures\":{refused},\"opcodes\":[{}]}}}}",
        OpCode::ALL
            .iter()
            .map(|o| format!("\"{}\"", o.name()))
            .collect::<Vec<_>>()
            .join(",")
    );
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use hioload_ws::stack::meter::{WorkerMeter, WorkerRecorder};
    use std::sync::Arc;

    #[test]
    fn most_queued_is_merged_over_workers_largest_first() {
        let meters = WorkerMeter::for_workers(2);
        WorkerRecorder::new(Arc::clone(&meters), 0).set_most_queued(vec![Queued {
            slot: 4,
            bytes: 100,
            dropped: 0,
        }]);
        WorkerRecorder::new(Arc::clone(&meters), 1).set_most_queued(vec![Queued {
            slot: 9,
            bytes: 5000,
            dropped: 7,
        }]);
        let j = probes(&Sources::bare(meters, false), Duration::from_secs(3));
        let first = j.find("\"conn\":\"1.9\"").expect("worker 1's connection");
        let second = j.find("\"conn\":\"0.4\"").expect("worker 0's connection");
        assert!(first < second, "largest first: {j}");
        assert!(
            j.contains("\"conn\":\"1.9\",\"bytes\":5000,\"dropped\":7"),
            "{j}"
        );
        assert!(j.contains("\"uptime_ms\":3000"));
        assert_eq!(j.matches('{').count(), j.matches('}').count(), "{j}");
        assert_eq!(j.matches('[').count(), j.matches(']').count(), "{j}");
    }
}
