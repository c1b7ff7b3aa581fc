//! Peers turning live and lost: the fleet events told for them (a goodbye's lost events
//! wait out a grace, so a quick restart tells nothing), the peer records saved, and the
//! announces a newcomer or a restarted peer calls for.

use super::pacer::Want;
use super::Layer;
use crate::model::{fleet, FleetEvent, FleetEventKind, PeerRecord};
use crate::telemetry::Stats;

/// Which way a peer turned, for [`Layer::peer_events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Turn {
    /// A peer became live: the events that say so, and that its stored disks are live
    /// again. Made before its new inventory is stored (they are about the stored one);
    /// published after the peer is saved live.
    Live,
    /// A peer was lost: the events that say so, and that its disks are not live any more
    /// (they stay as last known locations). Published after the peer is saved gone (or,
    /// on expiry, once the store's last-seen time says it is not live).
    Lost,
}

impl Layer {
    /// Tell the fleet about the goodbyes whose grace is over (all of them with `all`).
    pub(super) fn flush_pending_lost(&mut self, all: bool) {
        let now = self.clock.instant();
        let due: Vec<String> = self
            .heard
            .pending_lost
            .iter()
            .filter(|(_, (at, _))| all || *at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let t = self.clock.wall_ms();
        for id in due {
            if let Some((_, peer)) = self.heard.pending_lost.remove(&id) {
                let changes = self.peer_events(&peer, t, Turn::Lost);
                self.ctx.fleet().emit(changes);
            }
        }
    }

    /// The events that tell how `peer` turned (see [`Turn`]): one about the peer, then one
    /// about each disk of its stored inventory.
    pub(super) fn peer_events(
        &self,
        peer: &PeerRecord,
        t: crate::model::Millis,
        turn: Turn,
    ) -> Vec<FleetEvent> {
        let (about_peer, about_disks) = match turn {
            Turn::Live => (FleetEventKind::PeerLive, FleetEventKind::Appeared),
            Turn::Lost => (FleetEventKind::PeerLost, FleetEventKind::Vanished),
        };
        let host = fleet::Host {
            node_id: &peer.node_id,
            name: &peer.node,
            addr: peer.addr.as_deref(),
            local: false,
            sealed: peer.key.is_some(),
        };
        let disks = self.ctx.store().host_inventory(&peer.node_id);
        std::iter::once(FleetEvent::peer(about_peer, t, &host))
            .chain(
                disks
                    .iter()
                    .map(|d| FleetEvent::disk(about_disks, t, &host, d)),
            )
            .collect()
    }

    /// Keep the peer in memory; write it to the store when the table says it is due.
    /// Hearing a peer again every few seconds does not rewrite its record each time.
    pub(super) async fn save_peer(&mut self, peer: PeerRecord, important: bool) {
        if self.table.needs_write(&peer, important) {
            match self.ctx.store_write(|s| s.upsert_peer(&peer)) {
                Ok(()) => {
                    self.table.written(&peer);
                    self.flush.dirty |= important;
                    // Routine last-seen writes are flushed by housekeeping now and then, so
                    // a crash does not make a restart see live peers as lost (and re-fire
                    // their `peer-live`).
                    self.flush.unflushed |= !important;
                }
                Err(e) => {
                    // In memory all the same; the store rewrites it (`Store::keep`).
                    Stats::bump(&self.ctx.stats().store_errors);
                    tracing::debug!("peer not durable yet: {e}");
                }
            }
        }
        self.table.insert(peer);
    }

    /// A peer asked for our inventory (a ping, or it is new or restarted and has none);
    /// the pacer decides when (see `pacer.rs`).
    pub(super) fn want_announce(&mut self, why: &str, from: &str) {
        let now = self.clock.instant();
        match self.pacer.want(now, &mut self.rng) {
            Want::Coalesced => Stats::bump(&self.ctx.stats().pings_suppressed),
            Want::Scheduled(at) => {
                Stats::bump(&self.ctx.stats().pings_answered);
                self.ctx.event(
                    "peer",
                    format!(
                        "{why} from {from}: announcing in {} ms",
                        at.duration_since(now).as_millis()
                    ),
                );
            }
        }
    }
}
