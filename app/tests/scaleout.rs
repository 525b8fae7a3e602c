//! `pubsub --redis`: several nodes serving the same channels through a real Redis (each test
//! starts its own `redis-server`, `common/redis.rs`), on kernel sockets.
//!
//! The protocol scenarios of `common/pubsub.rs` run against a node joined through Redis (the
//! protocol does not change); then what only several nodes have: one order across nodes,
//! presence that spans them and survives a killed node, history from Redis, subscriptions
//! only where members are, and Redis itself failing.

mod common;

use std::time::{Duration, Instant};

use common::pubsub::{self as scenario, seqs, users, Client};
use common::redis::RedisServer;
use common::scaleout::{self, messages, publish_acked};
use common::{eventually, http_get, metric, Appliance};
use serde_json::{json, Value};

/// A node: `hioload-ws pubsub --no-dpdk --workers N --redis URL --node-name NAME ARGS...`.
fn node(redis: &RedisServer, name: &str, workers: u16, args: &[&str]) -> Appliance {
    let w = workers.to_string();
    let url = redis.url();
    let mut all = vec![
        "--workers",
        w.as_str(),
        "--redis",
        url.as_str(),
        "--node-name",
        name,
    ];
    all.extend_from_slice(args);
    Appliance::start("pubsub", &all)
}

/// Run a protocol scenario against one node joined through its own Redis.
fn on_redis(test: &str, run: fn(scenario::Start<'_>)) {
    let redis = RedisServer::start(test);
    let start = |workers: u16, args: &[&str]| node(&redis, "solo", workers, args);
    run(&start);
}

#[test]
fn protocol_join_publish_presence_history_leave() {
    on_redis("basic", scenario::join_publish_presence_history_leave);
}

#[test]
fn protocol_every_error_code() {
    on_redis("errors", scenario::every_error_code_without_auth);
}

#[test]
fn protocol_three_publishers_one_order() {
    on_redis(
        "order",
        scenario::three_publishers_two_workers_every_member_sees_one_order,
    );
}

#[test]
fn protocol_presence_counts_users_not_connections() {
    on_redis("presence", scenario::presence_counts_users_not_connections);
}

#[test]
fn protocol_gathered_presence() {
    on_redis(
        "gathered",
        scenario::gathered_presence_arrives_as_net_changes,
    );
}

#[test]
fn protocol_recovery_with_since() {
    on_redis(
        "recovery",
        scenario::recovery_with_since_inside_and_beyond_the_window,
    );
}

#[test]
fn protocol_auth() {
    on_redis("auth", scenario::auth_with_no_bad_expired_and_valid_tokens);
}

#[test]
fn publishers_on_three_nodes_one_gap_free_order_everywhere() {
    let redis = RedisServer::start("three-nodes-order");
    let a = node(&redis, "a", 2, &[]);
    let b = node(&redis, "b", 2, &[]);
    let c = node(&redis, "c", 1, &[]);
    scaleout::one_gap_free_order_across_nodes(&[a.addr, b.addr, c.addr]);
}

#[test]
fn a_node_stopped_with_sigterm_takes_its_users_out_of_presence_at_once() {
    let redis = RedisServer::start("sigterm");
    let a = node(&redis, "a", 2, &[]);
    let mut b = node(&redis, "b", 2, &[]);
    let mut ann = Client::connect(a.addr);
    ann.join("lobby", "ann");
    let mut bob = Client::connect(b.addr);
    bob.join("lobby", "bob");
    assert_eq!(users(&ann.next_of("presence", "lobby"), "joined"), ["bob"]);
    // Bob's client answers the server's close, as a browser does.
    let reader = std::thread::spawn(move || while bob.ws.read().is_ok() {});
    let stopped = Instant::now();
    b.signal("TERM");
    assert_eq!(
        b.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        b.log_text()
    );
    let left = ann.next_of("presence", "lobby");
    assert_eq!(users(&left, "left"), ["bob"]);
    // Well before the 15 s TTL: the node said so on its way out.
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    reader.join().expect("bob's reader");
}

#[test]
fn history_on_join_comes_from_redis_and_recovers_on_another_node() {
    let redis = RedisServer::start("history");
    let a = node(&redis, "a", 2, &["--history-size", "20"]);
    let b = node(&redis, "b", 1, &["--history-size", "20"]);
    let seqs_a = publish_acked(a.addr, "news", "ann", 30);
    assert_eq!(seqs_a, (1..=30).collect::<Vec<_>>());
    // B never had a member of `news`: its history comes from Redis's stream (20 kept).
    let mut c = Client::connect(b.addr);
    let joined = c.join("news", "bob");
    assert_eq!(joined["seq"], 30);
    assert_eq!(seqs(&joined["history"]), (11..=30).collect::<Vec<_>>());
    assert_eq!(joined["history"][0]["text"], "ann-10");
    let epoch = joined["epoch"]
        .as_str()
        .expect("joined carries the epoch")
        .to_string();
    let page = c.call(json!({"type": "history", "channel": "news", "before": 15, "limit": 3}));
    assert_eq!(seqs(&page["messages"]), vec![12, 13, 14]);
    // A client that saw up to 25 on A reconnects to B: recovered, in the same epoch.
    let mut again = Client::connect(b.addr);
    let r = again.call(
        json!({"type": "join", "channel": "news", "user": "cy", "since": 25, "epoch": epoch}),
    );
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(seqs(&r["history"]), vec![26, 27, 28, 29, 30]);
    // From another epoch nothing counts: not recovered, everything retained is sent.
    let r = again.call(json!({"type": "join", "channel": "news", "since": 25, "epoch": "1.1"}));
    assert_eq!(r["recovered"], false, "{r}");
    assert_eq!(seqs(&r["history"]).len(), 20);
}

#[test]
fn presence_spans_nodes_and_a_killed_node_leaves_within_the_ttl() {
    let redis = RedisServer::start("presence");
    let ttl = ["--presence-ttl", "2s"];
    let a = node(&redis, "a", 2, &ttl);
    let mut b = node(&redis, "b", 2, &ttl);
    let mut ann = Client::connect(a.addr);
    ann.join("lobby", "ann");
    let mut bob = Client::connect(b.addr);
    let joined = bob.join("lobby", "bob");
    assert_eq!(users(&joined, "users"), ["ann", "bob"], "{joined}");
    let came = ann.next_of("presence", "lobby");
    assert_eq!(users(&came, "joined"), ["bob"]);
    // Two connections of one user on two nodes: one user.
    let mut ann2 = Client::connect(b.addr);
    let j = ann2.join("lobby", "ann");
    assert_eq!(users(&j, "users"), ["ann", "bob"]);
    let p = ann.call(json!({"type": "presence", "channel": "lobby"}));
    assert_eq!(users(&p, "users"), ["ann", "bob"]);
    // A reader on B has seen seq 1 of `news` when B dies.
    let mut reader = Client::connect(b.addr);
    let epoch = reader.join("news", "reader")["epoch"].clone();
    assert_eq!(publish_acked(b.addr, "news", "pub", 3), vec![1, 2, 3]);
    assert_eq!(messages(&mut reader, "news", 1)[0].0, 1);
    // kill -9 node B: bob is gone from A's view within the TTL (plus a refresh period).
    b.child.kill().expect("kill node b");
    let _ = b.child.wait();
    let killed = Instant::now();
    let left = ann.next_of("presence", "lobby");
    assert_eq!(users(&left, "left"), ["bob"], "{left}");
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(5), "left after {took:?}");
    // ann is still present (her connection on A), bob is not.
    let p = ann.call(json!({"type": "presence", "channel": "lobby"}));
    assert_eq!(users(&p, "users"), ["ann"]);
    // The reader reconnects to A and recovers what it missed.
    let mut again = Client::connect(a.addr);
    let r = again.call(
        json!({"type": "join", "channel": "news", "user": "reader", "since": 1, "epoch": epoch}),
    );
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(seqs(&r["history"]), vec![2, 3]);
}

#[test]
fn a_node_subscribes_only_to_channels_with_members_there() {
    let redis = RedisServer::start("subscriptions");
    let a = node(&redis, "a", 2, &[]);
    let topics = || {
        let mut t = redis.list(&["PUBSUB", "CHANNELS", "hioload:room-*"]);
        t.sort();
        t
    };
    let mut c = Client::connect(a.addr);
    c.join("room-1", "ann");
    c.join("room-2", "ann");
    assert!(eventually(Duration::from_secs(5), || topics()
        == ["hioload:room-1", "hioload:room-2"]));
    let left = c.call(json!({"type": "leave", "channel": "room-1"}));
    assert_eq!(left["type"], "left");
    assert!(
        eventually(Duration::from_secs(5), || topics() == ["hioload:room-2"]),
        "{:?}",
        topics()
    );
    drop(c);
    assert!(
        eventually(Duration::from_secs(5), || topics().is_empty()),
        "{:?}",
        topics()
    );
}

/// The body of the node's `/healthz`.
fn healthz(app: &Appliance) -> String {
    let resp = http_get(app.admin().expect("admin"), "/healthz");
    scenario::status_body(&resp).1.to_string()
}

#[test]
fn redis_restarting_degrades_to_local_delivery_then_resyncs_in_a_new_epoch() {
    let mut redis = RedisServer::start("restart");
    let a = node(&redis, "a", 2, &[]);
    let b = node(&redis, "b", 1, &[]);
    let mut on_a = Client::connect(a.addr);
    let joined = on_a.join("ops", "ann");
    let epoch = joined["epoch"].as_str().expect("epoch").to_string();
    let mut on_b = Client::connect(b.addr);
    on_b.join("ops", "bob");
    let before = publish_acked(b.addr, "ops", "pub", 3);
    assert_eq!(before, vec![1, 2, 3]);
    assert_eq!(messages(&mut on_a, "ops", 3).last().map(|m| m.0), Some(3));
    assert_eq!(messages(&mut on_b, "ops", 3).last().map(|m| m.0), Some(3));

    redis.kill();
    let admin = a.admin().expect("admin");
    assert!(
        eventually(Duration::from_secs(10), || healthz(&a)
            .starts_with("degraded")),
        "{}",
        healthz(&a)
    );
    assert_eq!(metric(admin, "hioload_broker_up"), Some(0.0));
    // Node A keeps delivering to its own members, numbered locally after what they saw.
    let (r, early) =
        on_a.request(json!({"type": "message", "channel": "ops", "text": "while down"}));
    assert_eq!(r["type"], "ack", "{r}");
    assert_eq!(r["seq"], 4);
    let m = match early.into_iter().find(|m| m["type"] == "message") {
        Some(m) => m,
        None => on_a.next_of("message", "ops"),
    };
    assert_eq!(
        (m["seq"].as_u64(), m["text"].as_str()),
        (Some(4), Some("while down"))
    );
    assert!(metric(admin, "hioload_broker_published_locally_total").unwrap_or(0.0) >= 1.0);

    // Redis comes back empty: both nodes reconnect and sync; seqs never go back.
    redis.restart();
    for app in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(15), || healthz(app) == "ok\n"),
            "{}",
            healthz(app)
        );
    }
    assert!(metric(admin, "hioload_broker_disconnects_total").unwrap_or(0.0) >= 1.0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        // Until the resync has subscribed the node again, a publish may reach only Redis.
        let s = publish_acked(b.addr, "ops", "pub", 1)[0];
        let m = on_a.next_of("message", "ops");
        if m["text"] == "pub-0" && m["seq"].as_u64() == Some(s) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery across nodes after the restart"
        );
    };
    assert!(after > 4, "seq {after} went back after the restart");
    // A client recovering in the old epoch learns that history may be missing.
    let mut late = Client::connect(b.addr);
    let r = late
        .call(json!({"type": "join", "channel": "ops", "user": "cy", "since": 3, "epoch": epoch}));
    assert_eq!(r["recovered"], false, "{r}");
    assert_ne!(r["epoch"], Value::String(epoch));
}

#[test]
fn an_unreachable_redis_at_start_is_one_clear_line_and_exit_1() {
    let url = format!("redis://127.0.0.1:{}/0", common::free_port());
    common::pubsub_refuses_to_start(&["--redis", &url], "cannot reach Redis at");
    common::pubsub_refuses_to_start(&["--redis", "http://nope"], "--redis http://nope");
}

#[test]
fn with_postgres_each_message_of_every_node_is_stored_once_and_pages_back_anywhere() {
    let redis = RedisServer::start("with-postgres");
    let pg = common::postgres::PgServer::start("with-redis");
    let url = pg.url();
    let args = ["--postgres", url.as_str(), "--history-size", "5"];
    let a = node(&redis, "a", 2, &args);
    let b = node(&redis, "b", 1, &args);
    let pa = std::thread::spawn(move || publish_acked(a.addr, "log", "pa", 20));
    let b_addr = b.addr;
    let pb = std::thread::spawn(move || publish_acked(b_addr, "log", "pb", 20));
    pa.join().expect("publisher a");
    pb.join().expect("publisher b");
    let count = || {
        pg.sql("SELECT count(*), count(DISTINCT seq), min(seq), max(seq), count(DISTINCT epoch) FROM hioload_messages WHERE channel = 'log' AND epoch <> ''")
    };
    assert!(
        eventually(Duration::from_secs(10), || count() == "40|40|1|40|1"),
        "{}",
        count()
    );
    let nodes = pg.sql("SELECT string_agg(DISTINCT node, ',' ORDER BY node) FROM hioload_messages");
    assert_eq!(nodes, "a,b", "each stored by the node that published it");
    let mut c = Client::connect(b.addr);
    c.join("log", "reader");
    let page = c.call(json!({"type": "history", "channel": "log", "before": 30, "limit": 10}));
    assert_eq!(seqs(&page["messages"]), (20..=29).collect::<Vec<_>>());
}
