//! Starts the real `hioload-ws` binary for integration tests and cleans up after it.
#![allow(dead_code)] // each test binary uses its own subset

pub mod fanout;
pub mod postgres;
pub mod pubsub;
pub mod redis;
pub mod scaleout;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running appliance; killed (by its PID, via `Child`) if the test did not stop it.
pub struct Appliance {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Appliance {
    /// Start `hioload-ws MODE --listen 127.0.0.1:0 ARGS...` and wait for its startup line.
    pub fn start(mode: &str, args: &[&str]) -> Self {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        if cfg!(feature = "dpdk") {
            all.push("--no-dpdk"); // a DPDK build serves on DPDK unless told otherwise
        }
        all.extend_from_slice(args);
        Self::spawn(mode, &all)
    }

    fn spawn(mode: &str, args: &[&str]) -> Self {
        Self::spawn_then(mode, args, None::<(&str, fn())>).0
    }

    /// Spawn, and once `marker` appears in the log run `during` (in a thread) while waiting for
    /// the startup line; returns what `during` returned.
    fn spawn_then<T: Send + 'static>(
        mode: &str,
        args: &[&str],
        during: Option<(&str, impl FnOnce() -> T + Send + 'static)>,
    ) -> (Self, Option<T>) {
        // Tests run in parallel: each appliance's admin endpoint gets a free port unless the
        // test chooses.
        let admin: &[&str] = if args.contains(&"--admin") {
            &[]
        } else {
            &["--admin", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_hioload-ws"))
            .arg(mode)
            .args(["--log-format", "text"])
            .args(admin)
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hioload-ws");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                // Into the log first: once `start` returns, the startup line is in the log.
                sink.lock().unwrap().push(line.clone());
                if let Some(i) = line.find("listening on ") {
                    let rest = &line[i + "listening on ".len()..];
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let addr = url
                        .split("://")
                        .nth(1)
                        .unwrap_or_default()
                        .trim_end_matches('/');
                    let _ = tx.send(addr.parse::<SocketAddr>().ok());
                }
            }
        });
        let during = during.map(|(marker, f)| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !log.lock().unwrap().iter().any(|l| l.contains(marker)) {
                assert!(
                    Instant::now() < deadline,
                    "{marker:?} never logged: {:?}",
                    log.lock().unwrap()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            std::thread::spawn(f)
        });
        // DPDK waits up to 10 s for a port's link before it announces itself.
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(a)) => a,
            other => {
                let _ = child.kill();
                panic!(
                    "no startup line ({other:?}); log: {:?}",
                    log.lock().unwrap()
                );
            }
        };
        let out = during.map(|t| t.join().expect("the client thread panicked"));
        (Self { child, addr, log }, out)
    }

    /// Start `hioload-ws MODE` on DPDK over a new TAP device `iface` with address
    /// 198.18.NET.2/24, give the kernel side 198.18.NET.1, and wait until it serves.
    pub fn start_dpdk(mode: &str, iface: &str, net: u8, args: &[&str]) -> Self {
        Self::start_dpdk_on(mode, "0", iface, net, args)
    }

    /// Like [`Appliance::start_dpdk`], with EAL's lcore list (one worker per lcore).
    pub fn start_dpdk_on(mode: &str, lcores: &str, iface: &str, net: u8, args: &[&str]) -> Self {
        let eal = format!("-l {lcores} --no-huge -m 512 --no-pci --no-shconf --file-prefix {iface} --vdev=net_tap0,iface={iface}");
        let ip = format!("198.18.{net}.2/24");
        let mut all = vec!["--eal", eal.as_str(), "--ip", ip.as_str()];
        all.extend_from_slice(args);
        let app = Self::spawn(mode, &all);
        let kernel_ip = format!("198.18.{net}.1/24");
        // The kernel drops what it would queue to the TAP beyond `txqueuelen` packets (1,000 by
        // default); a test's burst of a thousand messages and their ACKs must not lose its tail
        // there, or the client's retransmission comes a whole RTO later. 20,000: the SYN flood
        // test's whole burst.
        for cmd in [
            vec!["addr", "add", kernel_ip.as_str(), "dev", iface],
            vec!["link", "set", iface, "txqueuelen", "20000"],
            vec!["link", "set", iface, "up"],
        ] {
            let ok = Command::new("ip")
                .args(&cmd)
                .status()
                .expect("run ip")
                .success();
            assert!(ok, "ip {cmd:?} failed");
        }
        app
    }

    /// Start `hioload-ws MODE` on DPDK as the server end of a `net_memif` link on socket
    /// `/tmp/NAME.sock`, with address 198.18.NET.1/24, on lcore 0, and run `client` (which
    /// must connect the memif's other end) once its port has started: a memif client connects
    /// once and does not retry, and the appliance only announces itself once linked.
    pub fn start_dpdk_memif<T: Send + 'static>(
        mode: &str,
        name: &str,
        net: u8,
        args: &[&str],
        client: impl FnOnce() -> T + Send + 'static,
    ) -> (Self, T) {
        Self::start_dpdk_memif_on(mode, "0", name, net, args, client)
    }

    /// [`Appliance::start_dpdk_memif`] on EAL lcores `lcores` (one worker and queue pair each).
    pub fn start_dpdk_memif_on<T: Send + 'static>(
        mode: &str,
        lcores: &str,
        name: &str,
        net: u8,
        args: &[&str],
        client: impl FnOnce() -> T + Send + 'static,
    ) -> (Self, T) {
        let eal = format!(
            "-l {lcores} --no-huge -m 256 --no-pci --no-shconf --file-prefix {name} \
             --vdev=net_memif0,role=server,socket=/tmp/{name}.sock"
        );
        let ip = format!("198.18.{net}.1/24");
        let mut all = vec!["--eal", eal.as_str(), "--ip", ip.as_str()];
        all.extend_from_slice(args);
        let (app, out) = Self::spawn_then(
            mode,
            &all,
            Some(("port started; waiting up to 10 s for its link", client)),
        );
        (app, out.expect("the client ran"))
    }

    /// The admin endpoint's address, from the startup log.
    pub fn admin(&self) -> Option<SocketAddr> {
        self.log.lock().unwrap().iter().find_map(|l| {
            let rest =
                &l[l.find("admin endpoint on http://")? + "admin endpoint on http://".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal to the appliance (it is our child; we know its PID).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Wait for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Wait until the log contains every one of `needles` (the log is read by a background
    /// thread, so it can lag behind what the appliance has already done). Panics after 10 s.
    pub fn wait_for_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.log_text();
            if needles.iter().all(|n| text.contains(n)) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "log never contained {needles:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Resident set size in bytes, from /proc.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kb * 1024
    }

    /// User plus system CPU time in clock ticks, from /proc.
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("read /proc stat");
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Send `data` over TCP to `addr`, half-close, and return everything the server sent back before
/// it closed (writing and reading concurrently, so large payloads cannot deadlock).
pub fn tcp_round_trip(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = s.try_clone().unwrap();
    let sent = data.to_vec();
    let writer = std::thread::spawn(move || {
        w.write_all(&sent).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back)
        .expect("the server closes after echoing everything");
    writer.join().unwrap();
    back
}

/// The value of `"key":` in a flat JSON line.
pub fn json_field(json: &str, key: &str) -> String {
    let pat = format!("\"{key}\":");
    let start = json
        .find(&pat)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + pat.len();
    json[start..]
        .split([',', '}'])
        .next()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}

/// The number at `"key":` in a flat JSON line.
pub fn json_number(json: &str, key: &str) -> f64 {
    json_field(json, key)
        .parse()
        .unwrap_or_else(|_| panic!("{key} is not a number in {json}"))
}

/// `GET path` from an HTTP server (the admin endpoint); the whole response, head included.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("the admin endpoint accepts");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send the request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read the response");
    resp
}

/// `PUT path` with `body` to an HTTP server (the admin endpoint); the whole response.
pub fn http_put(addr: SocketAddr, path: &str, body: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("the admin endpoint accepts");
    write!(
        s,
        "PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read the response");
    resp
}

/// `METHOD path` with `body` and extra header lines (`"Authorization: Bearer x\r\n"`) to an
/// HTTP server; the whole response.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("the server accepts");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read the response");
    resp
}

/// The part of the graceful-shutdown tests both transports share: each client gets one echo, then
/// sends one more message that is not yet answered when SIGTERM comes; every client must still get
/// that echo, after which `then` checks what follows (the close 1001).
pub fn sigterm_with_messages_in_flight(
    app: &Appliance,
    clients: &mut [tungstenite::WebSocket<std::net::TcpStream>],
    mut then: impl FnMut(&mut tungstenite::WebSocket<std::net::TcpStream>),
) {
    use tungstenite::Message;
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("before {i}"))).unwrap();
        assert_eq!(ws.read().unwrap(), Message::text(format!("before {i}")));
    }
    // One more message each, not yet answered when the signal comes.
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("last {i}"))).unwrap();
    }
    app.signal("TERM");
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(
            ws.read().unwrap(),
            Message::text(format!("last {i}")),
            "the echo of a message sent before the signal"
        );
        then(ws);
    }
}

/// The value of the sample `series` (name and labels, e.g. `hioload_pushes_total{worker="0",outcome="queued"}`)
/// in the appliance's `/metrics`; `None` if it has none.
pub fn metric(admin: SocketAddr, series: &str) -> Option<f64> {
    http_get(admin, "/metrics").lines().find_map(|l| {
        l.strip_prefix(series)
            .filter(|r| r.starts_with(' '))
            .and_then(|r| r.trim().parse::<f64>().ok())
    })
}

/// The sum of a metric over workers (every sample whose series starts with `name{` and has the
/// extra `labels`, e.g. `outcome="dropped"`).
pub fn metric_sum(admin: SocketAddr, name: &str, labels: &str) -> f64 {
    http_get(admin, "/metrics")
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// Wait up to `limit` for `check` to hold, polling; returns whether it did.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port free right now (for a server a test starts itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `hioload-ws pubsub --no-dpdk --listen 127.0.0.1:0 --admin off ARGS...` must refuse to start:
/// exit status 1 and one line on standard error, containing `expect`.
pub fn pubsub_refuses_to_start(args: &[&str], expect: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_hioload-ws"))
        .args([
            "pubsub",
            "--no-dpdk",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "off",
        ])
        .args(args)
        .output()
        .expect("run hioload-ws");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(expect), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}
