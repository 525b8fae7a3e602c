//! The worker-local side of membership: which of this worker's sessions are in which channel,
//! and which channels each session joined (as which user).
//!
//! A session's membership is *pending* from its `join` until the channel's home answers
//! `joined`: until then it gets none of the channel's frames, since everything the home sent
//! before that answer is in the answer's history. Home and worker exchange messages in order, so
//! the frames after the answer are exactly those with a higher seq.

use std::collections::HashMap;
use std::sync::Arc;

use hioload_stack::ConnId;

/// One channel a session joined.
#[derive(Debug, Clone)]
pub struct Membership {
    /// The channel.
    pub channel: Arc<str>,
    /// The user name it joined as.
    pub user: Arc<str>,
    /// Whether the home's `joined` has arrived (frames are delivered).
    pub active: bool,
}

/// The members of one channel on this worker.
#[derive(Debug, Default)]
struct Local {
    conns: Vec<ConnId>,
    /// Where each session is in `conns` (removal in O(1)).
    index: HashMap<ConnId, usize>,
}

/// Memberships of one worker's sessions.
#[derive(Debug, Default)]
pub struct Members {
    channels: HashMap<Arc<str>, Local>,
    sessions: HashMap<ConnId, Vec<Membership>>,
    /// Memberships over all sessions (kept, not summed: it is read after every message).
    count: usize,
}

impl Members {
    /// The active members of `channel` on this worker.
    pub fn of(&self, channel: &str) -> &[ConnId] {
        self.channels.get(channel).map_or(&[], |l| &l.conns)
    }

    /// The channels `conn` joined (pending or active).
    pub fn joined(&self, conn: ConnId) -> &[Membership] {
        self.sessions.get(&conn).map_or(&[], Vec::as_slice)
    }

    /// `conn`'s membership of `channel`, if it joined it.
    pub fn membership(&self, conn: ConnId, channel: &str) -> Option<&Membership> {
        self.joined(conn).iter().find(|m| &*m.channel == channel)
    }

    /// Members of channels on this worker, active or pending.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Record that `conn` joined `channel` as `user`, pending the home's answer.
    pub fn add_pending(&mut self, conn: ConnId, channel: Arc<str>, user: Arc<str>) {
        self.count += 1;
        self.sessions.entry(conn).or_default().push(Membership {
            channel,
            user,
            active: false,
        });
    }

    /// The home's `joined` arrived: `conn` gets `channel`'s frames from now on. False if it
    /// left (or closed) meanwhile.
    pub fn activate(&mut self, conn: ConnId, channel: &Arc<str>) -> bool {
        let Some(m) = self
            .sessions
            .get_mut(&conn)
            .and_then(|v| v.iter_mut().find(|m| m.channel == *channel))
        else {
            return false;
        };
        if !m.active {
            m.active = true;
            let local = self.channels.entry(Arc::clone(channel)).or_default();
            local.index.insert(conn, local.conns.len());
            local.conns.push(conn);
        }
        true
    }

    /// `conn` leaves `channel`: no more frames. The membership, if there was one.
    pub fn remove(&mut self, conn: ConnId, channel: &str) -> Option<Membership> {
        let list = self.sessions.get_mut(&conn)?;
        let at = list.iter().position(|m| &*m.channel == channel)?;
        let m = list.swap_remove(at);
        self.count -= 1;
        if list.is_empty() {
            self.sessions.remove(&conn);
        }
        if m.active {
            self.unlist(conn, channel);
        }
        Some(m)
    }

    /// `conn` closed: every membership it had.
    pub fn remove_all(&mut self, conn: ConnId) -> Vec<Membership> {
        let list = self.sessions.remove(&conn).unwrap_or_default();
        self.count -= list.len();
        for m in list.iter().filter(|m| m.active) {
            self.unlist(conn, &m.channel);
        }
        list
    }

    fn unlist(&mut self, conn: ConnId, channel: &str) {
        let Some(local) = self.channels.get_mut(channel) else {
            return;
        };
        if let Some(i) = local.index.remove(&conn) {
            local.conns.swap_remove(i);
            if let Some(moved) = local.conns.get(i) {
                local.index.insert(*moved, i);
            }
        }
        if local.conns.is_empty() {
            self.channels.remove(channel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(slot: u32) -> ConnId {
        ConnId {
            worker: 0,
            slot,
            generation: 1,
        }
    }

    #[test]
    fn pending_members_get_nothing_until_activated() {
        let mut m = Members::default();
        let room: Arc<str> = "room".into();
        m.add_pending(c(1), Arc::clone(&room), "ann".into());
        assert!(m.of("room").is_empty());
        assert_eq!(m.joined(c(1)).len(), 1);
        assert!(m.activate(c(1), &room));
        assert_eq!(m.of("room"), [c(1)]);
        assert!(!m.activate(c(2), &room), "never joined");
    }

    #[test]
    fn removal_keeps_the_others_listed() {
        let mut m = Members::default();
        let room: Arc<str> = "room".into();
        for i in 0..5 {
            m.add_pending(c(i), Arc::clone(&room), "u".into());
            m.activate(c(i), &room);
        }
        assert_eq!(m.remove(c(1), "room").map(|x| x.active), Some(true));
        assert!(m.remove(c(1), "room").is_none());
        let mut left = m.of("room").to_vec();
        left.sort_by_key(|c| c.slot);
        assert_eq!(left, [c(0), c(2), c(3), c(4)]);
        m.add_pending(c(0), "other".into(), "u".into());
        assert_eq!(m.remove_all(c(0)).len(), 2);
        assert_eq!(m.count(), 3);
        for i in 2..5 {
            m.remove(c(i), "room");
        }
        assert!(m.of("room").is_empty());
        assert_eq!(m.count(), 0);
    }

    #[test]
    fn leaving_while_pending_means_activation_is_refused() {
        let mut m = Members::default();
        let room: Arc<str> = "room".into();
        m.add_pending(c(1), Arc::clone(&room), "ann".into());
        assert_eq!(m.remove(c(1), "room").map(|x| x.active), Some(false));
        assert!(!m.activate(c(1), &room));
        assert!(m.of("room").is_empty());
    }
}
