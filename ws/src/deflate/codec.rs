//! Compressing and inflating message payloads (RFC 7692 §7.2), and the per-worker [`Codecs`]
//! that lend a compressor and a decompressor to every session without context takeover.
//!
//! Deflate itself is `flate2` on zlib-rs. What is ours: the message framing of the RFC (a sync
//! flush whose `00 00 ff ff` tail is removed when sending and put back when receiving), the
//! bound on inflated output, and who holds which state. A session with context takeover must
//! keep its own compressor or inflate window (about 300 KiB or 40 KiB); a session without it
//! borrows the worker's for the length of one message, so an idle session holds none.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::negotiate::{MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// What a sync flush ends with: removed from every compressed message, restored to inflate it.
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];

/// Output buffers larger than this are released after their message instead of kept.
const KEEP_CAPACITY: usize = 1 << 20;

/// Why a compressed message could not be inflated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// The message inflates to more than the limit; inflating stopped there.
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The payload is not a valid deflate stream.
    Corrupt,
}

/// One deflate compressor (raw, no zlib header).
pub struct Compressor {
    z: Compress,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Compressor")
    }
}

impl Compressor {
    /// A compressor at `level` (0..=9) with a window of `window_bits` (clamped to 9..=15).
    pub fn new(level: u8, window_bits: u8) -> Self {
        let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        Self {
            z: Compress::new_with_window_bits(
                Compression::new(u32::from(level.min(9))),
                false,
                bits,
            ),
        }
    }

    /// Compress `data` as one message's payload into `out` (cleared first), without the sync
    /// flush's tail. `false` when deflate failed; the context is then reset and `out` is not
    /// to be sent.
    pub fn message(&mut self, data: &[u8], out: &mut Vec<u8>) -> bool {
        out.clear();
        out.reserve(data.len() / 2 + 64);
        let start = self.z.total_in();
        loop {
            let consumed = (self.z.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            if self
                .z
                .compress_vec(&data[consumed..], out, FlushCompress::Sync)
                .is_err()
            {
                self.reset();
                return false;
            }
            let consumed = (self.z.total_in() - start) as usize;
            // Done when all input is in and the flush did not stop for lack of room.
            if consumed == data.len() && out.len() < out.capacity() {
                break;
            }
        }
        if !out.ends_with(&TAIL) {
            self.reset();
            return false;
        }
        out.truncate(out.len() - TAIL.len());
        true
    }

    /// Compress `data` into `out` as [`Compressor::message`] does; `true` when `out` is to be
    /// sent, that is, deflate made it smaller. The context is kept for the next message only
    /// with `keep` and when `out` is sent: a message sent as it is must not stay in the
    /// compressor's window, which the peer's would then no longer match.
    pub fn shrink(&mut self, data: &[u8], out: &mut Vec<u8>, keep: bool) -> bool {
        let sent = self.message(data, out) && out.len() < data.len();
        if !(keep && sent) {
            self.reset();
        }
        sent
    }

    /// Forget the context: the next message refers to nothing before it.
    pub fn reset(&mut self) {
        self.z.reset();
    }
}

/// One deflate decompressor (raw, no zlib header).
pub struct Inflater {
    z: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

impl Inflater {
    /// A decompressor for streams made with a window of at most `window_bits` (a window of 8
    /// is served by one of 9: a larger window reads any smaller one's stream).
    pub fn new(window_bits: u8) -> Self {
        let bits = window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
        Self {
            z: Decompress::new_with_window_bits(false, bits),
        }
    }

    /// Inflate one message's payload (as received, without the tail) into `out` (cleared
    /// first). Inflating stops with [`InflateError::TooLarge`] as soon as the output passes
    /// `limit` bytes, so a bomb costs at most `limit + 1` bytes of memory and the work to make
    /// them. After an error the context is reset.
    pub fn message(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), InflateError> {
        out.clear();
        let ceiling = limit.saturating_add(1);
        if out.capacity() > ceiling {
            // A buffer kept from a larger limit must not let one call write past this one.
            *out = Vec::new();
        }
        let result = self.pieces(data, out, limit, ceiling);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn pieces(
        &mut self,
        data: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
        ceiling: usize,
    ) -> Result<(), InflateError> {
        for piece in [data, &TAIL[..]] {
            let mut pos = 0;
            loop {
                if out.len() == out.capacity() {
                    if out.len() >= ceiling {
                        return Err(InflateError::TooLarge { max: limit });
                    }
                    let grow = out.capacity().max(4096).min(ceiling - out.len());
                    out.reserve_exact(grow);
                }
                let (in_before, out_before) = (self.z.total_in(), out.len());
                let status = self
                    .z
                    .decompress_vec(&piece[pos..], out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                pos += (self.z.total_in() - in_before) as usize;
                if out.len() > limit {
                    return Err(InflateError::TooLarge { max: limit });
                }
                if status == Status::StreamEnd {
                    // The peer ended the stream (BFINAL): the next message starts a new one.
                    self.reset();
                    return Ok(());
                }
                let room_left = out.len() < out.capacity();
                let stalled = pos == piece.len() || (out.len() == out_before && room_left);
                if stalled && room_left {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Forget the window: the next message refers to nothing before it.
    pub fn reset(&mut self) {
        self.z.reset(false);
    }
}

/// Counts of what a worker's sessions compressed and inflated.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeflateStats {
    /// Messages sent compressed.
    pub compressed: u64,
    /// Their payload bytes before compression.
    pub compressed_in: u64,
    /// Their payload bytes after compression (what went on the wire).
    pub compressed_out: u64,
    /// Messages of sessions with deflate sent uncompressed: under the size threshold, or not
    /// made smaller by deflate.
    pub sent_plain: u64,
    /// Compressed messages received and inflated.
    pub inflated: u64,
    /// Their payload bytes as received.
    pub inflated_in: u64,
    /// Their payload bytes after inflating.
    pub inflated_out: u64,
}

/// The compressing half of [`Codecs`]: one compressor per window size in use, shared by every
/// session that sends without context takeover, and one output buffer.
#[derive(Debug)]
pub struct Compressors {
    level: u8,
    min_size: u32,
    /// By window bits - 9.
    shared: [Option<Box<Compressor>>; 7],
    out: Vec<u8>,
    stats: DeflateStats,
}

impl Compressors {
    /// Compressors at `level` (0..=9) for messages of at least `min_size` bytes; each window's
    /// compressor is made at its first use.
    pub fn new(level: u8, min_size: u32) -> Self {
        Self {
            level: level.min(9),
            min_size,
            shared: Default::default(),
            out: Vec::new(),
            stats: DeflateStats::default(),
        }
    }

    /// What was compressed so far.
    pub fn stats(&self) -> DeflateStats {
        self.stats
    }

    /// Compress `data` with the shared compressor of `window_bits`, as a message that refers to
    /// nothing before it (so any session that negotiated at least that window can take it).
    /// `None` when it is to go uncompressed: shorter than the size threshold, a window under 9,
    /// or not made smaller.
    pub fn compress(&mut self, window_bits: u8, data: &[u8]) -> Option<&[u8]> {
        if !(MIN_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&window_bits)
            || data.len() < self.min_size as usize
        {
            self.stats.sent_plain += 1;
            return None;
        }
        let level = self.level;
        let z = self.shared[usize::from(window_bits - MIN_WINDOW_BITS)]
            .get_or_insert_with(|| Box::new(Compressor::new(level, window_bits)));
        let sent = z.shrink(data, &mut self.out, false);
        self.finish(sent, data.len())
    }

    /// Compress `data` with a session's own compressor (context takeover), into this pool's
    /// buffer. The context is reset when the result is not sent, so that the peer's window and
    /// the compressor's stay the same.
    pub fn compress_own(&mut self, own: &mut Compressor, data: &[u8]) -> Option<&[u8]> {
        if data.len() < self.min_size as usize {
            self.stats.sent_plain += 1;
            return None;
        }
        let sent = own.shrink(data, &mut self.out, true);
        self.finish(sent, data.len())
    }

    /// Count the message and hand out the compressed bytes when `sent`.
    fn finish(&mut self, sent: bool, plain: usize) -> Option<&[u8]> {
        if !sent {
            self.stats.sent_plain += 1;
            if self.out.capacity() > KEEP_CAPACITY {
                self.out = Vec::new();
            }
            return None;
        }
        self.stats.compressed += 1;
        self.stats.compressed_in += plain as u64;
        self.stats.compressed_out += self.out.len() as u64;
        Some(&self.out)
    }

    /// Release the output buffer if a large message left it big.
    pub fn trim(&mut self) {
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
    }
}

/// The inflating half of [`Codecs`]: one decompressor with the largest window, shared by every
/// session whose peer sends without context takeover, and the buffer messages inflate into.
#[derive(Debug, Default)]
pub struct Inflaters {
    shared: Option<Box<Inflater>>,
    pub(crate) out: Vec<u8>,
    stats: DeflateStats,
}

impl Inflaters {
    /// Inflate a message with `own` (a session's, with context takeover) or else the shared
    /// decompressor, into this pool's buffer.
    pub(crate) fn inflate(
        &mut self,
        own: Option<&mut Inflater>,
        data: &[u8],
        limit: usize,
    ) -> Result<&[u8], InflateError> {
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
        match own {
            Some(z) => z.message(data, &mut self.out, limit)?,
            None => {
                let z = self
                    .shared
                    .get_or_insert_with(|| Box::new(Inflater::new(MAX_WINDOW_BITS)));
                let result = z.message(data, &mut self.out, limit);
                z.reset();
                result?;
            }
        }
        self.stats.inflated += 1;
        self.stats.inflated_in += data.len() as u64;
        self.stats.inflated_out += self.out.len() as u64;
        Ok(&self.out)
    }
}

/// A worker's deflate state lent to its sessions: compressors for sessions that send without
/// context takeover (and for broadcasts), a decompressor for peers that send without it, the
/// buffers both work in, and the counts.
#[derive(Debug)]
pub struct Codecs {
    /// The compressing half.
    pub compress: Compressors,
    /// The inflating half.
    pub inflate: Inflaters,
}

impl Codecs {
    /// Codecs compressing at `level` (0..=9) messages of at least `min_size` bytes.
    pub fn new(level: u8, min_size: u32) -> Self {
        Self {
            compress: Compressors::new(level, min_size),
            inflate: Inflaters::default(),
        }
    }

    /// Bytes reserved by the buffer messages inflate into.
    pub fn inflate_capacity(&self) -> usize {
        self.inflate.out.capacity()
    }

    /// What was compressed and inflated so far.
    pub fn stats(&self) -> DeflateStats {
        let (c, i) = (&self.compress.stats, &self.inflate.stats);
        DeflateStats {
            inflated: i.inflated,
            inflated_in: i.inflated_in,
            inflated_out: i.inflated_out,
            ..*c
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        let words = [
            "alpha ",
            "beta ",
            "gamma ",
            "delta ",
            "{\"type\":\"message\"} ",
        ];
        let mut v = Vec::new();
        let mut i = 7u32;
        while v.len() < n {
            i = i.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            v.extend_from_slice(words[(i >> 16) as usize % words.len()].as_bytes());
        }
        v.truncate(n);
        v
    }

    #[test]
    fn round_trip_with_and_without_context() {
        let mut z = Compressor::new(6, 15);
        let mut inf = Inflater::new(15);
        let (mut wire, mut back) = (Vec::new(), Vec::new());
        for n in [0, 1, 100, 5_000, 70_000] {
            let data = text(n);
            assert!(z.message(&data, &mut wire));
            inf.message(&wire, &mut back, 1 << 20).unwrap();
            assert_eq!(back, data, "{n} bytes with context");
        }
        // The same payload twice with context: the second refers to the first.
        let data = text(2_000);
        z.message(&data, &mut wire);
        let first = wire.len();
        inf.message(&wire, &mut back, 1 << 20).unwrap();
        z.message(&data, &mut wire);
        assert!(wire.len() < first / 4, "{} vs {first}", wire.len());
        inf.message(&wire, &mut back, 1 << 20).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn empty_message_is_one_zero_byte() {
        let mut z = Compressor::new(6, 15);
        let mut wire = Vec::new();
        assert!(z.message(b"", &mut wire));
        assert_eq!(wire, [0]);
        let mut back = vec![1, 2, 3];
        Inflater::new(15).message(&wire, &mut back, 10).unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn bomb_stops_at_the_limit() {
        let data = vec![b'a'; 8 << 20];
        let mut z = Compressor::new(9, 15);
        let mut wire = Vec::new();
        assert!(z.message(&data, &mut wire));
        assert!(wire.len() < 20 << 10, "{} bytes", wire.len());
        let mut inf = Inflater::new(15);
        let mut out = Vec::new();
        let limit = 1 << 20;
        assert_eq!(
            inf.message(&wire, &mut out, limit),
            Err(InflateError::TooLarge { max: limit })
        );
        assert!(out.len() <= limit + 1, "{}", out.len());
        assert!(out.capacity() <= limit + 1, "{}", out.capacity());
        // The inflater was reset: the next message inflates.
        let small = text(300);
        z.reset();
        z.message(&small, &mut wire);
        inf.message(&wire, &mut out, limit).unwrap();
        assert_eq!(out, small);
    }

    #[test]
    fn exactly_the_limit_is_allowed() {
        let data = text(10_000);
        let mut wire = Vec::new();
        Compressor::new(1, 15).message(&data, &mut wire);
        let mut out = Vec::new();
        Inflater::new(15).message(&wire, &mut out, 10_000).unwrap();
        assert_eq!(out, data);
        assert_eq!(
            Inflater::new(15).message(&wire, &mut out, 9_999),
            Err(InflateError::TooLarge { max: 9_999 })
        );
    }

    #[test]
    fn garbage_is_corrupt() {
        let mut out = Vec::new();
        assert_eq!(
            Inflater::new(15).message(&[0xff; 40], &mut out, 1000),
            Err(InflateError::Corrupt)
        );
    }

    #[test]
    fn shared_compressor_skips_small_and_incompressible() {
        let mut c = Codecs::new(6, 64);
        assert!(c.compress.compress(15, &text(63)).is_none());
        assert!(c.compress.compress(8, &text(500)).is_none());
        let mut x = 0x9e37_79b9u32;
        let noise: Vec<u8> = (0..2_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(c.compress.compress(15, &noise).is_none());
        let data = text(1_000);
        let wire = c.compress.compress(15, &data).unwrap().to_vec();
        // No context: a fresh inflater reads it, and so does one that inflated before.
        let mut inf = Inflater::new(9);
        let mut out = Vec::new();
        let again = c.compress.compress(9, &data).unwrap().to_vec();
        inf.message(&again, &mut out, 1 << 20).unwrap();
        assert_eq!(out, data);
        Inflater::new(15).message(&wire, &mut out, 1 << 20).unwrap();
        assert_eq!(out, data);
        let s = c.stats();
        assert_eq!((s.compressed, s.sent_plain), (2, 3));
        assert_eq!(s.compressed_in, 2_000);
    }
}
