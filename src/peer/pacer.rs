//! When to answer "please announce" (a ping, or a new or restarted peer).
//!
//! A wave of pings (a fleet restarting, say) must not make every daemon multicast its
//! inventory at once, nor once per ping. At most one announce per `ping.min_interval`: the
//! first request is answered after a random delay up to `PING_JITTER_MS` (as mDNS does
//! against reply storms); requests while an answer is pending are coalesced into it;
//! a request within the interval is deferred to its end, never dropped.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// Longest random delay before answering a ping.
pub const PING_JITTER_MS: u64 = 500;

/// What became of a request to announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// An announce is now scheduled at this time.
    Scheduled(Instant),
    /// One was already pending: this request is answered by it (count it suppressed).
    Coalesced,
}

/// The pacing state: when the pending answer is due, and when the last one was.
#[derive(Debug)]
pub struct PingPacer {
    min_interval: Duration,
    last_answer: Option<Instant>,
    answer_at: Option<Instant>,
}

impl PingPacer {
    /// At most one answer per `min_interval`.
    pub fn new(min_interval: Duration) -> PingPacer {
        PingPacer {
            min_interval,
            last_answer: None,
            answer_at: None,
        }
    }

    /// Somebody wants our inventory.
    pub fn want(&mut self, now: Instant, rng: &mut impl Rng) -> Want {
        if self.answer_at.is_some() {
            return Want::Coalesced;
        }
        let earliest = self
            .last_answer
            .map_or(now, |t| (t + self.min_interval).max(now));
        let delay = Duration::from_millis(rng.gen_range(0..=PING_JITTER_MS));
        let at = earliest + delay;
        self.answer_at = Some(at);
        self.last_answer = Some(at);
        Want::Scheduled(at)
    }

    /// When the pending answer is due, if one is.
    pub fn due_at(&self) -> Option<Instant> {
        self.answer_at
    }

    /// The pending answer's time came: the caller announces now.
    pub fn fired(&mut self) {
        self.answer_at = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MIN: Duration = Duration::from_secs(5);
    const JITTER: Duration = Duration::from_millis(PING_JITTER_MS);

    fn at(w: Want) -> Instant {
        match w {
            Want::Scheduled(t) => t,
            Want::Coalesced => panic!("expected a scheduled answer"),
        }
    }

    #[test]
    fn the_first_answer_comes_within_the_jitter_and_the_delays_vary() {
        let mut rng = StdRng::seed_from_u64(1);
        let now = Instant::now();
        let mut delays = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut p = PingPacer::new(MIN);
            let t = at(p.want(now, &mut rng));
            assert!(t >= now && t <= now + JITTER, "{:?}", t - now);
            assert_eq!(p.due_at(), Some(t));
            delays.insert(t - now);
        }
        assert!(delays.len() > 50, "delays are random: {}", delays.len());
    }

    /// A fresh pacer asked once now (its randomness seeded with `seed`): the pacer, its
    /// randomness, the time asked and the answer's time.
    fn asked_once(seed: u64) -> (PingPacer, StdRng, Instant, Instant) {
        let mut rng = StdRng::seed_from_u64(seed);
        let now = Instant::now();
        let mut p = PingPacer::new(MIN);
        let t = at(p.want(now, &mut rng));
        (p, rng, now, t)
    }

    #[test]
    fn requests_while_an_answer_is_pending_are_coalesced() {
        let (mut p, mut rng, now, t) = asked_once(2);
        for i in 0..10 {
            assert_eq!(
                p.want(now + Duration::from_millis(i), &mut rng),
                Want::Coalesced
            );
        }
        assert_eq!(p.due_at(), Some(t), "the pending answer did not move");
    }

    #[test]
    fn a_request_within_the_interval_is_deferred_to_its_end_not_dropped() {
        let (mut p, mut rng, _, first) = asked_once(3);
        p.fired();
        assert_eq!(p.due_at(), None);
        // One second after the answer: deferred to first + MIN (plus jitter).
        let second = at(p.want(first + Duration::from_secs(1), &mut rng));
        assert!(second >= first + MIN && second <= first + MIN + JITTER);
        p.fired();
        // Long after: answered within the jitter of the request.
        let late = second + Duration::from_secs(60);
        let third = at(p.want(late, &mut rng));
        assert!(third >= late && third <= late + JITTER);
    }
}
