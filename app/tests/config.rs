//! Settings that change while serving: `GET`/`PUT /config`, `--config FILE` and SIGHUP.

mod common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{http_get, http_put, Appliance};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

/// An open session that sends nothing; returns how long until the appliance closed it and with
/// which code (bounded by `limit`).
fn idle_session_closed_within(app: &Appliance, limit: Duration) -> Option<(Duration, CloseCode)> {
    let stream = TcpStream::connect(app.addr).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    let (mut ws, _): (WebSocket<TcpStream>, _) =
        tungstenite::client(format!("ws://{}/", app.addr), stream).unwrap();
    let start = Instant::now();
    match ws.read() {
        Ok(Message::Close(Some(f))) => Some((start.elapsed(), f.code)),
        _ => None,
    }
}

#[test]
fn put_config_validates_everything_then_applies_to_running_workers() {
    let app = Appliance::start("echo", &["--workers", "2", "--idle-timeout", "120s"]);
    let admin = app.admin().expect("admin endpoint");
    let before = http_get(admin, "/config");
    assert!(before.starts_with("HTTP/1.1 200"), "{before}");
    assert!(before.contains("idle_timeout = \"2m\""), "{before}");
    // Bad values: 400 with the reason, and nothing changes.
    for (doc, why) in [
        ("idle_timeout = \"1s\"\nmax_frame = \"1GiB\"", "max_frame"),
        ("idle_timeout = \"later\"", "idle_timeout"),
        ("workers = 4", "not a setting that changes at run time"),
    ] {
        let r = http_put(admin, "/config", doc);
        assert!(
            r.starts_with("HTTP/1.1 400") && r.contains(why),
            "{doc}: {r}"
        );
    }
    assert_eq!(
        http_get(admin, "/config").split("\r\n\r\n").nth(1),
        before.split("\r\n\r\n").nth(1),
        "nothing was half-applied"
    );
    // A session opened before the change is closed by the new idle timeout.
    let app_ref = &app;
    std::thread::scope(|s| {
        let idle = s.spawn(|| idle_session_closed_within(app_ref, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        let r = http_put(
            admin,
            "/config",
            "idle_timeout = \"1s\"\nlog_level = \"debug\"\n",
        );
        assert!(
            r.starts_with("HTTP/1.1 200") && r.contains("idle_timeout = \"1s\""),
            "{r}"
        );
        let (after, code) = idle
            .join()
            .unwrap()
            .expect("closed by the new idle timeout");
        assert_eq!(code, CloseCode::Away);
        assert!(after < Duration::from_secs(5), "closed after {after:?}");
    });
    // The log level changed too: per-session events are logged at debug.
    app.wait_for_log(&["idle timeout"]);
}

#[test]
fn a_config_file_under_the_flags_and_sighup_reloads_it() {
    let path = std::env::temp_dir().join(format!("hioload-config-{}.toml", std::process::id()));
    std::fs::write(&path, "workers = 3\nidle_timeout = \"120s\"\n").unwrap();
    let app = Appliance::start(
        "echo",
        &["--config", path.to_str().unwrap(), "--workers", "1"],
    );
    // The flag wins over the file's `workers = 3`.
    app.wait_for_log(&["workers: 1,"]);
    let admin = app.admin().expect("admin endpoint");
    assert!(
        http_get(admin, "/config").contains("idle_timeout = \"2m\""),
        "the file applied"
    );
    // Change the file and send SIGHUP: the new idle timeout reaches a session already open.
    std::fs::write(&path, "workers = 3\nidle_timeout = \"1s\"\n").unwrap();
    let app_ref = &app;
    std::thread::scope(|s| {
        let idle = s.spawn(|| idle_session_closed_within(app_ref, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        app_ref.signal("HUP");
        let (after, code) = idle
            .join()
            .unwrap()
            .expect("closed by the reloaded idle timeout");
        assert_eq!(code, CloseCode::Away);
        assert!(after < Duration::from_secs(5), "closed after {after:?}");
    });
    app.wait_for_log(&["SIGHUP: settings reloaded"]);
    // A broken file changes nothing and says why.
    std::fs::write(&path, "idle_timeout = \"whenever\"\n").unwrap();
    app.signal("HUP");
    app.wait_for_log(&["SIGHUP: nothing changed", "idle_timeout"]);
    assert!(http_get(admin, "/config").contains("idle_timeout = \"1s\""));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_missing_config_file_is_one_clear_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hioload-ws"))
        .args(["echo", "--no-dpdk", "--config", "/nonexistent/hioload.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .trim()
            .starts_with("hioload-ws: error: --config /nonexistent/hioload.toml"),
        "{stderr}"
    );
}
