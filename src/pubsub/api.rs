//! The server API: publishing and reading channel state from outside the workers (the admin
//! endpoint's `/api/*`, a future broker bridge). Calls post to the channel homes' mailboxes and
//! wait, bounded, for their answers; they never touch a worker's state directly.

use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use hioload_stack::mailbox::{PostError, Postboxes};

use super::protocol::{check_channel, check_user, ErrorCode, Refusal};
use super::{home_of, Note};

/// A call from outside, carried to a worker in a [`Note::Api`].
#[derive(Debug)]
pub enum ApiCall {
    /// Publish `text` as `user` to `channel` (homed on the receiving worker).
    Publish {
        /// The channel.
        channel: Box<str>,
        /// The user name shown to members.
        user: Box<str>,
        /// The text.
        text: Box<str>,
        /// Where the seq (or the refusal) goes.
        answer: Sender<Result<u64, Refusal>>,
    },
    /// The channels homed on the receiving worker, with their member counts.
    Channels {
        /// Where the list goes.
        answer: Sender<Vec<(String, u32)>>,
    },
    /// The users present in `channel` (homed on the receiving worker).
    Presence {
        /// The channel.
        channel: Box<str>,
        /// Where the names go.
        answer: Sender<Vec<String>>,
    },
}

/// Why an API call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request breaks a protocol rule (name, size) or a limit.
    #[error("{}: {}", .0.code.as_str(), .0.message)]
    Refused(Refusal),
    /// A worker's mailbox is full, or it did not answer in time: try again.
    #[error("worker {0} is busy; try again")]
    Busy(usize),
    /// The workers have stopped.
    #[error("the appliance is stopping")]
    Stopped,
}

/// A handle for API calls; cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Api {
    posts: Postboxes<Note>,
    max_publish_size: usize,
    /// How long a call waits for a worker's answer.
    timeout: Duration,
}

impl Api {
    /// Calls through `posts` (the pub/sub workers' postboxes), refusing texts over
    /// `max_publish_size`.
    pub fn new(posts: Postboxes<Note>, max_publish_size: usize) -> Self {
        Self {
            posts,
            max_publish_size,
            timeout: Duration::from_secs(2),
        }
    }

    fn post(&self, worker: usize, call: ApiCall) -> Result<(), ApiError> {
        self.posts
            .post(worker, Note::Api(call))
            .map_err(|e| match e {
                PostError::Full { worker, .. } => ApiError::Busy(worker),
                PostError::Stopped { .. } | PostError::NoSuchWorker { .. } => ApiError::Stopped,
            })
    }

    fn wait<T>(&self, worker: usize, rx: &Receiver<T>, until: Instant) -> Result<T, ApiError> {
        rx.recv_timeout(until.saturating_duration_since(Instant::now()))
            .map_err(|e| match e {
                RecvTimeoutError::Timeout => ApiError::Busy(worker),
                RecvTimeoutError::Disconnected => ApiError::Stopped,
            })
    }

    /// Publish `text` to `channel` as `user`; the message's seq.
    pub fn publish(&self, channel: &str, user: &str, text: &str) -> Result<u64, ApiError> {
        check_channel(channel).map_err(ApiError::Refused)?;
        check_user(user).map_err(ApiError::Refused)?;
        if text.len() > self.max_publish_size {
            return Err(ApiError::Refused(Refusal {
                code: ErrorCode::TooLarge,
                message: format!(
                    "the text is {} bytes; at most {} are published",
                    text.len(),
                    self.max_publish_size
                )
                .into(),
            }));
        }
        let home = home_of(channel, self.posts.len());
        let (answer, rx) = bounded(1);
        self.post(
            home,
            ApiCall::Publish {
                channel: channel.into(),
                user: user.into(),
                text: text.into(),
                answer,
            },
        )?;
        self.wait(home, &rx, Instant::now() + self.timeout)?
            .map_err(ApiError::Refused)
    }

    /// Every channel with its member count, sorted by name.
    pub fn channels(&self) -> Result<Vec<(String, u32)>, ApiError> {
        let until = Instant::now() + self.timeout;
        let mut waiting = Vec::with_capacity(self.posts.len());
        for w in 0..self.posts.len() {
            let (answer, rx) = bounded(1);
            self.post(w, ApiCall::Channels { answer })?;
            waiting.push((w, rx));
        }
        let mut all = Vec::new();
        for (w, rx) in waiting {
            all.extend(self.wait(w, &rx, until)?);
        }
        all.sort();
        Ok(all)
    }

    /// The users present in `channel`, sorted.
    pub fn presence(&self, channel: &str) -> Result<Vec<String>, ApiError> {
        check_channel(channel).map_err(ApiError::Refused)?;
        let home = home_of(channel, self.posts.len());
        let (answer, rx) = bounded(1);
        self.post(
            home,
            ApiCall::Presence {
                channel: channel.into(),
                answer,
            },
        )?;
        let mut users = self.wait(home, &rx, Instant::now() + self.timeout)?;
        users.sort();
        Ok(users)
    }
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("workers", &self.posts.len())
            .finish()
    }
}
