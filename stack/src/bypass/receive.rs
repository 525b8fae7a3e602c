//! Receive: one burst of frames from the worker's RX queue, each handed on as bytes.

use crate::dpdk::Port;

/// Frames taken per burst.
pub const BURST: usize = 32;

/// Take up to [`BURST`] frames from `queue` and give each to `f`; returns how many arrived.
/// Multi-segment frames are dropped: jumbo frames are not enabled, so one is never ours.
pub fn burst(port: &Port, queue: u16, mut f: impl FnMut(&[u8])) -> usize {
    port.rx_burst(queue, BURST, |m| {
        if m.segments() == 1 {
            f(m.data());
        }
    })
}
