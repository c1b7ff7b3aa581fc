//! Inventories over gossip: deltas applied, members behind pulled, pulls answered, and
//! our own inventory cut into chunks for unicast.

use super::*;

impl Layer {
    /// Apply the peers' deltas received so far: a delta whose base we hold (or any later
    /// generation before its own) brings the peer's inventory to the notice's generation,
    /// as if the whole inventory had arrived; otherwise we are behind and pull.
    pub(in crate::peer) async fn apply_deltas(&mut self) {
        while let Some((n, d)) = self.gossip.as_mut().and_then(|gs| gs.incoming.pop_front()) {
            let node_id = format!("{:032x}", n.node);
            if node_id == self.ctx.node().id {
                continue;
            }
            let Some(gs) = self.gossip.as_ref() else {
                return;
            };
            let have = gs.latest.peek(&node_id).copied();
            let route = gs.route(&node_id);
            match have {
                Some((b, g)) if b == n.boot && g >= n.generation => continue,
                Some((b, g)) if b == n.boot && g >= d.base => {}
                _ => {
                    if let Some(addr) = route {
                        self.check_version(&node_id, n.boot, n.generation, addr);
                    }
                    continue;
                }
            }
            let Some(mut peer) = self.table.get(&node_id).cloned() else {
                continue;
            };
            let disks = d.apply(self.ctx.store().host_inventory(&node_id));
            if disks.len() > crate::model::limits::DISKS_PER_PEER as usize {
                // As a whole inventory that large would be refused.
                self.ctx
                    .count_reject(crate::peer::wire::Reject::InvalidField.name());
                continue;
            }
            if !self.fits_records(&node_id, &disks, peer.key.is_some()) {
                self.ctx
                    .count_reject(crate::peer::wire::Reject::RecordBudget.name());
                continue;
            }
            self.note_inventory(&node_id, n.boot, n.generation);
            let important = peer.disks != disks.len();
            peer.disks = disks.len();
            let addr = peer.addr.clone().unwrap_or_default();
            let t = self.clock.wall_ms();
            let changes = self.store_inventory(&peer, &addr, &disks, t);
            if let Some(gs) = self.gossip.as_mut() {
                gs.deltas_applied += 1;
            }
            self.save_peer(peer, important).await;
            self.ctx.fleet().emit(changes);
        }
    }

    /// Queue our whole inventory, as a new generation, to one member (rate-limited).
    /// Unless `asked`, nothing is sent to a member already sent our current content (a
    /// member that comes up again, or renews its identity, still has it; one that lost it
    /// pulls, as our packets carry our generation).
    pub(in crate::peer) fn push_inventory(
        &mut self,
        to: SocketAddr,
        node_id: &str,
        now: Instant,
        asked: bool,
    ) {
        let version = (self.me.boot, self.me.content_gen);
        let allowed = self.gossip.as_mut().is_some_and(|gs| {
            (asked || gs.sent.peek(node_id) != Some(&version))
                && allow(&mut gs.pushed, node_id, now, PUSH_EVERY)
        });
        if !allowed {
            return;
        }
        let chunks = self.inventory_chunks(true);
        if let Some(gs) = self.gossip.as_mut() {
            gs.inventories_sent += 1;
            for c in chunks {
                gs.outbox.push_back((to, Body::Inventory(c)));
            }
            note_sent(&mut gs.sent, node_id, version);
        }
    }

    /// A member asked for our inventory (a unicast ping).
    pub(in crate::peer) fn answer_pull(&mut self, node_id: &str, from: SocketAddr) {
        let now = self.clock.instant();
        if let Some(gs) = self.gossip.as_mut() {
            gs.pulls_answered += 1;
        }
        self.push_inventory(from, node_id, now, true);
    }

    /// Our inventory changed and went out by multicast as generation `content_gen`: tell
    /// the gossip fleet with a notice, carrying what changed (a delta) when it fits. foca
    /// piggybacks it on its own packets and members relay it, so what this costs us does
    /// not grow with the fleet; a member that cannot apply it pulls the whole inventory.
    pub(in crate::peer) fn gossip_changed(&mut self) {
        if self.gossip.is_none() {
            return;
        }
        let inventory = self.ctx.store().local_inventory();
        let notice = Notice {
            node: crate::peer::gossip::MemberId::parse_node(&self.ctx.node().id).unwrap_or(0),
            boot: self.me.boot,
            generation: self.me.content_gen,
            at_ms: self.clock.wall_ms(),
        };
        let now = self.clock.instant();
        if let Some(gs) = self.gossip.as_mut() {
            let delta = gs.deltas.record(self.me.content_gen, &inventory);
            let out = gs.engine.notice(notice, delta.as_ref(), now);
            self.gossip_outputs_sync(out);
        }
    }

    /// A peer's complete inventory (boot, generation) arrived, by either path.
    pub(in crate::peer) fn note_inventory(&mut self, node_id: &str, boot: u64, generation: u64) {
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let newer = match gs.latest.peek(node_id) {
            Some(&(b, g)) => b != boot || g < generation,
            None => true,
        };
        if newer {
            gs.latest.put(node_id.to_string(), (boot, generation));
        }
        if gs
            .behind
            .peek(node_id)
            .is_some_and(|b| b.boot == 0 || (b.boot == boot && b.generation <= generation))
        {
            gs.behind.pop(node_id);
        }
    }

    /// `node_id` says its inventory is at (`boot`, `generation`): if we have less, note
    /// that we are behind (housekeeping pulls).
    pub(in crate::peer) fn check_version(
        &mut self,
        node_id: &str,
        boot: u64,
        generation: u64,
        addr: SocketAddr,
    ) {
        if generation == 0 || node_id == self.ctx.node().id {
            return;
        }
        let now = self.clock.instant();
        let due = now + PULL_AFTER + PULL_SPREAD.mul_f64(self.rng.gen::<f64>());
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let have = gs
            .latest
            .peek(node_id)
            .is_some_and(|&(b, g)| b == boot && g >= generation);
        if have {
            return;
        }
        let same = gs
            .behind
            .peek(node_id)
            .is_some_and(|b| b.boot == boot && b.generation >= generation);
        if !same {
            gs.behind.put(
                node_id.to_string(),
                Behind {
                    addr,
                    boot,
                    generation,
                    due,
                    pulled_at: None,
                    tries: 0,
                },
            );
        }
    }

    /// Inventory chunks for unicast: a fresh generation, or (`fresh == false`) the one
    /// just announced by multicast.
    pub(in crate::peer) fn inventory_chunks(&mut self, fresh: bool) -> Vec<wire::Chunk> {
        let disks = self.ctx.store().local_inventory();
        if fresh || self.me.generation == 0 {
            self.me.generation += 1;
        }
        let template = self.envelope_gossip(Body::Ping, None);
        let max = self.ctx.config().multicast.max_datagram - keys::OVERHEAD;
        wire::chunk_inventory(&template, self.me.generation, &disks, max)
    }
}
