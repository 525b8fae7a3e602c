//! WebSocket figures a worker publishes for the admin endpoint: frames and payload bytes by
//! opcode each way, close codes sent and received, and handshake failures by cause.
//!
//! A [`crate::WsService`] counts in a plain [`WsTally`] and copies it into its worker's
//! [`WsMeter`] (relaxed stores, one writer) once per transport loop iteration that changed it
//! ([`hioload_stack::Service::on_tick`]), so counting costs the fast path a few additions.

use std::sync::atomic::{AtomicU64, Ordering};

use hioload_wsproto::{CloseCode, FrameTally};

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

/// The index of an HTTP `status` among [`HANDSHAKE_FAILURES`].
pub fn handshake_slot(status: u16) -> usize {
    let s = status.to_string();
    HANDSHAKE_FAILURES[..6]
        .iter()
        .position(|h| *h == s)
        .unwrap_or(6)
}

/// The index of "timeout" among [`HANDSHAKE_FAILURES`].
pub const HANDSHAKE_TIMEOUT: usize = 7;

/// A worker's counts, in plain integers.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WsTally {
    /// Frames received.
    pub frames_in: FrameTally,
    /// Frames sent.
    pub frames_out: FrameTally,
    /// Close frames received, by [`close_slot`].
    pub close_received: [u64; CLOSE_SLOTS],
    /// Close frames sent, by [`close_slot`].
    pub close_sent: [u64; CLOSE_SLOTS],
    /// Handshakes that failed, by [`HANDSHAKE_FAILURES`] index.
    pub handshake_failures: [u64; HANDSHAKE_FAILURES.len()],
}

impl WsTally {
    /// Count the frames a session has just written (`written` holds whole frames), with the
    /// code of any close frame among them.
    pub fn wrote(&mut self, mut written: &[u8]) {
        let close = hioload_wsproto::OpCode::Close.index();
        let before = self.frames_out.frames[close];
        self.frames_out.add_written(written);
        // Close frames are rare: walk again for their codes only when one was written.
        if self.frames_out.frames[close] == before {
            return;
        }
        while let Ok(Some((h, n))) = hioload_wsproto::FrameHeader::parse(written) {
            let end = n.saturating_add(usize::try_from(h.len).unwrap_or(usize::MAX));
            let Some(payload) = written.get(n..end) else {
                return;
            };
            if h.opcode == hioload_wsproto::OpCode::Close {
                let code = payload
                    .get(..2)
                    .map(|b| CloseCode(u16::from_be_bytes([b[0], b[1]])));
                self.close_sent[close_slot(code)] += 1;
            }
            written = &written[end..];
        }
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
        store(&self.frames_in, &t.frames_in.frames);
        store(&self.bytes_in, &t.frames_in.bytes);
        store(&self.frames_out, &t.frames_out.frames);
        store(&self.bytes_out, &t.frames_out.bytes);
        store(&self.close_received, &t.close_received);
        store(&self.close_sent, &t.close_sent);
        store(&self.handshake_failures, &t.handshake_failures);
    }

    /// What was last published.
    pub fn snapshot(&self) -> WsTally {
        let mut t = WsTally::default();
        load(&self.frames_in, &mut t.frames_in.frames);
        load(&self.bytes_in, &mut t.frames_in.bytes);
        load(&self.frames_out, &mut t.frames_out.frames);
        load(&self.bytes_out, &mut t.frames_out.bytes);
        load(&self.close_received, &mut t.close_received);
        load(&self.close_sent, &mut t.close_sent);
        load(&self.handshake_failures, &mut t.handshake_failures);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hioload_wsproto::frame::write_frame;
    use hioload_wsproto::OpCode;

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
        write_frame(&mut out, true, OpCode::Binary, &[1, 2, 3], None);
        write_frame(&mut out, true, OpCode::Close, &1001u16.to_be_bytes(), None);
        let mut t = WsTally::default();
        t.wrote(&out);
        assert_eq!(t.frames_out.frames[OpCode::Binary.index()], 1);
        assert_eq!(t.frames_out.bytes[OpCode::Binary.index()], 3);
        assert_eq!(t.close_sent[close_slot(Some(CloseCode::GOING_AWAY))], 1);
        let m = WsMeter::default();
        m.publish(&t);
        assert_eq!(m.snapshot(), t);
    }
}
