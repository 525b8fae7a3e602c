//! The broker bridge over Redis: several `hioload-ws pubsub` nodes serve the same channels.
//!
//! Two threads per node, off the workers (they use kernel sockets and block; workers only
//! queue [`Command`]s and read mailbox notes):
//! - the *command* thread takes the workers' commands in batches and sends each batch as one
//!   pipeline: a publish runs [`PUBLISH_SCRIPT`] (the channel's seq is incremented, the message
//!   appended to the channel's stream trimmed to the history size, and published, atomically);
//!   presence changes run [`PRESENCE_ADD_SCRIPT`] / [`PRESENCE_REMOVE_SCRIPT`]. Every third of
//!   the presence TTL it refreshes this node's presence entries and removes (announcing them)
//!   the entries other nodes stopped refreshing ([`REFRESH_SCRIPT`]).
//! - the *event* thread holds the subscriptions (only channels with members here) and a second
//!   connection to read a channel's state when it subscribes ([`SYNC_SCRIPT`]); every message
//!   and presence event it receives goes to the channel's home worker.
//!
//! Keys per channel C: `hioload:C:m` (hash: `s` seq, `e` epoch), `hioload:C:s` (stream, entry
//! id `seq-1`), `hioload:C:p` (sorted set `node\nuser` scored by expiry, ms), published on
//! `hioload:C`. The event thread is woken for new subscriptions through `hioload:node:NODE`.
//!
//! When Redis is unreachable the bridge says so ([`BrokerState::is_up`]): workers number
//! messages themselves, syncs are answered with the node's own state, and on reconnecting every
//! channel is synced again (the homes' [`super::Note::Reconnected`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use hioload_stack::mailbox::Postboxes;
use redis::{Connection, RedisError, Value};

use super::archive::{self, ArchiveLink};
use super::broker::{
    post_patiently, Background, BrokerLink, BrokerState, Command, Numbered, Poller, PublishFrom,
    Remote, Snapshot,
};
use super::protocol::{self, ErrorCode, Out, Refusal};
use super::{home_of, Note};

/// Number a message, keep it in the channel's stream and publish it, atomically.
/// KEYS: meta, stream. ARGV: topic, user, text, ts, node, history size. Returns {seq, epoch}.
pub const PUBLISH_SCRIPT: &str = r#"
local e = redis.call('HGET', KEYS[1], 'e')
if not e then
  local t = redis.call('TIME')
  e = t[1] .. '.' .. t[2]
  redis.call('HSET', KEYS[1], 'e', e)
end
local s = redis.call('HINCRBY', KEYS[1], 's', 1)
local size = tonumber(ARGV[6])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, s .. '-1',
    'ts', ARGV[4], 'u', ARGV[2], 't', ARGV[3], 'n', ARGV[5])
end
redis.call('PUBLISH', ARGV[1],
  'm\n' .. s .. '\n' .. ARGV[4] .. '\n' .. e .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
return {s, e}
"#;

/// A channel's state for a node that subscribed to it. A channel new to Redis, one a node
/// numbered itself while Redis was away (`diverged`), or one whose seq is behind what the
/// node's members saw (Redis lost it) starts a new epoch, from a seq no lower than any seen.
/// KEYS: meta, stream, presence. ARGV: min seq, known epoch, diverged (1/0), history size.
/// Returns {seq, epoch, {{seq, ts, user, text}...} oldest first, {"node\nuser"...}}.
pub const SYNC_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local e = redis.call('HGET', KEYS[1], 'e')
local s = tonumber(redis.call('HGET', KEYS[1], 's') or '0')
local min = tonumber(ARGV[1])
if (not e) or ARGV[3] == '1' or s < min then
  e = t[1] .. '.' .. t[2]
  if s < min then s = min end
  redis.call('HSET', KEYS[1], 'e', e, 's', s)
end
local history = {}
local size = tonumber(ARGV[4])
if size > 0 then
  local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', size)
  for i = #entries, 1, -1 do
    local f = entries[i][2]
    local m = {string.match(entries[i][1], '^(%d+)'), '0', '', ''}
    for j = 1, #f, 2 do
      if f[j] == 'ts' then m[2] = f[j + 1]
      elseif f[j] == 'u' then m[3] = f[j + 1]
      elseif f[j] == 't' then m[4] = f[j + 1] end
    end
    history[#history + 1] = m
  end
end
return {s, e, history, redis.call('ZRANGEBYSCORE', KEYS[3], now, '+inf')}
"#;

/// This node's user is present. KEYS: presence. ARGV: topic, `node\nuser`, TTL (ms).
pub const PRESENCE_ADD_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PUBLISH', ARGV[1], 'j\n' .. ARGV[2])
return 1
"#;

/// This node's user left. KEYS: presence. ARGV: topic, `node\nuser`.
pub const PRESENCE_REMOVE_SCRIPT: &str = r#"
if redis.call('ZREM', KEYS[1], ARGV[2]) == 1 then
  redis.call('PUBLISH', ARGV[1], 'l\n' .. ARGV[2])
end
return 1
"#;

/// Refresh this node's entries of one channel (announcing any that were missing: Redis lost
/// them) and remove, announcing them, the entries whose node stopped refreshing.
/// KEYS: presence. ARGV: topic, TTL (ms), `node\nuser`... Returns the entries removed.
pub const REFRESH_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local until_ = now + tonumber(ARGV[2])
for i = 3, #ARGV do
  if redis.call('ZADD', KEYS[1], until_, ARGV[i]) == 1 then
    redis.call('PUBLISH', ARGV[1], 'j\n' .. ARGV[i])
  end
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
  for _, m in ipairs(gone) do
    redis.call('PUBLISH', ARGV[1], 'l\n' .. m)
  end
end
return #gone
"#;

/// Presence entries refreshed per script call, at most.
const REFRESH_CHUNK: usize = 500;
/// How long a Redis call may take before the connection is given up.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection backoff: first and longest wait.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// The settings of the Redis bridge.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// `redis://HOST:PORT/DB`.
    pub url: String,
    /// This node's name (unique among the nodes).
    pub node: Arc<str>,
    /// Messages each channel's stream retains.
    pub history_size: usize,
    /// How long a node's presence entries live without a refresh.
    pub presence_ttl: Duration,
    /// Commands the workers may queue for the bridge.
    pub queue: usize,
    /// Where the messages this node publishes are stored, if anywhere.
    pub archive: Option<ArchiveLink>,
    /// Commands sent as one pipeline, at most (1: one round trip each).
    pub batch: usize,
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The URL does not parse.
    #[error("--redis {url}: {source}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        source: RedisError,
    },
    /// Redis does not answer, or refuses.
    #[error("cannot reach Redis at {url}: {source}")]
    Unreachable {
        /// The URL given.
        url: String,
        /// Why.
        source: RedisError,
    },
}

/// A bridge connected once (the URL works), not running yet.
pub struct Bridge {
    config: RedisConfig,
    client: redis::Client,
    link: BrokerLink,
    commands: Receiver<Command>,
    state: Arc<BrokerState>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("url", &self.config.url)
            .field("node", &self.config.node)
            .finish()
    }
}

impl Bridge {
    /// Check that Redis answers at `config.url` (a clear error if not) and make the workers'
    /// link.
    pub fn connect(config: RedisConfig) -> Result<Self, BridgeError> {
        let client =
            redis::Client::open(config.url.as_str()).map_err(|source| BridgeError::Url {
                url: config.url.clone(),
                source,
            })?;
        let unreachable = |source| BridgeError::Unreachable {
            url: config.url.clone(),
            source,
        };
        let mut con = open(&client).map_err(unreachable)?;
        redis::cmd("PING")
            .query::<String>(&mut con)
            .map_err(unreachable)?;
        let state = Arc::new(BrokerState::default());
        let (tx, commands) = bounded(config.queue.max(1));
        let link = BrokerLink::new(tx, Arc::clone(&state), Arc::clone(&config.node));
        Ok(Self {
            config,
            client,
            link,
            commands,
            state,
        })
    }

    /// The workers' end.
    pub fn link(&self) -> BrokerLink {
        self.link.clone()
    }

    /// The bridge's state and figures.
    pub fn state(&self) -> Arc<BrokerState> {
        Arc::clone(&self.state)
    }

    /// Start the bridge's threads, posting to the workers through `posts`.
    pub fn start(self, posts: Postboxes<Note>) -> Result<Background, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (sub_tx, sub_rx) = bounded(self.config.queue.max(1));
        let wake = format!("hioload:node:{}", self.config.node);
        let events = Events {
            client: self.client.clone(),
            config: self.config.clone(),
            state: Arc::clone(&self.state),
            posts: posts.clone(),
            queue: sub_rx,
            stop: Arc::clone(&stop),
            wake: wake.clone(),
        };
        let commands = Commands {
            client: self.client,
            config: self.config,
            state: self.state,
            posts,
            queue: self.commands,
            events: sub_tx,
            stop: Arc::clone(&stop),
            wake,
            mirror: HashMap::new(),
            removed: HashSet::new(),
        };
        let spawn = |name: &str| std::thread::Builder::new().name(name.into());
        let a = spawn("hioload-redis")
            .spawn(move || commands.run())
            .map_err(|e| format!("cannot start the Redis bridge thread: {e}"))?;
        let b = spawn("hioload-redis-events")
            .spawn(move || events.run())
            .map_err(|e| format!("cannot start the Redis bridge thread: {e}"))?;
        Ok(Background::new(stop, vec![a, b]))
    }
}

fn open(client: &redis::Client) -> Result<Connection, RedisError> {
    let con = client.get_connection_with_timeout(CALL_TIMEOUT)?;
    con.set_read_timeout(Some(CALL_TIMEOUT))?;
    con.set_write_timeout(Some(CALL_TIMEOUT))?;
    Ok(con)
}

/// The bridge's scripts as Redis knows them (SHA1 hashes), loaded on every connection: a
/// restarted Redis has forgotten them, and its connections are new ones.
#[derive(Debug, Default)]
struct Scripts {
    publish: String,
    sync: String,
    add: String,
    remove: String,
    refresh: String,
}

impl Scripts {
    fn load(con: &mut Connection) -> Result<Self, RedisError> {
        let mut load = |src: &str| {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(src)
                .query::<String>(con)
        };
        Ok(Self {
            publish: load(PUBLISH_SCRIPT)?,
            sync: load(SYNC_SCRIPT)?,
            add: load(PRESENCE_ADD_SCRIPT)?,
            remove: load(PRESENCE_REMOVE_SCRIPT)?,
            refresh: load(REFRESH_SCRIPT)?,
        })
    }
}

/// An `EVALSHA` of `sha` with `keys` (arguments follow with `.arg`).
fn evalsha(sha: &str, keys: &[String]) -> redis::Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(sha).arg(keys.len());
    for k in keys {
        c.arg(k);
    }
    c
}

/// Whether `e` means the connection (or Redis's state of it) is gone: reconnect.
fn is_lost(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.kind() == redis::ErrorKind::NoScriptError
}

fn meta_key(channel: &str) -> String {
    format!("hioload:{channel}:m")
}
fn stream_key(channel: &str) -> String {
    format!("hioload:{channel}:s")
}
fn presence_key(channel: &str) -> String {
    format!("hioload:{channel}:p")
}
fn topic(channel: &str) -> String {
    format!("hioload:{channel}")
}

/// Post `note` to `worker`, waiting while its mailbox is full (bounded); false if given up.
fn post(posts: &Postboxes<Note>, state: &BrokerState, worker: usize, note: Note) -> bool {
    post_patiently(posts, &state.dropped_events, worker, note)
}

/// Tell every worker that the bridge is up again (when both connections are).
fn announce_reconnect(posts: &Postboxes<Note>, state: &BrokerState) {
    if state.is_up() {
        for w in 0..posts.len() {
            post(posts, state, w, Note::Reconnected);
        }
    }
}

/// A sync answered without Redis: the node's own state, so that joins are answered.
fn degraded_sync(posts: &Postboxes<Note>, state: &BrokerState, node: &str, command: Command) {
    let Command::Sync {
        channel,
        min_seq,
        epoch,
        ..
    } = command
    else {
        return;
    };
    let snap = Snapshot {
        seq: min_seq,
        epoch: epoch.unwrap_or_else(|| format!("local:{node}").into()),
        degraded: true,
        ..Snapshot::default()
    };
    let home = home_of(&channel, posts.len());
    let event = Remote::Synced(Box::new(snap));
    post(posts, state, home, Note::Remote { channel, event });
}

/// The command thread's state.
struct Commands {
    client: redis::Client,
    config: RedisConfig,
    state: Arc<BrokerState>,
    posts: Postboxes<Note>,
    queue: Receiver<Command>,
    /// To the event thread: syncs and unsubscriptions.
    events: Sender<Command>,
    stop: Arc<AtomicBool>,
    wake: String,
    /// This node's presence entries: channel → users.
    mirror: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// Entries removed while Redis was unreachable, to remove once it is back.
    removed: HashSet<(Arc<str>, Arc<str>)>,
}

impl Commands {
    fn run(mut self) {
        let tick = self.config.presence_ttl / 3;
        let mut backoff = BACKOFF.0;
        let mut con: Option<(Connection, Scripts)> = None;
        let mut next_tick = Instant::now() + tick;
        let max_batch = self.config.batch.max(1);
        let mut batch = Vec::with_capacity(max_batch);
        let mut poller = Poller::default();
        loop {
            let stopping = self.stop.load(Ordering::Relaxed);
            if con.is_none() {
                let connected = open(&self.client).and_then(|mut c| {
                    let scripts = Scripts::load(&mut c)?;
                    self.restore(&mut c, &scripts)?;
                    Ok((c, scripts))
                });
                match connected {
                    Ok(c) => {
                        con = Some(c);
                        backoff = BACKOFF.0;
                        tracing::info!(url = %self.config.url, "Redis bridge connected");
                        if self.state.set_commands_up(true) {
                            announce_reconnect(&self.posts, &self.state);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(url = %self.config.url, error = %e, retry_in = ?backoff, "Redis unreachable; numbering locally");
                        self.state.set_commands_up(false);
                        // Meanwhile: publish locally, answer syncs with the node's own state.
                        let until = Instant::now() + backoff;
                        while Instant::now() < until {
                            let left = until.saturating_duration_since(Instant::now());
                            let _ = poller.take(&self.queue, &mut batch, max_batch, left);
                            for c in batch.drain(..) {
                                self.without_redis(c);
                            }
                        }
                        if stopping {
                            return;
                        }
                        backoff = (backoff * 2).min(BACKOFF.1);
                        continue;
                    }
                }
            }
            let Some((c, scripts)) = con.as_mut() else {
                continue;
            };
            let wait = next_tick.saturating_duration_since(Instant::now());
            let taken = poller.take(
                &self.queue,
                &mut batch,
                max_batch,
                wait.min(Duration::from_millis(100)),
            );
            if taken.is_err() {
                return;
            }
            let result = if batch.is_empty() {
                Ok(())
            } else {
                self.send(c, scripts, &mut batch)
            };
            let result = result.and_then(|()| {
                if Instant::now() >= next_tick {
                    next_tick = Instant::now() + tick;
                    self.refresh(c, scripts)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = result {
                BrokerState::add(&self.state.disconnects, 1);
                tracing::warn!(error = %e, "Redis connection lost; numbering locally until it is back");
                self.state.set_commands_up(false);
                con = None;
                for c in batch.drain(..) {
                    match c {
                        // Sent, unconfirmed: Redis may have published it. Numbering it here
                        // too could deliver it twice, so its publisher is told instead.
                        Command::Publish { from, .. } => {
                            self.answer(from, Err("the broker connection failed before it confirmed the message; it may have been published"));
                        }
                        other => self.without_redis(other),
                    }
                }
            }
            if stopping && self.queue.is_empty() {
                if let Some((c, scripts)) = con.as_mut() {
                    // Every session here has closed: their users leave now, not a TTL later
                    // (a leave a stopping worker could not pass on to its home included).
                    if let Err(e) = self.leave_all(c, scripts) {
                        tracing::warn!(error = %e, "this node's presence could not be removed; it expires");
                    }
                    // Wake the event thread so that it sees the stop.
                    let _ = redis::cmd("PUBLISH")
                        .arg(&self.wake)
                        .arg("w")
                        .query::<Value>(c);
                }
                return;
            }
        }
    }

    /// After (re)connecting: this node's presence entries as they should be.
    fn restore(&mut self, con: &mut Connection, scripts: &Scripts) -> Result<(), RedisError> {
        for (channel, user) in std::mem::take(&mut self.removed) {
            evalsha(&scripts.remove, &[presence_key(&channel)])
                .arg(topic(&channel))
                .arg(format!("{}\n{user}", self.config.node))
                .query::<Value>(con)?;
        }
        self.refresh(con, scripts)
    }

    /// Remove (announcing it) every presence entry of this node.
    fn leave_all(&mut self, con: &mut Connection, scripts: &Scripts) -> Result<(), RedisError> {
        let mut pipe = redis::pipe();
        let mut calls = 0;
        for (channel, users) in std::mem::take(&mut self.mirror) {
            for user in users {
                let mut cmd = evalsha(&scripts.remove, &[presence_key(&channel)]);
                cmd.arg(topic(&channel))
                    .arg(format!("{}\n{user}", self.config.node));
                pipe.add_command(cmd).ignore();
                calls += 1;
            }
        }
        BrokerState::add(&self.state.calls, calls);
        pipe.query::<()>(con)
    }

    /// A command while Redis is unreachable.
    fn without_redis(&mut self, command: Command) {
        match command {
            Command::Publish {
                channel,
                user,
                text,
                from,
                ..
            } => {
                // Numbered by the home, seen by this node's members only.
                let home = home_of(&channel, self.posts.len());
                let note = match from {
                    PublishFrom::Session { conn, id } => Note::Publish {
                        channel,
                        user,
                        text,
                        conn,
                        id,
                    },
                    PublishFrom::Api(answer) => Note::Api(super::api::ApiCall::Publish {
                        channel,
                        user: (*user).into(),
                        text,
                        answer,
                    }),
                };
                post(&self.posts, &self.state, home, note);
            }
            c @ Command::Sync { .. } => {
                degraded_sync(&self.posts, &self.state, &self.config.node, c)
            }
            Command::Unsubscribe { channel } => {
                let _ = self.events.try_send(Command::Unsubscribe { channel });
            }
            Command::PresenceAdd { channel, user } => {
                self.removed
                    .remove(&(Arc::clone(&channel), Arc::clone(&user)));
                self.mirror.entry(channel).or_default().insert(user);
            }
            Command::PresenceRemove { channel, user } => {
                self.forget(&channel, &user);
                self.removed.insert((channel, user));
            }
        }
    }

    fn forget(&mut self, channel: &str, user: &str) {
        if let Some(users) = self.mirror.get_mut(channel) {
            users.remove(user);
            if users.is_empty() {
                self.mirror.remove(channel);
            }
        }
    }

    /// Send one batch as one pipeline, then hand out the results. Syncs and unsubscriptions
    /// go to the event thread (woken through Redis); an error that loses the connection
    /// leaves the commands not carried out in `batch`.
    fn send(
        &mut self,
        con: &mut Connection,
        scripts: &Scripts,
        batch: &mut Vec<Command>,
    ) -> Result<(), RedisError> {
        let ttl = self.config.presence_ttl.as_millis() as u64;
        let node = &self.config.node;
        let mut pipe = redis::pipe();
        let mut wake = false;
        let mut calls = 0u64;
        let mut kept = Vec::with_capacity(batch.len());
        for c in batch.drain(..) {
            match &c {
                Command::Publish {
                    channel,
                    user,
                    text,
                    ts_ms,
                    ..
                } => {
                    let keys = [meta_key(channel), stream_key(channel)];
                    let mut cmd = evalsha(&scripts.publish, &keys);
                    cmd.arg(topic(channel))
                        .arg(&**user)
                        .arg(&**text)
                        .arg(*ts_ms)
                        .arg(&**node)
                        .arg(self.config.history_size);
                    pipe.add_command(cmd);
                }
                Command::PresenceAdd { channel, user } => {
                    let mut cmd = evalsha(&scripts.add, &[presence_key(channel)]);
                    cmd.arg(topic(channel))
                        .arg(format!("{node}\n{user}"))
                        .arg(ttl);
                    pipe.add_command(cmd);
                }
                Command::PresenceRemove { channel, user } => {
                    let mut cmd = evalsha(&scripts.remove, &[presence_key(channel)]);
                    cmd.arg(topic(channel)).arg(format!("{node}\n{user}"));
                    pipe.add_command(cmd);
                }
                Command::Sync { .. } | Command::Unsubscribe { .. } => {
                    wake = true;
                    if let Err(e) = self.events.send_timeout(c, CALL_TIMEOUT) {
                        tracing::warn!(error = %e, "the Redis event thread is not taking syncs");
                    }
                    continue;
                }
            }
            calls += 1;
            kept.push(c);
        }
        *batch = kept;
        if wake {
            pipe.cmd("PUBLISH").arg(&self.wake).arg("w").ignore();
            calls += 1;
        }
        BrokerState::add(&self.state.batches, 1);
        BrokerState::add(&self.state.calls, calls);
        let replies: Vec<Value> = match pipe.query(con) {
            Ok(r) => r,
            Err(e) if is_lost(&e) => return Err(e),
            Err(e) => {
                // Redis answered with an error: nothing is retried, the askers are told.
                BrokerState::add(&self.state.errors, 1);
                tracing::warn!(error = %e, "Redis refused a batch");
                Vec::new()
            }
        };
        let mut replies = replies.into_iter();
        for c in batch.drain(..) {
            let reply = replies.next();
            match c {
                Command::Publish {
                    channel,
                    user,
                    text,
                    ts_ms,
                    from,
                } => {
                    let numbered = reply.as_ref().and_then(published);
                    if let Some((seq, epoch)) = &numbered {
                        BrokerState::add(&self.state.published, 1);
                        if let Some(archive) = &self.config.archive {
                            // Counted by the link if its queue is full.
                            let _ = archive.send(archive::Request::Store(archive::Row {
                                channel: (*channel).into(),
                                seq: *seq,
                                user,
                                text,
                                ts_ms,
                                epoch: epoch.as_str().into(),
                            }));
                        }
                    }
                    let seq = numbered.map(|(seq, _)| seq);
                    match (seq, from) {
                        // Acked by the channel's home once it has the message.
                        (Some(seq), PublishFrom::Session { conn, id: Some(id) }) => {
                            let home = home_of(&channel, self.posts.len());
                            let event = Remote::Published { seq, conn, id };
                            let note = Note::Remote {
                                channel: (*channel).into(),
                                event,
                            };
                            post(&self.posts, &self.state, home, note);
                        }
                        (seq, from) => {
                            self.answer(from, seq.ok_or("the broker refused the message"))
                        }
                    }
                }
                Command::PresenceAdd { channel, user } => {
                    self.removed
                        .remove(&(Arc::clone(&channel), Arc::clone(&user)));
                    self.mirror.entry(channel).or_default().insert(user);
                }
                Command::PresenceRemove { channel, user } => self.forget(&channel, &user),
                Command::Sync { .. } | Command::Unsubscribe { .. } => {}
            }
        }
        Ok(())
    }

    /// Tell a publisher its seq (or that the broker refused).
    fn answer(&self, from: PublishFrom, seq: Result<u64, &'static str>) {
        let seq = seq.map_err(|why| Refusal::new(ErrorCode::Unavailable, why));
        match from {
            PublishFrom::Session { conn, id } => {
                let text = match seq {
                    Ok(_) if id.is_none() => return,
                    Ok(seq) => Out::new("ack", id.as_ref()).num("seq", seq).finish(),
                    Err(refusal) => protocol::error(id.as_ref(), &refusal),
                };
                let note = Note::Reply {
                    conn,
                    text,
                    joined: None,
                };
                post(&self.posts, &self.state, usize::from(conn.worker), note);
            }
            PublishFrom::Api(answer) => {
                let _ = answer.try_send(seq);
            }
        }
    }

    /// Refresh this node's presence entries and sweep out expired ones, channel by channel.
    fn refresh(&mut self, con: &mut Connection, scripts: &Scripts) -> Result<(), RedisError> {
        let ttl = self.config.presence_ttl.as_millis() as u64;
        let node = &self.config.node;
        let mut pipe = redis::pipe();
        let mut calls = 0;
        for (channel, users) in &self.mirror {
            let users: Vec<&Arc<str>> = users.iter().collect();
            for chunk in users.chunks(REFRESH_CHUNK) {
                let mut cmd = evalsha(&scripts.refresh, &[presence_key(channel)]);
                cmd.arg(topic(channel)).arg(ttl);
                for u in chunk {
                    cmd.arg(format!("{node}\n{u}"));
                }
                pipe.add_command(cmd);
                calls += 1;
            }
            if calls >= 256 {
                BrokerState::add(&self.state.calls, calls as u64);
                pipe.query::<Value>(con)?;
                pipe = redis::pipe();
                calls = 0;
            }
        }
        // Keeps the event thread's connection busy, so that its read timeout means a dead link.
        pipe.cmd("PUBLISH").arg(&self.wake).arg("w").ignore();
        BrokerState::add(&self.state.calls, calls as u64 + 1);
        pipe.query::<Value>(con)?;
        Ok(())
    }
}

/// The seq and epoch in a publish script's answer.
fn published(v: &Value) -> Option<(u64, String)> {
    match v {
        Value::Array(items) => match items.as_slice() {
            [seq, epoch] => Some((int(seq)?, text(epoch)?.to_string())),
            _ => None,
        },
        _ => None,
    }
}

fn int(v: &Value) -> Option<u64> {
    match v {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&str> {
    match v {
        Value::BulkString(b) => std::str::from_utf8(b).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// A sync script's answer as a snapshot.
pub fn parse_snapshot(v: &Value) -> Option<Snapshot> {
    let Value::Array(parts) = v else { return None };
    let [seq, epoch, Value::Array(history), Value::Array(present)] = parts.as_slice() else {
        return None;
    };
    let mut snap = Snapshot {
        seq: int(seq)?,
        epoch: text(epoch)?.into(),
        ..Snapshot::default()
    };
    for m in history {
        let Value::Array(f) = m else { return None };
        let [seq, ts, user, body] = f.as_slice() else {
            return None;
        };
        snap.history.push(Numbered {
            seq: int(seq)?,
            ts_ms: int(ts).unwrap_or(0),
            user: text(user)?.into(),
            text: text(body)?.into(),
        });
    }
    for p in present {
        let (node, user) = text(p)?.split_once('\n')?;
        snap.presence.push((node.into(), user.into()));
    }
    Some(snap)
}

/// A payload published on a channel's topic, as an event for its home.
pub fn parse_event(payload: &str) -> Option<Remote> {
    let (kind, rest) = payload.split_once('\n')?;
    match kind {
        "m" => {
            let mut f = rest.splitn(5, '\n');
            let seq = f.next()?.parse().ok()?;
            let ts_ms = f.next()?.parse().ok()?;
            let epoch = f.next()?.into();
            let user = f.next()?.into();
            let text = f.next()?.into();
            Some(Remote::Message {
                epoch,
                message: Numbered {
                    seq,
                    ts_ms,
                    user,
                    text,
                },
            })
        }
        "j" | "l" => {
            let (node, user) = rest.split_once('\n')?;
            let (node, user) = (node.into(), user.into());
            Some(if kind == "j" {
                Remote::Joined { node, user }
            } else {
                Remote::Left { node, user }
            })
        }
        _ => None,
    }
}

/// The event thread's state.
struct Events {
    client: redis::Client,
    config: RedisConfig,
    state: Arc<BrokerState>,
    posts: Postboxes<Note>,
    /// Syncs and unsubscriptions from the command thread.
    queue: Receiver<Command>,
    stop: Arc<AtomicBool>,
    wake: String,
}

impl Events {
    fn run(self) {
        let mut backoff = BACKOFF.0;
        while !self.stop.load(Ordering::Relaxed) {
            match self.serve() {
                Ok(()) => return,
                Err(e) => {
                    if self.state.is_up() {
                        BrokerState::add(&self.state.disconnects, 1);
                    }
                    self.state.set_events_up(false);
                    tracing::warn!(error = %e, retry_in = ?backoff, "Redis event connection lost");
                    let until = Instant::now() + backoff;
                    while let Ok(c) = self.queue.recv_deadline(until) {
                        degraded_sync(&self.posts, &self.state, &self.config.node, c);
                    }
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
        }
    }

    /// Subscribe and pass events on until the connection fails (or the bridge stops).
    fn serve(&self) -> Result<(), RedisError> {
        let mut reader = open(&self.client)?;
        let mut snapshots = open(&self.client)?;
        let scripts = Scripts::load(&mut snapshots)?;
        let mut sub = reader.as_pubsub();
        // The command thread publishes on the wake channel at least every third of the TTL.
        sub.set_read_timeout(Some((self.config.presence_ttl).max(Duration::from_secs(5))))?;
        sub.subscribe(&self.wake)?;
        let mut subscribed: HashSet<Arc<str>> = HashSet::new();
        tracing::info!("Redis event connection up");
        if self.state.set_events_up(true) {
            announce_reconnect(&self.posts, &self.state);
        }
        let workers = self.posts.len();
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            while let Ok(c) = self.queue.try_recv() {
                match c {
                    Command::Sync {
                        channel,
                        min_seq,
                        epoch,
                        diverged,
                    } => {
                        if !subscribed.contains(&channel) {
                            sub.subscribe(topic(&channel))?;
                            subscribed.insert(Arc::clone(&channel));
                        }
                        let keys = [
                            meta_key(&channel),
                            stream_key(&channel),
                            presence_key(&channel),
                        ];
                        let v: Value = evalsha(&scripts.sync, &keys)
                            .arg(min_seq)
                            .arg(epoch.as_deref().unwrap_or(""))
                            .arg(if diverged { "1" } else { "0" })
                            .arg(self.config.history_size)
                            .query(&mut snapshots)?;
                        let Some(snap) = parse_snapshot(&v) else {
                            BrokerState::add(&self.state.errors, 1);
                            tracing::warn!(%channel, "unexpected answer to a channel sync");
                            continue;
                        };
                        BrokerState::add(&self.state.syncs, 1);
                        let home = home_of(&channel, workers);
                        let event = Remote::Synced(Box::new(snap));
                        post(
                            &self.posts,
                            &self.state,
                            home,
                            Note::Remote { channel, event },
                        );
                    }
                    Command::Unsubscribe { channel } if subscribed.remove(&channel) => {
                        sub.unsubscribe(topic(&channel))?;
                    }
                    _ => {}
                }
            }
            let msg = sub.get_message()?;
            let name = msg.get_channel_name();
            if name == self.wake {
                continue;
            }
            let Some(channel) = name.strip_prefix("hioload:") else {
                continue;
            };
            let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
            let event = std::str::from_utf8(&payload).ok().and_then(parse_event);
            let Some(event) = event else {
                BrokerState::add(&self.state.errors, 1);
                tracing::warn!(channel, "unreadable event from Redis");
                continue;
            };
            BrokerState::add(&self.state.received, 1);
            let home = home_of(channel, workers);
            let channel: Arc<str> = channel.into();
            post(
                &self.posts,
                &self.state,
                home,
                Note::Remote { channel, event },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_with_newlines_only_as_separators_before_the_text() {
        assert_eq!(
            parse_event("m\n7\n1700\n99.5\nann\nhi\nthere"),
            Some(Remote::Message {
                epoch: "99.5".into(),
                message: Numbered {
                    seq: 7,
                    ts_ms: 1700,
                    user: "ann".into(),
                    text: "hi\nthere".into(),
                },
            })
        );
        assert_eq!(
            parse_event("j\nnode-a\nbob smith"),
            Some(Remote::Joined {
                node: "node-a".into(),
                user: "bob smith".into()
            })
        );
        assert_eq!(
            parse_event("l\nnode-a\nbob"),
            Some(Remote::Left {
                node: "node-a".into(),
                user: "bob".into()
            })
        );
        assert_eq!(parse_event("m\nx\n1\ne\nu\nt"), None);
        assert_eq!(parse_event("q\nx"), None);
        assert_eq!(parse_event("j\nonly-node"), None);
    }

    #[test]
    fn snapshots_parse_from_the_scripts_answer() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let v = Value::Array(vec![
            Value::Int(12),
            bulk("1.2"),
            Value::Array(vec![Value::Array(vec![
                bulk("12"),
                bulk("1700"),
                bulk("ann"),
                bulk("hello"),
            ])]),
            Value::Array(vec![bulk("n1\nann"), bulk("n2\nbob")]),
        ]);
        let snap = parse_snapshot(&v).expect("a snapshot");
        assert_eq!(snap.seq, 12);
        assert_eq!(&*snap.epoch, "1.2");
        assert_eq!(snap.history.len(), 1);
        assert_eq!(&*snap.history[0].text, "hello");
        assert_eq!(
            snap.presence,
            vec![("n1".into(), "ann".into()), ("n2".into(), "bob".into())]
        );
        assert!(parse_snapshot(&Value::Array(vec![Value::Int(1)])).is_none());
    }
}
