//! The kernel worker keeps fan-out bounded per loop iteration: a connection whose input makes
//! many pushes (a publish to a big channel) is read in small pieces, and an iteration's reads
//! stop once it has made its budget of pushes, so that what was queued is written before more
//! is read.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hioload_stack::kernel::{KernelConfig, Server};
use hioload_stack::{ConnCtx, ConnId, Prepared, Service, Verdict};

/// The first connection listens; every byte any other connection sends makes 100 pushes to it
/// (empty ones: counted like any push, nothing to write).
struct Fan {
    listener: Option<ConnId>,
    seen: Arc<AtomicUsize>,
}

impl Service for Fan {
    type Conn = ();
    type Message = ();
    fn open(&mut self, id: ConnId, _: SocketAddr, cx: &mut ConnCtx<'_, ()>) {
        if self.listener.is_none() {
            self.listener = Some(id);
            cx.accept_pushes(true);
        }
    }
    fn on_data(&mut self, _: &mut (), input: &mut [u8], cx: &mut ConnCtx<'_, ()>) -> Verdict {
        let empty = Prepared::from(Vec::new());
        if let Some(to) = self.listener {
            for _ in 0..input.len() * 100 {
                cx.push(to, &empty).expect("the listener takes pushes");
            }
        }
        self.seen.fetch_add(input.len(), Ordering::Relaxed);
        Verdict::Continue
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn input_that_fans_out_is_read_a_budget_at_a_time() {
    const SENT: usize = 64 * 1024;
    let seen = Arc::new(AtomicUsize::new(0));
    let seen2 = Arc::clone(&seen);
    let server = Server::start(
        KernelConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 1,
            // 4 KiB reads: each makes 409,600 pushes, over the budget of one iteration.
            read_buffer: 4096,
            ..KernelConfig::default()
        },
        move |_| Fan {
            listener: None,
            seen: Arc::clone(&seen2),
        },
    )
    .expect("server starts");
    let _listener = TcpStream::connect(server.local_addr()).expect("connect");
    std::thread::sleep(Duration::from_millis(100));
    let mut publisher = TcpStream::connect(server.local_addr()).expect("connect");
    std::thread::sleep(Duration::from_millis(100));
    let busy = || server.meters()[0].snapshot().busy_iterations;
    let before = busy();
    publisher.write_all(&[7u8; SENT]).expect("send");
    wait_for("the input to be handled", || {
        seen.load(Ordering::Relaxed) == SENT
    });
    // The meter is published every few milliseconds.
    std::thread::sleep(Duration::from_millis(200));
    let iterations = busy() - before;
    // Sixteen reads, one per iteration; without the budget the worker reads four per turn and
    // handles all of it in about four iterations, writing nothing in between.
    assert!(
        iterations >= 16,
        "{iterations} busy iterations for {} reads that each fan out over the budget",
        SENT / 4096
    );
    server.shutdown(Duration::from_secs(1));
    server.join().expect("server stops");
}
