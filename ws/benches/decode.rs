//! Decode throughput: unmask + frame parsing + (for text) UTF-8 validation, through
//! `Session::feed`, over a buffer of many frames as a transport would hand it over. Also the
//! masking routine alone, word-wide against byte-at-a-time.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hioload_wsproto::frame::write_frame;
use hioload_wsproto::mask::{apply_mask, apply_mask_bytewise};
use hioload_wsproto::{Event, Limits, OpCode, Role, Session};

/// `count` masked frames of `size` bytes back to back, about 1 MiB in all.
fn stream(size: usize, op: OpCode) -> (Vec<u8>, usize) {
    let count = ((1 << 20) / (size + 6)).max(1);
    let payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let mut out = Vec::new();
    for i in 0..count {
        write_frame(
            &mut out,
            true,
            op,
            &payload,
            Some((i as u32).wrapping_mul(2654435761).to_ne_bytes()),
        );
    }
    (out, count)
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for size in [32usize, 1024, 16 * 1024, 1 << 20] {
        for (name, op) in [("binary", OpCode::Binary), ("text", OpCode::Text)] {
            let (frames, count) = stream(size, op);
            g.throughput(Throughput::Bytes(frames.len() as u64));
            g.bench_with_input(BenchmarkId::new(name, size), &frames, |b, frames| {
                let mut buf = frames.clone();
                let mut out = Vec::new();
                b.iter(|| {
                    // The decoder unmasks in place; restore the masked input for each round.
                    buf.copy_from_slice(frames);
                    let mut s = Session::new(Role::Server, Limits::default());
                    let mut n = 0usize;
                    s.feed(&mut buf, &mut out, |ev, _| {
                        if let Event::Message(m) = ev {
                            n += black_box(m.as_bytes().len());
                        }
                    })
                    .expect("valid frames");
                    assert_eq!(n, size * count);
                })
            });
        }
    }
    g.finish();
}

fn mask(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    for size in [32usize, 16 * 1024, 1 << 20] {
        let mut buf = vec![0x5au8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("word", size), |b| {
            b.iter(|| apply_mask(black_box(&mut buf), [1, 2, 3, 4], 1))
        });
        g.bench_function(BenchmarkId::new("bytewise", size), |b| {
            b.iter(|| apply_mask_bytewise(black_box(&mut buf), [1, 2, 3, 4], 1))
        });
    }
    g.finish();
}

criterion_group!(benches, decode, mask);
criterion_main!(benches);
