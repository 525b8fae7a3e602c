//! The raw TCP echo appliance.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::Appliance;

#[test]
fn echoes_bytes_and_closes_after_half_close() {
    let app = Appliance::start("tcp-echo", &["--workers", "2"]);
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    // 4 MiB in, 4 MiB out, byte for byte, written and read concurrently.
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 253) as u8).collect();
    let back = common::tcp_round_trip(app.addr, &data);
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echo differs");
}

#[test]
fn idle_connections_are_closed() {
    let app = Appliance::start("tcp-echo", &["--idle-timeout", "200ms"]);
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(s.read(&mut buf).unwrap(), 0);
}

#[test]
fn sigterm_closes_connections_and_exits_0() {
    let mut app = Appliance::start("tcp-echo", &[]);
    let mut s = TcpStream::connect(app.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"x").unwrap();
    let mut buf = [0u8; 1];
    s.read_exact(&mut buf).unwrap();
    app.signal("TERM");
    assert_eq!(s.read(&mut buf).unwrap(), 0, "server closes the connection");
    drop(s);
    assert_eq!(
        app.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        app.log_text()
    );
}
