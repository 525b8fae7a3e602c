//! hioload-ws: WebSocket and TCP services over the hioload transports.
//!
//! This facade is what the `hioload-ws` binary and embedders use:
//! - [`handler`]: the application API ([`Handler`]): accept or reject a handshake, receive
//!   messages, reply, and reach any session of the worker ([`Context`], [`WorkerContext`],
//!   [`PreparedFrame`]), other workers' handlers and timers.
//! - [`middleware`]: logging, panic recovery and metrics wrapped around any handler.
//! - [`websocket`]: [`WsService`], which runs the sans-IO [`ws`] protocol for a handler on any
//!   transport of [`stack`].
//! - [`tcp_echo`]: raw TCP echo as a [`stack::Service`].
//! - [`echo`]: the WebSocket echo handler.
//! - [`broadcast`]: every message to every session of every worker.
//! - [`pubsub`]: channels, presence and history (the pub/sub appliance's handler).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use hioload_stack as stack;
pub use hioload_wsproto as ws;

pub mod broadcast;
pub mod echo;
pub mod handler;
pub mod live;
pub mod middleware;
pub mod pubsub;
pub mod tcp_echo;
pub mod websocket;
pub mod ws_metrics;

pub use handler::{Context, Decision, Handler, PreparedFrame, Preparer, WorkerContext};
pub use websocket::{WsConfig, WsService};

/// Version, git revision and build profile, e.g. `0.1.0 (rev 1a2b3c4d5e6f, release)`.
pub fn build_info() -> String {
    format!(
        "{} (rev {}, {})",
        env!("CARGO_PKG_VERSION"),
        env!("HIOLOAD_GIT_REV"),
        env!("HIOLOAD_PROFILE")
    )
}
