//! What the layer sends: sealed envelopes, whole inventories (chunked and paced), the Perl
//! format when enabled, and what a failed send means (transient: count it; repeated or
//! fatal: reopen the transport).

use super::transport::Transport;
use super::wire::{self, Body, Envelope};
use super::{keys, legacy, Layer, PACE_EVERY, PACE_PAUSE, SEND_FAILURES_BEFORE_REOPEN};
use crate::model::DiskRecord;
use crate::telemetry::Stats;

impl Layer {
    pub(super) fn envelope(&mut self, body: Body) -> Envelope {
        self.me.seq += 1;
        let node = self.ctx.node();
        Envelope {
            node_id: node.id.clone(),
            node: node.name.clone(),
            boot: self.me.boot,
            seq: self.me.seq,
            sent_ms: self.clock.wall_ms(),
            body,
        }
    }

    /// An envelope for the gossip socket, to `to` (`None`: only measured, never sent).
    ///
    /// Gossip has sequence numbers of its own (see `GossipState::seq`), and each member
    /// gets a dense run of them: the receiver's replay window is 64 numbers wide, and with
    /// one counter for every destination a member would see gaps of hundreds (we sent to
    /// the others in between), so two of its datagrams swapped on the way would land
    /// outside the window and be refused as replays. A member's run continues from its
    /// last number; a member not remembered (new, or forgotten past the bound) starts at
    /// the shared counter, which is never below any number sent to anyone, so a member's
    /// numbers only ever grow.
    pub(super) fn envelope_gossip(
        &mut self,
        body: Body,
        to: Option<std::net::SocketAddr>,
    ) -> Envelope {
        let seq = match self.gossip.as_mut() {
            Some(gs) => next_seq(&mut gs.seq, &mut gs.dest_seq, to),
            None => 0,
        };
        let node = self.ctx.node();
        Envelope {
            node_id: node.id.clone(),
            node: node.name.clone(),
            boot: self.me.boot,
            seq,
            sent_ms: self.clock.wall_ms(),
            body,
        }
    }

    /// Seal, encode and multicast one message (nothing when multicast is off).
    pub(super) async fn send<T: Transport>(&mut self, t: &T, body: Body) -> std::io::Result<()> {
        if !self.ctx.config().multicast.enabled {
            return Ok(());
        }
        let env = self.envelope(body);
        let bytes = self.keys.seal(wire::encode(&env));
        let result = t.send(&bytes).await;
        self.after_send(t, result, bytes.len())
    }

    /// Count a send; a transient error (ENOBUFS, unreachable) is dropped and counted, but
    /// several in a row mean the link is gone: the sockets are reopened (with backoff), which
    /// also rejoins the group once the interface is back.
    fn after_send<T: Transport>(
        &mut self,
        t: &T,
        result: std::io::Result<()>,
        len: usize,
    ) -> std::io::Result<()> {
        match result {
            Ok(()) => {
                Stats::bump(&self.ctx.stats().packets_sent);
                self.ctx.add_bytes_sent(len);
                if std::mem::take(&mut self.announce.send_failures) > 0 {
                    tracing::info!("multicast sends work again");
                    self.ctx.set_peer_state(format!("up: {}", t.describe()));
                }
                Ok(())
            }
            Err(e) if transient(&e) => {
                Stats::bump(&self.ctx.stats().send_errors);
                self.announce.send_failures += 1;
                if self.announce.send_failures == 1 {
                    tracing::warn!("multicast send failed: {e}");
                    self.ctx
                        .set_peer_state(format!("degraded: sends fail: {e}"));
                    self.ctx
                        .event("error", format!("multicast send failed: {e}"));
                }
                if self.announce.send_failures >= SEND_FAILURES_BEFORE_REOPEN {
                    self.announce.send_failures = 0;
                    return Err(e);
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Send our whole inventory as one generation; returns the number of disks.
    pub(super) async fn announce<T: Transport>(&mut self, t: &T) -> std::io::Result<usize> {
        let disks = self.ctx.store().local_inventory();
        self.me.generation += 1;
        let template = self.envelope(Body::Ping);
        let mut max = self.ctx.config().multicast.max_datagram;
        if self.keys.enabled() {
            max -= keys::OVERHEAD;
        }
        let chunks = wire::chunk_inventory(&template, self.me.generation, &disks, max);
        for (i, c) in chunks.into_iter().enumerate() {
            if i > 0 && i % PACE_EVERY == 0 {
                // Let receivers drain their socket buffers during a large burst.
                tokio::time::sleep(PACE_PAUSE).await;
            }
            self.send(t, Body::Inventory(c)).await?;
        }
        if self.ctx.config().multicast.legacy && self.ctx.config().multicast.enabled {
            self.announce_legacy(t, &disks).await?;
        }
        Stats::bump(&self.ctx.stats().announces);
        self.ctx
            .event("peer", format!("announced {} disks", disks.len()));
        Ok(disks.len())
    }

    /// Send our inventory in the Perl format too (plaintext: the Perl diskd has no keys).
    async fn announce_legacy<T: Transport>(
        &mut self,
        t: &T,
        disks: &[DiskRecord],
    ) -> std::io::Result<()> {
        let (bytes, left_out) = legacy::encode(disks);
        if left_out != self.ctx.legacy_left_out() {
            if left_out > 0 {
                tracing::warn!(
                    left_out,
                    "our inventory does not fit in one 1500-byte legacy datagram; Perl daemons see only part of it"
                );
            }
            self.ctx.set_legacy_left_out(left_out);
        }
        self.announce.sent_legacy.push_back(legacy_digest(&bytes));
        if self.announce.sent_legacy.len() > 8 {
            self.announce.sent_legacy.pop_front();
        }
        let result = t.send(&bytes).await;
        self.after_send(t, result, bytes.len())
    }
}

/// Recognises our own legacy datagrams when they loop back.
pub(super) fn legacy_digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn transient(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(nix::libc::ENOBUFS)
            | Some(nix::libc::EAGAIN)
            | Some(nix::libc::ENETUNREACH)
            | Some(nix::libc::EHOSTUNREACH)
    )
}

/// The next gossip sequence number for `to` (see [`Layer::envelope_gossip`]): `shared`
/// counts every datagram; a remembered member's run continues, a new one starts at
/// `shared`.
fn next_seq(
    shared: &mut u64,
    per_member: &mut lru::LruCache<std::net::SocketAddr, u64>,
    to: Option<std::net::SocketAddr>,
) -> u64 {
    *shared += 1;
    let Some(to) = to else {
        return *shared;
    };
    let next = per_member.peek(&to).map_or(*shared, |last| last + 1);
    per_member.put(to, next);
    next
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_member_sees_a_dense_growing_run_of_gossip_numbers() {
        let a: std::net::SocketAddr = "198.18.0.1:32004".parse().unwrap();
        let b: std::net::SocketAddr = "198.18.0.2:32004".parse().unwrap();
        let c: std::net::SocketAddr = "198.18.0.3:32004".parse().unwrap();
        let mut shared = 0;
        let mut per = lru::LruCache::new(std::num::NonZeroUsize::new(2).unwrap());
        let first_a = next_seq(&mut shared, &mut per, Some(a));
        // A hundred datagrams to b in between: a's next number is still the next one.
        let mut last_b = 0;
        for _ in 0..100 {
            last_b = next_seq(&mut shared, &mut per, Some(b));
        }
        assert_eq!(next_seq(&mut shared, &mut per, Some(a)), first_a + 1);
        // Forgotten past the bound (c evicts b), b starts again above all it was sent.
        next_seq(&mut shared, &mut per, Some(c));
        next_seq(&mut shared, &mut per, Some(a));
        assert!(next_seq(&mut shared, &mut per, Some(b)) > last_b);
    }
}
