//! Safe wrappers over DPDK's FFI (`hioload-dpdk-sys`), and with them every `unsafe` of the DPDK
//! path; the transport built on them is [`crate::bypass`], in safe code.
//!
//! - [`eal`]: the Environment Abstraction Layer, initialised once per process.
//! - [`mempool`]: mbuf pools, one per NUMA socket in use.
//! - [`port`]: an Ethernet port with one RX/TX queue pair per worker.
//! - [`mbuf`]: an owned packet buffer, freed exactly once on `Drop`.
//!
//! Every `unsafe` block says why it is sound in a `SAFETY:` comment.
#![allow(unsafe_code)]

pub mod eal;
pub mod error;
pub mod mbuf;
pub mod mempool;
pub mod port;

pub use eal::Eal;
pub use error::DpdkError;
pub use mbuf::Mbuf;
pub use mempool::Mempool;
pub use port::{Offloads, Port, PortConfig, PortStats, TxBatch};
