//! The message archive in PostgreSQL: one thread per node, with its own connection (the
//! `postgres` crate, blocking, off the workers), taking [`Request`]s from a bounded queue.
//!
//! - Stores: rows wait in a backlog of at most `--pg-backlog` messages and are written in
//!   batches of up to `batch` rows, each batch one `INSERT ... SELECT FROM unnest(...)` that
//!   skips a `(channel, seq)` stored already, so a batch retried after a lost connection is
//!   stored exactly once. While PostgreSQL is away the backlog grows; past its bound the oldest
//!   rows are dropped, counted and logged.
//! - Reads (a channel's sync, a `history` page) are served after the rows queued before them
//!   are written, so a read sees every message numbered before it was asked for.
//! - The schema is created and versioned at start ([`SCHEMA_VERSION`]), under an advisory lock
//!   so that nodes starting together do not race.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver};
use hioload_stack::mailbox::Postboxes;

use super::archive::{ArchiveLink, ArchiveState, Request, Row};
use super::broker::{post_patiently, Background, BrokerState, Numbered, Poller, Remote, Snapshot};
use super::protocol::{self, Out};
use super::{home_of, Note};

/// The schema version this build creates and reads.
pub const SCHEMA_VERSION: i32 = 1;

/// Version 1: one row per message, keyed by channel and seq.
const SCHEMA_V1: &str = "
CREATE TABLE hioload_messages (
    channel text NOT NULL,
    seq bigint NOT NULL,
    usr text NOT NULL,
    body text NOT NULL,
    ts_ms bigint NOT NULL,
    node text NOT NULL,
    epoch text NOT NULL DEFAULT '',
    PRIMARY KEY (channel, seq)
);";

const INSERT: &str = "
INSERT INTO hioload_messages (channel, seq, usr, body, ts_ms, node, epoch)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[])
ON CONFLICT (channel, seq) DO NOTHING";

const NEWEST: &str = "
SELECT seq, ts_ms, usr, body FROM hioload_messages
WHERE channel = $1 ORDER BY seq DESC LIMIT $2";

const PAGE: &str = "
SELECT seq, ts_ms, usr, body FROM hioload_messages
WHERE channel = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3";

/// Reconnection backoff: first and longest wait.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// The settings of the archive.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://USER@HOST:PORT/DB` (or a key=value connection string).
    pub url: String,
    /// This node's name (stored with each message it writes).
    pub node: Arc<str>,
    /// Messages waiting to be stored, at most (the oldest are dropped beyond it).
    pub backlog: usize,
    /// Rows per `INSERT`, at most.
    pub batch: usize,
    /// Messages a channel's sync reads (its history window).
    pub history_size: usize,
    /// Requests the workers may queue.
    pub queue: usize,
}

/// Why the archive could not start.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The URL does not parse.
    #[error("--postgres {url}: {source}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        source: postgres::Error,
    },
    /// PostgreSQL does not answer, or refuses.
    #[error("cannot reach PostgreSQL at {url}: {source}")]
    Unreachable {
        /// The URL given.
        url: String,
        /// Why.
        source: postgres::Error,
    },
    /// The schema could not be created or is newer than this build.
    #[error("PostgreSQL at {url}: {reason}")]
    Schema {
        /// The URL given.
        url: String,
        /// Why.
        reason: String,
    },
}

/// The archive, connected once (the URL works, the schema is in place), not running yet.
pub struct Archive {
    config: PgConfig,
    pg: postgres::Config,
    link: ArchiveLink,
    requests: Receiver<Request>,
    state: Arc<ArchiveState>,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("url", &self.config.url)
            .finish()
    }
}

fn connect(pg: &postgres::Config) -> Result<postgres::Client, postgres::Error> {
    pg.connect(postgres::NoTls)
}

/// Create the schema if it is missing; refuse one newer than this build.
fn migrate(client: &mut postgres::Client) -> Result<(), String> {
    let mut tx = client.transaction().map_err(|e| e.to_string())?;
    let steps = (|| {
        tx.execute("SELECT pg_advisory_xact_lock(7263541)", &[])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS hioload_schema (version integer NOT NULL)")?;
        let row = tx.query_one("SELECT max(version) FROM hioload_schema", &[])?;
        Ok::<_, postgres::Error>(row.get::<_, Option<i32>>(0))
    })();
    match steps.map_err(|e| e.to_string())? {
        None => {
            tx.batch_execute(SCHEMA_V1).map_err(|e| e.to_string())?;
            tx.execute(
                "INSERT INTO hioload_schema (version) VALUES ($1)",
                &[&SCHEMA_VERSION],
            )
            .map_err(|e| e.to_string())?;
            tracing::info!(version = SCHEMA_VERSION, "PostgreSQL schema created");
        }
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) => {
            return Err(format!(
                "the database's schema is version {v}; this build knows version {SCHEMA_VERSION} \
                 (run a newer hioload-ws, or another database)"
            ))
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

impl Archive {
    /// Connect to `config.url` once, create or check the schema (a clear error if anything
    /// fails), and make the workers' link.
    pub fn connect(config: PgConfig) -> Result<Self, ArchiveError> {
        let mut pg: postgres::Config = config.url.parse().map_err(|source| ArchiveError::Url {
            url: config.url.clone(),
            source,
        })?;
        pg.connect_timeout(Duration::from_secs(3))
            .tcp_user_timeout(Duration::from_secs(5))
            .application_name("hioload-ws")
            // Notices (a table that exists already, say) are not the operator's concern.
            .options("-c client_min_messages=warning");
        let mut client = connect(&pg).map_err(|source| ArchiveError::Unreachable {
            url: config.url.clone(),
            source,
        })?;
        migrate(&mut client).map_err(|reason| ArchiveError::Schema {
            url: config.url.clone(),
            reason,
        })?;
        let state = Arc::new(ArchiveState::default());
        let (tx, requests) = bounded(config.queue.max(1));
        let link = ArchiveLink::new(tx, Arc::clone(&state));
        Ok(Self {
            config,
            pg,
            link,
            requests,
            state,
        })
    }

    /// The workers' (and the Redis bridge's) end.
    pub fn link(&self) -> ArchiveLink {
        self.link.clone()
    }

    /// The archive's state and figures.
    pub fn state(&self) -> Arc<ArchiveState> {
        Arc::clone(&self.state)
    }

    /// Start the archive's thread, answering the workers through `posts`.
    pub fn start(self, posts: Postboxes<Note>) -> Result<Background, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            config: self.config,
            pg: self.pg,
            requests: self.requests,
            state: self.state,
            posts,
            stop: Arc::clone(&stop),
            backlog: VecDeque::new(),
            reads: VecDeque::new(),
        };
        let t = std::thread::Builder::new()
            .name("hioload-postgres".into())
            .spawn(move || writer.run())
            .map_err(|e| format!("cannot start the PostgreSQL archive thread: {e}"))?;
        Ok(Background::new(stop, vec![t]))
    }
}

/// The archive thread's state.
struct Writer {
    config: PgConfig,
    pg: postgres::Config,
    requests: Receiver<Request>,
    state: Arc<ArchiveState>,
    posts: Postboxes<Note>,
    stop: Arc<AtomicBool>,
    backlog: VecDeque<Row>,
    /// Reads waiting for the rows queued before them to be written.
    reads: VecDeque<Request>,
}

impl Writer {
    fn run(mut self) {
        let mut client: Option<postgres::Client> = None;
        let mut backoff = BACKOFF.0;
        let mut next_attempt = Instant::now();
        let mut poller = Poller::default();
        let mut incoming = Vec::new();
        let mut stop_deadline: Option<Instant> = None;
        loop {
            let busy = !self.backlog.is_empty() && client.is_some();
            let wait = if busy {
                Duration::ZERO
            } else {
                Duration::from_millis(50)
            };
            let _ = poller.take(&self.requests, &mut incoming, 4096, wait);
            for r in incoming.drain(..) {
                match r {
                    Request::Store(row) => self.keep(row),
                    read => self.reads.push_back(read),
                }
            }
            if client.is_none() && Instant::now() >= next_attempt {
                match connect(&self.pg) {
                    Ok(c) => {
                        tracing::info!("PostgreSQL archive connected");
                        self.state.set_up(true);
                        backoff = BACKOFF.0;
                        client = Some(c);
                    }
                    Err(e) => {
                        if self.state.is_up() || backoff == BACKOFF.0 {
                            tracing::warn!(error = %e, backlog = self.backlog.len(), "PostgreSQL unreachable; keeping messages until it is back");
                        }
                        self.state.set_up(false);
                        next_attempt = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF.1);
                    }
                }
            }
            if let Some(c) = client.as_mut() {
                if let Err(e) = self.write(c).and_then(|()| self.read(c)) {
                    BrokerState::add(&self.state.disconnects, 1);
                    tracing::warn!(error = %e, backlog = self.backlog.len(), "PostgreSQL connection lost; keeping messages until it is back");
                    self.state.set_up(false);
                    client = None;
                    next_attempt = Instant::now() + backoff;
                }
            }
            if client.is_none() {
                // Reads are not held while PostgreSQL is away: answered from what is here.
                while let Some(r) = self.reads.pop_front() {
                    self.answer_without(r);
                }
            }
            self.state
                .backlog
                .store(self.backlog.len() as u64, Ordering::Relaxed);
            if self.stop.load(Ordering::Relaxed) {
                let deadline =
                    *stop_deadline.get_or_insert(Instant::now() + Duration::from_secs(2));
                if self.backlog.is_empty() || Instant::now() >= deadline {
                    if !self.backlog.is_empty() {
                        tracing::warn!(
                            lost = self.backlog.len(),
                            "stopping with messages PostgreSQL never got"
                        );
                    }
                    return;
                }
            }
        }
    }

    /// Queue a row, dropping the oldest past the backlog's bound.
    fn keep(&mut self, row: Row) {
        if self.backlog.len() >= self.config.backlog.max(1) {
            self.backlog.pop_front();
            let dropped = self.state.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(
                    dropped,
                    bound = self.config.backlog,
                    "PostgreSQL backlog full: oldest messages dropped (not stored)"
                );
            }
        }
        self.backlog.push_back(row);
    }

    /// Write the backlog, a batch at a time; a batch leaves the backlog once written.
    fn write(&mut self, c: &mut postgres::Client) -> Result<(), postgres::Error> {
        while !self.backlog.is_empty() {
            let n = self.backlog.len().min(self.config.batch.max(1));
            let rows = || self.backlog.range(..n);
            // One array per column: the batch is one statement, one round trip.
            let channels: Vec<&str> = rows().map(|r| &*r.channel).collect();
            let seqs: Vec<i64> = rows().map(|r| r.seq as i64).collect();
            let users: Vec<&str> = rows().map(|r| &*r.user).collect();
            let texts: Vec<&str> = rows().map(|r| &*r.text).collect();
            let times: Vec<i64> = rows().map(|r| r.ts_ms as i64).collect();
            let nodes: Vec<&str> = vec![&*self.config.node; n];
            let epochs: Vec<&str> = rows().map(|r| &*r.epoch).collect();
            let written = c.execute(
                INSERT,
                &[&channels, &seqs, &users, &texts, &times, &nodes, &epochs],
            )?;
            if (written as usize) < n {
                // Stored already: a retried batch, or seqs numbered again after a restart
                // while PostgreSQL was away (those are not stored twice).
                tracing::debug!(skipped = n - written as usize, "rows stored already");
            }
            self.backlog.drain(..n);
            BrokerState::add(&self.state.stored, n as u64);
            BrokerState::add(&self.state.batches, 1);
        }
        Ok(())
    }

    /// Serve the reads waiting (the rows queued before them are written).
    fn read(&mut self, c: &mut postgres::Client) -> Result<(), postgres::Error> {
        while let Some(r) = self.reads.pop_front() {
            match &r {
                Request::Sync { channel } => {
                    let n = self.config.history_size;
                    let rows = match c.query(NEWEST, &[&&**channel, &(n.max(1) as i64)]) {
                        Ok(rows) => rows,
                        Err(e) => {
                            self.reads.push_front(r);
                            return Err(e);
                        }
                    };
                    let seq = rows
                        .first()
                        .and_then(|row| row.try_get::<_, i64>(0).ok())
                        .map_or(0, |s| s as u64);
                    let mut history: Vec<Numbered> =
                        rows.iter().take(n).filter_map(numbered).collect();
                    history.reverse();
                    self.synced(channel, seq, history, false);
                }
                Request::History {
                    channel,
                    before,
                    limit,
                    ..
                } => {
                    let before = i64::try_from(*before).unwrap_or(i64::MAX);
                    let rows = match c.query(PAGE, &[&&**channel, &before, &(*limit as i64)]) {
                        Ok(rows) => rows,
                        Err(e) => {
                            self.reads.push_front(r);
                            return Err(e);
                        }
                    };
                    let mut older: Vec<Numbered> = rows.iter().filter_map(numbered).collect();
                    older.reverse();
                    BrokerState::add(&self.state.reads, 1);
                    self.page(r, &older);
                }
                Request::Store(_) => {}
            }
        }
        Ok(())
    }

    /// A read while PostgreSQL is away: a sync from the backlog (a channel new here continues
    /// after the last seq waiting to be stored, if any), a page from what the home retains.
    fn answer_without(&mut self, r: Request) {
        match &r {
            Request::Sync { channel } => {
                let mine: Vec<&Row> = self
                    .backlog
                    .iter()
                    .filter(|row| row.channel == *channel)
                    .collect();
                let seq = mine.iter().map(|row| row.seq).max().unwrap_or(0);
                let skip = mine.len().saturating_sub(self.config.history_size);
                let history = mine
                    .iter()
                    .skip(skip)
                    .map(|row| Numbered {
                        seq: row.seq,
                        ts_ms: row.ts_ms,
                        user: (*row.user).into(),
                        text: row.text.clone(),
                    })
                    .collect();
                self.synced(channel, seq, history, true);
            }
            Request::History { .. } => self.page(r, &[]),
            Request::Store(_) => {}
        }
    }

    fn synced(&self, channel: &Arc<str>, seq: u64, history: Vec<Numbered>, degraded: bool) {
        let snap = Snapshot {
            seq,
            history,
            degraded,
            ..Snapshot::default()
        };
        let home = home_of(channel, self.posts.len());
        let note = Note::Remote {
            channel: Arc::clone(channel),
            event: Remote::Synced(Box::new(snap)),
        };
        post_patiently(&self.posts, &self.state.errors, home, note);
    }

    /// Answer a `history` request: `older` from the archive, then what the home retains.
    fn page(&self, r: Request, older: &[Numbered]) {
        let Request::History {
            channel,
            conn,
            id,
            newer,
            ..
        } = r
        else {
            return;
        };
        let older: Vec<String> = older
            .iter()
            .map(|m| protocol::message(&channel, &m.user, &m.text, m.seq, m.ts_ms))
            .collect();
        let text = Out::new("history", id.as_ref())
            .str("channel", &channel)
            .raw_array(
                "messages",
                older.iter().chain(newer.iter()).map(String::as_str),
            )
            .finish();
        let note = Note::Reply {
            conn,
            text,
            joined: None,
        };
        post_patiently(
            &self.posts,
            &self.state.errors,
            usize::from(conn.worker),
            note,
        );
    }
}

/// A stored message (`None` if a column does not read as the schema says: skipped).
fn numbered(row: &postgres::Row) -> Option<Numbered> {
    Some(Numbered {
        seq: row.try_get::<_, i64>(0).ok()? as u64,
        ts_ms: row.try_get::<_, i64>(1).ok()? as u64,
        user: row.try_get::<_, &str>(2).ok()?.into(),
        text: row.try_get::<_, &str>(3).ok()?.into(),
    })
}
