//! An owned packet buffer.

use std::ptr::NonNull;

use hioload_dpdk_sys as sys;

use super::Mempool;

/// One mbuf, owned: freed back to its pool exactly once, on drop, unless handed to the NIC with
/// [`Mbuf::into_raw`].
#[derive(Debug)]
pub struct Mbuf {
    ptr: NonNull<sys::rte_mbuf>,
}

// SAFETY: an mbuf is owned by one holder at a time and may move between lcores; freeing it from
// another lcore returns it to its pool through the pool's thread-safe path.
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Allocate an empty mbuf from `pool`; `None` if the pool is exhausted.
    #[inline]
    pub fn alloc(pool: &Mempool) -> Option<Self> {
        // SAFETY: the pool pointer is valid while `pool` is borrowed.
        NonNull::new(unsafe { sys::hl_rte_pktmbuf_alloc(pool.as_ptr()) }).map(|ptr| Self { ptr })
    }

    /// Take ownership of a raw mbuf.
    ///
    /// # Safety
    /// `ptr` must be a valid mbuf that no one else owns or will free (e.g. fresh from
    /// `rte_eth_rx_burst`).
    #[inline]
    pub unsafe fn from_raw(ptr: NonNull<sys::rte_mbuf>) -> Self {
        Self { ptr }
    }

    /// Give up ownership (to the NIC, through `rte_eth_tx_burst`).
    #[inline]
    pub fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    /// The packet data in the first segment.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: the mbuf is valid and owned; its first segment holds data_len initialised bytes
        // starting at the data pointer, and nothing else writes them while we hold `&self`.
        unsafe {
            let len = sys::hl_rte_pktmbuf_data_len(self.ptr.as_ptr()) as usize;
            std::slice::from_raw_parts(
                sys::hl_rte_pktmbuf_data(self.ptr.as_ptr()) as *const u8,
                len,
            )
        }
    }

    /// The packet data in the first segment, mutably.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes the access exclusive.
        unsafe {
            let len = sys::hl_rte_pktmbuf_data_len(self.ptr.as_ptr()) as usize;
            std::slice::from_raw_parts_mut(
                sys::hl_rte_pktmbuf_data(self.ptr.as_ptr()) as *mut u8,
                len,
            )
        }
    }

    /// Segments in the packet (1 unless the port scatters large frames).
    #[inline]
    pub fn segments(&self) -> u16 {
        // SAFETY: the mbuf is valid.
        unsafe { sys::hl_rte_pktmbuf_nb_segs(self.ptr.as_ptr()) }
    }

    /// Extend the data by `len` bytes and return them (uninitialised contents are zeroed); `None`
    /// if the first segment has no room.
    #[inline]
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: the mbuf is valid and exclusively ours; rte_pktmbuf_append returns a pointer to
        // `len` bytes inside the buffer, or NULL.
        let p = unsafe { sys::hl_rte_pktmbuf_append(self.ptr.as_ptr(), len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: p points at len bytes inside this mbuf's buffer, exclusively ours while
        // `&mut self` is borrowed; zeroing first makes them initialised.
        unsafe {
            std::ptr::write_bytes(p, 0, len as usize);
            Some(std::slice::from_raw_parts_mut(p as *mut u8, len as usize))
        }
    }

    /// The NIC's RSS hash of the flow, if it set one.
    #[inline]
    pub fn rss_hash(&self) -> Option<u32> {
        let mut h = 0;
        // SAFETY: the mbuf is valid; `h` is a valid out-pointer.
        (unsafe { sys::hl_rte_mbuf_rss_hash(self.ptr.as_ptr(), &mut h) } != 0).then_some(h)
    }

    /// Ask the NIC to compute the IPv4 header and TCP checksums of this packet, whose IPv4 header
    /// starts at `l2_len` and is `l3_len` long, with the TCP header right after it.
    #[inline]
    pub fn offload_ipv4_tcp_checksums(&mut self, l2_len: u16, l3_len: u16) {
        assert!(
            self.data().len() >= usize::from(l2_len) + usize::from(l3_len) + 20,
            "no TCP header there"
        );
        // SAFETY: the mbuf is valid and exclusively ours, and holds IPv4 and TCP headers at those
        // offsets (checked above), which the shim writes.
        unsafe { sys::hl_rte_mbuf_tx_offload_ipv4_tcp(self.ptr.as_ptr(), l2_len, l3_len) }
    }

    /// Ask the NIC to compute the IPv4 header checksum of this packet.
    #[inline]
    pub fn offload_ipv4_checksum(&mut self, l2_len: u16, l3_len: u16) {
        assert!(
            self.data().len() >= usize::from(l2_len) + usize::from(l3_len).max(20),
            "no IPv4 header there"
        );
        // SAFETY: as above, for the IPv4 header only.
        unsafe { sys::hl_rte_mbuf_tx_offload_ipv4(self.ptr.as_ptr(), l2_len, l3_len) }
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own the mbuf and free it exactly once (into_raw forgets self instead).
        unsafe { sys::hl_rte_pktmbuf_free(self.ptr.as_ptr()) }
    }
}
