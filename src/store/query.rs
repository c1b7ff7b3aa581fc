//! What readers ask: sightings by term or host, a disk's stays, inventories, counts.
//! Answered from memory, never from sled.

use super::*;

impl Store {
    /// When host `node_id`'s latest inventory arrived: our last scan, or the peer's last
    /// datagram as stored.
    pub fn host_seen(&self, node_id: &str) -> Option<Millis> {
        if node_id == self.inner.node_id {
            let t = self.inner.local_seen.load(Ordering::Acquire);
            (t != NONE).then_some(t)
        } else {
            read(&self.inner.peers).get(node_id).map(|p| p.last_seen)
        }
    }

    /// The committed values of every host, in node id order.
    pub(super) fn all_hosts(&self) -> Vec<Arc<HostState>> {
        read(&self.inner.mem).all()
    }

    /// Every sighting of every host, by host (node id order), then by disk.
    pub fn sightings(&self) -> Result<Vec<Sighting>, StoreError> {
        let hosts = self.all_hosts();
        let mut out = Vec::with_capacity(hosts.iter().map(|h| h.len).sum());
        for h in &hosts {
            let v = h.view();
            out.extend(v.entries.iter().map(|e| e.sighting(&h.node_id, &v)));
        }
        Ok(out)
    }

    /// Sightings whose uuid (any case), label, device or serial (exact) or WWN (any case,
    /// with or without its `0x`/`naa.`/`eui.` prefix) is `term`, through the in-memory term
    /// index: a query reads only the matching hosts.
    pub fn find(&self, term_text: &str) -> Result<Vec<Sighting>, StoreError> {
        let hosts = read(&self.inner.mem).hosts_with(disk_terms(term_text));
        Ok(sightings_of(&hosts, |e, _| e.disk.matches(term_text)))
    }

    /// Sightings of the host named `host` (one node name may have had several node ids).
    pub fn find_host(&self, host: &str) -> Result<Vec<Sighting>, StoreError> {
        let hosts = read(&self.inner.mem).hosts_with([term(b'h', host)]);
        Ok(sightings_of(&hosts, |e, v| {
            e.place(v.host, v.addr).0 == host
        }))
    }

    /// The stays of every disk `term` names (UUID in any case, label, device or serial
    /// exactly, WWN in any form; now or, for a label or device, in an earlier stay), newest
    /// first, at most `MAX_STAYS` per disk. A disk is its identity (see
    /// `DiskRecord::identity`): its UUID, WWN or serial on any host (a blank disk that
    /// moved from one host to another is one disk), or its device on one host when it has
    /// none of them. A current stay's `last_seen` is as stored; its host's seen time
    /// extends it (see `host_seen`).
    pub fn history(&self, term_text: &str) -> Result<Vec<Stay>, StoreError> {
        let candidates = read(&self.inner.mem).hosts_with(disk_terms(term_text));
        // Identities known on any host, and the index term that finds each.
        let mut wanted: HashMap<String, u64> = HashMap::new();
        let mut per_disk: Vec<Vec<Stay>> = Vec::new();
        for h in &candidates {
            let v = h.view();
            for e in &v.entries {
                let hit = e.disk.matches(term_text)
                    || e.past
                        .iter()
                        .any(|p| p.device == term_text || p.label == Some(term_text));
                if !hit {
                    continue;
                }
                match fleet_identity(&e.disk) {
                    Some(found) => {
                        wanted.insert(e.disk.identity(), found);
                    }
                    None => per_disk.push(stays(&h.node_id, &v, e)),
                }
            }
        }
        if !wanted.is_empty() {
            let hosts = read(&self.inner.mem).hosts_with(wanted.values().copied());
            let mut by_identity: BTreeMap<String, Vec<Stay>> = BTreeMap::new();
            for h in &hosts {
                let v = h.view();
                for e in &v.entries {
                    if fleet_identity(&e.disk).is_none() {
                        continue;
                    }
                    let id = e.disk.identity();
                    if wanted.contains_key(&id) {
                        by_identity
                            .entry(id)
                            .or_default()
                            .extend(stays(&h.node_id, &v, e));
                    }
                }
            }
            per_disk.extend(by_identity.into_values());
        }
        let newest_first = |a: &Stay, b: &Stay| {
            (b.first_seen, b.last_seen, b.current)
                .cmp(&(a.first_seen, a.last_seen, a.current))
                .then_with(|| a.host.cmp(&b.host))
                .then_with(|| a.device.cmp(&b.device))
        };
        let mut out = Vec::new();
        for mut d in per_disk {
            d.sort_by(newest_first);
            d.truncate(MAX_STAYS);
            out.extend(d);
        }
        out.sort_by(newest_first);
        Ok(out)
    }

    /// How many sightings the store holds.
    pub fn sightings_len(&self) -> usize {
        read(&self.inner.mem).sightings
    }

    /// How many key/value records the store holds: one per host (a few for a host whose
    /// inventory is larger than 64 KiB), one per peer and per attach, and the metadata.
    pub fn records(&self) -> usize {
        let hosts: u32 = lock(&self.inner.chunks).values().sum();
        let (attaches, meta) = self
            .sled()
            .map_or((0, 0), |s| (s.attaches.len(), s.meta.len()));
        hosts as usize + read(&self.inner.peers).len() + attaches + meta
    }

    /// How many disks the store holds for a host: its present ones and those it keeps as
    /// last known there. A peer with any is never forgotten to make room, and the peers'
    /// sum is what `peers.max_records` bounds.
    pub fn host_entries(&self, node_id: &str) -> usize {
        read(&self.inner.mem).get(node_id).map_or(0, |h| h.len)
    }

    /// This node's current inventory (what the peer layer announces).
    pub fn local_inventory(&self) -> Vec<DiskRecord> {
        self.host_inventory(&self.inner.node_id)
    }

    /// A host's latest inventory (its disks present in it, live or not).
    pub fn host_inventory(&self, node_id: &str) -> Vec<DiskRecord> {
        let mine = read(&self.inner.mem).get(node_id).cloned();
        mine.map(|h| {
            h.view()
                .entries
                .iter()
                .filter(|e| e.present)
                .map(|e| e.disk.to_record())
                .collect()
        })
        .unwrap_or_default()
    }
}

/// The sightings of `hosts` whose entry passes `keep` (given the entry and its host).
pub(super) fn sightings_of(
    hosts: &[Arc<HostState>],
    keep: impl Fn(&layout::EntryView<'_>, &HostView<'_>) -> bool,
) -> Vec<Sighting> {
    let mut out = Vec::new();
    for h in hosts {
        let v = h.view();
        out.extend(
            v.entries
                .iter()
                .filter(|e| keep(e, &v))
                .map(|e| e.sighting(&h.node_id, &v)),
        );
    }
    out
}
