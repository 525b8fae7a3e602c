//! A connection's pending output, and output prepared once for many connections.
//!
//! An [`Output`] is what a service has queued for one connection and the transport has not yet
//! handed to the network. Most of it is owned bytes in one buffer (lent by the worker's
//! [`crate::bufpool::BufPool`] only while there is output). Two kinds of pieces can be queued by
//! reference instead, in order with the owned bytes:
//!
//! - a [`Prepared`] run of bytes (a frame encoded once and shared, also across workers): on kernel
//!   sockets it goes out with a vectored write straight from the shared memory, so one more
//!   subscriber costs no user-space copy; on DPDK it is copied once, into the socket's send ring;
//! - a range of the input being handled ([`Output::put_input`]), which the kernel transport writes
//!   before it reads into that buffer again (an echoed payload is then never copied by us).
//!
//! Written bytes are skipped with an offset and the buffer is compacted only once they are at
//! least half of it, so a backlog larger than the socket takes is not moved on every write.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use crate::bufpool::BufPool;

/// Compact the owned buffer once this many written bytes (and half of it) lie at its front.
const COMPACT_AT: usize = 4096;
/// A piece list longer than this gives its storage back once it empties.
const KEEP_PIECES: usize = 64;

/// Bytes prepared once (e.g. a frame encoded for a broadcast) and written to any number of
/// connections on any worker without being encoded or copied again. Cloning is a reference count
/// increment.
#[derive(Clone, PartialEq, Eq)]
pub struct Prepared(Arc<[u8]>);

impl Prepared {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Their length.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many holders share these bytes (outputs queueing them included).
    pub fn holders(&self) -> usize {
        Arc::strong_count(&self.0)
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prepared({} bytes)", self.0.len())
    }
}

impl From<Vec<u8>> for Prepared {
    fn from(v: Vec<u8>) -> Self {
        Self(Arc::from(v))
    }
}

impl From<&[u8]> for Prepared {
    fn from(v: &[u8]) -> Self {
        Self(Arc::from(v))
    }
}

/// A piece of output queued ahead of the owned tail.
#[derive(Debug)]
enum Piece {
    /// The next `n` owned bytes.
    Owned(usize),
    /// Shared bytes.
    Shared(Prepared),
    /// Bytes `start..start + len` of the input being handled.
    Input { start: usize, len: usize },
}

/// What exists only once something was queued by reference (kept out of line: most
/// connections never need it, and idle connections are meant to be small).
#[derive(Debug, Default)]
struct Pieces {
    list: VecDeque<Piece>,
    /// Owned bytes (after `head`) that `Piece::Owned` entries account for.
    covered: usize,
    /// Bytes of the front piece already written, when it is not owned.
    front_done: usize,
    /// Unsent bytes held by reference.
    by_ref: usize,
    /// Input pieces queued and not yet written or detached.
    inputs: usize,
}

/// One connection's pending output.
#[derive(Debug, Default)]
pub struct Output {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already written.
    head: usize,
    pieces: Option<Box<Pieces>>,
}

impl Output {
    /// Bytes queued and not yet written.
    #[inline]
    pub fn unsent(&self) -> usize {
        self.buf.len() - self.head + self.pieces.as_ref().map_or(0, |p| p.by_ref)
    }

    /// Whether nothing is queued.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.unsent() == 0
    }

    /// Append bytes.
    #[inline]
    pub fn put(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The owned buffer, to append to (for encoders that write into a `Vec<u8>`). Bytes must only
    /// be appended: what is already there may be queued.
    #[inline]
    pub fn tail(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Queue `prepared` by reference.
    pub fn put_prepared(&mut self, prepared: &Prepared) {
        if prepared.is_empty() {
            return;
        }
        let p = self.cover_tail();
        p.by_ref += prepared.len();
        p.list.push_back(Piece::Shared(prepared.clone()));
    }

    /// Queue bytes `start..start + len` of the input being handled by reference. Only where the
    /// transport has said it will write or [`Output::detach_input`] them before it reuses the
    /// input buffer: services go through [`crate::ConnCtx::put_input`], which knows.
    pub(crate) fn put_input(&mut self, start: usize, len: usize) {
        if len == 0 {
            return;
        }
        let p = self.cover_tail();
        p.by_ref += len;
        p.inputs += 1;
        p.list.push_back(Piece::Input { start, len });
    }

    /// Whether references to the input are queued.
    #[inline]
    pub fn holds_input(&self) -> bool {
        self.pieces.as_ref().is_some_and(|p| p.inputs > 0)
    }

    /// Replace every queued input reference by a copy of those bytes of `input` (the rest of an
    /// echo the socket did not take), so that the input buffer can be reused. When nothing is
    /// shared, what is left becomes one run of owned bytes, laid out in `scratch` (whose storage
    /// is swapped with the buffer's: no allocation once it has grown).
    pub fn detach_input(&mut self, input: &[u8], scratch: &mut Vec<u8>) {
        let unsent = self.unsent();
        let Some(p) = self.pieces.as_mut() else {
            return;
        };
        if p.inputs == 0 {
            return;
        }
        if !p.list.iter().any(|x| matches!(x, Piece::Shared(_))) {
            scratch.clear();
            scratch.reserve(unsent);
            let mut owned = &self.buf[self.head..];
            for (i, piece) in p.list.iter().enumerate() {
                let skip = if i == 0 { p.front_done } else { 0 };
                match *piece {
                    Piece::Owned(n) => {
                        let (run, rest) = owned.split_at(n);
                        scratch.extend_from_slice(run);
                        owned = rest;
                    }
                    Piece::Input { start, len } => scratch.extend_from_slice(
                        input.get(start + skip..start + len).unwrap_or_default(),
                    ),
                    Piece::Shared(_) => {}
                }
            }
            scratch.extend_from_slice(owned);
            std::mem::swap(&mut self.buf, scratch);
            self.head = 0;
            p.list.clear();
            p.covered = 0;
            p.front_done = 0;
            p.by_ref = 0;
            p.inputs = 0;
            return;
        }
        for piece in p.list.iter_mut() {
            if let Piece::Input { start, len } = *piece {
                let bytes = input.get(start..start + len).unwrap_or_default();
                *piece = Piece::Shared(Prepared::from(bytes));
            }
        }
        p.inputs = 0;
    }

    /// The pieces before the owned tail start; make the owned bytes queued so far one of them.
    fn cover_tail(&mut self) -> &mut Pieces {
        let owned = self.buf.len() - self.head;
        let p = self.pieces.get_or_insert_with(Box::default);
        let tail = owned - p.covered;
        if tail > 0 {
            p.list.push_back(Piece::Owned(tail));
            p.covered += tail;
        }
        p
    }

    /// Whether the output is one run of owned bytes (one plain write sends it).
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        self.pieces.as_ref().is_none_or(|p| p.list.is_empty())
    }

    /// The first run of unsent bytes (`input`: the input buffer, if input references are queued).
    pub fn front<'a>(&'a self, input: &'a [u8]) -> &'a [u8] {
        let owned = &self.buf[self.head..];
        let Some(p) = self.pieces.as_ref() else {
            return owned;
        };
        match p.list.front() {
            None => owned,
            Some(Piece::Owned(n)) => &owned[..*n],
            Some(Piece::Shared(s)) => &s.as_bytes()[p.front_done..],
            Some(Piece::Input { start, len }) => input
                .get(start + p.front_done..start + len)
                .unwrap_or_default(),
        }
    }

    /// Fill `into` with the unsent runs in order, for a vectored write; returns how many.
    pub fn slices<'a>(&'a self, input: &'a [u8], into: &mut [IoSlice<'a>]) -> usize {
        if into.is_empty() {
            return 0;
        }
        let mut owned = &self.buf[self.head..];
        let mut k = 0;
        if let Some(p) = self.pieces.as_ref() {
            for (i, piece) in p.list.iter().enumerate() {
                if k == into.len() {
                    return k;
                }
                let skip = if i == 0 { p.front_done } else { 0 };
                let run: &[u8] = match piece {
                    Piece::Owned(n) => {
                        let (run, rest) = owned.split_at(*n);
                        owned = rest;
                        run
                    }
                    Piece::Shared(s) => &s.as_bytes()[skip..],
                    Piece::Input { start, len } => {
                        input.get(start + skip..start + len).unwrap_or_default()
                    }
                };
                into[k] = IoSlice::new(run);
                k += 1;
            }
        }
        if !owned.is_empty() && k < into.len() {
            into[k] = IoSlice::new(owned);
            k += 1;
        }
        k
    }

    /// `n` bytes were written: drop them from the front.
    #[inline]
    pub fn advance(&mut self, n: usize) {
        if self.is_contiguous() {
            // The common case: one run of owned bytes.
            self.head += n.min(self.buf.len() - self.head);
            if self.head == self.buf.len() {
                self.buf.clear();
                self.head = 0;
            } else if self.head >= COMPACT_AT && self.head * 2 >= self.buf.len() {
                self.buf.drain(..self.head);
                self.head = 0;
            }
            return;
        }
        self.advance_pieces(n);
    }

    fn advance_pieces(&mut self, mut n: usize) {
        if let Some(p) = self.pieces.as_mut() {
            while n > 0 {
                match p.list.front_mut() {
                    None => break,
                    Some(Piece::Owned(k)) => {
                        let take = (*k).min(n);
                        *k -= take;
                        self.head += take;
                        p.covered -= take;
                        n -= take;
                        if *k == 0 {
                            p.list.pop_front();
                        }
                    }
                    Some(piece) => {
                        let len = match piece {
                            Piece::Shared(s) => s.len(),
                            Piece::Input { len, .. } => *len,
                            Piece::Owned(_) => 0,
                        };
                        let take = (len - p.front_done).min(n);
                        p.front_done += take;
                        p.by_ref -= take;
                        n -= take;
                        if p.front_done == len {
                            if matches!(piece, Piece::Input { .. }) {
                                p.inputs -= 1;
                            }
                            p.list.pop_front();
                            p.front_done = 0;
                        }
                    }
                }
            }
            if p.list.is_empty() && p.list.capacity() > KEEP_PIECES {
                p.list = VecDeque::new();
            }
        }
        self.head += n.min(self.buf.len() - self.head);
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        } else if self.head >= COMPACT_AT && self.head * 2 >= self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }

    /// Drop everything queued (the connection is going away).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.head = 0;
        if let Some(p) = self.pieces.as_mut() {
            p.list.clear();
            p.covered = 0;
            p.front_done = 0;
            p.by_ref = 0;
            p.inputs = 0;
        }
    }

    /// Make sure the owned buffer has storage, from `pool` if it has none.
    #[inline]
    pub fn lend(&mut self, pool: &mut BufPool) {
        pool.lend(&mut self.buf);
    }

    /// Give the owned buffer's storage back to `pool` if nothing owned is queued.
    #[inline]
    pub fn reclaim(&mut self, pool: &mut BufPool) {
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
            pool.reclaim(&mut self.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything unsent, in order, by walking `front` and `advance` a few bytes at a time.
    fn drain_by(out: &mut Output, input: &[u8], step: usize) -> Vec<u8> {
        let mut all = Vec::new();
        while !out.is_empty() {
            let run = out.front(input);
            assert!(!run.is_empty(), "a non-empty output has a non-empty front");
            let n = run.len().min(step);
            all.extend_from_slice(&run[..n]);
            out.advance(n);
        }
        all
    }

    fn gather(out: &Output, input: &[u8]) -> Vec<u8> {
        let mut iov = [IoSlice::new(&[]); 16];
        let k = out.slices(input, &mut iov);
        iov[..k].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn pieces_keep_their_order_with_owned_bytes() {
        let shared = Prepared::from(&b"SHARED"[..]);
        let input = b"....INPUT....";
        let mut out = Output::default();
        out.put(b"a1");
        out.put_prepared(&shared);
        out.put(b"b22");
        out.put_input(4, 5);
        out.put(b"c333");
        out.put_prepared(&shared);
        let want = b"a1SHAREDb22INPUTc333SHARED".to_vec();
        assert_eq!(out.unsent(), want.len());
        assert_eq!(gather(&out, input), want);
        for step in [1, 2, 3, 5, 100] {
            let mut o = Output::default();
            o.put(b"a1");
            o.put_prepared(&shared);
            o.put(b"b22");
            o.put_input(4, 5);
            o.put(b"c333");
            o.put_prepared(&shared);
            assert_eq!(drain_by(&mut o, input, step), want, "step {step}");
            assert!(!o.holds_input());
        }
    }

    #[test]
    fn a_partial_write_resumes_inside_a_piece() {
        let shared = Prepared::from(&b"0123456789"[..]);
        let mut out = Output::default();
        out.put(b"hd");
        out.put_prepared(&shared);
        out.advance(5); // "hd" and "012"
        assert_eq!(out.front(&[]), b"3456789");
        assert_eq!(gather(&out, &[]), b"3456789");
        out.put(b"!");
        assert_eq!(gather(&out, &[]), b"3456789!");
        out.advance(8);
        assert!(out.is_empty() && out.is_contiguous());
    }

    #[test]
    fn input_references_detach_to_copies() {
        let mut out = Output::default();
        let mut input = b"echo me".to_vec();
        out.put(b"<");
        out.put_input(0, 7);
        out.put(b">");
        out.advance(3); // "<" and "ec"
        assert!(out.holds_input());
        let mut scratch = Vec::new();
        out.detach_input(&input, &mut scratch);
        assert!(!out.holds_input());
        assert!(
            out.is_contiguous(),
            "owned bytes and input only: one run again"
        );
        input.fill(b'x'); // the buffer is reused: the output kept its own copy
        assert_eq!(drain_by(&mut out, &input, 4), b"ho me>");
        // With a shared piece queued too, input pieces become shared copies, in order.
        let shared = Prepared::from(&b"[S]"[..]);
        let mut out = Output::default();
        let input = b"abcdef".to_vec();
        out.put_prepared(&shared);
        out.put_input(1, 3);
        out.put(b"!");
        out.detach_input(&input, &mut scratch);
        assert!(!out.holds_input());
        assert_eq!(drain_by(&mut out, &[], 2), b"[S]bcd!");
    }

    #[test]
    fn shared_bytes_are_referenced_not_copied() {
        let frame = Prepared::from(vec![7u8; 1000]);
        let mut outs: Vec<Output> = (0..100).map(|_| Output::default()).collect();
        for o in &mut outs {
            o.put_prepared(&frame);
        }
        assert_eq!(frame.holders(), 101);
        for o in &mut outs {
            assert_eq!(o.front(&[]).as_ptr(), frame.as_bytes().as_ptr());
            o.advance(1000);
        }
        assert_eq!(frame.holders(), 1, "written outputs let go of the frame");
    }

    #[test]
    fn owned_backlog_is_compacted_only_at_half() {
        let mut out = Output::default();
        out.put(&vec![1u8; 10_000]);
        out.advance(4000);
        assert_eq!(out.head, 4000, "less than half written: not moved");
        out.advance(1500);
        assert_eq!((out.head, out.unsent()), (0, 4500), "compacted");
        out.advance(4500);
        assert!(out.is_empty());
    }

    proptest::proptest! {
        /// Whatever is queued, however the writes are cut, what comes out is what went in, in
        /// order, and `unsent` always says how much is left.
        #[test]
        fn any_mix_of_pieces_and_partial_writes_comes_out_in_order(
            ops in proptest::collection::vec((0u8..4, 1usize..300, 1usize..700), 1..60)
        ) {
            let input: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
            let mut out = Output::default();
            let mut want: Vec<u8> = Vec::new();
            let mut got: Vec<u8> = Vec::new();
            let mut tag = 0u8;
            for (op, len, write) in ops {
                tag = tag.wrapping_add(1);
                match op {
                    0 => {
                        let bytes = vec![tag; len];
                        out.put(&bytes);
                        want.extend_from_slice(&bytes);
                    }
                    1 => {
                        let p = Prepared::from(vec![tag ^ 0x80; len]);
                        out.put_prepared(&p);
                        want.extend_from_slice(p.as_bytes());
                    }
                    2 => {
                        let start = len % 500;
                        out.put_input(start, len);
                        want.extend_from_slice(&input[start..start + len]);
                    }
                    _ => {
                        // A vectored write of at most `write` bytes.
                        let mut iov = [IoSlice::new(&[]); 4];
                        let k = out.slices(&input, &mut iov);
                        let mut n = 0;
                        for s in &iov[..k] {
                            let take = s.len().min(write - n);
                            got.extend_from_slice(&s[..take]);
                            n += take;
                            if n == write {
                                break;
                            }
                        }
                        out.advance(n);
                    }
                }
                proptest::prop_assert_eq!(out.unsent(), want.len() - got.len());
            }
            while !out.is_empty() {
                let run = out.front(&input);
                got.extend_from_slice(run);
                let n = run.len();
                out.advance(n);
            }
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert!(!out.holds_input());
        }
    }

    #[test]
    fn lent_storage_goes_back_once_empty() {
        let mut pool = BufPool::new(4, 1 << 20);
        let mut out = Output::default();
        out.lend(&mut pool);
        out.put(b"x");
        out.reclaim(&mut pool);
        assert_eq!(pool.len(), 0, "still queued: kept");
        out.advance(1);
        out.reclaim(&mut pool);
        assert_eq!(pool.len(), 1);
    }
}
