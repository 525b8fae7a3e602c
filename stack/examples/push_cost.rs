//! What one more subscriber costs: a frame prepared once is pushed to N connections of a
//! worker, round after round, through the real connection driver (no network: each round the
//! outputs are drained as a transport would). Counts heap allocations with a counting global
//! allocator and times the push and the drain.
//!
//! ```sh
//! cargo run --release -p hioload-stack --example push_cost -- 10000 64 200
//! cargo run --release -p hioload-stack --example push_cost -- 10000 16384 50
//! ```
//!
//! Arguments: connections, frame bytes, rounds.

use std::alloc::System;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

use hioload_stack::driver::{Driver, DriverConfig};
use hioload_stack::{ConnCtx, ConnId, Ctx, Prepared, Service, Verdict};

/// The system allocator, counting (`stats_alloc`: no `unsafe` here).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Allocations and reallocations so far.
fn allocations() -> u64 {
    let s = GLOBAL.stats();
    (s.allocations + s.reallocations) as u64
}

/// Takes every connection's pushes; a message is a frame to push to all of them.
#[derive(Default)]
struct Fan {
    ids: Vec<ConnId>,
}

impl Service for Fan {
    type Conn = ();
    type Message = Prepared;

    fn open(&mut self, id: ConnId, _: SocketAddr, cx: &mut ConnCtx<'_, Prepared>) {
        cx.accept_pushes(true);
        self.ids.push(id);
    }

    fn on_data(&mut self, _: &mut (), _: &mut [u8], _: &mut ConnCtx<'_, Prepared>) -> Verdict {
        Verdict::Continue
    }

    fn on_message(&mut self, frame: Prepared, cx: &mut Ctx<'_, Prepared>) {
        let f = cx.push_all(&self.ids, &frame);
        assert_eq!(f.queued, self.ids.len(), "{f:?}");
    }
}

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let (n, size, rounds) = (arg(1, 10_000), arg(2, 64), arg(3, 100));
    let now = Instant::now();
    let mut d: Driver<Fan, ()> = Driver::detached(DriverConfig::default(), Fan::default());
    let peer = SocketAddr::from(([127, 0, 0, 1], 1));
    let slots: Vec<usize> = (0..n)
        .map(|_| {
            let s = d.insert(());
            d.open(s, peer, now);
            s
        })
        .collect();
    let frame = Prepared::from(vec![0x5a; size]);
    // A send ring per connection, as on DPDK: the one copy a subscriber costs there.
    let mut ring = vec![0u8; size];
    let mut dirty = Vec::new();
    let (mut push, mut drain_ref, mut drain_copy) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut allocated = 0;
    for round in 0..=rounds {
        let a0 = allocations();
        let t0 = Instant::now();
        d.message(frame.clone(), now);
        let t1 = Instant::now();
        d.take_dirty(&mut dirty);
        assert_eq!(dirty.len(), n);
        // Kernel path: the output holds a reference; writev hands it to the kernel. Here the
        // bytes are only looked at (their address taken), as the vectored write would.
        let mut checksum = 0usize;
        for (i, &s) in dirty.iter().enumerate() {
            let (_, out) = d.output(s as usize).expect("open");
            if i % 2 == 0 {
                checksum = checksum.wrapping_add(out.front(&[]).as_ptr() as usize);
                out.advance(size);
            }
        }
        let t2 = Instant::now();
        // DPDK path: copied once, into the connection's send ring.
        for (i, &s) in dirty.iter().enumerate() {
            let (_, out) = d.output(s as usize).expect("open");
            if i % 2 == 1 {
                let run = out.front(&[]);
                ring[..run.len()].copy_from_slice(run);
                checksum = checksum.wrapping_add(ring[size / 2] as usize);
                out.advance(size);
            }
        }
        let t3 = Instant::now();
        for &s in &dirty {
            d.flushed(s as usize, now);
        }
        dirty.clear();
        std::hint::black_box(checksum);
        // Round 0 warms up: each connection's piece list is made once, for its life.
        if round > 0 {
            allocated += allocations() - a0;
            push += t1 - t0;
            drain_ref += t2 - t1;
            drain_copy += t3 - t2;
        }
    }
    let pushes = (n * rounds) as f64;
    let half = pushes / 2.0;
    println!(
        "{n} connections, {size}-byte frame, {rounds} rounds: push {:.1} ns per subscriber; \
         drain by reference {:.1} ns, by copy {:.1} ns per subscriber; \
         {:.4} allocations per subscriber (frame shared by {} holders at the end)",
        push.as_nanos() as f64 / pushes,
        drain_ref.as_nanos() as f64 / half,
        drain_copy.as_nanos() as f64 / half,
        allocated as f64 / pushes,
        frame.holders(),
    );
    let _ = slots;
}
