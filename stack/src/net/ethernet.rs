//! Ethernet II headers.

/// Header length.
pub const HEADER_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// The broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// The fields of a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Destination MAC.
    pub dst: [u8; 6],
    /// Source MAC.
    pub src: [u8; 6],
    /// EtherType.
    pub ethertype: u16,
}

/// Parse the header of `frame`; `None` if it is too short.
#[inline]
pub fn parse(frame: &[u8]) -> Option<Header> {
    let h = frame.get(..HEADER_LEN)?;
    let mut dst = [0; 6];
    let mut src = [0; 6];
    dst.copy_from_slice(&h[0..6]);
    src.copy_from_slice(&h[6..12]);
    Some(Header {
        dst,
        src,
        ethertype: u16::from_be_bytes([h[12], h[13]]),
    })
}

/// Write a header into the first 14 bytes of `out` (which must have room).
#[inline]
pub fn write(out: &mut [u8], dst: [u8; 6], src: [u8; 6], ethertype: u16) {
    out[0..6].copy_from_slice(&dst);
    out[6..12].copy_from_slice(&src);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut f = [0u8; 20];
        write(&mut f, BROADCAST, [1, 2, 3, 4, 5, 6], ETHERTYPE_ARP);
        assert_eq!(
            parse(&f),
            Some(Header {
                dst: BROADCAST,
                src: [1, 2, 3, 4, 5, 6],
                ethertype: ETHERTYPE_ARP
            })
        );
        assert_eq!(parse(&f[..13]), None);
    }
}
