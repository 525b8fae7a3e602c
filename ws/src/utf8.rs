//! Incremental UTF-8 validation for text messages that arrive in pieces.
//!
//! Each piece is checked by the standard library's validator as soon as it arrives; only an
//! incomplete code point at the end of a piece (at most three bytes) is carried to the next one.
//! A byte sequence that can never become valid fails at once, so a peer cannot make the server
//! buffer a long invalid message before it is rejected (RFC 6455 §8.1, Autobahn 6.4.x).

/// Validator state carried between the pieces of one text message.
#[derive(Debug, Default, Clone)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

/// The input can never be valid UTF-8, whatever follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Error;

impl Utf8Validator {
    /// A validator at the start of a message.
    pub const fn new() -> Self {
        Self {
            pending: [0; 4],
            pending_len: 0,
        }
    }

    /// Validate the next piece of the message.
    pub fn feed(&mut self, mut piece: &[u8]) -> Result<(), Utf8Error> {
        if self.pending_len > 0 {
            let have = self.pending_len as usize;
            let need = sequence_len(self.pending[0]).ok_or(Utf8Error)?;
            let take = (need - have).min(piece.len());
            self.pending[have..have + take].copy_from_slice(&piece[..take]);
            self.pending_len += take as u8;
            piece = &piece[take..];
            match std::str::from_utf8(&self.pending[..self.pending_len as usize]) {
                Ok(_) => self.pending_len = 0,
                Err(e) if e.error_len().is_none() => return Ok(()), // still a valid prefix
                Err(_) => return Err(Utf8Error),
            }
        }
        match std::str::from_utf8(piece) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(Utf8Error),
                None => {
                    // A valid prefix of a code point ends the piece: keep it for the next one.
                    let tail = &piece[e.valid_up_to()..];
                    self.pending[..tail.len()].copy_from_slice(tail);
                    self.pending_len = tail.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// The message ended: valid only if no code point is left incomplete. Resets the validator.
    pub fn finish(&mut self) -> Result<(), Utf8Error> {
        let complete = self.pending_len == 0;
        self.pending_len = 0;
        if complete {
            Ok(())
        } else {
            Err(Utf8Error)
        }
    }

    /// Forget any carried state (the message was abandoned).
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

/// Length of the sequence a lead byte starts, or `None` for a byte that cannot lead.
fn sequence_len(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_everywhere(bytes: &[u8]) -> Vec<bool> {
        (0..=bytes.len())
            .map(|cut| {
                let mut v = Utf8Validator::new();
                v.feed(&bytes[..cut])
                    .and_then(|_| v.feed(&bytes[cut..]))
                    .and_then(|_| v.finish())
                    .is_ok()
            })
            .collect()
    }

    #[test]
    fn valid_text_is_valid_at_every_split() {
        let s = "κόσμε ¢€𐍈 hello \u{10FFFF}".as_bytes();
        assert!(split_everywhere(s).iter().all(|ok| *ok));
        // One byte at a time.
        let mut v = Utf8Validator::new();
        for b in s {
            v.feed(std::slice::from_ref(b)).unwrap();
        }
        v.finish().unwrap();
    }

    #[test]
    fn invalid_text_is_invalid_at_every_split() {
        for bad in [
            &b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"[..], // surrogate
            b"\xf4\x90\x80\x80",                                                    // > U+10FFFF
            b"\xc0\xaf",                                                            // overlong
            b"\xff",
            b"abc\x80",
            b"\xe2\x82", // truncated at the end of the message
        ] {
            assert!(split_everywhere(bad).iter().all(|ok| !ok), "{bad:x?}");
        }
    }

    #[test]
    fn fails_fast_before_the_message_ends() {
        // Autobahn 6.4.1: the invalid byte is reported with the piece that contains it.
        let mut v = Utf8Validator::new();
        v.feed("κόσμε".as_bytes()).unwrap();
        assert_eq!(v.feed(b"\xf4\x90"), Err(Utf8Error));
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"\xed"), Ok(()));
        assert_eq!(
            v.feed(b"\xa0"),
            Err(Utf8Error),
            "surrogate detected at its second byte"
        );
    }
}
