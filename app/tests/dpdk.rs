//! The appliance on DPDK: EAL with `--no-huge`, a `net_tap` device per test, and the kernel's
//! TCP stack as the client on the far side of the TAP. Needs the `dpdk` feature, root and
//! /dev/net/tun (scripts/test.sh checks and prints a SKIPPED banner otherwise).
#![cfg(feature = "dpdk")]

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::pubsub::{self as scenario};
use common::{http_get, json_number, Appliance};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<TcpStream>;

fn connect(app: &Appliance) -> Ws {
    let stream = TcpStream::connect(app.addr).expect("connect through the TAP");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (ws, _) =
        tungstenite::client(format!("ws://{}/dpdk", app.addr), stream).expect("handshake");
    ws
}

/// The number after `label` in the log (e.g. "mbufs in use 1023").
fn number_after(log: &str, label: &str) -> u64 {
    let i = log
        .rfind(label)
        .unwrap_or_else(|| panic!("{label:?} not in log:\n{log}"));
    log[i + label.len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect(label)
}

#[test]
fn websocket_echo_over_dpdk() {
    let app = Appliance::start_dpdk("echo", "hld1", 81, &[]);
    let ok = std::process::Command::new("ping")
        .args(["-c", "1", "-W", "2", "198.18.81.2"])
        .status()
        .unwrap()
        .success();
    assert!(ok, "ping through the TAP");
    let mut ws = connect(&app);
    ws.send(Message::text("héllo over DPDK")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("héllo over DPDK"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 1, 2, 255]));
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 253) as u8).collect();
    ws.send(Message::binary(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(big));
    ws.write(Message::Frame(Frame::message(
        b"frag".to_vec(),
        OpCode::Data(Data::Text),
        false,
    )))
    .unwrap();
    ws.write(Message::Frame(Frame::message(
        b"mented".to_vec(),
        OpCode::Data(Data::Continue),
        true,
    )))
    .unwrap();
    ws.flush().unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("fragmented"));
    for i in 0..300 {
        ws.write(Message::text(format!("m{i}"))).unwrap();
    }
    ws.flush().unwrap();
    for i in 0..300 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("m{i}")));
    }
    // The close handshake completes and the server closes TCP.
    ws.close(None).unwrap();
    assert!(matches!(ws.read(), Ok(Message::Close(_))));
    assert!(matches!(
        ws.read(),
        Err(tungstenite::Error::ConnectionClosed)
    ));
}

#[test]
fn thousand_concurrent_connections_keep_payload_integrity() {
    let app = Appliance::start_dpdk(
        "echo",
        "hld2",
        82,
        &["--tcp-rx-buf", "4KiB", "--tcp-tx-buf", "4KiB"],
    );
    let mut clients: Vec<Ws> = (0..1000).map(|_| connect(&app)).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::binary(
            format!("connection {i} payload {}", "x".repeat(i % 200)).into_bytes(),
        ))
        .unwrap();
    }
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(
            ws.read().unwrap(),
            Message::binary(format!("connection {i} payload {}", "x".repeat(i % 200)).into_bytes())
        );
    }
}

#[test]
fn tcp_echo_over_dpdk() {
    // EAL arguments may also follow `--` (they are appended to those of --eal).
    let app = Appliance::start_dpdk(
        "tcp-echo",
        "hld3",
        83,
        &["--", "--log-level=lib.eal:notice"],
    );
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    let back = common::tcp_round_trip(app.addr, &data);
    assert!(
        back == data,
        "echoed {} of {} bytes",
        back.len(),
        data.len()
    );
}

#[test]
fn sigterm_closes_sessions_with_1001_and_loses_no_echo() {
    let mut app = Appliance::start_dpdk("echo", "hld4", 84, &[]);
    let mut clients: Vec<Ws> = (0..1000).map(|_| connect(&app)).collect();
    common::sigterm_with_messages_in_flight(&app, &mut clients, |ws| match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    });
    drop(clients);
    assert_eq!(
        app.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        app.log_text()
    );
    app.wait_for_log(&["connections accepted 1000", "abandoned at deadline 0"]);
}

#[test]
fn ten_thousand_cycles_return_to_baseline() {
    let mut app = Appliance::start_dpdk("echo", "hld5", 85, &[]);
    let baseline = number_after(&app.wait_for_log(&["mbufs in use"]), "mbufs in use");
    for i in 0..10_000 {
        let mut ws = connect(&app);
        ws.send(Message::text(format!("cycle {i}"))).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(format!("cycle {i}")));
        ws.close(None).unwrap();
        while ws.read().is_ok() {}
    }
    app.signal("TERM");
    assert_eq!(app.wait_exit(Duration::from_secs(15)), Some(0));
    let log = app.wait_for_log(&["stopped:"]);
    assert_eq!(number_after(&log, "connections accepted"), 10_000);
    assert_eq!(number_after(&log, "closed"), 10_000, "{log}");
    assert_eq!(number_after(&log, "abandoned at deadline"), 0);
    assert_eq!(
        number_after(&log, "mbufs in use"),
        baseline,
        "mbufs leaked: {log}"
    );
}

#[test]
fn two_workers_on_two_queues_both_carry_connections() {
    let mut app = Appliance::start_dpdk_on("echo", "0-1", "hld6", 86, &[]);
    app.wait_for_log(&["workers: 2 on lcores 0,1"]);
    let mut clients: Vec<Ws> = (0..64).map(|_| connect(&app)).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("worker test {i}"))).unwrap();
        assert_eq!(
            ws.read().unwrap(),
            Message::text(format!("worker test {i}"))
        );
    }
    drop(clients);
    app.signal("TERM");
    assert_eq!(
        app.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        app.log_text()
    );
    let log = app.wait_for_log(&["per worker"]);
    let i = log.find("per worker ").expect("per-worker counts") + "per worker ".len();
    let counts: Vec<u64> = log[i..]
        .split(')')
        .next()
        .unwrap_or_default()
        .split(',')
        .map(|c| c.trim().parse().unwrap_or(0))
        .collect();
    assert_eq!(counts.len(), 2, "{log}");
    assert_eq!(counts.iter().sum::<u64>(), 64, "{log}");
    assert!(
        counts.iter().all(|&c| c > 0),
        "both workers carry connections: {counts:?}"
    );
}

#[test]
fn syn_flood_beyond_max_half_open_does_not_grow_memory() {
    let mut app = Appliance::start_dpdk("echo", "hld7", 87, &["--max-half-open", "64"]);
    let before = app.rss();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/smoke/syn_flood.py");
    for _ in 0..4 {
        let ok = std::process::Command::new("python3")
            .args([script, "198.18.87.2", "8080", "198.18.87", "5000"])
            .status()
            .expect("run syn_flood.py")
            .success();
        assert!(ok, "syn_flood.py failed");
    }
    std::thread::sleep(Duration::from_millis(500));
    let grown = app.rss().saturating_sub(before);
    // 64 half-open connections with 2 x 16 KiB buffers are about 2 MiB; 20,000 would be 650 MiB.
    assert!(
        grown < 16 << 20,
        "RSS grew by {grown} bytes during a 20,000-SYN flood"
    );
    // Once the spoofed handshakes time out, a real client is served.
    std::thread::sleep(Duration::from_secs(6));
    let mut ws = connect(&app);
    ws.send(Message::text("after the flood")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("after the flood"));
    drop(ws);
    app.signal("TERM");
    assert_eq!(app.wait_exit(Duration::from_secs(15)), Some(0));
    let log = app.wait_for_log(&["stopped:"]);
    // Most of the flood reaches the appliance (the TAP queue and RX ring may drop some of a
    // burst this fast) and everything beyond the 64 slots is dropped at the cap.
    let dropped = number_after(&log, "SYNs dropped");
    assert!(
        dropped >= 10_000,
        "the flood did not hit the half-open cap: {dropped}\n{log}"
    );
    assert_eq!(
        number_after(&log, "connections accepted"),
        1,
        "only the real client got in"
    );
}

/// A port nobody listens on right now (for an address that must be known before a process binds).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `hioload-ws bench ARGS` as the memif client of `/tmp/NAME.sock`, address 198.18.NET.2, on
/// EAL lcores `lcores`.
fn memif_bench(
    lcores: &str,
    name: &str,
    net: u8,
    args: &[&str],
) -> std::thread::JoinHandle<std::process::Output> {
    let mut all: Vec<String> = vec!["bench".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend([
        "--eal".into(),
        format!(
            "-l {lcores} --no-huge -m 256 --no-pci --no-shconf --file-prefix {name}g \
             --vdev=net_memif0,role=client,socket=/tmp/{name}.sock"
        ),
        "--ip".into(),
        format!("198.18.{net}.2/24"),
        "--json".into(),
    ]);
    std::thread::spawn(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hioload-ws"))
            .args(&all)
            .env_remove("RUST_LOG")
            .output()
            .expect("run the generator")
    })
}

/// Start the appliance as the memif server `NAME`, then the generator against it.
fn memif_pair(
    mode: &'static str,
    name: &'static str,
    net: u8,
    app_args: &[&str],
    bench_args: &[&str],
) -> (Appliance, std::process::Output) {
    let bench_args: Vec<String> = bench_args.iter().map(|a| a.to_string()).collect();
    Appliance::start_dpdk_memif(mode, name, net, app_args, move || {
        let args: Vec<&str> = bench_args.iter().map(String::as_str).collect();
        memif_bench("1", name, net, &args)
            .join()
            .expect("generator thread")
    })
}

fn assert_success(out: &std::process::Output) -> String {
    let json = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{json}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json
}

#[test]
fn memif_generator_measures_the_appliance_with_no_kernel_between() {
    let admin = format!("127.0.0.1:{}", free_port());
    let (app, out) = memif_pair(
        "echo",
        "hlm1",
        85,
        &["--admin", &admin, "--shutdown-timeout", "3s"],
        &[
            "echo",
            "--url",
            "ws://198.18.85.1:8080/",
            "--connections",
            "64",
            "--depth",
            "8",
            "--duration",
            "2s",
            "--warmup",
            "1s",
            "--server-admin",
            &admin,
        ],
    );
    let json = assert_success(&out);
    assert!(json.contains("\"transport\":\"dpdk\""), "{json}");
    assert_eq!(json_number(&json, "ready"), 64.0, "{json}");
    assert!(json_number(&json, "messages") > 10_000.0, "{json}");
    assert_eq!(json_number(&json, "mismatches"), 0.0);
    assert_eq!(json_number(&json, "failed_sessions"), 0.0);
    assert!(json_number(&json, "server_busy_us_per_msg") > 0.0, "{json}");
    // The appliance's own view of the run, from its admin endpoint.
    let metrics = http_get(admin.parse().expect("an address"), "/metrics");
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{prefix} missing from:\n{metrics}"))
    };
    assert_eq!(
        value("hioload_connections_accepted_total{worker=\"0\"}"),
        64.0
    );
    // Several messages share a segment, so packets are fewer than messages, but not few.
    assert!(value("hioload_packets_received_total{worker=\"0\"}") > 1000.0);
    assert!(value("hioload_packets_sent_total{worker=\"0\"}") > 1000.0);
    assert!(
        value("hioload_arp_entries{worker=\"0\"}") >= 1.0,
        "the generator was learned"
    );
    assert!(value("hioload_mbufs{socket=\"0\",state=\"free\"}") > 0.0);
    assert_eq!(value("hioload_port_rx_missed_total"), 0.0);
    app.signal("TERM");
    let log = app.wait_for_log(&["stopped:"]);
    assert_eq!(number_after(&log, "connections accepted"), 64, "{log}");
}

#[test]
fn memif_generator_drives_tcp_echo_with_an_address_range() {
    // --ip-count 2 gives the generator two addresses (it answers ARP for both); connections use
    // the second once the first's ports run out, which the engine tests cover. Here: raw TCP
    // echo end to end with the range configured.
    let (app, out) = memif_pair(
        "tcp-echo",
        "hlm2",
        86,
        &["--shutdown-timeout", "3s"],
        &[
            "tcp",
            "--addr",
            "198.18.86.1:9002",
            "--connections",
            "32",
            "--depth",
            "4",
            "--size",
            "512",
            "--duration",
            "1s",
            "--warmup",
            "500ms",
            "--ip-count",
            "2",
        ],
    );
    let json = assert_success(&out);
    assert!(json_number(&json, "messages") > 1000.0, "{json}");
    assert_eq!(json_number(&json, "mismatches"), 0.0);
    app.signal("TERM");
    let log = app.wait_for_log(&["stopped:"]);
    assert_eq!(number_after(&log, "connections accepted"), 32, "{log}");
}

#[test]
fn two_generator_workers_get_their_replies_from_two_appliance_workers() {
    // Two queue pairs on each side: memif maps queue i to queue i, so a reply comes back to the
    // generator worker that sent the SYN; a misrouted reply would meet no flow and be reset.
    let (app, out) = Appliance::start_dpdk_memif_on(
        "echo",
        "0-1",
        "hlm3",
        87,
        &["--shutdown-timeout", "3s"],
        || {
            memif_bench(
                "0-1",
                "hlm3",
                87,
                &[
                    "echo",
                    "--url",
                    "ws://198.18.87.1:8080/",
                    "--connections",
                    "60",
                    "--depth",
                    "2",
                    "--duration",
                    "1s",
                    "--warmup",
                    "1s",
                ],
            )
            .join()
            .expect("generator thread")
        },
    );
    let json = assert_success(&out);
    assert_eq!(json_number(&json, "ready"), 60.0, "{json}");
    assert_eq!(json_number(&json, "failed_sessions"), 0.0, "{json}");
    assert!(json_number(&json, "messages") > 1000.0, "{json}");
    app.signal("TERM");
    let log = app.wait_for_log(&["stopped:"]);
    let line = log
        .lines()
        .find(|l| l.contains("per worker"))
        .expect("summary");
    assert!(
        line.contains("per worker 30,30"),
        "each appliance worker served its half: {line}"
    );
}

#[test]
fn a_multi_worker_generator_on_an_rss_port_is_refused_with_the_reason() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hioload-ws"))
        .args([
            "bench", "echo", "--url", "ws://198.18.88.1:8080/", "--duration", "1s",
            "--eal", "-l 0-1 --no-huge -m 256 --no-pci --no-shconf --file-prefix hlrs --vdev=net_tap0,iface=hlrs0",
            "--ip", "198.18.88.2/24",
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run the generator");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("hioload-ws: error: ")
            && last.contains("RSS")
            && last.contains("one lcore"),
        "{stderr}"
    );
}

#[test]
fn put_config_reaches_dpdk_workers() {
    let app = Appliance::start_dpdk("echo", "hld9", 89, &[]);
    let admin = app.admin().expect("admin endpoint");
    let mut ws = connect(&app);
    let r = common::http_put(
        admin,
        "/config",
        "idle_timeout = \"1s\"\nbackpressure_limit = \"512KiB\"",
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let start = std::time::Instant::now();
    match ws.read() {
        Ok(Message::Close(Some(f))) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close 1001 from the new idle timeout, got {other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(common::http_get(admin, "/config").contains("backpressure_limit = 524288"));
}

#[test]
fn broadcast_over_dpdk_reaches_every_session_once_and_in_order_across_two_workers() {
    use common::fanout::{self, assert_complete, Plan};
    use common::metric_sum;
    let app = Appliance::start_dpdk_on("broadcast", "0-1", "hld10", 90, &[]);
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
    for w in 0..2 {
        let opened = metric_sum(
            admin,
            "hioload_ws_sessions_opened_total",
            &format!("worker=\"{w}\""),
        );
        assert!(opened > 0.0, "worker {w} had no session");
    }
    assert!(
        metric_sum(
            admin,
            "hioload_mailbox_messages_total",
            "outcome=\"received\""
        ) > 0.0
    );
    assert_eq!(
        metric_sum(admin, "hioload_pushes_total", "outcome=\"dropped\""),
        0.0
    );
}

#[test]
fn broadcast_over_dpdk_skips_a_session_that_never_reads_with_bounded_memory() {
    use common::fanout::{self, assert_complete, silent_session, Plan};
    use common::metric_sum;
    let app = Appliance::start_dpdk_on(
        "broadcast",
        "0-1",
        "hld11",
        91,
        &["--backpressure-limit", "2MiB"],
    );
    let admin = app.admin().expect("admin endpoint");
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
    let grown = app.rss().saturating_sub(rss_before);
    assert!(grown < 24 << 20, "RSS grew by {grown} bytes");
    let dropped = metric_sum(admin, "hioload_pushes_total", "outcome=\"dropped\"");
    assert!(
        dropped > 1000.0,
        "pushes dropped for the silent session: {dropped}"
    );
    drop(silent);
}

/// `hioload-ws pubsub` on DPDK over a TAP `iface` (198.18.NET.0/24), one worker per lcore: the
/// pub/sub scenarios of `common/pubsub.rs` with the kernel's TCP as client.
fn pubsub_over(iface: &'static str, net: u8) -> impl Fn(u16, &[&str]) -> Appliance {
    move |workers, args| {
        let lcores = if workers > 1 { "0-1" } else { "0" };
        Appliance::start_dpdk_on("pubsub", lcores, iface, net, args)
    }
}

#[test]
fn pubsub_join_publish_presence_history_leave() {
    scenario::join_publish_presence_history_leave(&pubsub_over("hlp1", 101));
}

#[test]
fn pubsub_every_error_code_without_auth() {
    scenario::every_error_code_without_auth(&pubsub_over("hlp2", 102));
}

#[test]
fn pubsub_channel_cap_answers_unavailable() {
    scenario::channel_cap_answers_unavailable(&pubsub_over("hlp3", 103));
}

#[test]
fn pubsub_three_publishers_two_workers_every_member_sees_one_order() {
    scenario::three_publishers_two_workers_every_member_sees_one_order(&pubsub_over("hlp4", 104));
}

#[test]
fn pubsub_presence_counts_users_not_connections() {
    scenario::presence_counts_users_not_connections(&pubsub_over("hlp5", 105));
}

#[test]
fn pubsub_gathered_presence_arrives_as_net_changes() {
    scenario::gathered_presence_arrives_as_net_changes(&pubsub_over("hlp12", 112));
}

#[test]
fn pubsub_recovery_with_since_inside_and_beyond_the_window() {
    scenario::recovery_with_since_inside_and_beyond_the_window(&pubsub_over("hlp6", 106));
}

#[test]
fn pubsub_server_api_publishes_and_reads_channels_and_presence_behind_a_token() {
    scenario::server_api_publishes_and_reads_channels_and_presence_behind_a_token(&pubsub_over(
        "hlp7", 107,
    ));
}

#[test]
fn pubsub_chat_page_on_plain_get_and_figures_in_metrics() {
    scenario::chat_page_on_plain_get_and_figures_in_metrics(&pubsub_over("hlp8", 108));
}

#[test]
fn pubsub_auth_with_no_bad_expired_and_valid_tokens() {
    scenario::auth_with_no_bad_expired_and_valid_tokens(&pubsub_over("hlp9", 109));
}

#[test]
fn pubsub_a_member_that_never_reads_costs_bounded_memory_and_stops_nobody() {
    scenario::a_member_that_never_reads_costs_bounded_memory_and_stops_nobody(&pubsub_over(
        "hlp10", 110,
    ));
}

/// A DPDK node and a kernel node joined through one Redis (the bridge's own sockets are the
/// kernel's, off the DPDK workers): one order across both, and presence spanning them.
#[test]
fn pubsub_a_dpdk_node_and_a_kernel_node_serve_one_channel_through_redis() {
    let redis = common::redis::RedisServer::start("dpdk-node");
    let url = redis.url();
    let dpdk = Appliance::start_dpdk_on(
        "pubsub",
        "0-1",
        "hlp13",
        113,
        &["--redis", &url, "--node-name", "dpdk"],
    );
    let kernel = Appliance::start("pubsub", &["--redis", &url, "--node-name", "kernel"]);
    common::scaleout::one_gap_free_order_across_nodes(&[dpdk.addr, kernel.addr]);
    let mut ann = scenario::Client::connect(dpdk.addr);
    ann.join("lobby", "ann");
    let mut bob = scenario::Client::connect(kernel.addr);
    let joined = bob.join("lobby", "bob");
    assert_eq!(scenario::users(&joined, "users"), ["ann", "bob"]);
    let came = ann.next_of("presence", "lobby");
    assert_eq!(scenario::users(&came, "joined"), ["bob"]);
}
