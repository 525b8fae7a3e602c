//! Where encoded frames go: the [`Transmit`] sink a [`crate::Sender`] writes into.
//!
//! A `Vec<u8>` is the plain sink. A transport can supply its own, so that a large payload that
//! already sits in memory it owns (the input being decoded, say) is queued by reference rather
//! than copied: [`Transmit::put_payload`] is the hook for that.

use crate::mask::apply_mask;

/// Bytes a sink masks at a time when it has no room of its own to mask in place.
const MASK_CHUNK: usize = 4096;

/// A sink of encoded frames.
pub trait Transmit {
    /// Append `bytes` (frame headers, small payloads, control frames).
    fn put(&mut self, bytes: &[u8]);

    /// Append an unmasked payload. A sink may keep a reference instead of copying it when it
    /// knows where the bytes live; the default copies.
    fn put_payload(&mut self, payload: &[u8]) {
        self.put(payload);
    }

    /// Append `payload` masked with `key` (a client's frames). The default masks through a
    /// small stack buffer; sinks with contiguous storage mask in place.
    fn put_masked(&mut self, payload: &[u8], key: [u8; 4]) {
        let mut chunk = [0u8; MASK_CHUNK];
        for (i, piece) in payload.chunks(MASK_CHUNK).enumerate() {
            let buf = &mut chunk[..piece.len()];
            buf.copy_from_slice(piece);
            apply_mask(buf, key, (i * MASK_CHUNK) % 4);
            self.put(buf);
        }
    }
}

impl Transmit for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }

    fn put_masked(&mut self, payload: &[u8], key: [u8; 4]) {
        let start = self.len();
        self.extend_from_slice(payload);
        apply_mask(&mut self[start..], key, 0);
    }
}

impl<T: Transmit + ?Sized> Transmit for &mut T {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        (**self).put(bytes);
    }

    #[inline]
    fn put_payload(&mut self, payload: &[u8]) {
        (**self).put_payload(payload);
    }

    #[inline]
    fn put_masked(&mut self, payload: &[u8], key: [u8; 4]) {
        (**self).put_masked(payload, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink with only `put`: the default masking path.
    struct Plain(Vec<u8>);

    impl Transmit for Plain {
        fn put(&mut self, bytes: &[u8]) {
            self.0.extend_from_slice(bytes);
        }
    }

    #[test]
    fn default_masking_matches_in_place_masking_across_chunks() {
        let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let key = [0x11, 0x22, 0x33, 0x44];
        let mut in_place = Vec::new();
        in_place.put_masked(&payload, key);
        let mut chunked = Plain(Vec::new());
        chunked.put_masked(&payload, key);
        assert_eq!(in_place, chunked.0);
        let mut back = in_place.clone();
        apply_mask(&mut back, key, 0);
        assert_eq!(back, payload);
    }
}
