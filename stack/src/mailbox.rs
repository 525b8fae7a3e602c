//! Worker mailboxes: bounded queues through which other workers and other threads (the admin
//! endpoint, a broker or database bridge) reach a worker.
//!
//! Every worker has one [`Mailbox`], drained once per loop iteration. Anyone holding the
//! worker's [`Postbox`] (all of them: [`Postboxes`]) can post a typed message for its service
//! ([`crate::Service::on_message`]). A full mailbox is the sender's problem, never growth: the
//! post fails with [`PostError::Full`] and is counted at the mailbox.
//!
//! Waking: a DPDK worker polls and drains its mailbox every iteration, without a system call. A
//! kernel-socket worker may be asleep in its poller; it says so before it sleeps, and a post only
//! then pays for a wake-up (a `mio::Waker`), so busy workers exchange messages without system
//! calls too.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TrySendError};

/// Messages a worker takes per loop iteration at most, so a flood of posts cannot starve its
/// connections; the rest wait for the next iteration.
pub const DRAIN_PER_ITERATION: usize = 1024;

/// What travels through a mailbox: a service's message, or one of the transport's own.
pub(crate) enum Letter<M> {
    /// For the service.
    Service(M),
    /// A neighbour another DPDK worker learned by ARP.
    #[cfg_attr(not(feature = "dpdk"), allow(dead_code))]
    Neighbour(Ipv4Addr, [u8; 6]),
    /// A connection accepted by the shared listener (kernel transport), for this worker to serve.
    Adopt(mio::net::TcpStream, SocketAddr),
}

/// Why a post failed; the message comes back.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PostError<M> {
    /// The worker's mailbox is full: it is not keeping up (counted at the mailbox).
    #[error("worker {worker}'s mailbox is full")]
    Full {
        /// The worker.
        worker: usize,
        /// The message, not delivered.
        message: M,
    },
    /// The worker has stopped.
    #[error("worker {worker} has stopped")]
    Stopped {
        /// The worker.
        worker: usize,
        /// The message, not delivered.
        message: M,
    },
    /// There is no such worker.
    #[error("there is no worker {worker}")]
    NoSuchWorker {
        /// The worker asked for.
        worker: usize,
        /// The message, not delivered.
        message: M,
    },
}

impl<M> PostError<M> {
    /// The message that was not delivered.
    pub fn into_message(self) -> M {
        match self {
            Self::Full { message, .. }
            | Self::Stopped { message, .. }
            | Self::NoSuchWorker { message, .. } => message,
        }
    }
}

/// Counters and wake-up state of one mailbox, shared by its senders and its worker.
#[derive(Debug, Default)]
pub struct MailStats {
    /// Messages refused because the mailbox was full (written by senders).
    refused: AtomicU64,
    /// The worker is about to sleep (or sleeps) in its poller: a post must wake it.
    sleeping: AtomicBool,
}

impl MailStats {
    /// Posts refused because the mailbox was full, so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// A handle that posts to one worker's mailbox. Cheap to clone; usable from any thread.
pub struct Postbox<M> {
    worker: usize,
    tx: Sender<Letter<M>>,
    stats: Arc<MailStats>,
    waker: Option<Arc<mio::Waker>>,
}

impl<M> Clone for Postbox<M> {
    fn clone(&self) -> Self {
        Self {
            worker: self.worker,
            tx: self.tx.clone(),
            stats: Arc::clone(&self.stats),
            waker: self.waker.clone(),
        }
    }
}

impl<M> Postbox<M> {
    /// Post `message` for the worker's service.
    pub fn post(&self, message: M) -> Result<(), PostError<M>> {
        self.send(Letter::Service(message)).map_err(|e| match e {
            (Letter::Service(message), full) => {
                if full {
                    PostError::Full {
                        worker: self.worker,
                        message,
                    }
                } else {
                    PostError::Stopped {
                        worker: self.worker,
                        message,
                    }
                }
            }
            // `send` hands back the letter it was given.
            _ => unreachable!("a service letter comes back as one"),
        })
    }

    /// Post a transport letter; on failure, the letter and whether the mailbox was full.
    pub(crate) fn send(&self, letter: Letter<M>) -> Result<(), (Letter<M>, bool)> {
        match self.tx.try_send(letter) {
            Ok(()) => {
                // Pairs with the fence in `Mailbox::sleep`: either the worker's last look at the
                // queue sees this letter, or this load sees it sleeping (and it is woken).
                fence(Ordering::SeqCst);
                if self.stats.sleeping.load(Ordering::SeqCst) {
                    if let Some(w) = &self.waker {
                        if let Err(e) = w.wake() {
                            tracing::debug!(worker = self.worker, error = %e, "cannot wake a worker");
                        }
                    }
                }
                Ok(())
            }
            Err(TrySendError::Full(letter)) => {
                self.stats.refused.fetch_add(1, Ordering::Relaxed);
                Err((letter, true))
            }
            Err(TrySendError::Disconnected(letter)) => Err((letter, false)),
        }
    }

    /// The worker this postbox reaches.
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The mailbox's counters.
    pub fn stats(&self) -> &Arc<MailStats> {
        &self.stats
    }

    /// Wake the worker (e.g. after changing a setting it reads), whether or not it sleeps.
    pub fn wake(&self) {
        if let Some(w) = &self.waker {
            let _ = w.wake();
        }
    }
}

/// The postboxes of every worker of a transport, in worker order.
pub struct Postboxes<M>(Arc<[Postbox<M>]>);

impl<M> Clone for Postboxes<M> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<M> Postboxes<M> {
    /// Post `message` to worker `worker`'s service.
    pub fn post(&self, worker: usize, message: M) -> Result<(), PostError<M>> {
        match self.0.get(worker) {
            Some(p) => p.post(message),
            None => Err(PostError::NoSuchWorker { worker, message }),
        }
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no workers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Worker `worker`'s postbox.
    pub fn get(&self, worker: usize) -> Option<&Postbox<M>> {
        self.0.get(worker)
    }

    /// Every postbox, in worker order.
    pub fn iter(&self) -> impl Iterator<Item = &Postbox<M>> {
        self.0.iter()
    }
}

/// One worker's end of its mailbox.
pub struct Mailbox<M> {
    rx: Receiver<Letter<M>>,
    stats: Arc<MailStats>,
    /// Letters taken out so far.
    received: u64,
}

impl<M> Mailbox<M> {
    /// The next letter, if any.
    pub(crate) fn take(&mut self) -> Option<Letter<M>> {
        let letter = self.rx.try_recv().ok()?;
        self.received += 1;
        Some(letter)
    }

    /// Letters waiting.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no letter waits.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }

    /// Letters taken out so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Posts refused because this mailbox was full, so far.
    pub fn refused(&self) -> u64 {
        self.stats.refused()
    }

    /// About to block in the poller: from now on posts wake the worker. Returns `false` (and
    /// stays awake) if a letter is already waiting.
    pub fn sleep(&self) -> bool {
        self.stats.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.rx.is_empty() {
            self.stats.sleeping.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Back from the poller.
    pub fn wake(&self) {
        self.stats.sleeping.store(false, Ordering::Relaxed);
    }
}

/// Mailboxes of `capacity` letters for `workers` workers, with their postboxes; `wakers[i]`, if
/// any, wakes worker `i` from its poller.
pub fn mailboxes<M>(
    capacity: usize,
    wakers: Vec<Option<Arc<mio::Waker>>>,
) -> (Postboxes<M>, Vec<Mailbox<M>>) {
    let mut boxes = Vec::with_capacity(wakers.len());
    let mut posts = Vec::with_capacity(wakers.len());
    for (worker, waker) in wakers.into_iter().enumerate() {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        let stats = Arc::new(MailStats::default());
        posts.push(Postbox {
            worker,
            tx,
            stats: Arc::clone(&stats),
            waker,
        });
        boxes.push(Mailbox {
            rx,
            stats,
            received: 0,
        });
    }
    (Postboxes(posts.into()), boxes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_mailbox_refuses_returns_the_message_and_counts() {
        let (posts, mut boxes) = mailboxes::<u32>(2, vec![None, None]);
        assert_eq!(posts.post(1, 10), Ok(()));
        assert_eq!(posts.post(1, 11), Ok(()));
        match posts.post(1, 12) {
            Err(e @ PostError::Full { worker: 1, .. }) => {
                assert_eq!(e.to_string(), "worker 1's mailbox is full");
                assert_eq!(e.into_message(), 12);
            }
            other => panic!("expected Full, got {other:?}"),
        }
        assert_eq!(boxes[1].refused(), 1);
        assert_eq!(boxes[0].refused(), 0);
        let got: Vec<u32> = std::iter::from_fn(|| boxes[1].take())
            .map(|l| match l {
                Letter::Service(m) => m,
                _ => panic!("only service letters were posted"),
            })
            .collect();
        assert_eq!(got, [10, 11], "in order, nothing lost before the limit");
        assert_eq!(boxes[1].received(), 2);
        assert_eq!(posts.post(1, 13), Ok(()), "room again once drained");
        assert!(matches!(
            posts.post(2, 1),
            Err(PostError::NoSuchWorker { worker: 2, .. })
        ));
        drop(boxes);
        assert!(matches!(
            posts.post(0, 1),
            Err(PostError::Stopped { worker: 0, .. })
        ));
    }

    #[test]
    fn a_sleeping_worker_is_woken_and_a_busy_one_is_not() {
        let poll_for = |poll: &mut mio::Poll, ms: u64| {
            let mut events = mio::Events::with_capacity(4);
            poll.poll(&mut events, Some(std::time::Duration::from_millis(ms)))
                .expect("poll");
            !events.is_empty()
        };
        let mut poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(7)).expect("waker"));
        let (posts, boxes) = mailboxes::<()>(8, vec![Some(waker)]);
        // Awake (busy) worker: a post costs no wake-up system call.
        posts.post(0, ()).expect("posted");
        assert!(!poll_for(&mut poll, 0), "no wake-up while awake");
        assert!(!boxes[0].sleep(), "a letter waits: do not sleep");
        // Asleep with an empty mailbox: a post wakes it.
        let mut poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(8)).expect("waker"));
        let (posts, boxes) = mailboxes::<()>(8, vec![Some(waker)]);
        assert!(boxes[0].sleep());
        posts.post(0, ()).expect("posted");
        assert!(poll_for(&mut poll, 1000), "sleeping worker woken");
        boxes[0].wake();
        posts.post(0, ()).expect("posted");
        assert!(!poll_for(&mut poll, 0), "awake again: no wake-up");
    }
}
