//! Gossip seeds: where a daemon knocks to join, until someone answers.
//!
//! A plain state machine (the layer does the name lookups and the sending): each seed is
//! tried at start and retried with backoff until a packet arrives from one of its
//! addresses; names are looked up again on every try (a seed may move); a seed that has
//! never answered after a few tries says so in `status`. When every member is lost the
//! seeds are tried again, so a partition heals by itself.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::config::Seed;
use crate::model::Backoff;

/// Tries without an answer after which a seed is reported as never answering.
const TRIES_BEFORE_NEVER: u32 = 3;

/// How a seed is doing, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeedState {
    /// Being tried; no answer yet.
    Trying,
    /// It answered: we are in.
    Joined,
    /// Tried several times, never answered (still retried, with backoff).
    #[serde(rename = "never answered")]
    NeverAnswered,
    /// It is us (the same config on every host lists every seed).
    #[serde(rename = "self")]
    Myself,
}

/// One seed, as `status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    /// `host:port` as configured.
    pub seed: String,
    /// How it is doing.
    pub state: SeedState,
    /// Why the last try failed (a name that does not resolve), if it did.
    pub error: Option<String>,
}

struct Entry {
    seed: Seed,
    addrs: Vec<SocketAddr>,
    state: SeedState,
    error: Option<String>,
    tries: u32,
    backoff: Backoff,
    next: Option<Instant>,
    resolving: bool,
}

/// Every configured seed.
pub struct Seeds {
    entries: Vec<Entry>,
    /// Our own gossip addresses (a seed resolving to one of them is us).
    own: Vec<SocketAddr>,
}

impl Seeds {
    /// The configured seeds, all due now. `salt` seeds the retries' jitter (this node's
    /// id: different on every machine, the same in every run of a simulation).
    pub fn new(seeds: &[Seed], own: Vec<SocketAddr>, now: Instant, salt: u64) -> Seeds {
        Seeds {
            entries: seeds
                .iter()
                .enumerate()
                .map(|(i, s)| Entry {
                    seed: s.clone(),
                    addrs: Vec::new(),
                    state: SeedState::Trying,
                    error: None,
                    tries: 0,
                    backoff: Backoff::seeded(
                        Duration::from_millis(500),
                        Duration::from_secs(10),
                        salt.wrapping_add(i as u64),
                    ),
                    next: Some(now),
                    resolving: false,
                })
                .collect(),
            own,
        }
    }

    /// When the next seed is due for a try.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter(|e| !e.resolving)
            .filter_map(|e| e.next)
            .min()
    }

    /// The seeds due at `now` (index, the seed to look up); they are marked as being
    /// looked up until [`Seeds::resolved`].
    pub fn due(&mut self, now: Instant) -> Vec<(usize, Seed)> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            if !e.resolving && e.next.is_some_and(|t| t <= now) {
                e.resolving = true;
                e.next = None;
                out.push((i, e.seed.clone()));
            }
        }
        out
    }

    /// A lookup finished: the addresses to knock at now (none when it failed or the seed
    /// is us), and the next try is scheduled.
    pub fn resolved(
        &mut self,
        i: usize,
        result: Result<Vec<SocketAddr>, String>,
        now: Instant,
    ) -> Vec<SocketAddr> {
        let own = self.own.clone();
        let Some(e) = self.entries.get_mut(i) else {
            return Vec::new();
        };
        e.resolving = false;
        e.tries += 1;
        let knock = match result {
            Ok(addrs) if !addrs.is_empty() && addrs.iter().all(|a| own.contains(a)) => {
                e.state = SeedState::Myself;
                e.error = None;
                e.addrs = addrs;
                return Vec::new(); // never retried
            }
            Ok(addrs) => {
                e.error = None;
                e.addrs = addrs.into_iter().filter(|a| !own.contains(a)).collect();
                e.addrs.clone()
            }
            Err(why) => {
                e.error = Some(why);
                Vec::new()
            }
        };
        if e.state != SeedState::Joined {
            if e.tries >= TRIES_BEFORE_NEVER {
                e.state = SeedState::NeverAnswered;
            }
            e.next = Some(now + e.backoff.next_delay());
        }
        knock
    }

    /// A packet arrived from `from`: a seed at that address has answered.
    pub fn heard_from(&mut self, from: SocketAddr) {
        for e in &mut self.entries {
            if e.state != SeedState::Joined
                && e.state != SeedState::Myself
                && e.addrs.contains(&from)
            {
                e.state = SeedState::Joined;
                e.error = None;
                e.next = None;
                e.backoff.reset();
            }
        }
    }

    /// Every member was lost: knock again at every seed (a partition heals by itself).
    pub fn all_lost(&mut self, now: Instant) {
        for e in &mut self.entries {
            if e.state == SeedState::Joined {
                e.state = SeedState::Trying;
                e.tries = 0;
                e.next = Some(now);
            }
        }
    }

    /// What `status` shows.
    pub fn report(&self) -> Vec<SeedReport> {
        self.entries
            .iter()
            .map(|e| SeedReport {
                seed: e.seed.to_string(),
                state: e.state,
                error: e.error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(h: &str) -> Seed {
        Seed::parse(h, 32004).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn seeds_are_retried_with_backoff_until_one_answers() {
        let now = Instant::now();
        let me: SocketAddr = "198.18.1.9:32004".parse().unwrap();
        let mut s = Seeds::new(&[seed("a.example"), seed("198.18.1.9")], vec![me], now, 1);
        let due = s.due(now);
        assert_eq!(due.len(), 2);
        assert_eq!(s.next_due(), None, "both are being looked up");
        let a: SocketAddr = "198.18.1.1:32004".parse().unwrap();
        assert_eq!(s.resolved(0, Ok(vec![a]), now), vec![a]);
        assert!(
            s.resolved(1, Ok(vec![me]), now).is_empty(),
            "a seed that is us"
        );
        let first_retry = s.next_due().unwrap();
        assert!(first_retry > now);
        // No answer: tried again, later each time, and reported as never answering.
        let mut t = first_retry;
        let mut gaps = Vec::new();
        for _ in 0..3 {
            assert_eq!(s.due(t).len(), 1);
            s.resolved(0, Err("no such host".into()), t);
            let next = s.next_due().unwrap();
            gaps.push(next - t);
            t = next;
        }
        assert!(gaps.windows(2).all(|w| w[1] >= w[0]), "{gaps:?}");
        let r = s.report();
        assert_eq!(r[0].state, SeedState::NeverAnswered);
        assert_eq!(r[0].error.as_deref(), Some("no such host"));
        assert_eq!(r[1].state, SeedState::Myself);
        // It answers: joined, not retried; losing every member tries it again.
        s.due(t);
        s.resolved(0, Ok(vec![a]), t);
        s.heard_from(a);
        assert_eq!(s.report()[0].state, SeedState::Joined);
        assert_eq!(s.next_due(), None);
        s.all_lost(t);
        assert_eq!(s.next_due(), Some(t));
    }
}
