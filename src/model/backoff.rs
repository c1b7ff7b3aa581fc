//! Exponential backoff with a cap, jitter and a reset, the one way every retry loop in the
//! daemon (accept errors, reopening the multicast socket, retrying a seed, making the store
//! durable again) waits.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Doubles from `first` up to `max` on each [`Backoff::next_delay`]; [`Backoff::reset`]
/// after a success starts over. Each wait is drawn between half and all of that ("equal
/// jitter"), so machines that failed together (a seed or a DNS server back after an
/// outage) do not all retry in the same instant.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// The wait before jitter.
    base: Duration,
    /// The wait the next [`Backoff::next_delay`] returns (drawn ahead, so that
    /// [`Backoff::peek`] can tell it).
    next: Duration,
    rng: StdRng,
}

impl Backoff {
    /// A backoff that waits about `first`, then twice as long each time, at most `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff::seeded(first, max, rand::random())
    }

    /// The same, with its jitter drawn from `seed`: `diskd-bench sim` needs one seed to
    /// give one run, so the peer layer seeds its backoffs from what is already seeded.
    pub fn seeded(first: Duration, max: Duration, seed: u64) -> Backoff {
        let mut rng = StdRng::seed_from_u64(seed);
        let next = jittered(first, &mut rng);
        Backoff {
            first,
            max,
            base: first,
            next,
            rng,
        }
    }

    /// The wait to use now; the next call returns about twice as much (capped).
    pub fn next_delay(&mut self) -> Duration {
        let now = self.next;
        self.base = (self.base * 2).min(self.max);
        self.next = jittered(self.base, &mut self.rng);
        now
    }

    /// The wait [`Backoff::next_delay`] would return, without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Start over after a success.
    pub fn reset(&mut self) {
        self.base = self.first;
        self.next = jittered(self.first, &mut self.rng);
    }
}

/// Between half of `base` and `base`.
fn jittered(base: Duration, rng: &mut StdRng) -> Duration {
    base / 2 + base.mul_f64(rng.gen_range(0.0..=0.5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(10), ms(35));
        let bases = [10, 20, 35, 35];
        let waits: Vec<Duration> = bases
            .iter()
            .map(|_| {
                let peeked = b.peek();
                let got = b.next_delay();
                assert_eq!(peeked, got, "peek tells the next wait");
                got
            })
            .collect();
        for (w, base) in waits.iter().zip(bases) {
            assert!(*w >= ms(base) / 2 && *w <= ms(base), "{waits:?}");
        }
        b.reset();
        let w = b.next_delay();
        assert!(w >= ms(5) && w <= ms(10), "{w:?}");
    }

    #[test]
    fn the_jitter_spreads_machines_and_one_seed_repeats() {
        let s = Duration::from_secs;
        let waits = |seed| {
            let mut b = Backoff::seeded(s(1), s(60), seed);
            (0..6).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(waits(7), waits(7));
        let firsts: std::collections::BTreeSet<Duration> =
            (0..20).map(|seed| waits(seed)[0]).collect();
        assert!(firsts.len() > 10, "{firsts:?}");
    }
}
