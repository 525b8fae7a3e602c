//! `pubsub --postgres`: every message stored in a real PostgreSQL (each test starts its own
//! cluster, `common/postgres.rs`), history paged back past what a node retains, seqs that
//! continue across restarts, and PostgreSQL itself going away.

mod common;

use std::time::Duration;

use common::postgres::PgServer;
use common::pubsub::{seqs, status_body, Client};
use common::scaleout::{messages, publish_acked};
use common::{eventually, http_get, http_request, metric, Appliance};
use serde_json::json;

/// `hioload-ws pubsub --no-dpdk --workers 2 --postgres URL ARGS...`
fn node(pg: &PgServer, args: &[&str]) -> Appliance {
    let url = pg.url();
    let mut all = vec!["--workers", "2", "--postgres", url.as_str()];
    all.extend_from_slice(args);
    Appliance::start("pubsub", &all)
}

fn stored(pg: &PgServer, channel: &str) -> (u64, u64, u64) {
    let row = pg.sql(&format!(
        "SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM hioload_messages WHERE channel = '{channel}'"
    ));
    let f: Vec<u64> = row.split('|').map(|v| v.parse().unwrap_or(0)).collect();
    (f[0], f[1], f[2])
}

fn healthz(app: &Appliance) -> String {
    status_body(&http_get(app.admin().expect("admin"), "/healthz"))
        .1
        .to_string()
}

#[test]
fn every_message_is_stored_and_history_pages_back_past_the_window() {
    let pg = PgServer::start("paging");
    let app = node(&pg, &["--history-size", "10"]);
    assert_eq!(
        pg.sql("SELECT max(version) FROM hioload_schema"),
        "1",
        "schema created and versioned"
    );
    let acked = publish_acked(app.addr, "log", "ann", 50);
    assert_eq!(acked, (1..=50).collect::<Vec<_>>());
    assert!(
        eventually(Duration::from_secs(10), || stored(&pg, "log")
            == (50, 50, 50)),
        "{:?}",
        stored(&pg, "log")
    );
    let mut c = Client::connect(app.addr);
    let joined = c.join("log", "bob");
    assert_eq!(seqs(&joined["history"]), (41..=50).collect::<Vec<_>>());
    // Entirely older than the 10 retained: from PostgreSQL.
    let page = c.call(json!({"type": "history", "channel": "log", "before": 20, "limit": 5}));
    assert_eq!(seqs(&page["messages"]), vec![15, 16, 17, 18, 19]);
    assert_eq!(page["messages"][0]["text"], "ann-14");
    // Straddling: 41..44 retained, 35..40 from PostgreSQL, in one page, oldest first.
    let page = c.call(json!({"type": "history", "channel": "log", "before": 45, "limit": 10}));
    assert_eq!(seqs(&page["messages"]), (35..=44).collect::<Vec<_>>());
    // Paged back to the start.
    let page = c.call(json!({"type": "history", "channel": "log", "before": 3, "limit": 50}));
    assert_eq!(seqs(&page["messages"]), vec![1, 2]);
    let admin = app.admin().expect("admin");
    assert!(metric(admin, "hioload_archive_reads_total").unwrap_or(0.0) >= 3.0);
    assert_eq!(metric(admin, "hioload_archive_stored_total"), Some(50.0));
}

/// `POST /api/publish` with `body`, asked again (up to 5 s) while the answer is 503: the first
/// answer and the last.
fn publish_until_loaded(admin: std::net::SocketAddr, body: &str) -> (String, String) {
    let post = || http_request(admin, "POST", "/api/publish", "", body);
    let first = post();
    let mut last = first.clone();
    if status_body(&first).0 == 503 {
        eventually(Duration::from_secs(5), || {
            last = post();
            status_body(&last).0 == 200
        });
    }
    (first, last)
}

#[test]
fn a_node_alone_continues_its_seqs_after_a_restart() {
    let pg = PgServer::start("restart");
    let mut first = node(&pg, &[]);
    assert_eq!(
        publish_acked(first.addr, "room", "ann", 5),
        vec![1, 2, 3, 4, 5]
    );
    let admin = first.admin().expect("admin");
    let (resp, last) =
        publish_until_loaded(admin, r#"{"channel":"quiet","text":"x","user":"bot"}"#);
    // A channel the node has not loaded yet: its history is read first.
    let (status, body) = status_body(&resp);
    assert!(status == 200 || status == 503, "{resp}");
    if status == 503 {
        assert!(body.contains("loading"), "{body}");
        assert_eq!(status_body(&last).0, 200, "{last}");
    }
    first.signal("TERM");
    assert_eq!(first.wait_exit(Duration::from_secs(10)), Some(0));
    assert_eq!(
        stored(&pg, "room"),
        (5, 5, 5),
        "all stored before the node exited"
    );

    let second = node(&pg, &[]);
    let mut c = Client::connect(second.addr);
    let joined = c.join("room", "bob");
    assert_eq!(joined["seq"], 5, "{joined}");
    assert_eq!(seqs(&joined["history"]), vec![1, 2, 3, 4, 5]);
    let r = c.call(json!({"type": "message", "channel": "room", "text": "after"}));
    assert_eq!(r["seq"], 6, "{r}");
    let admin = second.admin().expect("admin");
    let (_, r) = publish_until_loaded(admin, r#"{"channel":"quiet","text":"y","user":"bot"}"#);
    assert!(status_body(&r).1.contains("\"seq\":2"), "{r}");
}

#[test]
fn postgres_down_mid_run_keeps_delivering_and_stores_the_backlog_once() {
    let mut pg = PgServer::start("down");
    let app = node(&pg, &["--pg-backlog", "1000"]);
    let admin = app.admin().expect("admin");
    let mut member = Client::connect(app.addr);
    member.join("feed", "reader");
    assert_eq!(publish_acked(app.addr, "feed", "w1", 10).len(), 10);
    assert!(eventually(Duration::from_secs(10), || stored(&pg, "feed")
        .0
        == 10));
    pg.stop();
    // Live delivery goes on; the messages wait.
    let acked = publish_acked(app.addr, "feed", "w2", 20);
    assert_eq!(acked, (11..=30).collect::<Vec<_>>());
    let seen = messages(&mut member, "feed", 30);
    assert_eq!(seen.last().map(|m| m.0), Some(30));
    assert!(
        eventually(Duration::from_secs(10), || healthz(&app)
            .starts_with("degraded")),
        "{}",
        healthz(&app)
    );
    assert!(eventually(Duration::from_secs(5), || metric(
        admin,
        "hioload_archive_backlog"
    ) == Some(20.0)));
    pg.restart();
    assert!(
        eventually(Duration::from_secs(15), || stored(&pg, "feed")
            == (30, 30, 30)),
        "{:?}",
        stored(&pg, "feed")
    );
    assert!(eventually(Duration::from_secs(5), || healthz(&app) == "ok\n"));
    assert_eq!(metric(admin, "hioload_archive_dropped_total"), Some(0.0));
    assert!(metric(admin, "hioload_archive_disconnects_total").unwrap_or(0.0) >= 1.0);
}

#[test]
fn past_the_backlog_the_oldest_messages_are_dropped_and_counted() {
    let mut pg = PgServer::start("backlog");
    let app = node(&pg, &["--pg-backlog", "5"]);
    let admin = app.admin().expect("admin");
    pg.stop();
    // The channel is new and PostgreSQL away: it starts from what the node has.
    assert_eq!(
        publish_acked(app.addr, "burst", "w", 12),
        (1..=12).collect::<Vec<_>>()
    );
    assert!(eventually(Duration::from_secs(5), || metric(
        admin,
        "hioload_archive_dropped_total"
    ) == Some(7.0)));
    pg.restart();
    assert!(
        eventually(Duration::from_secs(15), || stored(&pg, "burst")
            == (5, 5, 12)),
        "{:?}",
        stored(&pg, "burst")
    );
    assert_eq!(
        pg.sql("SELECT string_agg(seq::text, ',' ORDER BY seq) FROM hioload_messages WHERE channel = 'burst'"),
        "8,9,10,11,12"
    );
}

#[test]
fn a_bad_postgres_url_or_a_newer_schema_is_one_clear_line_and_exit_1() {
    let pg = PgServer::start("badconfig");
    pg.sql("CREATE TABLE hioload_schema (version integer NOT NULL); INSERT INTO hioload_schema VALUES (99)");
    let unreachable = format!(
        "postgres://hioload@127.0.0.1:{}/postgres",
        common::free_port()
    );
    common::pubsub_refuses_to_start(&["--postgres", &unreachable], "cannot reach PostgreSQL at");
    common::pubsub_refuses_to_start(
        &["--postgres", "postgres://[nope"],
        "--postgres postgres://[nope",
    );
    common::pubsub_refuses_to_start(&["--postgres", &pg.url()], "schema is version 99");
}
