//! RFC 6455 WebSocket protocol (with RFC 7692 compression) as a sans-IO library.
//!
//! Nothing here touches a socket, a thread or a clock of its own: a transport hands in the bytes it
//! read (mutably, so payloads are unmasked in place) and gets back events plus bytes to write. The
//! same code serves the kernel-socket path and the DPDK path, and is testable byte by byte.
//!
//! - [`handshake`]: the HTTP/1.1 upgrade, server and client side.
//! - [`frame`]: frame header parsing and encoding (RFC 6455 §5.2).
//! - [`mask`]: word-wide in-place (un)masking.
//! - [`utf8`]: incremental UTF-8 validation that fails at the first invalid byte.
//! - [`close`]: close codes and close-frame payloads.
//! - [`deflate`]: permessage-deflate (RFC 7692): negotiation, compressing and inflating
//!   messages, the per-worker codecs that sessions without context takeover borrow.
//! - [`session`]: the per-connection state machine: decoding, message assembly, control frames,
//!   the close handshake, and the [`Sender`] that encodes outgoing frames.
//! - [`transmit`]: the [`Transmit`] sink those frames go to (a `Vec<u8>`, or a transport's own
//!   output that can queue large payloads by reference).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod close;
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod session;
pub mod transmit;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use deflate::{Codecs, DeflateConfig, DeflateParams};
pub use error::ProtocolError;
pub use frame::{FrameHeader, FrameTallies, FrameTally, OpCode};
pub use session::{Event, Limits, Message, Role, Sender, Session, SessionState};
pub use transmit::Transmit;
