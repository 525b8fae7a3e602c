//! `tcp-echo`: raw TCP echo. Every byte comes back.

use std::sync::Arc;
use std::time::Duration;

use hioload_ws::live::LiveWs;
use hioload_ws::tcp_echo::TcpEchoService;
use hioload_ws::WsConfig;

use super::{Figures, Mode};

/// The TCP echo mode.
pub struct TcpEchoMode {
    idle_timeout: Option<Duration>,
}

impl TcpEchoMode {
    /// TCP echo closing connections idle for `idle_timeout`.
    pub fn new(idle_timeout: Option<Duration>) -> Self {
        Self { idle_timeout }
    }
}

impl Mode for TcpEchoMode {
    type Service = TcpEchoService;
    const NAME: &'static str = "tcp-echo";
    const SCHEME: &'static str = "tcp";
    const DEFAULT_PORT: u16 = 9002;

    fn ws(&self) -> Option<&WsConfig> {
        None
    }

    fn prepare(&mut self, _workers: usize) {}

    fn service(&self, _worker: usize, _live: Option<&Arc<LiveWs>>) -> TcpEchoService {
        TcpEchoService::new(self.idle_timeout)
    }

    fn figures(&self) -> Figures {
        Figures::default()
    }

    fn summary(&self) -> String {
        String::new()
    }
}
