//! The per-connection WebSocket state machine, after the handshake.
//!
//! [`Session::feed`] takes the bytes a transport just read and reports [`Event`]s to a callback,
//! together with a [`Sender`] that appends encoded frames to the transport's output buffer. The
//! session answers pings, echoes the peer's close code, and fails the connection with the right
//! code on any protocol violation; the application only sees messages (and may watch the rest).
//!
//! Copies: a message whose frame lies whole in the input is unmasked in place and handed out as a
//! slice of the input. Only a message that is fragmented or spans reads is assembled in the
//! session's own buffer, and only a header cut by a read boundary (at most 14 bytes) is kept.
//!
//! With permessage-deflate ([`Session::with_deflate`]), a compressed message (RSV1 on its first
//! frame) is inflated once it is complete, into the worker's [`Codecs`] buffer when the caller
//! passes them ([`Session::feed_with`]), with output bounded by the message limit. A sender
//! given the worker's [`Compressors`] compresses text and binary messages; control frames and
//! raw [`Sender::frame`]s never are.

use crate::close::{CloseCode, CloseFrame};
use crate::deflate::{
    Codecs, Compressor, Compressors, DeflateParams, InflateError, Inflater, Inflaters,
};
use crate::error::ProtocolError;
use crate::frame::{FrameHeader, FrameTallies, FrameTally, OpCode, MAX_HEADER_LEN};
use crate::mask::apply_mask;
use crate::transmit::Transmit;
use crate::utf8::Utf8Validator;

/// Assembly buffers larger than this are released after their message instead of kept.
const KEEP_CAPACITY: usize = 64 * 1024;

/// RSV1 in [`FrameHeader::rsv`]: the message is compressed (RFC 7692 §6).
pub const RSV1: u8 = 0b100;

/// Which end of the connection this session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives masked frames, sends unmasked ones.
    Server,
    /// Sends masked frames, receives unmasked ones. Holds the state of its masking-key generator.
    Client {
        /// xorshift32 state; must not be 0. Seed it from a random source.
        mask_seed: u32,
    },
}

/// Size limits, checked against frame headers before any payload is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest payload of one frame.
    pub max_frame: u64,
    /// Largest message, the sum of its fragments.
    pub max_message: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame: 64 << 20,
            max_message: 64 << 20,
        }
    }
}

/// Where the closing handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Messages flow both ways.
    Open,
    /// We sent a close frame and wait for the peer's.
    CloseSent,
    /// The close handshake is complete or the connection failed: flush the output, then close
    /// the TCP connection. Further input is ignored.
    Closed,
}

/// A complete data message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, validated as UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}

impl<'a> Message<'a> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        match *self {
            Self::Text(s) => s.as_bytes(),
            Self::Binary(b) => b,
        }
    }
}

/// What the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete message.
    Message(Message<'a>),
    /// A ping; the session has already queued the pong.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame; the session has already answered it if it had not sent one itself.
    Close(Option<CloseFrame<'a>>),
}

/// Encodes frames into a [`Transmit`] sink: the transport's output (a `Vec<u8>` by default).
pub struct Sender<'a, O: Transmit + ?Sized = Vec<u8>> {
    out: &'a mut O,
    tx: &'a mut TxState,
    /// Where written frames are counted, if anywhere.
    sent: Option<&'a mut FrameTally>,
    /// The worker's compressors, if the caller lent them.
    compress: Option<&'a mut Compressors>,
}

#[derive(Debug)]
struct TxState {
    role: Role,
    close_sent: bool,
    /// The code of the close frame sent (1005: it carried none).
    close_code: u16,
    /// permessage-deflate's sending side, when negotiated.
    deflate: Option<TxDeflate>,
}

/// The sending side of permessage-deflate in one session.
#[derive(Debug)]
struct TxDeflate {
    params: DeflateParams,
    /// The session's own compressor: with context takeover, or when no worker compressors are
    /// lent. Made at the first message that is compressed.
    own: Option<Box<Compressor>>,
}

impl TxDeflate {
    /// `data` compressed for this session, or `None` to send it as it is. The result lies in
    /// `pool`'s buffer, or in `local` without a pool.
    fn compress<'b>(
        &mut self,
        data: &[u8],
        pool: Option<&'b mut Compressors>,
        local: &'b mut Vec<u8>,
    ) -> Option<&'b [u8]> {
        let p = self.params;
        if p.send_window_bits < crate::deflate::negotiate::MIN_WINDOW_BITS {
            return None;
        }
        match pool {
            Some(pool) if !p.send_takeover => pool.compress(p.send_window_bits, data),
            Some(pool) => {
                let own = self.own(p);
                pool.compress_own(own, data)
            }
            None => {
                if data.len() < p.min_size as usize {
                    return None;
                }
                let sent = self.own(p).shrink(data, local, p.send_takeover);
                sent.then_some(&local[..])
            }
        }
    }

    fn own(&mut self, p: DeflateParams) -> &mut Compressor {
        self.own
            .get_or_insert_with(|| Box::new(Compressor::new(p.level, p.send_window_bits)))
    }
}

/// Hand a complete message to `on_event` with a sender for replies; text must be UTF-8.
fn emit<O, F>(
    on_event: &mut F,
    mut tx: Sender<'_, O>,
    text: bool,
    payload: &[u8],
) -> Result<(), ProtocolError>
where
    O: Transmit + ?Sized,
    F: FnMut(Event<'_>, &mut Sender<'_, O>),
{
    let msg = if text {
        Message::Text(std::str::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?)
    } else {
        Message::Binary(payload)
    };
    on_event(Event::Message(msg), &mut tx);
    Ok(())
}

/// A session's own inflate state: with context takeover, or when no worker decompressor is lent.
/// Made at the first compressed message (boxed: a session without it pays one pointer).
#[derive(Debug)]
struct OwnInflate {
    inflater: Inflater,
    /// Where messages inflate when no worker buffer is lent.
    out: Vec<u8>,
}

/// Inflate one complete compressed message's payload for a session that negotiated `p`, with
/// the worker's inflaters if lent.
fn inflate<'b>(
    p: DeflateParams,
    own: &'b mut Option<Box<OwnInflate>>,
    pool: Option<&'b mut Inflaters>,
    data: &[u8],
    limit: u64,
) -> Result<&'b [u8], ProtocolError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let own_state = |own: &'b mut Option<Box<OwnInflate>>| -> &'b mut OwnInflate {
        own.get_or_insert_with(|| {
            Box::new(OwnInflate {
                inflater: Inflater::new(p.recv_window_bits),
                out: Vec::new(),
            })
        })
    };
    let result = match pool {
        Some(pool) if !p.recv_takeover => pool.inflate(None, data, limit),
        Some(pool) => pool.inflate(Some(&mut own_state(own).inflater), data, limit),
        None => {
            let own = own_state(own);
            let result = own.inflater.message(data, &mut own.out, limit);
            if !p.recv_takeover {
                own.inflater.reset();
            }
            result.map(|()| &own.out[..])
        }
    };
    result.map_err(|e| match e {
        InflateError::TooLarge { max } => ProtocolError::MessageTooLarge {
            len: max as u64 + 1,
            max: max as u64,
        },
        InflateError::Corrupt => ProtocolError::InvalidCompressedData,
    })
}

impl TxState {
    fn next_mask(&mut self) -> Option<[u8; 4]> {
        match &mut self.role {
            Role::Server => None,
            Role::Client { mask_seed } => {
                let mut x = *mask_seed;
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *mask_seed = x;
                Some(x.to_ne_bytes())
            }
        }
    }
}

impl<O: Transmit + ?Sized> Sender<'_, O> {
    /// Send a text message, compressed when permessage-deflate was negotiated and it pays.
    /// Ignored once a close frame was sent (RFC 6455 §5.5.1).
    pub fn text(&mut self, text: &str) {
        self.data(OpCode::Text, text.as_bytes());
    }

    /// Send a binary message (compressed as [`Sender::text`] is). Ignored once a close frame
    /// was sent.
    pub fn binary(&mut self, data: &[u8]) {
        self.data(OpCode::Binary, data);
    }

    fn data(&mut self, opcode: OpCode, payload: &[u8]) {
        if self.tx.close_sent {
            return;
        }
        let mut local = Vec::new();
        let compressed = match self.tx.deflate.as_mut() {
            Some(z) => z.compress(payload, self.compress.as_deref_mut(), &mut local),
            None => None,
        };
        match compressed {
            Some(c) => put_frame(
                self.out,
                self.tx,
                self.sent.as_deref_mut(),
                (opcode, true, RSV1),
                c,
            ),
            None => self.write(opcode, true, payload),
        }
    }

    /// Send a message of the same type as `msg`.
    pub fn message(&mut self, msg: Message<'_>) {
        match msg {
            Message::Text(t) => self.text(t),
            Message::Binary(b) => self.binary(b),
        }
    }

    /// Send a ping; payloads over 125 bytes are truncated to 125.
    pub fn ping(&mut self, payload: &[u8]) {
        self.frame(true, OpCode::Ping, &payload[..payload.len().min(125)]);
    }

    /// Send a pong; payloads over 125 bytes are truncated to 125.
    pub fn pong(&mut self, payload: &[u8]) {
        self.frame(true, OpCode::Pong, &payload[..payload.len().min(125)]);
    }

    /// Start the closing handshake. Only the first call sends a frame. The reason is cut to the
    /// 123 bytes a control frame has room for, at a character boundary.
    pub fn close(&mut self, code: CloseCode, reason: &str) {
        if self.tx.close_sent {
            return;
        }
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = [0u8; 125];
        payload[..2].copy_from_slice(&code.0.to_be_bytes());
        payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
        self.write(OpCode::Close, true, &payload[..2 + end]);
        self.tx.close_sent = true;
        self.tx.close_code = code.0;
    }

    /// A close frame without a code (the answer to one).
    fn close_empty(&mut self) {
        self.write(OpCode::Close, true, &[]);
        self.tx.close_sent = true;
        self.tx.close_code = 1005;
    }

    /// Send one raw frame (for fragmented messages and tests). Ignored once a close was sent.
    pub fn frame(&mut self, fin: bool, opcode: OpCode, payload: &[u8]) {
        if self.tx.close_sent {
            return;
        }
        self.write(opcode, fin, payload);
    }

    fn write(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        put_frame(
            self.out,
            self.tx,
            self.sent.as_deref_mut(),
            (opcode, fin, 0),
            payload,
        );
    }

    /// Whether a close frame has been sent.
    pub fn close_sent(&self) -> bool {
        self.tx.close_sent
    }

    /// The sink frames go to (for a caller that wrapped its own state in it).
    pub fn sink(&mut self) -> &mut O {
        self.out
    }

    /// Where this sender counts the frames it writes, if anywhere.
    pub fn tally(&mut self) -> Option<&mut FrameTally> {
        self.sent.as_deref_mut()
    }

    /// The sink and the tally at once (for a caller that writes other frames itself and counts
    /// them alike).
    pub fn sink_and_tally(&mut self) -> (&mut O, Option<&mut FrameTally>) {
        (self.out, self.sent.as_deref_mut())
    }

    /// The sink, the tally and the worker's compressors at once (for a caller that compresses
    /// frames for other sessions).
    pub fn parts(&mut self) -> (&mut O, Option<&mut FrameTally>, Option<&mut Compressors>) {
        (
            self.out,
            self.sent.as_deref_mut(),
            self.compress.as_deref_mut(),
        )
    }
}

/// Encode one frame into a [`Transmit`] sink: `(opcode, fin, rsv)` and the payload, masked if
/// `tx` is a client's, the payload handed to [`Transmit::put_payload`] so a sink may keep it by
/// reference, and counted. (`frame::write_frame` is the plain `Vec` twin for tests and tools.)
fn put_frame<O: Transmit + ?Sized>(
    out: &mut O,
    tx: &mut TxState,
    sent: Option<&mut FrameTally>,
    (opcode, fin, rsv): (OpCode, bool, u8),
    payload: &[u8],
) {
    let mask = tx.next_mask();
    let header = FrameHeader {
        fin,
        rsv,
        opcode,
        mask,
        len: payload.len() as u64,
    };
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = header.encode(&mut hdr);
    out.put(&hdr[..n]);
    match mask {
        Some(key) => out.put_masked(payload, key),
        None => out.put_payload(payload),
    }
    if let Some(t) = sent {
        t.add(opcode, payload.len() as u64);
    }
}

/// The part of a control frame's payload received so far.
#[derive(Debug)]
struct ControlPartial {
    len: u8,
    data: [u8; 125],
}

/// Decoder position: between frames, or inside one frame's payload.
#[derive(Debug, Clone, Copy)]
enum Rx {
    Header,
    Payload { header: FrameHeader, done: u64 },
}

/// A WebSocket session after a successful handshake.
#[derive(Debug)]
pub struct Session {
    limits: Limits,
    tx: TxState,
    rx: Rx,
    /// Set when the peer's close arrived or the connection failed.
    finished: bool,
    /// Bytes of a header cut by the end of a read.
    hdr: [u8; MAX_HEADER_LEN],
    hdr_len: u8,
    /// Type of the data message in progress, if any.
    msg_type: Option<OpCode>,
    /// The message in progress is compressed (its first frame had RSV1).
    msg_compressed: bool,
    /// permessage-deflate's own inflate state, if the session needs one.
    inflate_own: Option<Box<OwnInflate>>,
    /// The message in progress, when it is fragmented or spans reads.
    msg: Vec<u8>,
    /// A control frame's payload that spans reads (rare: allocated only then).
    ctrl: Option<Box<ControlPartial>>,
    utf8: Utf8Validator,
}

impl Session {
    /// A session in the open state.
    pub fn new(role: Role, limits: Limits) -> Self {
        Self {
            limits,
            tx: TxState {
                role,
                close_sent: false,
                close_code: 1005,
                deflate: None,
            },
            rx: Rx::Header,
            finished: false,
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            msg_type: None,
            msg_compressed: false,
            inflate_own: None,
            msg: Vec::new(),
            ctrl: None,
            utf8: Utf8Validator::new(),
        }
    }

    /// The session with permessage-deflate as negotiated (`params` as seen from this end).
    pub fn with_deflate(mut self, params: DeflateParams) -> Self {
        self.set_deflate(params);
        self
    }

    /// Apply permessage-deflate as negotiated, before the first frame either way.
    pub fn set_deflate(&mut self, params: DeflateParams) {
        self.tx.deflate = Some(TxDeflate { params, own: None });
        self.inflate_own = None;
    }

    /// Where the closing handshake stands.
    pub fn state(&self) -> SessionState {
        if self.finished {
            SessionState::Closed
        } else if self.tx.close_sent {
            SessionState::CloseSent
        } else {
            SessionState::Open
        }
    }

    /// Change the size limits (they apply from the next frame header on).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// A sender that appends frames to `out`.
    pub fn sender<'a, O: Transmit + ?Sized>(&'a mut self, out: &'a mut O) -> Sender<'a, O> {
        Sender {
            out,
            tx: &mut self.tx,
            sent: None,
            compress: None,
        }
    }

    /// A sender counting into `sent` (if given) and compressing with the worker's `compress`
    /// where the session sends without context takeover.
    pub fn sender_with<'a, O: Transmit + ?Sized>(
        &'a mut self,
        out: &'a mut O,
        sent: Option<&'a mut FrameTally>,
        compress: Option<&'a mut Compressors>,
    ) -> Sender<'a, O> {
        Sender {
            out,
            tx: &mut self.tx,
            sent,
            compress,
        }
    }

    /// [`Session::sender`], also counting every frame it writes in `sent`.
    pub fn sender_tallied<'a, O: Transmit + ?Sized>(
        &'a mut self,
        out: &'a mut O,
        sent: &'a mut FrameTally,
    ) -> Sender<'a, O> {
        Sender {
            out,
            tx: &mut self.tx,
            sent: Some(sent),
            compress: None,
        }
    }

    /// The code of the close frame this side sent (1005 if it carried none), once one was.
    pub fn close_code_sent(&self) -> Option<CloseCode> {
        self.tx.close_sent.then_some(CloseCode(self.tx.close_code))
    }

    /// Bytes of partial frames and messages held by this session.
    pub fn buffered(&self) -> usize {
        self.msg.len() + self.ctrl.as_ref().map_or(0, |c| c.len as usize) + self.hdr_len as usize
    }

    /// Give up on the connection without a handshake (e.g. the close timeout passed).
    pub fn abort(&mut self) {
        self.finished = true;
    }

    /// Decode `input`, which the transport just read; it is unmasked in place.
    ///
    /// `on_event` sees each event with a [`Sender`] for replies. Protocol duties are done before
    /// it is called: pings answered, a close echoed. On a violation the session sends a close
    /// frame with the matching code, moves to [`SessionState::Closed`] and returns the error for
    /// the caller to log; input after that, or after the peer's close, is ignored.
    pub fn feed<O, F>(
        &mut self,
        input: &mut [u8],
        out: &mut O,
        on_event: F,
    ) -> Result<(), ProtocolError>
    where
        O: Transmit + ?Sized,
        F: FnMut(Event<'_>, &mut Sender<'_, O>),
    {
        self.feed_tallied(input, out, &mut FrameTallies::default(), on_event)
    }

    /// [`Session::feed`], also counting frames (by opcode, with their payload lengths): every
    /// frame received as its header is accepted, every frame written (replies, pongs, closes)
    /// as it is written.
    pub fn feed_tallied<O, F>(
        &mut self,
        input: &mut [u8],
        out: &mut O,
        tally: &mut FrameTallies,
        on_event: F,
    ) -> Result<(), ProtocolError>
    where
        O: Transmit + ?Sized,
        F: FnMut(Event<'_>, &mut Sender<'_, O>),
    {
        self.feed_with(input, out, tally, None, on_event)
    }

    /// [`Session::feed_tallied`] with the worker's deflate [`Codecs`] lent: compressed messages
    /// inflate into their buffer, and the senders handed to `on_event` compress with them.
    /// Without them a session with deflate uses state of its own.
    pub fn feed_with<O, F>(
        &mut self,
        input: &mut [u8],
        out: &mut O,
        tally: &mut FrameTallies,
        codecs: Option<&mut Codecs>,
        mut on_event: F,
    ) -> Result<(), ProtocolError>
    where
        O: Transmit + ?Sized,
        F: FnMut(Event<'_>, &mut Sender<'_, O>),
    {
        if self.finished {
            return Ok(());
        }
        let result = self.decode(input, out, tally, codecs, &mut on_event);
        if let Err(e) = &result {
            self.sender_tallied(out, &mut tally.sent)
                .close(e.close_code(), "");
            self.finished = true;
        }
        result
    }

    fn decode<O, F>(
        &mut self,
        input: &mut [u8],
        out: &mut O,
        tally: &mut FrameTallies,
        mut codecs: Option<&mut Codecs>,
        on_event: &mut F,
    ) -> Result<(), ProtocolError>
    where
        O: Transmit + ?Sized,
        F: FnMut(Event<'_>, &mut Sender<'_, O>),
    {
        let mut pos = 0;
        while pos < input.len() && !self.finished {
            match self.rx {
                Rx::Header => {
                    let Some(header) = self.read_header(input, &mut pos)? else {
                        return Ok(());
                    };
                    self.check_header(&header)?;
                    tally.received.add(header.opcode, header.len);
                    if matches!(header.opcode, OpCode::Text | OpCode::Binary) {
                        self.msg_type = Some(header.opcode);
                        self.msg_compressed = header.rsv & RSV1 != 0;
                    }
                    self.rx = Rx::Payload { header, done: 0 };
                    if header.len == 0 {
                        let sent = &mut tally.sent;
                        let z = codecs.as_deref_mut();
                        self.on_payload(header, 0, &mut [], out, sent, z, on_event)?;
                    }
                }
                Rx::Payload { header, done } => {
                    let avail = input.len() - pos;
                    let take = (header.len - done).min(avail as u64) as usize;
                    let chunk = &mut input[pos..pos + take];
                    pos += take;
                    let sent = &mut tally.sent;
                    let z = codecs.as_deref_mut();
                    self.on_payload(header, done, chunk, out, sent, z, on_event)?;
                }
            }
        }
        Ok(())
    }

    /// Parse the next header from `input[*pos..]`, joining it to a stashed prefix if there is one.
    fn read_header(
        &mut self,
        input: &[u8],
        pos: &mut usize,
    ) -> Result<Option<FrameHeader>, ProtocolError> {
        let rest = &input[*pos..];
        if self.hdr_len == 0 {
            if let Some((header, n)) = FrameHeader::parse(rest)? {
                *pos += n;
                return Ok(Some(header));
            }
            self.hdr[..rest.len()].copy_from_slice(rest);
            self.hdr_len = rest.len() as u8;
            *pos = input.len();
            return Ok(None);
        }
        let have = self.hdr_len as usize;
        let take = (MAX_HEADER_LEN - have).min(rest.len());
        self.hdr[have..have + take].copy_from_slice(&rest[..take]);
        match FrameHeader::parse(&self.hdr[..have + take])? {
            Some((header, n)) => {
                *pos += n - have;
                self.hdr_len = 0;
                Ok(Some(header))
            }
            None => {
                self.hdr_len += take as u8;
                *pos += take;
                Ok(None)
            }
        }
    }

    /// The rules of RFC 6455 §5 that a header must meet in this session, and the size limits.
    fn check_header(&self, h: &FrameHeader) -> Result<(), ProtocolError> {
        match (self.tx.role, h.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client { .. }, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        // RSV1 marks a compressed message: allowed on the first frame of a data message only,
        // and only with permessage-deflate (RFC 7692 §6).
        let first_data = matches!(h.opcode, OpCode::Text | OpCode::Binary);
        if h.rsv != 0 && !(h.rsv == RSV1 && first_data && self.tx.deflate.is_some()) {
            return Err(ProtocolError::ReservedBits(h.rsv));
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if h.len > 125 {
                return Err(ProtocolError::ControlFrameTooLong(h.len));
            }
            return Ok(());
        }
        match (h.opcode, self.msg_type) {
            (OpCode::Continuation, None) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, Some(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        if h.len > self.limits.max_frame {
            return Err(ProtocolError::FrameTooLarge {
                len: h.len,
                max: self.limits.max_frame,
            });
        }
        let total = self.msg.len() as u64 + h.len;
        if total > self.limits.max_message {
            return Err(ProtocolError::MessageTooLarge {
                len: total,
                max: self.limits.max_message,
            });
        }
        Ok(())
    }

    /// Handle `chunk`, the payload bytes `done..done + chunk.len()` of the current frame.
    #[allow(clippy::too_many_arguments)]
    fn on_payload<O, F>(
        &mut self,
        header: FrameHeader,
        done: u64,
        chunk: &mut [u8],
        out: &mut O,
        sent: &mut FrameTally,
        codecs: Option<&mut Codecs>,
        on_event: &mut F,
    ) -> Result<(), ProtocolError>
    where
        O: Transmit + ?Sized,
        F: FnMut(Event<'_>, &mut Sender<'_, O>),
    {
        if let Some(key) = header.mask {
            apply_mask(chunk, key, (done % 4) as usize);
        }
        let complete = done + chunk.len() as u64 == header.len;
        self.rx = if complete {
            Rx::Header
        } else {
            Rx::Payload {
                header,
                done: done + chunk.len() as u64,
            }
        };

        if header.opcode.is_control() {
            if complete && done == 0 {
                return self.on_control(header.opcode, chunk, out, sent, on_event);
            }
            let partial = self.ctrl.get_or_insert_with(|| {
                Box::new(ControlPartial {
                    len: 0,
                    data: [0; 125],
                })
            });
            // The header check bounds a control payload to 125 bytes, so this fits.
            let start = partial.len as usize;
            partial.data[start..start + chunk.len()].copy_from_slice(chunk);
            partial.len += chunk.len() as u8;
            if complete {
                if let Some(partial) = self.ctrl.take() {
                    return self.on_control(
                        header.opcode,
                        &partial.data[..partial.len as usize],
                        out,
                        sent,
                        on_event,
                    );
                }
            }
            return Ok(());
        }

        let text = self.msg_type == Some(OpCode::Text);
        let whole = complete && done == 0 && header.fin && header.opcode != OpCode::Continuation;
        let (compress, inflaters) = match codecs {
            Some(c) => (Some(&mut c.compress), Some(&mut c.inflate)),
            None => (None, None),
        };
        if self.msg_compressed {
            // Compressed bytes are kept until the message is complete and inflated at once, so
            // that a shared decompressor is never held across reads.
            if !whole {
                self.msg.extend_from_slice(chunk);
                if !(complete && header.fin) {
                    return Ok(());
                }
            }
            let data: &[u8] = if whole { chunk } else { &self.msg };
            let Some(params) = self.tx.deflate.as_ref().map(|d| d.params) else {
                return Err(ProtocolError::ReservedBits(RSV1));
            };
            let own = &mut self.inflate_own;
            let plain = inflate(params, own, inflaters, data, self.limits.max_message)?;
            self.msg_type = None;
            self.msg_compressed = false;
            let tx = Sender {
                out,
                tx: &mut self.tx,
                sent: Some(sent),
                compress,
            };
            emit(on_event, tx, text, plain)?;
            self.msg.clear();
            if self.msg.capacity() > KEEP_CAPACITY {
                self.msg = Vec::new();
            }
            return Ok(());
        }
        if whole {
            // Zero-copy: the whole message is in the caller's buffer.
            self.msg_type = None;
            let tx = Sender {
                out,
                tx: &mut self.tx,
                sent: Some(sent),
                compress,
            };
            return emit(on_event, tx, text, chunk);
        }
        if text {
            self.utf8
                .feed(chunk)
                .map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        self.msg.extend_from_slice(chunk);
        if complete && header.fin {
            self.msg_type = None;
            if text {
                self.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
            }
            let tx = Sender {
                out,
                tx: &mut self.tx,
                sent: Some(sent),
                compress,
            };
            // Text was validated piece by piece above; `emit` checks it again rather than trust
            // that unchecked.
            emit(on_event, tx, text, &self.msg)?;
            self.msg.clear();
            if self.msg.capacity() > KEEP_CAPACITY {
                self.msg = Vec::new();
            }
        }
        Ok(())
    }

    fn on_control<O, F>(
        &mut self,
        op: OpCode,
        payload: &[u8],
        out: &mut O,
        sent: &mut FrameTally,
        on_event: &mut F,
    ) -> Result<(), ProtocolError>
    where
        O: Transmit + ?Sized,
        F: FnMut(Event<'_>, &mut Sender<'_, O>),
    {
        let mut sender = Sender {
            out,
            tx: &mut self.tx,
            sent: Some(sent),
            compress: None,
        };
        match op {
            OpCode::Ping => {
                sender.pong(payload);
                on_event(Event::Ping(payload), &mut sender);
            }
            OpCode::Pong => on_event(Event::Pong(payload), &mut sender),
            OpCode::Close => {
                let frame = CloseFrame::parse(payload)?;
                if !sender.close_sent() {
                    match frame {
                        Some(f) => sender.close(f.code, ""),
                        None => sender.close_empty(),
                    }
                }
                self.finished = true;
                on_event(Event::Close(frame), &mut sender);
            }
            // Data opcodes never reach here: `is_control` routed them elsewhere.
            OpCode::Continuation | OpCode::Text | OpCode::Binary => {}
        }
        Ok(())
    }
}
