//! `pubsub`: channels, presence and history over WebSocket (docs/PROTOCOL.md). Each channel has
//! a home worker that numbers and retains its messages; a message is encoded once and written
//! by reference to every member on every worker. With `--redis` the node is one of several:
//! a broker bridge (`hioload_ws::pubsub::redis`) runs beside the workers.

use std::sync::{Arc, Mutex};

use hioload_ws::live::LiveWs;
use hioload_ws::middleware::{Logging, Metrics, Recover};
use hioload_ws::pubsub::api::{Api, ApiError};
use hioload_ws::pubsub::archive::ArchiveState;
use hioload_ws::pubsub::broker::Background;
use hioload_ws::pubsub::broker::BrokerState;
use hioload_ws::pubsub::postgres::Archive;
use hioload_ws::pubsub::protocol::{push_str, ErrorCode, Out};
use hioload_ws::pubsub::redis::Bridge;
use hioload_ws::pubsub::{Note, PubSub, PubSubConfig, PubSubCounters};
use hioload_ws::stack::Postboxes;
use hioload_ws::{WsConfig, WsService};

use super::{Figures, Mode, SessionFigures};
use crate::admin::ApiRoutes;

/// The pub/sub mode.
pub struct PubSubMode {
    ws: WsConfig,
    config: PubSubConfig,
    figures: Vec<SessionFigures>,
    pubsub: Vec<Arc<PubSubCounters>>,
    /// The broker bridge, until it starts.
    bridge: Mutex<Option<Bridge>>,
    /// The archive, until it starts.
    archive: Mutex<Option<Archive>>,
    /// The running bridge and archive, until they stop (in that order: the bridge stores what
    /// it publishes).
    running: Mutex<Vec<Background>>,
    broker: Option<Arc<BrokerState>>,
    archived: Option<Arc<ArchiveState>>,
}

impl PubSubMode {
    /// Pub/sub with these WebSocket and pub/sub settings, joined to other nodes by `bridge`
    /// and storing messages in `archive` (whose links `config` holds) if given.
    pub fn new(
        ws: WsConfig,
        mut config: PubSubConfig,
        bridge: Option<Bridge>,
        archive: Option<Archive>,
    ) -> Self {
        // The hub compresses each message once for all members, as the sessions negotiate.
        config.deflate = ws.deflate;
        Self {
            ws,
            config,
            figures: Vec::new(),
            pubsub: Vec::new(),
            broker: bridge.as_ref().map(Bridge::state),
            archived: archive.as_ref().map(Archive::state),
            bridge: Mutex::new(bridge),
            archive: Mutex::new(archive),
            running: Mutex::new(Vec::new()),
        }
    }
}

impl Mode for PubSubMode {
    type Service = WsService<Logging<Recover<Metrics<PubSub>>>>;
    const NAME: &'static str = "pubsub";
    const SCHEME: &'static str = "ws";
    const DEFAULT_PORT: u16 = 8080;

    fn ws(&self) -> Option<&WsConfig> {
        Some(&self.ws)
    }

    fn prepare(&mut self, workers: usize) {
        self.figures = (0..workers).map(|_| SessionFigures::default()).collect();
        self.pubsub = (0..workers).map(|_| Arc::default()).collect();
    }

    fn service(&self, worker: usize, live: Option<&Arc<LiveWs>>) -> Self::Service {
        let f = self.figures.get(worker).cloned().unwrap_or_default();
        let counters = self.pubsub.get(worker).cloned().unwrap_or_default();
        let handler = PubSub::new(self.config.clone(), counters);
        super::ws_service(handler, &self.ws, f, live)
    }

    fn start_background(&self, posts: Postboxes<Note>) -> Result<(), String> {
        let mut started = Vec::new();
        if let Some(archive) = self.archive.lock().ok().and_then(|mut a| a.take()) {
            started.push(archive.start(posts.clone())?);
        }
        if let Some(bridge) = self.bridge.lock().ok().and_then(|mut b| b.take()) {
            started.push(bridge.start(posts)?);
        }
        if let Ok(mut r) = self.running.lock() {
            *r = started;
        }
        Ok(())
    }

    fn stop_background(&self) {
        let running = self
            .running
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        for background in running.into_iter().rev() {
            background.stop();
        }
    }

    fn figures(&self) -> Figures {
        Figures {
            pubsub: self.pubsub.clone(),
            broker: self.broker.clone(),
            archive: self.archived.clone(),
            ..SessionFigures::all(&self.figures)
        }
    }

    fn api(&self, posts: Postboxes<Note>) -> Option<Arc<dyn ApiRoutes>> {
        Some(Arc::new(Routes(Api::new(
            posts,
            self.config.max_publish_size,
        ))))
    }

    fn summary(&self) -> String {
        let sum = |f: fn(&PubSubCounters) -> &std::sync::atomic::AtomicU64| {
            self.pubsub
                .iter()
                .map(|c| PubSubCounters::get(f(c)))
                .sum::<u64>()
        };
        let (sessions, _) = SessionFigures::totals(&self.figures);
        format!(
            "sessions {sessions}, messages published {}, delivered {}, dropped (slow members) {}, dropped (mailbox) {}",
            sum(|c| &c.publishes),
            sum(|c| &c.deliveries),
            sum(|c| &c.dropped_slow),
            sum(|c| &c.dropped_mailbox),
        )
    }
}

/// `/api/publish`, `/api/channels`, `/api/presence` on the admin endpoint.
struct Routes(Api);

/// The body of `POST /api/publish`.
#[derive(serde::Deserialize)]
struct PublishBody {
    channel: String,
    text: String,
    user: String,
}

const JSON: &str = "application/json";

fn error_body(status: u16, code: &str, message: &str) -> (u16, &'static str, String) {
    let body = Out::new("error", None)
        .str("code", code)
        .str("message", message)
        .finish();
    (status, JSON, body + "\n")
}

fn failed(e: &ApiError) -> (u16, &'static str, String) {
    match e {
        ApiError::Refused(r) => {
            let status = match r.code {
                ErrorCode::Unavailable => 503,
                ErrorCode::TooLarge => 413,
                _ => 400,
            };
            error_body(status, r.code.as_str(), &r.message)
        }
        ApiError::Busy(_) | ApiError::Stopped => {
            error_body(503, ErrorCode::Unavailable.as_str(), &e.to_string())
        }
    }
}

/// The value of `key` in a query string (no percent-decoding: channel names need none).
fn query_value<'q>(query: &'q str, key: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

impl ApiRoutes for Routes {
    fn answer(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Option<(u16, &'static str, String)> {
        Some(match (method, path) {
            ("POST", "/api/publish") => {
                let req: PublishBody = match serde_json::from_slice(body) {
                    Ok(r) => r,
                    Err(e) => {
                        return Some(error_body(
                            400,
                            ErrorCode::BadRequest.as_str(),
                            &format!(
                                "the body must be {{\"channel\",\"text\",\"user\"}} as JSON: {e}"
                            ),
                        ))
                    }
                };
                match self.0.publish(&req.channel, &req.user, &req.text) {
                    Ok(seq) => (
                        200,
                        JSON,
                        Out::new("published", None)
                            .str("channel", &req.channel)
                            .num("seq", seq)
                            .finish()
                            + "\n",
                    ),
                    Err(e) => failed(&e),
                }
            }
            ("GET", "/api/channels") => match self.0.channels() {
                Ok(list) => {
                    let mut body = String::from("{\"channels\":[");
                    for (i, (name, members)) in list.iter().enumerate() {
                        if i > 0 {
                            body.push(',');
                        }
                        body.push_str("{\"name\":");
                        push_str(&mut body, name);
                        body.push_str(&format!(",\"members\":{members}}}"));
                    }
                    body.push_str("]}\n");
                    (200, JSON, body)
                }
                Err(e) => failed(&e),
            },
            ("GET", "/api/presence") => {
                let Some(channel) = query_value(query, "channel") else {
                    return Some(error_body(
                        400,
                        ErrorCode::BadRequest.as_str(),
                        "give the channel: /api/presence?channel=NAME",
                    ));
                };
                match self.0.presence(channel) {
                    Ok(users) => (
                        200,
                        JSON,
                        Out::new("presence", None)
                            .str("channel", channel)
                            .strs("users", users.iter().map(String::as_str))
                            .finish()
                            + "\n",
                    ),
                    Err(e) => failed(&e),
                }
            }
            (_, "/api/publish" | "/api/channels" | "/api/presence") => {
                error_body(405, ErrorCode::BadRequest.as_str(), "method not allowed")
            }
            _ => return None,
        })
    }
}
