//! The small records beside the inventories: peers ever heard and attached mounts.

use super::*;

impl Store {
    /// Remember an attach made for disk `uuid`.
    pub fn put_attach(&self, uuid: &str, rec: &AttachRecord) -> Result<(), StoreError> {
        // The writer lock keeps it out of a compaction or a reopen, which would lose it.
        let _writer = lock(&self.inner.peer_writer);
        let value = encode(rec)?;
        let result = self.persist(|s| {
            s.attaches
                .insert(uuid.to_ascii_lowercase().as_bytes(), value)?;
            Ok(())
        });
        if let Err(e) = &result {
            self.failed(e);
        }
        result.and_then(|()| self.flush_tracked())
    }

    /// The attach made for disk `uuid`, if any.
    pub fn attach(&self, uuid: &str) -> Option<AttachRecord> {
        // Not in the middle of a compaction or a reopen, where there is no sled to ask.
        let _writer = lock(&self.inner.peer_writer);
        self.sled()
            .ok()?
            .attaches
            .get(uuid.to_ascii_lowercase().as_bytes())
            .ok()
            .flatten()
            .and_then(|v| decode(&v))
    }

    /// Forget the attach of disk `uuid`.
    pub fn remove_attach(&self, uuid: &str) -> Result<(), StoreError> {
        let _writer = lock(&self.inner.peer_writer);
        let result = self.persist(|s| {
            s.attaches.remove(uuid.to_ascii_lowercase().as_bytes())?;
            Ok(())
        });
        if let Err(e) = &result {
            self.failed(e);
        }
        result.and_then(|()| self.flush_tracked())
    }

    /// Insert or update a peer: in memory at once, in sled (not flushed, see
    /// `Store::publish`); when sled fails, `keep` writes it later.
    pub fn upsert_peer(&self, peer: &PeerRecord) -> Result<(), StoreError> {
        // The writer lock keeps it out of a compaction or a reopen (which would lose it or
        // rewrite an older copy over it); memory first, so a rewrite writes this one.
        let _writer = lock(&self.inner.peer_writer);
        write(&self.inner.peers).insert(peer.node_id.clone(), peer.clone());
        let result = encode(peer).and_then(|v| {
            self.persist(|s| {
                s.peers_tree.insert(peer.node_id.as_bytes(), v)?;
                Ok(())
            })
        });
        self.wrote(Wrote::Peer(&peer.node_id));
        if let Err(e) = &result {
            self.failed(e);
        }
        result
    }

    /// One peer, by node id.
    pub fn peer(&self, node_id: &str) -> Option<PeerRecord> {
        read(&self.inner.peers).get(node_id).cloned()
    }

    /// Every peer ever heard, in node id order.
    pub fn peers(&self) -> Vec<PeerRecord> {
        read(&self.inner.peers).values().cloned().collect()
    }

    /// Whether the host `node_id` counts as live now: this node always, a peer when heard
    /// within `expiry` and not gone with a goodbye.
    pub fn host_is_live(&self, node_id: &str, now: Millis, expiry: Duration) -> bool {
        node_id == self.inner.node_id
            || read(&self.inner.peers)
                .get(node_id)
                .is_some_and(|p| p.is_live(now, expiry))
    }
}
