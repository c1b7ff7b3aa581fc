//! Exponential backoff with a cap and a reset, the one way every retry loop in the daemon
//! (accept errors, reopening the multicast socket, resending a mount request) waits.

use std::time::Duration;

/// Doubles from `first` up to `max` on each [`Backoff::next_delay`]; [`Backoff::reset`] after a
/// success starts over.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff that waits `first`, then twice as long each time, at most `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            current: first,
        }
    }

    /// The wait to use now; the next call returns twice as much (capped).
    pub fn next_delay(&mut self) -> Duration {
        let now = self.current;
        self.current = (self.current * 2).min(self.max);
        now
    }

    /// The wait [`Backoff::next_delay`] would return, without advancing.
    pub fn peek(&self) -> Duration {
        self.current
    }

    /// Start over after a success.
    pub fn reset(&mut self) {
        self.current = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(10), ms(35));
        assert_eq!(
            [
                b.next_delay(),
                b.next_delay(),
                b.next_delay(),
                b.next_delay()
            ],
            [ms(10), ms(20), ms(35), ms(35)]
        );
        b.reset();
        assert_eq!(b.next_delay(), ms(10));
    }
}
