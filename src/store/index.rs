//! The in-memory term index: which hosts hold a UUID, label, device, serial, WWN or host
//! name, so a query reads only the matching hosts.

use super::*;

/// The committed picture.
#[derive(Default)]
pub(super) struct Memory {
    /// Every host's slot in `slots`, by node id.
    pub(super) hosts: BTreeMap<Arc<str>, u32>,
    pub(super) slots: Vec<Option<Arc<HostState>>>,
    /// Slots no host has.
    pub(super) free: Vec<u32>,
    /// Term (see `layout::term`) -> the slot of the one host that has it, or `MANY` + the
    /// position in `many` of the slots of the hosts that have it (a term of one host is
    /// the common case: UUIDs, devices and labels are mostly unique).
    pub(super) index: HashMap<u64, u32, std::hash::BuildHasherDefault<TermHasher>>,
    pub(super) many: Vec<Vec<u32>>,
    pub(super) many_free: Vec<u32>,
    /// Sightings of every host.
    pub(super) sightings: usize,
}

/// See `Memory::index`.
pub(super) const MANY: u32 = 1 << 31;

impl Memory {
    pub(super) fn get(&self, node_id: &str) -> Option<&Arc<HostState>> {
        let slot = *self.hosts.get(node_id)?;
        self.slots[slot as usize].as_ref()
    }

    pub(super) fn index_add(&mut self, t: u64, slot: u32) {
        use std::collections::hash_map::Entry as E;
        match self.index.entry(t) {
            E::Vacant(v) => {
                v.insert(slot);
            }
            E::Occupied(mut o) => {
                let cur = *o.get();
                if cur & MANY != 0 {
                    let list = &mut self.many[(cur & !MANY) as usize];
                    if !list.contains(&slot) {
                        list.push(slot);
                    }
                } else if cur != slot {
                    let i = match self.many_free.pop() {
                        Some(i) => {
                            self.many[i as usize] = vec![cur, slot];
                            i
                        }
                        None => {
                            self.many.push(vec![cur, slot]);
                            (self.many.len() - 1) as u32
                        }
                    };
                    *o.get_mut() = MANY | i;
                }
            }
        }
    }

    pub(super) fn index_remove(&mut self, t: u64, slot: u32) {
        use std::collections::hash_map::Entry as E;
        let E::Occupied(mut o) = self.index.entry(t) else {
            return;
        };
        let cur = *o.get();
        if cur & MANY == 0 {
            if cur == slot {
                o.remove();
            }
            return;
        }
        let i = cur & !MANY;
        let list = &mut self.many[i as usize];
        if let Some(p) = list.iter().position(|&s| s == slot) {
            list.swap_remove(p);
        }
        match list.len() {
            0 => {
                o.remove();
            }
            1 => *o.get_mut() = list[0],
            _ => return,
        }
        self.many[i as usize] = Vec::new();
        self.many_free.push(i);
    }

    /// Put `state` (whose terms are `terms`) in place of the host's previous value (whose
    /// terms were `old_terms`).
    pub(super) fn publish(&mut self, state: Arc<HostState>, old_terms: &[u64], terms: &[u64]) {
        let slot = match self.hosts.get(&*state.node_id) {
            Some(&slot) => slot,
            None => {
                let slot = match self.free.pop() {
                    Some(slot) => slot,
                    None => {
                        self.slots.push(None);
                        (self.slots.len() - 1) as u32
                    }
                };
                self.hosts.insert(state.node_id.clone(), slot);
                slot
            }
        };
        let new_len = state.len;
        let old = self.slots[slot as usize].replace(state);
        // Both sorted: change only the terms that differ.
        for t in old_terms {
            if terms.binary_search(t).is_err() {
                self.index_remove(*t, slot);
            }
        }
        for t in terms {
            if old_terms.binary_search(t).is_err() {
                self.index_add(*t, slot);
            }
        }
        self.sightings = self.sightings + new_len - old.map_or(0, |o| o.len);
    }

    pub(super) fn remove(&mut self, node_id: &str) {
        let Some(slot) = self.hosts.remove(node_id) else {
            return;
        };
        if let Some(old) = self.slots[slot as usize].take() {
            for t in old.view().terms() {
                self.index_remove(t, slot);
            }
            self.sightings -= old.len;
        }
        self.free.push(slot);
    }

    /// The hosts that have any of `terms`, in node id order.
    pub(super) fn hosts_with(&self, terms: impl IntoIterator<Item = u64>) -> Vec<Arc<HostState>> {
        let mut slots: Vec<u32> = Vec::new();
        for t in terms {
            match self.index.get(&t) {
                Some(&s) if s & MANY != 0 => {
                    slots.extend_from_slice(&self.many[(s & !MANY) as usize]);
                }
                Some(&s) => slots.push(s),
                None => {}
            }
        }
        slots.sort_unstable();
        slots.dedup();
        let mut out: Vec<Arc<HostState>> = slots
            .into_iter()
            .filter_map(|s| self.slots[s as usize].clone())
            .collect();
        out.sort_unstable_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// Every host, in node id order.
    pub(super) fn all(&self) -> Vec<Arc<HostState>> {
        self.hosts
            .values()
            .filter_map(|&s| self.slots[s as usize].clone())
            .collect()
    }
}

/// The index keys are hashes already.
#[derive(Default)]
pub(super) struct TermHasher(u64);

impl std::hash::Hasher for TermHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// When a disk's identity holds across hosts (a UUID, a WWN or a serial, not a device
/// path), the index term that finds every host that has a disk with that identity.
pub(super) fn fleet_identity(d: &DiskView<'_>) -> Option<u64> {
    match d.identity_parts() {
        ("uuid:", u) => Some(term_lower(b'u', u)),
        ("wwn:", w) => Some(term_wwn(w)),
        ("serial:", s) => Some(term(b's', s)),
        _ => None,
    }
}

/// The index terms a disk query looks up: everything `DiskRecord::matches` compares.
pub(super) fn disk_terms(text: &str) -> [u64; 5] {
    [
        term_lower(b'u', text),
        term(b'l', text),
        term(b'd', text),
        term(b's', text),
        term_wwn(text),
    ]
}
