//! Protocol violations detected while decoding, and the close code each one maps to.

use crate::close::CloseCode;

/// A violation of RFC 6455 by the peer (or a configured limit it exceeded).
///
/// Every variant fails the connection; [`ProtocolError::close_code`] says with which code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A client frame without the mask bit (§5.1: the server must fail the connection).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A server frame with the mask bit set (§5.1).
    #[error("server frame is masked")]
    MaskedFrame,
    /// RSV1-3 set without an extension that defines them (§5.2), or RSV1 where permessage-deflate
    /// does not allow it (a control frame, a continuation frame).
    #[error("reserved bits {0:#05b} set without a negotiated extension")]
    ReservedBits(u8),
    /// Opcode 3-7 or 11-15 (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame with more than 125 bytes of payload (§5.5).
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlFrameTooLong(u64),
    /// A control frame with FIN clear (§5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A continuation frame with no message in progress (§5.4).
    #[error("continuation frame without a message in progress")]
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is in progress (§5.4).
    #[error("new data frame while a fragmented message is in progress")]
    ExpectedContinuation,
    /// The most significant bit of a 64-bit payload length is set (§5.2).
    #[error("64-bit payload length has its most significant bit set")]
    LengthTopBit,
    /// The payload length is not encoded in the minimal number of bytes (§5.2).
    #[error("payload length {0} is not minimally encoded")]
    NonMinimalLength(u64),
    /// One frame is larger than the configured limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Declared payload length.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// The message being assembled would exceed the configured limit.
    #[error("message of at least {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// Size the message would reach.
        len: u64,
        /// Configured maximum.
        max: u64,
    },
    /// A text message or close reason that is not valid UTF-8 (§8.1).
    #[error("invalid UTF-8 in text payload")]
    InvalidUtf8,
    /// A close frame whose payload is one byte long (§5.5.1).
    #[error("close frame payload of 1 byte")]
    ClosePayloadTooShort,
    /// A close code a peer may not send (§7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A compressed message (RFC 7692) whose payload is not a valid deflate stream.
    #[error("compressed message is not valid deflate data")]
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code to fail the connection with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge { .. } | Self::MessageTooLarge { .. } => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}
