//! `hioload-ws bench` and the admin endpoint, driven as a user would, against the real appliance.

mod common;

use std::process::{Command, Output};

use common::{http_get as get, json_field as field, json_number as num, Appliance};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hioload-ws"))
        .arg("bench")
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run hioload-ws bench")
}

#[test]
fn echo_load_is_verified_and_reports_server_cpu_and_busy_time() {
    let app = Appliance::start("echo", &["--workers", "1"]);
    let admin = app.admin().expect("admin endpoint announced");
    let url = format!("ws://{}/", app.addr);
    let pid = app.pid().to_string();
    let out = bench(&[
        "echo",
        "--url",
        &url,
        "--connections",
        "20",
        "--depth",
        "4",
        "--size",
        "100",
        "--duration",
        "1s",
        "--warmup",
        "300ms",
        "--text",
        "--json",
        "--server-pid",
        &pid,
        "--server-admin",
        &admin.to_string(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.trim();
    assert_eq!(line.lines().count(), 1, "one JSON line: {line}");
    assert!(num(line, "messages") > 1000.0, "{line}");
    assert_eq!(num(line, "ready"), 20.0);
    assert_eq!(
        (num(line, "mismatches"), num(line, "failed_sessions")),
        (0.0, 0.0)
    );
    assert!(num(line, "p50_us") > 0.0 && num(line, "p99_us") >= num(line, "p50_us"));
    assert!(
        num(line, "server_busy_us_per_msg") > 0.0,
        "busy time came from /metrics: {line}"
    );
    assert!(
        num(line, "server_cpu_us_per_msg") > 0.0,
        "CPU time came from /proc: {line}"
    );
    assert_eq!(field(line, "transport"), "kernel");
    // The appliance counted what the generator sent.
    let metrics = get(admin, "/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    let received: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("hioload_ws_messages_received_total{worker=\"0\",opcode=\"text\"} ")
        })
        .and_then(|v| v.parse().ok())
        .expect("a message counter");
    assert!(received >= num(line, "messages"), "{received} < {line}");
    // The transport's figures: every session the generator opened was accepted.
    let accepted: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hioload_connections_accepted_total{worker=\"0\"} "))
        .and_then(|v| v.parse().ok())
        .expect("an accepted-connections counter");
    assert_eq!(accepted, 20.0, "{metrics}");
    assert!(metrics
        .contains("hioload_connections_rejected_total{worker=\"0\",reason=\"max_connections\"} 0"));
    assert!(
        !metrics.contains("hioload_packets_received_total"),
        "no packet figures on kernel sockets"
    );
    assert!(get(admin, "/healthz").ends_with("\r\n\r\nok\n"));
}

#[test]
fn progress_lines_then_a_table() {
    let app = Appliance::start("echo", &["--workers", "1"]);
    let url = format!("ws://{}/", app.addr);
    let out = bench(&[
        "echo",
        "--url",
        &url,
        "--connections",
        "4",
        "--duration",
        "2100ms",
        "--warmup",
        "0s",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let progress: Vec<_> = stderr.lines().filter(|l| l.starts_with("bench:")).collect();
    assert!(progress.len() >= 2, "a progress line each second: {stderr}");
    assert!(progress
        .iter()
        .all(|l| l.contains("msg/s") && l.contains("p99")));
    let table = String::from_utf8_lossy(&out.stdout);
    for row in ["rate", "round trip", "p99.9", "errors       mismatches 0"] {
        assert!(table.contains(row), "{row} missing from {table}");
    }
}

#[test]
fn tcp_load_against_tcp_echo() {
    let app = Appliance::start("tcp-echo", &["--workers", "1"]);
    let out = bench(&[
        "tcp",
        "--addr",
        &app.addr.to_string(),
        "--connections",
        "10",
        "--depth",
        "8",
        "--size",
        "1000",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(num(&stdout, "messages") > 100.0, "{stdout}");
    assert_eq!(num(&stdout, "mismatches"), 0.0);
    assert_eq!(field(&stdout, "bench"), "tcp");
}

#[test]
fn idle_connections_from_many_source_addresses_with_server_memory() {
    let app = Appliance::start("echo", &["--workers", "1"]);
    let url = format!("ws://{}/", app.addr);
    let pid = app.pid().to_string();
    let out = bench(&[
        "conns",
        "--url",
        &url,
        "--connections",
        "2000",
        "--hold",
        "1500ms",
        "--source-range",
        "127.0.0.0/8",
        "--server-pid",
        &pid,
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(num(&stdout, "ready"), 2000.0);
    assert!(num(&stdout, "connect_per_s") > 0.0);
    let rss = num(&stdout, "server_rss_per_conn");
    assert!(
        (0.0..16384.0).contains(&rss),
        "plausible server memory per connection: {rss}"
    );
}

#[test]
fn an_unreachable_server_fails_with_the_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let out = bench(&[
        "echo",
        "--url",
        &format!("ws://127.0.0.1:{port}/"),
        "--connections",
        "3",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("hioload-ws: error: "), "{stderr}");
    assert!(
        last.contains("3 failed connections") && last.contains("refused"),
        "{last}"
    );
}

#[test]
fn bad_flags_are_one_clear_line() {
    let out = bench(&["echo", "--url", "http://x/"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with ws://"));
    let out = bench(&["conns", "--source-range", "10.0.0.0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--source-range"));
}

#[test]
fn admin_off_and_admin_port_clash_are_reported() {
    let app = Appliance::start("echo", &["--admin", "off"]);
    assert_eq!(app.admin(), None);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_hioload-ws"))
        .args([
            "echo",
            "--no-dpdk",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("--admin {addr}")) && stderr.contains("--admin off"),
        "{stderr}"
    );
}

/// The value of the sample `series` (name and labels) in the appliance's `/metrics`, waiting up
/// to a second for it to reach `at_least` (workers publish once per loop iteration).
fn sample(admin: std::net::SocketAddr, series: &str, at_least: f64) -> f64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        let metrics = get(admin, "/metrics");
        let v = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|r| r.trim().parse::<f64>().ok())
            })
            .unwrap_or_else(|| panic!("{series} missing from:\n{metrics}"));
        if v >= at_least || std::time::Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn websocket_figures_count_frames_close_codes_and_refused_handshakes() {
    let app = Appliance::start("echo", &["--workers", "1"]);
    let admin = app.admin().expect("admin endpoint announced");
    let url = format!("ws://{}/", app.addr);
    let out = bench(&[
        "echo",
        "--url",
        &url,
        "--connections",
        "5",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
    ]);
    assert!(out.status.success());
    // A plain HTTP request is refused with 426, and counted.
    let refused = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(app.addr).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        r
    };
    assert!(refused.starts_with("HTTP/1.1 426"), "{refused}");
    let w = "{worker=\"0\",";
    assert_eq!(
        sample(
            admin,
            &format!("hioload_ws_handshake_failures_total{w}reason=\"426\"}}"),
            1.0
        ),
        1.0
    );
    // The generator leaves with close 1000; the server answers each in kind.
    assert_eq!(
        sample(
            admin,
            &format!("hioload_ws_close_received_total{w}code=\"1000\"}}"),
            5.0
        ),
        5.0
    );
    assert_eq!(
        sample(
            admin,
            &format!("hioload_ws_close_sent_total{w}code=\"1000\"}}"),
            5.0
        ),
        5.0
    );
    let got = sample(
        admin,
        &format!("hioload_ws_messages_received_total{w}opcode=\"binary\"}}"),
        1.0,
    );
    let sent = sample(
        admin,
        &format!("hioload_ws_messages_sent_total{w}opcode=\"binary\"}}"),
        got,
    );
    assert!(
        got > 100.0 && sent == got,
        "every binary message echoed: {got} in, {sent} out"
    );
    let bytes = sample(
        admin,
        &format!("hioload_ws_payload_received_bytes_total{w}opcode=\"binary\"}}"),
        got * 32.0,
    );
    assert_eq!(bytes, got * 32.0, "32-byte payloads");
}

#[test]
fn dashboard_page_and_its_live_socket() {
    let app = Appliance::start("echo", &["--workers", "2"]);
    let admin = app.admin().expect("admin endpoint announced");
    let page = get(admin, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("text/html") && page.contains("<title>hioload-ws</title>"));
    let (mut ws, _) = tungstenite::connect(format!("ws://{admin}/ws")).expect("dashboard socket");
    let mut snapshots = Vec::new();
    for _ in 0..2 {
        match ws.read().expect("a snapshot") {
            tungstenite::Message::Text(t) => snapshots.push(t.to_string()),
            other => panic!("expected a JSON text frame, got {other:?}"),
        }
    }
    let t = |s: &str| num(s, "t");
    assert!(
        t(&snapshots[1]) > t(&snapshots[0]),
        "snapshots advance: {snapshots:?}"
    );
    assert_eq!(
        snapshots[0].matches("\"busy_seconds\"").count(),
        2,
        "one entry per worker"
    );
    assert_eq!(field(&snapshots[0], "transport"), "kernel sockets");
}

/// Threads of process `pid`, from /proc.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("/proc/PID/task")
        .count()
}

#[test]
fn two_hundred_dashboard_viewers_cost_no_thread() {
    let app = Appliance::start("echo", &["--workers", "1"]);
    let admin = app.admin().expect("admin endpoint announced");
    // Let the startup threads (workers, admin, signals) settle.
    let (mut first, _) = tungstenite::connect(format!("ws://{admin}/ws")).expect("dashboard");
    first.read().expect("a snapshot");
    // Under load a startup thread (the SIGHUP watcher, say) may start after the first snapshot:
    // wait until the count has held for 300 ms.
    let mut before = threads(app.pid());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut steady_since = std::time::Instant::now();
    while steady_since.elapsed() < std::time::Duration::from_millis(300)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let now = threads(app.pid());
        if now != before {
            before = now;
            steady_since = std::time::Instant::now();
        }
    }
    let mut viewers: Vec<_> = (0..200)
        .map(|_| {
            let (ws, _) =
                tungstenite::connect(format!("ws://{admin}/ws")).expect("dashboard socket");
            ws
        })
        .collect();
    // Every viewer is fed: two snapshots each, the second pushed to all of them at once.
    for ws in &mut viewers {
        for _ in 0..2 {
            match ws.read().expect("a snapshot") {
                tungstenite::Message::Text(t) => assert!(t.starts_with("{\"t\":")),
                other => panic!("expected a JSON text frame, got {other:?}"),
            }
        }
    }
    assert_eq!(
        threads(app.pid()),
        before,
        "200 more viewers, no more threads"
    );
    // Scrapes keep working while they watch.
    assert!(get(admin, "/metrics").starts_with("HTTP/1.1 200"));
    drop(viewers);
    drop(first);
}

#[test]
fn probes_name_the_session_with_the_most_queued_output() {
    let app = Appliance::start(
        "echo",
        &["--workers", "1", "--backpressure-limit", "256KiB"],
    );
    let admin = app.admin().expect("admin endpoint announced");
    // A client that sends without reading: its echoes queue up in the appliance.
    let addr = app.addr;
    std::thread::spawn(move || {
        let stream = std::net::TcpStream::connect(addr).expect("connect");
        let (mut ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).expect("handshake");
        let big = vec![7u8; 1 << 20];
        for _ in 0..64 {
            if ws.send(tungstenite::Message::binary(big.clone())).is_err() {
                break;
            }
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let probes = get(admin, "/debug/probes");
        assert!(probes.starts_with("HTTP/1.1 200"), "{probes}");
        let body = &probes[probes.find("\r\n\r\n").expect("a body") + 4..];
        let queued = body
            .find("\"most_queued\":[{")
            .map(|i| num(&body[i..], "bytes"))
            .unwrap_or(0.0);
        if queued > 256.0 * 1024.0 {
            assert!(body.contains("\"conn\":\"0."), "{body}");
            assert!(num(body, "backpressure_pauses") > 0.0, "{body}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no queued session reported: {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn pubsub_load_counts_deliveries_in_order_at_a_rate_and_as_fast_as_acks() {
    let app = Appliance::start("pubsub", &["--workers", "2"]);
    let admin = app.admin().expect("admin endpoint announced");
    let url = format!("ws://{}/", app.addr);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "pubsub",
            "--url",
            &url,
            "--connections",
            "60",
            "--channels",
            "3",
            "--publishers",
            "3",
            "--duration",
            "1s",
            "--warmup",
            "500ms",
            "--json",
            "--server-admin",
        ];
        let admin = admin.to_string();
        args.push(&admin);
        args.extend_from_slice(extra);
        let out = bench(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout.trim().to_string()
    };
    // 300 publishes a second to channels of 21 members (20 listeners and a publisher each).
    let line = run(&["--rate", "300"]);
    assert_eq!(field(&line, "bench"), "pubsub");
    assert_eq!(num(&line, "ready"), 63.0, "{line}");
    let published = num(&line, "publishes");
    assert!(
        (300.0..=600.0).contains(&published),
        "1.5 s at 300/s: {line}"
    );
    let rate = num(&line, "msg_per_s");
    assert!(
        (300.0 * 21.0 * 0.7..=300.0 * 21.0 * 1.3).contains(&rate),
        "deliveries/s {rate}: {line}"
    );
    assert_eq!(
        (num(&line, "gaps"), num(&line, "mismatches")),
        (0.0, 0.0),
        "{line}"
    );
    assert!(num(&line, "p50_us") > 0.0 && num(&line, "p99_us") >= num(&line, "p50_us"));
    assert!(num(&line, "server_busy_us_per_msg") > 0.0, "{line}");
    // As fast as acks come back: many more.
    let fast = run(&["--depth", "8"]);
    assert!(num(&fast, "msg_per_s") > 3.0 * rate, "{fast}");
    assert_eq!(
        (num(&fast, "gaps"), num(&fast, "mismatches")),
        (0.0, 0.0),
        "{fast}"
    );
}

/// The one JSON line of a successful `bench --json` run.
fn json_line(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.trim().to_owned()
}

#[test]
fn deflate_loads_are_verified_and_shrink_what_goes_on_the_wire() {
    // Echo: JSON-like text, compressed both ways; every echo is checked byte for byte.
    let app = Appliance::start("echo", &["--workers", "1"]);
    let admin = app.admin().expect("admin endpoint announced");
    let url = format!("ws://{}/", app.addr);
    let out = bench(&[
        "echo",
        "--url",
        &url,
        "--connections",
        "4",
        "--depth",
        "2",
        "--size",
        "1KiB",
        "--duration",
        "500ms",
        "--warmup",
        "200ms",
        "--text",
        "--payload",
        "json",
        "--deflate",
        "--json",
    ]);
    let line = json_line(&out);
    let line = line.as_str();
    assert!(num(line, "messages") > 100.0, "{line}");
    assert_eq!(
        (num(line, "mismatches"), num(line, "failed_sessions")),
        (0.0, 0.0)
    );
    let figure = |f: &str| format!("hioload_ws_deflate_total{{worker=\"0\",figure=\"{f}\"}} ");
    assert_eq!(
        sample(
            admin,
            "hioload_ws_deflate_sessions_total{worker=\"0\",extension=\"permessage-deflate\"} ",
            4.0
        ),
        4.0
    );
    let inflated = sample(admin, &figure("inflated_messages"), 100.0);
    let compressed = sample(admin, &figure("compressed_messages"), 100.0);
    assert!(
        inflated >= 100.0 && compressed >= 100.0,
        "{inflated} {compressed}"
    );
    let (before, after) = (
        sample(admin, &figure("compressed_in_bytes"), 0.0),
        sample(admin, &figure("compressed_out_bytes"), 0.0),
    );
    assert!(after * 2.0 < before, "JSON shrinks: {before} -> {after}");
    drop(app);

    // Pub/sub: members with deflate get each message compressed once for all of them.
    let app = Appliance::start("pubsub", &["--workers", "1"]);
    let admin = app.admin().expect("admin endpoint announced");
    let url = format!("ws://{}/", app.addr);
    let out = bench(&[
        "pubsub",
        "--url",
        &url,
        "--connections",
        "30",
        "--channels",
        "2",
        "--publishers",
        "2",
        "--size",
        "1KiB",
        "--duration",
        "500ms",
        "--warmup",
        "300ms",
        "--payload",
        "json",
        "--deflate",
        "--json",
    ]);
    let line = json_line(&out);
    let line = line.as_str();
    assert!(num(line, "messages") > 100.0, "{line}");
    assert_eq!(
        (num(line, "mismatches"), num(line, "gaps")),
        (0.0, 0.0),
        "{line}"
    );
    // 15 members a channel: each compression served many deliveries.
    let compressed = sample(
        admin,
        "hioload_pubsub_compressed_total{worker=\"0\"} ",
        100.0,
    );
    let publishes = sample(admin, "hioload_pubsub_publishes_total{worker=\"0\"} ", 0.0);
    let deliveries = sample(admin, "hioload_pubsub_deliveries_total{worker=\"0\"} ", 0.0);
    assert!(
        compressed >= 100.0 && compressed <= publishes + 100.0,
        "{compressed} compressions for {publishes} publishes"
    );
    assert!(
        deliveries >= 10.0 * compressed,
        "{deliveries} deliveries for {compressed} compressions"
    );
}
