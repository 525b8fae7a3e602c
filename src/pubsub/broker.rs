//! What a node's pub/sub workers and its broker bridge say to each other (scale-out over Redis:
//! [`super::redis`]). No I/O here: the workers queue [`Command`]s into a bounded channel and the
//! bridge posts [`Remote`] events back to the channels' homes through their mailboxes.
//!
//! With a broker, a channel's seq is assigned by the broker, so every node sees one order:
//! a publish goes from the session's worker to the bridge, and comes back to every subscribed
//! node (this one included) as a [`Remote::Message`] for the channel's home, which retains it and
//! delivers it as it would a local one. A home *syncs* a channel (subscribes, and reads its seq,
//! epoch, history and presence) before answering the first join, and again after the bridge
//! reconnects. When the broker is unreachable the home numbers messages itself and marks the
//! channel diverged; the next sync starts a new epoch, so clients recovering with `since` learn
//! that history may be missing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use hioload_stack::ConnId;

use super::protocol::{Refusal, RequestId};

/// Who waits for a publish's seq.
#[derive(Debug)]
pub enum PublishFrom {
    /// A session: `ack` with its request id (if it gave one); errors go to it too.
    Session {
        /// The publishing session.
        conn: ConnId,
        /// Its request's id.
        id: Option<RequestId>,
    },
    /// A call of the server API.
    Api(Sender<Result<u64, Refusal>>),
}

/// A request from a worker to the bridge.
#[derive(Debug)]
pub enum Command {
    /// Number `text` in the broker and send it to every node with members.
    Publish {
        /// The channel.
        channel: Box<str>,
        /// The publishing user.
        user: Arc<str>,
        /// The text.
        text: Box<str>,
        /// The publish time (ms since the Unix epoch).
        ts_ms: u64,
        /// Where the seq goes.
        from: PublishFrom,
    },
    /// Subscribe to `channel` (if not yet) and send its home a [`Remote::Synced`].
    Sync {
        /// The channel.
        channel: Arc<str>,
        /// The last seq this node's members have seen: the broker's seq is raised to it if it
        /// is behind (after the broker lost its data), so seqs never go backwards.
        min_seq: u64,
        /// The epoch this node knows (`None` for a channel new here).
        epoch: Option<Arc<str>>,
        /// This node numbered messages itself while the broker was unreachable: start a new
        /// epoch.
        diverged: bool,
    },
    /// No members of `channel` are left here: stop receiving it.
    Unsubscribe {
        /// The channel.
        channel: Arc<str>,
    },
    /// `user`'s first session on this node joined `channel`.
    PresenceAdd {
        /// The channel.
        channel: Arc<str>,
        /// The user.
        user: Arc<str>,
    },
    /// `user`'s last session on this node left `channel`.
    PresenceRemove {
        /// The channel.
        channel: Arc<str>,
        /// The user.
        user: Arc<str>,
    },
}

/// A message as the broker numbered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    /// Its seq in the channel.
    pub seq: u64,
    /// Its publish time (ms since the Unix epoch).
    pub ts_ms: u64,
    /// The publishing user.
    pub user: Box<str>,
    /// The text.
    pub text: Box<str>,
}

/// A channel's state in the broker, read after subscribing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The last seq given.
    pub seq: u64,
    /// The channel's epoch: changes when its history was lost or replaced.
    pub epoch: Arc<str>,
    /// The retained messages, oldest first.
    pub history: Vec<Numbered>,
    /// The users present, per node: `(node, user)`.
    pub presence: Vec<(Arc<str>, Arc<str>)>,
    /// The broker was unreachable: this is the node's own state, handed back so that joins
    /// are answered; the channel stays diverged until a real sync.
    pub degraded: bool,
}

/// What the bridge tells a channel's home (in a [`super::Note::Remote`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// The channel is subscribed; its state follows.
    Synced(Box<Snapshot>),
    /// A message numbered by the broker (from any node).
    Message {
        /// Its epoch.
        epoch: Arc<str>,
        /// The message.
        message: Numbered,
    },
    /// This node's session published message `seq`: its `ack` goes out once the home has
    /// taken that message in (so a join after the ack sees it, as on a node alone).
    Published {
        /// The seq Redis gave it.
        seq: u64,
        /// The publishing session.
        conn: ConnId,
        /// Its request's id.
        id: RequestId,
    },
    /// `user` is present on `node`.
    Joined {
        /// The node.
        node: Arc<str>,
        /// The user.
        user: Arc<str>,
    },
    /// `user` is gone from `node` (left, or the node's entry expired).
    Left {
        /// The node.
        node: Arc<str>,
        /// The user.
        user: Arc<str>,
    },
}

/// The bridge's state and figures, shared with the workers and the admin endpoint.
#[derive(Debug, Default)]
pub struct BrokerState {
    /// The connection that publishes is up.
    commands_up: AtomicBool,
    /// The connection that receives is up.
    events_up: AtomicBool,
    /// Messages published through the broker.
    pub published: AtomicU64,
    /// Publishes numbered locally because the broker was unreachable (not seen by other nodes).
    pub published_locally: AtomicU64,
    /// Commands refused because the bridge's queue was full.
    pub queue_full: AtomicU64,
    /// Times the bridge lost its connection to the broker.
    pub disconnects: AtomicU64,
    /// Broker calls that failed.
    pub errors: AtomicU64,
    /// Messages received from the broker.
    pub received: AtomicU64,
    /// Events for the workers the bridge gave up on (their mailboxes stayed full).
    pub dropped_events: AtomicU64,
    /// Channel syncs carried out.
    pub syncs: AtomicU64,
    /// Pipelines sent (one per batch of commands).
    pub batches: AtomicU64,
    /// Broker calls made (script runs and commands, pipelined or not).
    pub calls: AtomicU64,
}

impl BrokerState {
    /// Whether the bridge can both publish and receive (else the node numbers its channels'
    /// messages itself).
    pub fn is_up(&self) -> bool {
        self.commands_up.load(Ordering::Relaxed) && self.events_up.load(Ordering::Relaxed)
    }

    /// Say whether the publishing connection is up; returns whether the bridge is up now.
    pub fn set_commands_up(&self, up: bool) -> bool {
        self.commands_up.store(up, Ordering::Relaxed);
        self.is_up()
    }

    /// Say whether the receiving connection is up; returns whether the bridge is up now.
    pub fn set_events_up(&self, up: bool) -> bool {
        self.events_up.store(up, Ordering::Relaxed);
        self.is_up()
    }

    /// Add `n` to one of the counters.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Read one of the counters.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A worker's end of the bridge: cheap to clone.
#[derive(Debug, Clone)]
pub struct BrokerLink {
    commands: Sender<Command>,
    state: Arc<BrokerState>,
    node: Arc<str>,
}

impl BrokerLink {
    /// A link queueing into `commands`, for the node named `node`.
    pub fn new(commands: Sender<Command>, state: Arc<BrokerState>, node: Arc<str>) -> Self {
        Self {
            commands,
            state,
            node,
        }
    }

    /// This node's name (as its presence entries carry it).
    pub fn node(&self) -> &Arc<str> {
        &self.node
    }

    /// The bridge's state.
    pub fn state(&self) -> &BrokerState {
        &self.state
    }

    /// Queue `command` without waiting; a full queue gives it back (counted).
    pub fn send(&self, command: Command) -> Result<(), Command> {
        self.commands.try_send(command).map_err(|e| {
            BrokerState::add(&self.state.queue_full, 1);
            match e {
                TrySendError::Full(c) | TrySendError::Disconnected(c) => c,
            }
        })
    }
}

/// Whether `name` can name a node: 1 to 64 bytes of `A-Z a-z 0-9 _ . : -` (it is part of the
/// broker's presence entries and events).
pub fn check_node_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "node name {name:?}: use 1 to 64 bytes of A-Z a-z 0-9 _ . : -"
        ))
    }
}

/// How a bridge thread takes what the workers queue: by polling, never by blocking on the
/// channel. A worker's `try_send` to a receiver blocked in `recv` would have to wake it, a
/// system call on the worker's path; polling keeps that cost on the bridge's side: 50 µs naps
/// while work keeps coming, 1 ms once it has been quiet for 10 ms.
#[derive(Debug)]
pub struct Poller {
    busy_until: std::time::Instant,
}

/// The senders are gone (the workers have stopped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disconnected;

impl Default for Poller {
    fn default() -> Self {
        Self {
            busy_until: std::time::Instant::now(),
        }
    }
}

impl Poller {
    /// Move up to `max` queued items into `into`, waiting at most `limit` for the first.
    pub fn take<T>(
        &mut self,
        rx: &crossbeam_channel::Receiver<T>,
        into: &mut Vec<T>,
        max: usize,
        limit: std::time::Duration,
    ) -> Result<(), Disconnected> {
        use crossbeam_channel::TryRecvError;
        use std::time::{Duration, Instant};
        let deadline = Instant::now() + limit;
        loop {
            while into.len() < max {
                match rx.try_recv() {
                    Ok(item) => into.push(item),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) if into.is_empty() => return Err(Disconnected),
                    Err(TryRecvError::Disconnected) => break,
                }
            }
            let now = Instant::now();
            if !into.is_empty() {
                self.busy_until = now + Duration::from_millis(10);
                return Ok(());
            }
            if now >= deadline {
                return Ok(());
            }
            let nap = if now < self.busy_until {
                Duration::from_micros(50)
            } else {
                Duration::from_millis(1)
            };
            std::thread::sleep(nap.min(deadline - now));
        }
    }
}

/// How long stopping waits for a bridge's threads.
const STOP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(3);
/// How long a note for a worker is retried while its mailbox is full before it is dropped.
const POST_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);

/// A bridge's running threads (Redis, PostgreSQL).
#[derive(Debug)]
pub struct Background {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Threads that stop when `stop` is set.
    pub fn new(stop: Arc<AtomicBool>, threads: Vec<std::thread::JoinHandle<()>>) -> Self {
        Self { stop, threads }
    }

    /// Stop the threads, the command thread after it has sent what is queued (the leaves of
    /// the sessions closed at shutdown among it), and wait for them, a bounded time.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = std::time::Instant::now() + STOP_PATIENCE;
        for t in self.threads {
            while !t.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("a bridge thread did not stop in time; leaving it");
            }
        }
    }
}

/// Post `note` to `worker` from a bridge thread, waiting while its mailbox is full (bounded);
/// false if given up (counted in `dropped`).
pub fn post_patiently(
    posts: &hioload_stack::mailbox::Postboxes<super::Note>,
    dropped: &AtomicU64,
    worker: usize,
    mut note: super::Note,
) -> bool {
    use hioload_stack::mailbox::PostError;
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + POST_PATIENCE;
    loop {
        match posts.post(worker, note) {
            Ok(()) => return true,
            Err(PostError::Full { message, .. }) if Instant::now() < deadline => {
                note = message;
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => {
                BrokerState::add(dropped, 1);
                tracing::warn!(worker, error = %e, "a bridge's note for a worker was dropped");
                return false;
            }
        }
    }
}
