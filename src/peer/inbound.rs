//! What the layer does with a datagram it received, and with the passing of time.
//!
//! Each datagram is opened, decoded, checked against replays and the peer-table cap, and
//! then handed to the state machines; this file turns their answers into store writes,
//! events and counters. Housekeeping (expiry, stale generations) and the shutdown write
//! live here too, as they are the other half of the peer table's I/O.

use std::net::SocketAddr;

use tokio::sync::oneshot;

use super::gossip_io::replay_key;
use super::liveness::Turn;
use super::mount_rpc::Serve;
use super::table::Room;
use super::wire::{self, Body, Reject};
use super::{
    legacy, outbound::legacy_digest, IncomingMount, Layer, Path, GOODBYE_GRACE,
    JOINS_LOGGED_PER_TICK,
};
use crate::model::{fleet, FleetEvent, PeerRecord};
use crate::store::{Owner, Published};
use crate::telemetry::Stats;

enum Kind {
    Ping,
    Other,
}

impl Layer {
    /// Count a dropped datagram; describe it only to `debug` sessions (and trace logs): a
    /// flood must not cost a formatted log line per datagram.
    fn reject(&self, reason: Reject, from: SocketAddr) {
        self.ctx.count_reject(reason.name());
        tracing::trace!(%from, reason = reason.name(), "datagram dropped");
        if self.ctx.has_subscribers() {
            self.ctx.event(
                "reject",
                format!("datagram from {from} dropped: {}", reason.name()),
            );
        }
    }

    /// What of `whole` (the peer table, the record budget) a peer may fill: all of it
    /// when its datagrams are sealed, or when there are no keys (then every peer is
    /// unsealed); half when keys are configured and it is unsealed (a Perl peer, or forged
    /// plaintext): strangers can then never take the room the fleet's own peers need.
    fn share(&self, sealed: bool, whole: usize) -> usize {
        if sealed || !self.keys.enabled() {
            whole
        } else {
            whole / 2
        }
    }

    /// Whether a newcomer fits in the peer table. At the cap the longest unheard peer
    /// that is not live and of which the store keeps no disk (present or last known) is
    /// forgotten, in the store too; else the newcomer is refused.
    fn make_room(&mut self, sealed: bool) -> bool {
        let limit = self.share(sealed, self.table.max());
        let store = self.ctx.store().clone();
        let now = self.clock.wall_ms();
        match self
            .table
            .make_room(now, limit, |id| store.host_entries(id) > 0)
        {
            Room::Fits => true,
            Room::Full => false,
            Room::Forgot { node_id, node } => {
                tracing::info!(peer = %node, "peer table full: forgetting a peer that is not live and of which no disk is kept");
                self.ctx.store_write(|s| s.remove_peer(&node_id)).is_ok()
            }
        }
    }

    /// Whether a complete inventory from `node_id` fits the fleet-wide record budget
    /// (`peers.max_records`): the disks the store keeps for all peers, present and last
    /// known. Each disk listed may add at most one such record, so an inventory that fits
    /// even if all of its disks were new is taken at once; past that only one that adds
    /// none (every disk already the host's) is.
    pub(super) fn fits_records(
        &self,
        node_id: &str,
        disks: &[crate::model::DiskRecord],
        sealed: bool,
    ) -> bool {
        let store = self.ctx.store();
        let kept = store
            .sightings_len()
            .saturating_sub(store.host_entries(&self.ctx.node().id));
        if kept + disks.len() <= self.share(sealed, self.ctx.config().peers.max_records) {
            return true;
        }
        let known: std::collections::HashSet<String> = store
            .host_inventory(node_id)
            .iter()
            .map(crate::model::DiskRecord::identity)
            .collect();
        disks.iter().all(|d| known.contains(&d.identity()))
    }

    pub(super) async fn receive(&mut self, bytes: &[u8], from: SocketAddr, path: Path) {
        if path == Path::Gossip {
            if let Some(gs) = self.gossip.as_mut() {
                gs.count_in(bytes.len());
            }
        }
        if bytes.starts_with(legacy::PREFIX) {
            if !self.ctx.config().multicast.legacy || path == Path::Gossip {
                return self.reject(Reject::Legacy, from);
            }
            return self.receive_legacy(bytes, from).await;
        }
        let (plain, key) = match self.keys.open(bytes) {
            Ok(x) => x,
            Err(reason) => return self.reject(reason, from),
        };
        let key = key.map(str::to_string);
        let key_used = key.is_some();
        let env = match wire::decode(&plain) {
            Ok(env) => env,
            Err(reason) => return self.reject(reason, from),
        };
        if env.node_id == self.ctx.node().id {
            return; // our own datagram, looped back
        }
        if self.keys.enabled() {
            // Only authenticated traffic can be meaningfully checked for replays: without
            // keys anyone can forge a fresh datagram anyway.
            let now = self.clock.wall_ms();
            let checked = match path {
                Path::Multicast => {
                    self.replay
                        .check(&env.node_id, env.boot, env.seq, env.sent_ms, now)
                }
                Path::Gossip => self.replay.check(
                    &replay_key(&env.node_id),
                    env.boot,
                    env.seq,
                    env.sent_ms,
                    now,
                ),
            };
            if let Err(reason) = checked {
                return self.reject(reason, from);
            }
        }
        if matches!(
            env.body,
            Body::Swim(_) | Body::MembersPull | Body::Members(_)
        ) && path == Path::Multicast
        {
            return self.reject(Reject::GossipInvalid, from);
        }
        if self.heard.goodbyes.peek(&env.node_id) == Some(&env.boot) {
            // A late datagram of a run that said goodbye (it came the other way, or was
            // reordered, or is the goodbye's copy on the other path): it must not bring
            // the peer back. A restart has a new boot id.
            return;
        }
        let is_new = !self.table.contains(&env.node_id);
        if is_new && !self.make_room(key_used) {
            return self.reject(Reject::PeerTableFull, from);
        }
        // Counted as received once it passed every check; a chunk refused by reassembly
        // below is counted as rejected instead.
        Stats::bump(&self.ctx.stats().packets_received);
        let addr = from.ip().to_string();
        let t = self.clock.wall_ms();
        let heard = self.table.observe(&env, &addr, key, t);
        for other in heard.conflicts {
            tracing::warn!(
                node = %env.node,
                new_id = %env.node_id,
                old_id = %other,
                "two daemons use the same node name; listing both"
            );
            self.ctx.event(
                "peer",
                format!(
                    "name conflict: {} is used by {} and {}",
                    env.node, other, env.node_id
                ),
            );
        }
        let mut peer = heard.peer;
        let mut important = heard.important;
        // The fleet events this datagram makes, published only once the store shows what
        // they say (the peer saved live or gone, its inventory written): a listener that
        // reads the store on an event (`wait`, a hook running `diskd query`) must find the
        // change there. A datagram refused half-way publishes nothing.
        let mut changes = Vec::new();
        // If it said goodbye and is back within the grace (a restart), its loss was never
        // told, so neither is its return (its inventory's differences are; `wait` is
        // nudged, as queries see it live again). Else, before its inventory is applied:
        // the stored disks come back live now, and the new inventory's differences follow
        // as their own events.
        let mut back_in_grace = false;
        if self.table.joins(&peer) && !matches!(env.body, Body::Goodbye) {
            back_in_grace = self.heard.pending_lost.remove(&env.node_id).is_some();
            if !back_in_grace {
                changes = self.peer_events(&peer, t, Turn::Live);
            }
        }
        match path {
            Path::Multicast => self.heard_by_multicast(&env.node_id, from, key_used),
            Path::Gossip => self.heard_by_gossip(&env.node_id, from),
        }
        let kind = match env.body {
            Body::Ping => Kind::Ping,
            _ => Kind::Other,
        };
        match env.body {
            Body::Goodbye => {
                // Bounded: the least recent goes first; at worst its late datagram revives it.
                self.heard.goodbyes.put(env.node_id.clone(), env.boot);
                if !self.table.joins(&peer) {
                    // Said for the fleet only after a grace: a daemon restarting (an
                    // upgrade) is back before it, and then nothing changed for the fleet.
                    let due = self.clock.instant() + GOODBYE_GRACE;
                    if self.heard.pending_lost.len() >= 2 * self.table.max() {
                        self.flush_pending_lost(true);
                    }
                    self.heard
                        .pending_lost
                        .insert(env.node_id.clone(), (due, peer.clone()));
                }
                self.table.said_goodbye(&mut peer);
                self.save_peer(peer.clone(), true).await;
                self.ctx.fleet().emit(changes);
                tracing::info!(peer = %peer.node, addr = %addr, "peer said goodbye");
                self.ctx
                    .event("peer", format!("{} ({addr}) said goodbye", peer.node));
                return;
            }
            Body::MembersPull => self.answer_members(&env.node_id, from),
            Body::Members(page) => self.learn_members(page).await,
            Body::Ping if path == Path::Gossip => {
                // A member pulls our inventory.
                self.answer_pull(&env.node_id, from);
            }
            Body::Ping => {
                self.want_announce("ping", &peer.node);
            }
            Body::Swim(swim) => {
                let was_gone = self.table.get(&env.node_id).is_some_and(|p| p.gone);
                if !self.receive_swim(&env.node_id, env.boot, swim, from).await {
                    self.ctx
                        .stats()
                        .packets_received
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    return self.reject(Reject::GossipInvalid, from);
                }
                if !was_gone && self.table.get(&env.node_id).is_some_and(|p| p.gone) {
                    // The packet itself made the engine declare its sender down (it
                    // announced its leave): keep it down.
                    return;
                }
            }
            Body::MountRequest(req) => {
                if req.target == self.ctx.node().id {
                    self.serve_mount_request(&peer, req);
                }
            }
            Body::MountReply(reply) => {
                if reply.target == self.ctx.node().id {
                    self.mount.rpc.answered(reply);
                }
            }
            Body::Inventory(chunk) => {
                let generation = chunk.generation;
                // Trace, not debug: one line per datagram would flood a debug log during a
                // fleet's first contact; `diskd-bench latency` turns it on for this module
                // to time the network hop.
                tracing::trace!(peer = %env.node, generation, "inventory chunk received");
                let now = self.clock.instant().into_std();
                match self.reassembly.add(&env.node_id, env.boot, chunk, now) {
                    Err(reason) => {
                        self.ctx
                            .stats()
                            .packets_received
                            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        return self.reject(reason, from);
                    }
                    Ok(None) => {}
                    Ok(Some(disks)) if !self.fits_records(&env.node_id, &disks, key_used) => {
                        self.ctx
                            .stats()
                            .packets_received
                            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        return self.reject(Reject::RecordBudget, from);
                    }
                    Ok(Some(disks)) => {
                        self.note_inventory(&env.node_id, env.boot, generation);
                        important |= peer.disks != disks.len();
                        peer.disks = disks.len();
                        changes.extend(self.store_inventory(&peer, &addr, &disks, t));
                    }
                }
            }
        }
        let joined = self.table.joins(&peer);
        important |= joined;
        let rebooted = self.table.rebooted(&peer.node_id, env.boot);
        if (joined || rebooted) && !matches!(kind, Kind::Ping) {
            // It may have missed our announces while it was away or starting.
            match path {
                Path::Multicast => self.want_announce("new or restarted peer", &peer.node),
                Path::Gossip => self.welcome(&env.node_id, from),
            }
        }
        peer.gone = false;
        self.save_peer(peer.clone(), important).await;
        self.ctx.fleet().emit(changes);
        if back_in_grace {
            self.ctx.fleet().nudge();
        }
        if joined {
            self.table.mark_live(&peer.node_id);
            // One line per peer, but not thousands in a second when a whole fleet appears
            // at once (first contact): past the budget they are counted, and housekeeping
            // logs the count.
            if self.joins.logged < JOINS_LOGGED_PER_TICK {
                self.joins.logged += 1;
                tracing::info!(peer = %peer.node, addr = %addr, "peer joined");
            } else {
                self.joins.unlogged += 1;
            }
            if self.ctx.debugging() {
                self.ctx
                    .event("peer", format!("{} ({addr}) joined", peer.node));
            }
        }
    }

    /// Write a peer's complete inventory to the store; returns the fleet events it makes,
    /// for the caller to publish once the peer's record is saved too.
    pub(super) fn store_inventory(
        &mut self,
        peer: &PeerRecord,
        addr: &str,
        disks: &[crate::model::DiskRecord],
        t: u64,
    ) -> Vec<FleetEvent> {
        let Published { diff, durable } = self.ctx.store_write(|s| {
            s.publish(Owner::Peer(&peer.node_id), &peer.node, Some(addr), disks, t)
        });
        match durable {
            // Only a changed inventory needs to reach the disk soon.
            Ok(()) => self.flush.dirty |= !diff.is_empty(),
            Err(e) => {
                // Kept in memory (queries answer it); the store logs its failure once and
                // rewrites it when the disk works again (`Store::keep`). What changed has
                // changed for every reader all the same, so it is still said below.
                Stats::bump(&self.ctx.stats().store_errors);
                tracing::debug!(peer = %peer.node, "inventory not durable yet: {e}");
            }
        }
        let host = fleet::Host {
            node_id: &peer.node_id,
            name: &peer.node,
            addr: Some(addr),
            local: false,
            sealed: peer.key.is_some(),
        };
        let changes = diff.events(&host, t);
        let shown = if self.ctx.debugging() { usize::MAX } else { 0 };
        for d in diff.appeared.iter().take(shown) {
            self.ctx
                .event("disk", format!("{}: appeared {}", peer.node, d.device));
        }
        for d in diff.vanished.iter().take(shown) {
            self.ctx
                .event("disk", format!("{}: vanished {}", peer.node, d.device));
        }
        changes
    }

    pub(super) async fn flush_if_dirty(&mut self) {
        if std::mem::take(&mut self.flush.dirty) {
            self.flush.last = self.clock.instant();
            self.flush.unflushed = false;
            // A store in memory only flushes at once, here: a blocking thread's wake-up
            // would come at a moment no seed decides (`diskd-bench sim` is repeatable).
            let result = if self.clock.is_simulated() && !self.ctx.store().is_volatile() {
                // See `Clock::is_simulated`: the same flush, on a blocking thread.
                let store = self.ctx.store().clone();
                let rt = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || rt.block_on(store.flush()))
                    .await
                    .unwrap_or(Ok(()))
            } else {
                self.ctx.store().flush().await
            };
            if let Err(e) = result {
                // The store is marked failing and retries by itself (`Store::keep`).
                Stats::bump(&self.ctx.stats().store_errors);
                tracing::debug!("store flush failed: {e}");
            }
        }
    }

    /// Write every peer whose stored record lags behind (last seen, replay floor), so that
    /// after a clean restart nothing we accepted before can be replayed to us.
    pub(super) fn persist_all(&mut self) {
        let store = self.ctx.store();
        for p in self.table.unsaved() {
            if let Err(e) = store.upsert_peer(p) {
                tracing::warn!(peer = %p.node, "cannot store peer at shutdown: {e}");
            }
        }
    }

    /// A Perl diskd's datagram: its sender is listed under its IP address, marked legacy,
    /// with the disks it sent (replacing its previous list, as the Perl daemon does). It is
    /// never authenticated, so it never triggers anything (no announce, no mount).
    async fn receive_legacy(&mut self, bytes: &[u8], from: SocketAddr) {
        if self.announce.sent_legacy.contains(&legacy_digest(bytes)) {
            return; // our own, looped back
        }
        let disks = match legacy::decode(bytes) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(%from, "{e}");
                return self.reject(Reject::LegacyInvalid, from);
            }
        };
        let ip = from.ip().to_string();
        let node_id = format!("legacy-{ip}");
        let is_new = !self.table.contains(&node_id);
        if is_new && !self.make_room(false) {
            return self.reject(Reject::PeerTableFull, from);
        }
        if !self.fits_records(&node_id, &disks, false) {
            return self.reject(Reject::RecordBudget, from);
        }
        Stats::bump(&self.ctx.stats().packets_received);
        let t = self.clock.wall_ms();
        let mut peer = self.table.get(&node_id).cloned().unwrap_or(PeerRecord {
            node_id: node_id.clone(),
            node: ip.clone(),
            addr: Some(ip.clone()),
            first_seen: t,
            last_seen: t,
            gone: false,
            legacy: true,
            disks: 0,
            key: None,
            boot: 0,
            sent_ms: 0,
        });
        peer.last_seen = t;
        peer.disks = disks.len();
        let joined = self.table.joins(&peer);
        // Published once the store shows them (see `receive`).
        let mut changes = if joined {
            self.peer_events(&peer, t, Turn::Live)
        } else {
            Vec::new()
        };
        let Published { diff, durable } = self
            .ctx
            .store_write(|s| s.publish(Owner::Peer(&node_id), &ip, Some(&ip), &disks, t));
        if let Err(e) = durable {
            // Visible all the same (see `store_inventory`), so still said below.
            Stats::bump(&self.ctx.stats().store_errors);
            tracing::debug!(peer = %ip, "legacy inventory not durable yet: {e}");
        }
        // A Perl daemon's datagrams are never sealed.
        let host = fleet::Host {
            node_id: &node_id,
            name: &ip,
            addr: Some(&ip),
            local: false,
            sealed: false,
        };
        changes.extend(diff.events(&host, t));
        for d in &diff.appeared {
            self.ctx
                .event("disk", format!("{ip} (legacy): appeared {}", d.device));
        }
        for d in &diff.vanished {
            self.ctx
                .event("disk", format!("{ip} (legacy): vanished {}", d.device));
        }
        self.flush.dirty = true;
        self.save_peer(peer, true).await;
        self.ctx.fleet().emit(changes);
        if joined {
            self.table.mark_live(&node_id);
            tracing::info!(peer = %ip, "legacy (Perl diskd) peer joined");
            self.ctx.event("peer", format!("{ip} (legacy) joined"));
        }
    }

    /// A peer asks us to mount one of our disks. Handed to the mount service over a
    /// bounded channel (a mount can take a while); when it is full the request is refused
    /// as busy at once, so no datagram can make work pile up. Retries of the same request
    /// id get the same answer.
    fn serve_mount_request(&mut self, from: &PeerRecord, req: wire::MountRequest) {
        let key = (from.node_id.clone(), req.request_id);
        let tx = self.mount.done_tx.clone();
        match self.mount.rpc.serve(key.clone()) {
            Serve::InProgress => {}
            Serve::Repeat(reply) => {
                // A retry: the answer was lost; send it again (or at its next retry).
                let _ = tx.try_send((key, reply));
            }
            Serve::New => {
                let (reply, answer) = oneshot::channel();
                let job = IncomingMount {
                    requester: from.node.clone(),
                    requester_id: key.0.clone(),
                    request: req.clone(),
                    reply,
                };
                if self.ctx.deps.mount_jobs.try_send(job).is_err() {
                    let busy = wire::MountReply {
                        request_id: req.request_id,
                        target: key.0.clone(),
                        ok: false,
                        device: None,
                        mountpoint: None,
                        message: format!(
                            "{} is busy with other mounts; try again",
                            self.ctx.node().name
                        ),
                    };
                    let _ = tx.try_send((key, busy));
                    return;
                }
                // One forwarder per accepted job: bounded by the job queue and the mount
                // service's concurrency.
                tokio::spawn(async move {
                    if let Ok(reply) = answer.await {
                        let _ = tx.send((key, reply)).await;
                    }
                });
            }
        }
    }

    /// Expire peers and stale generations (and close the window of the join log budget); true when a generation was dropped incomplete.
    pub(super) fn housekeeping(&mut self) -> bool {
        let dropped = self.reassembly.expire(self.clock.instant().into_std());
        for _ in 0..dropped {
            self.ctx.count_reject("incomplete_generation");
        }
        if self.joins.unlogged > 0 {
            tracing::info!(
                "{} more peers joined (not logged one by one; `peers` lists them)",
                self.joins.unlogged
            );
        }
        self.joins.logged = 0;
        self.joins.unlogged = 0;
        for gone in self.table.expire(self.clock.wall_ms()) {
            // Persist the last time it was heard, which `save_peer` may have held back.
            if let Some(p) = &gone.write {
                let _ = self.ctx.store_write(|s| s.upsert_peer(p));
            }
            if let Some(p) = self.table.get(&gone.node_id).cloned() {
                // The store judges liveness by the last-seen time just written, which is
                // older than the expiry: queries already say not live.
                let lost = self.peer_events(&p, self.clock.wall_ms(), Turn::Lost);
                self.ctx.fleet().emit(lost);
            }
            tracing::info!(peer = %gone.name, "peer expired (not heard within peer_expiry)");
            self.ctx.event("peer", format!("{} expired", gone.name));
        }
        dropped > 0
    }
}
