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
        let mut per_disk: Vec<Vec<Stay>> = Vec::new();
        self.named_disks(term_text, |disk, node_id, v, e| {
            if per_disk.len() <= disk {
                per_disk.resize_with(disk + 1, Vec::new);
            }
            per_disk[disk].extend(stays(node_id, v, e));
        });
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

    /// The health readings of the disk `term` names, newest first, at most
    /// [`MAX_READINGS`]: what each of its hosts' stores kept when its SMART reading
    /// changed (see `DiskHealth::checked`). The disk is found as [`Store::history`] finds
    /// it (its UUID, WWN or serial on any host, so a disk that moved brings the readings
    /// taken on its earlier hosts; else its device on one host). When the term names
    /// several disks (a label two disks share), the one read most recently answers: the
    /// readings of two disks in one list would make a trend of neither. Empty when the
    /// disk has none (no SMART watcher, a store older than schema 6, a partition whose
    /// disk was never read).
    pub fn health_log(&self, term_text: &str) -> Result<Vec<HealthPoint>, StoreError> {
        let mut per_disk: Vec<Vec<layout::Reading>> = Vec::new();
        self.named_disks(term_text, |disk, _, _, e| {
            if per_disk.len() <= disk {
                per_disk.resize_with(disk + 1, Vec::new);
            }
            per_disk[disk].extend(e.readings.readings());
        });
        let newest = |d: &Vec<layout::Reading>| d.iter().map(|r| r.checked).max();
        let Some(mut readings) = per_disk.into_iter().max_by_key(newest) else {
            return Ok(Vec::new());
        };
        readings.sort_by_key(|r| std::cmp::Reverse(r.checked));
        // The same reading kept by two hosts (a disk that moved between two reads) is one.
        readings.dedup_by_key(|r| r.checked);
        readings.truncate(MAX_READINGS);
        Ok(readings
            .into_iter()
            .map(layout::Reading::to_point)
            .collect())
    }

    /// The entries of every disk `term` names, as [`Store::history`] finds them (the term
    /// names an entry's disk now, or a label or device of one of its earlier stays), each
    /// given to `each` with the number of its disk (`0..`: entries with the same number are
    /// one disk, on one host or several), its host's node id and its host's value.
    fn named_disks(
        &self,
        term_text: &str,
        mut each: impl FnMut(usize, &str, &HostView<'_>, &EntryView<'_>),
    ) {
        let candidates = read(&self.inner.mem).hosts_with(disk_terms(term_text));
        // Identities known on any host, and the index term that finds each.
        let mut wanted: HashMap<String, u64> = HashMap::new();
        let mut disks = 0usize;
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
                    None => {
                        each(disks, &h.node_id, &v, e);
                        disks += 1;
                    }
                }
            }
        }
        if wanted.is_empty() {
            return;
        }
        // One number per identity, in identity order.
        let mut numbers: BTreeMap<&str, usize> = wanted.keys().map(|id| (id.as_str(), 0)).collect();
        for (i, n) in numbers.values_mut().enumerate() {
            *n = disks + i;
        }
        let hosts = read(&self.inner.mem).hosts_with(wanted.values().copied());
        for h in &hosts {
            let v = h.view();
            for e in &v.entries {
                if fleet_identity(&e.disk).is_none() {
                    continue;
                }
                if let Some(&n) = numbers.get(e.disk.identity().as_str()) {
                    each(n, &h.node_id, &v, e);
                }
            }
        }
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
