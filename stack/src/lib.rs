//! Everything below the WebSocket layer: transports that move bytes between the network and a
//! [`Service`], one connection API for all of them.
//!
//! Where a packet goes, module by module:
//! - [`kernel`]: the kernel-socket transport (`--no-dpdk`): per-worker `mio` poller, listener,
//!   accept, read into a shared per-worker buffer, hand to the [`Service`], write corked output.
//! - [`service`]: the connection API the transports drive and protocols implement.
//! - [`timer`]: per-worker deadlines (handshake, idle, ping, close linger).
//! - [`bufpool`]: output buffers lent to connections only while they have output.
//! - [`affinity`]: pinning worker threads to CPUs.
//! - [`meter`]: worker loop iterations and busy time, published without locks.
//! - [`live`]: limits that change while serving, picked up by workers once per iteration.
//! - [`net`]: Ethernet, ARP and the smoltcp device for the DPDK path (pure, tested without a NIC).
//!
//! - [`dpdk`] (feature `dpdk`): safe wrappers over DPDK (EAL, mempools, ports, mbufs) and the DPDK
//!   transport: a worker per lcore running [`net::engine`] over its queue pair.
// Only `dpdk` (the FFI) and `net::rings` (mapping and advising ring memory) may contain `unsafe`;
// each allows it for itself. Everything else is safe.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod affinity;
pub mod bufpool;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod error;
pub mod kernel;
pub mod live;
pub mod meter;
pub mod net;
pub mod service;
pub mod timer;

pub use error::TransportError;
pub use service::{CloseCause, ConnId, Service, Verdict};
