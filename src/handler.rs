//! The application API: what runs on each WebSocket session.

use hioload_stack::ConnId;
use hioload_wsproto::handshake::Request;
use hioload_wsproto::{CloseCode, Message, Sender};

/// The answer to an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accept, optionally choosing one of the subprotocols the client offered.
    Accept {
        /// The chosen subprotocol; it must be one the client offered.
        protocol: Option<String>,
    },
    /// Refuse with an HTTP status and a short reason (e.g. 403 for a foreign Origin).
    Reject {
        /// HTTP status.
        status: u16,
        /// Short reason for the response body.
        reason: &'static str,
    },
}

impl Decision {
    /// Accept without a subprotocol.
    pub const fn accept() -> Self {
        Self::Accept { protocol: None }
    }
}

/// Application logic for WebSocket sessions. One instance per worker: it is never shared between
/// threads, and `&mut self` needs no locking. Per-session state, if any, is keyed by [`ConnId`].
pub trait Handler {
    /// An upgrade request arrived: accept it (choosing a subprotocol) or reject it. This is the
    /// Origin policy and subprotocol selection hook. The default accepts without a subprotocol.
    fn on_open(&mut self, conn: ConnId, request: &Request<'_>) -> Decision {
        let _ = (conn, request);
        Decision::accept()
    }

    /// A complete message arrived; reply through `reply`.
    fn on_message(&mut self, conn: ConnId, message: Message<'_>, reply: &mut Sender<'_>);

    /// The session ended, with the close code received or sent, if there was one.
    fn on_close(&mut self, conn: ConnId, code: Option<CloseCode>) {
        let _ = (conn, code);
    }
}
