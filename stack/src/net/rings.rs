//! Memory for smoltcp's socket rings that goes back to the kernel while a connection is idle.
//!
//! smoltcp allocates a socket's receive and send rings when the socket is made and writes from
//! their start, so a connection that has carried one byte each way holds a page of each ring in
//! RSS for the rest of its life: 8 KiB per idle WebSocket session, more than everything else it
//! owns. A [`RingArena`] carves both rings of a connection out of one page-aligned slot of an
//! anonymous mapping, so that [`RingArena::trim`] can hand the slot's pages back with
//! `madvise(MADV_DONTNEED)` once the connection has been quiet with both rings empty; they read
//! as zeros and are faulted in again by the next write. One system call per connection going
//! idle, never per packet.
//!
//! This module is `unsafe` inside (mapping, slicing and advising raw memory); its one contract
//! with the caller is on [`RingArena::alloc`].
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::ptr::NonNull;
use std::rc::Rc;

const PAGE: usize = 4096;
/// Slots mapped at a time (address space only; pages are touched as rings are written).
const CHUNK_SLOTS: usize = 256;

/// Per-worker ring memory. Not `Send`: a worker's arena stays on its worker.
pub struct RingArena {
    inner: Rc<RefCell<Inner>>,
}

struct Inner {
    rx_len: usize,
    tx_len: usize,
    /// `rx_len` and `tx_len`, each rounded up to whole pages.
    slot_len: usize,
    chunks: Vec<Chunk>,
    free: Vec<u32>,
    next: u32,
    in_use: usize,
}

struct Chunk {
    base: NonNull<u8>,
    len: usize,
}

/// One connection's rings.
pub struct Rings {
    /// The receive ring's memory.
    pub rx: &'static mut [u8],
    /// The send ring's memory.
    pub tx: &'static mut [u8],
    /// Returns the slot to the arena when dropped; keep it next to the rings' socket, dropped
    /// after it.
    pub slot: RingSlot,
}

/// A slot of a [`RingArena`], returned to it on drop.
pub struct RingSlot {
    index: u32,
    arena: Rc<RefCell<Inner>>,
}

impl RingArena {
    /// An arena for receive rings of `rx_len` and send rings of `tx_len` bytes.
    pub fn new(rx_len: usize, tx_len: usize) -> Self {
        let slot_len = rx_len.next_multiple_of(PAGE) + tx_len.next_multiple_of(PAGE);
        Self {
            inner: Rc::new(RefCell::new(Inner {
                rx_len,
                tx_len,
                slot_len,
                chunks: Vec::new(),
                free: Vec::new(),
                next: 0,
                in_use: 0,
            })),
        }
    }

    /// Slots handed out and not yet returned.
    pub fn in_use(&self) -> usize {
        self.inner.borrow().in_use
    }

    /// The rings of a new connection (zeroed, or reading as zeros).
    ///
    /// # Safety
    ///
    /// The slices are `'static` to fit smoltcp's `SocketSet<'static>`, but they are valid only
    /// until `Rings::slot` is dropped, which gives the memory to the next connection: drop (or
    /// never use again) both slices before their slot. Keeping the socket and the slot in one
    /// struct, the socket declared first, does that.
    pub unsafe fn alloc(&mut self) -> io::Result<Rings> {
        let mut a = self.inner.borrow_mut();
        let index = match a.free.pop() {
            Some(i) => i,
            None => {
                let i = a.next;
                if i as usize == a.chunks.len() * CHUNK_SLOTS {
                    let chunk = Chunk::map(a.slot_len * CHUNK_SLOTS)?;
                    a.chunks.push(chunk);
                }
                a.next += 1;
                i
            }
        };
        a.in_use += 1;
        let base = a.slot_ptr(index);
        let (rx_len, tx_len) = (a.rx_len, a.tx_len);
        let tx_off = rx_len.next_multiple_of(PAGE);
        drop(a);
        // SAFETY: `base` is the start of slot `index`, `slot_len` bytes of a live private
        // mapping; the slot is not handed out to anyone else until its `RingSlot` drops (the free
        // list holds each index once), and the two slices do not overlap (`tx` starts at a page
        // boundary past the end of `rx`). The mapping outlives the slot: `RingSlot` holds the
        // arena's `Rc`, and chunks are unmapped only when the last holder drops. The caller
        // promises not to use the slices after the slot drops.
        let (rx, tx) = unsafe {
            (
                std::slice::from_raw_parts_mut(base.as_ptr(), rx_len),
                std::slice::from_raw_parts_mut(base.as_ptr().add(tx_off), tx_len),
            )
        };
        Ok(Rings {
            rx,
            tx,
            slot: RingSlot {
                index,
                arena: Rc::clone(&self.inner),
            },
        })
    }

    /// Give the pages of `slot` back to the kernel. Its rings must hold no data (the caller checks
    /// that both are empty): their bytes read as zeros afterwards.
    pub fn trim(&self, slot: &RingSlot) -> io::Result<()> {
        let a = self.inner.borrow();
        let base = a.slot_ptr(slot.index);
        // SAFETY: the range is one whole slot (page-aligned start and length) inside a live
        // mapping. MADV_DONTNEED on private anonymous memory only replaces its contents with
        // zeros; the caller has checked that no data is in either ring, and smoltcp writes a
        // ring before it reads it.
        let r = unsafe { libc::madvise(base.as_ptr().cast(), a.slot_len, libc::MADV_DONTNEED) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Inner {
    fn slot_ptr(&self, index: u32) -> NonNull<u8> {
        let (chunk, within) = (index as usize / CHUNK_SLOTS, index as usize % CHUNK_SLOTS);
        let c = &self.chunks[chunk];
        debug_assert!((within + 1) * self.slot_len <= c.len);
        // SAFETY: `within * slot_len` is inside the chunk (it has CHUNK_SLOTS slots).
        unsafe { c.base.add(within * self.slot_len) }
    }
}

impl Drop for RingSlot {
    fn drop(&mut self) {
        // A worker's arena is only touched by its worker, never re-entrantly from here.
        if let Ok(mut a) = self.arena.try_borrow_mut() {
            a.free.push(self.index);
            a.in_use -= 1;
        }
    }
}

impl Chunk {
    fn map(len: usize) -> io::Result<Self> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(p.cast())
            .map(|base| Self { base, len })
            .ok_or_else(|| io::Error::other("mmap returned null"))
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped. Chunks are dropped with `Inner`, that is
        // when the arena and every `RingSlot` are gone, so no slice into them is in use.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resident pages of `len` bytes at `p`, from mincore.
    fn resident(p: *const u8, len: usize) -> usize {
        let pages = len.div_ceil(PAGE);
        let mut vec = vec![0u8; pages];
        // SAFETY: `p` is page-aligned inside a live mapping of at least `len` bytes.
        let r = unsafe { libc::mincore(p as *mut _, len, vec.as_mut_ptr()) };
        assert_eq!(r, 0);
        vec.iter().filter(|v| *v & 1 != 0).count()
    }

    #[test]
    fn slots_do_not_overlap_are_reused_and_trim_gives_pages_back() {
        let mut arena = RingArena::new(4096, 5000);
        // SAFETY (for every alloc in this test): each slice is used only while its slot lives;
        // `a`'s are moved out and dropped before `slot`, the others drop with their `Rings`.
        let a = unsafe { arena.alloc() }.unwrap();
        let b = unsafe { arena.alloc() }.unwrap();
        assert_eq!((a.rx.len(), a.tx.len()), (4096, 5000));
        let (a_rx, a_tx, b_rx) = (a.rx.as_ptr(), a.tx.as_ptr(), b.rx.as_ptr());
        assert_eq!(a_rx as usize % PAGE, 0, "page-aligned");
        assert_eq!(a_tx as usize - a_rx as usize, 4096);
        assert_eq!(
            b_rx as usize - a_rx as usize,
            4096 + 8192,
            "slots are whole pages apart"
        );
        assert_eq!(arena.in_use(), 2);

        let Rings { rx, tx, slot } = a;
        rx[..5].copy_from_slice(b"hello");
        tx[4999] = 7;
        assert_eq!(
            resident(rx.as_ptr(), 4096 + 8192),
            2,
            "one page of rx, the last of tx"
        );
        arena.trim(&slot).unwrap();
        assert_eq!(resident(rx.as_ptr(), 4096 + 8192), 0, "trimmed");
        assert_eq!(&rx[..5], &[0; 5], "reads as zeros");
        rx[0] = 1;
        assert_eq!(resident(rx.as_ptr(), 4096), 1, "faulted back in on write");

        let (_, _) = (rx, tx); // the slices end here, before their slot
        drop(slot);
        assert_eq!(arena.in_use(), 1);
        let c = unsafe { arena.alloc() }.unwrap();
        assert_eq!(c.rx.as_ptr(), a_rx, "a freed slot is reused");
        drop(c);
        drop(b);
        assert_eq!(arena.in_use(), 0);
    }

    #[test]
    fn many_slots_span_chunks() {
        let mut arena = RingArena::new(1024, 1024);
        let mut all = Vec::new();
        for _ in 0..CHUNK_SLOTS * 2 + 3 {
            // SAFETY: the slices live in their `Rings` and drop with it, before its slot (fields
            // drop in declaration order).
            all.push(unsafe { arena.alloc() }.unwrap());
        }
        for r in &mut all {
            r.rx[0] = 1;
            r.tx[1023] = 2;
        }
        let mut starts: Vec<usize> = all.iter().map(|r| r.rx.as_ptr() as usize).collect();
        starts.sort_unstable();
        starts.dedup();
        assert_eq!(starts.len(), all.len(), "no two connections share a slot");
        drop(all);
        assert_eq!(arena.in_use(), 0);
    }
}
