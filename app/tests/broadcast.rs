//! The `broadcast` mode on kernel sockets with two workers: every message reaches every session,
//! once and in order, across workers; a session that never reads stops nobody and costs bounded
//! memory, under both slow-consumer policies.

mod common;

use std::time::Duration;

use common::fanout::{self, assert_complete, silent_session, Plan};
use common::{eventually, metric, metric_sum, Appliance};

#[test]
fn every_message_reaches_every_session_once_and_in_order_across_workers() {
    let app = Appliance::start("broadcast", &["--workers", "2"]);
    let admin = app.admin().expect("admin endpoint");
    let plan = Plan {
        sessions: 1000,
        senders: (0..1000).collect(),
        messages: 2,
        size: 24,
        window: None,
    };
    let out = fanout::run(app.addr, plan.clone(), Duration::from_secs(120));
    assert_complete(&plan, &out);
    // Both workers held sessions, and each passed messages to the other through its mailbox.
    for w in 0..2 {
        let opened = metric(
            admin,
            &format!("hioload_ws_sessions_opened_total{{worker=\"{w}\"}}"),
        );
        assert!(opened.unwrap_or(0.0) > 0.0, "worker {w} had no session");
        let mail = metric(
            admin,
            &format!("hioload_mailbox_messages_total{{worker=\"{w}\",outcome=\"received\"}}"),
        );
        assert!(
            mail.unwrap_or(0.0) > 0.0,
            "worker {w} received nothing by mailbox"
        );
    }
    // 2,000 messages, each to 1,000 sessions: every one a push, none lost.
    assert!(eventually(Duration::from_secs(2), || {
        metric_sum(admin, "hioload_pushes_total", "outcome=\"queued\"") == 2_000_000.0
    }));
    assert_eq!(
        metric_sum(admin, "hioload_pushes_total", "outcome=\"dropped\""),
        0.0
    );
    assert_eq!(
        metric_sum(
            admin,
            "hioload_mailbox_messages_total",
            "outcome=\"refused\""
        ),
        0.0
    );
}

/// One sender, seven more readers, and a session that never reads: the readers get everything
/// while 48 MiB are broadcast, and the appliance's memory does not follow the silent one's
/// backlog. Returns the appliance's RSS growth, and the silent session (still open).
///
/// The limit (2 MiB) leaves the readers room: on a 2-core machine the two workers and the client
/// take turns on the CPUs, and a reader on the worker that waits for its turn falls behind the
/// sender by up to a megabyte.
fn silent_session_run(app: &Appliance) -> (u64, std::net::TcpStream) {
    let silent = silent_session(app.addr);
    let rss_before = app.rss();
    let plan = Plan {
        sessions: 8,
        senders: vec![0],
        messages: 6000,
        size: 8192,
        window: Some(8),
    };
    let out = fanout::run(app.addr, plan.clone(), Duration::from_secs(120));
    assert_complete(&plan, &out);
    (app.rss().saturating_sub(rss_before), silent)
}

#[test]
fn a_session_that_never_reads_is_skipped_and_costs_bounded_memory() {
    let app = Appliance::start(
        "broadcast",
        &["--workers", "2", "--backpressure-limit", "2MiB"],
    );
    let admin = app.admin().expect("admin endpoint");
    let (grown, _silent) = silent_session_run(&app);
    // Unbounded, the silent session's backlog alone would be most of the 48 MiB broadcast.
    assert!(grown < 24 << 20, "RSS grew by {grown} bytes");
    let dropped = metric_sum(admin, "hioload_pushes_total", "outcome=\"dropped\"");
    assert!(
        dropped > 1000.0,
        "pushes dropped for the silent session: {dropped}"
    );
    assert_eq!(
        metric_sum(admin, "hioload_slow_consumers_closed_total", ""),
        0.0,
        "the drop policy keeps the session"
    );
}

#[test]
fn the_close_policy_closes_a_session_that_stays_over_its_limit() {
    let app = Appliance::start(
        "broadcast",
        &[
            "--workers",
            "2",
            "--backpressure-limit",
            "2MiB",
            "--slow-consumer",
            "close",
            "--slow-consumer-grace",
            "2s",
            "--close-timeout",
            "500ms",
        ],
    );
    let admin = app.admin().expect("admin endpoint");
    let (grown, _silent) = silent_session_run(&app);
    assert!(grown < 24 << 20, "RSS grew by {grown} bytes");
    // Over its limit for the 2 s grace, then closed (the silent client stays connected).
    assert!(
        eventually(Duration::from_secs(10), || metric_sum(
            admin,
            "hioload_slow_consumers_closed_total",
            ""
        ) == 1.0),
        "the silent session was closed as a slow consumer"
    );
    // It was told why (close 1008, queued behind what it never read), and, as it never
    // answers, the connection is gone once the close timeout and the linger have passed.
    assert_eq!(
        metric_sum(admin, "hioload_ws_close_sent_total", "code=\"1008\""),
        1.0
    );
    assert!(
        eventually(Duration::from_secs(10), || metric_sum(
            admin,
            "hioload_connections_open",
            ""
        ) == 0.0),
        "the slow consumer's connection is closed"
    );
}
