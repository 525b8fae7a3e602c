//! WebSocket figures a worker publishes for the admin endpoint: frames and payload bytes by
//! opcode each way, close codes sent and received, handshake failures by cause, and what
//! permessage-deflate negotiated, compressed and inflated.
//!
//! A [`crate::WsService`] counts in a plain [`WsTally`] and copies it into its worker's
//! [`WsMeter`] (relaxed stores, one writer) once per transport loop iteration that changed it
//! ([`hioload_stack::Service::on_tick`]), so counting costs the fast path a few additions.

use std::sync::atomic::{AtomicU64, Ordering};

use hioload_wsproto::deflate::DeflateStats;
use hioload_wsproto::{CloseCode, FrameTallies, OpCode};

/// Close codes counted one by one; others go to "other". 1005 means "no code".
pub const CLOSE_CODES: [u16; 12] = [
    1000, 1001, 1002, 1003, 1005, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
];

/// Why a handshake failed: the HTTP status sent, or a timeout.
pub const HANDSHAKE_FAILURES: [&str; 8] =
    ["400", "403", "404", "426", "431", "500", "other", "timeout"];

const CLOSE_SLOTS: usize = CLOSE_CODES.len() + 1;

/// The index of `code` among [`CLOSE_CODES`], or of "other".
pub fn close_slot(code: Option<CloseCode>) -> usize {
    let code = code.map_or(1005, |c| c.0);
    CLOSE_CODES
        .iter()
        .position(|c| *c == code)
        .unwrap_or(CLOSE_CODES.len())
}

/// The HTTP statuses counted one by one, in [`HANDSHAKE_FAILURES`] order.
const HANDSHAKE_STATUSES: [u16; 6] = [400, 403, 404, 426, 431, 500];

/// The index of an HTTP `status` among [`HANDSHAKE_FAILURES`] ("other" if not listed).
pub fn handshake_slot(status: u16) -> usize {
    HANDSHAKE_STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(HANDSHAKE_STATUSES.len())
}

/// The index of "timeout" among [`HANDSHAKE_FAILURES`].
pub const HANDSHAKE_TIMEOUT: usize = 7;

/// A worker's counts, in plain integers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WsTally {
    /// Frames received and sent, as the sessions count them.
    pub frames: FrameTallies,
    /// Close frames received, by [`close_slot`].
    pub close_received: [u64; CLOSE_SLOTS],
    /// Close frames sent, by [`close_slot`].
    pub close_sent: [u64; CLOSE_SLOTS],
    /// Handshakes that failed, by [`HANDSHAKE_FAILURES`] index.
    pub handshake_failures: [u64; HANDSHAKE_FAILURES.len()],
    /// Sessions that negotiated permessage-deflate.
    pub deflate_sessions: u64,
    /// What the worker's codecs compressed and inflated (replies and sends; broadcasts are
    /// compressed by their [`crate::handler::Preparer`]).
    pub deflate: DeflateStats,
}

/// [`DeflateStats`] as an array, in the order of [`DEFLATE_FIGURES`].
pub fn deflate_figures(d: &DeflateStats) -> [u64; 7] {
    [
        d.compressed,
        d.compressed_in,
        d.compressed_out,
        d.sent_plain,
        d.inflated,
        d.inflated_in,
        d.inflated_out,
    ]
}

/// Names of [`deflate_figures`]' entries.
pub const DEFLATE_FIGURES: [&str; 7] = [
    "compressed_messages",
    "compressed_in_bytes",
    "compressed_out_bytes",
    "uncompressed_messages",
    "inflated_messages",
    "inflated_in_bytes",
    "inflated_out_bytes",
];

impl WsTally {
    /// A session may just have sent a close frame: if the count of close frames sent has grown
    /// past `closes_before`, count `code` (the session's [`close_code_sent`]).
    ///
    /// [`close_code_sent`]: hioload_wsproto::Session::close_code_sent
    pub fn count_close_sent(&mut self, closes_before: u64, code: Option<CloseCode>) {
        if self.closes_sent() > closes_before {
            self.close_sent[close_slot(code)] += 1;
        }
    }

    /// Close frames sent so far.
    pub fn closes_sent(&self) -> u64 {
        self.frames.sent.frames[OpCode::Close.index()]
    }
}

/// A worker's published counts.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WsMeter {
    frames_in: [AtomicU64; 6],
    bytes_in: [AtomicU64; 6],
    frames_out: [AtomicU64; 6],
    bytes_out: [AtomicU64; 6],
    close_received: [AtomicU64; CLOSE_SLOTS],
    close_sent: [AtomicU64; CLOSE_SLOTS],
    handshake_failures: [AtomicU64; HANDSHAKE_FAILURES.len()],
    deflate_sessions: AtomicU64,
    deflate: [AtomicU64; 7],
}

fn store(to: &[AtomicU64], from: &[u64]) {
    for (a, v) in to.iter().zip(from) {
        a.store(*v, Ordering::Relaxed);
    }
}

fn load(from: &[AtomicU64], to: &mut [u64]) {
    for (v, a) in to.iter_mut().zip(from) {
        *v = a.load(Ordering::Relaxed);
    }
}

impl WsMeter {
    /// Copy `t` out (by the worker that owns both).
    pub fn publish(&self, t: &WsTally) {
        store(&self.frames_in, &t.frames.received.frames);
        store(&self.bytes_in, &t.frames.received.bytes);
        store(&self.frames_out, &t.frames.sent.frames);
        store(&self.bytes_out, &t.frames.sent.bytes);
        store(&self.close_received, &t.close_received);
        store(&self.close_sent, &t.close_sent);
        store(&self.handshake_failures, &t.handshake_failures);
        self.deflate_sessions
            .store(t.deflate_sessions, Ordering::Relaxed);
        store(&self.deflate, &deflate_figures(&t.deflate));
    }

    /// What was last published.
    pub fn snapshot(&self) -> WsTally {
        let mut t = WsTally::default();
        load(&self.frames_in, &mut t.frames.received.frames);
        load(&self.bytes_in, &mut t.frames.received.bytes);
        load(&self.frames_out, &mut t.frames.sent.frames);
        load(&self.bytes_out, &mut t.frames.sent.bytes);
        load(&self.close_received, &mut t.close_received);
        load(&self.close_sent, &mut t.close_sent);
        load(&self.handshake_failures, &mut t.handshake_failures);
        t.deflate_sessions = self.deflate_sessions.load(Ordering::Relaxed);
        let mut d = [0; 7];
        load(&self.deflate, &mut d);
        let [compressed, compressed_in, compressed_out, sent_plain, inflated, inflated_in, inflated_out] =
            d;
        t.deflate = DeflateStats {
            compressed,
            compressed_in,
            compressed_out,
            sent_plain,
            inflated,
            inflated_in,
            inflated_out,
        };
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hioload_wsproto::{Limits, Role, Session};

    #[test]
    fn slots() {
        assert_eq!(CLOSE_CODES[close_slot(Some(CloseCode::GOING_AWAY))], 1001);
        assert_eq!(CLOSE_CODES[close_slot(None)], 1005);
        assert_eq!(
            close_slot(Some(CloseCode(4000))),
            CLOSE_CODES.len(),
            "other"
        );
        assert_eq!(HANDSHAKE_FAILURES[handshake_slot(426)], "426");
        assert_eq!(HANDSHAKE_FAILURES[handshake_slot(418)], "other");
        assert_eq!(HANDSHAKE_FAILURES[HANDSHAKE_TIMEOUT], "timeout");
    }

    #[test]
    fn written_frames_and_close_codes_are_counted_and_published() {
        let mut out = Vec::new();
        let mut t = WsTally::default();
        let mut session = Session::new(Role::Server, Limits::default());
        let before = t.closes_sent();
        let mut sender = session.sender_tallied(&mut out, &mut t.frames.sent);
        sender.binary(&[1, 2, 3]);
        sender.close(CloseCode::GOING_AWAY, "");
        t.count_close_sent(before, session.close_code_sent());
        assert_eq!(t.frames.sent.frames[OpCode::Binary.index()], 1);
        assert_eq!(t.frames.sent.bytes[OpCode::Binary.index()], 3);
        assert_eq!(t.close_sent[close_slot(Some(CloseCode::GOING_AWAY))], 1);
        let m = WsMeter::default();
        m.publish(&t);
        assert_eq!(m.snapshot(), t);
    }
}
