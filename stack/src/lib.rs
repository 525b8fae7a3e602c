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
//!
//! The DPDK transport (EAL, mempools, ports, smoltcp, flow table) lands behind the `dpdk` feature.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "dpdk")]
compile_error!(
    "the DPDK data plane is not implemented yet (tracked by the DPDK data-plane issue); \
     build without `--features dpdk` and run with the kernel-socket transport (`--no-dpdk`)"
);

pub mod affinity;
pub mod bufpool;
pub mod error;
pub mod kernel;
pub mod service;
pub mod timer;

pub use error::TransportError;
pub use service::{CloseCause, ConnId, Service, Verdict};
