//! Shared by the stack's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::net::SocketAddr;
use std::time::Instant;

use hioload_stack::{CloseCause, ConnId, Service, Verdict};

/// Echo: input goes back out; closes after the peer's FIN or on shutdown.
pub struct Echo;

impl Service for Echo {
    type Conn = ();
    fn open(&mut self, _: ConnId, _: SocketAddr, _: Instant) {}
    fn on_data(&mut self, _: &mut (), input: &mut [u8], out: &mut Vec<u8>, _: Instant) -> Verdict {
        out.extend_from_slice(input);
        Verdict::Continue
    }
    fn on_eof(&mut self, _: &mut (), _: &mut Vec<u8>, _: Instant) -> Verdict {
        Verdict::Close
    }
    fn deadline(&self, _: &()) -> Option<Instant> {
        None
    }
    fn on_deadline(&mut self, _: &mut (), _: &mut Vec<u8>, _: Instant) -> Verdict {
        Verdict::Continue
    }
    fn on_shutdown(&mut self, _: &mut (), _: &mut Vec<u8>, _: Instant) -> Verdict {
        Verdict::Close
    }
    fn on_close(&mut self, _: (), _: CloseCause) {}
}
