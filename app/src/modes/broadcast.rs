//! `broadcast`: every WebSocket message any session sends goes to every session of the
//! appliance, on every worker, the sender included (a chat room without rooms; pub/sub's
//! fan-out without channels). Encoded once per message, passed between workers by mailbox.

use std::sync::Arc;

use hioload_ws::broadcast::Broadcast;
use hioload_ws::live::LiveWs;
use hioload_ws::middleware::{Logging, Metrics, Recover};
use hioload_ws::{WsConfig, WsService};

use super::{Figures, Mode, SessionFigures};

/// The broadcast mode.
pub struct BroadcastMode {
    ws: WsConfig,
    figures: Vec<SessionFigures>,
}

impl BroadcastMode {
    /// Broadcast with these WebSocket settings.
    pub fn new(ws: WsConfig) -> Self {
        Self {
            ws,
            figures: Vec::new(),
        }
    }
}

impl Mode for BroadcastMode {
    type Service = WsService<Logging<Recover<Metrics<Broadcast>>>>;
    const NAME: &'static str = "broadcast";
    const SCHEME: &'static str = "ws";
    const DEFAULT_PORT: u16 = 8080;

    fn ws(&self) -> Option<&WsConfig> {
        Some(&self.ws)
    }

    fn prepare(&mut self, workers: usize) {
        self.figures = (0..workers).map(|_| SessionFigures::default()).collect();
    }

    fn service(&self, worker: usize, live: Option<&Arc<LiveWs>>) -> Self::Service {
        let f = self.figures.get(worker).cloned().unwrap_or_default();
        super::ws_service(Broadcast::new(self.ws.deflate.as_ref()), &self.ws, f, live)
    }

    fn figures(&self) -> Figures {
        SessionFigures::all(&self.figures)
    }

    fn summary(&self) -> String {
        let (sessions, messages) = SessionFigures::totals(&self.figures);
        format!("sessions {sessions}, messages broadcast {messages}")
    }
}
