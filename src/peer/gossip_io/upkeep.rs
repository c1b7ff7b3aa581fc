//! The gossip half's timers and outputs: housekeeping, the report `status` reads, foca's
//! ticks, seeds, leaving, and the outbox the serve loop flushes.

use super::*;

impl Layer {
    /// Once a second: pull what we are behind on, keep live members live in the table,
    /// publish status.
    pub(in crate::peer) async fn gossip_housekeeping(&mut self) {
        let now = self.clock.instant();
        let t = self.clock.wall_ms();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let mut pulls = Vec::new();
        let given_up: Vec<String> = gs
            .behind
            .iter()
            .filter(|(_, b)| b.tries >= PULL_TRIES)
            .map(|(k, _)| k.clone())
            .collect();
        for k in given_up {
            gs.behind.pop(&k);
        }
        for (_, b) in gs.behind.iter_mut() {
            let waited = now >= b.due;
            let spaced = b
                .pulled_at
                .is_none_or(|p| now.duration_since(p) >= PULL_EVERY);
            if waited && spaced {
                b.pulled_at = Some(now);
                b.tries += 1;
                pulls.push(b.addr);
            }
        }
        gs.pulls_sent += pulls.len() as u64;
        for to in pulls {
            gs.outbox.push_back((to, Body::Ping));
        }
        if !gs.asked_again
            && gs
                .asked_members
                .is_some_and(|at| now.duration_since(at) >= ASK_AGAIN_AFTER)
            && !gs.up.is_empty()
        {
            let pick = self.rng.gen_range(0..gs.up.len());
            if let Some(to) = gs.up.values().nth(pick).map(|m| m.addr) {
                gs.asked_again = true;
                gs.asked_members = Some(now);
                gs.outbox.push_back((to, Body::MembersPull));
            }
        }
        // Members the failure detector holds live are live in the table (and so in
        // queries), however rarely they happen to send to us: each is refreshed about
        // eight times per peer expiry, from a queue ordered by when it is due, so a tick
        // costs the members due, not a walk over all of them.
        let every = touch_every(self.ctx.peer_expiry());
        let mut due = Vec::new();
        while let Some(Reverse((at, _))) = gs.touches.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, node_id))) = gs.touches.pop() else {
                break;
            };
            if gs.up.contains_key(&node_id) {
                gs.touches.push(Reverse((now + every, node_id.clone())));
                due.push(node_id);
            }
        }
        for node_id in due {
            let Some(mut peer) = self.table.get(&node_id).cloned() else {
                continue;
            };
            if peer.gone {
                continue;
            }
            peer.last_seen = t;
            if self.table.needs_touch_write(&peer) {
                self.save_peer(peer, true).await;
            } else {
                self.table.insert(peer);
            }
        }
        self.publish_gossip();
    }

    /// Publish the gossip status, and how each peer is reached: rebuilt when a member or a
    /// path came or went, else once per quarter of the peer expiry (a path heard by
    /// multicast also ages out with time), never by walking every member every second.
    pub(in crate::peer) fn publish_gossip(&mut self) {
        let t = self.clock.wall_ms();
        let aging = (self.ctx.peer_expiry().as_millis() as Millis / 4).max(1_000);
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        if gs.via_dirty || t.saturating_sub(gs.via_published) >= aging {
            gs.via_dirty = false;
            gs.via_published = t;
            self.publish_via();
        }
        let Some(gs) = self.gossip.as_ref() else {
            return;
        };
        let (members, members_live) = (gs.engine.known_members(), gs.engine.live_members());
        self.ctx.status.set_gossip(GossipReport {
            listen: gs.listen.to_string(),
            advertise: gs.advertise.to_string(),
            members,
            members_live,
            bytes_in: gs.bytes_in,
            bytes_out: gs.bytes_out,
            deltas_applied: gs.deltas_applied,
            pulls_sent: gs.pulls_sent,
            pulls_answered: gs.pulls_answered,
            inventories_sent: gs.inventories_sent,
            seeds: gs.seeds.report(),
        });
    }

    pub(in crate::peer) fn publish_via(&self) {
        let Some(gs) = self.gossip.as_ref() else {
            return;
        };
        let expiry = self.ctx.peer_expiry().as_millis() as Millis;
        let t = self.clock.wall_ms();
        let mut via = HashMap::new();
        for (id, when) in gs.heard.iter() {
            if gs.up.contains_key(id) || t.saturating_sub(*when) <= expiry {
                let v = if self.multicast_fresh(id) {
                    "both"
                } else {
                    "gossip"
                };
                via.insert(id.clone(), v);
            }
        }
        for id in gs.up.keys() {
            via.entry(id.clone())
                .or_insert(if self.multicast_fresh(id) {
                    "both"
                } else {
                    "gossip"
                });
        }
        self.ctx.status.set_via(via);
    }

    /// Engine timers and seed tries that are due.
    pub(in crate::peer) async fn gossip_tick(&mut self) {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let out = gs.engine.fire_due(now);
        for (i, seed) in gs.seeds.due(now) {
            let tx = gs.resolve_tx.clone();
            // Looked up off the layer's task: a slow resolver must not stall the peers.
            tokio::spawn(async move {
                let lookup = tokio::net::lookup_host((seed.host.as_str(), seed.port));
                let r = match tokio::time::timeout(Duration::from_secs(3), lookup).await {
                    Ok(Ok(addrs)) => Ok(addrs.collect::<Vec<_>>()),
                    Ok(Err(e)) => Err(format!("{}: {e}", seed)),
                    Err(_) => Err(format!("{}: name lookup timed out", seed)),
                };
                let _ = tx.send((i, r)).await;
            });
        }
        self.gossip_outputs(out).await;
    }

    /// A seed's addresses are known: knock at each.
    pub(in crate::peer) fn seed_resolved(&mut self, r: Resolved) {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let (i, result) = r;
        if let Err(e) = &result {
            tracing::debug!("gossip seed: {e}");
        }
        let mut out = Vec::new();
        for addr in gs.seeds.resolved(i, result, now) {
            out.extend(gs.engine.announce(MemberId::seed(addr), now));
        }
        self.gossip_outputs_sync(out);
        self.publish_gossip();
    }

    /// Stopping: foca's leave (for members we do not know to be live), then a goodbye to
    /// every live member, last, so that nothing of ours arrives after it.
    pub(in crate::peer) async fn gossip_leave<G: Unicast>(&mut self, g: &G) {
        let now = self.clock.instant();
        let Some(gs) = self.gossip.as_mut() else {
            return;
        };
        let out = gs.engine.leave(now);
        self.gossip_outputs_sync(out);
        if let Some(gs) = self.gossip.as_mut() {
            let members: Vec<SocketAddr> = gs.up.values().map(|m| m.addr).collect();
            for to in members {
                gs.outbox.push_back((to, Body::Goodbye));
            }
        }
        self.flush_outbox(g).await;
    }

    /// Seal and send everything queued, pacing long bursts.
    pub(in crate::peer) async fn flush_outbox<G: Unicast>(&mut self, g: &G) {
        let mut sent = 0usize;
        while let Some((to, body)) = self.gossip.as_mut().and_then(|gs| gs.outbox.pop_front()) {
            let body = match body {
                // The generation others compare with is the latest at sending time.
                Body::Swim(s) => Body::Swim(Swim {
                    generation: self.me.content_gen,
                    data: s.data,
                }),
                other => other,
            };
            let env = self.envelope_gossip(body, Some(to));
            let bytes = self.keys.seal(wire::encode(&env));
            match g.send_to(to, &bytes).await {
                Ok(()) => {
                    Stats::bump(&self.ctx.stats().packets_sent);
                    self.ctx.add_bytes_sent(bytes.len());
                    if let Some(gs) = self.gossip.as_mut() {
                        gs.bytes_out += bytes.len() as u64;
                    }
                }
                Err(e) => {
                    // One unreachable member is not a broken socket: count and go on.
                    Stats::bump(&self.ctx.stats().send_errors);
                    tracing::debug!(%to, "gossip send failed: {e}");
                }
            }
            sent += 1;
            if sent % PACE_EVERY == 0 {
                tokio::time::sleep(PACE_PAUSE).await;
            }
        }
    }

    /// Whether anything waits in the outbox.
    pub(in crate::peer) fn outbox_pending(&self) -> bool {
        self.gossip.as_ref().is_some_and(|gs| !gs.outbox.is_empty())
    }

    /// Route a message to one node: unicast when it is a live gossip member, multicast
    /// when it is heard on the LAN or has no gossip route (both when both apply).
    /// Returns whether it must go by multicast.
    pub(in crate::peer) fn route_to_node(&mut self, node_id: &str, body: &Body) -> bool {
        let fresh = self.multicast_fresh(node_id);
        match self
            .gossip
            .as_mut()
            .and_then(|gs| gs.route(node_id).map(|a| (gs, a)))
        {
            Some((gs, addr)) => {
                gs.outbox.push_back((addr, body.clone()));
                fresh && self.ctx.config().multicast.enabled
            }
            None => true,
        }
    }
}
