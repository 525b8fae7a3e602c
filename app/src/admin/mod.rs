//! The admin endpoint: a small HTTP and WebSocket server on a kernel socket, on a transport of
//! its own (one worker thread, however many clients), away from the data path (also in DPDK
//! mode). Workers publish counters without locks; this side only reads them.
//!
//! It is the appliance's own WebSocket service on the connection API: plain requests are
//! answered by [`AdminHandler::on_http`], and the dashboard's viewers are sessions that get one
//! snapshot, encoded once, pushed to all of them twice a second.
//!
//! - `GET /metrics`: Prometheus text exposition (format 0.0.4), from [`metrics`].
//! - `GET /healthz`: `ok` (`degraded: ...` while a `pubsub --redis` node cannot reach Redis).
//! - `GET /debug/probes`: named live probes as JSON ([`probes`]).
//! - `GET /config`, `PUT /config`: the settings that change at run time, as TOML
//!   ([`crate::live_config`]); a bad value gets 400 with the reason and changes nothing.
//! - `GET /`: the live dashboard, fed over a WebSocket at `/ws` ([`dashboard`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub mod dashboard;
pub mod metrics;
pub mod probes;

use hioload_ws::handler::{Context, Decision, Handler, PreparedFrame, WorkerContext};
use hioload_ws::middleware::Counters;
use hioload_ws::pubsub::PubSubCounters;
use hioload_ws::stack::kernel::{AcceptMode, KernelConfig, Server};
use hioload_ws::stack::meter::WorkerMeter;
use hioload_ws::stack::ConnId;
use hioload_ws::ws::handshake::{self, HttpRequest, Request};
use hioload_ws::ws::{CloseCode, Message};
use hioload_ws::ws_metrics::WsMeter;
use hioload_ws::{WsConfig, WsService};

use metrics::metrics;

/// What the endpoint reports.
#[derive(Clone)]
pub struct Sources {
    /// What each worker publishes.
    pub meters: Arc<[WorkerMeter]>,
    /// WebSocket session counters per worker, if the service keeps them.
    pub sessions: Vec<Arc<Counters>>,
    /// WebSocket frame, close-code and handshake figures per worker, if the service keeps them.
    pub ws: Vec<Arc<WsMeter>>,
    /// Pub/sub figures per worker, in the `pubsub` mode.
    pub pubsub: Vec<Arc<PubSubCounters>>,
    /// The broker bridge, in the `pubsub` mode with `--redis`.
    pub broker: Option<Arc<hioload_ws::pubsub::broker::BrokerState>>,
    /// The message archive, in the `pubsub` mode with `--postgres`.
    pub archive: Option<Arc<hioload_ws::pubsub::archive::ArchiveState>>,
    /// The transport is DPDK (packets, ARP, port and pool figures exist).
    pub dpdk: bool,
    /// When the appliance started serving.
    pub started: std::time::Instant,
    /// The settings that change at run time (`/config`), if any.
    pub control: Option<Arc<crate::live_config::Control>>,
    /// The mode's routes under `/api/`, if it has any.
    pub api: Option<Arc<dyn ApiRoutes>>,
    /// The bearer token `/api/*` and `PUT /config` require (`--admin-token`), if any.
    pub token: Option<String>,
}

/// Routes a mode adds under `/api/` on the admin endpoint.
pub trait ApiRoutes: Send + Sync {
    /// Answer `method path` (the path without its query) with `query` and `body`: status,
    /// content type and body, or `None` if it is not one of this mode's routes.
    fn answer(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Option<(u16, &'static str, String)>;
}

#[cfg(test)]
impl Sources {
    /// Just workers' meters: no WebSocket figures, no run-time settings.
    pub fn bare(meters: Arc<[WorkerMeter]>, dpdk: bool) -> Self {
        Self {
            meters,
            sessions: Vec::new(),
            ws: Vec::new(),
            pubsub: Vec::new(),
            broker: None,
            archive: None,
            dpdk,
            started: std::time::Instant::now(),
            control: None,
            api: None,
            token: None,
        }
    }
}

/// Start the admin endpoint unless `--admin off`, and take SIGHUP for run-time settings.
pub fn start_for(
    common: &crate::cli::CommonArgs,
    meters: Arc<[WorkerMeter]>,
    figures: crate::modes::Figures,
    api: Option<Arc<dyn ApiRoutes>>,
    dpdk: bool,
    live: &crate::live_config::Live,
) -> Result<(), String> {
    live.watch_sighup()?;
    if let Some(addr) = common.admin.0 {
        if !addr.ip().is_loopback() && common.admin_token.is_none() {
            return Err(format!(
                "--admin {addr} is reachable from other hosts: give --admin-token TOKEN \
                 (required for /api/* and PUT /config), or listen on a loopback address"
            ));
        }
        let bound = start(
            addr,
            Sources {
                meters,
                sessions: figures.sessions,
                ws: figures.ws,
                pubsub: figures.pubsub,
                broker: figures.broker,
                archive: figures.archive,
                dpdk,
                started: std::time::Instant::now(),
                control: Some(Arc::clone(&live.control)),
                api,
                token: common.admin_token.clone(),
            },
        )?;
        tracing::info!(
            "admin endpoint on http://{bound} (/, /metrics, /debug/probes, /config, /healthz)"
        );
    }
    Ok(())
}

/// Dashboard viewers at most, with scrapers and operators' requests.
const MAX_CONNECTIONS: usize = 1024;

/// Bind `addr` and serve on a worker thread of its own; returns the bound address.
pub fn start(addr: SocketAddr, sources: Sources) -> Result<SocketAddr, String> {
    let config = KernelConfig {
        listen: addr,
        workers: 1,
        // One plain listener: SO_REUSEPORT would let another process share the admin port.
        accept_mode: AcceptMode::Shared,
        max_connections: MAX_CONNECTIONS,
        read_buffer: 16 << 10,
        thread_name: "hioload-admin".into(),
        ..KernelConfig::default()
    };
    let ws = WsConfig {
        // Viewers only listen: no idle timeout, but pings find those that went away.
        idle_timeout: None,
        ping_interval: Some(Duration::from_secs(30)),
        max_http_body: 8 << 10,
        ..WsConfig::default()
    };
    let server = Server::start(config, move |_| {
        WsService::new(AdminHandler::new(sources.clone()), ws.clone())
    })
    .map_err(|e| {
        format!("--admin {addr}: {e} (pass --admin off, or another address such as 127.0.0.1:0)")
    })?;
    let bound = server.local_addr();
    // The endpoint serves for the life of the process; its thread needs no join.
    drop(server);
    Ok(bound)
}

/// The admin endpoint's handler: plain requests, and the dashboard's viewers.
pub struct AdminHandler {
    sources: Sources,
    /// Dashboard sessions, pushed a snapshot every [`dashboard::INTERVAL`].
    viewers: Vec<ConnId>,
    /// The snapshot timer is set.
    ticking: bool,
}

impl AdminHandler {
    /// A handler answering from `sources`.
    pub fn new(sources: Sources) -> Self {
        Self {
            sources,
            viewers: Vec::new(),
            ticking: false,
        }
    }

    /// One snapshot of everything, as a frame for every viewer.
    fn snapshot(&self) -> PreparedFrame {
        PreparedFrame::text(&dashboard::snapshot(
            &self.sources,
            self.sources.started.elapsed(),
        ))
    }
}

impl Handler for AdminHandler {
    type Message = ();

    fn on_http(&mut self, _conn: ConnId, req: &HttpRequest<'_>, body: &[u8]) -> Option<Vec<u8>> {
        answer(&self.sources, req, body)
    }

    fn on_open(&mut self, _conn: ConnId, request: &Request<'_>) -> Decision {
        if request.path == "/ws" {
            Decision::accept()
        } else {
            Decision::Reject {
                status: 404,
                reason: "not found",
            }
        }
    }

    fn on_ready(&mut self, conn: ConnId, cx: &mut Context<'_, ()>) {
        self.viewers.push(conn);
        // The first snapshot at once; then with everyone else's.
        let first = self.snapshot();
        let _ = cx.send_prepared(conn, &first);
        if !self.ticking {
            let at = cx.now() + dashboard::INTERVAL;
            self.ticking = cx.set_timer(at, 0).is_ok();
        }
    }

    fn on_message(&mut self, _conn: ConnId, _message: Message<'_>, _cx: &mut Context<'_, ()>) {}

    fn on_close(
        &mut self,
        conn: ConnId,
        _code: Option<CloseCode>,
        _cx: &mut WorkerContext<'_, ()>,
    ) {
        self.viewers.retain(|v| *v != conn);
    }

    fn on_timer(&mut self, _token: u64, cx: &mut WorkerContext<'_, ()>) {
        if self.viewers.is_empty() {
            self.ticking = false;
            return;
        }
        // Encoded once for every viewer; one that does not keep up misses snapshots.
        let frame = self.snapshot();
        cx.broadcast(&self.viewers, &frame);
        let at = cx.now() + dashboard::INTERVAL;
        self.ticking = cx.set_timer(at, 0).is_ok();
    }
}

/// The answer to a plain request; `None` for `/ws` without an upgrade (refused with 426).
fn answer(sources: &Sources, req: &HttpRequest<'_>, body: &[u8]) -> Option<Vec<u8>> {
    let text = |status, content_type, body: &str| {
        handshake::response(status, content_type, body.as_bytes())
    };
    let no_settings = || text(404, "text/plain", "no run-time settings\n");
    let (path, query) = req.path.split_once('?').unwrap_or((req.path, ""));
    let guarded = path.starts_with("/api/") || (req.method == "PUT" && path == "/config");
    if guarded && !authorized(sources.token.as_deref(), req) {
        return Some(handshake::error_response(
            401,
            "a bearer token is required (Authorization: Bearer TOKEN, see --admin-token)",
            "WWW-Authenticate: Bearer\r\n",
        ));
    }
    if path.starts_with("/api/") {
        let found = sources
            .api
            .as_ref()
            .and_then(|api| api.answer(req.method, path, query, body));
        return Some(match found {
            Some((status, content_type, body)) => text(status, content_type, &body),
            None => text(404, "text/plain", "no such API route in this mode\n"),
        });
    }
    Some(match (req.method, path) {
        ("GET", "/metrics") => text(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            &metrics(sources),
        ),
        ("GET", "/healthz") => {
            // Still serving when degraded: this node's members get this node's messages.
            let mut degraded = Vec::new();
            if sources.broker.as_ref().is_some_and(|b| !b.is_up()) {
                degraded.push("Redis is unreachable; messages reach this node's members only");
            }
            if sources.archive.as_ref().is_some_and(|a| !a.is_up()) {
                degraded.push("PostgreSQL is unreachable; messages wait in the backlog");
            }
            if degraded.is_empty() {
                text(200, "text/plain", "ok\n")
            } else {
                text(
                    200,
                    "text/plain",
                    &format!("degraded: {}\n", degraded.join("; ")),
                )
            }
        }
        ("GET", "/config") => match &sources.control {
            Some(c) => text(200, "application/toml", &c.to_toml()),
            None => no_settings(),
        },
        ("PUT", "/config") => {
            let Some(control) = &sources.control else {
                return Some(no_settings());
            };
            let Ok(body) = std::str::from_utf8(body) else {
                return Some(text(400, "text/plain", "the body is not UTF-8\n"));
            };
            match control.apply_toml(body, false) {
                Ok(_) => {
                    tracing::info!(
                        change = body.trim(),
                        "settings changed through the admin endpoint"
                    );
                    text(200, "application/toml", &control.to_toml())
                }
                Err(e) => text(400, "text/plain", &format!("{e}\n")),
            }
        }
        ("GET", "/debug/probes") => text(
            200,
            "application/json",
            &probes::probes(sources, sources.started.elapsed()),
        ),
        ("GET", "/") => text(200, "text/html; charset=utf-8", dashboard::PAGE),
        ("GET", "/ws") => return None,
        ("GET", _) => text(404, "text/plain", "not found\n"),
        _ => text(405, "text/plain", "method not allowed\n"),
    })
}

/// Whether `req` carries the admin token (always, when there is none).
fn authorized(token: Option<&str>, req: &HttpRequest<'_>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = req
        .header("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    // Compared without an early exit, so the time taken does not tell how much matched.
    given.is_some_and(|g| {
        g.len() == token.len()
            && g.bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_metrics_and_health_over_http() {
        let sources = Sources::bare(WorkerMeter::for_workers(1), false);
        let addr = start(SocketAddr::from(([127, 0, 0, 1], 0)), sources).expect("binds");
        let body = crate::bench::server::http_get(addr, "/metrics").expect("metrics");
        assert!(body.contains("hioload_worker_busy_seconds_total{worker=\"0\"}"));
        assert_eq!(
            crate::bench::server::http_get(addr, "/healthz").as_deref(),
            Ok("ok\n")
        );
        let missing = crate::bench::server::http_get(addr, "/nope").unwrap_err();
        assert!(missing.contains("404"), "{missing}");
    }
}
