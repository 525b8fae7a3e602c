//! The Prometheus text exposition of what workers publish.

use std::sync::Arc;

use hioload_ws::middleware::Counters;
use hioload_ws::pubsub::protocol::ErrorCode;
use hioload_ws::pubsub::PubSubCounters;
use hioload_ws::stack::meter::{Stat, WorkerMeter};
use hioload_ws::ws::OpCode;
use hioload_ws::ws_metrics::{self, WsMeter};

use super::Sources;

/// How a [`Stat`] is exposed: metric name, type, help, and an extra label.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    /// The stats of the family, each with its extra label (`None`: no extra label).
    members: &'static [(Stat, Option<(&'static str, &'static str)>)],
    /// Only on DPDK.
    dpdk_only: bool,
    /// Published by worker 0 for the whole port (no worker label).
    port_wide: bool,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "hioload_connections_open",
        kind: "gauge",
        help: "Connections open now.",
        members: &[(Stat::ConnectionsOpen, None)],
        dpdk_only: false,
        port_wide: false,
    },
    Family {
        name: "hioload_connections_accepted_total",
        kind: "counter",
        help: "Connections established.",
        members: &[(Stat::ConnectionsAccepted, None)],
        dpdk_only: false,
        port_wide: false,
    },
    Family {
        name: "hioload_connections_closed_total",
        kind: "counter",
        help: "Connections that ended normally.",
        members: &[(Stat::ConnectionsClosed, None)],
        dpdk_only: false,
        port_wide: false,
    },
    Family {
        name: "hioload_connection_errors_total",
        kind: "counter",
        help: "Connections that ended by reset or I/O error.",
        members: &[(Stat::ConnectionErrors, None)],
        dpdk_only: false,
        port_wide: false,
    },
    Family {
        name: "hioload_connections_rejected_total",
        kind: "counter",
        help: "Connections refused, by reason.",
        members: &[
            (Stat::RejectedMaxConnections, Some(("reason", "max_connections"))),
            (Stat::RejectedHalfOpen, Some(("reason", "max_half_open"))),
            (Stat::RejectedMemory, Some(("reason", "memory"))),
        ],
        dpdk_only: false,
        port_wide: false,
    },
    Family {
        name: "hioload_backpressure_pauses_total",
        kind: "counter",
        help: "Times a connection's input was left unread because its unsent output was over --backpressure-limit.",
        members: &[(Stat::BackpressurePauses, None)],
        dpdk_only: false,
        port_wide: false,
    },
    Family {
        name: "hioload_pushes_total",
        kind: "counter",
        help: "Output pushed to a connection from outside its own turn (broadcasts, other sessions), by outcome: queued; dropped (the connection was over --backpressure-limit); stale (the connection had closed); refused (it did not take pushes, e.g. mid-handshake or closing).",
        members: &[
            (Stat::PushesQueued, Some(("outcome", "queued"))),
            (Stat::PushesDropped, Some(("outcome", "dropped"))),
            (Stat::PushesStale, Some(("outcome", "stale"))),
            (Stat::PushesRefused, Some(("outcome", "refused"))),
        ],
        dpdk_only: false,
        port_wide: false,
    },
    Family {
        name: "hioload_slow_consumers_closed_total",
        kind: "counter",
        help: "Connections closed because they stayed over --backpressure-limit for --slow-consumer-grace (--slow-consumer close).",
        members: &[(Stat::SlowConsumersClosed, None)],
        dpdk_only: false,
        port_wide: false,
    },
    Family {
        name: "hioload_mailbox_messages_total",
        kind: "counter",
        help: "Messages posted to the worker's mailbox (by other workers and threads), by outcome: received; refused (the mailbox was full).",
        members: &[
            (Stat::MailboxReceived, Some(("outcome", "received"))),
            (Stat::MailboxRefused, Some(("outcome", "refused"))),
        ],
        dpdk_only: false,
        port_wide: false,
    },
    Family {
        name: "hioload_packets_received_total",
        kind: "counter",
        help: "Packets received from the port.",
        members: &[(Stat::PacketsReceived, None)],
        dpdk_only: true,
        port_wide: false,
    },
    Family {
        name: "hioload_packets_sent_total",
        kind: "counter",
        help: "Packets the port took for sending.",
        members: &[(Stat::PacketsSent, None)],
        dpdk_only: true,
        port_wide: false,
    },
    Family {
        name: "hioload_packets_dropped_total",
        kind: "counter",
        help: "Packets not sent, by reason.",
        members: &[
            (Stat::DroppedNoMbuf, Some(("reason", "no_mbuf"))),
            (Stat::DroppedNoNeighbour, Some(("reason", "no_neighbour"))),
            (Stat::DroppedNoRoute, Some(("reason", "no_route"))),
            (Stat::DroppedTxFull, Some(("reason", "tx_full"))),
        ],
        dpdk_only: true,
        port_wide: false,
    },
    Family {
        name: "hioload_tx_deferred_total",
        kind: "counter",
        help: "Times a connection had more to send than the transmit ring had room for, and waited its turn.",
        members: &[(Stat::TxDeferred, None)],
        dpdk_only: true,
        port_wide: false,
    },
    Family {
        name: "hioload_tx_waiting_connections",
        kind: "gauge",
        help: "Connections waiting for room in the transmit ring.",
        members: &[(Stat::TxWaiting, None)],
        dpdk_only: true,
        port_wide: false,
    },
    Family {
        name: "hioload_arp_entries",
        kind: "gauge",
        help: "Neighbours in the worker's ARP cache.",
        members: &[(Stat::ArpEntries, None)],
        dpdk_only: true,
        port_wide: false,
    },
    Family {
        name: "hioload_port_rx_missed_total",
        kind: "counter",
        help: "Packets the port dropped for want of a receive descriptor.",
        members: &[(Stat::PortRxMissed, None)],
        dpdk_only: true,
        port_wide: true,
    },
    Family {
        name: "hioload_port_errors_total",
        kind: "counter",
        help: "Port errors, by direction.",
        members: &[
            (Stat::PortRxErrors, Some(("direction", "rx"))),
            (Stat::PortTxErrors, Some(("direction", "tx"))),
        ],
        dpdk_only: true,
        port_wide: true,
    },
    Family {
        name: "hioload_port_rx_nombuf_total",
        kind: "counter",
        help: "Receive mbuf allocation failures of the port.",
        members: &[(Stat::PortRxNoMbuf, None)],
        dpdk_only: true,
        port_wide: true,
    },
];

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
    let snaps: Vec<_> = sources.meters.iter().map(WorkerMeter::snapshot).collect();
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
    let meters = &sources.meters;
    for f in FAMILIES.iter().filter(|f| sources.dpdk || !f.dpdk_only) {
        let _ = writeln!(
            m,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        let workers = if f.port_wide { 1 } else { meters.len() };
        for (w, meter) in meters.iter().enumerate().take(workers) {
            for (stat, label) in f.members {
                let mut labels = Vec::new();
                if !f.port_wide {
                    labels.push(format!("worker=\"{w}\""));
                }
                if let Some((k, v)) = label {
                    labels.push(format!("{k}=\"{v}\""));
                }
                let labels = if labels.is_empty() {
                    String::new()
                } else {
                    format!("{{{}}}", labels.join(","))
                };
                let _ = writeln!(m, "{}{labels} {}", f.name, meter.stat(*stat));
            }
        }
    }
    if sources.dpdk {
        // One pool per NUMA socket: report each once, from the first worker on it.
        let _ = writeln!(
            m,
            "# HELP hioload_mbufs Mbufs of the pool of a NUMA socket, by state.\n# TYPE hioload_mbufs gauge"
        );
        let mut seen = Vec::new();
        for meter in meters.iter() {
            let socket = meter.stat(Stat::NumaSocket);
            if seen.contains(&socket) {
                continue;
            }
            seen.push(socket);
            for (state, stat) in [("in_use", Stat::MbufsInUse), ("free", Stat::MbufsFree)] {
                let _ = writeln!(
                    m,
                    "hioload_mbufs{{socket=\"{socket}\",state=\"{state}\"}} {}",
                    meter.stat(stat)
                );
            }
        }
    }
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
    ws_families(&mut m, &sources.ws);
    pubsub_families(&mut m, &sources.pubsub);
    if let Some(b) = &sources.broker {
        broker_families(&mut m, b);
    }
    if let Some(a) = &sources.archive {
        archive_families(&mut m, a);
    }
    m
}

/// A family of one sample without labels.
fn unlabelled(m: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    use std::fmt::Write as _;
    let _ = writeln!(
        m,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// The archive's families (`pubsub --postgres`).
fn archive_families(m: &mut String, a: &hioload_ws::pubsub::archive::ArchiveState) {
    use hioload_ws::pubsub::broker::BrokerState;
    let gauges = [
        (
            "hioload_archive_up",
            "1 while the PostgreSQL archive is connected, else 0.",
            u64::from(a.is_up()),
        ),
        (
            "hioload_archive_backlog",
            "Messages waiting to be stored.",
            BrokerState::get(&a.backlog),
        ),
    ];
    for (name, help, v) in gauges {
        unlabelled(m, name, "gauge", help, v);
    }
    let counters = [
        ("hioload_archive_stored_total", "Messages stored (written, or found stored already).", &a.stored),
        ("hioload_archive_dropped_total", "Messages dropped, oldest first, because the backlog was full while PostgreSQL was away.", &a.dropped),
        ("hioload_archive_queue_full_total", "Requests refused because the archive's queue was full.", &a.queue_full),
        ("hioload_archive_batches_total", "Batches written.", &a.batches),
        ("hioload_archive_reads_total", "History pages read from the archive.", &a.reads),
        ("hioload_archive_disconnects_total", "Times the connection to PostgreSQL was lost.", &a.disconnects),
        ("hioload_archive_errors_total", "Notes for workers dropped, or statements that failed.", &a.errors),
    ];
    for (name, help, c) in counters {
        unlabelled(m, name, "counter", help, BrokerState::get(c));
    }
}

/// The broker bridge's families (`pubsub --redis`).
fn broker_families(m: &mut String, b: &hioload_ws::pubsub::broker::BrokerState) {
    use hioload_ws::pubsub::broker::BrokerState;
    unlabelled(
        m,
        "hioload_broker_up",
        "gauge",
        "1 while the Redis bridge can publish and receive, else 0 (messages reach this node's members only).",
        u64::from(b.is_up()),
    );
    let counters = [
        ("hioload_broker_published_total", "Messages numbered and published through Redis.", &b.published),
        ("hioload_broker_published_locally_total", "Messages numbered by this node while Redis was unreachable (other nodes never see them).", &b.published_locally),
        ("hioload_broker_received_total", "Messages and presence events received from Redis.", &b.received),
        ("hioload_broker_syncs_total", "Channel syncs (subscribe, then read seq, epoch, history, presence).", &b.syncs),
        ("hioload_broker_batches_total", "Pipelines sent to Redis.", &b.batches),
        ("hioload_broker_calls_total", "Redis calls made (script runs and commands).", &b.calls),
        ("hioload_broker_disconnects_total", "Times a connection to Redis was lost.", &b.disconnects),
        ("hioload_broker_errors_total", "Redis calls that failed or answers that could not be read.", &b.errors),
        ("hioload_broker_queue_full_total", "Commands refused because the bridge's queue was full.", &b.queue_full),
        ("hioload_broker_dropped_events_total", "Events from Redis dropped because a worker's mailbox stayed full.", &b.dropped_events),
    ];
    for (name, help, c) in counters {
        unlabelled(m, name, "counter", help, BrokerState::get(c));
    }
}

/// The pub/sub families (the `pubsub` mode only).
fn pubsub_families(m: &mut String, workers: &[Arc<PubSubCounters>]) {
    use std::fmt::Write as _;
    use std::sync::atomic::AtomicU64;
    if workers.is_empty() {
        return;
    }
    type Get = fn(&PubSubCounters) -> &AtomicU64;
    let simple: [(&str, &str, &str, Get); 9] = [
        (
            "hioload_pubsub_channels",
            "gauge",
            "Channels homed on the worker.",
            |c| &c.channels,
        ),
        (
            "hioload_pubsub_members",
            "gauge",
            "Channel memberships of the worker's sessions.",
            |c| &c.members,
        ),
        (
            "hioload_pubsub_history_bytes",
            "gauge",
            "Bytes of messages retained for history by the worker's channels.",
            |c| &c.history_bytes,
        ),
        (
            "hioload_pubsub_publishes_total",
            "counter",
            "Messages published to channels homed on the worker.",
            |c| &c.publishes,
        ),
        (
            "hioload_pubsub_deliveries_total",
            "counter",
            "Messages and presence changes queued for members.",
            |c| &c.deliveries,
        ),
        (
            "hioload_pubsub_presence_events_total",
            "counter",
            "Presence changes (joined, left) sent by the worker's channels.",
            |c| &c.presence_events,
        ),
        (
            "hioload_pubsub_compressed_total",
            "counter",
            "Messages and presence changes the worker's channels compressed (permessage-deflate), each once for all members.",
            |c| &c.compressed,
        ),
        (
            "hioload_pubsub_compressed_in_bytes_total",
            "counter",
            "Their bytes before compression.",
            |c| &c.compressed_in_bytes,
        ),
        (
            "hioload_pubsub_compressed_out_bytes_total",
            "counter",
            "Their bytes after compression.",
            |c| &c.compressed_out_bytes,
        ),
    ];
    for (name, kind, help, get) in simple {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (w, c) in workers.iter().enumerate() {
            let _ = writeln!(
                m,
                "{name}{{worker=\"{w}\"}} {}",
                PubSubCounters::get(get(c))
            );
        }
    }
    let name = "hioload_pubsub_dropped_total";
    let _ = writeln!(
        m,
        "# HELP {name} Deliveries not made, by cause: slow (the member's output was over its limit), mailbox (a worker's mailbox was full).\n# TYPE {name} counter"
    );
    for (w, c) in workers.iter().enumerate() {
        for (cause, v) in [("slow", &c.dropped_slow), ("mailbox", &c.dropped_mailbox)] {
            let _ = writeln!(
                m,
                "{name}{{worker=\"{w}\",cause=\"{cause}\"}} {}",
                PubSubCounters::get(v)
            );
        }
    }
    let name = "hioload_pubsub_errors_total";
    let _ = writeln!(
        m,
        "# HELP {name} Errors sent to clients, by code.\n# TYPE {name} counter"
    );
    for (w, c) in workers.iter().enumerate() {
        for code in ErrorCode::ALL {
            let _ = writeln!(
                m,
                "{name}{{worker=\"{w}\",code=\"{}\"}} {}",
                code.as_str(),
                PubSubCounters::get(&c.errors[code.index()])
            );
        }
    }
}

/// The WebSocket families: messages, frames and payload bytes by opcode each way, close codes
/// each way, handshake failures by cause, permessage-deflate.
fn ws_families(m: &mut String, meters: &[Arc<WsMeter>]) {
    use std::fmt::Write as _;
    if meters.is_empty() {
        return;
    }
    let tallies: Vec<_> = meters.iter().map(|w| w.snapshot()).collect();
    let data = [OpCode::Text, OpCode::Binary];
    type Get = dyn Fn(&ws_metrics::WsTally, usize) -> u64;
    let mut family = |name: &str, help: &str, label: &str, keys: &[(usize, String)], get: &Get| {
        let _ = writeln!(m, "# HELP {name} {help}\n# TYPE {name} counter");
        for (w, t) in tallies.iter().enumerate() {
            for (i, key) in keys {
                let _ = writeln!(
                    m,
                    "{name}{{worker=\"{w}\",{label}=\"{key}\"}} {}",
                    get(t, *i)
                );
            }
        }
    };
    let by_opcode = |ops: &[OpCode]| -> Vec<(usize, String)> {
        ops.iter()
            .map(|o| (o.index(), o.name().to_string()))
            .collect()
    };
    family(
        "hioload_ws_messages_received_total",
        "WebSocket messages received (their first frames), by type.",
        "opcode",
        &by_opcode(&data),
        &|t, i| t.frames.received.frames[i],
    );
    family(
        "hioload_ws_messages_sent_total",
        "WebSocket messages sent (their first frames), by type.",
        "opcode",
        &by_opcode(&data),
        &|t, i| t.frames.sent.frames[i],
    );
    family(
        "hioload_ws_frames_received_total",
        "WebSocket frames received, by opcode (pings and pongs included).",
        "opcode",
        &by_opcode(&OpCode::ALL),
        &|t, i| t.frames.received.frames[i],
    );
    family(
        "hioload_ws_frames_sent_total",
        "WebSocket frames sent, by opcode (pings and pongs included).",
        "opcode",
        &by_opcode(&OpCode::ALL),
        &|t, i| t.frames.sent.frames[i],
    );
    family(
        "hioload_ws_payload_received_bytes_total",
        "WebSocket payload bytes received, by frame opcode.",
        "opcode",
        &by_opcode(&OpCode::ALL),
        &|t, i| t.frames.received.bytes[i],
    );
    family(
        "hioload_ws_payload_sent_bytes_total",
        "WebSocket payload bytes sent, by frame opcode.",
        "opcode",
        &by_opcode(&OpCode::ALL),
        &|t, i| t.frames.sent.bytes[i],
    );
    let codes: Vec<(usize, String)> = ws_metrics::CLOSE_CODES
        .iter()
        .map(|c| c.to_string())
        .chain(["other".to_string()])
        .enumerate()
        .collect();
    family(
        "hioload_ws_close_received_total",
        "Close frames received, by code (1005: none given).",
        "code",
        &codes,
        &|t, i| t.close_received[i],
    );
    family(
        "hioload_ws_close_sent_total",
        "Close frames sent, by code.",
        "code",
        &codes,
        &|t, i| t.close_sent[i],
    );
    let reasons: Vec<(usize, String)> = ws_metrics::HANDSHAKE_FAILURES
        .iter()
        .map(|r| r.to_string())
        .enumerate()
        .collect();
    family(
        "hioload_ws_handshake_failures_total",
        "Upgrade requests refused, by the HTTP status sent, or timed out.",
        "reason",
        &reasons,
        &|t, i| t.handshake_failures[i],
    );
    family(
        "hioload_ws_deflate_sessions_total",
        "Sessions that negotiated permessage-deflate.",
        "extension",
        &[(0, "permessage-deflate".to_string())],
        &|t, _| t.deflate_sessions,
    );
    let figures: Vec<(usize, String)> = ws_metrics::DEFLATE_FIGURES
        .iter()
        .map(|f| f.to_string())
        .enumerate()
        .collect();
    family(
        "hioload_ws_deflate_total",
        "permessage-deflate work of the worker's codecs (replies and sends; broadcasts are \
         compressed once by their handler): messages compressed and their bytes before and \
         after, messages sent uncompressed (short, or not made smaller), messages inflated and \
         their bytes before and after.",
        "figure",
        &figures,
        &|t, i| ws_metrics::deflate_figures(&t.deflate)[i],
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use hioload_ws::stack::meter::WorkerRecorder;
    use std::time::{Duration, Instant};

    #[test]
    fn exposition_has_every_worker_and_parses_back() {
        let meters = WorkerMeter::for_workers(2);
        let mut r = WorkerRecorder::new(Arc::clone(&meters), 1);
        let t = Instant::now();
        r.busy(t, t + Duration::from_millis(1500));
        let sessions = vec![Arc::new(Counters::default()), Arc::new(Counters::default())];
        sessions[0]
            .messages_in
            .fetch_add(7, std::sync::atomic::Ordering::Relaxed);
        let ws = vec![Arc::new(WsMeter::default()), Arc::new(WsMeter::default())];
        let mut tally = ws_metrics::WsTally::default();
        tally.frames.received.add(OpCode::Text, 7);
        tally.close_sent[ws_metrics::close_slot(Some(hioload_ws::ws::CloseCode::GOING_AWAY))] = 2;
        tally.handshake_failures[ws_metrics::handshake_slot(426)] = 1;
        ws[1].publish(&tally);
        let text = metrics(&Sources {
            sessions,
            ws,
            ..Sources::bare(meters, false)
        });
        for line in [
            "hioload_ws_messages_received_total{worker=\"1\",opcode=\"text\"} 1",
            "hioload_ws_payload_received_bytes_total{worker=\"1\",opcode=\"text\"} 7",
            "hioload_ws_close_sent_total{worker=\"1\",code=\"1001\"} 2",
            "hioload_ws_handshake_failures_total{worker=\"1\",reason=\"426\"} 1",
            "hioload_ws_frames_sent_total{worker=\"0\",opcode=\"pong\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing");
        }
        assert!(text.contains("hioload_worker_busy_seconds_total{worker=\"1\"} 1.500000000"));
        assert!(text.contains("hioload_worker_loop_iterations_total{worker=\"0\"} 0"));
        assert!(text.contains("hioload_ws_sessions_opened_total{worker=\"0\"} 0"));
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
        assert!(
            !text.contains("hioload_packets_received_total"),
            "kernel: no packet figures"
        );
    }

    #[test]
    fn dpdk_figures_with_reasons_port_wide_and_pools_once_per_socket() {
        let meters = WorkerMeter::for_workers(2);
        for w in 0..2 {
            let r = WorkerRecorder::new(Arc::clone(&meters), w);
            r.set(Stat::ConnectionsOpen, 10 + w as u64);
            r.set(Stat::RejectedHalfOpen, 3);
            r.set(Stat::PacketsReceived, 1000);
            r.set(Stat::MbufsInUse, 77);
            r.set(Stat::PortRxMissed, 5);
        }
        let text = metrics(&Sources::bare(meters, true));
        for line in [
            "hioload_connections_open{worker=\"1\"} 11",
            "hioload_connections_rejected_total{worker=\"0\",reason=\"max_half_open\"} 3",
            "hioload_packets_received_total{worker=\"1\"} 1000",
            "hioload_packets_dropped_total{worker=\"0\",reason=\"tx_full\"} 0",
            "hioload_port_rx_missed_total 5",
            "hioload_mbufs{socket=\"0\",state=\"in_use\"} 77",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert_eq!(
            text.matches("\nhioload_port_rx_missed_total ").count(),
            1,
            "port-wide, once"
        );
        assert_eq!(
            text.matches("hioload_mbufs{").count(),
            2,
            "one socket, two states"
        );
    }
}
