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
//! This module is `unsafe` inside (mapping, slicing and advising raw memory); what it hands out
//! is safe: an [`ArenaSocket`] owns a smoltcp TCP socket, its one-socket set and its arena slot,
//! and never lets the socket (whose rings are only valid while the slot is held) out of itself.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::io;
use std::ptr::NonNull;
use std::rc::Rc;

use smoltcp::iface::{Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant as SmolInstant};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};

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

/// One connection's rings (inside this module only: see [`ArenaSocket`]).
struct Rings {
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

    /// A new connection's TCP socket, its rings in a slot of this arena (zeroed, or reading as
    /// zeros), in a socket set of its own. Fails only if memory cannot be mapped.
    pub fn socket(&mut self) -> io::Result<ArenaSocket> {
        // SAFETY: the slices go into the socket, the socket into `set`, and `set` and the slot
        // into one `ArenaSocket`, `set` declared first so it drops first. `ArenaSocket` never
        // hands out the socket by `&mut` or by value, so the slices cannot outlive the slot.
        let rings = unsafe { self.alloc() }?;
        let socket = tcp::Socket::new(
            tcp::SocketBuffer::new(rings.rx),
            tcp::SocketBuffer::new(rings.tx),
        );
        let mut set = SocketSet::new(Vec::with_capacity(1));
        let handle = set.add(socket);
        Ok(ArenaSocket {
            set,
            handle,
            slot: rings.slot,
        })
    }

    /// Give the pages of `socket`'s rings back to the kernel. Both rings must be empty (the
    /// caller checks): their bytes read as zeros afterwards.
    pub fn trim(&self, socket: &ArenaSocket) -> io::Result<()> {
        self.trim_slot(&socket.slot)
    }

    /// The rings of a new connection (zeroed, or reading as zeros).
    ///
    /// # Safety
    ///
    /// The slices are `'static` to fit smoltcp's `SocketSet<'static>`, but they are valid only
    /// until `Rings::slot` is dropped, which gives the memory to the next connection: drop (or
    /// never use again) both slices before their slot.
    unsafe fn alloc(&mut self) -> io::Result<Rings> {
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
    fn trim_slot(&self, slot: &RingSlot) -> io::Result<()> {
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

/// A smoltcp TCP socket with its rings in an arena slot, alone in its socket set (smoltcp scans
/// every socket of a set per packet; one per set keeps that O(1)).
///
/// The socket is reachable only through these methods: handing it out mutably would let it be
/// swapped out of the set and outlive the memory of its rings.
pub struct ArenaSocket {
    /// Holds the socket, whose rings live in `slot`: declared first, so it drops first.
    set: SocketSet<'static>,
    handle: SocketHandle,
    slot: RingSlot,
}

impl ArenaSocket {
    /// The socket, to look at.
    #[inline]
    pub fn tcp(&self) -> &tcp::Socket<'static> {
        self.set.get::<tcp::Socket>(self.handle)
    }

    #[inline]
    fn tcp_mut(&mut self) -> &mut tcp::Socket<'static> {
        self.set.get_mut::<tcp::Socket>(self.handle)
    }

    /// Its TCP state.
    #[inline]
    pub fn state(&self) -> tcp::State {
        self.tcp().state()
    }

    /// Disable Nagle's algorithm and use CUBIC (the engine's settings for every connection).
    pub fn configure(&mut self, timeout: std::time::Duration) {
        let s = self.tcp_mut();
        s.set_nagle_enabled(false);
        s.set_congestion_control(tcp::CongestionControl::Cubic);
        s.set_timeout(Some(SmolDuration::from_millis(timeout.as_millis() as u64)));
    }

    /// Reset the connection if sent data stays unacknowledged (or a handshake unfinished) for
    /// `timeout`.
    pub fn set_timeout(&mut self, timeout: std::time::Duration) {
        self.tcp_mut()
            .set_timeout(Some(SmolDuration::from_millis(timeout.as_millis() as u64)));
    }

    /// Wait for a connection on `port`.
    pub fn listen(&mut self, port: u16) -> Result<(), tcp::ListenError> {
        self.tcp_mut().listen(port)
    }

    /// Open a connection from `local` to `remote` through `iface`.
    pub fn connect(
        &mut self,
        iface: &mut Interface,
        remote: impl Into<IpEndpoint>,
        local: impl Into<IpListenEndpoint>,
    ) -> Result<(), tcp::ConnectError> {
        let handle = self.handle;
        self.set
            .get_mut::<tcp::Socket>(handle)
            .connect(iface.context(), remote, local)
    }

    /// Hand the bytes waiting in the receive ring to `f` (in place), which says how many it
    /// consumed.
    pub fn recv<R>(&mut self, f: impl FnOnce(&mut [u8]) -> (usize, R)) -> Option<R> {
        self.tcp_mut().recv(f).ok()
    }

    /// Copy as much of `data` into the send ring as fits; returns how much.
    pub fn send_slice(&mut self, data: &[u8]) -> usize {
        self.tcp_mut().send_slice(data).unwrap_or(0)
    }

    /// Send FIN once the send ring is empty.
    pub fn close(&mut self) {
        self.tcp_mut().close();
    }

    /// Reset the connection.
    pub fn abort(&mut self) {
        self.tcp_mut().abort();
    }

    /// Feed one received packet (the device holds it) to this socket.
    pub fn poll_ingress<D: Device>(&mut self, iface: &mut Interface, t: SmolInstant, dev: &mut D) {
        iface.poll_ingress_single(t, dev, &mut self.set);
    }

    /// Let the socket emit its next segment, if it has one to send; returns whether it did
    /// (smoltcp emits at most one segment per socket per call).
    pub fn poll_egress<D: Device>(
        &mut self,
        iface: &mut Interface,
        t: SmolInstant,
        dev: &mut D,
    ) -> bool {
        iface.poll_egress(t, dev, &mut self.set) == smoltcp::iface::PollResult::SocketStateChanged
    }

    /// When the socket next needs a poll (retransmission, delayed ACK, timeout).
    pub fn poll_at(&self, iface: &mut Interface, t: SmolInstant) -> Option<SmolInstant> {
        iface.poll_at(t, &self.set)
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
        arena.trim_slot(&slot).unwrap();
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
    fn sockets_return_their_slots() {
        let mut arena = RingArena::new(4096, 4096);
        let a = arena.socket().unwrap();
        let b = arena.socket().unwrap();
        assert_eq!(arena.in_use(), 2);
        assert_eq!(a.state(), tcp::State::Closed);
        arena.trim(&a).unwrap();
        drop(a);
        assert_eq!(arena.in_use(), 1);
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
