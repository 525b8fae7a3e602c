//! Everything below the WebSocket layer: transports that move bytes between the network and a
//! [`Service`], one connection API for all of them.
//!
//! Where a packet goes, module by module:
//! - [`kernel`]: the kernel-socket transport (`--no-dpdk`): per-worker `mio` poller, listener,
//!   accept, read into a shared per-worker buffer, hand to the driver, write corked output.
//! - [`conn`]: a connection's identity ([`ConnId`], generation-checked) and fate ([`Verdict`],
//!   [`CloseCause`], [`PushError`]).
//! - [`service`]: the connection API the transports drive and protocols implement: a
//!   [`Service`], and the context ([`Ctx`]) through which it writes to any connection of its
//!   worker, posts to workers and sets timers.
//! - [`driver`]: what every transport does with its connections alike (service state, output,
//!   closing phases, deadlines, pushes and the slow-consumer policy), around the transport's
//!   own I/O.
//! - [`output`]: a connection's pending output; [`output::Prepared`] bytes shared by many.
//! - [`mailbox`]: bounded per-worker mailboxes, posted to by other workers and threads.
//! - [`timer`]: per-worker deadlines (handshake, idle, ping, close linger) and service timers.
//! - [`bufpool`]: output buffers lent to connections only while they have output.
//! - [`report`]: what a worker did, on either transport.
//! - [`affinity`]: pinning worker threads to CPUs.
//! - [`meter`]: worker loop iterations and busy time, published without locks.
//! - [`live`]: limits that change while serving, picked up by workers once per iteration.
//! - [`net`]: Ethernet, ARP and the smoltcp device for the DPDK path (pure, tested without a NIC).
//!
//! - [`dpdk`] (feature `dpdk`): safe wrappers over DPDK's FFI (EAL, mempools, ports, mbufs).
//! - [`bypass`] (feature `dpdk`): the kernel-bypass transport on them: a worker per lcore
//!   running [`net::engine`] over its queue pair, one step per module.
// Only `dpdk` (the FFI) and `net::rings` (mapping and advising ring memory) may contain `unsafe`;
// each allows it for itself. Everything else is safe.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod affinity;
pub mod bufpool;
#[cfg(feature = "dpdk")]
pub mod bypass;
pub mod conn;
#[cfg(feature = "dpdk")]
pub mod dpdk;
pub mod driver;
pub mod error;
pub mod kernel;
pub mod live;
pub mod mailbox;
pub mod meter;
pub mod net;
pub mod output;
pub mod report;
pub mod service;
pub mod timer;

pub use driver::SlowConsumer;
pub use error::TransportError;
pub use mailbox::{PostError, Postboxes};
pub use output::{Output, Prepared};
pub use report::WorkerReport;
pub use service::{CloseCause, ConnCtx, ConnId, Ctx, Fanout, PushError, Service, Verdict};
