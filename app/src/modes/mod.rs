//! The appliance's modes. A mode is one file here: the service each worker runs, what it shows on
//! the admin endpoint and the tail of its summary line. [`crate::serve`] runs any of them on
//! either transport, with the same startup, admin, signal and summary handling.
//!
//! - [`echo`]: WebSocket echo.
//! - [`tcp_echo`]: raw TCP echo.
//! - [`broadcast`]: every WebSocket message to every session of every worker.
//! - [`pubsub`]: channels, presence and history.

pub mod broadcast;
pub mod echo;
pub mod pubsub;
pub mod tcp_echo;

use std::sync::Arc;

use hioload_ws::live::LiveWs;
use hioload_ws::middleware::{Counters, Logging, Metrics, Recover};
use hioload_ws::stack::{Postboxes, Service};
use hioload_ws::ws::{DeflateConfig, Limits};
use hioload_ws::ws_metrics::WsMeter;
use hioload_ws::Handler;
use hioload_ws::WsConfig;
use hioload_ws::WsService;

use crate::admin::ApiRoutes;
use crate::cli::{CommonArgs, WsArgs};

/// A mode of the appliance.
pub trait Mode: Send + Sync + 'static {
    /// What each worker runs.
    type Service: Service + 'static;

    /// Its name, as in the startup line and on the command line (`echo`).
    const NAME: &'static str;
    /// The scheme of its URL in the startup line (`ws`).
    const SCHEME: &'static str;
    /// The port it listens on unless `--listen` says otherwise.
    const DEFAULT_PORT: u16;

    /// The WebSocket settings it serves with, if it speaks WebSocket (they can change at run
    /// time through `/config`).
    fn ws(&self) -> Option<&WsConfig>;

    /// Make the per-worker figures; called once the worker count is known, before any worker
    /// starts.
    fn prepare(&mut self, workers: usize);

    /// Worker `worker`'s service (called on that worker's thread); `live` carries WebSocket
    /// settings changed at run time.
    fn service(&self, worker: usize, live: Option<&Arc<LiveWs>>) -> Self::Service;

    /// What the admin endpoint shows of this mode, per worker.
    fn figures(&self) -> Figures;

    /// The tail of the summary line ("sessions 3, messages echoed 12").
    fn summary(&self) -> String;

    /// Start what runs beside the workers (the pub/sub mode's broker bridge), reaching them
    /// through `posts`; called once the workers run, before the admin endpoint starts.
    fn start_background(
        &self,
        posts: Postboxes<<Self::Service as Service>::Message>,
    ) -> Result<(), String> {
        let _ = posts;
        Ok(())
    }

    /// Stop it, after the workers have stopped (they may have queued work for it).
    fn stop_background(&self) {}

    /// Routes under `/api/` on the admin endpoint, reaching the workers through `posts`
    /// (none by default).
    fn api(
        &self,
        posts: Postboxes<<Self::Service as Service>::Message>,
    ) -> Option<Arc<dyn ApiRoutes>> {
        let _ = posts;
        None
    }
}

/// A mode's per-worker figures for the admin endpoint (empty where it keeps none).
#[derive(Default, Clone)]
pub struct Figures {
    /// WebSocket session counters per worker.
    pub sessions: Vec<Arc<Counters>>,
    /// WebSocket frame, close-code and handshake figures per worker.
    pub ws: Vec<Arc<WsMeter>>,
    /// Pub/sub figures per worker (the `pubsub` mode).
    pub pubsub: Vec<Arc<hioload_ws::pubsub::PubSubCounters>>,
    /// The broker bridge's state and figures (the `pubsub` mode with `--redis`).
    pub broker: Option<Arc<hioload_ws::pubsub::broker::BrokerState>>,
    /// The archive's state and figures (the `pubsub` mode with `--postgres`).
    pub archive: Option<Arc<hioload_ws::pubsub::archive::ArchiveState>>,
}

/// What one WebSocket worker counts for the admin endpoint and the summary line.
#[derive(Default, Clone)]
pub struct SessionFigures {
    /// Sessions and messages.
    pub sessions: Arc<Counters>,
    /// Frames, close codes, handshake failures.
    pub ws: Arc<WsMeter>,
}

impl SessionFigures {
    /// The figures of every worker, in the shape the admin endpoint takes.
    pub fn all(per_worker: &[SessionFigures]) -> Figures {
        Figures {
            sessions: per_worker.iter().map(|f| Arc::clone(&f.sessions)).collect(),
            ws: per_worker.iter().map(|f| Arc::clone(&f.ws)).collect(),
            pubsub: Vec::new(),
            broker: None,
            archive: None,
        }
    }

    /// Sessions opened and messages received, over workers.
    pub fn totals(per_worker: &[SessionFigures]) -> (u64, u64) {
        per_worker.iter().fold((0, 0), |(s, m), f| {
            (
                s + Counters::get(&f.sessions.sessions_opened),
                m + Counters::get(&f.sessions.messages_in),
            )
        })
    }
}

/// A WebSocket mode's service for one worker: `handler` under the logging, panic-recovery and
/// metrics middleware, counting into `figures`, taking run-time settings from `live`.
pub fn ws_service<H: Handler>(
    handler: H,
    ws: &WsConfig,
    figures: SessionFigures,
    live: Option<&Arc<LiveWs>>,
) -> WsService<Logging<Recover<Metrics<H>>>> {
    let service = WsService::new(
        Logging::new(Recover::new(Metrics::new(handler, figures.sessions))),
        ws.clone(),
    )
    .with_meter(figures.ws);
    match live {
        Some(l) => service.with_live(Arc::clone(l)),
        None => service,
    }
}

/// The WebSocket settings from the flags, checked.
pub fn ws_config(ws: &WsArgs, common: &CommonArgs) -> Result<WsConfig, String> {
    let max_frame = ws.max_frame.unwrap_or(ws.max_message);
    if max_frame > ws.max_message {
        return Err(format!(
            "--max-frame ({max_frame}) is larger than --max-message ({}); a frame can never exceed its message",
            ws.max_message
        ));
    }
    Ok(WsConfig {
        limits: Limits {
            max_frame,
            max_message: ws.max_message,
        },
        max_header_bytes: usize::try_from(ws.max_header_size)
            .map_err(|_| "--max-header-size is too large")?,
        handshake_timeout: ws.handshake_timeout,
        idle_timeout: common.idle_timeout.0,
        ping_interval: ws.ping_interval.0,
        close_timeout: ws.close_timeout,
        deflate: deflate_config(ws)?,
        ..WsConfig::default()
    })
}

/// The permessage-deflate policy from the flags (`None` with `--deflate off`).
fn deflate_config(ws: &WsArgs) -> Result<Option<DeflateConfig>, String> {
    if !ws.deflate.0 {
        return Ok(None);
    }
    let config = DeflateConfig {
        server_window_bits: ws.deflate_window_bits,
        client_window_bits: ws.deflate_client_window_bits,
        server_takeover: ws.deflate_server_takeover,
        client_takeover: ws.deflate_client_takeover,
        level: ws.deflate_level,
        min_size: u32::try_from(ws.deflate_min_size)
            .map_err(|_| "--deflate-min-size is too large (at most 4GiB)")?,
    };
    config.validate().map_err(|e| format!("--deflate: {e}"))?;
    Ok(Some(config))
}

/// The pub/sub settings from the flags.
/// The broker bridge of `pubsub --redis` (connected once: a bad URL or an unreachable Redis is
/// an error here, before anything starts), with `config` linked to it.
pub fn pubsub_bridge(
    a: &crate::cli::PubSubArgs,
    config: &mut hioload_ws::pubsub::PubSubConfig,
) -> Result<Option<hioload_ws::pubsub::redis::Bridge>, String> {
    use hioload_ws::pubsub::redis::{Bridge, RedisConfig};
    let Some(url) = &a.redis else {
        return Ok(None);
    };
    let node = node_name(a)?;
    let bridge = Bridge::connect(RedisConfig {
        url: url.clone(),
        node: node.as_str().into(),
        history_size: a.history_size as usize,
        presence_ttl: a.presence_ttl,
        queue: 16_384,
        archive: config.archive.clone(),
        batch: a.redis_batch as usize,
    })
    .map_err(|e| e.to_string())?;
    tracing::info!(%url, node, "joining other nodes through Redis");
    config.broker = Some(bridge.link());
    Ok(Some(bridge))
}

/// `--node-name`, or `HOSTNAME-PID`.
fn node_name(a: &crate::cli::PubSubArgs) -> Result<String, String> {
    let node = match &a.node_name {
        Some(n) => n.clone(),
        None => default_node_name(),
    };
    hioload_ws::pubsub::broker::check_node_name(&node).map_err(|e| format!("--node-name: {e}"))?;
    Ok(node)
}

/// The message archive of `pubsub --postgres` (connected and its schema checked once: a bad
/// URL, an unreachable server or a schema from a newer build is an error here), with `config`
/// linked to it. Made before the broker bridge, which stores what it publishes.
pub fn pubsub_archive(
    a: &crate::cli::PubSubArgs,
    config: &mut hioload_ws::pubsub::PubSubConfig,
) -> Result<Option<hioload_ws::pubsub::postgres::Archive>, String> {
    use hioload_ws::pubsub::postgres::{Archive, PgConfig};
    let Some(url) = &a.postgres else {
        return Ok(None);
    };
    let archive = Archive::connect(PgConfig {
        url: url.clone(),
        node: node_name(a)?.into(),
        backlog: a.pg_backlog as usize,
        batch: a.pg_batch as usize,
        history_size: a.history_size as usize,
        queue: 65_536,
    })
    .map_err(|e| e.to_string())?;
    tracing::info!("storing messages in PostgreSQL");
    config.archive = Some(archive.link());
    Ok(Some(archive))
}

/// `HOSTNAME-PID`, with characters a node name cannot hold replaced.
fn default_node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "node".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.:-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!("{host}-{}", std::process::id())
}

/// The pub/sub settings from the command line.
pub fn pubsub_config(
    a: &crate::cli::PubSubArgs,
) -> Result<hioload_ws::pubsub::PubSubConfig, String> {
    use hioload_ws::pubsub::{hub::HubLimits, PubSubConfig};
    Ok(PubSubConfig {
        hub: HubLimits {
            history_size: a.history_size as usize,
            history_ttl_ms: a
                .history_ttl
                .0
                .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64),
            presence_limit: a.presence_limit,
            max_channels: a.max_channels as usize,
            presence_interval_ms: a.presence_interval.as_millis() as u64,
        },
        max_publish_size: usize::try_from(a.max_publish_size)
            .map_err(|_| "--max-publish-size is too large")?,
        max_channels_per_connection: a.max_channels_per_connection as usize,
        publish_rate: (a.publish_rate > 0).then_some(a.publish_rate),
        auth: match a.auth_secret.as_deref() {
            Some("") => return Err("--auth-secret must not be empty".into()),
            Some(s) => Some(hioload_ws::pubsub::auth::Verifier::new(s.as_bytes())),
            None => None,
        },
        broker: None,
        archive: None,
        deflate: None,
    })
}
