//! Flags: help, version, and one clear line for every kind of bad input.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hioload-ws"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_every_flag_with_its_default() {
    let (code, out, _) = run(&["echo", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--no-dpdk",
        "--listen",
        "--workers",
        "--cpus",
        "--max-message",
        "--max-frame",
        "--max-connections",
        "--idle-timeout",
        "--ping-interval",
        "--handshake-timeout",
        "--shutdown-timeout",
        "--log-level",
        "--log-format",
        "--backpressure-limit",
        "--deflate",
        "--deflate-window-bits",
        "--deflate-client-window-bits",
        "--deflate-server-takeover",
        "--deflate-client-takeover",
        "--deflate-level",
        "--deflate-min-size",
    ] {
        assert!(out.contains(flag), "{flag} missing from help:\n{out}");
    }
    for default in [
        "[default: 127.0.0.1:8080;",
        "[default: 64MiB]",
        "[default: 5s]",
        "[default: 120s]",
        "[default: 10s]",
    ] {
        assert!(out.contains(default), "{default} missing from help:\n{out}");
    }
    let (_, out, _) = run(&["tcp-echo", "--help"]);
    assert!(out.contains("[default: 127.0.0.1:9002;"));
}

#[test]
fn version_names_the_build() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("hioload-ws 0.") && out.contains("rev "),
        "{out}"
    );
}

#[test]
fn bad_values_are_rejected_with_one_clear_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["echo", "--max-message", "12XB"], "invalid size unit"),
        (&["echo", "--idle-timeout", "soon"], "invalid duration"),
        (&["echo", "--listen", "localhost"], "--listen"),
        (&["echo", "--cpus", "3-1"], "invalid CPU list"),
        (&["echo", "--workers", "0"], "--workers"),
        (&["echo", "--log-format", "xml"], "--log-format"),
        (&["pubsub", "--presence-interval", "1m"], "at most 10s"),
        (
            &["pubsub", "--presence-interval", "often"],
            "invalid duration",
        ),
        (&["echo", "--deflate", "maybe"], "neither `on` nor `off`"),
        (&["echo", "--deflate-window-bits", "8"], "9..=15"),
        (
            &["broadcast", "--deflate-client-window-bits", "16"],
            "9..=15",
        ),
        (&["pubsub", "--deflate-level", "10"], "0..=9"),
        (&["echo", "--deflate-min-size", "lots"], "invalid size"),
        (&["bench", "echo", "--payload", "xml"], "--payload"),
    ];
    for (args, needle) in cases {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn runtime_configuration_errors_are_one_line_and_exit_1() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["echo", "--eal", "-l 0 --no-huge"],
            if cfg!(feature = "dpdk") {
                "the DPDK transport needs EAL arguments"
            } else {
                "--eal needs the DPDK transport"
            },
        ),
        (
            &["echo", "--no-dpdk", "--ip", "10.0.0.2/24"],
            if cfg!(feature = "dpdk") {
                "cannot be combined with --no-dpdk"
            } else {
                "--ip needs the DPDK transport, which this build does not have"
            },
        ),
        (
            &["bench", "pubsub", "--churners", "10", "--churn-rate", "0"],
            "--churn-rate 0: must be more than 0",
        ),
        (
            &["bench", "tcp", "--deflate"],
            "--deflate: raw TCP has no WebSocket compression",
        ),
        (
            &["echo", "--max-frame", "2MiB", "--max-message", "1MiB"],
            "--max-frame",
        ),
        (&["echo", "--cpus", "4095"], "CPU 4095 is not available"),
        (
            &["echo", "--log-level", "=bad=filter="],
            "invalid --log-level",
        ),
        (&["echo", "--max-connections", "0"], "--max-connections"),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        // With the `dpdk` feature, DPDK is the default transport: the kernel-path cases say so.
        let mut args = args.to_vec();
        if cfg!(feature = "dpdk") && i >= 2 {
            args.insert(1, "--no-dpdk");
        }
        let (code, _, err) = run(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("hioload-ws: error: ") && last.contains(needle),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn address_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = run(&[
        "echo",
        "--no-dpdk",
        "--listen",
        &addr,
        "--accept-mode",
        "shared",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}

#[test]
fn missing_libdpdk_stops_the_dpdk_build_naming_the_package() {
    // pkg-config pointed at an empty search path cannot find libdpdk: the build script must say
    // what to install. (The release profile reuses the build-script dependencies already built.)
    let out = Command::new(env!("CARGO"))
        .args([
            "check",
            "--release",
            "--quiet",
            "-p",
            "hioload-dpdk-sys",
            "--offline",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("PKG_CONFIG_LIBDIR", "/nonexistent")
        .env("PKG_CONFIG_PATH", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "built without libdpdk?\n{err}");
    assert!(err.contains("apt-get install libdpdk-dev"), "{err}");
}
