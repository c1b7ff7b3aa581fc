//! Membership as foca reports it, carried into the peer table: members up, down and
//! revived, the member lists a joiner asks for, and pings to members heard only by gossip.

use super::*;
use crate::peer::liveness::Turn;

impl Layer {
    /// Members that came up again while the table had them lost: live again, told to the
    /// fleet as when one is heard again (they may not send to us for a while: a member
    /// probes one other per period).
    pub(in crate::peer) async fn revive_members(&mut self) {
        while let Some(node_id) = self.gossip.as_mut().and_then(|gs| gs.revive.pop_front()) {
            let Some(mut peer) = self.table.get(&node_id).cloned() else {
                continue;
            };
            if !peer.gone || self.multicast_fresh(&node_id) {
                continue;
            }
            let t = self.clock.wall_ms();
            let back_in_grace = self.heard.pending_lost.remove(&node_id).is_some();
            let changes = if back_in_grace {
                Vec::new()
            } else {
                self.peer_events(&peer, t, Turn::Live)
            };
            peer.gone = false;
            peer.last_seen = t;
            self.save_peer(peer.clone(), true).await;
            self.ctx.fleet().emit(changes);
            if back_in_grace {
                self.ctx.fleet().nudge();
            }
            self.table.mark_live(&node_id);
            tracing::info!(peer = %peer.node, "peer back (the gossip failure detector holds it live)");
            // Back after being lost (a partition healed, most likely): its view of the
            // members we lost with it is the quickest way to them.
            let now = self.clock.instant();
            if let Some(gs) = self.gossip.as_mut() {
                let addr = gs.up.get(&node_id).map(|m| m.addr);
                if let Some(addr) = addr {
                    if gs
                        .asked_members
                        .is_none_or(|at| now.duration_since(at) > LIST_WINDOW)
                    {
                        gs.asked_members = Some(now);
                        gs.outbox.push_back((addr, Body::MembersPull));
                    }
                }
            }
        }
    }

    pub(in crate::peer) fn member_up(&mut self, id: MemberId) {
        let node_id = id.node_id();
        if node_id == self.ctx.node().id || id.node == 0 {
            return;
        }
        let fresh = self.multicast_fresh(&node_id);
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        gs.had_members = true;
        let new = gs.up.insert(node_id.clone(), id.clone()).map(|m| m.addr) != Some(id.addr);
        gs.seeds.heard_from(id.addr);
        if new {
            let every = touch_every(self.ctx.peer_expiry());
            gs.touches.push(Reverse((now + every, node_id.clone())));
        }
        if self.table.get(&node_id).is_some_and(|p| p.gone) {
            gs.revive.push_back(node_id.clone());
        }
        if new && gs.asked_members.is_none() {
            // The first member that let us in: ask it for everyone it knows, so we know
            // the whole fleet in one exchange, not one member per probe period.
            gs.asked_members = Some(now);
            gs.outbox.push_back((id.addr, Body::MembersPull));
        }
        let mut back = Vec::new();
        if new {
            gs.via_dirty = true;
            tracing::debug!(member = ?id, "gossip member up");
            if gs.up.len() <= SMALL_VIEW && allow(&mut gs.knocked, &node_id, now, KNOCK_EVERY) {
                // We know few members: maybe we were let in by a member that knocked at
                // us (a LAN peer), not by announcing ourselves. Announce back, so it
                // answers with its member list.
                back = gs.engine.announce(id.clone(), now);
            }
        }
        self.gossip_outputs_sync(back);
        if !fresh && new {
            // It may have nothing of ours yet (new, or at a new address). A renewed
            // identity at the same address is the same daemon: it has what it had.
            self.push_inventory(id.addr, &node_id, now, false);
            // And we may have nothing of its: it pushes when it learns of us, which may be
            // long after we learnt of it (membership news reaches members in any order),
            // so pull if its inventory has not come by then.
            let due = now + PULL_AFTER + PULL_SPREAD.mul_f64(self.rng.gen::<f64>());
            if let Some(gs) = self.gossip.as_mut() {
                if gs.latest.peek(&node_id).is_none() && gs.behind.peek(&node_id).is_none() {
                    gs.behind.put(
                        node_id,
                        Behind {
                            addr: id.addr,
                            boot: 0,
                            generation: 0,
                            due,
                            pulled_at: None,
                            tries: 0,
                        },
                    );
                }
            }
        }
    }

    pub(in crate::peer) async fn member_down(&mut self, id: MemberId) {
        let node_id = id.node_id();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        if gs.up.get(&node_id) != Some(&id) {
            return; // an older run of a node that is live under a newer identity
        }
        gs.up.remove(&node_id);
        gs.behind.pop(&node_id);
        gs.via_dirty = true;
        if gs.up.is_empty() && gs.had_members {
            gs.seeds.all_lost(self.clock.instant());
            gs.asked_members = None;
            gs.asked_again = false;
        }
        if self.multicast_fresh(&node_id) {
            return; // still heard on the LAN: multicast's expiry decides
        }
        let Some(mut peer) = self.table.get(&node_id).cloned() else {
            return;
        };
        if peer.gone {
            return;
        }
        // Not live in queries from now on; told to the fleet (`peer-lost`, `vanished`) only
        // after the goodbye grace, as a goodbye is: a member declared down that is back
        // within it under a renewed identity (after a partition, or a pause) was never
        // lost for the fleet, and its return is not news either.
        if !self.table.joins(&peer) {
            let due = self.clock.instant() + crate::peer::GOODBYE_GRACE;
            if self.heard.pending_lost.len() >= 2 * self.table.max() {
                self.flush_pending_lost(true);
            }
            self.heard
                .pending_lost
                .insert(node_id.clone(), (due, peer.clone()));
        }
        self.table.said_goodbye(&mut peer);
        self.save_peer(peer.clone(), true).await;
        tracing::info!(peer = %peer.node, "peer lost (the gossip failure detector declared it down)");
        self.ctx
            .event("peer", format!("{} lost (gossip: down)", peer.node));
    }

    /// A member asked for our member list (it just joined): every live member but itself,
    /// in pages (rate-limited per member, and only to where it is a member).
    pub(in crate::peer) fn answer_members(&mut self, node_id: &str, from: SocketAddr) {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        // Only to a live member at the address it is a member at: the list is hundreds of
        // datagrams for one small request, and must never be reflected at a forged source
        // address.
        if gs.up.get(node_id).map(|m| m.addr) != Some(from)
            || !allow(&mut gs.listed, node_id, now, LIST_EVERY)
        {
            return;
        }
        let mut members = gs.engine.live_ids();
        members.retain(|m| m.addr != from && m.node_id() != node_id);
        let count = members.len().div_ceil(wire::MEMBERS_PER_PAGE).max(1);
        let count = u16::try_from(count).unwrap_or(u16::MAX);
        for (index, page) in members
            .chunks(wire::MEMBERS_PER_PAGE)
            .take(count as usize)
            .enumerate()
        {
            gs.outbox.push_back((
                from,
                Body::Members(wire::MembersPage {
                    index: index as u16,
                    count,
                    members: page.to_vec(),
                }),
            ));
        }
    }

    /// A page of the member list we asked for: foca takes the members it did not know.
    /// Pages nobody asked for (or that come long after) are ignored.
    pub(in crate::peer) async fn learn_members(&mut self, page: wire::MembersPage) {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        if gs
            .asked_members
            .is_none_or(|at| now.duration_since(at) > LIST_WINDOW)
        {
            return;
        }
        let out = gs.engine.learn(page.members, now);
        self.gossip_outputs(out).await;
    }

    /// A member is new to us or restarted: it gets our inventory unless it has it.
    pub(in crate::peer) fn welcome(&mut self, node_id: &str, from: SocketAddr) {
        let now = self.clock.instant();
        self.push_inventory(from, node_id, now, false);
    }

    /// `diskd ping`: ask every live member multicast does not reach to send its inventory.
    pub(in crate::peer) fn ping_members(&mut self) {
        let targets = self.unicast_only_members();
        if let Some(gs) = self.gossip.as_mut() {
            for (_, to) in targets {
                gs.outbox.push_back((to, Body::Ping));
            }
        }
    }

    /// Live members that multicast does not reach (node id, gossip address): those that
    /// need a unicast copy of what we multicast.
    pub(in crate::peer) fn unicast_only_members(&self) -> Vec<(String, SocketAddr)> {
        self.gossip
            .as_ref()
            .map(|gs| {
                gs.up
                    .iter()
                    .filter(|(id, _)| !self.multicast_fresh(id))
                    .map(|(k, v)| (k.clone(), v.addr))
                    .collect()
            })
            .unwrap_or_default()
    }
}
