//! Merging a host's new inventory into its stored value: first and last seen, stays
//! (history), disks that vanished and the records that come back.

use super::*;

/// What `Store::publish` decided.
pub(super) struct Merged<'a> {
    pub(super) diff: InventoryDiff,
    /// The host's new value; `None` when nothing changed (nothing is written).
    pub(super) host: Option<HostView<'a>>,
}

/// Merge an inventory into a host's previous value: what appeared, vanished or changed,
/// and the value to store (with the stays), unless nothing changed. The new value borrows
/// its text from the old one and from `disks`.
pub(super) fn merge<'a>(
    old: Option<&'a HostView<'a>>,
    host: &'a str,
    addr: Option<&'a str>,
    disks: &'a [DiskRecord],
    now: Millis,
    prev_seen: Millis,
) -> Merged<'a> {
    type Keyed<'k, V> = HashMap<Key<'k>, V, std::hash::BuildHasherDefault<TermHasher>>;
    let old_entries: &'a [EntryView<'a>] = old.map_or(&[][..], |o| &o.entries[..]);
    let (old_host, old_addr) = old.map_or(("", None), |o| (o.host, o.addr));
    let mut by_key: Keyed<'a, &'a EntryView<'a>> = Keyed::default();
    by_key.reserve(old_entries.len());
    by_key.extend(old_entries.iter().map(|e| (e.key(), e)));
    let mut diff = InventoryDiff::default();
    let mut changed = false;
    let mut entries: Vec<EntryView<'a>> = Vec::with_capacity(disks.len().max(old_entries.len()));
    let mut seen: Keyed<'a, ()> = Keyed::default();
    seen.reserve(disks.len());
    // Old entries another identity of the same disk may take over (see `adopt`), built
    // only when a disk is not found by its own key; and the keys of those taken over.
    let mut adoptable: Option<HashMap<&'a str, &'a EntryView<'a>>> = None;
    let mut adopted: Keyed<'a, ()> = Keyed::default();
    for disk in disks {
        let mut key = Key::of(disk);
        if seen.contains_key(&key) {
            // Two devices with the same UUID (a cloned disk, a snapshot): keep both, the
            // second one keyed by its device too.
            key.dup = true;
            if seen.contains_key(&key) {
                continue;
            }
        }
        seen.insert(key, ());
        // A health reading new to the entry joins its log (see `log_after`).
        let new = |first_seen, since, past, log: &HealthLog<'a>| EntryView {
            disk: DiskView::of(disk),
            present: true,
            first_seen,
            last_seen: now,
            since,
            dup: key.dup,
            place: Some((host, addr)),
            past,
            readings: log_after(log, disk.health.as_ref()),
        };
        let prev = match by_key.get(&key) {
            Some(prev) => Some(*prev),
            None => {
                // Not known by this identity: maybe known by another for the same disk.
                let by_device =
                    adoptable.get_or_insert_with(|| adoptable_entries(old_entries, disks));
                adopt(by_device, &key, disk).inspect(|prev| {
                    adopted.insert(prev.key(), ());
                })
            }
        };
        match prev {
            Some(prev) => {
                let (p_host, p_addr) = prev.place(old_host, old_addr);
                let same_place = p_host == host && p_addr == addr;
                if prev.present && prev.disk.same_as(disk) && same_place {
                    // Unchanged: kept as it is. While present, its last-seen time is its
                    // host's (see `host_seen`).
                    let mut e = (*prev).clone();
                    e.place = Some((p_host, p_addr));
                    entries.push(e);
                    continue;
                }
                changed = true;
                if !prev.present {
                    diff.appeared.push(disk.clone());
                } else if !prev.disk.same_as(disk) {
                    diff.changed.push(disk.clone());
                    diff.was.push(prev.disk.to_record());
                }
                let mut e = new(
                    prev.first_seen,
                    prev.since,
                    prev.past.clone(),
                    &prev.readings,
                );
                if !prev.present || prev.disk.device != disk.device {
                    // A new stay: back after an absence, or on another device. The one
                    // that ended lasted until the host's previous inventory.
                    e.past.push(PastStay {
                        host: p_host,
                        addr: p_addr,
                        device: prev.disk.device,
                        label: prev.disk.label,
                        first_seen: prev.since,
                        last_seen: if prev.present {
                            prev.last_seen.max(prev_seen)
                        } else {
                            prev.last_seen
                        },
                    });
                    let over = e.past.len().saturating_sub(MAX_STAYS - 1);
                    e.past.drain(..over);
                    e.since = now;
                }
                entries.push(e);
            }
            None => {
                changed = true;
                diff.appeared.push(disk.clone());
                entries.push(new(now, now, Vec::new(), &HealthLog::default()));
            }
        }
    }
    for prev in old_entries {
        if seen.contains_key(&prev.key()) || adopted.contains_key(&prev.key()) {
            continue;
        }
        let mut e = prev.clone();
        e.place = Some(prev.place(old_host, old_addr));
        if e.present {
            changed = true;
            diff.vanished.push(e.disk.to_record());
            e.present = false;
            e.last_seen = e.last_seen.max(prev_seen);
        }
        entries.push(e);
    }
    // Last-known disks of one host are bounded: a host that reports new disks forever
    // (loop devices, containers, a broken peer) must not grow its value without end.
    let absent = entries.iter().filter(|e| !e.present).count();
    if absent > MAX_ABSENT_PER_HOST {
        let (present, mut gone): (Vec<_>, Vec<_>) = entries.into_iter().partition(|e| e.present);
        gone.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
        gone.truncate(MAX_ABSENT_PER_HOST);
        entries = present;
        entries.extend(gone);
        changed = true;
    }
    if !changed {
        return Merged { diff, host: None };
    }
    // Stored in key order, each with its own place only where it is not the host's.
    entries.sort_by(|a, b| a.key().cmp(&b.key()));
    for e in &mut entries {
        if e.place == Some((host, addr)) {
            e.place = None;
        }
    }
    Merged {
        diff,
        host: Some(HostView {
            host,
            addr,
            entries,
        }),
    }
}

/// The old entries of a host that a disk of its new inventory may take over although its
/// key differs (see `adopt`), by device: present, without a UUID, not a duplicate, and not
/// claimed by their own key in the new inventory.
pub(super) fn adoptable_entries<'a>(
    old_entries: &'a [EntryView<'a>],
    disks: &'a [DiskRecord],
) -> HashMap<&'a str, &'a EntryView<'a>> {
    let claimed: HashSet<Key<'a>> = disks.iter().map(Key::of).collect();
    old_entries
        .iter()
        .filter(|e| e.present && !e.dup && !e.key().is_uuid() && !claimed.contains(&e.key()))
        .map(|e| (e.disk.device, e))
        .collect()
}

/// The old entry `disk` (keyed `key`, not found by it) continues, if any: the entry of
/// the disk present at the same device when one of the two is known by its device only
/// and the other by its WWN or serial. A disk is known by its device when the hardware
/// could not be read: a store, a watcher or a peer older than hardware identity, or a
/// watcher that failed to read sysfs once. Without this, every whole disk would vanish
/// and appear again (events, hooks) when a release that reads the hardware first scans
/// it. Two disks each known by its own serial or WWN stay two disks, whatever their
/// devices; so does anything with a UUID.
pub(super) fn adopt<'a>(
    by_device: &mut HashMap<&'a str, &'a EntryView<'a>>,
    key: &Key<'_>,
    disk: &DiskRecord,
) -> Option<&'a EntryView<'a>> {
    if key.dup || key.is_uuid() {
        return None;
    }
    let prev = by_device.get(disk.device.as_str())?;
    if !(key.is_device() || prev.key().is_device()) {
        return None;
    }
    by_device.remove(disk.device.as_str())
}

/// The stays of one entry of host `node_id` (value `h`): its past ones and its latest.
pub(super) fn stays(node_id: &str, h: &HostView<'_>, e: &EntryView<'_>) -> Vec<Stay> {
    let (host, addr) = e.place(h.host, h.addr);
    let mut out: Vec<Stay> = e
        .past
        .iter()
        .map(|p| Stay {
            node_id: node_id.to_string(),
            host: p.host.to_string(),
            addr: p.addr.map(str::to_string),
            device: p.device.to_string(),
            label: p.label.map(str::to_string),
            first_seen: p.first_seen,
            last_seen: p.last_seen,
            current: false,
        })
        .collect();
    out.push(Stay {
        node_id: node_id.to_string(),
        host: host.to_string(),
        addr: addr.map(str::to_string),
        device: e.disk.device.to_string(),
        label: e.disk.label.map(str::to_string),
        first_seen: e.since,
        last_seen: e.last_seen,
        current: e.present,
    });
    out
}
