//! The session table: how many control sessions may be open, and whose.
//!
//! One user must not lock out another, and no local user may lock out root. So the accept
//! loop asks the table before it starts a session (mini-redis's semaphore, with owners):
//!
//! - at most [`MAX_SESSIONS`] sessions are open at once;
//! - the last [`RESERVED_SESSIONS`] of them are kept for privileged callers (root, the
//!   daemon's user, `control.admin_group`): many users together cannot fill the table;
//! - every other uid holds at most `control.max_sessions_per_user` sessions: one user
//!   (a runaway script, a hostile member of `socket_group`) cannot fill it either.
//!
//! Privileged callers are held to neither the share nor the reserve; the last
//! [`ROOT_SESSIONS`] sessions are root's alone, so root's `status` answers whatever the
//! other users hold, an admin who opens every session it may included. A refused connection costs one line written
//! without waiting and the close: nothing is kept for it. The table itself holds one
//! counter per uid with a session open, so it is bounded by [`MAX_SESSIONS`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::access::Caller;

pub use crate::model::limits::{
    DEFAULT_MAX_SESSIONS_PER_USER, MAX_SESSIONS, RESERVED_SESSIONS, ROOT_SESSIONS,
};

/// Why a session was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The caller's uid holds its share already.
    UserShare {
        /// The caller (`None`: the kernel did not say; such callers share one count).
        uid: Option<u32>,
        /// `control.max_sessions_per_user`.
        share: usize,
    },
    /// No session left that this caller may use.
    TableFull {
        /// The sessions this caller may have open together with everybody else.
        limit: usize,
        /// Whether the caller is privileged (then the whole table is full).
        privileged: bool,
    },
}

impl Refusal {
    /// The reason's name in `status` (`sessions_refused_by_reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UserShare { .. } => "user_share",
            Refusal::TableFull { .. } => "table_full",
        }
    }

    /// The one line the refused client reads (after `-ERR `).
    pub fn message(&self) -> String {
        match *self {
            Refusal::UserShare { uid, share } => format!(
                "too many sessions for uid {} (control.max_sessions_per_user: {share}); close some",
                uid.map_or_else(|| "unknown".to_string(), |u| u.to_string())
            ),
            Refusal::TableFull {
                limit,
                privileged: true,
            } => format!("too many sessions (limit {limit}); try again later"),
            Refusal::TableFull { limit, .. } => format!(
                "too many sessions (limit {limit}; the other {RESERVED_SESSIONS} are kept for \
                 root and control.admin_group); try again later"
            ),
        }
    }
}

/// The open sessions, counted per uid.
#[derive(Debug, Default)]
struct Counts {
    open: usize,
    /// Sessions of unprivileged callers by uid; an entry is removed when it drops to 0.
    by_uid: HashMap<Option<u32>, usize>,
}

/// The limits and the counts; cheap to clone (an `Arc`).
#[derive(Debug, Clone)]
pub struct SessionTable {
    total: usize,
    reserved: usize,
    per_user: usize,
    counts: Arc<Mutex<Counts>>,
}

/// An open session's place in the table, given back when dropped.
#[derive(Debug)]
pub struct Slot {
    counts: Arc<Mutex<Counts>>,
    /// The uid counted against its share; `None` for a privileged caller (not counted).
    uid: Option<Option<u32>>,
}

impl SessionTable {
    /// The daemon's table: [`MAX_SESSIONS`], [`RESERVED_SESSIONS`] of them kept, `per_user`
    /// for each other uid.
    pub fn new(per_user: usize) -> SessionTable {
        SessionTable::with_limits(MAX_SESSIONS, RESERVED_SESSIONS, per_user)
    }

    /// A table with other limits (tests).
    pub fn with_limits(total: usize, reserved: usize, per_user: usize) -> SessionTable {
        SessionTable {
            total,
            reserved: reserved.min(total),
            per_user,
            counts: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Nothing panics while holding it; a poisoned lock still holds sound counts.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a place for `caller`'s new session, or say why not. Never waits.
    pub fn admit(&self, caller: &Caller) -> Result<Slot, Refusal> {
        self.admit_as(caller.privileged(), caller.uid())
    }

    fn admit_as(&self, privileged: bool, uid: Option<u32>) -> Result<Slot, Refusal> {
        let mut c = self.lock();
        if privileged {
            // The last few are root's alone: an admin (a local user) cannot take them all.
            let limit = if uid == Some(0) {
                self.total
            } else {
                self.total - ROOT_SESSIONS.min(self.reserved)
            };
            if c.open >= limit {
                return Err(Refusal::TableFull { limit, privileged });
            }
            c.open += 1;
            return Ok(Slot {
                counts: self.counts.clone(),
                uid: None,
            });
        }
        let mine = c.by_uid.get(&uid).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(Refusal::UserShare {
                uid,
                share: self.per_user,
            });
        }
        let limit = self.total - self.reserved;
        if c.open >= limit {
            return Err(Refusal::TableFull { limit, privileged });
        }
        c.open += 1;
        *c.by_uid.entry(uid).or_insert(0) += 1;
        Ok(Slot {
            counts: self.counts.clone(),
            uid: Some(uid),
        })
    }

    /// Sessions open now.
    pub fn open(&self) -> usize {
        self.lock().open
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.open = c.open.saturating_sub(1);
        if let Some(uid) = self.uid {
            if let Some(n) = c.by_uid.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    c.by_uid.remove(&uid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_gets_its_share_and_the_next_user_its_own() {
        let t = SessionTable::with_limits(100, 10, 3);
        let mut a: Vec<Slot> = (0..3)
            .map(|_| t.admit_as(false, Some(1000)).unwrap())
            .collect();
        let refused = t.admit_as(false, Some(1000)).unwrap_err();
        assert_eq!(
            refused,
            Refusal::UserShare {
                uid: Some(1000),
                share: 3
            }
        );
        assert_eq!(
            refused.message(),
            "too many sessions for uid 1000 (control.max_sessions_per_user: 3); close some"
        );
        assert_eq!(refused.reason(), "user_share");
        let b = t.admit_as(false, Some(1001)).unwrap();
        assert_eq!(t.open(), 4);
        // One closed: room for one more of that user, and the count is exact again.
        a.pop();
        assert_eq!(t.open(), 3);
        let _again = t.admit_as(false, Some(1000)).unwrap();
        assert!(t.admit_as(false, Some(1000)).is_err());
        drop(b);
        assert_eq!(
            t.lock().by_uid.get(&Some(1001)),
            None,
            "no entry left behind"
        );
    }

    #[test]
    fn many_users_together_leave_the_reserve_to_root_and_admins() {
        let t = SessionTable::with_limits(20, 5, 2);
        let mut held = Vec::new();
        for uid in 1000.. {
            match t.admit_as(false, Some(uid)) {
                Ok(s) => held.push(s),
                Err(r) => {
                    assert_eq!(
                        r,
                        Refusal::TableFull {
                            limit: 15,
                            privileged: false
                        }
                    );
                    assert!(r.message().contains("kept for root"), "{}", r.message());
                    assert_eq!(r.reason(), "table_full");
                    break;
                }
            }
        }
        assert_eq!(held.len(), 15);
        // Root (or an admin) takes the reserve, and is held to no share.
        let root: Vec<Slot> = (0..5).map(|_| t.admit_as(true, Some(0)).unwrap()).collect();
        let full = t.admit_as(true, Some(0)).unwrap_err();
        drop(root);
        // An admin (privileged, not root) leaves root's own sessions alone.
        let admin: Vec<Slot> = (0..5 - ROOT_SESSIONS.min(5))
            .map(|_| t.admit_as(true, Some(1500)).unwrap())
            .collect();
        assert!(
            t.admit_as(true, Some(1500)).is_err(),
            "an admin took root's sessions"
        );
        let root: Vec<Slot> = (0..ROOT_SESSIONS.min(5))
            .map(|_| t.admit_as(true, Some(0)).unwrap())
            .collect();
        drop(admin);
        assert_eq!(
            full.message(),
            "too many sessions (limit 20); try again later"
        );
        drop(root);
        drop(held);
        assert_eq!(t.open(), 0);
        assert!(t.lock().by_uid.is_empty());
    }

    #[test]
    fn callers_the_kernel_did_not_name_share_one_count() {
        let t = SessionTable::with_limits(100, 10, 1);
        let _s = t.admit_as(false, None).unwrap();
        let r = t.admit_as(false, None).unwrap_err();
        assert!(r.message().contains("for uid unknown"), "{}", r.message());
    }
}
