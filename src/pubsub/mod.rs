//! Pub/sub: channels, presence and history over WebSocket, wire protocol version 1
//! (`docs/PROTOCOL.md`).
//!
//! Follow a message: a session's text frame is parsed ([`protocol`]); its channel's *home*
//! worker (chosen by hash, [`home_of`]) numbers and retains it ([`hub`]), encodes it once and
//! sends the frame to every worker with members of the channel; each of those writes the same
//! bytes to its local members ([`members`]). Workers talk through their mailboxes ([`Note`]);
//! a channel homed on the session's own worker is served by a direct call. Nothing here touches
//! sockets: the handler runs on [`crate::WsService`] over either transport. A plain `GET /` on
//! the same listener gets the chat page ([`CHAT_PAGE`]); [`api`] publishes from outside.
//!
//! Bounded everywhere: history per channel (`history_size`, and a TTL), channels per hub and per
//! connection, the publish size and rate. Pushes to a member over its output limit are dropped
//! (a gap in seq the member can see and recover with `since`), or close it, as the
//! transport's slow-consumer policy says; both are counted.

pub mod api;
pub mod archive;
pub mod auth;
pub mod broker;
pub mod hub;
pub mod members;
pub mod postgres;
pub mod protocol;
pub mod redis;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hioload_stack::ConnId;
use hioload_wsproto::handshake::{self, HttpRequest, Request as Upgrade};
use hioload_wsproto::{CloseCode, Message};

use crate::handler::{Context, Decision, Handler, PreparedFrame, WorkerContext};
use archive::ArchiveLink;
use broker::{BrokerLink, BrokerState, Command, PublishFrom, Remote};
use hub::{Asker, Effect, Hub, HubLimits, Joining};
use members::Members;
use protocol::{ErrorCode, Refusal, Request, RequestId};

/// Timer token of the retry of notes a full mailbox refused.
const RETRY_TIMER: u64 = 1;
/// How soon refused notes are tried again.
const RETRY_AFTER: Duration = Duration::from_millis(2);
/// Timer token of the sending of gathered presence changes.
const PRESENCE_TIMER: u64 = 2;

/// The settings of the pub/sub handler.
#[derive(Debug, Clone)]
pub struct PubSubConfig {
    /// What bounds each worker's hub (history, presence events, channels).
    pub hub: HubLimits,
    /// Longest `text` of a `message`, in bytes.
    pub max_publish_size: usize,
    /// Channels one connection may have joined at once.
    pub max_channels_per_connection: usize,
    /// Publishes per second one connection may make (with a burst of the same size); `None`
    /// for no limit.
    pub publish_rate: Option<u32>,
    /// With a verifier, sessions must present a token (`?token=JWT`) whose `sub` is their user.
    pub auth: Option<auth::Verifier>,
    /// With a broker bridge, this node is one of several serving the same channels.
    pub broker: Option<BrokerLink>,
    /// With an archive, every message is stored and older history read from there.
    pub archive: Option<ArchiveLink>,
    /// With permessage-deflate, each message and presence change is also compressed once for
    /// every member that takes compressed frames.
    pub deflate: Option<hioload_wsproto::DeflateConfig>,
}

impl Default for PubSubConfig {
    fn default() -> Self {
        Self {
            hub: HubLimits::default(),
            max_publish_size: 64 * 1024,
            max_channels_per_connection: 128,
            publish_rate: None,
            auth: None,
            broker: None,
            archive: None,
            deflate: None,
        }
    }
}

/// What pub/sub workers post to each other.
#[derive(Debug)]
pub enum Note {
    /// To a channel's home: `conn` joins as `user`.
    Join {
        /// The channel.
        channel: Arc<str>,
        /// The user name.
        user: Arc<str>,
        /// The joining session.
        conn: ConnId,
        /// The request's id.
        id: Option<RequestId>,
        /// Recover from this seq.
        since: Option<u64>,
        /// The epoch `since` counts in.
        epoch: Option<Box<str>>,
        /// Already a member: answer without counting it again.
        rejoin: bool,
    },
    /// To a channel's home: `conn` left (answer `left` when `reply`) or closed.
    Leave {
        /// The channel.
        channel: Arc<str>,
        /// The user name it had joined as.
        user: Arc<str>,
        /// The session.
        conn: ConnId,
        /// Answer `left`, with this id.
        reply: Option<Option<RequestId>>,
    },
    /// To a channel's home: publish.
    Publish {
        /// The channel.
        channel: Box<str>,
        /// The publishing user.
        user: Arc<str>,
        /// The text.
        text: Box<str>,
        /// The publishing session.
        conn: ConnId,
        /// The request's id (an `ack` is wanted).
        id: Option<RequestId>,
    },
    /// To a channel's home: a `history` request.
    History {
        /// The channel.
        channel: Box<str>,
        /// How many messages at most.
        limit: usize,
        /// Only seqs below this.
        before: Option<u64>,
        /// The asking session.
        conn: ConnId,
        /// The request's id.
        id: Option<RequestId>,
    },
    /// To a channel's home: a `presence` request.
    Presence {
        /// The channel.
        channel: Box<str>,
        /// The asking session.
        conn: ConnId,
        /// The request's id.
        id: Option<RequestId>,
    },
    /// From a home to a worker with members: write `frame` to them.
    Deliver {
        /// The channel.
        channel: Arc<str>,
        /// The encoded frame.
        frame: PreparedFrame,
    },
    /// From outside the workers (the admin endpoint's `/api/*`).
    Api(api::ApiCall),
    /// From a home to a session's worker: the answer to its request.
    Reply {
        /// The session.
        conn: ConnId,
        /// The JSON answer.
        text: String,
        /// Set on `joined`: the session now gets the channel's frames.
        joined: Option<Arc<str>>,
    },
    /// From the broker bridge to a channel's home.
    Remote {
        /// The channel.
        channel: Arc<str>,
        /// What happened.
        event: Remote,
    },
    /// From the broker bridge to every worker: it reconnected; sync every channel again.
    Reconnected,
}

impl Note {
    fn channel(&self) -> &str {
        match self {
            Note::Join { channel, .. } | Note::Leave { channel, .. } => channel,
            Note::Publish { channel, .. }
            | Note::History { channel, .. }
            | Note::Presence { channel, .. } => channel,
            Note::Deliver { channel, .. } | Note::Remote { channel, .. } => channel,
            Note::Reply { .. } | Note::Api(_) | Note::Reconnected => "",
        }
    }
}

/// The home worker of `channel` among `workers` (FNV-1a of the name: the same on every run and
/// every node).
pub fn home_of(channel: &str, workers: usize) -> usize {
    if workers <= 1 {
        return 0;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in channel.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % workers as u64) as usize
}

/// One worker's pub/sub figures, read by the admin endpoint.
#[derive(Debug, Default)]
pub struct PubSubCounters {
    /// Messages published: numbered at their home, or with a broker, taken in from it.
    pub publishes: AtomicU64,
    /// Frames of messages and presence changes queued for members.
    pub deliveries: AtomicU64,
    /// Frames not queued for a member over its output limit.
    pub dropped_slow: AtomicU64,
    /// Notes a full mailbox refused (frames for a worker's members, answers, requests).
    pub dropped_mailbox: AtomicU64,
    /// Presence changes sent by this worker's hub (one per change, whatever the members).
    pub presence_events: AtomicU64,
    /// Errors sent, by code (in [`ErrorCode::ALL`] order).
    pub errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Channels homed on this worker (a gauge).
    pub channels: AtomicU64,
    /// Memberships of this worker's sessions, pending or active (a gauge).
    pub members: AtomicU64,
    /// Bytes of history retained by this worker's hub (a gauge).
    pub history_bytes: AtomicU64,
    /// Messages and presence changes this worker's hub compressed, each once for all members.
    pub compressed: AtomicU64,
    /// Their bytes before compression.
    pub compressed_in_bytes: AtomicU64,
    /// Their bytes after compression.
    pub compressed_out_bytes: AtomicU64,
}

impl PubSubCounters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Read one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A publish-rate bucket: tokens in thousandths, refilled with time.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    at: Instant,
}

/// One worker's pub/sub handler.
#[derive(Debug)]
pub struct PubSub {
    config: PubSubConfig,
    hub: Hub,
    members: Members,
    buckets: HashMap<ConnId, Bucket>,
    /// The user each session's token names (with authentication).
    users: HashMap<ConnId, Arc<str>>,
    counters: Arc<PubSubCounters>,
    /// Effects of the hub operation being carried out (kept to reuse its allocation).
    effects: Vec<Effect>,
    /// Notes a full mailbox refused that must not be lost (leaves): tried again on a timer.
    retry: VecDeque<(usize, Note)>,
    /// Broker commands a full bridge queue refused (syncs, presence): tried again likewise.
    broker_retry: VecDeque<Command>,
    /// Archive syncs a full queue refused: tried again likewise.
    archive_retry: VecDeque<archive::Request>,
    retry_armed: bool,
    /// The presence timer is set (changes are gathered: [`HubLimits::presence_interval_ms`]).
    presence_armed: bool,
    /// The wall clock at a known instant: message times follow the transport's clock.
    epoch: (Instant, u64),
    /// The (empty) epoch of the rows this worker stores: made once, shared by every row.
    no_epoch: Arc<str>,
}

impl PubSub {
    /// A handler with these settings, counting into `counters`.
    pub fn new(config: PubSubConfig, counters: Arc<PubSubCounters>) -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let hub = match &config.broker {
            Some(link) => Hub::replicated(config.hub, Arc::clone(link.node())),
            None => Hub::new(config.hub),
        };
        let hub = if config.archive.is_some() {
            hub.with_archive()
        } else {
            hub
        }
        .with_deflate(config.deflate.as_ref());
        Self {
            hub,
            config,
            members: Members::default(),
            buckets: HashMap::new(),
            users: HashMap::new(),
            counters,
            effects: Vec::new(),
            retry: VecDeque::new(),
            broker_retry: VecDeque::new(),
            archive_retry: VecDeque::new(),
            retry_armed: false,
            presence_armed: false,
            epoch: (Instant::now(), wall),
            no_epoch: Arc::from(""),
        }
    }

    /// The local memberships.
    pub fn members(&self) -> &Members {
        &self.members
    }

    /// The channels homed on this worker.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    fn now_ms(&self, now: Instant) -> u64 {
        self.epoch.1 + now.saturating_duration_since(self.epoch.0).as_millis() as u64
    }

    fn refuse<M>(
        &self,
        conn: ConnId,
        id: Option<&RequestId>,
        refusal: &Refusal,
        cx: &mut WorkerContext<'_, M>,
    ) {
        PubSubCounters::add(&self.counters.errors[refusal.code.index()], 1);
        let _ = cx.send(conn, Message::Text(&protocol::error(id, refusal)));
    }

    /// Whether `conn` may publish now (takes a token).
    fn take_token(&mut self, conn: ConnId, now: Instant) -> bool {
        let Some(rate) = self.config.publish_rate else {
            return true;
        };
        let full = u64::from(rate) * 1000;
        let b = self.buckets.entry(conn).or_insert(Bucket {
            milli_tokens: full,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_millis() as u64;
        b.milli_tokens = (b.milli_tokens + elapsed * u64::from(rate)).min(full);
        b.at = now;
        if b.milli_tokens >= 1000 {
            b.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// A client's text frame.
    fn request(&mut self, conn: ConnId, text: &str, cx: &mut WorkerContext<'_, Note>) {
        let parsed = protocol::parse(text);
        let id = parsed.id;
        let request = match parsed.request {
            Ok(r) => r,
            Err(refusal) => return self.refuse(conn, id.as_ref(), &refusal, cx),
        };
        let joined = self.members.membership(conn, request.channel()).cloned();
        let not_joined = Refusal::new(ErrorCode::NotJoined, "join the channel first");
        match request {
            Request::Join {
                channel,
                user,
                since,
                epoch,
            } => {
                let rejoin = joined.is_some();
                let (channel, user) = match joined {
                    Some(m) => (m.channel, m.user),
                    None => {
                        let user: Arc<str> = match (self.users.get(&conn), user) {
                            (Some(authed), None) => Arc::clone(authed),
                            (Some(authed), Some(u)) if **authed == *u => Arc::clone(authed),
                            (Some(_), Some(_)) => {
                                let r = Refusal::new(
                                    ErrorCode::Forbidden,
                                    "`user` must be the token's subject (or left out)",
                                );
                                return self.refuse(conn, id.as_ref(), &r, cx);
                            }
                            (None, Some(u)) => u.into(),
                            (None, None) => {
                                let r = Refusal::new(ErrorCode::BadRequest, "`join` needs `user`");
                                return self.refuse(conn, id.as_ref(), &r, cx);
                            }
                        };
                        if self.members.joined(conn).len()
                            >= self.config.max_channels_per_connection
                        {
                            let r = Refusal::new(
                                ErrorCode::TooManyChannels,
                                "this connection has joined as many channels as it may",
                            );
                            return self.refuse(conn, id.as_ref(), &r, cx);
                        }
                        let channel: Arc<str> = channel.into();
                        self.members
                            .add_pending(conn, Arc::clone(&channel), Arc::clone(&user));
                        (channel, user)
                    }
                };
                let note = Note::Join {
                    channel,
                    user,
                    conn,
                    id,
                    since,
                    epoch: epoch.map(|e| e.into()),
                    rejoin,
                };
                if let Err(Note::Join { channel, id, .. }) = self.send_home(note, cx) {
                    if !rejoin {
                        self.members.remove(conn, &channel);
                    }
                    self.unavailable(conn, id.as_ref(), cx);
                }
            }
            Request::Leave { channel } => {
                let Some(m) = self.members.remove(conn, &channel) else {
                    return self.refuse(conn, id.as_ref(), &not_joined, cx);
                };
                self.leave(m.channel, m.user, conn, Some(id), cx);
            }
            Request::Message { channel, text } => {
                let Some(m) = joined else {
                    return self.refuse(conn, id.as_ref(), &not_joined, cx);
                };
                if text.len() > self.config.max_publish_size {
                    let r = Refusal {
                        code: ErrorCode::TooLarge,
                        message: format!(
                            "the text is {} bytes; at most {} are published",
                            text.len(),
                            self.config.max_publish_size
                        )
                        .into(),
                    };
                    return self.refuse(conn, id.as_ref(), &r, cx);
                }
                if !self.take_token(conn, cx.now()) {
                    let r = Refusal::new(ErrorCode::RateLimited, "publishing too fast");
                    return self.refuse(conn, id.as_ref(), &r, cx);
                }
                if let Some(link) = self.config.broker.as_ref().filter(|l| l.state().is_up()) {
                    // The broker numbers it; it comes back to the home like any node's.
                    let command = Command::Publish {
                        channel: channel.into(),
                        user: m.user,
                        text: text.into(),
                        ts_ms: self.now_ms(cx.now()),
                        from: PublishFrom::Session { conn, id },
                    };
                    if let Err(Command::Publish {
                        from: PublishFrom::Session { id, .. },
                        ..
                    }) = link.send(command)
                    {
                        self.unavailable(conn, id.as_ref(), cx);
                    }
                } else if home_of(&channel, cx.workers()) == cx.worker() {
                    // Homed here: no note, no copy of the text.
                    let now_ms = self.now_ms(cx.now());
                    let mut effects = std::mem::take(&mut self.effects);
                    let asker = Asker {
                        conn,
                        id: id.as_ref(),
                    };
                    let _ =
                        self.publish(&channel, &m.user, &text, Some(asker), now_ms, &mut effects);
                    self.apply(&mut effects, cx);
                    self.effects = effects;
                } else {
                    let note = Note::Publish {
                        channel: channel.into(),
                        user: m.user,
                        text: text.into(),
                        conn,
                        id,
                    };
                    if let Err(Note::Publish { id, .. }) = self.send_home(note, cx) {
                        self.unavailable(conn, id.as_ref(), cx);
                    }
                }
            }
            Request::History {
                channel,
                limit,
                before,
            } => {
                if joined.is_none() {
                    return self.refuse(conn, id.as_ref(), &not_joined, cx);
                }
                let note = Note::History {
                    channel: channel.into(),
                    limit,
                    before,
                    conn,
                    id,
                };
                if let Err(Note::History { id, .. }) = self.send_home(note, cx) {
                    self.unavailable(conn, id.as_ref(), cx);
                }
            }
            Request::Presence { channel } => {
                if joined.is_none() {
                    return self.refuse(conn, id.as_ref(), &not_joined, cx);
                }
                let note = Note::Presence {
                    channel: channel.into(),
                    conn,
                    id,
                };
                if let Err(Note::Presence { id, .. }) = self.send_home(note, cx) {
                    self.unavailable(conn, id.as_ref(), cx);
                }
            }
        }
    }

    fn unavailable<M>(&self, conn: ConnId, id: Option<&RequestId>, cx: &mut WorkerContext<'_, M>) {
        let r = Refusal::new(
            ErrorCode::Unavailable,
            "the channel's worker is overloaded; try again",
        );
        self.refuse(conn, id, &r, cx);
    }

    /// Tell the home that `conn` left `channel`; a leave is never lost (retried if the home's
    /// mailbox is full, so presence stays right).
    fn leave(
        &mut self,
        channel: Arc<str>,
        user: Arc<str>,
        conn: ConnId,
        reply: Option<Option<RequestId>>,
        cx: &mut WorkerContext<'_, Note>,
    ) {
        let note = Note::Leave {
            channel,
            user,
            conn,
            reply,
        };
        if let Err(note) = self.send_home(note, cx) {
            let home = home_of(note.channel(), cx.workers());
            self.retry.push_back((home, note));
            self.arm_retry(cx);
        }
    }

    fn arm_retry(&mut self, cx: &mut WorkerContext<'_, Note>) {
        if !self.retry_armed {
            let at = cx.now() + RETRY_AFTER;
            self.retry_armed = cx.set_timer(at, RETRY_TIMER).is_ok();
        }
    }

    /// Hand `note` to its channel's home: this worker's hub directly, another's by mailbox.
    /// A full mailbox gives the note back (counted).
    fn send_home(&mut self, note: Note, cx: &mut WorkerContext<'_, Note>) -> Result<(), Note> {
        let home = home_of(note.channel(), cx.workers());
        if home == cx.worker() {
            self.at_home(note, cx);
            return Ok(());
        }
        cx.post(home, note).map_err(|e| {
            PubSubCounters::add(&self.counters.dropped_mailbox, 1);
            e.into_message()
        })
    }

    /// A note for this worker: a request for its hub, or frames and answers for its sessions.
    fn at_home(&mut self, note: Note, cx: &mut WorkerContext<'_, Note>) {
        let now_ms = self.now_ms(cx.now());
        let mut effects = std::mem::take(&mut self.effects);
        match note {
            Note::Join {
                channel,
                user,
                conn,
                id,
                since,
                epoch,
                rejoin,
            } => self.hub.join(
                &channel,
                Joining {
                    user: &user,
                    since,
                    rejoin,
                    epoch: epoch.as_deref(),
                },
                Asker {
                    conn,
                    id: id.as_ref(),
                },
                now_ms,
                &mut effects,
            ),
            Note::Leave {
                channel,
                user,
                conn,
                reply,
            } => self.hub.leave(
                &channel,
                &user,
                conn,
                reply.as_ref().map(Option::as_ref),
                now_ms,
                &mut effects,
            ),
            Note::Publish {
                channel,
                user,
                text,
                conn,
                id,
            } => {
                let asker = Asker {
                    conn,
                    id: id.as_ref(),
                };
                let _ = self.publish(&channel, &user, &text, Some(asker), now_ms, &mut effects);
            }
            Note::History {
                channel,
                limit,
                before,
                conn,
                id,
            } => self.hub.history(
                &channel,
                (limit, before),
                Asker {
                    conn,
                    id: id.as_ref(),
                },
                now_ms,
                &mut effects,
            ),
            Note::Presence { channel, conn, id } => {
                let asker = Asker {
                    conn,
                    id: id.as_ref(),
                };
                self.hub.presence(&channel, asker, &mut effects)
            }
            Note::Deliver { channel, frame } => self.deliver(&channel, &frame, cx),
            Note::Reply { conn, text, joined } => self.reply(conn, &text, joined, cx),
            Note::Api(call) => self.api_call(call, now_ms, &mut effects),
            Note::Remote { channel, event } => match event {
                Remote::Synced(snap) => self.hub.synced(&channel, *snap, now_ms, &mut effects),
                event => {
                    if self.hub.remote(&channel, event, now_ms, &mut effects) {
                        PubSubCounters::add(&self.counters.publishes, 1);
                    }
                }
            },
            Note::Reconnected => self.hub.resync_all(&mut effects),
        }
        self.settle(effects, now_ms, cx);
    }

    /// Carry out what the hub decided (`effects`, whose storage is kept for the next time),
    /// set the presence timer if changes wait, and publish the gauges.
    fn settle(&mut self, mut effects: Vec<Effect>, now_ms: u64, cx: &mut WorkerContext<'_, Note>) {
        self.apply(&mut effects, cx);
        self.effects = effects;
        self.arm_presence(now_ms, cx);
        self.update_gauges();
    }

    /// Set the presence timer for the first gathered change due, unless it is set: changes
    /// are gathered in order, so the one it is set for is never later than a new one.
    fn arm_presence(&mut self, now_ms: u64, cx: &mut WorkerContext<'_, Note>) {
        if let Some(due) = self.hub.presence_due().filter(|_| !self.presence_armed) {
            let at = cx.now() + Duration::from_millis(due.saturating_sub(now_ms));
            self.presence_armed = cx.set_timer(at, PRESENCE_TIMER).is_ok();
        }
    }

    /// Publish to a channel homed here (counted when its hub takes it).
    fn publish(
        &mut self,
        channel: &str,
        user: &str,
        text: &str,
        from: Option<Asker<'_>>,
        now_ms: u64,
        effects: &mut Vec<Effect>,
    ) -> Result<u64, Refusal> {
        let result = self.hub.publish(channel, user, text, from, now_ms, effects);
        if let Ok(seq) = result {
            PubSubCounters::add(&self.counters.publishes, 1);
            if let Some(link) = &self.config.broker {
                BrokerState::add(&link.state().published_locally, 1);
            }
            if let Some(archive) = &self.config.archive {
                // Counted by the link if its queue is full.
                let _ = archive.send(archive::Request::Store(archive::Row {
                    channel: channel.into(),
                    seq,
                    user: user.into(),
                    text: text.into(),
                    ts_ms: now_ms,
                    epoch: Arc::clone(&self.no_epoch),
                }));
            }
        }
        result
    }

    /// A call of the server API, for this worker's hub.
    fn api_call(&mut self, call: api::ApiCall, now_ms: u64, effects: &mut Vec<Effect>) {
        // Each answer channel holds one answer and has one sender: `try_send` cannot block,
        // and fails only if the caller gave up waiting.
        match call {
            api::ApiCall::Publish {
                channel,
                user,
                text,
                answer,
            } => {
                if let Some(link) = self.config.broker.as_ref().filter(|l| l.state().is_up()) {
                    let command = Command::Publish {
                        channel,
                        user: user.into(),
                        text,
                        ts_ms: now_ms,
                        from: PublishFrom::Api(answer),
                    };
                    if let Err(Command::Publish {
                        from: PublishFrom::Api(answer),
                        ..
                    }) = link.send(command)
                    {
                        let busy =
                            Refusal::new(ErrorCode::Unavailable, "the broker bridge is busy");
                        let _ = answer.try_send(Err(busy));
                    }
                    return;
                }
                let result = self.publish(&channel, &user, &text, None, now_ms, effects);
                let _ = answer.try_send(result);
            }
            api::ApiCall::Channels { answer } => {
                let list = self
                    .hub
                    .channel_list()
                    .map(|(name, members)| (name.to_string(), members))
                    .collect();
                let _ = answer.try_send(list);
            }
            api::ApiCall::Presence { channel, answer } => {
                let users = self
                    .hub
                    .users(&channel)
                    .iter()
                    .map(|u| u.to_string())
                    .collect();
                let _ = answer.try_send(users);
            }
        }
    }

    /// Carry out a hub's effects, in order: this worker's directly, others' by mailbox.
    fn apply(&mut self, effects: &mut Vec<Effect>, cx: &mut WorkerContext<'_, Note>) {
        let me = cx.worker();
        for effect in effects.drain(..) {
            match effect {
                Effect::Deliver {
                    worker,
                    channel,
                    frame,
                } => {
                    if worker == me {
                        self.deliver(&channel, &frame, cx);
                    } else if let Err(e) = cx.post(worker, Note::Deliver { channel, frame }) {
                        // That worker's members miss this seq: a gap they can see.
                        PubSubCounters::add(&self.counters.dropped_mailbox, 1);
                        tracing::debug!(error = %e, "frame for a worker's members dropped");
                    }
                }
                Effect::Reply { conn, text, joined } => {
                    let worker = usize::from(conn.worker);
                    if worker == me {
                        self.reply(conn, &text, joined, cx);
                    } else if let Err(e) = cx.post(worker, Note::Reply { conn, text, joined }) {
                        PubSubCounters::add(&self.counters.dropped_mailbox, 1);
                        tracing::warn!(%conn, error = %e, "answer to a session lost");
                    }
                }
                Effect::Broker(Command::Sync { channel, .. }) if self.config.broker.is_none() => {
                    // No broker: the archive has the channel's state.
                    let sync = archive::Request::Sync { channel };
                    if let Some(archive) = &self.config.archive {
                        if let Err(sync) = archive.send(sync) {
                            self.archive_retry.push_back(sync);
                            self.arm_retry(cx);
                        }
                    }
                }
                Effect::Broker(command) => {
                    // Syncs and presence must not be lost: a full queue is tried again.
                    let queued = match &self.config.broker {
                        Some(link) if self.broker_retry.is_empty() => link.send(command),
                        _ => Err(command),
                    };
                    if let Err(command) = queued {
                        self.broker_retry.push_back(command);
                        self.arm_retry(cx);
                    }
                }
                Effect::Archive(request) => {
                    let Some(archive) = &self.config.archive else {
                        continue;
                    };
                    if let Err(request) = archive.send(request) {
                        match request {
                            archive::Request::History { conn, id, .. } => {
                                self.unavailable(conn, id.as_ref(), cx)
                            }
                            // A sync must not be lost; a row is counted by the link.
                            sync @ archive::Request::Sync { .. } => {
                                self.archive_retry.push_back(sync);
                                self.arm_retry(cx);
                            }
                            archive::Request::Store(_) => {}
                        }
                    }
                }
            }
        }
    }

    /// Write `frame` to this worker's (active) members of `channel`, by reference.
    fn deliver(&mut self, channel: &str, frame: &PreparedFrame, cx: &mut WorkerContext<'_, Note>) {
        let f = cx.broadcast(self.members.of(channel), frame);
        PubSubCounters::add(&self.counters.deliveries, f.queued as u64);
        if f.dropped > 0 {
            PubSubCounters::add(&self.counters.dropped_slow, f.dropped as u64);
        }
    }

    /// Send a home's answer to `conn`; a `joined` makes it an active member first.
    fn reply(
        &mut self,
        conn: ConnId,
        text: &str,
        joined: Option<Arc<str>>,
        cx: &mut WorkerContext<'_, Note>,
    ) {
        if let Some(channel) = joined {
            self.members.activate(conn, &channel);
        }
        if let Err(e) = cx.send(conn, Message::Text(text)) {
            tracing::debug!(%conn, error = %e, "answer not sent");
        }
    }

    fn update_gauges(&self) {
        let f = self.hub.figures();
        let c = &self.counters;
        c.channels.store(f.channels as u64, Ordering::Relaxed);
        c.history_bytes
            .store(f.history_bytes as u64, Ordering::Relaxed);
        c.members
            .store(self.members.count() as u64, Ordering::Relaxed);
        c.presence_events
            .store(self.hub.presence_events(), Ordering::Relaxed);
        if let Some(d) = self.hub.deflate_stats() {
            c.compressed.store(d.compressed, Ordering::Relaxed);
            c.compressed_in_bytes
                .store(d.compressed_in, Ordering::Relaxed);
            c.compressed_out_bytes
                .store(d.compressed_out, Ordering::Relaxed);
        }
    }
}

/// The chat page served on `GET /` (self-contained: no external resources).
pub const CHAT_PAGE: &str = include_str!("chat.html");

impl Handler for PubSub {
    type Message = Note;

    fn on_http(
        &mut self,
        _conn: ConnId,
        request: &HttpRequest<'_>,
        _body: &[u8],
    ) -> Option<Vec<u8>> {
        let path = request.path.split('?').next().unwrap_or("");
        (request.method == "GET" && matches!(path, "/" | "/index.html"))
            .then(|| handshake::response(200, "text/html; charset=utf-8", CHAT_PAGE.as_bytes()))
    }

    fn on_open(&mut self, conn: ConnId, request: &Upgrade<'_>) -> Decision {
        let Some(verifier) = &self.config.auth else {
            return Decision::accept();
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        match auth::token_in(request.path)
            .ok_or(auth::TokenError::Missing)
            .and_then(|t| verifier.verify(t, now))
        {
            Ok(user) => {
                self.users.insert(conn, user.into());
                Decision::accept()
            }
            Err(e) => Decision::Reject {
                status: 401,
                reason: e.as_str(),
            },
        }
    }

    fn on_message(&mut self, conn: ConnId, message: Message<'_>, cx: &mut Context<'_, Note>) {
        match message {
            Message::Text(text) => {
                self.request(conn, text, &mut cx.worker());
                self.update_gauges();
            }
            Message::Binary(_) => cx.close(
                CloseCode::UNSUPPORTED_DATA,
                "pub/sub takes JSON in text frames",
            ),
        }
    }

    fn on_close(
        &mut self,
        conn: ConnId,
        _code: Option<CloseCode>,
        cx: &mut WorkerContext<'_, Note>,
    ) {
        self.buckets.remove(&conn);
        self.users.remove(&conn);
        for m in self.members.remove_all(conn) {
            self.leave(m.channel, m.user, conn, None, cx);
        }
        self.update_gauges();
    }

    fn on_post(&mut self, note: Note, cx: &mut WorkerContext<'_, Note>) {
        self.at_home(note, cx);
    }

    fn on_timer(&mut self, token: u64, cx: &mut WorkerContext<'_, Note>) {
        if token == PRESENCE_TIMER {
            self.presence_armed = false;
            let now_ms = self.now_ms(cx.now());
            let mut effects = std::mem::take(&mut self.effects);
            self.hub.flush_presence(now_ms, &mut effects);
            self.settle(effects, now_ms, cx);
            return;
        }
        if token != RETRY_TIMER {
            return;
        }
        self.retry_armed = false;
        for _ in 0..self.retry.len() {
            let Some((home, note)) = self.retry.pop_front() else {
                break;
            };
            if let Err(e) = cx.post(home, note) {
                self.retry.push_back((home, e.into_message()));
            }
        }
        if let Some(link) = &self.config.broker {
            while let Some(command) = self.broker_retry.pop_front() {
                if let Err(command) = link.send(command) {
                    self.broker_retry.push_front(command);
                    break;
                }
            }
        }
        if let Some(archive) = &self.config.archive {
            while let Some(request) = self.archive_retry.pop_front() {
                if let Err(request) = archive.send(request) {
                    self.archive_retry.push_front(request);
                    break;
                }
            }
        }
        if !self.retry.is_empty() || !self.broker_retry.is_empty() || !self.archive_retry.is_empty()
        {
            self.arm_retry(cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn homes_spread_over_workers_and_are_stable() {
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            seen[home_of(&format!("room-{i}"), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
        assert_eq!(home_of("lobby", 4), home_of("lobby", 4));
        assert_eq!(home_of("lobby", 1), 0);
    }
}
