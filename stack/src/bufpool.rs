//! A worker's pool of output buffers.
//!
//! A connection borrows a buffer when it has something to write and gives it back once the
//! buffer is flushed, so idle connections hold no output memory, and busy ones recycle buffers
//! instead of allocating: a freshly allocated large buffer costs page faults on every touch, and
//! growing one by doubling costs copies. Single-threaded by design: one pool per worker.

/// Free output buffers of one worker, bounded in count and in total bytes.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<Vec<u8>>,
    max_buffers: usize,
    max_bytes: usize,
    bytes: usize,
}

impl BufPool {
    /// A pool keeping at most `max_buffers` free buffers of at most `max_bytes` in all.
    pub fn new(max_buffers: usize, max_bytes: usize) -> Self {
        Self {
            free: Vec::with_capacity(max_buffers),
            max_buffers,
            max_bytes,
            bytes: 0,
        }
    }

    /// Make sure `buf` has storage: swap in a pooled buffer if it has none.
    #[inline]
    pub fn lend(&mut self, buf: &mut Vec<u8>) {
        if buf.capacity() == 0 {
            if let Some(pooled) = self.free.pop() {
                self.bytes -= pooled.capacity();
                *buf = pooled;
            }
        }
    }

    /// Take back `buf`'s storage if it is empty, leaving it without capacity. Storage the pool
    /// has no room for is freed.
    #[inline]
    pub fn reclaim(&mut self, buf: &mut Vec<u8>) {
        if !buf.is_empty() || buf.capacity() == 0 {
            return;
        }
        let storage = std::mem::take(buf);
        if self.free.len() < self.max_buffers && self.bytes + storage.capacity() <= self.max_bytes {
            self.bytes += storage.capacity();
            self.free.push(storage);
        }
    }

    /// Free buffers held.
    pub fn len(&self) -> usize {
        self.free.len()
    }

    /// Whether no buffer is free.
    pub fn is_empty(&self) -> bool {
        self.free.is_empty()
    }

    /// Bytes of storage held by free buffers.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recycles_storage_and_leaves_idle_buffers_empty() {
        let mut pool = BufPool::new(2, 1 << 20);
        let mut a = Vec::new();
        pool.lend(&mut a);
        a.extend_from_slice(b"hello");
        pool.reclaim(&mut a); // not empty: kept
        assert_eq!((a.len(), pool.len()), (5, 0));
        a.clear();
        let ptr = a.as_ptr();
        pool.reclaim(&mut a);
        assert_eq!((a.capacity(), pool.len()), (0, 1));
        assert!(pool.bytes() >= 5);
        let mut b = Vec::new();
        pool.lend(&mut b);
        assert_eq!(b.as_ptr(), ptr, "the same storage comes back");
        assert_eq!((pool.len(), pool.bytes()), (0, 0));
    }

    #[test]
    fn bounded_by_count_and_bytes() {
        let mut pool = BufPool::new(1, 1024);
        let mut big = Vec::with_capacity(2048);
        pool.reclaim(&mut big);
        assert!(pool.is_empty(), "over the byte budget");
        let (mut x, mut y) = (Vec::with_capacity(8), Vec::with_capacity(8));
        pool.reclaim(&mut x);
        pool.reclaim(&mut y);
        assert_eq!(pool.len(), 1, "over the count");
    }
}
