//! Replay protection for authenticated traffic.
//!
//! Each sender numbers its datagrams per boot (a random id per run). We keep, per sender, the
//! current boot, the highest sequence number and a 64-entry window below it: a duplicate or
//! a datagram older than the window is dropped. A datagram of another boot is accepted only
//! if its timestamp is later than anything accepted from that sender, so a capture from an
//! earlier run cannot be played back either. Timestamps further than the tolerance from our
//! clock are dropped outright, which bounds how old a replayable capture can be.

use std::collections::BTreeMap;

use super::wire::Reject;

const WINDOW: u64 = 64;

#[derive(Debug, Clone, Copy)]
struct SenderState {
    boot: u64,
    highest: u64,
    /// Bit i set: `highest - i` was seen.
    seen: u64,
    latest_sent_ms: u64,
    touched_ms: u64,
    /// Restored from the store after our restart: which sequence numbers of `boot` we saw
    /// is unknown, so only datagrams newer than `latest_sent_ms` are accepted until one is.
    restored: bool,
}

/// Per-sender replay windows, bounded in number.
#[derive(Debug)]
pub struct ReplayGuard {
    senders: BTreeMap<String, SenderState>,
    tolerance_ms: u64,
    max_senders: usize,
}

impl ReplayGuard {
    /// A guard accepting timestamps within `tolerance_ms` of our clock, remembering at most
    /// `max_senders` senders (the least recently heard are forgotten first).
    pub fn new(tolerance_ms: u64, max_senders: usize) -> ReplayGuard {
        ReplayGuard {
            senders: BTreeMap::new(),
            tolerance_ms,
            max_senders,
        }
    }

    /// Remember a sender from before our restart: nothing it sent at or before `sent_ms`
    /// will be accepted again.
    pub fn restore(&mut self, node_id: &str, boot: u64, sent_ms: u64, now_ms: u64) {
        if self.senders.len() < self.max_senders {
            self.senders.insert(
                node_id.to_string(),
                SenderState {
                    boot,
                    highest: 0,
                    seen: 0,
                    latest_sent_ms: sent_ms,
                    touched_ms: now_ms,
                    restored: true,
                },
            );
        }
    }

    /// Check and record one datagram.
    pub fn check(
        &mut self,
        node_id: &str,
        boot: u64,
        seq: u64,
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<(), Reject> {
        if sent_ms.abs_diff(now_ms) > self.tolerance_ms {
            return Err(Reject::ClockSkew);
        }
        // A sender's first accepted datagram (first contact, a new boot, or the first since
        // our restart) marks everything older as seen: we cannot tell an old datagram we
        // missed from a replay of it, so neither is accepted.
        let fresh = SenderState {
            boot,
            highest: seq,
            seen: u64::MAX,
            latest_sent_ms: sent_ms,
            touched_ms: now_ms,
            restored: false,
        };
        let Some(s) = self.senders.get_mut(node_id) else {
            if self.senders.len() >= self.max_senders {
                super::forget_oldest(&mut self.senders, |s| s.touched_ms);
            }
            self.senders.insert(node_id.to_string(), fresh);
            return Ok(());
        };
        if s.boot != boot || s.restored {
            if sent_ms <= s.latest_sent_ms {
                return Err(Reject::Replay);
            }
            *s = fresh;
            return Ok(());
        }
        if seq > s.highest {
            let shift = seq - s.highest;
            s.seen = if shift >= WINDOW { 0 } else { s.seen << shift };
            s.seen |= 1;
            s.highest = seq;
        } else {
            let age = s.highest - seq;
            if age >= WINDOW || s.seen & (1 << age) != 0 {
                return Err(Reject::Replay);
            }
            s.seen |= 1 << age;
        }
        s.latest_sent_ms = s.latest_sent_ms.max(sent_ms);
        s.touched_ms = now_ms;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn duplicates_and_old_sequence_numbers_are_dropped() {
        let mut g = ReplayGuard::new(300_000, 10);
        assert_eq!(g.check("a", 1, 10, NOW, NOW), Ok(()));
        assert_eq!(g.check("a", 1, 10, NOW, NOW), Err(Reject::Replay));
        assert_eq!(g.check("a", 1, 12, NOW, NOW), Ok(()));
        assert_eq!(
            g.check("a", 1, 11, NOW, NOW),
            Ok(()),
            "out of order within the window"
        );
        assert_eq!(g.check("a", 1, 11, NOW, NOW), Err(Reject::Replay));
        assert_eq!(g.check("a", 1, 200, NOW, NOW), Ok(()));
        assert_eq!(
            g.check("a", 1, 12, NOW, NOW),
            Err(Reject::Replay),
            "older than the window"
        );
        assert_eq!(
            g.check("b", 1, 10, NOW, NOW),
            Ok(()),
            "other senders are separate"
        );
    }

    #[test]
    fn an_earlier_boot_cannot_be_replayed_after_a_restart() {
        let mut g = ReplayGuard::new(300_000, 10);
        assert_eq!(g.check("a", 1, 5, NOW - 1000, NOW), Ok(()));
        // The sender restarted: new boot, later timestamp.
        assert_eq!(g.check("a", 2, 1, NOW, NOW), Ok(()));
        // A capture of the old run (goodbye, say) is refused.
        assert_eq!(g.check("a", 1, 6, NOW - 900, NOW), Err(Reject::Replay));
        assert_eq!(g.check("a", 2, 2, NOW + 1, NOW), Ok(()));
    }

    #[test]
    fn a_restored_sender_accepts_only_newer_datagrams() {
        let mut g = ReplayGuard::new(300_000, 10);
        g.restore("a", 1, NOW - 1000, NOW);
        assert_eq!(g.check("a", 1, 7, NOW - 1000, NOW), Err(Reject::Replay));
        assert_eq!(g.check("a", 1, 3, NOW - 5000, NOW), Err(Reject::Replay));
        assert_eq!(g.check("a", 1, 8, NOW - 999, NOW), Ok(()));
        // From then on the window applies again, and nothing older is taken.
        assert_eq!(g.check("a", 1, 8, NOW - 999, NOW), Err(Reject::Replay));
        assert_eq!(g.check("a", 1, 6, NOW - 999, NOW), Err(Reject::Replay));
        assert_eq!(g.check("a", 1, 9, NOW - 998, NOW), Ok(()));
    }

    #[test]
    fn timestamps_outside_the_tolerance_are_dropped() {
        let mut g = ReplayGuard::new(300_000, 10);
        assert_eq!(
            g.check("a", 1, 1, NOW - 300_001, NOW),
            Err(Reject::ClockSkew)
        );
        assert_eq!(
            g.check("a", 1, 1, NOW + 300_001, NOW),
            Err(Reject::ClockSkew)
        );
        assert_eq!(g.check("a", 1, 1, NOW + 299_000, NOW), Ok(()));
    }

    #[test]
    fn memory_is_bounded() {
        let mut g = ReplayGuard::new(300_000, 100);
        for i in 0..10_000u64 {
            g.check(&format!("n{i}"), 1, 1, NOW, NOW + i).unwrap();
        }
        assert_eq!(g.senders.len(), 100);
    }
}
