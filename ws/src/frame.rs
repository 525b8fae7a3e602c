//! Frame headers (RFC 6455 §5.2): parsing with the length rules, and encoding.

use crate::error::ProtocolError;
use crate::mask::apply_mask;

/// The largest header: 2 bytes, an 8-byte extended length and a 4-byte masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// A frame opcode. The reserved values 3-7 and 11-15 are rejected while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation = 0x0,
    /// 0x1: UTF-8 text.
    Text = 0x1,
    /// 0x2: binary data.
    Binary = 0x2,
    /// 0x8: close.
    Close = 0x8,
    /// 0x9: ping.
    Ping = 0x9,
    /// 0xA: pong.
    Pong = 0xA,
}

/// Frames and payload bytes counted by opcode: what a worker tallies over all its sessions
/// (one tally per worker, lent to each session call), for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameTally {
    /// Frames, indexed by [`OpCode::index`].
    pub frames: [u64; 6],
    /// Payload bytes, indexed by [`OpCode::index`].
    pub bytes: [u64; 6],
}

/// Frames counted each way, as [`crate::Session::feed_tallied`] and
/// [`crate::Session::sender_tallied`] count them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FrameTallies {
    /// Frames received (counted as each header is accepted).
    pub received: FrameTally,
    /// Frames sent (counted as each frame is written).
    pub sent: FrameTally,
}

impl FrameTally {
    /// Count one frame with `len` payload bytes.
    #[inline]
    pub fn add(&mut self, opcode: OpCode, len: u64) {
        let i = opcode.index();
        self.frames[i] += 1;
        self.bytes[i] += len;
    }

    /// Count `count` frames of `opcode`, each with `len` payload bytes (one frame sent to many).
    pub fn add_many(&mut self, opcode: OpCode, len: u64, count: u64) {
        let i = opcode.index();
        self.frames[i] += count;
        self.bytes[i] += len * count;
    }

    /// Count every frame in `bytes`, which holds whole frames back to back (what a server has
    /// just written); stops at anything that is not one.
    pub fn add_written(&mut self, mut bytes: &[u8]) {
        while let Ok(Some((h, n))) = FrameHeader::parse(bytes) {
            let end = n.saturating_add(usize::try_from(h.len).unwrap_or(usize::MAX));
            if end > bytes.len() {
                return;
            }
            self.add(h.opcode, h.len);
            bytes = &bytes[end..];
        }
    }
}

impl OpCode {
    /// Every opcode, in [`OpCode::index`] order.
    pub const ALL: [OpCode; 6] = [
        OpCode::Continuation,
        OpCode::Text,
        OpCode::Binary,
        OpCode::Close,
        OpCode::Ping,
        OpCode::Pong,
    ];

    /// A dense index, 0..6, for counting by opcode.
    #[inline]
    pub fn index(self) -> usize {
        match self {
            Self::Continuation => 0,
            Self::Text => 1,
            Self::Binary => 2,
            Self::Close => 3,
            Self::Ping => 4,
            Self::Pong => 5,
        }
    }

    /// The opcode's name, lower case (for metric labels).
    pub fn name(self) -> &'static str {
        match self {
            Self::Continuation => "continuation",
            Self::Text => "text",
            Self::Binary => "binary",
            Self::Close => "close",
            Self::Ping => "ping",
            Self::Pong => "pong",
        }
    }

    /// Decode the low nibble of the first header byte.
    pub fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            other => return Err(ProtocolError::ReservedOpcode(other)),
        })
    }

    /// Close, ping and pong.
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits.
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the mask bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
}

impl FrameHeader {
    /// Parse a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header, otherwise the header and
    /// its length in bytes. Checks the rules that belong to the header alone: reserved opcodes,
    /// the 64-bit length's top bit and minimal length encoding. Rules that depend on the session
    /// (masking, RSV, control frames, fragmentation, limits) are the decoder's.
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let opcode = OpCode::from_u8(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let (len, mut pos) = match b1 & 0x7f {
            126 => {
                let Some(ext) = buf.get(2..4) else {
                    return Ok(None);
                };
                let len = u64::from(u16::from_be_bytes([ext[0], ext[1]]));
                if len < 126 {
                    return Err(ProtocolError::NonMinimalLength(len));
                }
                (len, 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else {
                    return Ok(None);
                };
                let mut b = [0u8; 8];
                b.copy_from_slice(ext);
                let len = u64::from_be_bytes(b);
                if len >> 63 != 0 {
                    return Err(ProtocolError::LengthTopBit);
                }
                if len <= u64::from(u16::MAX) {
                    return Err(ProtocolError::NonMinimalLength(len));
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        let mask = if masked {
            let Some(k) = buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            pos += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        let header = Self {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode,
            mask,
            len,
        };
        Ok(Some((header, pos)))
    }

    /// Encode into `out`, returning the number of bytes written.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode as u8;
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = if self.len < 126 {
            out[1] = mask_bit | self.len as u8;
            2
        } else if self.len <= u64::from(u16::MAX) {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(self.len as u16).to_be_bytes());
            4
        } else {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&self.len.to_be_bytes());
            10
        };
        if let Some(key) = self.mask {
            out[pos..pos + 4].copy_from_slice(&key);
            pos += 4;
        }
        pos
    }
}

/// Append one whole frame to `out`; with `mask`, the payload is masked as a client must.
pub fn write_frame(
    out: &mut Vec<u8>,
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) {
    let header = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask,
        len: payload.len() as u64,
    };
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut hdr);
    out.reserve(n + payload.len());
    out.extend_from_slice(&hdr[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(h: FrameHeader) {
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = h.encode(&mut buf);
        assert_eq!(FrameHeader::parse(&buf[..n]), Ok(Some((h, n))));
        for short in 0..n {
            assert_eq!(
                FrameHeader::parse(&buf[..short]),
                Ok(None),
                "{short} of {n} bytes"
            );
        }
    }

    #[test]
    fn encode_parse_roundtrip_at_every_length_form() {
        for len in [0u64, 1, 125, 126, 127, 65535, 65536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                for opcode in [OpCode::Text, OpCode::Binary, OpCode::Continuation] {
                    roundtrip(FrameHeader {
                        fin: len % 2 == 0,
                        rsv: 0,
                        opcode,
                        mask,
                        len,
                    });
                }
            }
        }
    }

    #[test]
    fn reserved_opcodes_are_rejected() {
        for op in (3..=7).chain(11..=15) {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0x80]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }

    #[test]
    fn length_top_bit_is_rejected() {
        let mut b = vec![0x82, 0xff];
        b.extend_from_slice(&(1u64 << 63 | 70000).to_be_bytes());
        assert_eq!(FrameHeader::parse(&b), Err(ProtocolError::LengthTopBit));
    }

    #[test]
    fn non_minimal_lengths_are_rejected() {
        assert_eq!(
            FrameHeader::parse(&[0x82, 126, 0, 125]),
            Err(ProtocolError::NonMinimalLength(125))
        );
        let mut b = vec![0x82, 127];
        b.extend_from_slice(&65535u64.to_be_bytes());
        assert_eq!(
            FrameHeader::parse(&b),
            Err(ProtocolError::NonMinimalLength(65535))
        );
    }

    #[test]
    fn rfc_examples() {
        // RFC 6455 §5.7: unmasked "Hello", and a masked one.
        assert_eq!(
            FrameHeader::parse(&[0x81, 0x05, 0x48]),
            Ok(Some((
                FrameHeader {
                    fin: true,
                    rsv: 0,
                    opcode: OpCode::Text,
                    mask: None,
                    len: 5
                },
                2
            )))
        );
        let (h, n) = FrameHeader::parse(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d])
            .unwrap()
            .unwrap();
        assert_eq!((h.mask, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 6));
        let mut out = Vec::new();
        write_frame(
            &mut out,
            true,
            OpCode::Text,
            b"Hello",
            Some([0x37, 0xfa, 0x21, 0x3d]),
        );
        assert_eq!(
            out,
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
    }
}
