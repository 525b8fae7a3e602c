//! The kernel dialer against the kernel server, over loopback.

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Echo, Greeter, GREETING};
use hioload_stack::kernel::dialer::{self, DialConfig};
use hioload_stack::kernel::{KernelConfig, Server};
use hioload_stack::meter::{WorkerMeter, WorkerRecorder};
use hioload_stack::{ConnCtx, ConnId, Service, Verdict};

/// Echo that also records where each connection came from.
struct Sources(Arc<Mutex<BTreeSet<IpAddr>>>);

impl Service for Sources {
    type Conn = ();
    type Message = ();
    fn open(&mut self, id: ConnId, peer: SocketAddr, cx: &mut ConnCtx<'_, ()>) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(peer.ip());
        }
        Echo.open(id, peer, cx)
    }
    fn on_data(&mut self, c: &mut (), i: &mut [u8], cx: &mut ConnCtx<'_, ()>) -> Verdict {
        Echo.on_data(c, i, cx)
    }
}

#[test]
fn dialed_connections_are_served_from_a_range_of_source_addresses() {
    const COUNT: usize = 300;
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let seen2 = Arc::clone(&seen);
    let server = Server::start(
        KernelConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..KernelConfig::default()
        },
        move |_| Sources(Arc::clone(&seen2)),
    )
    .expect("server starts");
    let done = Arc::new(AtomicBool::new(false));
    let greeter = Greeter {
        expect: COUNT,
        done: Arc::clone(&done),
        ..Greeter::default()
    };
    let meters = WorkerMeter::for_workers(1);
    let (greeter, report) = dialer::run(
        &DialConfig {
            remote: server.local_addr(),
            connections: COUNT,
            sources: Some((Ipv4Addr::new(127, 0, 1, 1), 7)),
            max_connecting: 16,
            read_buffer: 4096,
            busy_poll: false,
            grace: Duration::from_secs(1),
            worker: 0,
        },
        greeter,
        &done,
        WorkerRecorder::new(Arc::clone(&meters), 0),
    );
    assert_eq!(report.connected, COUNT as u64, "{report:?}");
    assert_eq!((report.connect_failed, report.errors), (0, 0), "{report:?}");
    assert_eq!(greeter.echoed, COUNT * GREETING.len());
    assert_eq!(greeter.closed, COUNT);
    let sources = seen.lock().unwrap().clone();
    let want: BTreeSet<IpAddr> = (1..=7).map(|i| IpAddr::from([127, 0, 1, i])).collect();
    assert_eq!(sources, want, "every source address of the range was used");
    assert!(meters[0].snapshot().busy_iterations > 0);
    server.shutdown(Duration::from_secs(1));
    server.join().expect("server stops");
}

#[test]
fn refused_connections_are_counted_with_their_reason() {
    // Bind and drop a listener, so the port is (almost certainly) closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let stop = AtomicBool::new(false);
    let cfg = DialConfig {
        remote: SocketAddr::from(([127, 0, 0, 1], port)),
        connections: 5,
        sources: None,
        max_connecting: 5,
        read_buffer: 4096,
        busy_poll: false,
        grace: Duration::ZERO,
        worker: 0,
    };
    let stopper = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        dialer::run(
            &cfg,
            Greeter::default(),
            &stop,
            WorkerRecorder::new(WorkerMeter::for_workers(0), 0),
        )
        .1
    });
    assert_eq!((stopper.connected, stopper.connect_failed), (0, 5));
    let reason = stopper.first_error.unwrap_or_default();
    assert!(reason.contains("refused"), "{reason}");
}
