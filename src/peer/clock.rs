//! The two clocks the peer layer reads, behind one value so tests can drive both.
//!
//! Records (`PeerRecord::last_seen`, the replay guard's timestamps) are in wall-clock
//! milliseconds; timers and pacing use the monotonic `tokio::time::Instant`. Under
//! `tokio::time::pause()` only the latter stands still and jumps, so a test clock derives
//! wall time from a fixed base plus the paused monotonic time elapsed: both move together.

use tokio::time::Instant;

use crate::model::{now_millis, Millis};

/// Where the layer reads the time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// `None`: the system clock. `Some`: wall time = base + (tokio now - origin).
    follow: Option<(Millis, Instant)>,
}

impl Clock {
    /// The real clocks: `SystemTime` and tokio's `Instant`.
    pub fn system() -> Clock {
        Clock { follow: None }
    }

    /// A clock whose wall time starts at `base_ms` now and advances with tokio's (possibly
    /// paused) time.
    pub fn following_tokio(base_ms: Millis) -> Clock {
        Clock {
            follow: Some((base_ms, Instant::now())),
        }
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub fn wall_ms(&self) -> Millis {
        match self.follow {
            None => now_millis(),
            Some((base, origin)) => base + origin.elapsed().as_millis() as Millis,
        }
    }

    /// Whether this clock follows tokio's (maybe paused) time rather than the system's.
    /// Paused time jumps ahead whenever the runtime is idle, even while work runs on
    /// another thread (sled's flush): the layer then keeps such work inside the runtime's
    /// sight (`spawn_blocking`, during which paused time holds still).
    pub fn is_simulated(&self) -> bool {
        self.follow.is_some()
    }

    /// The monotonic time (tokio's, so paused time applies).
    pub fn instant(&self) -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn the_test_clock_moves_with_paused_time() {
        let c = Clock::following_tokio(1_000_000);
        let t0 = c.instant();
        assert_eq!(c.wall_ms(), 1_000_000);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(c.wall_ms(), 1_090_000);
        assert_eq!(c.instant() - t0, Duration::from_secs(90));
    }
}
