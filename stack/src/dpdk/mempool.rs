//! Packet-buffer pools. One per NUMA socket in use: a worker allocates from its own socket's
//! pool, and an RX queue fills from the pool of its port's socket.

use std::ffi::CString;
use std::ptr::NonNull;

use hioload_dpdk_sys as sys;

use super::error::{describe, last_errno, DpdkError};
use super::Eal;

/// An mbuf pool.
#[derive(Debug)]
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
    socket: i32,
}

// SAFETY: DPDK mempools are multi-producer/multi-consumer safe (per-lcore caches plus a
// lock-free ring); the pointer may be used from any lcore or thread.
unsafe impl Send for Mempool {}
// SAFETY: as above; shared references only hand the pointer to DPDK's thread-safe functions.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Create a pool of `count` mbufs with `data_room` bytes each (headroom included) on NUMA
    /// `socket` (-1: any). `cache` mbufs are cached per lcore.
    pub fn create(
        _eal: &Eal,
        name: &str,
        count: u32,
        cache: u32,
        data_room: u16,
        socket: i32,
    ) -> Result<Self, DpdkError> {
        let cname = CString::new(name).map_err(|_| DpdkError::BadArgument(name.into()))?;
        // SAFETY: EAL is initialised (we hold a reference to it); cname is a valid C string that
        // DPDK copies into the pool's name.
        let ptr = unsafe {
            sys::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, socket)
        };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Self { ptr, socket }),
            None => Err(DpdkError::Call {
                call: format!("rte_pktmbuf_pool_create({name}, {count} mbufs, socket {socket})"),
                reason: format!(
                    "{}; with --no-huge, give EAL enough memory (-m) for {count} mbufs of {data_room} bytes",
                    describe(last_errno())
                ),
            }),
        }
    }

    /// The raw pool, for DPDK calls.
    pub fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.ptr.as_ptr()
    }

    /// NUMA socket the pool was created on.
    pub fn socket(&self) -> i32 {
        self.socket
    }

    /// Mbufs currently allocated from the pool (including those held by NIC rings).
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool pointer is valid for self's lifetime.
        unsafe { sys::hl_rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// Mbufs available for allocation.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool pointer is valid for self's lifetime.
        unsafe { sys::hl_rte_mempool_avail_count(self.ptr.as_ptr()) }
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool was created by rte_pktmbuf_pool_create and is freed once, here. Ports
        // using it hold an `Arc<Mempool>`, so they are closed before this runs.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}
