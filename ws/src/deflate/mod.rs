//! permessage-deflate (RFC 7692): negotiation, and the compression state a session uses.
//!
//! - [`negotiate`]: the offer, the server's choice and answer, the client's check of it.
//! - [`codec`]: compressing and inflating one message, and the per-worker [`Codecs`] that lend
//!   that state to sessions without context takeover.
//!
//! The [`crate::Session`] applies it to frames: RSV1 on the first frame of a compressed
//! message, control frames never compressed, inflated output bounded by the message limit.

pub mod codec;
pub mod negotiate;

pub use codec::{Codecs, Compressor, Compressors, DeflateStats, InflateError, Inflater, Inflaters};
pub use negotiate::{
    accept, negotiate, offer, Agreement, DeflateConfig, DeflateParams, NegotiationError,
};
