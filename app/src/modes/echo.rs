//! `echo`: WebSocket echo. Every message comes back as it came (text as text), on any path.

use std::sync::Arc;

use hioload_ws::echo::Echo;
use hioload_ws::live::LiveWs;
use hioload_ws::middleware::{Logging, Metrics, Recover};
use hioload_ws::{WsConfig, WsService};

use super::{Figures, Mode, SessionFigures};

/// The echo mode.
pub struct EchoMode {
    ws: WsConfig,
    figures: Vec<SessionFigures>,
}

impl EchoMode {
    /// Echo with these WebSocket settings.
    pub fn new(ws: WsConfig) -> Self {
        Self {
            ws,
            figures: Vec::new(),
        }
    }
}

impl Mode for EchoMode {
    type Service = WsService<Logging<Recover<Metrics<Echo>>>>;
    const NAME: &'static str = "echo";
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
        super::ws_service(Echo, &self.ws, f, live)
    }

    fn figures(&self) -> Figures {
        SessionFigures::all(&self.figures)
    }

    fn summary(&self) -> String {
        let (sessions, messages) = SessionFigures::totals(&self.figures);
        format!("sessions {sessions}, messages echoed {messages}")
    }
}
