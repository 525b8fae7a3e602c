//! A channel's home: the one place that numbers its messages, keeps its history and knows who
//! is present. Every channel has one home worker (by hash); each worker's [`Hub`] holds the
//! channels homed there.
//!
//! Presence changes go out at once, or, with [`HubLimits::presence_interval_ms`], as one net
//! change per channel and interval ([`Hub::flush_presence`]): a user who joined and left inside
//! it appears in neither list. The `users` that `joined` and `presence` answer are then as of the
//! last change sent (plus the joiner), so that a client applying later changes to them, as a
//! set, is always exact.
//!
//! With a broker (scale-out, [`super::broker`]) a hub is one node's view of its channels: the
//! broker numbers messages ([`Hub::remote`] takes them in that order, dropping repeats), a
//! channel is synced from the broker before its first join is answered ([`Hub::synced`]), and
//! presence is the union of this node's users and those the other nodes announce.
//!
//! Pure state: an operation returns [`Effect`]s (frames for the workers that have members,
//! replies for one connection) and the pub/sub handler carries them out. The hub never sees
//! sockets or mailboxes, so its rules are tested here without either.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use hioload_stack::ConnId;

use super::archive;
use super::broker::{Command, Numbered, Remote, Snapshot};
use super::protocol::{self, ErrorCode, Out, Refusal, RequestId, DEFAULT_HISTORY_LIMIT};
use crate::handler::{PreparedFrame, Preparer};

/// What bounds a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubLimits {
    /// Messages retained per channel.
    pub history_size: usize,
    /// How long a retained message is kept, in milliseconds (`None`: until pushed out).
    pub history_ttl_ms: Option<u64>,
    /// Above this many members a channel sends no presence events (`presence` requests and the
    /// `users` of `joined` still work).
    pub presence_limit: u32,
    /// Channels one hub holds at most; a join or publish that would create one more is refused
    /// with `unavailable`.
    pub max_channels: usize,
    /// Presence changes of a channel are gathered this long and sent as one net change; 0 sends
    /// each at once.
    pub presence_interval_ms: u64,
}

impl Default for HubLimits {
    fn default() -> Self {
        Self {
            history_size: 100,
            history_ttl_ms: None,
            presence_limit: 1000,
            max_channels: 100_000,
            presence_interval_ms: 0,
        }
    }
}

/// Something for the pub/sub handler to carry out.
#[derive(Debug)]
pub enum Effect {
    /// Write `frame` to every (active) member of `channel` on `worker`.
    Deliver {
        /// The worker whose members get it.
        worker: usize,
        /// The channel.
        channel: Arc<str>,
        /// The encoded frame (a `message` or a presence change).
        frame: PreparedFrame,
    },
    /// Answer `conn`'s request with `text`.
    Reply {
        /// The connection (on its worker).
        conn: ConnId,
        /// The JSON reply.
        text: String,
        /// Set on a `joined`: from now on `conn` gets `channel`'s messages.
        joined: Option<Arc<str>>,
    },
    /// Queue `command` for the broker bridge (a sync goes to the archive without a broker).
    Broker(Command),
    /// Ask the archive (with one only).
    Archive(archive::Request),
}

/// Who asked: the connection the answer goes to, and its request's id.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    /// The connection (on its worker).
    pub conn: ConnId,
    /// The request's id, echoed in the answer.
    pub id: Option<&'a RequestId>,
}

/// A join as its home sees it.
#[derive(Debug, Clone, Copy)]
pub struct Joining<'a> {
    /// The user name.
    pub user: &'a Arc<str>,
    /// Recover from this seq.
    pub since: Option<u64>,
    /// The connection is a member already: answer without counting it again.
    pub rejoin: bool,
    /// The epoch `since` counts in (with a broker).
    pub epoch: Option<&'a str>,
}

/// A join waiting for its channel's sync (with a broker).
#[derive(Debug)]
struct WaitingJoin {
    conn: ConnId,
    id: Option<RequestId>,
    user: Arc<str>,
    since: Option<u64>,
    epoch: Option<Box<str>>,
}

/// Events that arrive while a channel syncs are kept, in order, at most this many; past it the
/// channel syncs again when the snapshot arrives (the newer snapshot has them).
const MAX_EARLY_EVENTS: usize = 65_536;

/// A channel waiting for the broker's state.
#[derive(Debug, Default)]
struct Syncing {
    joins: Vec<WaitingJoin>,
    early: Vec<Remote>,
    /// Events were dropped from `early`: sync again.
    overflowed: bool,
    /// The users present (here or elsewhere) when the sync began: the snapshot's changes to
    /// them are announced when it comes (none are while the channel syncs).
    before: Vec<Arc<str>>,
}

/// A retained message: its seq, its time, and the frame its members got (the history reuses
/// the same bytes).
#[derive(Debug, Clone)]
struct Retained {
    seq: u64,
    ts_ms: u64,
    frame: PreparedFrame,
}

impl Retained {
    fn json(&self) -> &str {
        self.frame.as_text().unwrap_or("null")
    }
}

/// One channel at its home.
#[derive(Debug)]
struct Channel {
    name: Arc<str>,
    /// The last seq given (0: none yet).
    seq: u64,
    history: VecDeque<Retained>,
    /// Connections per distinct user name.
    users: HashMap<Arc<str>, u32>,
    /// Members per worker.
    per_worker: Vec<u32>,
    members: u32,
    /// Presence changes not sent yet (with a presence interval).
    pending: Option<Box<PresenceChange>>,
    /// With a broker: the epoch the seqs count in (`None` until synced).
    epoch: Option<Arc<str>>,
    /// With a broker: users present on other nodes, with those nodes.
    remote: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// With a broker: waiting for its state (joins wait; events are kept in order).
    syncing: Option<Box<Syncing>>,
    /// With a broker: numbered here while the broker was unreachable.
    diverged: bool,
    /// With a broker or an archive: its state has been read from there.
    synced: bool,
    /// With a broker: acks of this node's publishes waiting for their message, by seq.
    acks: Vec<(u64, ConnId, RequestId)>,
}

/// A channel's net presence change since the last one sent: each user in at most one list,
/// once (bounded by the channel's users).
#[derive(Debug, Default)]
struct PresenceChange {
    joined: Vec<Arc<str>>,
    left: Vec<Arc<str>>,
}

impl PresenceChange {
    /// `user` came (`joined`) or went: cancels the opposite change, else is recorded.
    fn note(&mut self, user: &Arc<str>, joined: bool) {
        let (same, opposite) = if joined {
            (&mut self.joined, &mut self.left)
        } else {
            (&mut self.left, &mut self.joined)
        };
        if let Some(i) = opposite.iter().position(|u| u == user) {
            opposite.swap_remove(i);
        } else if !same.contains(user) {
            same.push(Arc::clone(user));
        }
    }

    fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

impl Channel {
    fn new(name: Arc<str>) -> Self {
        Self {
            name,
            seq: 0,
            history: VecDeque::new(),
            users: HashMap::new(),
            per_worker: Vec::new(),
            members: 0,
            pending: None,
            epoch: None,
            remote: HashMap::new(),
            syncing: None,
            diverged: false,
            synced: false,
            acks: Vec::new(),
        }
    }

    /// Send the acks whose message has been taken in.
    fn release_acks(&mut self, out: &mut Vec<Effect>) {
        let seq = self.seq;
        self.acks.retain(|(s, conn, id)| {
            if *s > seq {
                return true;
            }
            out.push(ack(*conn, id, *s));
            false
        });
    }

    /// Whether `user` is present on this node or another.
    fn present(&self, user: &str) -> bool {
        self.users.contains_key(user) || self.remote.contains_key(user)
    }

    /// The users present here or on other nodes, each once.
    fn present_users(&self) -> Vec<Arc<str>> {
        let users = &self.users;
        users
            .keys()
            .chain(self.remote.keys().filter(|u| !users.contains_key(*u)))
            .cloned()
            .collect()
    }

    /// Distinct users present here or on other nodes.
    fn user_count(&self) -> usize {
        self.users.len()
            + self
                .remote
                .keys()
                .filter(|u| !self.users.contains_key(*u))
                .count()
    }

    /// The seq of the oldest message still retained, if any.
    fn oldest(&self) -> Option<u64> {
        self.history.front().map(|r| r.seq)
    }

    /// The users as of the last presence change sent: present now and not among the joins
    /// still to be sent, or among the leaves still to be sent.
    fn user_names(&self) -> impl Iterator<Item = &str> {
        let pending = self.pending.as_deref();
        let fresh = move |u: &Arc<str>| pending.is_some_and(|p| p.joined.contains(u));
        let users = &self.users;
        self.users
            .keys()
            .chain(self.remote.keys().filter(move |u| !users.contains_key(*u)))
            .filter(move |u| !fresh(u))
            .chain(pending.into_iter().flat_map(|p| p.left.iter()))
            .map(|u| &**u)
    }

    /// `user`'s first connection came (`joined`) or its last went: announced now to the members
    /// there are, or noted for the next net change. Returns whether a frame went out.
    fn presence_changed(
        &mut self,
        user: &Arc<str>,
        joined: bool,
        limits: &HubLimits,
        now_ms: u64,
        due: &mut VecDeque<(u64, Arc<str>)>,
        out: &mut Vec<Effect>,
    ) -> bool {
        if limits.presence_interval_ms > 0 {
            if self.members >= limits.presence_limit {
                // No events for a big channel: nothing to gather either.
                self.pending = None;
                return false;
            }
            let pending = self.pending.get_or_insert_with(|| {
                // Due one interval after its first change: each channel on its own clock, so
                // the channels' frames spread over the interval instead of leaving together.
                due.push_back((now_ms + limits.presence_interval_ms, Arc::clone(&self.name)));
                Box::default()
            });
            pending.note(user, joined);
            return false;
        }
        if self.members == 0 || self.members >= limits.presence_limit {
            return false;
        }
        let one = std::slice::from_ref(user);
        let (came, went) = if joined {
            (one, &[][..])
        } else {
            (&[][..], one)
        };
        // One user's change is too short to be worth compressing.
        let json = presence_json(&self.name, came, went);
        deliver(self, &PreparedFrame::text(&json), out);
        true
    }

    /// The workers with members.
    fn workers(&self) -> impl Iterator<Item = usize> + '_ {
        self.per_worker
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(w, _)| w)
    }
}

/// Members one [`Hub::flush_presence`] sends gathered changes to, at most (a frame each): when
/// many channels' changes fall due together, answers to requests are not held behind all of
/// their writes (on kernel sockets a write costs several microseconds).
pub const PRESENCE_FLUSH_MEMBERS: u32 = 1_000;

/// Figures of one hub.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HubFigures {
    /// Channels homed here.
    pub channels: usize,
    /// Bytes of retained messages (their JSON).
    pub history_bytes: usize,
}

/// The channels homed on one worker.
#[derive(Debug, Default)]
pub struct Hub {
    channels: HashMap<Arc<str>, Channel>,
    limits: HubLimits,
    history_bytes: usize,
    /// Presence changes sent.
    presence_events: u64,
    /// Channels whose gathered presence change waits (with a presence interval), oldest
    /// first, each with the time (ms) it is due: one entry per gathering, so bounded by the
    /// channels.
    presence_due: VecDeque<(u64, Arc<str>)>,
    /// With a broker: this node's name (its own presence events come back and are skipped).
    node: Option<Arc<str>>,
    /// Older history is in an archive; without a broker, channels sync from it.
    archive: bool,
    /// Makes the message frames (compressed once, with permessage-deflate).
    preparer: Preparer,
}

impl Hub {
    /// An empty hub with these limits.
    pub fn new(limits: HubLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// An empty hub of the node `node` in a broker-joined service: the broker numbers the
    /// messages and shares presence between the nodes.
    pub fn replicated(limits: HubLimits, node: Arc<str>) -> Self {
        Self {
            limits,
            node: Some(node),
            ..Self::default()
        }
    }

    /// Whether a broker numbers the messages.
    pub fn is_replicated(&self) -> bool {
        self.node.is_some()
    }

    /// The same hub with an archive: `history` pages reaching past the retained messages are
    /// asked of it, and without a broker a channel new here is synced from it (its seqs
    /// continue after the last stored one, its history window is filled).
    pub fn with_archive(mut self) -> Self {
        self.archive = true;
        self
    }

    /// The same hub compressing each message once as `deflate` says.
    pub fn with_deflate(mut self, deflate: Option<&hioload_wsproto::DeflateConfig>) -> Self {
        self.preparer = Preparer::new(deflate);
        self
    }

    /// Whether a channel new here is synced before it is used.
    fn sync_first(&self) -> bool {
        self.node.is_some() || self.archive
    }

    /// Channels and retained bytes.
    pub fn figures(&self) -> HubFigures {
        HubFigures {
            channels: self.channels.len(),
            history_bytes: self.history_bytes,
        }
    }

    /// Presence change frames sent so far (one per change, whatever the number of workers).
    pub fn presence_events(&self) -> u64 {
        self.presence_events
    }

    /// What the hub compressed, once per message for all members (with deflate on).
    pub fn deflate_stats(&self) -> Option<hioload_wsproto::deflate::DeflateStats> {
        self.preparer.stats()
    }

    /// `asker` joins `channel` (a rejoin answers a fresh `joined` without counting it twice).
    /// With a broker, a channel new here is synced first: the answer waits for [`Hub::synced`].
    pub fn join(
        &mut self,
        channel: &str,
        joining: Joining<'_>,
        asker: Asker<'_>,
        now_ms: u64,
        out: &mut Vec<Effect>,
    ) {
        let Joining {
            user,
            since,
            rejoin,
            epoch,
        } = joining;
        let Asker { conn, id } = asker;
        let limits = self.limits;
        let replicated = self.node.is_some();
        let sync_first = self.sync_first();
        let ch = match open(&mut self.channels, channel, limits.max_channels) {
            Ok(ch) => ch,
            Err(refusal) => {
                return out.push(Effect::Reply {
                    conn,
                    text: protocol::error(id, &refusal),
                    joined: None,
                })
            }
        };
        if sync_first && !ch.synced && ch.syncing.is_none() {
            resync(ch, out);
        }
        self.history_bytes -= expire(ch, &limits, now_ms);
        if !rejoin {
            let first = match ch.users.entry(Arc::clone(user)) {
                MapEntry::Occupied(mut e) => {
                    *e.get_mut() += 1;
                    false
                }
                MapEntry::Vacant(e) => {
                    e.insert(1);
                    true
                }
            };
            if first && replicated {
                out.push(Effect::Broker(Command::PresenceAdd {
                    channel: Arc::clone(&ch.name),
                    user: Arc::clone(user),
                }));
            }
            // Announced to the members there were before: the joiner is not counted yet, and
            // is still pending on its worker when this arrives (its `joined` comes after).
            // A user already present on another node is no news; while the channel syncs
            // nobody here is an active member to tell.
            let news = first && !ch.remote.contains_key(&**user) && ch.syncing.is_none();
            let due = &mut self.presence_due;
            if news && ch.presence_changed(user, true, &limits, now_ms, due, out) {
                self.presence_events += 1;
            }
            let worker = usize::from(conn.worker);
            if ch.per_worker.len() <= worker {
                ch.per_worker.resize(worker + 1, 0);
            }
            ch.per_worker[worker] += 1;
            ch.members += 1;
        }
        if let Some(sync) = ch.syncing.as_mut() {
            sync.joins.push(WaitingJoin {
                conn,
                id: id.cloned(),
                user: Arc::clone(user),
                since,
                epoch: epoch.map(Into::into),
            });
            return;
        }
        out.push(joined_reply(ch, &limits, user, (since, epoch), asker));
    }

    /// `conn` (as `user`) left `channel` or closed at `now_ms`; answers `left` when `reply`.
    pub fn leave(
        &mut self,
        channel: &str,
        user: &str,
        conn: ConnId,
        reply: Option<Option<&RequestId>>,
        now_ms: u64,
        out: &mut Vec<Effect>,
    ) {
        let replicated = self.node.is_some();
        if let Some(ch) = self.channels.get_mut(channel) {
            let worker = usize::from(conn.worker);
            if let Some(n) = ch.per_worker.get_mut(worker).filter(|n| **n > 0) {
                *n -= 1;
                ch.members -= 1;
                // The user's last connection: its name as the channel held it.
                let gone = match ch.users.get_mut(user) {
                    Some(c) if *c > 1 => {
                        *c -= 1;
                        None
                    }
                    Some(_) => ch.users.remove_entry(user).map(|(name, _)| name),
                    None => None,
                };
                if let Some(user) = gone {
                    if replicated {
                        out.push(Effect::Broker(Command::PresenceRemove {
                            channel: Arc::clone(&ch.name),
                            user: Arc::clone(&user),
                        }));
                    }
                    let limits = self.limits;
                    let due = &mut self.presence_due;
                    let news = !ch.remote.contains_key(&user) && ch.syncing.is_none();
                    if news && ch.presence_changed(&user, false, &limits, now_ms, due, out) {
                        self.presence_events += 1;
                    }
                }
            }
            if let Some(sync) = ch.syncing.as_mut() {
                sync.joins.retain(|j| j.conn != conn);
            }
            // Nobody is left to tell of what was gathered. With a broker the history stays
            // there, and this node stops receiving the channel.
            if ch.members == 0 && (replicated || ch.history.is_empty()) {
                if let Some(ch) = self.channels.remove(channel) {
                    self.history_bytes -= history_bytes(&ch);
                    if replicated {
                        out.push(Effect::Broker(Command::Unsubscribe { channel: ch.name }));
                    }
                }
            }
        }
        if let Some(id) = reply {
            out.push(Effect::Reply {
                conn,
                text: Out::new("left", id).str("channel", channel).finish(),
                joined: None,
            });
        }
    }

    /// `user` publishes `text` to `channel`: numbered, retained, and delivered to every worker
    /// with members. Answers `ack` to `from` when it gave an id. Returns the seq, or why the
    /// channel could not take it. With a broker this is only for when the broker is
    /// unreachable: the channel is numbered here and marked diverged (a channel without
    /// members on this node is refused).
    pub fn publish(
        &mut self,
        channel: &str,
        user: &str,
        text: &str,
        from: Option<Asker<'_>>,
        now_ms: u64,
        out: &mut Vec<Effect>,
    ) -> Result<u64, Refusal> {
        let limits = self.limits;
        let unknown = self.node.is_some() && !self.channels.contains_key(channel);
        let opened = if unknown {
            Err(Refusal::new(
                ErrorCode::Unavailable,
                "the broker is unreachable and the channel has no members on this node",
            ))
        } else {
            open(&mut self.channels, channel, limits.max_channels)
        };
        // Without a broker, a channel's seqs continue after the archive's: not numbered
        // before it has been read from there.
        let opened = opened.and_then(|ch| {
            if self.node.is_none() && self.archive && !ch.synced {
                if ch.syncing.is_none() {
                    resync(ch, out);
                }
                Err(Refusal::new(
                    ErrorCode::Unavailable,
                    "the channel's history is loading from the archive; try again",
                ))
            } else {
                Ok(ch)
            }
        });
        let ch = match opened {
            Ok(ch) => ch,
            Err(refusal) => {
                if let Some(Asker { conn, id }) = from {
                    out.push(Effect::Reply {
                        conn,
                        text: protocol::error(id, &refusal),
                        joined: None,
                    });
                }
                return Err(refusal);
            }
        };
        let freed = expire(ch, &limits, now_ms);
        ch.seq += 1;
        ch.diverged = self.node.is_some();
        let seq = ch.seq;
        let frame = self
            .preparer
            .text(&protocol::message(&ch.name, user, text, seq, now_ms));
        deliver(ch, &frame, out);
        self.history_bytes += keep(ch, &limits, seq, now_ms, frame);
        self.history_bytes -= freed + trim(ch, &limits);
        if let Some(Asker { conn, id: Some(id) }) = from {
            out.push(ack(conn, id, seq));
        }
        // A channel published to through the API without members keeps its history; without
        // history it is gone again.
        if ch.members == 0 && ch.history.is_empty() {
            self.channels.remove(channel);
        }
        Ok(seq)
    }

    /// Answer a `history` request: the newest `limit` retained messages below `before`.
    pub fn history(
        &mut self,
        channel: &str,
        (limit, before): (usize, Option<u64>),
        Asker { conn, id }: Asker<'_>,
        now_ms: u64,
        out: &mut Vec<Effect>,
    ) {
        let limits = self.limits;
        let mut reply = Out::new("history", id).str("channel", channel);
        let archive = self.archive;
        if let Some(ch) = self.channels.get_mut(channel) {
            self.history_bytes -= expire(ch, &limits, now_ms);
            let end = match before {
                Some(b) => ch.history.partition_point(|r| r.seq < b),
                None => ch.history.len(),
            };
            let start = end.saturating_sub(limit);
            let found = end - start;
            // Below the page's oldest (or the asked bound, if the window has none below it):
            // with an archive, a page the window cannot fill continues there, unless it has
            // reached seq 1.
            let bound = match ch.history.get(start).filter(|_| found > 0) {
                Some(r) => r.seq,
                None => before.unwrap_or(u64::MAX).min(ch.seq + 1),
            };
            if archive && found < limit && bound > 1 {
                let newer = ch.history.range(start..end);
                out.push(Effect::Archive(archive::Request::History {
                    channel: channel.into(),
                    before: bound,
                    limit: limit - found,
                    conn,
                    id: id.cloned(),
                    newer: newer.map(|r| r.json().to_string()).collect(),
                }));
                return;
            }
            reply = reply.raw_array("messages", ch.history.range(start..end).map(Retained::json));
        } else {
            reply = reply.raw_array("messages", []);
        }
        out.push(Effect::Reply {
            conn,
            text: reply.finish(),
            joined: None,
        });
    }

    /// Answer a `presence` request.
    pub fn presence(&self, channel: &str, Asker { conn, id }: Asker<'_>, out: &mut Vec<Effect>) {
        let reply = Out::new("presence", id).str("channel", channel);
        let reply = match self.channels.get(channel) {
            Some(ch) => reply.strs("users", ch.user_names()),
            None => reply.strs("users", []),
        };
        out.push(Effect::Reply {
            conn,
            text: reply.finish(),
            joined: None,
        });
    }

    /// The distinct users of `channel` (empty if it does not exist), as `presence` answers.
    pub fn users(&self, channel: &str) -> Vec<Arc<str>> {
        self.channels
            .get(channel)
            .map(|ch| ch.user_names().map(Arc::from).collect())
            .unwrap_or_default()
    }

    /// When (ms) the first gathered presence change is due for [`Hub::flush_presence`], if one
    /// waits.
    pub fn presence_due(&self) -> Option<u64> {
        self.presence_due.front().map(|(at, _)| *at)
    }

    /// Send the gathered presence changes due by `now_ms`, as one frame per channel with
    /// `joined` and `left` (whichever is not empty), to the members there are now; at most
    /// [`PRESENCE_FLUSH_MEMBERS`] members' worth per call (the rest stay due: call again).
    pub fn flush_presence(&mut self, now_ms: u64, out: &mut Vec<Effect>) {
        let mut members = 0;
        while members < PRESENCE_FLUSH_MEMBERS && self.presence_due().is_some_and(|at| at <= now_ms)
        {
            let Some((_, name)) = self.presence_due.pop_front() else {
                break;
            };
            // A channel removed (or removed and made again) since: nothing, or its own news.
            let Some(ch) = self.channels.get_mut(&name) else {
                continue;
            };
            let Some(change) = ch.pending.take().filter(|c| !c.is_empty()) else {
                continue;
            };
            if ch.members == 0 || ch.members >= self.limits.presence_limit {
                continue;
            }
            self.presence_events += 1;
            members += ch.members;
            // A gathered change can list many users: compressed like a message.
            let json = presence_json(&ch.name, &change.joined, &change.left);
            deliver(ch, &self.preparer.text(&json), out);
        }
    }

    /// The broker's state of `channel` (after its sync): take its seq, epoch, history and the
    /// other nodes' users, answer the joins that waited, then the events that came meanwhile.
    /// Messages this node's members have not seen are delivered; presence changes a resync
    /// finds are announced. A degraded snapshot (the broker was unreachable: it is this
    /// node's own) keeps the channel marked diverged.
    pub fn synced(&mut self, channel: &str, snap: Snapshot, now_ms: u64, out: &mut Vec<Effect>) {
        let limits = self.limits;
        if !self.sync_first() {
            return;
        }
        let node = self.node.clone();
        let Some(ch) = self.channels.get_mut(channel) else {
            return; // everyone here left meanwhile
        };
        let Some(sync) = ch.syncing.take() else {
            return; // an answer to a sync already answered
        };
        let first = !ch.synced;
        ch.synced = true;
        // Without a broker there are no epochs: the archive continues this node's numbering.
        let same_epoch = node.is_none() || ch.epoch.as_deref() == Some(&*snap.epoch);
        let mut freed = 0;
        if !same_epoch {
            // Another epoch: the broker's history replaces this node's.
            freed += ch
                .history
                .drain(..)
                .map(|r| r.frame.payload_len())
                .sum::<usize>();
        }
        let mut added = 0;
        let seen = ch.seq;
        for m in snap.history {
            if same_epoch && m.seq <= seen {
                continue;
            }
            let json = protocol::message(&ch.name, &m.user, &m.text, m.seq, m.ts_ms);
            let frame = self.preparer.text(&json);
            if m.seq > seen && !first {
                deliver(ch, &frame, out);
            }
            added += keep(ch, &limits, m.seq, m.ts_ms, frame);
        }
        self.history_bytes += added;
        self.history_bytes -= freed + trim(ch, &limits) + expire(ch, &limits, now_ms);
        ch.seq = ch.seq.max(snap.seq);
        if node.is_some() {
            ch.epoch = Some(snap.epoch);
        }
        // Numbering done here is settled by a new epoch; if the epoch is the same, this node
        // numbered after asking, and the next sync settles it.
        ch.diverged = node.is_some() && (snap.degraded || (ch.diverged && same_epoch));
        // The other nodes' users, and what changed for this node's members since the sync
        // began (this node's own arrivals meanwhile included).
        ch.remote.clear();
        for (n, user) in snap.presence {
            if Some(&n) != node.as_ref() {
                let nodes = ch.remote.entry(user).or_default();
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
        let before = &sync.before;
        let gone: Vec<Arc<str>> = before.iter().filter(|u| !ch.present(u)).cloned().collect();
        let mut came = ch.present_users();
        came.retain(|u| !before.contains(u));
        let due = &mut self.presence_due;
        for (users, joined) in [(came, true), (gone, false)] {
            for u in users {
                if ch.presence_changed(&u, joined, &limits, now_ms, due, out) {
                    self.presence_events += 1;
                }
            }
        }
        ch.release_acks(out);
        for j in &sync.joins {
            let asker = Asker {
                conn: j.conn,
                id: j.id.as_ref(),
            };
            let since = (j.since, j.epoch.as_deref());
            out.push(joined_reply(ch, &limits, &j.user, since, asker));
        }
        if sync.overflowed {
            resync(ch, out);
            return;
        }
        for event in sync.early {
            self.remote(channel, event, now_ms, out);
        }
    }

    /// An event from the broker for `channel`: a message (numbered there, from any node) or
    /// another node's presence change. Kept in order while the channel syncs; a message
    /// already seen is dropped; a gap or another epoch makes the channel sync again. Returns
    /// whether a message was delivered.
    pub fn remote(
        &mut self,
        channel: &str,
        event: Remote,
        now_ms: u64,
        out: &mut Vec<Effect>,
    ) -> bool {
        let limits = self.limits;
        let Some(node) = self.node.as_ref() else {
            return false;
        };
        let Some(ch) = self.channels.get_mut(channel) else {
            if let Remote::Published { seq, conn, id } = event {
                // The publisher left the channel meanwhile: acked all the same.
                out.push(ack(conn, &id, seq));
            }
            return false; // no members here (any more): not this node's concern
        };
        if let Some(sync) = ch.syncing.as_mut() {
            if sync.early.len() < MAX_EARLY_EVENTS {
                sync.early.push(event);
            } else {
                sync.overflowed = true;
            }
            return false;
        }
        match event {
            // Numbered here while the broker was away: the sync after the bridge reconnects
            // settles the channel in a new epoch.
            Remote::Synced(_) | Remote::Message { .. } if ch.diverged => false,
            Remote::Synced(_) => false,
            Remote::Message { epoch, message } => {
                if message.seq <= ch.seq && ch.epoch.as_deref() == Some(&*epoch) {
                    return false; // seen already
                }
                if message.seq != ch.seq + 1 || ch.epoch.as_deref() != Some(&*epoch) {
                    resync(ch, out);
                    if let Some(sync) = ch.syncing.as_mut() {
                        sync.early.push(Remote::Message { epoch, message });
                    }
                    return false;
                }
                let Numbered {
                    seq,
                    ts_ms,
                    user,
                    text,
                } = message;
                ch.seq = seq;
                let json = protocol::message(&ch.name, &user, &text, seq, ts_ms);
                let frame = self.preparer.text(&json);
                deliver(ch, &frame, out);
                let freed = expire(ch, &limits, now_ms);
                self.history_bytes += keep(ch, &limits, seq, ts_ms, frame);
                self.history_bytes -= freed + trim(ch, &limits);
                ch.release_acks(out);
                true
            }
            Remote::Published { seq, conn, id } => {
                // Bounded by the publishes in flight; past a generous cap, acked at once.
                ch.acks.push((seq, conn, id));
                if ch.acks.len() > MAX_EARLY_EVENTS {
                    for (s, conn, id) in ch.acks.drain(..) {
                        out.push(ack(conn, &id, s));
                    }
                }
                ch.release_acks(out);
                false
            }
            Remote::Joined { node: n, user } => {
                if n == *node {
                    return false; // this node's own, applied already
                }
                let was = ch.present(&user);
                let nodes = ch.remote.entry(Arc::clone(&user)).or_default();
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
                let due = &mut self.presence_due;
                if !was && ch.presence_changed(&user, true, &limits, now_ms, due, out) {
                    self.presence_events += 1;
                }
                false
            }
            Remote::Left { node: n, user } => {
                if n == *node {
                    return false;
                }
                let Some(nodes) = ch.remote.get_mut(&user) else {
                    return false;
                };
                nodes.retain(|x| *x != n);
                if nodes.is_empty() {
                    ch.remote.remove(&user);
                }
                let due = &mut self.presence_due;
                if !ch.present(&user)
                    && ch.presence_changed(&user, false, &limits, now_ms, due, out)
                {
                    self.presence_events += 1;
                }
                false
            }
        }
    }

    /// Sync every channel again (the bridge reconnected: events may have been missed, and
    /// channels numbered here meanwhile need a new epoch).
    pub fn resync_all(&mut self, out: &mut Vec<Effect>) {
        for ch in self.channels.values_mut() {
            resync(ch, out);
        }
    }

    /// Every channel homed here with its member count.
    pub fn channel_list(&self) -> impl Iterator<Item = (&str, u32)> {
        self.channels.values().map(|c| (&*c.name, c.members))
    }
}

/// The `ack` of message `seq` to `conn`'s request `id`.
fn ack(conn: ConnId, id: &RequestId, seq: u64) -> Effect {
    Effect::Reply {
        conn,
        text: Out::new("ack", Some(id)).num("seq", seq).finish(),
        joined: None,
    }
}

/// The `joined` answer to a join of `user` (recovering from `since` in `epoch`, if given).
fn joined_reply(
    ch: &Channel,
    limits: &HubLimits,
    user: &Arc<str>,
    (since, epoch): (Option<u64>, Option<&str>),
    Asker { conn, id }: Asker<'_>,
) -> Effect {
    // A big channel's `joined` lists `presence_limit` users and says how many there are
    // (every join listing every user would cost O(members²) bytes); `presence` lists all.
    // The joiner is listed even while its own arrival waits to be sent.
    // (It is missing from them exactly when its arrival is among the joins not yet sent.)
    let unsent = |p: &PresenceChange| p.joined.contains(user);
    let joiner = ch.pending.as_deref().is_some_and(unsent).then_some(&**user);
    let mut reply = Out::new("joined", id).str("channel", &ch.name).strs(
        "users",
        joiner
            .into_iter()
            .chain(ch.user_names())
            .take(limits.presence_limit as usize),
    );
    let count = ch.user_count();
    if count > limits.presence_limit as usize {
        reply = reply.num("user_count", count as u64);
    }
    reply = match since {
        Some(since) => {
            // `since` from another epoch counts in a history that is gone: nothing of it can
            // be recovered, and everything retained is news.
            let same_epoch = match (epoch, ch.epoch.as_deref()) {
                (Some(theirs), Some(ours)) => theirs == ours,
                _ => true,
            };
            let after = if same_epoch { since } else { 0 };
            // Nothing in (since, seq] is lost when the oldest retained message follows
            // `since` directly (or there is nothing after it to lose).
            let recovered = same_epoch
                && since <= ch.seq
                && (since == ch.seq || ch.oldest().is_some_and(|o| o <= since + 1));
            reply
                .raw_array(
                    "history",
                    ch.history
                        .iter()
                        .filter(|r| r.seq > after)
                        .map(Retained::json),
                )
                .bool("recovered", recovered)
        }
        None => {
            let skip = ch.history.len().saturating_sub(DEFAULT_HISTORY_LIMIT);
            reply.raw_array("history", ch.history.iter().skip(skip).map(Retained::json))
        }
    };
    if let Some(epoch) = &ch.epoch {
        reply = reply.str("epoch", epoch);
    }
    Effect::Reply {
        conn,
        text: reply.num("seq", ch.seq).finish(),
        joined: Some(Arc::clone(&ch.name)),
    }
}

/// Retain `frame` (message `seq` of `ts_ms`) if the channel keeps history; returns the bytes
/// added ([`trim`] pushes out the oldest over the cap).
fn keep(ch: &mut Channel, limits: &HubLimits, seq: u64, ts_ms: u64, frame: PreparedFrame) -> usize {
    if limits.history_size == 0 {
        return 0;
    }
    let added = frame.payload_len();
    // Replies quote retained messages as text: their compressed encoding is not kept.
    let frame = frame.uncompressed();
    ch.history.push_back(Retained { seq, ts_ms, frame });
    added
}

/// Drop the oldest retained messages over the history size; returns the bytes freed.
fn trim(ch: &mut Channel, limits: &HubLimits) -> usize {
    let mut freed = 0;
    while ch.history.len() > limits.history_size {
        if let Some(old) = ch.history.pop_front() {
            freed += old.frame.payload_len();
        }
    }
    freed
}

/// Ask the broker for `ch`'s state again (events wait until it comes).
fn resync(ch: &mut Channel, out: &mut Vec<Effect>) {
    if ch.syncing.is_none() {
        let before = ch.present_users();
        ch.syncing = Some(Box::new(Syncing {
            before,
            ..Syncing::default()
        }));
    }
    out.push(Effect::Broker(Command::Sync {
        channel: Arc::clone(&ch.name),
        min_seq: ch.seq,
        epoch: ch.epoch.clone(),
        diverged: ch.diverged,
    }));
}

/// Bytes of `ch`'s retained messages.
fn history_bytes(ch: &Channel) -> usize {
    ch.history.iter().map(|r| r.frame.payload_len()).sum()
}

/// The channel `name`, created if there is room for one more.
fn open<'a>(
    channels: &'a mut HashMap<Arc<str>, Channel>,
    name: &str,
    max: usize,
) -> Result<&'a mut Channel, Refusal> {
    // A lookup by &str first: the common case (the channel exists) allocates nothing.
    if !channels.contains_key(name) {
        if channels.len() >= max {
            return Err(Refusal::new(
                ErrorCode::Unavailable,
                "the appliance holds as many channels as it may",
            ));
        }
        let name: Arc<str> = name.into();
        return Ok(channels
            .entry(Arc::clone(&name))
            .or_insert_with(|| Channel::new(name)));
    }
    channels
        .get_mut(name)
        .ok_or(Refusal::new(ErrorCode::Unavailable, "channel vanished"))
}

/// The JSON of a `presence` frame for `channel` with the lists that are not empty.
fn presence_json(channel: &str, joined: &[Arc<str>], left: &[Arc<str>]) -> String {
    let mut frame = Out::new("presence", None).str("channel", channel);
    for (key, users) in [("joined", joined), ("left", left)] {
        if !users.is_empty() {
            frame = frame.strs(key, users.iter().map(|u| &**u));
        }
    }
    frame.finish()
}

/// Frames for every worker with members of `ch`.
fn deliver(ch: &Channel, frame: &PreparedFrame, out: &mut Vec<Effect>) {
    for worker in ch.workers() {
        out.push(Effect::Deliver {
            worker,
            channel: Arc::clone(&ch.name),
            frame: frame.clone(),
        });
    }
}

/// Drop retained messages older than the TTL; returns the bytes freed.
fn expire(ch: &mut Channel, limits: &HubLimits, now_ms: u64) -> usize {
    let Some(ttl) = limits.history_ttl_ms else {
        return 0;
    };
    let mut freed = 0;
    while ch
        .history
        .front()
        .is_some_and(|r| r.ts_ms.saturating_add(ttl) < now_ms)
    {
        if let Some(old) = ch.history.pop_front() {
            freed += old.frame.payload_len();
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn conn(worker: u16, slot: u32) -> ConnId {
        ConnId {
            worker,
            slot,
            generation: 0,
        }
    }

    fn ask(conn: ConnId) -> Asker<'static> {
        Asker { conn, id: None }
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("valid JSON")
    }

    fn replies(out: &mut Vec<Effect>) -> Vec<(ConnId, Value)> {
        out.drain(..)
            .filter_map(|e| match e {
                Effect::Reply { conn, text, .. } => Some((conn, json(&text))),
                _ => None,
            })
            .collect()
    }

    fn delivered(out: &[Effect]) -> Vec<(usize, Value)> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Deliver { worker, frame, .. } => {
                    Some((*worker, json(frame.as_text().expect("text"))))
                }
                _ => None,
            })
            .collect()
    }

    fn join(hub: &mut Hub, c: ConnId, user: &str, since: Option<u64>) -> Vec<Effect> {
        let mut out = Vec::new();
        let user = Arc::from(user);
        let joining = Joining {
            user: &user,
            since,
            rejoin: false,
            epoch: None,
        };
        hub.join("room", joining, ask(c), 0, &mut out);
        out
    }

    fn publish(hub: &mut Hub, n: usize, now_ms: u64) {
        let mut out = Vec::new();
        for i in 0..n {
            hub.publish("room", "ann", &format!("m{i}"), None, now_ms, &mut out)
                .expect("published");
        }
    }

    #[test]
    fn with_deflate_a_message_is_compressed_once_for_every_worker() {
        let config = hioload_wsproto::DeflateConfig::default();
        let mut hub = Hub::new(HubLimits::default()).with_deflate(Some(&config));
        for w in 0..3 {
            join(&mut hub, conn(w, 1), &format!("u{w}"), None);
        }
        let text = "a chat message long enough to be worth compressing, ".repeat(4);
        let mut out = Vec::new();
        hub.publish("room", "ann", &text, None, 5, &mut out)
            .expect("published");
        let frames: Vec<&PreparedFrame> = out
            .iter()
            .filter_map(|e| match e {
                Effect::Deliver { frame, .. } => Some(frame),
                _ => None,
            })
            .collect();
        assert_eq!(frames.len(), 3, "one delivery per worker");
        let deflated = frames[0].for_tag(15).0;
        assert_ne!(deflated, frames[0].bytes(), "a compressed encoding exists");
        assert!(deflated.len() < frames[0].len());
        for f in &frames {
            assert_eq!(
                f.for_tag(15).0.as_bytes().as_ptr(),
                deflated.as_bytes().as_ptr()
            );
            assert_eq!(
                f.for_tag(0).0,
                f.bytes(),
                "sessions without deflate take the plain one"
            );
            assert_eq!(
                f.for_tag(12).0,
                f.bytes(),
                "nor do those with a smaller window"
            );
        }
        let stats = hub.preparer.stats().expect("deflate on");
        assert_eq!((stats.compressed, stats.sent_plain), (1, 0));
        // The history keeps the text only.
        let kept = &hub.channels["room"].history[0].frame;
        assert!(!kept.is_deflated());
    }

    #[test]
    fn messages_are_numbered_and_go_to_every_worker_with_members() {
        let mut hub = Hub::new(HubLimits::default());
        join(&mut hub, conn(0, 1), "ann", None);
        join(&mut hub, conn(2, 1), "bob", None);
        let mut out = Vec::new();
        let id = crate::pubsub::protocol::parse(r#"{"type":"x","id":9}"#).id;
        let seq = hub
            .publish(
                "room",
                "ann",
                "hi",
                Some(Asker {
                    conn: conn(0, 1),
                    id: id.as_ref(),
                }),
                5,
                &mut out,
            )
            .expect("published");
        assert_eq!(seq, 1);
        let d = delivered(&out);
        assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(d[0].1["seq"], 1);
        assert_eq!(d[0].1["text"], "hi");
        assert_eq!(d[0].1["ts"], 5);
        let r = replies(&mut out);
        assert_eq!(r, [(conn(0, 1), json(r#"{"type":"ack","id":9,"seq":1}"#))]);
        hub.publish("room", "ann", "again", None, 6, &mut out)
            .expect("published");
        assert_eq!(delivered(&out)[0].1["seq"], 2);
        assert!(replies(&mut out).is_empty(), "no ack without an id");
    }

    #[test]
    fn joined_carries_users_history_and_seq() {
        let mut hub = Hub::new(HubLimits::default());
        join(&mut hub, conn(0, 1), "ann", None);
        publish(&mut hub, 60, 1);
        let mut out = join(&mut hub, conn(1, 7), "bob", None);
        let d = delivered(&out);
        assert_eq!(d.len(), 1, "one presence change, for ann's worker");
        assert_eq!(
            d[0].1,
            json(r#"{"type":"presence","channel":"room","joined":["bob"]}"#)
        );
        let r = replies(&mut out);
        let (to, joined) = &r[0];
        assert_eq!(*to, conn(1, 7));
        assert_eq!(joined["seq"], 60);
        let mut users: Vec<_> = joined["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u.as_str().expect("str").to_string())
            .collect();
        users.sort();
        assert_eq!(users, ["ann", "bob"]);
        let h = joined["history"].as_array().expect("history");
        assert_eq!(h.len(), 50, "the last 50");
        assert_eq!(h[0]["seq"], 11);
        assert_eq!(h[49]["seq"], 60);
        assert!(joined.get("recovered").is_none());
    }

    #[test]
    fn recovery_inside_and_beyond_the_window() {
        let mut hub = Hub::new(HubLimits {
            history_size: 10,
            ..HubLimits::default()
        });
        join(&mut hub, conn(0, 1), "ann", None);
        publish(&mut hub, 25, 1); // retained: 16..=25
        let case = |hub: &mut Hub, since| {
            let mut out = Vec::new();
            let ann = Arc::from("ann");
            let joining = Joining {
                user: &ann,
                since: Some(since),
                rejoin: true,
                epoch: None,
            };
            hub.join("room", joining, ask(conn(0, 1)), 1, &mut out);
            replies(&mut out).remove(0).1
        };
        let j = case(&mut hub, 20);
        assert_eq!(j["recovered"], true);
        let seqs: Vec<_> = j["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(seqs, [21, 22, 23, 24, 25]);
        assert_eq!(case(&mut hub, 15)["recovered"], true, "16 is retained");
        let j = case(&mut hub, 14);
        assert_eq!(j["recovered"], false, "15 is lost");
        assert_eq!(j["history"].as_array().map(Vec::len), Some(10));
        let j = case(&mut hub, 25);
        assert_eq!(j["recovered"], true);
        assert_eq!(j["history"], json("[]"));
        assert_eq!(
            case(&mut hub, 99)["recovered"],
            false,
            "a seq from the future"
        );
        // A rejoin does not count the member twice.
        assert_eq!(hub.users("room").len(), 1);
        let mut out = Vec::new();
        hub.leave("room", "ann", conn(0, 1), None, 0, &mut out);
        assert_eq!(hub.figures().channels, 1, "history keeps the channel");
        assert!(delivered(&out).is_empty());
    }

    #[test]
    fn presence_is_per_user_not_per_connection() {
        let mut hub = Hub::new(HubLimits::default());
        join(&mut hub, conn(0, 1), "ann", None);
        join(&mut hub, conn(0, 2), "bob", None);
        let out = join(&mut hub, conn(1, 2), "bob", None);
        assert!(delivered(&out).is_empty(), "bob's second connection");
        let mut out = Vec::new();
        hub.leave("room", "bob", conn(0, 2), None, 0, &mut out);
        assert!(delivered(&out).is_empty(), "bob is still there");
        hub.leave("room", "bob", conn(1, 2), None, 0, &mut out);
        let d = delivered(&out);
        assert_eq!(d.len(), 1, "only ann's worker has members");
        assert_eq!(
            d[0].1,
            json(r#"{"type":"presence","channel":"room","left":["bob"]}"#)
        );
        assert_eq!(hub.users("room"), [Arc::<str>::from("ann")]);
        hub.leave("room", "ann", conn(0, 1), Some(None), 0, &mut out);
        assert_eq!(
            replies(&mut out),
            [(conn(0, 1), json(r#"{"type":"left","channel":"room"}"#))]
        );
        assert_eq!(hub.figures().channels, 0, "empty and without history");
    }

    fn gathering(interval_ms: u64) -> Hub {
        Hub::new(HubLimits {
            presence_interval_ms: interval_ms,
            ..HubLimits::default()
        })
    }

    fn leave(hub: &mut Hub, c: ConnId, user: &str) -> Vec<Effect> {
        let mut out = Vec::new();
        hub.leave("room", user, c, None, 0, &mut out);
        out
    }

    fn flush(hub: &mut Hub) -> Vec<(usize, Value)> {
        let mut out = Vec::new();
        hub.flush_presence(u64::MAX, &mut out);
        delivered(&out)
    }

    #[test]
    fn gathered_presence_goes_out_as_one_net_change_per_interval() {
        let mut hub = gathering(100);
        assert!(delivered(&join(&mut hub, conn(0, 1), "ann", None)).is_empty());
        let out = join(&mut hub, conn(1, 2), "bob", None);
        assert!(delivered(&out).is_empty(), "gathered, not sent");
        assert!(hub.presence_due().is_some());
        // Bob's view is as of the last change sent (none yet), plus himself: the change that
        // follows adds ann.
        let mut out = out;
        let reply = &replies(&mut out)[0].1;
        assert_eq!(reply["users"], json(r#"["bob"]"#));
        let d = flush(&mut hub);
        assert_eq!(d.len(), 2, "one frame per worker with members");
        assert_eq!(
            d[0].1,
            json(r#"{"type":"presence","channel":"room","joined":["ann","bob"]}"#)
        );
        assert!(hub.presence_due().is_none());
        assert!(flush(&mut hub).is_empty(), "nothing new, nothing sent");
        // Carl comes and goes inside one interval: nobody hears of him. Bob goes.
        join(&mut hub, conn(0, 3), "carl", None);
        leave(&mut hub, conn(0, 3), "carl");
        leave(&mut hub, conn(1, 2), "bob");
        let d = flush(&mut hub);
        assert_eq!(d.len(), 1, "only ann's worker has members now");
        assert_eq!(
            d[0].1,
            json(r#"{"type":"presence","channel":"room","left":["bob"]}"#)
        );
        // Dan comes; ann goes and comes back (the channel kept by dan): one change.
        join(&mut hub, conn(0, 4), "dan", None);
        leave(&mut hub, conn(0, 1), "ann");
        join(&mut hub, conn(0, 1), "ann", None);
        let d = flush(&mut hub);
        assert_eq!(
            d[0].1,
            json(r#"{"type":"presence","channel":"room","joined":["dan"]}"#)
        );
        assert_eq!(hub.presence_events(), 3);
    }

    #[test]
    fn each_channel_sends_its_gathered_change_one_interval_after_its_first() {
        // With one clock for all, every channel's frames would leave in one burst per
        // interval (thousands of writes in one loop iteration); each channel keeps its own.
        let mut hub = gathering(100);
        let mut out = Vec::new();
        let mut arrive = |hub: &mut Hub, channel: &str, user: &str, slot: u32, at: u64| {
            let user = Arc::from(user);
            let joining = Joining {
                user: &user,
                since: None,
                rejoin: false,
                epoch: None,
            };
            hub.join(channel, joining, ask(conn(0, slot)), at, &mut out);
        };
        arrive(&mut hub, "a", "ann", 1, 0);
        arrive(&mut hub, "b", "bob", 2, 60);
        arrive(&mut hub, "a", "amy", 3, 90); // gathered with ann's
        assert_eq!(hub.presence_due(), Some(100));
        let sent = |hub: &mut Hub, at: u64| -> Vec<Value> {
            let mut out = Vec::new();
            hub.flush_presence(at, &mut out);
            delivered(&out).into_iter().map(|(_, v)| v).collect()
        };
        assert!(sent(&mut hub, 99).is_empty(), "nothing is due before 100");
        assert_eq!(
            sent(&mut hub, 100),
            [json(
                r#"{"type":"presence","channel":"a","joined":["ann","amy"]}"#
            )]
        );
        assert_eq!(
            hub.presence_due(),
            Some(160),
            "b's change waits for its own time"
        );
        hub.leave("a", "ann", conn(0, 1), None, 120, &mut Vec::new());
        assert_eq!(
            sent(&mut hub, 160),
            [json(
                r#"{"type":"presence","channel":"b","joined":["bob"]}"#
            )]
        );
        assert_eq!(
            hub.presence_due(),
            Some(220),
            "a's next change: 100 ms after the leave"
        );
        assert_eq!(
            sent(&mut hub, 220),
            [json(r#"{"type":"presence","channel":"a","left":["ann"]}"#)]
        );
        assert_eq!(hub.presence_due(), None);
    }

    #[test]
    fn changes_falling_due_together_go_out_a_bounded_number_of_members_at_a_time() {
        // 30 channels of 50 members, every one's change due at once: a flush writes to at
        // most PRESENCE_FLUSH_MEMBERS members (whole channels), the next one goes on.
        let mut hub = gathering(100);
        let mut out = Vec::new();
        for c in 0..30u32 {
            let channel = format!("ch{c}");
            for m in 0..50u32 {
                let user: Arc<str> = Arc::from(format!("u{m}").as_str());
                let joining = Joining {
                    user: &user,
                    since: None,
                    rejoin: false,
                    epoch: None,
                };
                hub.join(&channel, joining, ask(conn(0, c * 50 + m)), 0, &mut out);
            }
        }
        let mut flushes = Vec::new();
        while hub.presence_due().is_some() {
            let mut out = Vec::new();
            hub.flush_presence(100, &mut out);
            flushes.push(delivered(&out).len());
            assert!(flushes.len() <= 30, "every flush sends something");
        }
        let per_flush = (PRESENCE_FLUSH_MEMBERS / 50) as usize;
        assert_eq!(flushes, [per_flush, 30 - per_flush], "channels per flush");
        assert_eq!(hub.presence_events(), 30);
    }

    #[test]
    fn members_applying_gathered_changes_to_their_view_always_see_who_is_there() {
        use std::collections::{BTreeSet, HashMap as Map};
        // Random joins and leaves of 5 users over 2 connections each, changes sent at random
        // moments. Every member starts from its `joined` users and applies each presence frame
        // as a set (add `joined`, remove `left`); after each sending, every view must equal the
        // users present.
        for seed in 1..=200u64 {
            let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let mut next = |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            let mut hub = gathering(50);
            let mut views: Map<ConnId, BTreeSet<String>> = Map::new();
            let present = |hub: &Hub| -> BTreeSet<String> {
                hub.channels
                    .get("room")
                    .map(|ch| ch.users.keys().map(|u| u.to_string()).collect())
                    .unwrap_or_default()
            };
            for step in 0..300 {
                let (u, k) = (next(5), next(2) as u32);
                let c = conn((k % 2) as u16, u as u32 * 2 + k);
                let user = format!("u{u}");
                if next(4) == 0 {
                    // A frame goes to each worker with members: apply one of them.
                    if let Some((_, frame)) = flush(&mut hub).into_iter().next() {
                        for view in views.values_mut() {
                            for name in frame["joined"].as_array().into_iter().flatten() {
                                view.insert(name.as_str().unwrap_or_default().to_string());
                            }
                            for name in frame["left"].as_array().into_iter().flatten() {
                                view.remove(name.as_str().unwrap_or_default());
                            }
                        }
                    }
                    let now = present(&hub);
                    for (c, view) in &views {
                        assert_eq!(view, &now, "seed {seed} step {step}: {c:?}'s view");
                    }
                } else if let std::collections::hash_map::Entry::Vacant(e) = views.entry(c) {
                    let mut out = join(&mut hub, c, &user, None);
                    let reply = replies(&mut out).remove(0).1;
                    let users = reply["users"].as_array().cloned().unwrap_or_default();
                    e.insert(
                        users
                            .iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect(),
                    );
                } else {
                    views.remove(&c);
                    leave(&mut hub, c, &user);
                }
            }
        }
    }

    #[test]
    fn big_channels_send_no_presence_events() {
        let mut hub = Hub::new(HubLimits {
            presence_limit: 3,
            ..HubLimits::default()
        });
        for (i, u) in ["a", "b", "c"].into_iter().enumerate() {
            let out = join(&mut hub, conn(0, i as u32), u, None);
            assert_eq!(delivered(&out).len(), usize::from(i > 0));
        }
        let mut out = join(&mut hub, conn(0, 9), "d", None);
        assert!(delivered(&out).is_empty(), "4 members > limit 3");
        let joined = replies(&mut out).remove(0).1;
        assert_eq!(joined["users"].as_array().map(Vec::len), Some(3));
        assert_eq!(joined["user_count"], 4);
        let mut out = Vec::new();
        hub.presence("room", ask(conn(0, 9)), &mut out);
        assert_eq!(
            replies(&mut out)[0].1["users"].as_array().map(Vec::len),
            Some(4)
        );
        assert_eq!(hub.presence_events(), 2);
    }

    #[test]
    fn history_pages_backwards_and_expires() {
        let mut hub = Hub::new(HubLimits {
            history_size: 100,
            history_ttl_ms: Some(1000),
            ..HubLimits::default()
        });
        join(&mut hub, conn(0, 1), "ann", None);
        publish(&mut hub, 30, 10);
        let bytes = hub.figures().history_bytes;
        assert!(bytes > 30 * 50, "{bytes}");
        let page = |hub: &mut Hub, limit, before, now| {
            let mut out = Vec::new();
            hub.history("room", (limit, before), ask(conn(0, 1)), now, &mut out);
            replies(&mut out).remove(0).1["messages"]
                .as_array()
                .expect("messages")
                .iter()
                .map(|m| m["seq"].as_u64().expect("seq"))
                .collect::<Vec<_>>()
        };
        assert_eq!(page(&mut hub, 3, None, 10), [28, 29, 30]);
        assert_eq!(page(&mut hub, 3, Some(28), 10), [25, 26, 27]);
        assert_eq!(page(&mut hub, 50, Some(3), 10), [1, 2]);
        assert_eq!(page(&mut hub, 5, None, 5000), Vec::<u64>::new(), "expired");
        assert_eq!(hub.figures().history_bytes, 0);
    }

    #[test]
    fn history_is_bounded_and_its_bytes_counted() {
        let mut hub = Hub::new(HubLimits {
            history_size: 5,
            ..HubLimits::default()
        });
        join(&mut hub, conn(0, 1), "ann", None);
        publish(&mut hub, 1005, 1);
        // Exactly the retained messages' JSON, however many went through.
        let mut out = Vec::new();
        hub.history("room", (100, None), ask(conn(0, 1)), 1, &mut out);
        let messages = replies(&mut out)[0].1["messages"].clone();
        let retained = messages.as_array().expect("messages");
        assert_eq!(seqs_of(&messages), [1001, 1002, 1003, 1004, 1005]);
        let bytes: usize = retained.iter().map(|m| m.to_string().len()).sum();
        assert_eq!(hub.figures().history_bytes, bytes);
    }

    fn seqs_of(v: &Value) -> Vec<u64> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|m| m["seq"].as_u64().expect("seq"))
            .collect()
    }

    #[test]
    fn channel_cap_refuses_new_channels() {
        let mut hub = Hub::new(HubLimits {
            max_channels: 1,
            ..HubLimits::default()
        });
        join(&mut hub, conn(0, 1), "ann", None);
        let mut out = Vec::new();
        let ann = Arc::from("ann");
        let joining = Joining {
            user: &ann,
            since: None,
            rejoin: false,
            epoch: None,
        };
        hub.join("other", joining, ask(conn(0, 1)), 0, &mut out);
        assert_eq!(replies(&mut out)[0].1["code"], "unavailable");
        assert!(hub.publish("other", "api", "x", None, 0, &mut out).is_err());
        let bob = Arc::from("bob");
        let joining = Joining {
            user: &bob,
            since: None,
            rejoin: false,
            epoch: None,
        };
        hub.join("room", joining, ask(conn(0, 2)), 0, &mut out);
        assert_eq!(replies(&mut out)[0].1["type"], "joined");
    }

    fn replicated() -> Hub {
        Hub::replicated(HubLimits::default(), Arc::from("a"))
    }

    fn commands(out: &[Effect]) -> Vec<&Command> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Broker(c) => Some(c),
                _ => None,
            })
            .collect()
    }

    fn numbered(seq: u64, text: &str) -> Numbered {
        Numbered {
            seq,
            ts_ms: 1000 + seq,
            user: "pub".into(),
            text: text.into(),
        }
    }

    fn message(epoch: &str, seq: u64) -> Remote {
        Remote::Message {
            epoch: epoch.into(),
            message: numbered(seq, &format!("m{seq}")),
        }
    }

    fn snapshot(epoch: &str, seq: u64, presence: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            seq,
            epoch: epoch.into(),
            history: (1..=seq).map(|s| numbered(s, &format!("m{s}"))).collect(),
            presence: presence
                .iter()
                .map(|(n, u)| (Arc::from(*n), Arc::from(*u)))
                .collect(),
            degraded: false,
        }
    }

    /// A replicated hub with ann (conn 0/1) synced into `room` at seq 5 of epoch e1.
    fn synced_room(presence: &[(&str, &str)]) -> Hub {
        let mut hub = replicated();
        let _ = join(&mut hub, conn(0, 1), "ann", None);
        let mut out = Vec::new();
        hub.synced("room", snapshot("e1", 5, presence), 0, &mut out);
        hub
    }

    #[test]
    fn a_replicated_join_waits_for_the_sync_and_messages_follow_the_brokers_order() {
        let mut hub = replicated();
        let mut out = join(&mut hub, conn(0, 1), "ann", None);
        let cmds = commands(&out);
        assert!(matches!(
            cmds[0],
            Command::Sync { min_seq: 0, epoch: None, diverged: false, channel } if &**channel == "room"
        ));
        assert!(matches!(cmds[1], Command::PresenceAdd { user, .. } if &**user == "ann"));
        assert!(replies(&mut out).is_empty(), "no answer before the sync");
        // A message published meanwhile waits for the snapshot, then follows it.
        hub.remote("room", message("e1", 6), 0, &mut out);
        assert!(out.is_empty());
        hub.synced("room", snapshot("e1", 5, &[("b", "bob")]), 0, &mut out);
        let delivered_now = delivered(&out);
        let r = replies(&mut out);
        assert_eq!(r.len(), 1);
        let joined = &r[0].1;
        assert_eq!(joined["type"], "joined");
        assert_eq!(joined["epoch"], "e1");
        assert_eq!(joined["seq"], 5);
        assert_eq!(seqs_of(&joined["history"]), vec![1, 2, 3, 4, 5]);
        let mut users: Vec<_> = joined["users"].as_array().unwrap().iter().collect();
        users.sort_by_key(|v| v.as_str().map(str::to_string));
        assert_eq!(users, ["ann", "bob"]);
        let frames: Vec<_> = delivered_now
            .iter()
            .filter(|(_, v)| v["type"] == "message")
            .collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].1["seq"], 6);
        // A repeat is dropped; a gap syncs again from what members saw.
        hub.remote("room", message("e1", 6), 0, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // This node's publish of seq 7 is acked only once the home has message 7: a join
        // after the ack sees it.
        let parsed = protocol::parse(r#"{"type":"leave","channel":"room","id":9}"#);
        let id = parsed.id.expect("an id");
        let published = Remote::Published {
            seq: 7,
            conn: conn(0, 1),
            id,
        };
        hub.remote("room", published, 0, &mut out);
        assert!(replies(&mut out).is_empty(), "no ack before the message");
        hub.remote("room", message("e1", 7), 0, &mut out);
        let acks: Vec<_> = replies(&mut out)
            .into_iter()
            .map(|(_, v)| (v["type"].clone(), v["seq"].clone(), v["id"].clone()))
            .collect();
        assert_eq!(acks, [(json!("ack"), json!(7), json!(9))]);
        hub.remote("room", message("e1", 9), 0, &mut out);
        assert!(matches!(
            commands(&out)[..],
            [Command::Sync {
                min_seq: 7,
                diverged: false,
                ..
            }]
        ));
    }

    #[test]
    fn presence_is_the_union_of_the_nodes() {
        let mut hub = synced_room(&[]);
        let mut out = Vec::new();
        let remote = |node: &str, user: &str, came: bool| {
            let (node, user) = (Arc::from(node), Arc::from(user));
            if came {
                Remote::Joined { node, user }
            } else {
                Remote::Left { node, user }
            }
        };
        let mut events = |hub: &mut Hub, e: Remote| {
            hub.remote("room", e, 0, &mut out);
            let d = delivered(&out);
            out.clear();
            d.into_iter().map(|(_, v)| v).collect::<Vec<_>>()
        };
        assert_eq!(
            events(&mut hub, remote("b", "carl", true))[0]["joined"],
            json!(["carl"])
        );
        assert!(
            events(&mut hub, remote("c", "carl", true)).is_empty(),
            "on two nodes: one user"
        );
        assert!(
            events(&mut hub, remote("a", "zed", true)).is_empty(),
            "this node's own event"
        );
        assert!(
            events(&mut hub, remote("b", "ann", true)).is_empty(),
            "ann is here already"
        );
        assert!(
            events(&mut hub, remote("b", "carl", false)).is_empty(),
            "still on c"
        );
        assert_eq!(
            events(&mut hub, remote("c", "carl", false))[0]["left"],
            json!(["carl"])
        );
        let mut users = hub.users("room");
        users.sort();
        assert_eq!(users, [Arc::from("ann")]);
    }

    #[test]
    fn numbering_without_the_broker_marks_the_channel_and_the_next_sync_starts_a_new_epoch() {
        let mut hub = synced_room(&[]);
        let mut out = Vec::new();
        assert_eq!(
            hub.publish("room", "ann", "alone", None, 0, &mut out),
            Ok(6)
        );
        // A channel with no members here is not made up while the broker is away.
        let e = hub.publish("elsewhere", "ann", "x", None, 0, &mut out);
        assert_eq!(e.map_err(|r| r.code), Err(ErrorCode::Unavailable));
        out.clear();
        hub.resync_all(&mut out);
        assert!(matches!(
            commands(&out)[..],
            [Command::Sync { min_seq: 6, diverged: true, epoch: Some(e), .. }] if &**e == "e1"
        ));
        out.clear();
        // Messages of the broker are held until the sync answers; the new epoch's seqs carry on
        // from what this node's members saw.
        hub.remote("room", message("e2", 7), 0, &mut out);
        hub.synced("room", snapshot("e2", 6, &[]), 0, &mut out);
        let seqs: Vec<_> = delivered(&out)
            .into_iter()
            .map(|(_, v)| v["seq"].clone())
            .collect();
        assert_eq!(seqs, [json!(7)]);
        out.clear();
        // A client recovering from seq 3 of the old epoch cannot be told it lost nothing.
        let user = Arc::from("bob");
        let joining = Joining {
            user: &user,
            since: Some(3),
            rejoin: false,
            epoch: Some("e1"),
        };
        hub.join("room", joining, ask(conn(0, 2)), 0, &mut out);
        let r = replies(&mut out);
        assert_eq!(r[0].1["recovered"], false);
        assert_eq!(r[0].1["epoch"], "e2");
    }

    #[test]
    fn the_last_member_leaving_unsubscribes_and_removes_the_users_entry() {
        let mut hub = synced_room(&[]);
        let mut out = Vec::new();
        hub.leave("room", "ann", conn(0, 1), None, 0, &mut out);
        assert!(matches!(
            commands(&out)[..],
            [Command::PresenceRemove { user, .. }, Command::Unsubscribe { channel }]
                if &**user == "ann" && &**channel == "room"
        ));
        assert_eq!(
            hub.figures(),
            HubFigures::default(),
            "nothing retained here"
        );
        // Events still in flight for it change nothing.
        out.clear();
        hub.remote("room", message("e1", 6), 0, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn with_an_archive_a_channel_syncs_first_and_pages_past_the_window_are_asked_of_it() {
        let limits = HubLimits {
            history_size: 3,
            ..HubLimits::default()
        };
        let mut hub = Hub::new(limits).with_archive();
        // Not numbered before the archive says where the channel's seqs are.
        let mut out = Vec::new();
        let early = hub.publish("room", "api", "x", None, 0, &mut out);
        assert_eq!(early.map_err(|r| r.code), Err(ErrorCode::Unavailable));
        assert!(matches!(
            commands(&out)[..],
            [Command::Sync { min_seq: 0, .. }]
        ));
        out.clear();
        let mut out = join(&mut hub, conn(0, 1), "ann", None);
        assert!(commands(&out).is_empty(), "the sync is under way already");
        assert!(replies(&mut out).is_empty());
        let mut snap = snapshot("", 10, &[]);
        snap.history.drain(..7);
        hub.synced("room", snap, 0, &mut out);
        let r = replies(&mut out);
        assert_eq!(r[0].1["seq"], 10);
        assert!(r[0].1.get("epoch").is_none(), "no epochs without a broker");
        assert_eq!(seqs_of(&r[0].1["history"]), vec![8, 9, 10]);
        assert_eq!(hub.publish("room", "ann", "y", None, 0, &mut out), Ok(11));
        out.clear();
        let mut page = |limit: usize, before: Option<u64>| {
            let mut out = Vec::new();
            hub.history("room", (limit, before), ask(conn(0, 1)), 0, &mut out);
            out.pop().expect("an answer")
        };
        match page(5, None) {
            Effect::Archive(archive::Request::History {
                before,
                limit,
                newer,
                ..
            }) => {
                assert_eq!((before, limit), (9, 2));
                let newer: Vec<u64> = newer
                    .iter()
                    .map(|j| json(j)["seq"].as_u64().unwrap())
                    .collect();
                assert_eq!(newer, vec![9, 10, 11]);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(page(2, None), Effect::Reply { .. }),
            "the window has it all"
        );
        assert!(matches!(
            page(5, Some(4)),
            Effect::Archive(archive::Request::History {
                before: 4,
                limit: 5,
                ..
            })
        ));
        assert!(
            matches!(page(5, Some(1)), Effect::Reply { .. }),
            "nothing before seq 1"
        );
    }
}
